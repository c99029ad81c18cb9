//! A person's history in plain language, for the staff who answer their
//! questions: "12 Mar 2026: agreed to Product news by email on the
//! organisation's form (wording #3)", "3 Apr 2026: Spring sale not sent —
//! withdrew consent". One describer for the admin UI and anything else
//! that shows a ledger event or a receipt to a person.

use std::collections::HashMap;

use veto_core::{EventKind, Reason, Scope, Source, Timestamp};

use crate::{Receipt, StoredEvent};

/// "12 Mar 2026".
pub fn day(t: Timestamp) -> String {
    t.strftime("%-d %b %Y").to_string()
}

/// "12 Mar 2026 14:05 UTC".
pub fn when(t: Timestamp) -> String {
    t.strftime("%-d %b %Y %H:%M UTC").to_string()
}

/// How the event reached veto, as a phrase after the verb.
fn source_phrase(e: &StoredEvent) -> String {
    match e.event.source {
        Source::Form => match &e.form_url {
            Some(url) => format!(" on the organisation's form ({url})"),
            None => " on the organisation's form".into(),
        },
        Source::Api => " through the API".into(),
        Source::Import => " in an import".into(),
        Source::PreferenceCentre => " on the preference page".into(),
        Source::OneClick => " via one-click".into(),
        Source::Mailto => " by an unsubscribe email".into(),
        Source::DoubleOptIn => " and confirmed it by email (double opt-in)".into(),
        Source::Feedback => " (reported by the mailbox provider)".into(),
        Source::Admin => format!(" (recorded by staff: {})", e.actor),
    }
}

/// The text of a refusal's reason code, as a receipt stores it.
pub fn reason_text(code: &str) -> String {
    const PLAIN: &[Reason] = &[
        Reason::NoRecord,
        Reason::NoEvidence,
        Reason::NoConsent,
        Reason::Withdrawn,
        Reason::RefusedAtCollection,
        Reason::Objected,
        Reason::Complained,
        Reason::HardBounced,
        Reason::Erased,
        Reason::Suppressed,
        Reason::ImpliedConsentExpired,
        Reason::ExpressConsentRequired,
        Reason::SetByThePerson,
        Reason::NotScreened,
    ];
    if let Some(r) = PLAIN.iter().find(|r| r.code() == code) {
        return r.to_string();
    }
    match code {
        "paused" => "paused marketing".into(),
        "frequency_limit" => "reached their frequency limit".into(),
        "tps_listed" => "the number is on the telephone preference service".into(),
        "tps_screening_stale" => "the telephone preference screening is out of date".into(),
        other => other.replace('_', " "),
    }
}

/// A ledger event, without its date: "agreed to Product news by email on
/// the preference page (wording #3)". `topics` maps topic ids to names.
pub fn event_sentence(e: &StoredEvent, topics: &HashMap<u16, String>) -> String {
    let scope = match e.event.scope {
        Scope::All => "all marketing".to_owned(),
        Scope::Topic(t) => topics
            .get(&t.0)
            .cloned()
            .unwrap_or_else(|| format!("topic #{}", t.0)),
    };
    let channel = e
        .event
        .channel
        .map(|c| format!(" by {}", c.as_str()))
        .unwrap_or_default();
    let via = source_phrase(e);
    let mut s = match &e.event.kind {
        EventKind::Grant => format!("agreed to {scope}{channel}{via}"),
        EventKind::Withdraw if e.event.source == Source::OneClick => {
            format!("unsubscribed from {scope}{channel}{via}")
        }
        EventKind::Withdraw => format!("withdrew consent to {scope}{channel}{via}"),
        EventKind::Object => format!("objected to all marketing{via}"),
        EventKind::Refused => {
            format!("opted out of {scope}{channel} when their details were collected{via}")
        }
        EventKind::Relationship(r) => {
            let what = match r.kind.as_str() {
                "purchase" => "bought something",
                "negotiation" => "negotiated a sale",
                _ => "made an inquiry",
            };
            format!(
                "{what}{}{}{via}",
                r.order_ref
                    .as_ref()
                    .map(|o| format!(" (order {o})"))
                    .unwrap_or_default(),
                if r.opt_out_offered {
                    "; they were offered an opt-out and did not take it"
                } else {
                    ""
                }
            )
        }
        EventKind::HardBounce => format!("the address bounced (hard bounce){via}"),
        EventKind::BounceCleared => format!("a hard bounce was found to be wrong and cleared{via}"),
        EventKind::Complaint => format!("reported a message as spam{via}"),
        EventKind::Pause { until } => format!("paused {scope} until {}{via}", day(*until)),
        EventKind::Frequency(Some(l)) => {
            format!(
                "asked for at most {} marketing messages a {}{via}",
                l.max,
                l.per.as_str()
            )
        }
        EventKind::Frequency(None) => format!("lifted their frequency limit{via}"),
        EventKind::Erasure => format!("their data was erased{via}"),
    };
    if let Some(w) = e.wording {
        s.push_str(&format!(" (wording #{})", w.0));
    }
    s
}

/// A receipt, without its date: "Spring sale sent" or "Spring sale not
/// sent — withdrew consent". `topics` maps topic keys to names.
pub fn receipt_sentence(
    r: &Receipt,
    topics: &HashMap<String, String>,
    campaigns: &HashMap<i64, String>,
) -> String {
    let r = &r.receipt;
    let campaign = crate::campaign_of_message_id(&r.message_id).and_then(|id| campaigns.get(&id));
    let about = match r.class.strip_prefix("service:") {
        Some(t) => format!("a service message ({t})"),
        None => topics
            .get(&r.class)
            .map(|n| format!("a {n} message"))
            .unwrap_or_else(|| format!("a {} message", r.class)),
    };
    // A campaign is known by its name; other mail by its subject.
    let what = match campaign.map(String::as_str).or_else(|| {
        r.subject
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }) {
        Some(s) => format!("{s} ({about})"),
        None => capitalise(&about),
    };
    if r.allowed {
        format!("{what} sent (allowed under {})", r.rule)
    } else {
        let why = r
            .reason
            .as_deref()
            .map(reason_text)
            .unwrap_or_else(|| format!("refused under {}", r.rule));
        format!("{what} not sent — {why}")
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "2026-03-12 14:05 UTC", as the command line writes times.
pub fn iso_when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// A ledger event on one line, with its id and evidence, as `veto why`
/// prints a person's history for a DPO.
pub fn event_line(e: &StoredEvent, topics: &HashMap<u16, String>) -> String {
    let what = match &e.event.kind {
        EventKind::Grant => "agreed to".to_owned(),
        EventKind::Withdraw => "withdrew from".to_owned(),
        EventKind::Object => "objected to all marketing".to_owned(),
        EventKind::Refused => "opted out at collection of".to_owned(),
        EventKind::Relationship(r) => format!(
            "{}{}{}",
            r.kind.as_str(),
            r.product_group
                .as_ref()
                .map(|g| format!(" in group {g}"))
                .unwrap_or_default(),
            if r.opt_out_offered {
                " (opt-out offered, not taken)"
            } else {
                " (no opt-out offered)"
            }
        ),
        EventKind::HardBounce => "hard bounce".into(),
        EventKind::BounceCleared => "bounce cleared".into(),
        EventKind::Complaint => "spam complaint".into(),
        EventKind::Pause { until } => format!("paused marketing until {}", iso_when(*until)),
        EventKind::Frequency(Some(l)) => {
            format!("limited marketing to {} a {}", l.max, l.per.as_str())
        }
        EventKind::Frequency(None) => "lifted their frequency limit".into(),
        EventKind::Erasure => "data erased".into(),
    };
    let scoped = matches!(
        e.event.kind,
        EventKind::Grant | EventKind::Withdraw | EventKind::Refused | EventKind::Pause { .. }
    );
    let scope = match (scoped, e.event.scope) {
        (false, _) => String::new(),
        (true, Scope::All) => " all marketing".into(),
        (true, Scope::Topic(t)) => format!(
            " {}",
            topics
                .get(&t.0)
                .cloned()
                .unwrap_or_else(|| format!("topic #{}", t.0))
        ),
    };
    let channel = e
        .event
        .channel
        .map_or("all channels".to_owned(), |c| c.as_str().to_owned());
    let mut s = format!(
        "{}  #{:<6} {what}{scope} ({channel}) via {}",
        iso_when(e.event.at),
        e.event.id.0,
        e.event.source.as_str()
    );
    if let Some(w) = e.wording {
        s.push_str(&format!(", wording #{}", w.0));
    }
    if let Some(url) = &e.form_url {
        s.push_str(&format!(", form {url}"));
    }
    if let Some(o) = &e.order_ref {
        s.push_str(&format!(", order {o}"));
    }
    if let Some(ip) = e.personal.as_ref().and_then(|p| p.ip.as_ref()) {
        s.push_str(&format!(", IP {ip}"));
    }
    s.push_str(&format!(", by {}", e.actor));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_read_as_the_policy_says_them() {
        assert_eq!(reason_text("withdrawn"), "withdrew consent");
        assert_eq!(reason_text("objected"), "objected to all marketing");
        assert_eq!(reason_text("made_up"), "made up");
    }

    #[test]
    fn dates_are_written_for_people() {
        let t: Timestamp = "2026-03-02T14:05:00Z".parse().expect("time");
        assert_eq!(day(t), "2 Mar 2026");
        assert_eq!(when(t), "2 Mar 2026 14:05 UTC");
    }
}
