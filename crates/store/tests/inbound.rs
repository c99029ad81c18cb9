//! Mail to veto's own addresses, recorded once with its ledger event, on
//! every backend.

mod helpers;
#[path = "../../core/tests/law_cases/mod.rs"]
mod law_cases;

use std::time::Duration;

use veto_core::{
    Channel, ContactId, EmailAddress, EventKind, NewEvent, Scope, Source, Timestamp, TopicKey,
};
use veto_store::{
    Append, AppendOutcome, ContactInput, Evidence, InboundKind, InboundOutcome, NewInboundReport,
    Provider, ProviderEvent, ProviderFeedback, ProviderOutcome, ProviderRecipient, SoftBounceLimit,
    Store,
};

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("test address")
}

async fn granted(store: &Store, email: &str, scope: Scope) -> ContactId {
    let outcome = store
        .append(
            vec![Append {
                contact: ContactInput::new(addr(email)),
                event: NewEvent {
                    kind: EventKind::Grant,
                    scope,
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
        .expect("append");
    match outcome[0] {
        AppendOutcome::Recorded { contact, .. } => contact,
        ref other => panic!("grant refused: {other:?}"),
    }
}

fn report(contact: ContactId, key: &str, kind: InboundKind) -> NewInboundReport {
    NewInboundReport {
        contact,
        key: key.to_owned(),
        kind,
        received_at: Timestamp::now(),
        peer_ip: Some("198.51.100.25".into()),
        envelope_from: None,
        envelope_to: "bounces+x@veto.example.org".into(),
        message_id: Some(format!("<{key}@mx.example>")),
        status: Some("4.4.1".into()),
        diagnostic: Some("connection timed out".into()),
        reporting_mta: Some("mx.example".into()),
        feedback_type: None,
    }
}

/// (kind, source, actor) of each event after the grant.
async fn recorded(store: &Store, contact: ContactId) -> Vec<(String, Source, String)> {
    store
        .events_of(contact)
        .await
        .expect("events")
        .into_iter()
        .skip(1)
        .map(|e| (e.event.kind.name().to_owned(), e.event.source, e.actor))
        .collect()
}

const LIMIT: SoftBounceLimit = SoftBounceLimit {
    threshold: 2,
    window: Duration::from_secs(86_400),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_mail_is_recorded_once_with_its_event() {
    for ts in helpers::stores().await {
        let s = &ts.store;
        ts.add_topics().await;
        let news = s
            .topic(&TopicKey::parse("news").unwrap())
            .await
            .unwrap()
            .expect("news topic");
        let jo = granted(s, "jo@example.com", Scope::Topic(news.id)).await;
        let name = ts.name;

        let unsubscribe = report(jo, "u1", InboundKind::Unsubscribe(Scope::Topic(news.id)));
        let first = s.record_inbound(unsubscribe.clone(), LIMIT).await.unwrap();
        let InboundOutcome::Recorded { event } = first else {
            panic!("[{name}] {first:?}");
        };
        assert_eq!(
            s.record_inbound(unsubscribe, LIMIT).await.unwrap(),
            InboundOutcome::Duplicate,
            "[{name}]"
        );
        let events = s.events_of(jo).await.unwrap();
        let withdrawal = events.last().unwrap();
        assert_eq!(withdrawal.event.id, event);
        assert_eq!(withdrawal.event.kind, EventKind::Withdraw);
        assert_eq!(withdrawal.event.scope, Scope::Topic(news.id));
        assert_eq!(withdrawal.event.source, Source::Mailto);
        assert_eq!(withdrawal.actor, "person");

        // Soft bounces: the second within the window is a hard bounce.
        assert_eq!(
            s.record_inbound(report(jo, "s1", InboundKind::SoftBounce), LIMIT)
                .await
                .unwrap(),
            InboundOutcome::SoftBounceCounted {
                count: 1,
                threshold: 2
            },
            "[{name}]"
        );
        assert_eq!(
            s.record_inbound(report(jo, "s1", InboundKind::SoftBounce), LIMIT)
                .await
                .unwrap(),
            InboundOutcome::Duplicate,
            "[{name}]"
        );
        let hard = s
            .record_inbound(report(jo, "s2", InboundKind::SoftBounce), LIMIT)
            .await
            .unwrap();
        let InboundOutcome::Recorded { event: hard } = hard else {
            panic!("[{name}] {hard:?}");
        };
        // The next soft bounce starts counting afresh.
        assert_eq!(
            s.record_inbound(report(jo, "s3", InboundKind::SoftBounce), LIMIT)
                .await
                .unwrap(),
            InboundOutcome::SoftBounceCounted {
                count: 1,
                threshold: 2
            },
            "[{name}]"
        );
        let complaint = s
            .record_inbound(report(jo, "c1", InboundKind::Complaint), LIMIT)
            .await
            .unwrap();
        assert!(
            matches!(complaint, InboundOutcome::Recorded { .. }),
            "[{name}] {complaint:?}"
        );
        assert_eq!(
            recorded(s, jo).await,
            vec![
                ("withdraw".into(), Source::Mailto, "person".into()),
                (
                    "hard_bounce".into(),
                    Source::Feedback,
                    "feedback:soft-bounces".into()
                ),
                ("complaint".into(), Source::Feedback, "feedback:arf".into()),
            ],
            "[{name}]"
        );
        let rows = s.inbound_reports_of(jo).await.unwrap();
        let seen: Vec<(&str, &str, Option<i64>)> = rows
            .iter()
            .map(|r| (r.kind.as_str(), r.key.as_str(), r.event))
            .collect();
        assert_eq!(
            seen[..4],
            [
                ("unsubscribe", "u1", Some(event.0)),
                ("soft_bounce", "s1", Some(hard.0)),
                ("soft_bounce", "s2", Some(hard.0)),
                ("soft_bounce", "s3", None),
            ],
            "[{name}]"
        );
        assert_eq!(rows[0].message_id.as_deref(), Some("<u1@mx.example>"));
        assert_eq!(rows[1].status.as_deref(), Some("4.4.1"));

        // Nobody to stop: an unknown contact, and an erased one.
        assert_eq!(
            s.record_inbound(
                report(ContactId(999_999), "x", InboundKind::HardBounce),
                LIMIT
            )
            .await
            .unwrap(),
            InboundOutcome::NoContact,
            "[{name}]"
        );
        s.erase(&addr("jo@example.com"), "dpo", Timestamp::now())
            .await
            .unwrap();
        assert!(
            s.inbound_reports_of(jo).await.unwrap().is_empty(),
            "[{name}] erasure leaves envelopes and diagnostics behind"
        );
        assert_eq!(
            s.record_inbound(report(jo, "h1", InboundKind::HardBounce), LIMIT)
                .await
                .unwrap(),
            InboundOutcome::NoContact,
            "[{name}]"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_bounces_arriving_at_once_are_counted_exactly() {
    for ts in helpers::stores().await {
        let s = &ts.store;
        let mut contacts = Vec::new();
        for i in 0..4 {
            contacts.push(granted(s, &format!("p{i}@example.com"), Scope::All).await);
        }
        let limit = SoftBounceLimit {
            threshold: 3,
            window: Duration::from_secs(86_400),
        };
        // Six soft bounces per contact, all at once.
        let mut tasks = tokio::task::JoinSet::new();
        for &c in &contacts {
            for n in 0..6 {
                let s = s.clone();
                tasks.spawn(async move {
                    s.record_inbound(report(c, &format!("k{n}"), InboundKind::SoftBounce), limit)
                        .await
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task").expect("record");
        }
        for &c in &contacts {
            assert_eq!(
                recorded(s, c).await,
                vec![
                    (
                        "hard_bounce".into(),
                        Source::Feedback,
                        "feedback:soft-bounces".into()
                    ),
                    (
                        "hard_bounce".into(),
                        Source::Feedback,
                        "feedback:soft-bounces".into()
                    )
                ],
                "[{}] six soft bounces, threshold three: two hard bounces",
                ts.name
            );
        }
    }
}

fn provider_event(id: &str, recipients: Vec<ProviderRecipient>) -> ProviderEvent {
    ProviderEvent {
        provider: Provider::Ses,
        event_id: id.to_owned(),
        event_type: "Bounce".into(),
        received_at: Timestamp::now(),
        peer_ip: Some("203.0.113.7".into()),
        recipients,
    }
}

fn provider_recipient(email: &str, feedback: ProviderFeedback) -> ProviderRecipient {
    ProviderRecipient {
        email: addr(email),
        feedback,
        status: Some("5.1.1".into()),
        diagnostic: None,
        message_id: None,
        feedback_type: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_events_record_once_and_share_the_soft_bounce_count() {
    for ts in helpers::stores().await {
        let s = &ts.store;
        let name = ts.name;
        let ann = granted(s, "ann@example.com", Scope::All).await;
        let bo = granted(s, "bo@example.com", Scope::All).await;

        // One event, two recipients (one unknown): one transaction.
        let event = provider_event(
            "f-1",
            vec![
                provider_recipient("Ann@Example.com", ProviderFeedback::HardBounce),
                provider_recipient("nobody@example.com", ProviderFeedback::HardBounce),
            ],
        );
        let outcome = s.record_provider_event(event.clone(), LIMIT).await.unwrap();
        let ProviderOutcome::Recorded(outcomes) = outcome else {
            panic!("[{name}] {outcome:?}");
        };
        assert!(
            matches!(outcomes[0], InboundOutcome::Recorded { .. }),
            "[{name}] {outcomes:?}"
        );
        assert_eq!(outcomes[1], InboundOutcome::NoContact, "[{name}]");
        let before = s.count_events().await.unwrap();
        assert_eq!(
            s.record_provider_event(event, LIMIT).await.unwrap(),
            ProviderOutcome::Duplicate,
            "[{name}]"
        );
        assert_eq!(s.count_events().await.unwrap(), before, "[{name}]");
        assert_eq!(
            recorded(s, ann).await,
            vec![(
                "hard_bounce".into(),
                Source::Feedback,
                "feedback:ses".into()
            )],
            "[{name}]"
        );

        // A DSN soft bounce and a provider's soft bounce count together.
        assert!(matches!(
            s.record_inbound(report(bo, "dsn-1", InboundKind::SoftBounce), LIMIT)
                .await
                .unwrap(),
            InboundOutcome::SoftBounceCounted { count: 1, .. }
        ));
        let soft = provider_event(
            "f-2",
            vec![provider_recipient(
                "bo@example.com",
                ProviderFeedback::SoftBounce,
            )],
        );
        let outcome = s.record_provider_event(soft, LIMIT).await.unwrap();
        let ProviderOutcome::Recorded(outcomes) = outcome else {
            panic!("[{name}] {outcome:?}");
        };
        assert!(
            matches!(outcomes[0], InboundOutcome::Recorded { .. }),
            "[{name}] {outcomes:?}"
        );
        assert_eq!(
            recorded(s, bo).await,
            vec![(
                "hard_bounce".into(),
                Source::Feedback,
                "feedback:soft-bounces".into()
            )],
            "[{name}]"
        );
    }
}
