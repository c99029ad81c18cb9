//! The retention purge, on every backend: old receipts, relay records and
//! evidence go; suppression entries, ledger events and the ledger's
//! verification stay.

mod helpers;
#[path = "../../core/tests/law_cases/mod.rs"]
mod law_cases;

use std::time::Duration;

use law_cases::Ev;
use veto_core::{EmailAddress, Timestamp};
use veto_store::{Append, ContactInput, Delivery, Evidence, NewReceipt, Retention};

const DAY: Duration = Duration::from_secs(86_400);

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("test address")
}

fn grant(email: &str) -> Append {
    Append {
        contact: ContactInput::new(addr(email)),
        event: Ev::grant("news").to_new_event(),
        evidence: Evidence {
            ip: Some("203.0.113.9".into()),
            user_agent: Some("Mozilla/5.0 (Evidence)".into()),
            ..Default::default()
        },
        actor: "test".into(),
    }
}

fn receipt(message: &str, checked_at: Timestamp) -> NewReceipt {
    NewReceipt {
        message_id: message.into(),
        contact: None,
        recipient: "jo@example.com".into(),
        subject: Some("Spring sale".into()),
        content_hash: None,
        template_version: None,
        class: "news".into(),
        channel: "email".into(),
        allowed: true,
        rule: "GDPR-6-1-a".into(),
        reason: None,
        event: None,
        checked_at: checked_at.as_microsecond(),
        outcome: Some("250 ok".into()),
        relayed_at: None,
    }
}

/// A receipt of a copy upstream accepted at `at`.
fn relayed(message: &str, at: Timestamp) -> NewReceipt {
    NewReceipt {
        relayed_at: Some(at.as_microsecond()),
        ..receipt(message, at)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_rows_go_and_suppressions_and_the_ledger_stay() {
    for ts in helpers::stores().await {
        let name = ts.name;
        let store = &ts.store;
        ts.add_topics().await;
        let now = Timestamp::now();
        store
            .append(
                vec![
                    grant("jo@example.com"),
                    grant("sam@example.com"),
                    grant("al@example.com"),
                ],
                false,
            )
            .await
            .unwrap();
        store
            .erase(&addr("al@example.com"), "test", now)
            .await
            .unwrap();
        store
            .record_deliveries(vec![Delivery {
                receipts: vec![
                    receipt("<old@shop>", now - 100 * DAY),
                    relayed("<mid@shop>", now - 10 * DAY),
                    relayed("<new@shop>", now),
                ],
                service: None,
            }])
            .await
            .unwrap();
        let jo = store
            .find_contact(&addr("jo@example.com"))
            .await
            .unwrap()
            .unwrap();
        let events_before = store.verify().await.unwrap().events;

        // Receipts kept 60 days, relay records 7: a dry run counts, changes nothing.
        let keep = Retention {
            receipts: Some(60 * DAY),
            evidence: None,
            relay_records: 7 * DAY,
        };
        let dry = store.purge(&keep, now, true).await.unwrap();
        assert_eq!(
            (dry.receipts, dry.relay_records),
            (1, 1),
            "[{name}] {dry:?}"
        );
        assert_eq!(
            store
                .receipts_for_message("<old@shop>")
                .await
                .unwrap()
                .len(),
            1,
            "[{name}] a dry run deleted a receipt"
        );
        let since = now - 30 * DAY;
        assert_eq!(
            store.relayed_recipients("<mid@shop>", since).await.unwrap(),
            ["jo@example.com"],
            "[{name}] a dry run cleared a relay record"
        );
        let done = store.purge(&keep, now, false).await.unwrap();
        assert_eq!((done.receipts, done.relay_records), (1, 1), "[{name}]");
        assert!(
            store
                .receipts_for_message("<old@shop>")
                .await
                .unwrap()
                .is_empty(),
            "[{name}] the old receipt is still there"
        );
        assert_eq!(
            store
                .receipts_for_message("<new@shop>")
                .await
                .unwrap()
                .len(),
            1,
            "[{name}] the new receipt went too"
        );
        // The relay record older than 7 days is forgotten; its receipt,
        // 10 days old, is kept, and no longer says it was relayed.
        assert!(
            store
                .relayed_recipients("<mid@shop>", since)
                .await
                .unwrap()
                .is_empty(),
            "[{name}] the old relay record is still there"
        );
        let mid = store.receipts_for_message("<mid@shop>").await.unwrap();
        assert_eq!(mid.len(), 1, "[{name}] the 10-day-old receipt went");
        assert_eq!(mid[0].receipt.relayed_at, None, "[{name}]");
        assert_eq!(
            store.relayed_recipients("<new@shop>", since).await.unwrap(),
            ["jo@example.com"]
        );

        // Evidence kept 1 day, purged as if 2 days had passed: IP and user
        // agent are blanked in jo's and sam's rows (al's were erased).
        let keep = Retention {
            receipts: None,
            evidence: Some(DAY),
            relay_records: 7 * DAY,
        };
        let later = now + 2 * DAY;
        let dry = store.purge(&keep, later, true).await.unwrap();
        assert_eq!(dry.evidence.ledger_rows, 2, "[{name}] {dry:?}");
        let before = store.events_of(veto_core::ContactId(jo.id)).await.unwrap();
        let personal = before[0].personal.clone().unwrap();
        assert_eq!(
            personal.ip.as_deref(),
            Some("203.0.113.9"),
            "[{name}] a dry run blanked"
        );
        let done = store.purge(&keep, later, false).await.unwrap();
        assert_eq!(done.evidence.ledger_rows, 2, "[{name}] {done:?}");
        let after = store.events_of(veto_core::ContactId(jo.id)).await.unwrap();
        assert_eq!(after.len(), before.len(), "[{name}] an event went");
        assert_eq!(after[0].hash, before[0].hash, "[{name}] the event changed");
        let personal = after[0].personal.clone().unwrap();
        assert_eq!(personal.ip, None, "[{name}]");
        assert_eq!(personal.user_agent, None, "[{name}]");
        assert_eq!(
            personal.email.as_deref(),
            Some("jo@example.com"),
            "[{name}]"
        );

        // The ledger still verifies, every event is there, and the erased
        // address is still suppressed.
        let report = store.verify().await.unwrap();
        assert!(report.ok(), "[{name}] {report:?}");
        assert_eq!(report.events, events_before, "[{name}]");
        assert!(
            store
                .is_suppressed(&addr("al@example.com"))
                .await
                .unwrap()
                .is_some(),
            "[{name}] the suppression entry went"
        );

        // Nothing is left to blank the second time.
        let again = store.purge(&keep, later, false).await.unwrap();
        assert_eq!(again.evidence.ledger_rows, 0, "[{name}] {again:?}");
        assert!(store.verify().await.unwrap().ok());

        // A purged row is still checked: editing it is detected.
        ts.tamper(
            "UPDATE personal_data SET body = replace(body, 'jo@example.com', 'mallory@example.com') \
             WHERE evidence_purged_at IS NOT NULL",
        )
        .await;
        let report = store.verify().await.unwrap();
        assert!(!report.ok(), "[{name}] an edited purged row passed");
        assert!(
            report.problems[0].problem.contains("was altered"),
            "[{name}] {report:?}"
        );
    }
}
