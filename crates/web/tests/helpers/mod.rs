//! veto-web on a real port, over a real store: a fresh SQLite file, and a
//! fresh PostgreSQL schema too when `VETO_TEST_POSTGRES_URL` is set.
//!
//! Tests talk to it as mail clients and people do (HTTP, and raw TCP for
//! Gmail's exact bytes), and look at the ledger the way an auditor would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use veto_core::{
    Channel, ContactId, Decision, EmailAddress, EventKind, Message, MessageClass, NewEvent,
    PolicySettings, Scope, ServiceType, Source, Timestamp, Topic, TopicKey, decide,
};
use veto_store::{Append, AppendOutcome, ContactInput, Evidence, NewTopic, Store, StoredEvent};
use veto_web::{AppState, Organisation, TrustedProxies, WebSettings};

/// The User-Agent our test client sends: it must end up in the evidence.
pub const USER_AGENT: &str = "veto-web-tests/1.0 (one-click)";
/// Exactly what RFC 8058 mail clients send as the body.
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";
pub const FORM: &str = "application/x-www-form-urlencoded";

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where a test store lives, so it can be opened again after the app stops.
pub enum Location {
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

pub struct TestStore {
    pub store: Store,
    pub location: Location,
}

impl TestStore {
    pub fn name(&self) -> &'static str {
        match self.location {
            Location::Sqlite { .. } => "sqlite",
            Location::Postgres { .. } => "postgres",
        }
    }

    /// Opens the same database again, as a restarted veto would.
    pub async fn reopen(&self) -> Store {
        match &self.location {
            Location::Sqlite { path, .. } => Store::open_sqlite(path).await.expect("reopen sqlite"),
            Location::Postgres { url, schema } => Store::open_postgres(url, Some(schema))
                .await
                .expect("reopen postgres"),
        }
    }
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("veto.db");
    let store = Store::open_sqlite(&path).await.expect("open sqlite");
    TestStore {
        store,
        location: Location::Sqlite { path, _dir: dir },
    }
}

pub fn postgres_url() -> Option<String> {
    std::env::var("VETO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub async fn postgres() -> Option<TestStore> {
    let url = postgres_url()?;
    let schema = unique("veto_web_test");
    let store = Store::open_postgres(&url, Some(&schema))
        .await
        .unwrap_or_else(|e| {
            panic!("VETO_TEST_POSTGRES_URL is set but PostgreSQL could not be used: {e}")
        });
    Some(TestStore {
        store,
        location: Location::Postgres { url, schema },
    })
}

/// Every backend this run can test. PostgreSQL is skipped (and says so)
/// without `VETO_TEST_POSTGRES_URL`.
pub async fn stores() -> Vec<TestStore> {
    let mut v = vec![sqlite().await];
    match postgres().await {
        Some(pg) => v.push(pg),
        None => eprintln!("skipped: PostgreSQL half (set VETO_TEST_POSTGRES_URL to run it)"),
    }
    v
}

/// The proxies the tests trust by default: not 127.0.0.1, where the test
/// client connects from.
pub fn default_proxies() -> TrustedProxies {
    TrustedProxies(vec![("10.0.0.0".parse().expect("ip"), 8)])
}

pub fn settings(addr: SocketAddr, trusted_proxies: TrustedProxies) -> WebSettings {
    WebSettings {
        public_url: format!("http://{addr}"),
        organisation: Organisation {
            name: "Example Shop".into(),
            postal_address: "1 High Street, Cardiff".into(),
            privacy_url: Some("https://shop.example/privacy".into()),
        },
        trusted_proxies,
        service_types: vec![ServiceType {
            key: "billing".into(),
            description: "Bills and receipts for things you bought".into(),
        }],
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub state: AppState,
    pub store: Store,
    pub client: reqwest::Client,
    db: TestStore,
    wording: i64,
    server: JoinHandle<std::io::Result<()>>,
    shutdown: oneshot::Sender<()>,
}

/// One app over a fresh SQLite store.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(sqlite().await, default_proxies()).await
}

/// One app per backend this run can test.
pub async fn apps() -> Vec<TestApp> {
    apps_with(default_proxies()).await
}

pub async fn apps_with(trusted: TrustedProxies) -> Vec<TestApp> {
    let mut v = vec![];
    for db in stores().await {
        v.push(spawn_app_on(db, trusted.clone()).await);
    }
    v
}

pub async fn spawn_app_on(db: TestStore, trusted: TrustedProxies) -> TestApp {
    spawn_app_bound(db, trusted, "127.0.0.1:0").await
}

/// As [`spawn_app_on`], listening on `bind` (e.g. `[::]:0`, dual stack);
/// the client still connects to 127.0.0.1.
pub async fn spawn_app_bound(db: TestStore, trusted: TrustedProxies, bind: &str) -> TestApp {
    let store = db.store.clone();
    for (key, name, description) in [
        (
            "news",
            "Product news",
            "New products and features, about once a month.",
        ),
        (
            "offers",
            "Offers",
            "Discounts and sales, at most once a week.",
        ),
    ] {
        store
            .add_topic(NewTopic {
                key: TopicKey::parse(key).expect("topic key"),
                name: name.into(),
                description: description.into(),
                group: None,
            })
            .await
            .expect("add topic");
    }
    let wording = store
        .add_wording("Yes, email me about new products and offers.")
        .await
        .expect("add wording")
        .id
        .0;

    let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let state = AppState::new(store.clone(), settings(addr, trusted))
        .await
        .expect("app state");
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(veto_web::serve(listener, state.clone(), async move {
        let _ = stop.await;
    }));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .expect("client");
    TestApp {
        addr,
        base: format!("http://{addr}"),
        state,
        store,
        client,
        db,
        wording,
        server,
        shutdown,
    }
}

pub fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("email address")
}

impl TestApp {
    /// "sqlite" or "postgres", for assertion messages.
    pub fn name(&self) -> &'static str {
        self.db.name()
    }

    pub async fn topic(&self, key: &str) -> Topic {
        self.store
            .topic(&TopicKey::parse(key).expect("topic key"))
            .await
            .expect("topic")
            .unwrap_or_else(|| panic!("no topic {key}"))
    }

    /// The person ticks "send me {topic}" on the shop's sign-up form.
    pub async fn grant(&self, address: &str, topic: &str) -> ContactId {
        self.grant_many(&[address], topic).await[0]
    }

    /// Many sign-ups in one append.
    pub async fn grant_many(&self, addresses: &[&str], topic: &str) -> Vec<ContactId> {
        let topic = self.topic(topic).await;
        let items = addresses
            .iter()
            .map(|a| Append {
                contact: ContactInput::new(email(a)),
                event: NewEvent {
                    kind: EventKind::Grant,
                    scope: Scope::Topic(topic.id),
                    channel: Some(Channel::Email),
                    source: Source::Form,
                    at: Timestamp::now(),
                },
                evidence: Evidence {
                    wording: Some(self.wording),
                    ip: Some("192.0.2.10".into()),
                    user_agent: Some("Mozilla/5.0 (sign-up form)".into()),
                    form_url: Some("https://shop.example/signup".into()),
                },
                actor: "api-key:test".into(),
            })
            .collect();
        self.store
            .append(items, false)
            .await
            .expect("append grants")
            .into_iter()
            .map(|o| match o {
                AppendOutcome::Recorded { contact, .. } => contact,
                AppendOutcome::Refused(r) => panic!("grant refused: {r:?}"),
            })
            .collect()
    }

    pub async fn contact_id(&self, address: &str) -> ContactId {
        let c = self
            .store
            .find_contact(&email(address))
            .await
            .expect("find contact")
            .unwrap_or_else(|| panic!("no contact {address}"));
        ContactId(c.id)
    }

    /// The one-click link veto puts in `List-Unsubscribe` for this topic.
    pub async fn unsubscribe_url(&self, address: &str, topic: &str) -> String {
        let contact = self.contact_id(address).await;
        let topic = self.topic(topic).await;
        self.unsubscribe_url_for(contact, Some(topic.id.0))
    }

    /// The link for a contact id (works after erasure too) and a topic id
    /// (`None`: all marketing).
    pub fn unsubscribe_url_for(&self, contact: ContactId, topic: Option<u16>) -> String {
        veto_web::links(self.state.keys(), &self.base, contact.0, topic)
            .expect("links")
            .unsubscribe
    }

    pub fn preferences_url_for(&self, contact: ContactId) -> String {
        veto_web::links(self.state.keys(), &self.base, contact.0, None)
            .expect("links")
            .preferences
    }

    /// What a mail client does when the person presses "Unsubscribe".
    pub async fn post_one_click(
        &self,
        url: &str,
        body: &str,
        content_type: &str,
    ) -> reqwest::Response {
        self.client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("POST")
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.expect("GET")
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("GET")
    }

    /// The ledger rows of a contact, oldest first.
    pub async fn events(&self, address: &str) -> Vec<StoredEvent> {
        let contact = self.contact_id(address).await;
        self.events_of(contact).await
    }

    pub async fn events_of(&self, contact: ContactId) -> Vec<StoredEvent> {
        self.store.events_of(contact).await.expect("events_of")
    }

    /// The withdrawals in a contact's ledger.
    pub async fn withdrawals(&self, address: &str) -> Vec<StoredEvent> {
        self.events(address)
            .await
            .into_iter()
            .filter(|e| e.event.kind == EventKind::Withdraw)
            .collect()
    }

    pub async fn count_events(&self) -> i64 {
        self.store.count_events().await.expect("count events")
    }

    /// What the guard would say about a marketing email on this topic now.
    pub async fn decision(&self, address: &str, topic: &str) -> Decision {
        decision_in(&self.store, address, &self.topic(topic).await).await
    }

    /// Stops the server (in-flight requests finish), closes the store and
    /// hands back where it lives.
    pub async fn close(self) -> TestStore {
        let _ = self.shutdown.send(());
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(10), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        drop(self.state);
        self.store.close().await;
        self.db
    }
}

pub async fn decision_in(store: &Store, address: &str, topic: &Topic) -> Decision {
    let now = Timestamp::now();
    let (_, state) = store
        .load_state(&email(address), now)
        .await
        .expect("load state");
    decide(
        &state,
        &Message {
            class: MessageClass::Marketing(topic),
            channel: Channel::Email,
        },
        &PolicySettings::default(),
        now,
    )
}

/// The refusal's reason code, or "allowed".
pub fn reason_code(d: &Decision) -> &'static str {
    match d {
        Decision::Allowed(_) => "allowed",
        Decision::Denied(r) => r.reason.code(),
    }
}

/// The token at the end of a `/u/TOKEN` link.
pub fn token_of(url: &str) -> &str {
    url.rsplit('/').next().expect("token")
}

/// HTML as a person reads it: the entities minijinja's autoescape writes,
/// turned back into characters.
pub fn text(html: &str) -> String {
    html.replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The first `<form>` of a page: its method, action, and its hidden fields
/// (what a browser sends when its button is pressed).
pub struct PageForm {
    pub method: String,
    pub action: String,
    pub fields: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + tag[start..].find('"')?;
    Some(text(&tag[start..end]))
}

pub fn form_of(html: &str) -> Option<PageForm> {
    let start = html.find("<form")?;
    let end = start + html[start..].find("</form>")?;
    let form = &html[start..end];
    let open = &form[..form.find('>')?];
    let mut fields = vec![];
    for part in form.split("<input").skip(1) {
        let tag = &part[..part.find('>')?];
        if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
            fields.push((n, v));
        }
    }
    Some(PageForm {
        method: attr(open, "method")?.to_ascii_lowercase(),
        action: attr(open, "action")?,
        fields,
    })
}

/// A token that differs from `token` in exactly one character, and is still
/// 40 characters of lowercase base32.
pub fn forge(token: &str, at: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[at] = if chars[at] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// A well-formed but random 40-character base32 string.
pub fn random_token(seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..40)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ALPHABET[(r >> 59) as usize] as char
        })
        .collect()
}
