//! Nothing but the person can re-grant after a withdrawal, objection,
//! complaint or erasure (DESIGN.md: "Staff cannot re-grant consent").

mod law_cases;

use law_cases::{Ev, topic};
use veto_core::{
    ConsentState, EventId, Fact, JurisdictionSet, Period, Source, SubscriberType, check_append,
};

fn state(events: &[Ev]) -> ConsentState {
    let mut s = ConsentState::known(
        JurisdictionSet::parse_list("UK").unwrap(),
        SubscriberType::Individual,
    );
    for (i, e) in events.iter().enumerate() {
        s.apply(&e.to_new_event().with_id(EventId(i as i64 + 1)));
    }
    s
}

fn refused_reason(history: &[Ev], new: Ev) -> Option<&'static str> {
    check_append(&state(history), &new.to_new_event())
        .err()
        .map(|r| r.reason.code())
}

#[test]
fn staff_cannot_regrant_after_an_opt_out() {
    let withdrawn = [
        Ev::grant("news").days_ago(10),
        Ev::withdraw("news").days_ago(5),
    ];
    for source in [
        Source::Import,
        Source::Api,
        Source::Form,
        Source::Admin,
        Source::Feedback,
    ] {
        assert_eq!(
            refused_reason(&withdrawn, Ev::grant("news").days_ago(1).by(source)),
            Some("withdrawn"),
            "{source:?}"
        );
        assert_eq!(
            refused_reason(&withdrawn, Ev::grant_all().days_ago(1).by(source)),
            Some("withdrawn"),
            "{source:?}"
        );
    }
    // An unrelated topic is still the organisation's to record.
    assert_eq!(
        refused_reason(&withdrawn, Ev::grant("hats").days_ago(1).by(Source::Import)),
        None
    );
    // The person may.
    for source in [Source::PreferenceCentre, Source::DoubleOptIn] {
        assert_eq!(
            refused_reason(&withdrawn, Ev::grant("news").days_ago(1).by(source)),
            None,
            "{source:?}"
        );
    }
}

#[test]
fn objections_complaints_and_refusals_block_grants_too() {
    let cases = [
        (vec![Ev::object().days_ago(5)], "objected"),
        (vec![Ev::complaint().days_ago(5)], "complained"),
        (vec![Ev::refused().days_ago(5)], "refused_at_collection"),
    ];
    for (history, reason) in cases {
        assert_eq!(
            refused_reason(&history, Ev::grant("news").days_ago(1).by(Source::Import)),
            Some(reason)
        );
        assert_eq!(
            refused_reason(
                &history,
                Ev::grant("news").days_ago(1).by(Source::PreferenceCentre)
            ),
            None
        );
    }
}

#[test]
fn a_grant_for_all_marketing_cannot_override_a_topic_opt_out() {
    let history = [
        Ev::grant_all().days_ago(10),
        Ev::withdraw("news").days_ago(5),
    ];
    assert_eq!(
        refused_reason(&history, Ev::grant_all().days_ago(1).by(Source::Api)),
        Some("withdrawn")
    );
}

#[test]
fn withdrawals_and_facts_are_always_recordable() {
    let history = [Ev::object().days_ago(5)];
    for ev in [
        Ev::withdraw("news"),
        Ev::withdraw_all().by(Source::Import),
        Ev::purchase("shoes").by(Source::Import),
        Ev::hard_bounce(),
    ] {
        assert_eq!(refused_reason(&history, ev.days_ago(1)), None);
    }
}

#[test]
fn nothing_from_staff_about_an_erased_address() {
    let mut s = ConsentState::known(JurisdictionSet::EMPTY, SubscriberType::Individual);
    s.upsert(Fact::Suppressed {
        since: law_cases::now(),
    });
    let purchase = Ev::purchase("shoes")
        .days_ago(0)
        .by(Source::Import)
        .to_new_event();
    assert_eq!(
        check_append(&s, &purchase).unwrap_err().reason.code(),
        "suppressed"
    );
    let own = Ev::grant("news")
        .days_ago(0)
        .by(Source::DoubleOptIn)
        .to_new_event();
    assert!(check_append(&s, &own).is_ok());
    // Not even the person's own "no" is stored again: it changes nothing and
    // would bring their address back into the store.
    let own_no = Ev::withdraw("news")
        .days_ago(0)
        .by(Source::OneClick)
        .to_new_event();
    assert_eq!(
        check_append(&s, &own_no).unwrap_err().reason.code(),
        "suppressed"
    );
    // Once they came back by themselves, their withdrawals count as usual.
    let mut back = s.clone();
    back.apply(&own.with_id(veto_core::EventId(7)));
    assert!(check_append(&back, &own_no).is_ok());

    let erased = state(&[Ev::grant("news").days_ago(3), Ev::erasure().days_ago(1)]);
    let any = Ev::withdraw("news").days_ago(0).to_new_event();
    assert_eq!(
        check_append(&erased, &any).unwrap_err().reason.code(),
        "erased"
    );
}

#[test]
fn staff_cannot_loosen_limits_the_person_set() {
    let limited = [Ev::frequency(1, Period::Month).days_ago(5)];
    assert_eq!(
        refused_reason(
            &limited,
            Ev::frequency(4, Period::Week).by(Source::Admin).days_ago(1)
        ),
        Some("set_by_the_person")
    );
    assert_eq!(
        refused_reason(
            &limited,
            Ev::frequency(4, Period::Week)
                .by(Source::PreferenceCentre)
                .days_ago(1)
        ),
        None
    );
    let paused = [Ev::pause_for_days(90).days_ago(5)];
    assert_eq!(
        refused_reason(&paused, Ev::pause_for_days(1).by(Source::Admin).days_ago(1)),
        Some("set_by_the_person")
    );
    let _ = topic("news");
}
