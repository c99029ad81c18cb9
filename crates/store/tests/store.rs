//! The store test suite, run against every backend.

mod helpers;
#[path = "../../core/tests/law_cases/mod.rs"]
mod law_cases;

use std::collections::HashSet;

use law_cases::{Class, Ev, Expect, cases, now};
use proptest::prelude::*;
use veto_core::{
    Channel, ConsentState, Decision, EmailAddress, EventKind, Message, MessageClass, NewEvent,
    PolicySettings, Role, Scope, Source, Timestamp, TopicKey, decide,
};
use veto_store::{Append, AppendOutcome, ContactInput, Evidence, NewReceipt, Store};

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("test address")
}

fn append_of(
    email: &EmailAddress,
    case_j: veto_core::JurisdictionSet,
    sub: veto_core::SubscriberType,
    ev: NewEvent,
) -> Append {
    let mut contact = ContactInput::new(email.clone());
    contact.jurisdictions = case_j;
    contact.subscriber_type = Some(sub);
    Append {
        contact,
        event: ev,
        evidence: Evidence {
            ip: Some("192.0.2.7".into()),
            ..Default::default()
        },
        actor: "test".into(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn law_rules_hold_on_every_store() {
    for ts in helpers::stores().await {
        ts.add_topics().await;
        let topics = ts.store.topics().await.unwrap();
        let mut failures = vec![];
        let mut ran = 0;
        for (i, case) in cases().into_iter().enumerate() {
            if case.ignored.is_some() {
                continue;
            }
            let email = addr(&format!("case{i}@example.com"));
            let j = case.jurisdiction_set();
            if let Some(days) = case.suppressed_days_ago {
                // An earlier contact with this address, erased.
                let old = Ev::grant("news").days_ago(days + 10).to_new_event();
                ts.store
                    .append(vec![append_of(&email, j, case.subscriber, old)], false)
                    .await
                    .unwrap();
                let at = Timestamp::from_second(now().as_second() - days * 86_400).unwrap();
                ts.store.erase(&email, "test", at).await.unwrap();
            }
            if case.known {
                if case.events.is_empty() {
                    let mut c = ContactInput::new(email.clone());
                    c.jurisdictions = j;
                    c.subscriber_type = Some(case.subscriber);
                    let _ = ts.store.upsert_contact(c).await.unwrap();
                }
                let items = case
                    .events
                    .iter()
                    .map(|e| append_of(&email, j, case.subscriber, e.to_new_event()))
                    .collect();
                ts.store.append(items, false).await.unwrap();
            }
            let (contact, mut state) = ts.store.load_state(&email, now()).await.unwrap();
            if !case.sends_days_ago.is_empty() {
                let receipts = case
                    .sends_days_ago
                    .iter()
                    .map(|d| {
                        receipt(
                            contact.map(|c| c.0),
                            &email,
                            "news",
                            true,
                            now().as_microsecond() - d * 86_400_000_000,
                        )
                    })
                    .collect();
                ts.store.record_receipts(receipts).await.unwrap();
                state = ts.store.load_state(&email, now()).await.unwrap().1;
            }
            // The store adds the screening only for phone decisions, from
            // the loaded lists (tested with `veto tps import`); here the
            // case's own screening stands in for it.
            if let Some(screen) = case.phone_screen() {
                state.upsert(screen);
            }
            let t;
            let class = match case.message {
                Class::Marketing(k) => {
                    t = topics.iter().find(|t| t.key.as_str() == k).unwrap().clone();
                    MessageClass::Marketing(&t)
                }
                Class::Service => MessageClass::Service,
                Class::Requested => MessageClass::Requested,
            };
            let d = decide(
                &state,
                &Message {
                    class,
                    channel: case.channel,
                },
                &case.settings,
                now(),
            );
            let ok = match (case.expect, d) {
                (Expect::Allowed(rule), Decision::Allowed(a)) => a.rule.id() == rule,
                (Expect::Denied(rule, reason), Decision::Denied(r)) => {
                    r.rule.id() == rule && r.reason.code() == reason
                }
                _ => false,
            };
            ran += 1;
            if !ok {
                failures.push(format!(
                    "{}\n    expected {:?}\n    got      {:?}",
                    case.name, case.expect, d
                ));
            }
        }
        assert!(ran > 80);
        assert!(
            failures.is_empty(),
            "[{}] {} of {ran} law-rule cases failed:\n{}",
            ts.name,
            failures.len(),
            failures.join("\n")
        );
        let report = ts.store.verify().await.unwrap();
        assert!(report.ok(), "[{}] {:?}", ts.name, report.problems);
    }
}

fn receipt(
    contact: Option<i64>,
    email: &EmailAddress,
    class: &str,
    allowed: bool,
    at: i64,
) -> NewReceipt {
    NewReceipt {
        message_id: format!("<m{at}@example.com>"),
        contact,
        recipient: email.to_string(),
        subject: Some("Hello".into()),
        content_hash: None,
        template_version: None,
        class: class.into(),
        channel: "email".into(),
        allowed,
        rule: "PECR-22-2".into(),
        reason: None,
        event: None,
        checked_at: at,
        outcome: Some("250 ok".into()),
        relayed_at: None,
    }
}

fn facts(s: &ConsentState) -> HashSet<String> {
    s.facts.iter().map(|f| format!("{f:?}")).collect()
}

fn arb_event() -> impl Strategy<Value = Ev> {
    let topic = prop_oneof![Just("news"), Just("shoes"), Just("hats")];
    let source = prop_oneof![
        Just(Source::Import),
        Just(Source::PreferenceCentre),
        Just(Source::OneClick),
        Just(Source::Api)
    ];
    (0..9u8, topic, source, 0..400i64, any::<bool>()).prop_map(|(k, t, s, days, all_channels)| {
        let e = match k {
            0 => Ev::grant(t),
            1 => Ev::withdraw(t),
            2 => Ev::withdraw_all(),
            3 => Ev::purchase("shoes"),
            4 => Ev::object(),
            5 => Ev::hard_bounce(),
            6 => Ev::bounce_cleared(),
            7 => Ev::pause_for_days(30),
            _ => Ev::frequency(2, veto_core::Period::Week),
        };
        let e = e.by(s).days_ago(days);
        if all_channels { e.all_channels() } else { e }
    })
}

#[test]
fn state_rebuilt_from_the_ledger_equals_the_stored_state() {
    let rt = rt();
    let stores = rt.block_on(helpers::stores());
    for ts in &stores {
        rt.block_on(ts.add_topics());
        let n = std::sync::atomic::AtomicU32::new(0);
        let config = ProptestConfig {
            cases: if ts.name == "sqlite" { 48 } else { 16 },
            ..ProptestConfig::default()
        };
        proptest!(config, |(mut events in prop::collection::vec(arb_event(), 1..12), split in 0..12usize)| {
            // Ledger order is time order, as it is for real appends.
            events.sort_by_key(|e| std::cmp::Reverse(e.ago_seconds));
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let email = addr(&format!("prop{i}@example.com"));
            let items: Vec<Append> = events
                .iter()
                .map(|e| append_of(&email, veto_core::JurisdictionSet::EMPTY, veto_core::SubscriberType::Individual, e.to_new_event()))
                .collect();
            // In two transactions, so the second one starts from stored state.
            let split = split.min(items.len());
            let (a, b) = items.split_at(split);
            rt.block_on(async {
                ts.store.append(a.to_vec(), false).await.unwrap();
                ts.store.append(b.to_vec(), false).await.unwrap();
            });
            let (contact, stored) = rt.block_on(ts.store.load_state(&email, now())).unwrap();
            if let Some(contact) = contact {
                let rebuilt = rt.block_on(ts.store.rebuild_state(contact)).unwrap();
                prop_assert_eq!(facts(&stored), facts(&rebuilt), "[{}]", ts.name);
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_leaves_nothing_behind() {
    for ts in helpers::stores().await {
        ts.add_topics().await;
        let jo = addr("jo@example.com");
        ts.store
            .append(
                vec![append_of(
                    &jo,
                    Default::default(),
                    veto_core::SubscriberType::Individual,
                    Ev::withdraw_all().to_new_event(),
                )],
                false,
            )
            .await
            .unwrap();
        let before = (
            ts.store.count_contacts().await.unwrap(),
            ts.store.count_events().await.unwrap(),
        );
        let out = ts
            .store
            .append(
                vec![append_of(
                    &jo,
                    Default::default(),
                    veto_core::SubscriberType::Individual,
                    Ev::grant("news")
                        .by(Source::Import)
                        .days_ago(1)
                        .to_new_event(),
                )],
                false,
            )
            .await
            .unwrap();
        assert!(
            matches!(&out[0], AppendOutcome::Refused(r) if r.reason.code() == "withdrawn"),
            "[{}] {out:?}",
            ts.name
        );
        assert_eq!(
            before,
            (
                ts.store.count_contacts().await.unwrap(),
                ts.store.count_events().await.unwrap()
            ),
            "[{}]",
            ts.name
        );

        // Dry runs commit nothing either.
        let new = addr("new@example.com");
        let out = ts
            .store
            .append(
                vec![append_of(
                    &new,
                    Default::default(),
                    veto_core::SubscriberType::Individual,
                    Ev::grant("news").to_new_event(),
                )],
                true,
            )
            .await
            .unwrap();
        assert!(matches!(
            out[0],
            AppendOutcome::Recorded { created: true, .. }
        ));
        assert!(
            ts.store.find_contact(&new).await.unwrap().is_none(),
            "[{}] dry run left a contact",
            ts.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_deletes_personal_data_and_keeps_the_no() {
    for ts in helpers::stores().await {
        ts.add_topics().await;
        let jo = addr("Jo.Bloggs@Example.com");
        let mut c = ContactInput::new(jo.clone());
        c.name = Some("Jo Bloggs".into());
        let grant = Append {
            contact: c,
            event: Ev::grant("news").days_ago(5).to_new_event(),
            evidence: Evidence {
                ip: Some("203.0.113.9".into()),
                user_agent: Some("Firefox".into()),
                ..Default::default()
            },
            actor: "form".into(),
        };
        ts.store.append(vec![grant], false).await.unwrap();
        let contact = ts.store.find_contact(&jo).await.unwrap().unwrap();
        assert_eq!(contact.name.as_deref(), Some("Jo Bloggs"));
        let events_before = ts
            .store
            .events_of(veto_core::ContactId(contact.id))
            .await
            .unwrap();
        assert_eq!(
            events_before[0].personal.as_ref().unwrap().ip.as_deref(),
            Some("203.0.113.9")
        );

        ts.store.erase(&jo, "dpo", Timestamp::now()).await.unwrap();
        assert!(
            ts.store.find_contact(&jo).await.unwrap().is_none(),
            "[{}] the address is still findable",
            ts.name
        );
        let events = ts
            .store
            .events_of(veto_core::ContactId(contact.id))
            .await
            .unwrap();
        assert_eq!(
            events.len(),
            2,
            "[{}] the ledger keeps its (non-personal) events",
            ts.name
        );
        assert!(
            events.iter().all(|e| e.personal.is_none()),
            "[{}] personal data survived erasure",
            ts.name
        );
        assert!(matches!(events[1].event.kind, EventKind::Erasure));
        let report = ts.store.verify().await.unwrap();
        assert!(
            report.ok(),
            "[{}] chain must still verify after erasure: {:?}",
            ts.name,
            report.problems
        );

        // The address comes back in another case: still blocked.
        let same = addr("jo.bloggs@example.com");
        assert!(ts.store.is_suppressed(&same).await.unwrap().is_some());
        let out = ts
            .store
            .append(
                vec![append_of(
                    &same,
                    Default::default(),
                    veto_core::SubscriberType::Individual,
                    Ev::purchase("shoes")
                        .by(Source::Import)
                        .days_ago(0)
                        .to_new_event(),
                )],
                false,
            )
            .await
            .unwrap();
        assert!(
            matches!(&out[0], AppendOutcome::Refused(r) if r.reason.code() == "suppressed"),
            "[{}] {out:?}",
            ts.name
        );
        assert!(
            ts.store
                .upsert_contact(ContactInput::new(same.clone()))
                .await
                .unwrap()
                .is_err()
        );
        let topics = ts.store.topics().await.unwrap();
        let news = topics.iter().find(|t| t.key.as_str() == "news").unwrap();
        let (_, state) = ts.store.load_state(&same, Timestamp::now()).await.unwrap();
        for class in [MessageClass::Marketing(news), MessageClass::Service] {
            let d = decide(
                &state,
                &Message {
                    class,
                    channel: Channel::Email,
                },
                &PolicySettings::default(),
                Timestamp::now(),
            );
            assert!(!d.is_allowed(), "[{}] {d:?}", ts.name);
        }
        // The person themselves may come back.
        let own = Ev::grant("news").by(Source::DoubleOptIn).seconds_ago(0);
        let own = NewEvent {
            at: Timestamp::now(),
            ..own.to_new_event()
        };
        let out = ts
            .store
            .append(
                vec![append_of(
                    &same,
                    Default::default(),
                    veto_core::SubscriberType::Individual,
                    own,
                )],
                false,
            )
            .await
            .unwrap();
        assert!(
            matches!(out[0], AppendOutcome::Recorded { created: true, .. }),
            "[{}] {out:?}",
            ts.name
        );
        let (_, state) = ts.store.load_state(&same, Timestamp::now()).await.unwrap();
        let d = decide(
            &state,
            &Message {
                class: MessageClass::Marketing(news),
                channel: Channel::Email,
            },
            &PolicySettings::default(),
            Timestamp::now(),
        );
        assert!(d.is_allowed(), "[{}] {d:?}", ts.name);
    }
}

async fn ledger_with_events(ts: &helpers::TestStore, n: usize) -> Vec<i64> {
    ts.add_topics().await;
    let mut ids = vec![];
    for i in 0..n {
        // Contacts 16 apart share a chain partition.
        let email = addr(&format!("p{i}@example.com"));
        let out = ts
            .store
            .append(
                vec![append_of(
                    &email,
                    Default::default(),
                    veto_core::SubscriberType::Individual,
                    Ev::grant("news").days_ago(10).to_new_event(),
                )],
                false,
            )
            .await
            .unwrap();
        if let AppendOutcome::Recorded { event, .. } = out[0] {
            ids.push(event.0);
        }
    }
    ids
}

/// The partition an event is in, and the events of that partition in order.
async fn partition_events(ts: &helpers::TestStore, id: i64) -> (i64, Vec<i64>) {
    let e = ts
        .store
        .event(veto_core::EventId(id))
        .await
        .unwrap()
        .unwrap();
    let mut all = vec![];
    for c in 1..=64 {
        for ev in ts.store.events_of(veto_core::ContactId(c)).await.unwrap() {
            if ev.partition == e.partition {
                all.push((ev.seq, ev.event.id.0));
            }
        }
    }
    all.sort();
    (e.partition, all.into_iter().map(|(_, id)| id).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_first_edited_event() {
    for ts in helpers::stores().await {
        let ids = ledger_with_events(&ts, 40).await;
        assert!(ts.store.verify().await.unwrap().ok());
        let (_, chain) = partition_events(&ts, ids[0]).await;
        let victim = chain[1];
        ts.tamper(&format!(
            "UPDATE events SET kind = 'withdraw' WHERE id = {victim}"
        ))
        .await;
        let report = ts.store.verify().await.unwrap();
        assert_eq!(
            report.problems.len(),
            1,
            "[{}] {:?}",
            ts.name,
            report.problems
        );
        assert_eq!(
            report.problems[0].event,
            Some(victim),
            "[{}] {:?}",
            ts.name,
            report.problems
        );
        assert!(report.problems[0].problem.contains("altered"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_finds_deleted_and_reordered_events() {
    for ts in helpers::stores().await {
        let ids = ledger_with_events(&ts, 48).await;
        // Three partitions, three kinds of tampering.
        let (_, a) = partition_events(&ts, ids[0]).await;
        let (_, b) = partition_events(&ts, ids[1]).await;
        let (_, c) = partition_events(&ts, ids[2]).await;
        assert!(a.len() >= 3 && b.len() >= 3 && c.len() >= 3);
        ts.tamper(&format!("DELETE FROM events WHERE id = {}", a[1]))
            .await;
        ts.tamper(&format!("DELETE FROM events WHERE id = {}", b[b.len() - 1]))
            .await;
        // Swap the first two events of the third partition.
        ts.tamper(&format!(
            "UPDATE events SET seq = -1 WHERE id = {x}; UPDATE events SET seq = 1 WHERE id = {y}; UPDATE events SET seq = 2 WHERE id = {x}",
            x = c[0],
            y = c[1]
        ))
        .await;
        let report = ts.store.verify().await.unwrap();
        let by_event: Vec<Option<i64>> = report.problems.iter().map(|p| p.event).collect();
        assert_eq!(
            report.problems.len(),
            3,
            "[{}] {:?}",
            ts.name,
            report.problems
        );
        // Deleted in the middle: the event after the gap is named.
        assert!(
            by_event.contains(&Some(a[2])),
            "[{}] {:?}",
            ts.name,
            report.problems
        );
        // Deleted at the end: the head says so.
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.event.is_none() && p.problem.contains("newest events were deleted")),
            "[{}] {:?}",
            ts.name,
            report.problems
        );
        // Reordered: the first of the swapped events is named.
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.event == Some(c[1]) || p.event == Some(c[0])),
            "[{}] {:?}",
            ts.name,
            report.problems
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_checks_personal_data() {
    for ts in helpers::stores().await {
        let ids = ledger_with_events(&ts, 20).await;
        ts.tamper(&format!("UPDATE personal_data SET body = replace(body, 'p3@', 'px@') WHERE id = (SELECT pd_id FROM events WHERE id = {})", ids[3])).await;
        ts.tamper(&format!(
            "DELETE FROM personal_data WHERE id = (SELECT pd_id FROM events WHERE id = {})",
            ids[5]
        ))
        .await;
        let report = ts.store.verify().await.unwrap();
        let named: Vec<Option<i64>> = report.problems.iter().map(|p| p.event).collect();
        assert!(
            named.contains(&Some(ids[3])) && named.contains(&Some(ids[5])),
            "[{}] {:?}",
            ts.name,
            report.problems
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_names_the_wording_the_person_saw() {
    // ICO-REC / edge 10: the wording changes after consent; the evidence shows the version actually seen.
    for ts in helpers::stores().await {
        ts.add_topics().await;
        let v1 = ts
            .store
            .add_wording("Yes, send me product news.")
            .await
            .unwrap();
        let v1_again = ts
            .store
            .add_wording("Yes, send me product news.")
            .await
            .unwrap();
        assert_eq!(v1.id, v1_again.id, "the same text is the same wording");
        let jo = addr("jo@example.com");
        let mut a = append_of(
            &jo,
            Default::default(),
            veto_core::SubscriberType::Individual,
            Ev::grant("news").to_new_event(),
        );
        a.evidence.wording = Some(v1.id.0);
        a.evidence.form_url = Some("https://shop.example/checkout".into());
        ts.store.append(vec![a], false).await.unwrap();
        let v2 = ts
            .store
            .add_wording("Yes, send me product news and offers from partners.")
            .await
            .unwrap();
        assert_ne!(v1.id, v2.id);
        let c = ts.store.find_contact(&jo).await.unwrap().unwrap();
        let events = ts
            .store
            .events_of(veto_core::ContactId(c.id))
            .await
            .unwrap();
        assert_eq!(events[0].wording, Some(v1.id));
        assert_eq!(
            ts.store.wording(v1.id).await.unwrap().unwrap().text,
            "Yes, send me product news."
        );
        assert_eq!(
            events[0].form_url.as_deref(),
            Some("https://shop.example/checkout")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_keys_and_receipts() {
    for ts in helpers::stores().await {
        ts.add_topics().await;
        let dup = ts
            .store
            .add_topic(veto_store::NewTopic {
                key: TopicKey::parse("news").unwrap(),
                name: "x".into(),
                description: "y".into(),
                group: None,
            })
            .await;
        assert!(dup.unwrap_err().to_string().contains("already exists"));
        assert_eq!(ts.store.topics().await.unwrap().len(), 4);

        let k = ts
            .store
            .create_api_key(Role::Marketer, Some(&TopicKey::parse("news").unwrap()))
            .await
            .unwrap();
        assert!(k.key.len() >= 5 + 26, "at least 128 random bits");
        let found = ts.store.api_key(&k.key).await.unwrap().unwrap();
        assert_eq!(
            (found.role, found.default_topic.as_deref()),
            (Role::Marketer, Some("news"))
        );
        assert!(ts.store.api_key("veto_wrong").await.unwrap().is_none());
        assert!(
            ts.store
                .create_api_key(Role::Marketer, Some(&TopicKey::parse("nope").unwrap()))
                .await
                .is_err()
        );

        let keys = ts.store.token_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        let id = ts.store.rotate_token_key().await.unwrap();
        let keys = ts.store.token_keys().await.unwrap();
        assert_eq!(keys[0].0, id, "the newest key signs");
        assert_eq!(keys.len(), 2, "old keys still verify");

        let jo = addr("jo@example.com");
        ts.store
            .record_receipts(vec![receipt(None, &jo, "news", false, 5)])
            .await
            .unwrap();
        let r = ts
            .store
            .receipts_for_message("<m5@example.com>")
            .await
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].receipt.recipient, "jo@example.com");
        let _ = Scope::All;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_everything_and_refuses_a_newer_schema() {
    let ts = helpers::sqlite().await;
    ts.add_topics().await;
    let path = ts.sqlite_path.clone().unwrap();
    ts.store.close().await;
    let again = Store::open_sqlite(&path).await.unwrap();
    assert_eq!(again.topics().await.unwrap().len(), 4);
    again.close().await;
    ts.tamper("INSERT INTO veto_schema (version, applied_at) VALUES (99, 0)")
        .await;
    let err = Store::open_sqlite(&path).await.unwrap_err().to_string();
    assert!(err.contains("version 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_pending_signups_too() {
    for ts in helpers::stores().await {
        ts.add_topics().await;
        let jo = addr("jo@example.com");
        ts.store
            .append(
                vec![append_of(
                    &jo,
                    Default::default(),
                    veto_core::SubscriberType::Individual,
                    Ev::grant("news").to_new_event(),
                )],
                false,
            )
            .await
            .unwrap();
        let wording = ts.store.add_wording("Yes please.").await.unwrap();
        let requested = ts
            .store
            .create_signup(
                veto_store::NewSignup {
                    email: jo.clone(),
                    topic: None,
                    wording: wording.id,
                    ip: Some("203.0.113.5".into()),
                    user_agent: Some("Firefox".into()),
                    form_url: None,
                },
                Timestamp::now(),
                std::time::Duration::from_secs(86_400),
            )
            .await
            .unwrap();
        let veto_store::SignupRequested::Created { id } = requested else {
            panic!("[{}] expected a new signup, got {requested:?}", ts.name);
        };
        assert!(ts.store.signup(id).await.unwrap().is_some());
        ts.store.erase(&jo, "dpo", Timestamp::now()).await.unwrap();
        assert!(
            ts.store.signup(id).await.unwrap().is_none(),
            "[{}] the signup row (address, IP) survived erasure",
            ts.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_copies_service_volume_and_approvals() {
    use veto_store::{Delivery, HoldRequest, KeySpec, ReceiptLog};
    for ts in helpers::stores().await {
        let now = veto_core::Timestamp::now();
        // A copy of <m1@example.com> that upstream accepted: its receipt
        // is the relay memory.
        let copy = |to: &str| NewReceipt {
            message_id: "<m1@example.com>".into(),
            relayed_at: Some(now.as_microsecond()),
            ..receipt(None, &addr(to), "news", true, now.as_microsecond())
        };
        // Two deliveries through the group committer. jo's receipt is of
        // the same message, but its copy was not relayed.
        let log = ReceiptLog::start(ts.store.clone());
        let jo = addr("jo@example.com");
        let (a, b) = tokio::join!(
            log.record(Delivery {
                receipts: vec![receipt(None, &jo, "news", true, 1), copy("a@example.com")],
                service: Some(("api-key:veto_svc".into(), 2)),
            }),
            log.record(Delivery {
                receipts: vec![copy("b@example.com")],
                service: Some(("api-key:veto_svc".into(), 3)),
            })
        );
        a.unwrap();
        b.unwrap();
        let mut relayed = ts
            .store
            .relayed_recipients("<m1@example.com>", now - std::time::Duration::from_secs(60))
            .await
            .unwrap();
        relayed.sort();
        assert_eq!(relayed, ["a@example.com", "b@example.com"]);
        assert!(
            ts.store
                .relayed_recipients("<m2@example.com>", now - std::time::Duration::from_secs(60))
                .await
                .unwrap()
                .is_empty()
        );
        let since = now - std::time::Duration::from_secs(60);
        // Read together (the gateway's end of DATA): the same relay memory
        // and the same consent state as the two reads on their own.
        ts.add_topics().await;
        let a = addr("a@example.com");
        let grant = Append {
            contact: ContactInput::new(a.clone()),
            event: Ev::grant("news").days_ago(2).to_new_event(),
            evidence: Evidence::default(),
            actor: "form".into(),
        };
        ts.store.append(vec![grant], false).await.unwrap();
        let (mut together, (contact, state)) = ts
            .store
            .relayed_and_state("<m1@example.com>", since, &a, now)
            .await
            .unwrap();
        together.sort();
        assert_eq!(together, relayed, "[{}]", ts.name);
        let alone = ts.store.load_state(&a, now).await.unwrap();
        assert!(contact.is_some(), "[{}]", ts.name);
        assert_eq!((contact, &state), (alone.0, &alone.1), "[{}]", ts.name);
        assert_eq!(state.facts.len(), 1, "[{}] {state:?}", ts.name);
        let (none, (nobody, _)) = ts
            .store
            .relayed_and_state("<m2@example.com>", since, &addr("x@example.com"), now)
            .await
            .unwrap();
        assert!(none.is_empty() && nobody.is_none(), "[{}]", ts.name);
        assert_eq!(
            ts.store
                .service_volume("api-key:veto_svc", since)
                .await
                .unwrap(),
            5
        );
        assert_eq!(
            ts.store
                .service_volume("api-key:other", since)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            ts.store
                .receipts_for_message("<m1@example.com>")
                .await
                .unwrap()
                .len(),
            3
        );
        // Pruning forgets what is older than the memory; the receipts stay.
        let later = now + std::time::Duration::from_secs(1);
        assert_eq!(ts.store.prune_relayed(later).await.unwrap(), 2);
        assert!(
            ts.store
                .relayed_recipients("<m1@example.com>", since)
                .await
                .unwrap()
                .is_empty(),
            "[{}]",
            ts.name
        );
        let kept = ts
            .store
            .receipts_for_message("<m1@example.com>")
            .await
            .unwrap();
        assert_eq!(kept.len(), 3, "[{}]", ts.name);
        assert!(
            kept.iter().all(|r| r.receipt.relayed_at.is_none()),
            "[{}]",
            ts.name
        );
        assert_eq!(
            ts.store
                .service_volume("api-key:veto_svc", since)
                .await
                .unwrap(),
            0
        );

        // One pending request per sender, however often the tool retries.
        let hold = |n| HoldRequest {
            actor: "api-key:veto_svc".into(),
            owner: Some("sam".into()),
            class: "service:billing".into(),
            recipients: n,
            window_count: 100,
            at: now,
        };
        let first = ts.store.hold_for_approval(hold(5)).await.unwrap();
        let again = ts.store.hold_for_approval(hold(7)).await.unwrap();
        assert_eq!(first.id, again.id);
        assert_eq!(again.recipients, 7);
        assert_eq!(ts.store.approvals(true).await.unwrap().len(), 1);
        assert!(
            ts.store
                .latest_approval("api-key:veto_svc")
                .await
                .unwrap()
                .is_none()
        );
        let approved = ts
            .store
            .approve(first.id, "api-key:veto_dpo", "dana", now)
            .await
            .unwrap();
        assert_eq!(approved.approver_owner.as_deref(), Some("dana"));
        let twice = ts
            .store
            .approve(first.id, "api-key:veto_x", "xavier", now)
            .await
            .unwrap();
        assert_eq!(
            twice.approved_by.as_deref(),
            Some("api-key:veto_dpo"),
            "the first approval stands"
        );
        assert!(ts.store.approvals(true).await.unwrap().is_empty());
        assert!(
            ts.store
                .latest_approval("api-key:veto_svc")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            ts.store
                .approve(999, "api-key:veto_dpo", "dana", now)
                .await
                .is_err()
        );
        // The next hold is a new request.
        assert_ne!(
            ts.store.hold_for_approval(hold(1)).await.unwrap().id,
            first.id
        );

        // Keys name their holder and default service type.
        let k = ts
            .store
            .create_api_key_with(KeySpec {
                role: Role::ServiceSender,
                default_topic: None,
                default_service: Some("billing".into()),
                owner: Some("sam".into()),
            })
            .await
            .unwrap();
        let found = ts.store.api_key(&k.key).await.unwrap().unwrap();
        assert_eq!(found.owner.as_deref(), Some("sam"));
        assert_eq!(found.default_service.as_deref(), Some("billing"));
    }
}
