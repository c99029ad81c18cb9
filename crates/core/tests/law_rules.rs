//! The law-rule table, run against in-memory state.

mod law_cases;

use law_cases::{Class, Expect, cases, now, topic};
use veto_core::{ConsentState, Decision, EventId, Fact, Message, MessageClass, Timestamp, decide};

/// Folds a case's events into a state, as the store would.
pub fn state_of(case: &law_cases::Case) -> ConsentState {
    let mut state = if case.known {
        ConsentState::known(case.jurisdiction_set(), case.subscriber)
    } else {
        ConsentState::default()
    };
    for (i, ev) in case.events.iter().enumerate() {
        state.apply(&ev.to_new_event().with_id(EventId(i as i64 + 1)));
    }
    if let Some(days) = case.suppressed_days_ago {
        let since = Timestamp::from_second(now().as_second() - days * 86_400).unwrap();
        state.upsert(Fact::Suppressed { since });
    }
    if let Some(screen) = case.phone_screen() {
        state.upsert(screen);
    }
    state.recent_sends = case
        .sends_days_ago
        .iter()
        .map(|d| Timestamp::from_second(now().as_second() - d * 86_400).unwrap())
        .collect();
    state
}

#[test]
fn law_rules_on_in_memory_state() {
    let mut failures = vec![];
    let mut ran = 0;
    for case in cases() {
        if let Some(why) = case.ignored {
            println!("ignored: {} ({why})", case.name);
            continue;
        }
        let state = state_of(&case);
        let t;
        let class = match case.message {
            Class::Marketing(k) => {
                t = topic(k);
                MessageClass::Marketing(&t)
            }
            Class::Service => MessageClass::Service,
            Class::Requested => MessageClass::Requested,
        };
        let decision = decide(
            &state,
            &Message {
                class,
                channel: case.channel,
            },
            &case.settings,
            now(),
        );
        let ok = match (case.expect, decision) {
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
                case.name, case.expect, decision
            ));
        }
    }
    assert!(ran > 80, "only {ran} cases ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} law-rule cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_rule_id_in_the_table_is_a_real_rule_or_an_ignored_case() {
    // A typo in a case's rule id would make it pass vacuously only if the
    // decision had the same typo; this also checks the law-rules.md ids.
    let known = [
        "PECR-21",
        "PECR-21-SCREEN",
        "PECR-22-2",
        "PECR-22-3",
        "PECR-22-3A",
        "PECR-CORP",
        "GDPR-6",
        "GDPR-7",
        "GDPR-17",
        "GDPR-21",
        "EP-13-2",
        "CS-ID",
        "CS-HONOR",
        "CASL-6",
        "CASL-EXPRESS",
        "CASL-10-IMPL",
        "CASL-11",
        "ICO-SUPP",
        "VETO-NO-RECORD",
        "VETO-COMPLAINT",
        "VETO-HARD-BOUNCE",
        "VETO-PAUSE",
        "VETO-FREQUENCY",
        "VETO-EXPRESS-ONLY",
        "VETO-POSTAL",
        "VETO-SERVICE",
        "VETO-REQUESTED",
    ];
    for case in cases().iter().filter(|c| c.ignored.is_none()) {
        let rule = match case.expect {
            Expect::Allowed(r) | Expect::Denied(r, _) => r,
        };
        assert!(known.contains(&rule), "{}: unknown rule {rule}", case.name);
    }
}
