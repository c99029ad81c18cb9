//! Webhooks against a real HTTP receiver on 127.0.0.1: the bytes and
//! headers it gets, the signature it can check, and what happens when it
//! is down, failing or gone. SQLite always; PostgreSQL too when
//! VETO_TEST_POSTGRES_URL is set.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use veto_core::{Channel, EmailAddress, EventKind, NewEvent, Scope, Source, Timestamp};
use veto_sender::webhook::{SignatureError, verify_signature};
use veto_sender::{WebhookSender, WebhookSettings, WebhookTarget};
use veto_store::{
    Append, AppendOutcome, ContactInput, Evidence, Store, WebhookEndpoint, WebhookStatus,
};

const SECRET: &str = "s3cret-shared-with-the-crm";

/// What the receiver got: headers and body of each request.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// An HTTP receiver that records every request and answers `status`.
struct Receiver {
    addr: SocketAddr,
    received: Received,
    status: Arc<Mutex<StatusCode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(at: Option<SocketAddr>) -> Receiver {
        let listener = tokio::net::TcpListener::bind(at.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let received: Received = Arc::default();
        let status = Arc::new(Mutex::new(StatusCode::OK));
        let app = {
            let (received, status) = (received.clone(), status.clone());
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let (received, status) = (received.clone(), status.clone());
                    async move {
                        received.lock().unwrap().push((headers, body));
                        *status.lock().unwrap()
                    }
                }),
            )
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            received,
            status,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn answer(&self, status: StatusCode) {
        *self.status.lock().unwrap() = status;
    }

    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.received.lock().unwrap().clone()
    }
}

/// A fresh store per backend this run can test.
async fn stores() -> Vec<(&'static str, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open_sqlite(&dir.path().join("veto.db"))
        .await
        .unwrap();
    let mut out = vec![("sqlite", sqlite, Some(dir))];
    match std::env::var("VETO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(url) => {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let schema = format!(
                "veto_hooks_{}_{}_{}",
                std::process::id(),
                Timestamp::now().subsec_nanosecond(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let pg = Store::open_postgres(&url, Some(&schema))
                .await
                .unwrap_or_else(|e| panic!("VETO_TEST_POSTGRES_URL is set but unusable: {e}"));
            out.push(("postgres", pg, None));
        }
        None => eprintln!("skipped: PostgreSQL half (set VETO_TEST_POSTGRES_URL to run it)"),
    }
    out
}

fn settings(url: &str) -> WebhookSettings {
    WebhookSettings {
        endpoints: vec![WebhookTarget {
            name: "crm".into(),
            url: url.into(),
            secret: SECRET.into(),
        }],
        node: "test".into(),
        timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        ..WebhookSettings::default()
    }
}

async fn withdraw(store: &Store, email: &str) -> i64 {
    let out = store
        .append(
            vec![Append {
                contact: ContactInput::new(EmailAddress::parse(email).unwrap()),
                event: NewEvent {
                    kind: EventKind::Withdraw,
                    scope: Scope::All,
                    channel: Some(Channel::Email),
                    source: Source::OneClick,
                    at: Timestamp::now(),
                },
                evidence: Evidence::default(),
                actor: "person".into(),
            }],
            false,
        )
        .await
        .unwrap();
    match &out[0] {
        AppendOutcome::Recorded { event, .. } => event.0,
        other => panic!("not recorded: {other:?}"),
    }
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
}

/// Waits until delivery `id` is in `status` (the worker runs meanwhile).
async fn wait_for(store: &Store, id: i64, status: WebhookStatus) {
    for _ in 0..250 {
        let d = store.webhook_delivery(id).await.unwrap().unwrap();
        if d.status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = store.webhook_delivery(id).await.unwrap();
    panic!("delivery {id} never became {status}: {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_gets_the_stored_bytes_signed() {
    for (db, store, _dir) in stores().await {
        store.set_webhook_endpoints(vec![WebhookEndpoint::new("crm")]);
        let receiver = Receiver::start(None).await;
        let event = withdraw(&store, "ann@example.org").await;
        let sender = WebhookSender::new(store.clone(), settings(&receiver.url())).unwrap();

        let report = sender.deliver_due().await.unwrap();
        assert_eq!((report.attempted, report.delivered), (1, 1), "{db}");
        let requests = receiver.requests();
        assert_eq!(requests.len(), 1, "{db}");
        let (headers, body) = &requests[0];
        let row = &store.webhook_deliveries(None, None, 10).await.unwrap()[0];
        assert_eq!(row.status, WebhookStatus::Delivered, "{db}");
        assert_eq!(body.as_ref(), row.payload.as_bytes(), "{db}");
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["event_id"], event, "{db}");
        assert_eq!(json["kind"], "withdraw", "{db}");
        assert_eq!(json["email"], "ann@example.org", "{db}");
        assert_eq!(json["source"], "one_click", "{db}");
        assert_eq!(header(headers, "content-type"), "application/json", "{db}");
        assert_eq!(header(headers, "veto-event-id"), event.to_string(), "{db}");
        assert_eq!(
            header(headers, "veto-delivery-id"),
            row.id.to_string(),
            "{db}"
        );
        assert_eq!(header(headers, "veto-event-kind"), "withdraw", "{db}");

        // The receiver's check: a fresh timestamp and the HMAC of "t.body".
        let signature = header(headers, "veto-signature");
        let now = Timestamp::now().as_second();
        assert_eq!(
            verify_signature(SECRET.as_bytes(), signature, body, now, 300),
            Ok(()),
            "{db}"
        );
        let t: i64 = signature
            .split(',')
            .find_map(|p| p.strip_prefix("t="))
            .unwrap()
            .parse()
            .unwrap();
        assert!((now - t).abs() <= 5, "{db}: t={t}");
        // A forgery (another key), a changed body or a replay an hour on fail.
        assert_eq!(
            verify_signature(b"not the secret", signature, body, now, 300),
            Err(SignatureError::Mismatch),
            "{db}"
        );
        let mut tampered = body.to_vec();
        tampered.extend_from_slice(b" ");
        assert_eq!(
            verify_signature(SECRET.as_bytes(), signature, &tampered, now, 300),
            Err(SignatureError::Mismatch),
            "{db}"
        );
        assert!(
            matches!(
                verify_signature(SECRET.as_bytes(), signature, body, now + 3600, 300),
                Err(SignatureError::Stale { .. })
            ),
            "{db}"
        );
        // The signature by hand, as a receiver in any language computes it.
        {
            use hmac::{Hmac, Mac};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{t}.").as_bytes());
            mac.update(body);
            let hex = data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes());
            assert_eq!(signature, format!("t={t},v1={hex}"), "{db}");
        }

        // Delivered once: nothing more is sent.
        assert_eq!(sender.deliver_due().await.unwrap().attempted, 0, "{db}");
        assert_eq!(receiver.requests().len(), 1, "{db}");
        receiver.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_it_once_it_is_back() {
    for (db, store, _dir) in stores().await {
        store.set_webhook_endpoints(vec![WebhookEndpoint::new("crm")]);
        // A port with nothing behind it (yet).
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let url = format!("http://{addr}/hook");
        let event = withdraw(&store, "bo@example.org").await;
        let sender = WebhookSender::new(store.clone(), settings(&url)).unwrap();

        let report = sender.deliver_due().await.unwrap();
        assert_eq!((report.attempted, report.retrying), (1, 1), "{db}");
        let row = &store.webhook_deliveries(None, None, 10).await.unwrap()[0];
        assert_eq!(
            (row.status, row.attempts),
            (WebhookStatus::Pending, 1),
            "{db}"
        );
        let error = row.last_error.as_deref().unwrap_or_default();
        assert!(error.starts_with("cannot connect"), "{db}: {error}");
        assert!(
            Some(row.next_attempt_at) > row.last_attempt_at,
            "{db}: no backoff: {row:?}"
        );

        // The worker keeps trying; the receiver comes up.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(sender.clone().run(stop_rx));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let receiver = Receiver::start(Some(addr)).await;
        wait_for(&store, row.id, WebhookStatus::Delivered).await;
        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .expect("the worker stops when told")
            .unwrap();

        let requests = receiver.requests();
        assert_eq!(requests.len(), 1, "{db}");
        assert_eq!(
            header(&requests[0].0, "veto-event-id"),
            event.to_string(),
            "{db}"
        );
        let row = store.webhook_delivery(row.id).await.unwrap().unwrap();
        assert!(row.attempts >= 2, "{db}: {row:?}");
        assert_eq!(row.last_status, Some(200), "{db}");
        assert!(row.delivered_at.is_some(), "{db}");
        receiver.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_retried_410_stops_and_running_out_is_visible() {
    for (db, store, _dir) in stores().await {
        store.set_webhook_endpoints(vec![WebhookEndpoint::new("crm")]);
        let receiver = Receiver::start(None).await;
        let mut s = settings(&receiver.url());
        s.give_up_after = Duration::from_millis(400);
        let sender = WebhookSender::new(store.clone(), s).unwrap();

        // 500s: retried, with backoff, until the window runs out: failed.
        receiver.answer(StatusCode::INTERNAL_SERVER_ERROR);
        withdraw(&store, "cy@example.org").await;
        let id = store.webhook_deliveries(None, None, 10).await.unwrap()[0].id;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(sender.clone().run(stop_rx));
        wait_for(&store, id, WebhookStatus::Failed).await;
        let row = store.webhook_delivery(id).await.unwrap().unwrap();
        assert_eq!(row.last_status, Some(500), "{db}");
        assert!(row.attempts >= 2, "{db}: {row:?}");
        let error = row.last_error.clone().unwrap_or_default();
        assert!(
            error.contains("500") && error.contains("retries stopped"),
            "{db}: {error}"
        );
        let tries = receiver.requests().len();
        assert_eq!(tries as i64, row.attempts, "{db}");
        // Each try carried the same event id.
        let ids: std::collections::HashSet<String> = receiver
            .requests()
            .iter()
            .map(|(h, _)| header(h, "veto-event-id").to_owned())
            .collect();
        assert_eq!(ids.len(), 1, "{db}");

        // Staff retry it once the receiver is fixed: delivered.
        receiver.answer(StatusCode::NO_CONTENT);
        store
            .retry_webhook_delivery(id, Timestamp::now())
            .await
            .unwrap();
        wait_for(&store, id, WebhookStatus::Delivered).await;

        // 410: stops at once, visibly, and is not tried again.
        receiver.answer(StatusCode::GONE);
        withdraw(&store, "di@example.org").await;
        let gone = store.webhook_deliveries(None, Some(id), 10).await.unwrap()[0].id;
        wait_for(&store, gone, WebhookStatus::Gone).await;
        let before = receiver.requests().len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            receiver.requests().len(),
            before,
            "{db}: a gone delivery was tried again"
        );
        let row = store.webhook_delivery(gone).await.unwrap().unwrap();
        assert_eq!((row.attempts, row.last_status), (1, Some(410)), "{db}");
        let listed = store
            .webhook_deliveries(Some(WebhookStatus::Gone), None, 10)
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![gone],
            "{db}"
        );

        let _ = stop_tx.send(true);
        worker.await.unwrap();
        receiver.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_outbox_and_send_each_event_once() {
    for (db, store, _dir) in stores().await {
        store.set_webhook_endpoints(vec![WebhookEndpoint::new("crm")]);
        let receiver = Receiver::start(None).await;
        let mut events = Vec::new();
        for i in 0..40 {
            events.push(withdraw(&store, &format!("p{i}@example.org")).await);
        }
        let mut a = settings(&receiver.url());
        a.node = "node-a".into();
        a.batch = 4;
        let mut b = a.clone();
        b.node = "node-b".into();
        let (a, b) = (
            WebhookSender::new(store.clone(), a).unwrap(),
            WebhookSender::new(store.clone(), b).unwrap(),
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let workers = [
            tokio::spawn(a.run(stop_rx.clone())),
            tokio::spawn(b.run(stop_rx)),
        ];
        for _ in 0..500 {
            if receiver.requests().len() >= events.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        for w in workers {
            w.await.unwrap();
        }
        let mut got: Vec<i64> = receiver
            .requests()
            .iter()
            .map(|(h, _)| header(h, "veto-event-id").parse().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, events, "{db}: each event exactly once");
        let pending = store
            .webhook_deliveries(Some(WebhookStatus::Pending), None, 100)
            .await
            .unwrap();
        assert!(pending.is_empty(), "{db}: {pending:?}");
        receiver.task.abort();
    }
}
