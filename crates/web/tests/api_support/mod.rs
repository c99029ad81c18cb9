//! The consent-capture API on a real port, over a real store (a fresh
//! SQLite file; a fresh PostgreSQL schema too when `VETO_TEST_POSTGRES_URL`
//! is set), with veto's own mail going to a maildir the tests read.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use veto_core::{
    Channel, Decision, EmailAddress, Message, MessageClass, PolicySettings, Role, ServiceType,
    Timestamp, Topic, TopicKey, decide,
};
use veto_mail::Purpose;
use veto_store::{NewTopic, Store, StoredEvent};
use veto_web::{AppState, Organisation, TrustedProxies, WebSettings};

/// The User-Agent of the organisation's server calling the API.
pub const API_USER_AGENT: &str = "shop-backend/2.3";
/// The person's browser, as the shop's form saw it (sent in the JSON).
pub const FORM_IP: &str = "192.0.2.10";
pub const FORM_UA: &str = "Mozilla/5.0 (sign-up form)";
pub const FORM_URL: &str = "https://shop.example/signup";
/// The person's browser when they confirm (the test client connects from 127.0.0.1).
pub const CONFIRM_UA: &str = "Mozilla/5.0 (confirming)";

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

pub enum Backend {
    Sqlite,
    Postgres,
}

/// Every backend this run can test, each store with the directory it lives
/// in (kept as long as the app). PostgreSQL is skipped, and says so,
/// without `VETO_TEST_POSTGRES_URL`.
async fn stores() -> Vec<(Backend, Store, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Store::open_sqlite(&dir.path().join("veto.db"))
        .await
        .expect("open sqlite");
    let mut v = vec![(Backend::Sqlite, sqlite, dir)];
    match std::env::var("VETO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(url) => {
            let pg = Store::open_postgres(&url, Some(&unique("veto_api_test")))
                .await
                .unwrap_or_else(|e| {
                    panic!("VETO_TEST_POSTGRES_URL is set but PostgreSQL could not be used: {e}")
                });
            v.push((
                Backend::Postgres,
                pg,
                tempfile::tempdir().expect("temp dir"),
            ));
        }
        None => eprintln!("skipped: PostgreSQL half (set VETO_TEST_POSTGRES_URL to run it)"),
    }
    v
}

pub struct TestApp {
    pub backend: Backend,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub state: AppState,
    pub store: Store,
    pub client: reqwest::Client,
    /// The wording the shop's form shows.
    pub wording: i64,
    /// API keys by role.
    pub marketer: String,
    pub viewer: String,
    outbox: PathBuf,
    /// Where campaigns and service messages go (a maildir), when sending is on.
    sent: PathBuf,
    stop_sending: Option<tokio::sync::watch::Sender<bool>>,
    _dir: tempfile::TempDir,
    server: JoinHandle<std::io::Result<()>>,
    shutdown: oneshot::Sender<()>,
}

/// One app per backend this run can test, each with veto's own mail on.
pub async fn apps() -> Vec<TestApp> {
    apps_with_mail(true).await
}

pub async fn apps_with_mail(mail: bool) -> Vec<TestApp> {
    let mut v = vec![];
    for (backend, store, dir) in stores().await {
        v.push(spawn_app(backend, store, dir, mail).await);
    }
    v
}

/// Serves veto-web on 127.0.0.1:0 over `store`, with the shop's topics,
/// wording and keys; veto's own mail goes to `dir/outbox` when `mail`.
pub async fn spawn_app(
    backend: Backend,
    store: Store,
    dir: tempfile::TempDir,
    mail: bool,
) -> TestApp {
    spawn_app_with(backend, store, dir, mail, None).await
}

/// One app per backend, also sending campaigns and service messages (to
/// the maildir `dir/sent`) under `service`.
pub async fn sending_apps(service: veto_sender::service::ServiceSettings) -> Vec<TestApp> {
    let mut v = vec![];
    for (backend, store, dir) in stores().await {
        v.push(spawn_app_with(backend, store, dir, true, Some(service.clone())).await);
    }
    v
}

/// As [`spawn_app`]; with `sending`, the API's campaigns and service
/// messages are on, and the campaign sender runs.
pub async fn spawn_app_with(
    backend: Backend,
    store: Store,
    dir: tempfile::TempDir,
    mail: bool,
    sending: Option<veto_sender::service::ServiceSettings>,
) -> TestApp {
    for (key, name, group) in [
        ("news", "Product news", None),
        ("offers", "Offers", None),
        ("shoe-offers", "Shoe offers", Some("shoes")),
    ] {
        store
            .add_topic(NewTopic {
                key: TopicKey::parse(key).expect("topic key"),
                name: name.into(),
                description: format!("{name}, now and then."),
                group: group.map(str::to_owned),
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
    let marketer = store
        .create_api_key(Role::Marketer, None)
        .await
        .expect("key")
        .key;
    let viewer = store
        .create_api_key(Role::Viewer, None)
        .await
        .expect("key")
        .key;

    let outbox = dir.path().join("outbox");
    let mailer = veto_sender::Mailer::new(
        veto_store::Guard::new(store.clone(), PolicySettings::default()),
        veto_sender::Maildir::open(&outbox).expect("outbox"),
        "Example Shop",
        "example.org",
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("local addr");
    let settings = WebSettings {
        public_url: format!("http://{addr}"),
        organisation: Organisation {
            name: "Example Shop".into(),
            postal_address: "1 High Street, Cardiff".into(),
            privacy_url: None,
        },
        trusted_proxies: TrustedProxies::default(),
        service_types: vec![ServiceType {
            key: "billing".into(),
            description: "Bills and receipts".into(),
        }],
    };
    let mut state = AppState::with_mailer(store.clone(), settings, mail.then_some(mailer))
        .await
        .expect("app state");
    let sent = dir.path().join("sent");
    // The admin UI's outbox viewer shows what campaigns and service messages sent.
    state = state.with_outbox(sent.clone());
    let mut stop_sending = None;
    if let Some(service) = sending {
        let out = veto_sender::outbound::Outbound {
            guard: veto_store::Guard::new(store.clone(), PolicySettings::default()),
            transport: std::sync::Arc::new(veto_sender::MaildirTransport::new(
                veto_sender::Maildir::open(&sent).expect("sent maildir"),
            )),
            copies: veto_sender::CopyMaker {
                links: veto_sender::copy::Links {
                    public_url: format!("http://{addr}"),
                    mail_domain: "example.org".into(),
                    list_domain: "example.org".into(),
                    feedback_sender: "exampleshop".into(),
                },
                footer: veto_sender::copy::FooterText {
                    organisation: "Example Shop".into(),
                    postal_address: "1 High Street, Cardiff".into(),
                    unsubscribe_text: "Unsubscribe".into(),
                    preferences_text: "Manage your preferences".into(),
                },
                dkim: Vec::new(),
            },
        };
        let campaigns = veto_sender::campaign::Campaigns::new(
            out.clone(),
            veto_sender::campaign::CampaignSettings {
                poll: Duration::from_millis(50),
                ..Default::default()
            },
        );
        let (stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(campaigns.clone().run(rx));
        stop_sending = Some(stop);
        state = state.with_sending(campaigns, out, service);
    }
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(veto_web::serve(listener, state.clone(), async move {
        let _ = stop.await;
    }));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(API_USER_AGENT)
        .build()
        .expect("client");
    TestApp {
        backend,
        base: format!("http://{addr}"),
        state,
        store,
        client,
        wording,
        marketer,
        viewer,
        outbox,
        sent,
        stop_sending,
        _dir: dir,
        server,
        shutdown,
    }
}

pub fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("email address")
}

/// What a JSON error body says: (code, field).
pub fn error_of(body: &Value) -> (String, Option<String>) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error has a message: {body}"
    );
    (
        e["code"].as_str().expect("error code").to_owned(),
        e["field"].as_str().map(str::to_owned),
    )
}

/// The refusal's reason code, or "allowed".
pub fn reason_code(d: &Decision) -> &'static str {
    match d {
        Decision::Allowed(_) => "allowed",
        Decision::Denied(r) => r.reason.code(),
    }
}

impl TestApp {
    /// "sqlite" or "postgres", for assertion messages.
    pub fn name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON with a Bearer key; returns the status and the JSON body.
    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let res = req.send().await.expect("POST");
        json_of(res).await
    }

    /// POSTs raw bytes with a content type, as a broken client might.
    pub async fn post_raw(
        &self,
        path: &str,
        key: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("POST");
        json_of(res).await
    }

    /// A new key of `role` held by `owner`.
    pub async fn key_for(&self, role: Role, owner: &str) -> String {
        self.store
            .create_api_key_with(veto_store::KeySpec {
                role,
                default_topic: None,
                default_service: None,
                owner: Some(owner.to_owned()),
            })
            .await
            .expect("key")
            .key
    }

    /// Any request: method, path, key, JSON body (sent when `Some`) and
    /// extra headers. Returns the status, the JSON body and the headers.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.send().await.expect("request");
        let headers = res.headers().clone();
        let (status, body) = json_of(res).await;
        (status, body, headers)
    }

    pub async fn get_json(&self, path: &str, key: &str) -> (u16, Value) {
        let (status, body, _) = self.call("GET", path, Some(key), None, &[]).await;
        (status, body)
    }

    pub async fn consents(&self, body: &Value) -> (u16, Value) {
        self.post("/api/v1/consents", Some(&self.marketer), body)
            .await
    }

    pub async fn purchases(&self, body: &Value) -> (u16, Value) {
        self.post("/api/v1/purchases", Some(&self.marketer), body)
            .await
    }

    pub async fn signups(&self, body: &Value) -> (u16, Value) {
        self.post("/api/v1/signups", Some(&self.marketer), body)
            .await
    }

    /// A grant as the shop's sign-up form records it.
    pub async fn grant(&self, address: &str, topic: &str) -> Value {
        let (status, body) = self
            .consents(&serde_json::json!({
                "email": address, "topic": topic, "action": "grant", "wording": self.wording,
                "source": "form", "ip": FORM_IP, "user_agent": FORM_UA, "form_url": FORM_URL,
            }))
            .await;
        assert_eq!(status, 201, "{}: grant: {body}", self.name());
        body
    }

    pub async fn withdraw(&self, address: &str, topic: &str) -> Value {
        let (status, body) = self
            .consents(&serde_json::json!({"email": address, "topic": topic, "action": "withdraw"}))
            .await;
        assert_eq!(status, 201, "{}: withdraw: {body}", self.name());
        body
    }

    /// A signup as the shop's form sends it.
    pub async fn signup(&self, address: &str, topic: Option<&str>) -> (u16, Value) {
        self.signups(&serde_json::json!({
            "email": address, "topic": topic, "wording": self.wording,
            "ip": FORM_IP, "user_agent": FORM_UA, "form_url": FORM_URL,
        }))
        .await
    }

    /// The messages in the outbox, oldest first.
    pub fn outbox(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.outbox.join("new"))
            .expect("outbox/new")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("mail file"))
            .collect()
    }

    /// The campaign and service messages handed off, oldest first.
    pub fn sent(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.sent.join("new")) else {
            return vec![];
        };
        let mut files: Vec<PathBuf> = dir.map(|e| e.expect("entry").path()).collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("mail file"))
            .collect()
    }

    /// The `{public_url}/confirm/{token}` link in a message.
    pub fn confirm_link(&self, mail: &str) -> String {
        // Undo quoted-printable soft line breaks, should the body use them.
        let mail = mail.replace("=\r\n", "").replace("=\n", "");
        let prefix = format!("{}/confirm/", self.base);
        let start = mail
            .find(&prefix)
            .unwrap_or_else(|| panic!("no confirm link in:\n{mail}"));
        let token: String = mail[start + prefix.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert_eq!(token.len(), 40, "a whole token: {token}");
        format!("{prefix}{token}")
    }

    /// The signup a confirm link names.
    pub fn signup_id(&self, link: &str) -> i64 {
        let token = link.rsplit('/').next().expect("token");
        let claims = self
            .state
            .keys()
            .verify(token, Purpose::Confirm)
            .expect("a valid confirm token");
        i64::try_from(claims.contact).expect("id")
    }

    /// What the person's browser does on the confirmation page.
    pub async fn get_page(&self, url: &str) -> (u16, String) {
        let res = self
            .client
            .get(url)
            .header(reqwest::header::USER_AGENT, CONFIRM_UA)
            .send()
            .await
            .expect("GET");
        (res.status().as_u16(), res.text().await.expect("body"))
    }

    pub async fn press_confirm(&self, url: &str) -> (u16, String) {
        let res = self
            .client
            .post(url)
            .header(reqwest::header::USER_AGENT, CONFIRM_UA)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("")
            .send()
            .await
            .expect("POST");
        (res.status().as_u16(), res.text().await.expect("body"))
    }

    pub async fn topic(&self, key: &str) -> Topic {
        self.store
            .topic(&TopicKey::parse(key).expect("topic key"))
            .await
            .expect("topic")
            .unwrap_or_else(|| panic!("no topic {key}"))
    }

    /// The ledger rows of the contact that now has this address, oldest first.
    pub async fn events(&self, address: &str) -> Vec<StoredEvent> {
        let Some(c) = self
            .store
            .find_contact(&email(address))
            .await
            .expect("find contact")
        else {
            return vec![];
        };
        self.store
            .events_of(veto_core::ContactId(c.id))
            .await
            .expect("events_of")
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

    /// Stops the server and closes the store.
    pub async fn close(self) {
        if let Some(stop) = &self.stop_sending {
            let _ = stop.send(true);
        }
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

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: the body is not JSON ({e}): {text}"));
    (status, body)
}
