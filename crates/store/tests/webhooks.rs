//! The webhook outbox on every backend: rows written in the event's own
//! transaction, claimed, retried, given up on, redacted by an erasure.

mod helpers;
#[path = "../../core/tests/law_cases/mod.rs"]
mod law_cases;

use std::time::Duration;

use veto_core::{Channel, EmailAddress, EventKind, NewEvent, Scope, Source, Timestamp, TopicKey};
use veto_store::{
    Append, AppendOutcome, AttemptOutcome, ContactInput, Evidence, NewTopic, RetryOutcome, Store,
    WebhookDelivery, WebhookEndpoint, WebhookStatus,
};

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("test address")
}

fn event(email: &str, kind: EventKind, scope: Scope) -> Append {
    Append {
        contact: ContactInput::new(addr(email)),
        event: NewEvent {
            kind,
            scope,
            channel: Some(Channel::Email),
            source: Source::Form,
            at: Timestamp::now(),
        },
        evidence: Evidence {
            ip: Some("192.0.2.7".into()),
            ..Evidence::default()
        },
        actor: "test".into(),
    }
}

fn endpoints() -> Vec<WebhookEndpoint> {
    vec![
        WebhookEndpoint::new("crm"),
        WebhookEndpoint {
            name: "calls".into(),
            events: vec!["withdraw".into(), "erasure".into()],
        },
    ]
}

async fn all(store: &Store) -> Vec<WebhookDelivery> {
    store
        .webhook_deliveries(None, None, 1000)
        .await
        .expect("list deliveries")
}

fn json(d: &WebhookDelivery) -> serde_json::Value {
    serde_json::from_str(&d.payload).expect("payload is JSON")
}

fn recorded(out: &[AppendOutcome]) -> i64 {
    match out.first() {
        Some(AppendOutcome::Recorded { event, .. }) => event.0,
        other => panic!("not recorded: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_written_with_the_event_and_only_when_it_commits() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        // No endpoints: nothing is written.
        s.append(
            vec![event("none@example.org", EventKind::Grant, Scope::All)],
            false,
        )
        .await
        .unwrap();
        assert!(all(s).await.is_empty(), "{db}");

        s.set_webhook_endpoints(endpoints());
        // Rolled back (a batch, then a dry run): no outbox row either.
        let mut batch = s.batch().await.unwrap();
        let out = batch
            .append(vec![event(
                "ada@example.org",
                EventKind::Withdraw,
                Scope::All,
            )])
            .await
            .unwrap();
        recorded(&out);
        batch.rollback().await.unwrap();
        s.append(
            vec![event("ada@example.org", EventKind::Withdraw, Scope::All)],
            true,
        )
        .await
        .unwrap();
        assert!(
            all(s).await.is_empty(),
            "{db}: a rolled-back event left outbox rows"
        );

        // Committed: one row per endpoint that wants the kind.
        let news = s
            .add_topic(NewTopic {
                key: TopicKey::parse("news").unwrap(),
                name: "News".into(),
                description: "Our news".into(),
                group: None,
            })
            .await
            .unwrap();
        let grant = recorded(
            &s.append(
                vec![event(
                    "Ada@Example.org",
                    EventKind::Grant,
                    Scope::Topic(news.id),
                )],
                false,
            )
            .await
            .unwrap(),
        );
        let withdraw = recorded(
            &s.append(
                vec![event(
                    "ada@example.org",
                    EventKind::Withdraw,
                    Scope::Topic(news.id),
                )],
                false,
            )
            .await
            .unwrap(),
        );
        // A refused append writes nothing either (a grant by staff after a withdrawal).
        let mut regrant = event("ada@example.org", EventKind::Grant, Scope::Topic(news.id));
        regrant.event.source = Source::Admin;
        let out = s.append(vec![regrant], false).await.unwrap();
        assert!(matches!(out[0], AppendOutcome::Refused(_)), "{db}: {out:?}");

        let rows = all(s).await;
        let got: Vec<(i64, &str, &str, WebhookStatus)> = rows
            .iter()
            .map(|d| (d.event_id, d.endpoint.as_str(), d.kind.as_str(), d.status))
            .collect();
        assert_eq!(
            got,
            vec![
                (grant, "crm", "grant", WebhookStatus::Pending),
                (withdraw, "crm", "withdraw", WebhookStatus::Pending),
                (withdraw, "calls", "withdraw", WebhookStatus::Pending),
            ],
            "{db}"
        );
        let body = json(&rows[1]);
        assert_eq!(body["event_id"], withdraw, "{db}");
        assert_eq!(body["kind"], "withdraw", "{db}");
        assert_eq!(body["email"], "ada@example.org", "{db}");
        assert_eq!(body["topic"], "news", "{db}");
        assert_eq!(body["channel"], "email", "{db}");
        assert_eq!(body["source"], "form", "{db}");
        assert!(body.get("address_hash").is_none(), "{db}");
        // Evidence (the IP) is not sent.
        assert!(!rows[1].payload.contains("192.0.2.7"), "{db}");
        // The same bytes for every endpoint.
        assert_eq!(rows[1].payload, rows[2].payload, "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_takes_the_address_out_of_every_payload() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        s.set_webhook_endpoints(endpoints());
        s.append(
            vec![event("bob@example.org", EventKind::Grant, Scope::All)],
            false,
        )
        .await
        .unwrap();
        s.append(
            vec![event("bob@example.org", EventKind::Withdraw, Scope::All)],
            false,
        )
        .await
        .unwrap();
        s.append(
            vec![event("cy@example.org", EventKind::Withdraw, Scope::All)],
            false,
        )
        .await
        .unwrap();
        // One of bob's is delivered already: it is redacted too.
        let claimed = s
            .claim_webhook_deliveries("n1", 1, Timestamp::now(), Duration::from_secs(60))
            .await
            .unwrap();
        s.finish_webhook_attempt(
            claimed[0].id,
            "n1",
            AttemptOutcome::Delivered { status: 200 },
            Timestamp::now(),
        )
        .await
        .unwrap();

        let erasure = s
            .erase(&addr("bob@example.org"), "dpo", Timestamp::now())
            .await
            .unwrap();
        let rows = all(s).await;
        let bob = rows[0].contact_id;
        for d in rows.iter().filter(|d| d.contact_id == bob) {
            assert!(!d.payload.contains("bob@"), "{db}: {}", d.payload);
            assert!(json(d)["email"].is_null(), "{db}: {}", d.payload);
        }
        assert_eq!(rows[0].status, WebhookStatus::Delivered, "{db}");
        let erased: Vec<&WebhookDelivery> =
            rows.iter().filter(|d| d.event_id == erasure.0).collect();
        assert_eq!(
            erased
                .iter()
                .map(|d| d.endpoint.as_str())
                .collect::<Vec<_>>(),
            vec!["crm", "calls"],
            "{db}"
        );
        let body = json(erased[0]);
        assert_eq!(body["kind"], "erasure", "{db}");
        assert!(body["email"].is_null(), "{db}");
        let hash = body["address_hash"].as_str().expect("address_hash");
        assert_eq!(hash.len(), 64, "{db}");
        // Someone else's rows keep their address.
        let cy = rows.iter().find(|d| d.contact_id != bob).unwrap();
        assert_eq!(json(cy)["email"], "cy@example.org", "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_retries_failures_and_purges() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        s.set_webhook_endpoints(vec![WebhookEndpoint::new("crm")]);
        for who in ["a", "b", "c"] {
            s.append(
                vec![event(
                    &format!("{who}@example.org"),
                    EventKind::Withdraw,
                    Scope::All,
                )],
                false,
            )
            .await
            .unwrap();
        }
        // Whole microseconds, as the store keeps them.
        let now = Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap();
        let lease = Duration::from_secs(60);
        let first = s
            .claim_webhook_deliveries("n1", 2, now, lease)
            .await
            .unwrap();
        assert_eq!(first.len(), 2, "{db}");
        // Another node gets only what is left; claimed rows are not handed out twice.
        let second = s
            .claim_webhook_deliveries("n2", 10, now, lease)
            .await
            .unwrap();
        assert_eq!(second.len(), 1, "{db}");
        assert!(
            s.claim_webhook_deliveries("n3", 10, now, lease)
                .await
                .unwrap()
                .is_empty(),
            "{db}"
        );
        // A claim whose lease ran out is taken over.
        let later = now.checked_add(Duration::from_secs(61)).unwrap();
        let taken = s
            .claim_webhook_deliveries("n3", 10, later, lease)
            .await
            .unwrap();
        assert_eq!(taken.len(), 3, "{db}");
        // The old claimant's answer no longer counts.
        assert!(
            !s.finish_webhook_attempt(
                taken[0].id,
                "n1",
                AttemptOutcome::Delivered { status: 200 },
                later
            )
            .await
            .unwrap(),
            "{db}"
        );

        let (a, b, c) = (taken[0].id, taken[1].id, taken[2].id);
        let retry_at = later.checked_add(Duration::from_secs(30)).unwrap();
        s.finish_webhook_attempt(
            a,
            "n3",
            AttemptOutcome::Retry {
                status: Some(503),
                error: "the receiver answered 503".into(),
                next_at: retry_at,
            },
            later,
        )
        .await
        .unwrap();
        s.finish_webhook_attempt(b, "n3", AttemptOutcome::Gone { status: 410 }, later)
            .await
            .unwrap();
        s.finish_webhook_attempt(
            c,
            "n3",
            AttemptOutcome::GaveUp {
                status: None,
                error: "cannot connect".into(),
            },
            later,
        )
        .await
        .unwrap();

        let row = s.webhook_delivery(a).await.unwrap().unwrap();
        assert_eq!(
            (
                row.status,
                row.attempts,
                row.last_status,
                row.last_error.as_deref()
            ),
            (
                WebhookStatus::Pending,
                1,
                Some(503),
                Some("the receiver answered 503")
            ),
            "{db}"
        );
        assert_eq!(row.next_attempt_at, retry_at, "{db}");
        assert_eq!(
            s.webhook_delivery(b).await.unwrap().unwrap().status,
            WebhookStatus::Gone,
            "{db}"
        );
        assert_eq!(
            s.webhook_delivery(c).await.unwrap().unwrap().status,
            WebhookStatus::Failed,
            "{db}"
        );
        let failed = s
            .webhook_deliveries(Some(WebhookStatus::Failed), None, 10)
            .await
            .unwrap();
        assert_eq!(
            failed.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![c],
            "{db}"
        );

        // Not due before its time; due after.
        assert!(
            s.claim_webhook_deliveries("n3", 10, later, lease)
                .await
                .unwrap()
                .is_empty(),
            "{db}"
        );
        let due = s
            .claim_webhook_deliveries("n3", 10, retry_at, lease)
            .await
            .unwrap();
        assert_eq!(
            due.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![a],
            "{db}"
        );
        s.finish_webhook_attempt(a, "n3", AttemptOutcome::Delivered { status: 204 }, retry_at)
            .await
            .unwrap();

        let counts = s.webhook_counts().await.unwrap();
        assert_eq!(counts.len(), 1, "{db}");
        assert_eq!(
            (
                counts[0].pending,
                counts[0].delivered,
                counts[0].failed,
                counts[0].gone
            ),
            (0, 1, 1, 1),
            "{db}"
        );

        // Staff retry a failed one and a gone one; a delivered one is left alone.
        for id in [b, c] {
            match s.retry_webhook_delivery(id, retry_at).await.unwrap() {
                RetryOutcome::Queued(d) => {
                    assert_eq!(
                        (d.status, d.pending_since),
                        (WebhookStatus::Pending, retry_at),
                        "{db}"
                    )
                }
                other => panic!("{db}: {other:?}"),
            }
        }
        assert!(
            matches!(
                s.retry_webhook_delivery(a, retry_at).await.unwrap(),
                RetryOutcome::AlreadyDelivered(_)
            ),
            "{db}"
        );
        assert!(
            matches!(
                s.retry_webhook_delivery(999_999, retry_at).await.unwrap(),
                RetryOutcome::NotFound
            ),
            "{db}"
        );
        let due = s
            .claim_webhook_deliveries("n1", 10, retry_at, lease)
            .await
            .unwrap();
        assert_eq!(
            due.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![b, c],
            "{db}"
        );

        // Purge: delivered rows older than the cut go; the others stay.
        assert_eq!(
            s.purge_webhook_deliveries(retry_at).await.unwrap(),
            0,
            "{db}"
        );
        let after = retry_at.checked_add(Duration::from_secs(1)).unwrap();
        assert_eq!(s.purge_webhook_deliveries(after).await.unwrap(), 1, "{db}");
        assert_eq!(
            all(s).await.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![b, c],
            "{db}"
        );
    }
}
