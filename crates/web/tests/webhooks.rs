//! Provider feedback webhooks from the outside: SES through SNS (signed, with
//! its certificate served by a local HTTPS server under a test CA), SendGrid's
//! signed event webhook and Postmark's Basic-authenticated webhooks, with the
//! providers' documented payloads (tests/fixtures/webhooks). What is asserted
//! is what a provider and an auditor see: status codes, the JSON answer, and
//! the ledger rows. Every test runs on SQLite, and on PostgreSQL too when
//! `VETO_TEST_POSTGRES_URL` is set.

mod helpers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use data_encoding::BASE64;
use helpers::{TestStore, email, stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use veto_core::{Channel, EventKind, NewEvent, Scope, Source, Timestamp, TopicKey};
use veto_store::{Append, AppendOutcome, ContactInput, Evidence, NewTopic, SoftBounceLimit, Store};
use veto_web::webhooks::{CertificateHost, PostmarkSettings, SendGridSettings, SesSettings, Trust};
use veto_web::{AppState, Webhooks};

const TOPIC_ARN: &str = "arn:aws:sns:us-east-1:123456789012:veto-feedback";
const JANE: &str = "jane@example.com";
const MARY: &str = "mary@example.com";
const RICHARD: &str = "richard@example.com";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture's JSON, compact (as providers send it).
fn compact(name: &str) -> String {
    let value: Value = serde_json::from_str(&fixture(name)).expect("fixture JSON");
    value.to_string()
}

// ---- the SNS side: a test CA, a signing certificate, a local HTTPS host ----------------

/// What the local "SNS host" has been asked for.
#[derive(Default)]
struct Hits {
    certificates: AtomicUsize,
    subscribes: AtomicUsize,
}

struct Sns {
    /// `127.0.0.1:PORT` of the HTTPS server.
    host: String,
    /// The test CA and the v1 fixture's CA, as `ca_file` holds them.
    ca_pem: String,
    signing_key: RsaKeyPair,
    hits: Arc<Hits>,
    _stop: oneshot::Sender<()>,
}

impl Sns {
    async fn start() -> Sns {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose, PKCS_RSA_SHA256,
        };
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
        };
        let test_ca = ca("veto webhook test CA");
        let stranger = ca("some other CA");

        // The HTTPS server's own certificate.
        let tls_key = KeyPair::generate().expect("TLS key");
        let tls_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("TLS params")
            .signed_by(&tls_key, &test_ca)
            .expect("TLS cert");
        // The SNS signing certificate (RSA, as SNS's are), and one the
        // trust does not know.
        let signing = KeyPair::generate_for(&PKCS_RSA_SHA256).expect("RSA key");
        let mut params =
            CertificateParams::new(vec!["sns.amazonaws.com".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "sns.amazonaws.com");
        let signing_pem = params
            .signed_by(&signing, &test_ca)
            .expect("signing cert")
            .pem();
        let untrusted_pem = params
            .signed_by(&signing, &stranger)
            .expect("untrusted cert")
            .pem();
        let v1_pem = fixture("sns-v1-signing.pem");

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls_pki_types::CertificateDer::from(
                    tls_cert.der().to_vec(),
                )],
                rustls_pki_types::PrivateKeyDer::Pkcs8(tls_key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let host = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
        let hits = Arc::new(Hits::default());
        let (stop_tx, mut stop) = oneshot::channel::<()>();
        let served = hits.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = &mut stop => return,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
                };
                let acceptor = acceptor.clone();
                let hits = served.clone();
                let (signing_pem, untrusted_pem, v1_pem) =
                    (signing_pem.clone(), untrusted_pem.clone(), v1_pem.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    let (status, body) = if path == "/cert.pem" {
                        hits.certificates.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", signing_pem)
                    } else if path == "/v1.pem" {
                        hits.certificates.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", v1_pem)
                    } else if path == "/untrusted.pem" {
                        hits.certificates.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", untrusted_pem)
                    } else if path.starts_with("/?Action=ConfirmSubscription") {
                        hits.subscribes.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", "<ConfirmSubscriptionResponse/>".to_owned())
                    } else {
                        ("404 Not Found", "no".to_owned())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let signing_key = RsaKeyPair::from_pkcs8(&signing.serialize_der()).expect("RSA key pair");
        Sns {
            host,
            ca_pem: format!("{}{}", test_ca.pem(), fixture("sns-v1-ca.pem")),
            signing_key,
            hits,
            _stop: stop_tx,
        }
    }

    fn settings(&self) -> SesSettings {
        SesSettings {
            topic_arns: vec![TOPIC_ARN.to_owned()],
            certificate_hosts: vec![CertificateHost::parse(&self.host).expect("host rule")],
            trust: Trust::Pem(self.ca_pem.clone().into_bytes()),
            timeout: Duration::from_secs(5),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.host)
    }

    /// An SNS message of `kind` with `fields`, signed (SignatureVersion 2)
    /// over the documented canonical string.
    fn signed(&self, mut message: serde_json::Map<String, Value>) -> Value {
        let kind = message["Type"].as_str().expect("Type").to_owned();
        let order: &[&str] = if kind == "Notification" {
            &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ]
        } else {
            &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        };
        let mut canonical = String::new();
        for key in order {
            if let Some(Value::String(v)) = message.get(*key) {
                canonical.push_str(&format!("{key}\n{v}\n"));
            }
        }
        let mut signature = vec![0u8; self.signing_key.public_modulus_len()];
        self.signing_key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                canonical.as_bytes(),
                &mut signature,
            )
            .expect("sign");
        message.insert("SignatureVersion".into(), json!("2"));
        message.insert("Signature".into(), json!(BASE64.encode(&signature)));
        message
            .entry("SigningCertURL")
            .or_insert_with(|| json!(self.url("/cert.pem")));
        Value::Object(message)
    }

    /// An SES notification (a fixture's JSON text) as SNS delivers it.
    fn notification(&self, ses: &str, message_id: &str) -> Value {
        let fields = json!({
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": TOPIC_ARN,
            "Message": ses,
            "Timestamp": "2016-01-27T14:59:38.500Z",
            "UnsubscribeURL": self.url("/?Action=Unsubscribe"),
        });
        self.signed(fields.as_object().expect("object").clone())
    }
}

// ---- the app -----------------------------------------------------------------------

struct App {
    base: String,
    store: Store,
    client: reqwest::Client,
    db: TestStore,
    _stop: oneshot::Sender<()>,
}

/// Soft bounces: 2 within a day make a hard bounce.
const LIMIT: SoftBounceLimit = SoftBounceLimit {
    threshold: 2,
    window: Duration::from_secs(86_400),
};

async fn spawn(db: TestStore, hooks: Option<Webhooks>) -> App {
    let store = db.store.clone();
    store
        .add_topic(NewTopic {
            key: TopicKey::parse("news").expect("key"),
            name: "Product news".into(),
            description: "New products, about once a month.".into(),
            group: None,
        })
        .await
        .expect("topic");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let mut state = AppState::new(
        store.clone(),
        helpers::settings(addr, helpers::default_proxies()),
    )
    .await
    .expect("state");
    if let Some(hooks) = hooks {
        state = state.with_webhooks(hooks);
    }
    let (stop_tx, stop) = oneshot::channel::<()>();
    tokio::spawn(veto_web::serve(listener, state, async move {
        let _ = stop.await;
    }));
    App {
        base: format!("http://{addr}"),
        store,
        client: reqwest::Client::new(),
        db,
        _stop: stop_tx,
    }
}

impl App {
    fn name(&self) -> &'static str {
        self.db.name()
    }

    /// The person signed up for news on the shop's form.
    async fn grant(&self, address: &str) {
        let topic = self
            .store
            .topic(&TopicKey::parse("news").expect("key"))
            .await
            .expect("topic")
            .expect("news");
        let outcome = self
            .store
            .append(
                vec![Append {
                    contact: ContactInput::new(email(address)),
                    event: NewEvent {
                        kind: EventKind::Grant,
                        scope: Scope::Topic(topic.id),
                        channel: Some(Channel::Email),
                        source: Source::Form,
                        at: Timestamp::now(),
                    },
                    evidence: Evidence::default(),
                    actor: "test".into(),
                }],
                false,
            )
            .await
            .expect("grant");
        assert!(
            matches!(outcome[0], AppendOutcome::Recorded { .. }),
            "{outcome:?}"
        );
    }

    /// (kind, actor) of every feedback event of `address`.
    async fn feedback(&self, address: &str) -> Vec<(EventKind, String)> {
        let Some(contact) = self
            .store
            .find_contact(&email(address))
            .await
            .expect("find")
        else {
            return Vec::new();
        };
        self.store
            .events_of(veto_core::ContactId(contact.id))
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.event.source == Source::Feedback)
            .map(|e| {
                assert_eq!(e.event.scope, Scope::All);
                assert_eq!(e.event.channel, Some(Channel::Email));
                (e.event.kind, e.actor)
            })
            .collect()
    }

    async fn count_events(&self) -> i64 {
        self.store.count_events().await.expect("count")
    }

    /// Whether a marketing email on news may go to `address` now.
    async fn allowed(&self, address: &str) -> bool {
        let topic = self
            .store
            .topic(&TopicKey::parse("news").expect("key"))
            .await
            .expect("topic")
            .expect("news");
        matches!(
            helpers::decision_in(&self.store, address, &topic).await,
            veto_core::Decision::Allowed(_)
        )
    }

    async fn post(
        &self,
        path: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("POST");
        let status = response.status();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
        (status, json)
    }

    async fn post_sns(&self, message: &Value) -> (StatusCode, Value) {
        self.post(
            "/webhooks/ses",
            &message.to_string(),
            &[(
                "x-amz-sns-message-type",
                message["Type"].as_str().unwrap_or_default().to_owned(),
            )],
        )
        .await
    }
}

async fn ses_apps() -> Vec<(App, Sns)> {
    let mut v = Vec::new();
    for db in stores().await {
        let sns = Sns::start().await;
        let hooks = Webhooks::new(LIMIT)
            .with_ses(sns.settings())
            .expect("ses receiver");
        let app = spawn(db, Some(hooks)).await;
        for who in [JANE, MARY, RICHARD] {
            app.grant(who).await;
        }
        v.push((app, sns));
    }
    v
}

fn field(answer: &Value) -> &str {
    answer["error"]["field"].as_str().unwrap_or_default()
}

// ---- SES ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ses_bounces_and_complaints_become_ledger_events_once() {
    for (app, sns) in ses_apps().await {
        let db = app.name();
        assert!(app.allowed(JANE).await, "{db}");
        let bounce = sns.notification(&compact("ses-bounce-permanent.json"), "m-1");
        let (status, answer) = app.post_sns(&bounce).await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(answer["recorded"], 1, "{db}: {answer}");
        assert_eq!(
            app.feedback(JANE).await,
            [(EventKind::HardBounce, "feedback:ses".to_owned())],
            "{db}"
        );
        assert!(
            !app.allowed(JANE).await,
            "{db}: a hard bounce stops marketing"
        );

        // SNS retries: 200, and nothing new.
        let before = app.count_events().await;
        let (status, answer) = app.post_sns(&bounce).await;
        assert_eq!(status, StatusCode::OK, "{db}");
        assert_eq!(answer["duplicates"], 1, "{db}: {answer}");
        assert_eq!(answer["recorded"], 0, "{db}: {answer}");
        // The same feedback through another SNS message id is the same event.
        let (_, answer) = app
            .post_sns(&sns.notification(&compact("ses-bounce-permanent.json"), "m-2"))
            .await;
        assert_eq!(answer["duplicates"], 1, "{db}: {answer}");
        assert_eq!(app.count_events().await, before, "{db}");
        assert_eq!(app.feedback(JANE).await.len(), 1, "{db}");
        // Fetched once, then cached.
        assert_eq!(sns.hits.certificates.load(Ordering::SeqCst), 1, "{db}");

        let (status, answer) = app
            .post_sns(&sns.notification(&compact("ses-complaint.json"), "m-3"))
            .await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(
            app.feedback(RICHARD).await,
            [(EventKind::Complaint, "feedback:ses".to_owned())],
            "{db}"
        );
        assert!(!app.allowed(RICHARD).await, "{db}");

        // The evidence is kept per contact, as for a DSN.
        let contact = app.store.find_contact(&email(JANE)).await.unwrap().unwrap();
        let reports = app
            .store
            .inbound_reports_of(veto_core::ContactId(contact.id))
            .await
            .unwrap();
        assert_eq!(reports.len(), 1, "{db}");
        assert_eq!(reports[0].kind, "hard_bounce");
        assert_eq!(reports[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(reports[0].envelope_to, "webhook:ses");
        assert_eq!(
            reports[0].key,
            "ses:00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ses_transient_bounces_count_towards_the_soft_bounce_threshold() {
    for (app, sns) in ses_apps().await {
        let db = app.name();
        let first = compact("ses-bounce-transient.json");
        let (status, answer) = app.post_sns(&sns.notification(&first, "t-1")).await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(answer["soft_bounces_counted"], 1, "{db}: {answer}");
        assert!(app.feedback(MARY).await.is_empty(), "{db}");
        assert!(
            app.allowed(MARY).await,
            "{db}: one soft bounce stops nothing"
        );

        let second = first.replace("44455566", "77788899");
        assert_ne!(first, second);
        let (_, answer) = app.post_sns(&sns.notification(&second, "t-2")).await;
        assert_eq!(answer["recorded"], 1, "{db}: {answer}");
        assert_eq!(
            app.feedback(MARY).await,
            [(EventKind::HardBounce, "feedback:soft-bounces".to_owned())],
            "{db}"
        );
        assert!(!app.allowed(MARY).await, "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ses_signature_version_1_from_the_fixture_verifies() {
    for (app, sns) in ses_apps().await {
        let db = app.name();
        let text = fixture("sns-v1-bounce.json").replace(
            "CERT_HOST/SimpleNotificationService-v1test.pem",
            &format!("{}/v1.pem", sns.host),
        );
        let mut message: Value = serde_json::from_str(&text).expect("fixture");

        // Tampered: another address in the signed Message.
        let original = message["Message"].as_str().unwrap().to_owned();
        message["Message"] = json!(original.replace("jane@example.com", "mary@example.com"));
        let (status, answer) = app.post_sns(&message).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db}: {answer}");
        assert!(app.feedback(MARY).await.is_empty(), "{db}");

        message["Message"] = json!(original);
        let (status, answer) = app.post_sns(&message).await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(
            app.feedback(JANE).await,
            [(EventKind::HardBounce, "feedback:ses".to_owned())],
            "{db}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ses_refuses_what_it_cannot_verify_and_records_nothing() {
    for (app, sns) in ses_apps().await {
        let db = app.name();
        let before = app.count_events().await;
        let good = sns.notification(&compact("ses-bounce-permanent.json"), "x-1");

        // A tampered signature.
        let mut tampered = good.clone();
        let mut sig = BASE64
            .decode(tampered["Signature"].as_str().unwrap().as_bytes())
            .unwrap();
        sig[10] ^= 1;
        tampered["Signature"] = json!(BASE64.encode(&sig));
        let (status, answer) = app.post_sns(&tampered).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db}: {answer}");

        // A tampered message under a good signature.
        let mut tampered = good.clone();
        tampered["MessageId"] = json!("x-2");
        assert_eq!(
            app.post_sns(&tampered).await.0,
            StatusCode::FORBIDDEN,
            "{db}"
        );

        // Signed, but by a certificate from a CA the trust does not hold.
        let mut fields = good.as_object().unwrap().clone();
        fields.insert("SigningCertURL".into(), json!(sns.url("/untrusted.pem")));
        let (status, answer) = app.post_sns(&sns.signed(fields)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not trusted"),
            "{answer}"
        );

        // Certificates only from the configured hosts, only over https: not
        // even fetched otherwise.
        let fetched = sns.hits.certificates.load(Ordering::SeqCst);
        for url in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem".to_owned(),
            format!("http://{}/cert.pem", sns.host),
            format!("https://user@{}/cert.pem", sns.host),
            "https://127.0.0.1:1/cert.pem".to_owned(),
        ] {
            let mut fields = good.as_object().unwrap().clone();
            fields.insert("SigningCertURL".into(), json!(url));
            let (status, answer) = app.post_sns(&sns.signed(fields)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{db} {url}: {answer}");
        }
        assert_eq!(
            sns.hits.certificates.load(Ordering::SeqCst),
            fetched,
            "{db}"
        );

        // Another topic: refused before anything is fetched.
        let mut fields = good.as_object().unwrap().clone();
        fields.insert(
            "TopicArn".into(),
            json!("arn:aws:sns:us-east-1:999999999999:someone-else"),
        );
        let (status, answer) = app.post_sns(&sns.signed(fields)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db}: {answer}");

        // Unknown signature version.
        let mut other = good.clone();
        other["SignatureVersion"] = json!("3");
        let (status, answer) = app.post_sns(&other).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}");
        assert_eq!(field(&answer), "SignatureVersion");

        assert_eq!(app.count_events().await, before, "{db}");
        assert!(app.allowed(JANE).await, "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ses_malformed_payloads_get_400_naming_the_field() {
    for (app, sns) in ses_apps().await {
        let db = app.name();
        let before = app.count_events().await;
        let (status, answer) = app.post("/webhooks/ses", "{not json", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_payload");

        let (status, answer) = app
            .post("/webhooks/ses", r#"{"Type":"Notification"}"#, &[])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}");
        assert_eq!(field(&answer), "TopicArn");

        let (status, answer) = app.post("/webhooks/ses", "[]", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");

        // Signed and from our topic, but the SES part is broken.
        let broken =
            compact("ses-bounce-permanent.json").replace("\"emailAddress\"", "\"address\"");
        let (status, answer) = app.post_sns(&sns.notification(&broken, "b-1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
        assert_eq!(
            field(&answer),
            "Message.bounce.bouncedRecipients[0].emailAddress"
        );

        let (status, answer) = app.post_sns(&sns.notification("not json", "b-2")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
        assert_eq!(field(&answer), "Message");

        let bad_type =
            compact("ses-bounce-permanent.json").replace("\"Permanent\"", "\"Sometimes\"");
        let (status, answer) = app.post_sns(&sns.notification(&bad_type, "b-3")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
        assert_eq!(field(&answer), "Message.bounce.bounceType");

        // A 400 records nothing, so the fixed event still counts later.
        assert_eq!(app.count_events().await, before, "{db}");

        // Deliveries mean nothing for consent; unknown addresses are ignored.
        let delivery =
            json!({"notificationType": "Delivery", "mail": {"messageId": "d"}, "delivery": {}})
                .to_string();
        let (status, answer) = app.post_sns(&sns.notification(&delivery, "d-1")).await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(answer["ignored"], 1);
        let stranger = compact("ses-complaint.json").replace(RICHARD, "nobody@example.net");
        let (status, answer) = app.post_sns(&sns.notification(&stranger, "u-1")).await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(answer["unknown_addresses"], 1, "{db}: {answer}");
        assert_eq!(app.count_events().await, before, "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sns_subscription_is_confirmed_only_at_an_allowed_host() {
    for (app, sns) in ses_apps().await {
        let db = app.name();
        let confirmation = |subscribe: String| {
            let fields = json!({
                "Type": "SubscriptionConfirmation",
                "MessageId": format!("sub-{subscribe}"),
                "Token": "2336412f37fb687f5d51e6e2425c464de12884ae",
                "TopicArn": TOPIC_ARN,
                "Message": "You have chosen to subscribe to the topic. To confirm the subscription, visit the SubscribeURL included in this message.",
                "SubscribeURL": subscribe,
                "Timestamp": "2016-01-27T14:59:38.500Z",
            });
            sns.signed(fields.as_object().unwrap().clone())
        };
        // Signed, but pointing elsewhere: not visited.
        let (status, answer) = app
            .post_sns(&confirmation(
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=x".into(),
            ))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db}: {answer}");
        assert_eq!(field(&answer), "");
        assert_eq!(sns.hits.subscribes.load(Ordering::SeqCst), 0, "{db}");

        let good = confirmation(sns.url("/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f"));
        let (status, answer) = app.post_sns(&good).await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(sns.hits.subscribes.load(Ordering::SeqCst), 1, "{db}");
        // Tampered: refused, not visited again.
        let mut tampered = good.clone();
        tampered["Token"] = json!("other");
        assert_eq!(
            app.post_sns(&tampered).await.0,
            StatusCode::FORBIDDEN,
            "{db}"
        );
        assert_eq!(sns.hits.subscribes.load(Ordering::SeqCst), 1, "{db}");
    }
}

// ---- SendGrid ----------------------------------------------------------------------

struct SendGridSigner {
    key: EcdsaKeyPair,
}

impl SendGridSigner {
    fn new() -> (SendGridSigner, String) {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("P-256 key");
        let public = BASE64.encode(key.public_key().as_der().expect("SPKI").as_ref());
        (SendGridSigner { key }, public)
    }

    fn headers(&self, body: &str, timestamp: i64) -> Vec<(&'static str, String)> {
        let signed = format!("{timestamp}{body}");
        let signature = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("sign");
        vec![
            (
                "X-Twilio-Email-Event-Webhook-Signature",
                BASE64.encode(signature.as_ref()),
            ),
            (
                "X-Twilio-Email-Event-Webhook-Timestamp",
                timestamp.to_string(),
            ),
        ]
    }
}

async fn sendgrid_apps() -> Vec<(App, SendGridSigner)> {
    let mut v = Vec::new();
    for db in stores().await {
        let (signer, public) = SendGridSigner::new();
        let settings = SendGridSettings::new(&public, Duration::from_secs(600)).expect("key");
        let app = spawn(db, Some(Webhooks::new(LIMIT).with_sendgrid(settings))).await;
        for who in [JANE, MARY, RICHARD] {
            app.grant(who).await;
        }
        v.push((app, signer));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sendgrid_events_become_ledger_events_once() {
    for (app, signer) in sendgrid_apps().await {
        let db = app.name();
        let body = compact("sendgrid-events.json");
        let now = Timestamp::now().as_second();
        let (status, answer) = app
            .post("/webhooks/sendgrid", &body, &signer.headers(&body, now))
            .await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        // bounce (jane), dropped "Bounced Address" (mary), spamreport (richard);
        // a blocked bounce counted; delivered and deferred ignored; one stranger.
        assert_eq!(answer["recorded"], 3, "{db}: {answer}");
        assert_eq!(answer["soft_bounces_counted"], 1, "{db}: {answer}");
        assert_eq!(answer["ignored"], 2, "{db}: {answer}");
        assert_eq!(answer["unknown_addresses"], 1, "{db}: {answer}");
        let hard = (EventKind::HardBounce, "feedback:sendgrid".to_owned());
        assert_eq!(
            app.feedback(JANE).await,
            std::slice::from_ref(&hard),
            "{db}"
        );
        assert_eq!(app.feedback(MARY).await, [hard], "{db}");
        assert_eq!(
            app.feedback(RICHARD).await,
            [(EventKind::Complaint, "feedback:sendgrid".to_owned())],
            "{db}"
        );
        for who in [JANE, MARY, RICHARD] {
            assert!(!app.allowed(who).await, "{db}: {who}");
        }

        // SendGrid retries the batch: nothing new.
        let before = app.count_events().await;
        let (status, answer) = app
            .post("/webhooks/sendgrid", &body, &signer.headers(&body, now))
            .await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(answer["duplicates"], 5, "{db}: {answer}");
        assert_eq!(answer["recorded"], 0, "{db}: {answer}");
        assert_eq!(app.count_events().await, before, "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sendgrid_refuses_bad_signatures_stale_timestamps_and_bad_events() {
    for (app, signer) in sendgrid_apps().await {
        let db = app.name();
        let before = app.count_events().await;
        let body = compact("sendgrid-events.json");
        let now = Timestamp::now().as_second();

        // Signed, then changed.
        let headers = signer.headers(&body, now);
        let tampered = body.replace(JANE, "jane2@example.com");
        let (status, answer) = app.post("/webhooks/sendgrid", &tampered, &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db}: {answer}");
        // The timestamp is signed too.
        let mut moved = signer.headers(&body, now);
        moved[1].1 = (now + 1).to_string();
        assert_eq!(
            app.post("/webhooks/sendgrid", &body, &moved).await.0,
            StatusCode::FORBIDDEN,
            "{db}"
        );
        // Another key's signature.
        let (other, _) = SendGridSigner::new();
        assert_eq!(
            app.post("/webhooks/sendgrid", &body, &other.headers(&body, now))
                .await
                .0,
            StatusCode::FORBIDDEN,
            "{db}"
        );
        // Stale, or no signature at all.
        let (status, answer) = app
            .post(
                "/webhooks/sendgrid",
                &body,
                &signer.headers(&body, now - 3600),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{db}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_age"),
            "{answer}"
        );
        assert_eq!(
            app.post("/webhooks/sendgrid", &body, &[]).await.0,
            StatusCode::FORBIDDEN,
            "{db}"
        );

        // A good event then a broken one: 400 naming it, and neither recorded.
        let batch = json!([
            {"email": JANE, "event": "bounce", "sg_event_id": "ok-1", "timestamp": 1},
            {"email": MARY, "event": "spamreport", "timestamp": 1}
        ])
        .to_string();
        let (status, answer) = app
            .post("/webhooks/sendgrid", &batch, &signer.headers(&batch, now))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
        assert_eq!(field(&answer), "[1].sg_event_id");
        let batch =
            json!([{"email": "not an address", "event": "bounce", "sg_event_id": "a"}]).to_string();
        let (status, answer) = app
            .post("/webhooks/sendgrid", &batch, &signer.headers(&batch, now))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
        assert_eq!(field(&answer), "[0].email");
        let batch = json!({"event": "bounce"}).to_string();
        let (status, answer) = app
            .post("/webhooks/sendgrid", &batch, &signer.headers(&batch, now))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");

        assert_eq!(app.count_events().await, before, "{db}");
        assert!(app.feedback(JANE).await.is_empty(), "{db}");
    }
}

// ---- Postmark ----------------------------------------------------------------------

fn basic(user: &str, password: &str) -> (&'static str, String) {
    (
        "authorization",
        format!(
            "Basic {}",
            BASE64.encode(format!("{user}:{password}").as_bytes())
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postmark_bounces_and_complaints_become_ledger_events_once() {
    for db in stores().await {
        let settings = PostmarkSettings::new("postmark", "correct horse").expect("settings");
        let app = spawn(db, Some(Webhooks::new(LIMIT).with_postmark(settings))).await;
        let db = app.name();
        for who in [JANE, RICHARD] {
            app.grant(who).await;
        }
        let auth = [basic("postmark", "correct horse")];
        let bounce = compact("postmark-bounce.json");

        // No or wrong credentials: 401, nothing recorded.
        let before = app.count_events().await;
        let response = app
            .client
            .post(format!("{}/webhooks/postmark", app.base))
            .body(bounce.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{db}");
        assert!(response.headers().get("www-authenticate").is_some(), "{db}");
        let (status, _) = app
            .post("/webhooks/postmark", &bounce, &[basic("postmark", "wrong")])
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{db}");
        assert_eq!(app.count_events().await, before, "{db}");

        let (status, answer) = app.post("/webhooks/postmark", &bounce, &auth).await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(answer["recorded"], 1, "{db}: {answer}");
        assert_eq!(
            app.feedback(JANE).await,
            [(EventKind::HardBounce, "feedback:postmark".to_owned())],
            "{db}"
        );
        assert!(!app.allowed(JANE).await, "{db}");
        let (status, answer) = app.post("/webhooks/postmark", &bounce, &auth).await;
        assert_eq!(status, StatusCode::OK, "{db}");
        assert_eq!(answer["duplicates"], 1, "{db}: {answer}");
        assert_eq!(app.feedback(JANE).await.len(), 1, "{db}");

        let (status, answer) = app
            .post(
                "/webhooks/postmark",
                &compact("postmark-spam-complaint.json"),
                &auth,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{db}: {answer}");
        assert_eq!(
            app.feedback(RICHARD).await,
            [(EventKind::Complaint, "feedback:postmark".to_owned())],
            "{db}"
        );

        // Other record types mean nothing for consent.
        let delivery =
            json!({"RecordType": "Delivery", "MessageID": "x", "Recipient": JANE}).to_string();
        let (status, answer) = app.post("/webhooks/postmark", &delivery, &auth).await;
        assert_eq!(status, StatusCode::OK, "{db}");
        assert_eq!(answer["ignored"], 1, "{db}: {answer}");

        // Malformed: 400 naming the field.
        let before = app.count_events().await;
        let no_id = bounce.replace("\"ID\":4323372036854775807,", "");
        assert_ne!(no_id, bounce);
        let (status, answer) = app.post("/webhooks/postmark", &no_id, &auth).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
        assert_eq!(field(&answer), "ID");
        let no_email = bounce
            .replace("\"Email\":\"jane@example.com\",", "")
            .replace("4323372036854775807", "7");
        let (status, answer) = app.post("/webhooks/postmark", &no_email, &auth).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
        assert_eq!(field(&answer), "Email");
        assert_eq!(app.count_events().await, before, "{db}");
    }
}

// ---- off ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_that_are_not_enabled_answer_404() {
    let db = helpers::sqlite().await;
    let app = spawn(db, Some(Webhooks::new(LIMIT))).await;
    let db2 = helpers::sqlite().await;
    let bare = spawn(db2, None).await;
    for app in [&app, &bare] {
        for path in ["/webhooks/ses", "/webhooks/sendgrid", "/webhooks/postmark"] {
            let (status, answer) = app.post(path, "{}", &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        }
    }
}
