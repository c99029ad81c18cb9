//! The preference centre on a real port, over a real store (a fresh SQLite
//! file; a fresh PostgreSQL schema too when `VETO_TEST_POSTGRES_URL` is
//! set), with veto's own mail going to a maildir the tests read.

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
use veto_store::{
    Append, AppendOutcome, ContactInput, Evidence, Guard, NewTopic, Store, StoredEvent,
};
use veto_web::{AppState, Organisation, TrustedProxies, WebSettings};

/// The User-Agent our test browser sends: it must end up in the evidence.
pub const USER_AGENT: &str = "Mozilla/5.0 (veto preference-centre tests)";

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct TestStore {
    pub store: Store,
    name: &'static str,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&dir.path().join("veto.db"))
        .await
        .expect("open sqlite");
    TestStore {
        store,
        name: "sqlite",
        _dir: Some(dir),
    }
}

pub async fn postgres() -> Option<TestStore> {
    let url = std::env::var("VETO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let store = Store::open_postgres(&url, Some(&unique("veto_pref_test")))
        .await
        .unwrap_or_else(|e| {
            panic!("VETO_TEST_POSTGRES_URL is set but PostgreSQL could not be used: {e}")
        });
    Some(TestStore {
        store,
        name: "postgres",
        _dir: None,
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

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub store: Store,
    pub client: reqwest::Client,
    pub outbox: PathBuf,
    db: TestStore,
    _outbox_dir: tempfile::TempDir,
    wording: i64,
    server: JoinHandle<std::io::Result<()>>,
    shutdown: oneshot::Sender<()>,
}

/// The topics every test app has: (key, name, description).
pub const TOPICS: [(&str, &str, &str); 3] = [
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
    (
        "boots",
        "Boot offers",
        "Deals on walking boots, in spring and autumn.",
    ),
];

/// One app per backend this run can test.
pub async fn apps() -> Vec<TestApp> {
    let mut v = vec![];
    for db in stores().await {
        v.push(spawn_app_on(db, &TOPICS).await);
    }
    v
}

/// One app over a fresh SQLite store.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(sqlite().await, &TOPICS).await
}

pub async fn spawn_app_on(db: TestStore, topics: &[(&str, &str, &str)]) -> TestApp {
    let store = db.store.clone();
    for (key, name, description) in topics {
        store
            .add_topic(NewTopic {
                key: TopicKey::parse(key).expect("topic key"),
                name: (*name).into(),
                description: (*description).into(),
                group: None,
            })
            .await
            .expect("add topic");
    }
    let wording = store
        .add_wording("Yes, email me about new products and offers.")
        .await
        .expect("wording")
        .id
        .0;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("local addr");
    let outbox_dir = tempfile::tempdir().expect("outbox dir");
    let outbox = outbox_dir.path().join("outbox");
    let mailer = veto_sender::Mailer::new(
        Guard::new(store.clone(), PolicySettings::default()),
        veto_sender::Maildir::open(&outbox).expect("maildir"),
        "Example Shop",
        "example.org",
    );
    let settings = WebSettings {
        public_url: format!("http://{addr}"),
        organisation: Organisation {
            name: "Example Shop".into(),
            postal_address: "1 High Street, Cardiff".into(),
            privacy_url: Some("https://shop.example/privacy".into()),
        },
        trusted_proxies: TrustedProxies(vec![("10.0.0.0".parse().expect("ip"), 8)]),
        service_types: vec![ServiceType {
            key: "billing".into(),
            description: "Bills and receipts for things you bought".into(),
        }],
    };
    let state = AppState::with_mailer(store.clone(), settings, Some(mailer))
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
        base: format!("http://{addr}"),
        state,
        store,
        client,
        outbox,
        db,
        _outbox_dir: outbox_dir,
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
        self.db.name
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
        let topic = self.topic(topic).await;
        self.append(
            address,
            EventKind::Grant,
            Scope::Topic(topic.id),
            Source::Form,
        )
        .await
    }

    /// Appends one event with sign-up-form evidence; panics if refused.
    pub async fn append(
        &self,
        address: &str,
        kind: EventKind,
        scope: Scope,
        source: Source,
    ) -> ContactId {
        let item = Append {
            contact: ContactInput::new(email(address)),
            event: NewEvent {
                kind,
                scope,
                channel: Some(Channel::Email),
                source,
                at: Timestamp::now(),
            },
            evidence: Evidence {
                wording: Some(self.wording),
                ip: Some("192.0.2.10".into()),
                user_agent: Some("Mozilla/5.0 (sign-up form)".into()),
                form_url: Some("https://shop.example/signup".into()),
            },
            actor: "api-key:test".into(),
        };
        match self
            .store
            .append(vec![item], false)
            .await
            .expect("append")
            .remove(0)
        {
            AppendOutcome::Recorded { contact, .. } => contact,
            AppendOutcome::Refused(r) => panic!("refused: {r:?}"),
        }
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

    /// The preference-centre link veto puts in every marketing message.
    pub async fn prefs_url(&self, address: &str) -> String {
        let contact = self.contact_id(address).await;
        self.prefs_url_for(contact)
    }

    pub fn prefs_url_for(&self, contact: ContactId) -> String {
        veto_web::links(self.state.keys(), &self.base, contact.0, None)
            .expect("links")
            .preferences
    }

    pub fn unsubscribe_url_for(&self, contact: ContactId, topic: Option<u16>) -> String {
        veto_web::links(self.state.keys(), &self.base, contact.0, topic)
            .expect("links")
            .unsubscribe
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

    /// Opens a page and returns its status and HTML.
    pub async fn page(&self, url: &str) -> (reqwest::StatusCode, String) {
        let res = self.get(url).await;
        (res.status(), res.text().await.expect("body"))
    }

    /// Posts form fields as a browser does (urlencoded), with extra headers.
    pub async fn post(
        &self,
        url: &str,
        fields: &[(String, String)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.post(url).form(fields);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("POST")
    }

    /// Posts and returns the status and HTML.
    pub async fn submit(
        &self,
        url: &str,
        fields: &[(String, String)],
    ) -> (reqwest::StatusCode, String) {
        let res = self.post(url, fields, &[]).await;
        (res.status(), res.text().await.expect("body"))
    }

    /// The ledger rows of a contact, oldest first.
    pub async fn events_of(&self, contact: ContactId) -> Vec<StoredEvent> {
        self.store.events_of(contact).await.expect("events_of")
    }

    pub async fn count_events(&self) -> i64 {
        self.store.count_events().await.expect("count events")
    }

    /// What the guard would say about a marketing email on this topic now.
    pub async fn decision(&self, address: &str, topic: &str) -> Decision {
        let topic = self.topic(topic).await;
        let now = Timestamp::now();
        let (_, state) = self
            .store
            .load_state(&email(address), now)
            .await
            .expect("load state");
        decide(
            &state,
            &Message {
                class: MessageClass::Marketing(&topic),
                channel: Channel::Email,
            },
            &PolicySettings::default(),
            now,
        )
    }

    /// The messages in the outbox's `new/`, as raw text.
    pub fn outbox_messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.outbox.join("new"))
            .expect("outbox new/")
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("message"))
            .collect()
    }

    pub async fn close(self) {
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
    }
}

/// The reason code of a decision, or "allowed".
pub fn reason_code(d: &Decision) -> &'static str {
    match d {
        Decision::Allowed(_) => "allowed",
        Decision::Denied(r) => r.reason.code(),
    }
}

/// HTML as a person reads it: minijinja's entities turned back into characters.
pub fn text(html: &str) -> String {
    html.replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(text(&tag[start..end]))
}

/// One `<form>` of a page as a browser would submit it unchanged: its
/// action, and the fields of its hidden inputs, ticked checkboxes, checked
/// radios and selected options.
#[derive(Debug, Clone)]
pub struct PageForm {
    pub action: String,
    pub fields: Vec<(String, String)>,
    /// Every checkbox: (value, checked).
    pub checkboxes: Vec<(String, bool)>,
}

impl PageForm {
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.fields.retain(|(k, _)| k != name);
        self.fields.push((name.into(), value.into()));
        self
    }

    pub fn tick(&mut self, topic_id: u16, on: bool) -> &mut Self {
        let v = topic_id.to_string();
        self.fields.retain(|(k, val)| !(k == "topic" && *val == v));
        if on {
            self.fields.push(("topic".into(), v));
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_ticked(&self, topic_id: u16) -> bool {
        self.checkboxes
            .iter()
            .find(|(v, _)| *v == topic_id.to_string())
            .unwrap_or_else(|| panic!("no checkbox for topic {topic_id}"))
            .1
    }
}

/// Every form on a page, in order.
pub fn forms(html: &str) -> Vec<PageForm> {
    let mut out = vec![];
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let Some(len) = rest[start..].find("</form>") else {
            break;
        };
        let form = &rest[start..start + len];
        rest = &rest[start + len..];
        let open = &form[..form.find('>').expect("form tag")];
        let mut fields = vec![];
        let mut checkboxes = vec![];
        for part in form.split("<input").skip(1) {
            let tag = &part[..part.find('>').expect("input tag")];
            let (Some(name), value) = (attr(tag, "name"), attr(tag, "value")) else {
                continue;
            };
            let checked = tag.contains(" checked");
            match attr(tag, "type").as_deref() {
                Some("checkbox") => {
                    let value = value.unwrap_or_else(|| "on".into());
                    checkboxes.push((value.clone(), checked));
                    if checked {
                        fields.push((name, value));
                    }
                }
                Some("radio") if !checked => {}
                _ => fields.push((name, value.unwrap_or_default())),
            }
        }
        for part in form.split("<select").skip(1) {
            let tag = &part[..part.find('>').expect("select tag")];
            let name = attr(tag, "name").expect("select name");
            let body = &part[..part.find("</select>").expect("select end")];
            let mut chosen = None;
            for opt in body.split("<option").skip(1) {
                let otag = &opt[..opt.find('>').expect("option tag")];
                let value = attr(otag, "value").expect("option value");
                if chosen.is_none() || otag.contains(" selected") {
                    chosen = Some((value, otag.contains(" selected")));
                }
                if otag.contains(" selected") {
                    break;
                }
            }
            if let Some((value, _)) = chosen {
                fields.push((name, value));
            }
        }
        out.push(PageForm {
            action: attr(open, "action").expect("form action"),
            fields,
            checkboxes,
        });
    }
    out
}

/// The form whose hidden `action` field (or whose URL) matches.
pub fn form_with(html: &str, pick: &str) -> PageForm {
    forms(html)
        .into_iter()
        .find(|f| f.get("action") == Some(pick) || f.action.contains(pick))
        .unwrap_or_else(|| panic!("no form for {pick} in:\n{html}"))
}

/// The text of the element with this id (one line, entities decoded).
pub fn by_id(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = at + html[at..].find('>').expect("tag end") + 1;
    let end = start + html[start..].find('<').expect("element end");
    text(&html[start..end])
}

/// The body of a mail as text, undoing quoted-printable or base64.
pub fn mail_body(raw: &str) -> String {
    let (head, body) = raw.split_once("\r\n\r\n").expect("header and body");
    let head = head.to_ascii_lowercase();
    if head.contains("content-transfer-encoding: base64") {
        let clean: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        String::from_utf8(base64_decode(&clean)).expect("utf-8 body")
    } else if head.contains("content-transfer-encoding: quoted-printable") {
        let joined = body.replace("=\r\n", "");
        let b = joined.as_bytes();
        let mut out = vec![];
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(hex, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8(out).expect("utf-8 body")
    } else {
        body.to_owned()
    }
}

fn base64_decode(input: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = vec![];
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input.iter().take_while(|&&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The first link in a mail body that starts with `prefix`.
pub fn link_in(body: &str, prefix: &str) -> String {
    let start = body
        .find(prefix)
        .unwrap_or_else(|| panic!("no link {prefix} in:\n{body}"));
    body[start..]
        .split_whitespace()
        .next()
        .expect("link")
        .to_owned()
}

/// A token that differs from `token` in one character (still base32).
pub fn forge(token: &str, at: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[at] = if chars[at] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// The token at the end of a link (before any query).
pub fn token_of(url: &str) -> &str {
    url.split('?')
        .next()
        .expect("url")
        .rsplit('/')
        .next()
        .expect("token")
}
