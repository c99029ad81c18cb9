//! The law-rule table: every rule about email, SMS and postal marketing in
//! `shared/reference/law-rules.md`, and every edge case that concerns them,
//! as a named case citing its rule id.
//!
//! This file is data plus a tiny vocabulary. It is run twice: on in-memory
//! state (`veto-core/tests/law_rules.rs`) and through each store
//! (`veto-store/tests/store.rs`), so the decision is the same whichever
//! backend holds the ledger.

#![allow(dead_code)]

use veto_core::{
    Channel, EventKind, Fact, FrequencyLimit, JurisdictionSet, NewEvent, Period, PolicySettings,
    PurchaseAfterOptOut, Relationship, RelationshipKind, Scope, Source, SubscriberType, Timestamp,
    Topic, TopicId, TopicKey,
};

/// "Now" for every case: noon UTC, 28 Nov 2026.
pub fn now() -> Timestamp {
    "2026-11-28T12:00:00Z"
        .parse()
        .expect("constant time parses")
}

/// The topics every case can use. `shoes` and `boots` are one similar-products group.
pub fn topics() -> Vec<Topic> {
    let t = |id, key: &str, group: Option<&str>| Topic {
        id: TopicId(id),
        key: TopicKey::parse(key).expect("constant key"),
        name: key.to_owned(),
        description: format!("{key} offers"),
        group: group.map(str::to_owned),
    };
    vec![
        t(1, "news", None),
        t(2, "shoes", Some("shoes")),
        t(3, "boots", Some("shoes")),
        t(4, "hats", Some("hats")),
    ]
}

pub fn topic(key: &str) -> Topic {
    topics()
        .into_iter()
        .find(|t| t.key.as_str() == key)
        .expect("case names a known topic")
}

/// An event in a case, `days_ago` before `now()`.
#[derive(Clone, Debug)]
pub struct Ev {
    pub kind: EventKind,
    pub topic: Option<&'static str>,
    pub channel: Option<Channel>,
    pub source: Source,
    pub ago_seconds: i64,
}

impl Ev {
    fn new(kind: EventKind) -> Self {
        Ev {
            kind,
            topic: None,
            channel: Some(Channel::Email),
            source: Source::Form,
            ago_seconds: 86_400 * 30,
        }
    }
    pub fn grant(topic: &'static str) -> Self {
        Ev {
            topic: Some(topic),
            ..Ev::new(EventKind::Grant)
        }
    }
    pub fn grant_all() -> Self {
        Ev::new(EventKind::Grant)
    }
    pub fn withdraw(topic: &'static str) -> Self {
        Ev {
            topic: Some(topic),
            source: Source::OneClick,
            ..Ev::new(EventKind::Withdraw)
        }
    }
    pub fn withdraw_all() -> Self {
        Ev {
            source: Source::PreferenceCentre,
            ..Ev::new(EventKind::Withdraw)
        }
    }
    pub fn object() -> Self {
        Ev {
            channel: None,
            source: Source::PreferenceCentre,
            ..Ev::new(EventKind::Object)
        }
    }
    pub fn refused() -> Self {
        Ev::new(EventKind::Refused)
    }
    fn relationship(kind: RelationshipKind, group: Option<&str>, opt_out_offered: bool) -> Self {
        Ev::new(EventKind::Relationship(Relationship {
            kind,
            product_group: group.map(str::to_owned),
            order_ref: Some("ORD-1".into()),
            opt_out_offered,
        }))
    }
    pub fn purchase(group: &str) -> Self {
        Ev::relationship(RelationshipKind::Purchase, Some(group), true)
    }
    pub fn purchase_without_opt_out(group: &str) -> Self {
        Ev::relationship(RelationshipKind::Purchase, Some(group), false)
    }
    pub fn negotiation(group: &str) -> Self {
        Ev::relationship(RelationshipKind::Negotiation, Some(group), true)
    }
    pub fn inquiry(group: &str) -> Self {
        Ev::relationship(RelationshipKind::Inquiry, Some(group), true)
    }
    pub fn hard_bounce() -> Self {
        Ev {
            source: Source::Feedback,
            ..Ev::new(EventKind::HardBounce)
        }
    }
    pub fn bounce_cleared() -> Self {
        Ev {
            source: Source::Admin,
            ..Ev::new(EventKind::BounceCleared)
        }
    }
    pub fn complaint() -> Self {
        Ev {
            source: Source::Feedback,
            ..Ev::new(EventKind::Complaint)
        }
    }
    pub fn pause_for_days(days: i64) -> Self {
        // `until` is relative to the event time; fixed up by `at()`.
        Ev {
            source: Source::PreferenceCentre,
            ..Ev::new(EventKind::Pause {
                until: Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * days),
            })
        }
    }
    pub fn frequency(max: u32, per: Period) -> Self {
        Ev {
            source: Source::PreferenceCentre,
            channel: None,
            ..Ev::new(EventKind::Frequency(Some(FrequencyLimit { max, per })))
        }
    }
    pub fn erasure() -> Self {
        Ev {
            channel: None,
            source: Source::Admin,
            ..Ev::new(EventKind::Erasure)
        }
    }

    pub fn days_ago(self, days: i64) -> Self {
        Ev {
            ago_seconds: days * 86_400,
            ..self
        }
    }
    pub fn seconds_ago(self, s: i64) -> Self {
        Ev {
            ago_seconds: s,
            ..self
        }
    }
    pub fn at_time(self, t: &str) -> Self {
        let at: Timestamp = t.parse().expect("case time parses");
        Ev {
            ago_seconds: now().as_second() - at.as_second(),
            ..self
        }
    }
    pub fn on(self, channel: Channel) -> Self {
        Ev {
            channel: Some(channel),
            ..self
        }
    }
    pub fn all_channels(self) -> Self {
        Ev {
            channel: None,
            ..self
        }
    }
    pub fn by(self, source: Source) -> Self {
        Ev { source, ..self }
    }

    pub fn at(&self) -> Timestamp {
        Timestamp::from_second(now().as_second() - self.ago_seconds).expect("case time in range")
    }

    /// The event to append, with topic keys resolved.
    pub fn to_new_event(&self) -> NewEvent {
        let at = self.at();
        let kind = match &self.kind {
            // Pauses are written as "for N days from the event".
            EventKind::Pause { until } => EventKind::Pause {
                until: Timestamp::from_second(at.as_second() + until.as_second())
                    .expect("in range"),
            },
            k => k.clone(),
        };
        NewEvent {
            kind,
            scope: self.topic.map_or(Scope::All, |k| Scope::Topic(topic(k).id)),
            channel: self.channel,
            source: self.source,
            at,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Marketing(&'static str),
    Service,
    Requested,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Allowed by this rule id.
    Allowed(&'static str),
    /// Denied by this rule id, for this reason code.
    Denied(&'static str, &'static str),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub jurisdictions: &'static str,
    pub subscriber: SubscriberType,
    /// veto has a contact record (false: an address it has never heard of).
    pub known: bool,
    /// The address is on the erasure suppression list since this many days.
    pub suppressed_days_ago: Option<i64>,
    pub events: Vec<Ev>,
    /// Marketing sends handed off, in days ago (for frequency limits).
    pub sends_days_ago: Vec<i64>,
    pub message: Class,
    pub channel: Channel,
    pub settings: PolicySettings,
    pub expect: Expect,
    /// Telephone preference screening: the list data's age in days, and
    /// how many days the number has been listed (`None`: not listed).
    pub tps: Option<(i64, Option<i64>)>,
    /// Why a case cannot run yet (it needs something not built).
    pub ignored: Option<&'static str>,
}

fn case(
    name: &'static str,
    jurisdictions: &'static str,
    events: Vec<Ev>,
    message: Class,
    expect: Expect,
) -> Case {
    Case {
        name,
        jurisdictions,
        subscriber: SubscriberType::Individual,
        known: true,
        suppressed_days_ago: None,
        events,
        sends_days_ago: vec![],
        message,
        channel: Channel::Email,
        settings: PolicySettings::default(),
        expect,
        tps: None,
        ignored: None,
    }
}

impl Case {
    fn channel(self, channel: Channel) -> Self {
        Case { channel, ..self }
    }
    fn corporate(self) -> Self {
        Case {
            subscriber: SubscriberType::Corporate,
            ..self
        }
    }
    fn unknown(self) -> Self {
        Case {
            known: false,
            ..self
        }
    }
    fn suppressed(self, days_ago: i64) -> Self {
        Case {
            suppressed_days_ago: Some(days_ago),
            ..self
        }
    }
    fn sends(self, days_ago: Vec<i64>) -> Self {
        Case {
            sends_days_ago: days_ago,
            ..self
        }
    }
    fn new_basis(self) -> Self {
        Case {
            settings: PolicySettings {
                purchase_after_opt_out: PurchaseAfterOptOut::NewBasis,
                ..self.settings
            },
            ..self
        }
    }
    fn charity(self) -> Self {
        Case {
            settings: PolicySettings {
                charity: true,
                ..self.settings
            },
            ..self
        }
    }
    /// Screened against list data `screened` days old; listed for `listed` days.
    fn tps(self, screened: i64, listed: Option<i64>) -> Self {
        Case {
            tps: Some((screened, listed)),
            ..self
        }
    }
    /// The screening fact the store adds for a phone decision.
    pub fn phone_screen(&self) -> Option<Fact> {
        let days_ago = |d: i64| Timestamp::from_second(now().as_second() - d * 86_400).unwrap();
        self.tps.map(|(screened, listed)| Fact::PhoneScreen {
            screened_at: days_ago(screened),
            listed_since: listed.map(days_ago),
        })
    }
    fn ignored(self, why: &'static str) -> Self {
        Case {
            ignored: Some(why),
            ..self
        }
    }
    pub fn jurisdiction_set(&self) -> JurisdictionSet {
        JurisdictionSet::parse_list(self.jurisdictions).expect("case jurisdictions parse")
    }
}

use Class::{Marketing as M, Requested, Service};
use Expect::{Allowed as A, Denied as D};

pub fn cases() -> Vec<Case> {
    let news = M("news");
    vec![
        // ---- PECR-DM-DEF / veto: no record, no evidence --------------------------------
        case("VETO-NO-RECORD: an unknown address gets no marketing, in any jurisdiction", "UK|EU|US|CA", vec![], news, D("VETO-NO-RECORD", "no_record")).unknown(),
        case("VETO-NO-RECORD: an unknown US address gets no marketing despite the opt-out regime", "US", vec![], news, D("VETO-NO-RECORD", "no_record")).unknown(),
        case("VETO-SERVICE: an unknown address may get a service message", "UK", vec![], Service, A("VETO-SERVICE")).unknown(),
        case("PECR-DM-DEF: a 'may we market to you?' email is marketing: denied to a withdrawn person (edge 4)", "UK", vec![Ev::grant("news").days_ago(60), Ev::withdraw("news").days_ago(10)], news, D("GDPR-7", "withdrawn")),
        case("PECR-DM-DEF: an 'update your preferences' email to someone who never agreed is marketing: denied (edge 4)", "UK", vec![Ev::purchase("hats")], news, D("PECR-22-2", "no_consent")),
        case("PECR-DM-DEF: a service message with a promotional footer is marketing in the UK (edge 3)", "UK", vec![], news, D("PECR-22-2", "no_consent"))
            .ignored("classifying message content needs the gateway and sender (issues 4 and 5); the guard decides on the declared class"),
        // ---- PECR-22-2: consent -------------------------------------------------------
        case("PECR-22-2: a UK individual who never agreed gets no marketing email", "UK", vec![], news, D("PECR-22-2", "no_consent")),
        case("PECR-22-2: a UK individual who agreed to news gets news", "UK", vec![Ev::grant("news")], news, A("PECR-22-2")),
        case("PECR-22-2: consent to all marketing covers every topic", "UK", vec![Ev::grant_all()], M("hats"), A("PECR-22-2")),
        case("PECR-22-2: consent to news does not cover hats", "UK", vec![Ev::grant("news")], M("hats"), D("PECR-22-2", "no_consent")),
        case("PECR-22-2: consent by email does not cover SMS (each channel separate)", "UK", vec![Ev::grant("news")], news, D("PECR-22-2", "no_consent")).channel(Channel::Sms),
        case("PECR-22-2: SMS marketing with SMS consent", "UK", vec![Ev::grant("news").on(Channel::Sms)], news, A("PECR-22-2")).channel(Channel::Sms),
        case("ICO-DURATION: consent has no fixed expiry (given 10 years ago)", "UK", vec![Ev::grant("news").days_ago(3650)], news, A("PECR-22-2")),
        // ---- PECR-22-3: soft opt-in ---------------------------------------------------
        case("PECR-22-3: a purchase gives a soft opt-in for the same products", "UK", vec![Ev::purchase("shoes")], M("shoes"), A("PECR-22-3")),
        case("PECR-22-3(b): and for similar products (same group)", "UK", vec![Ev::purchase("shoes")], M("boots"), A("PECR-22-3")),
        case("PECR-22-3(b): not for a different product line (edge 6)", "UK", vec![Ev::purchase("shoes")], M("hats"), D("PECR-22-2", "no_consent")),
        case("PECR-22-3(b): not for a topic with no product group", "UK", vec![Ev::purchase("shoes")], news, D("PECR-22-2", "no_consent")),
        case("PECR-22-3(a): negotiations for a sale (a quote) count in the UK", "UK", vec![Ev::negotiation("shoes")], M("shoes"), A("PECR-22-3")),
        case("PECR-22-3(a): an inquiry without a quote is no sale or negotiation (abandoned cart, edge 6)", "UK", vec![Ev::inquiry("shoes")], M("shoes"), D("PECR-22-2", "no_consent")),
        case("PECR-22-3(c): no soft opt-in when no opt-out was offered at collection", "UK", vec![Ev::purchase_without_opt_out("shoes")], M("shoes"), D("PECR-22-2", "no_consent")),
        case("PECR-22-3(c): no soft opt-in when the opt-out was taken at collection", "UK", vec![Ev::purchase("shoes").days_ago(5), Ev::refused().days_ago(5)], M("shoes"), D("GDPR-7", "refused_at_collection")),
        case("PECR-22-3: a soft opt-in ends when the person opts out", "UK", vec![Ev::purchase("shoes").days_ago(20), Ev::withdraw("shoes").days_ago(2)], M("shoes"), D("GDPR-7", "withdrawn")),
        case("PECR-22-3: not transferable: a purchase from a sister company gives none (edge 6)", "UK", vec![], M("shoes"), D("PECR-22-2", "no_consent"))
            .ignored("needs several sending organisations in one veto, not built yet"),
        case("PECR-22-3: soft opt-in covers SMS when the number was collected in the sale", "UK", vec![Ev::purchase("shoes").on(Channel::Sms)], M("shoes"), A("PECR-22-3")).channel(Channel::Sms),
        // ---- edge 1: opt-out, then a new purchase ------------------------------------
        case("edge 1 (stays_opted_out): opt-out then a new purchase stays opted out", "UK", vec![Ev::purchase("shoes").days_ago(100), Ev::withdraw("shoes").days_ago(50), Ev::purchase("shoes").days_ago(5)], M("shoes"), D("GDPR-7", "withdrawn")),
        case("edge 1 (new_basis): opt-out then a new purchase with the opt-out offered again is a new soft opt-in", "UK", vec![Ev::purchase("shoes").days_ago(100), Ev::withdraw("shoes").days_ago(50), Ev::purchase("shoes").days_ago(5)], M("shoes"), A("PECR-22-3")).new_basis(),
        case("edge 1 (new_basis): the purchase before the opt-out does not count", "UK", vec![Ev::purchase("shoes").days_ago(100), Ev::withdraw("shoes").days_ago(50)], M("shoes"), D("GDPR-7", "withdrawn")).new_basis(),
        case("edge 1 / GDPR-21 (new_basis): an objection has no expiry; a new purchase does not lift it", "UK", vec![Ev::object().days_ago(50), Ev::purchase("shoes").days_ago(5)], M("shoes"), D("GDPR-21", "objected")).new_basis(),
        case("edge 1 / PECR-22-3 (new_basis): a refusal at collection is never revived", "UK", vec![Ev::refused().days_ago(50), Ev::purchase("shoes").days_ago(5)], M("shoes"), D("GDPR-7", "refused_at_collection")).new_basis(),
        case("edge 1 / CASL-10-IMPL (new_basis): a new purchase after an opt-out gives implied consent", "CA", vec![Ev::withdraw_all().days_ago(50), Ev::purchase("shoes").days_ago(5)], news, A("CASL-10-IMPL")).new_basis(),
        case("edge 1 / CASL-10-IMPL (stays_opted_out): ... unless the policy keeps the opt-out", "CA", vec![Ev::withdraw_all().days_ago(50), Ev::purchase("shoes").days_ago(5)], news, D("CASL-11", "withdrawn")),
        case("edge 1 / GDPR-7: fresh express consent by the person lifts an opt-out", "UK", vec![Ev::withdraw("news").days_ago(50), Ev::grant("news").by(Source::PreferenceCentre).days_ago(5)], news, A("PECR-22-2")),
        // ---- PECR-22-3A: charities ----------------------------------------------------
        case("PECR-22-3A: a charity may use the soft opt-in for a supporter recruited after 5 Feb 2026", "UK", vec![Ev::inquiry("donations").at_time("2026-03-01T10:00:00Z")], news, A("PECR-22-3A")).charity(),
        case("PECR-22-3A: supporters recruited before 5 Feb 2026 have no soft opt-in (edge 12)", "UK", vec![Ev::inquiry("donations").at_time("2026-02-04T23:59:59Z")], news, D("PECR-22-2", "no_consent")).charity(),
        case("PECR-22-3A: recruited on 5 Feb 2026 itself counts (edge 12)", "UK", vec![Ev::inquiry("donations").at_time("2026-02-05T00:00:00Z")], news, A("PECR-22-3A")).charity(),
        case("PECR-22-3A: only for charities", "UK", vec![Ev::inquiry("donations").at_time("2026-03-01T10:00:00Z")], news, D("PECR-22-2", "no_consent")),
        // ---- PECR-CORP: corporate subscribers (edge 7) --------------------------------
        case("PECR-CORP: reg 22 does not protect a limited company's address (edge 7)", "UK", vec![Ev::purchase("hats")], news, A("PECR-CORP")).corporate(),
        case("PECR-CORP: a sole trader on the same domain is an individual (edge 7)", "UK", vec![Ev::purchase("hats")], news, D("PECR-22-2", "no_consent")),
        case("PECR-CORP / GDPR-21: a corporate subscriber's objection still counts", "UK", vec![Ev::purchase("hats").days_ago(40), Ev::object().days_ago(3)], news, D("GDPR-21", "objected")).corporate(),
        case("PECR-CORP: a corporate address with no record of how it was obtained", "UK", vec![], news, D("VETO-NO-RECORD", "no_evidence")).corporate(),
        case("PECR-CORP / EP-13-2: EU corporate subscribers are treated as individuals (strictest)", "EU", vec![Ev::purchase("hats")], news, D("EP-13-2", "no_consent")).corporate(),
        case("PECR-23: marketing must identify the sender and carry a valid opt-out address", "UK", vec![Ev::grant("news")], news, A("PECR-22-2"))
            .ignored("a check of the message itself: comes with the gateway and sender (issues 4 and 5)"),
        // ---- GDPR-7 / GDPR-21 / edge 9 -----------------------------------------------
        case("GDPR-7: withdrawal at any time takes effect at once", "UK", vec![Ev::grant("news").days_ago(100), Ev::withdraw("news").seconds_ago(1)], news, D("GDPR-7", "withdrawn")),
        case("GDPR-7: withdrawing from one topic leaves unrelated topics alone (edge 9)", "UK", vec![Ev::grant_all().days_ago(100), Ev::withdraw("news").days_ago(1)], M("hats"), A("PECR-22-2")),
        case("GDPR-7: withdrawing from all marketing covers every topic", "UK", vec![Ev::grant("news").days_ago(100), Ev::withdraw_all().days_ago(1)], news, D("GDPR-7", "withdrawn")),
        case("GDPR-7: a withdrawal on another channel (STOP by SMS, for all channels) stops email too (edge 9)", "UK", vec![Ev::grant("news").days_ago(100), Ev::withdraw_all().all_channels().by(Source::Api).days_ago(1)], news, D("GDPR-7", "withdrawn")),
        case("GDPR-7: a withdrawal for SMS only leaves email alone", "UK", vec![Ev::grant("news").all_channels().days_ago(100), Ev::withdraw("news").on(Channel::Sms).days_ago(1)], news, A("PECR-22-2")),
        case("GDPR-21: an objection stops every topic (edge 9)", "UK", vec![Ev::grant_all().days_ago(100), Ev::object().days_ago(1)], M("hats"), D("GDPR-21", "objected")),
        case("GDPR-21: an objection stops postal marketing too", "UK", vec![Ev::purchase("hats").on(Channel::Post).days_ago(100), Ev::object().days_ago(1)], news, D("GDPR-21", "objected")).channel(Channel::Post),
        case("GDPR-21: an objection stops SMS too", "UK", vec![Ev::grant("news").on(Channel::Sms).days_ago(100), Ev::object().days_ago(1)], news, D("GDPR-21", "objected")).channel(Channel::Sms),
        case("GDPR-21: a later topic consent given by the person is fresh express consent", "UK", vec![Ev::object().days_ago(100), Ev::grant("news").by(Source::DoubleOptIn).days_ago(1)], news, A("PECR-22-2")),
        case("GDPR-21: ... for that topic only", "UK", vec![Ev::object().days_ago(100), Ev::grant("news").by(Source::DoubleOptIn).days_ago(1)], M("hats"), D("GDPR-21", "objected")),
        // ---- GDPR-6: post ---------------------------------------------------------------
        case("GDPR-6: postal marketing to a customer on legitimate interests", "UK", vec![Ev::purchase("hats").on(Channel::Post)], news, A("GDPR-6")).channel(Channel::Post),
        case("GDPR-6: postal marketing needs some basis: none recorded", "UK", vec![], news, D("VETO-NO-RECORD", "no_evidence")).channel(Channel::Post),
        case("GDPR-6: a withdrawal of postal marketing is honoured", "EU", vec![Ev::purchase("hats").on(Channel::Post).days_ago(9), Ev::withdraw_all().on(Channel::Post).days_ago(1)], news, D("GDPR-7", "withdrawn")).channel(Channel::Post),
        // ---- GDPR-17 / ICO-SUPP: erasure and suppression (edge 2) ----------------------
        case("GDPR-17: an erased contact gets no marketing", "UK", vec![Ev::grant("news").days_ago(100), Ev::erasure().days_ago(1)], news, D("GDPR-17", "erased")),
        case("GDPR-17: an erased contact gets no service messages", "UK", vec![Ev::grant("news").days_ago(100), Ev::erasure().days_ago(1)], Service, D("GDPR-17", "erased")),
        case("ICO-SUPP: an erased address that comes back through an import stays blocked (edge 2)", "UK", vec![Ev::grant("news").by(Source::Import).days_ago(1)], news, D("ICO-SUPP", "suppressed")).suppressed(30),
        case("ICO-SUPP: an erased address that was never re-imported gets no marketing", "UK|US", vec![], news, D("ICO-SUPP", "suppressed")).unknown().suppressed(30),
        case("ICO-SUPP: nor service messages", "UK", vec![], Service, D("ICO-SUPP", "suppressed")).unknown().suppressed(30),
        case("ICO-SUPP: the person's own fresh consent after the erasure counts", "UK", vec![Ev::grant("news").by(Source::DoubleOptIn).days_ago(1)], news, A("PECR-22-2")).suppressed(30),
        // ---- EP-13-2: the EU soft opt-in ------------------------------------------------
        case("EP-13-2: EU soft opt-in after a sale", "EU", vec![Ev::purchase("shoes")], M("boots"), A("EP-13-2")),
        case("EP-13-2: no EU soft opt-in from negotiations alone", "EU", vec![Ev::negotiation("shoes")], M("shoes"), D("EP-13-2", "no_consent")),
        case("EP-13-2: an EU contact who never bought has no soft opt-in (edge 6)", "EU", vec![Ev::inquiry("shoes")], M("shoes"), D("EP-13-2", "no_consent")),
        case("EP-13-2: EU consent", "EU", vec![Ev::grant("news")], news, A("GDPR-7")),
        case("EP-13-2: opt-out offered at collection is required", "EU", vec![Ev::purchase_without_opt_out("shoes")], M("shoes"), D("EP-13-2", "no_consent")),
        // ---- CAN-SPAM ----------------------------------------------------------------
        case("CS-ID: US commercial email to a customer needs no consent (opt-out regime)", "US", vec![Ev::purchase("hats")], news, A("CS-ID")),
        case("CS-ID: but a known US address with no record of how it was obtained gets none", "US", vec![], news, D("VETO-NO-RECORD", "no_evidence")),
        case("CS-HONOR: a US opt-out is applied at once, not after 10 business days", "US", vec![Ev::purchase("hats").days_ago(100), Ev::withdraw_all().seconds_ago(1)], news, D("CS-HONOR", "withdrawn")),
        case("CS-HONOR: only later affirmative consent reverses an opt-out, not a purchase", "US", vec![Ev::withdraw_all().days_ago(100), Ev::purchase("hats").days_ago(1)], news, D("CS-HONOR", "withdrawn")),
        case("CS-HONOR: later affirmative consent by the person reverses it", "US", vec![Ev::withdraw_all().days_ago(100), Ev::grant("news").by(Source::PreferenceCentre).days_ago(1)], news, A("CS-ID")),
        case("VETO-EXPRESS-ONLY: US SMS marketing needs express consent (TCPA is not modelled)", "US", vec![Ev::purchase("hats").on(Channel::Sms)], news, D("VETO-EXPRESS-ONLY", "express_consent_required")).channel(Channel::Sms),
        case("VETO-POSTAL: US postal marketing to a customer", "US", vec![Ev::purchase("hats").on(Channel::Post)], news, A("VETO-POSTAL")).channel(Channel::Post),
        case("CS-PP: primary-purpose classification of mixed content (edge 3)", "US", vec![], Service, A("VETO-SERVICE"))
            .ignored("classifying message content needs the gateway and sender (issues 4 and 5)"),
        // ---- CASL ----------------------------------------------------------------------
        case("CASL-6: a Canadian commercial email needs consent", "CA", vec![], news, D("CASL-6", "no_consent")),
        case("CASL-EXPRESS: express consent has no expiry", "CA", vec![Ev::grant("news").days_ago(5 * 365)], news, A("CASL-EXPRESS")),
        case("CASL-10-IMPL: implied consent from a purchase within 2 years", "CA", vec![Ev::purchase("hats").days_ago(700)], news, A("CASL-10-IMPL")),
        case("CASL-10-IMPL: a purchase 2 years and 1 day ago has expired (edge 8)", "CA", vec![Ev::purchase("hats").at_time("2024-11-27T12:00:00Z")], news, D("CASL-10-IMPL", "implied_consent_expired")),
        case("CASL-10-IMPL: a purchase 2 years less 1 day ago has not (edge 8)", "CA", vec![Ev::purchase("hats").at_time("2024-11-29T12:00:00Z")], news, A("CASL-10-IMPL")),
        case("CASL-10-IMPL: an inquiry gives 6 months (5 months ago: allowed)", "CA", vec![Ev::inquiry("hats").at_time("2026-06-28T12:00:00Z")], news, A("CASL-10-IMPL")),
        case("CASL-10-IMPL: an inquiry 6 months and 1 day ago has expired (edge 8)", "CA", vec![Ev::inquiry("hats").at_time("2026-05-27T12:00:00Z")], news, D("CASL-10-IMPL", "implied_consent_expired")),
        case("CASL-10-IMPL: a subscription's clock runs from the end of the relationship (edge 8)", "CA", vec![], news, D("CASL-6", "no_consent"))
            .ignored("needs relationship end dates for subscriptions; purchases are dated by the event"),
        case("CASL-11: an unsubscribe is applied at once (well within 10 business days)", "CA", vec![Ev::grant("news").days_ago(30), Ev::withdraw("news").seconds_ago(1)], news, D("CASL-11", "withdrawn")),
        case("CASL-6: corporate addresses have no exemption under CASL", "CA", vec![], news, D("CASL-6", "no_consent")).corporate(),
        // ---- edge 13: several jurisdictions, strictest wins ----------------------------
        case("edge 13: UK and US: the US would allow, the UK does not", "UK|US", vec![Ev::purchase("hats")], news, D("PECR-22-2", "no_consent")),
        case("edge 13: UK and CA: a soft opt-in 3 years old is fine in the UK, expired in Canada", "UK|CA", vec![Ev::purchase("shoes").days_ago(3 * 365)], M("shoes"), D("CASL-10-IMPL", "implied_consent_expired")),
        case("edge 13: UK, EU, US and CA all satisfied by express consent", "UK|EU|US|CA", vec![Ev::grant("news")], news, A("PECR-22-2")),
        case("edge 13: default jurisdictions (UK and EU) apply when none is recorded", "", vec![Ev::negotiation("shoes")], M("shoes"), D("EP-13-2", "no_consent")),
        // ---- veto's own rules ------------------------------------------------------------
        case("VETO-HARD-BOUNCE: a hard-bounced address gets no marketing", "UK", vec![Ev::grant("news").days_ago(10), Ev::hard_bounce().days_ago(1)], news, D("VETO-HARD-BOUNCE", "hard_bounced")),
        case("VETO-HARD-BOUNCE: nor service messages", "UK", vec![Ev::hard_bounce().days_ago(1)], Service, D("VETO-HARD-BOUNCE", "hard_bounced")),
        case("VETO-HARD-BOUNCE: a cleared bounce lifts the block", "UK", vec![Ev::grant("news").days_ago(10), Ev::hard_bounce().days_ago(5), Ev::bounce_cleared().days_ago(1)], news, A("PECR-22-2")),
        case("VETO-HARD-BOUNCE: an email bounce does not stop SMS", "UK", vec![Ev::grant("news").all_channels().days_ago(10), Ev::hard_bounce().days_ago(1)], news, A("PECR-22-2")).channel(Channel::Sms),
        case("VETO-COMPLAINT: a spam complaint stops all email marketing", "UK", vec![Ev::grant_all().days_ago(10), Ev::complaint().days_ago(1)], M("hats"), D("VETO-COMPLAINT", "complained")),
        case("VETO-COMPLAINT: a complaint does not stop service messages", "UK", vec![Ev::complaint().days_ago(1)], Service, A("VETO-SERVICE")),
        case("VETO-REQUESTED: a confirmation the person asked for reaches an erased address that came back", "UK", vec![], Requested, A("VETO-REQUESTED")).unknown().suppressed(30),
        case("VETO-REQUESTED: but not a hard-bounced one", "UK", vec![Ev::hard_bounce().days_ago(1)], Requested, D("VETO-HARD-BOUNCE", "hard_bounced")),
        case("VETO-SERVICE: service messages need no consent and survive a withdrawal", "UK", vec![Ev::withdraw_all().days_ago(1)], Service, A("VETO-SERVICE")),
        case("VETO-PAUSE: a pause stops marketing until it ends", "UK", vec![Ev::grant("news").days_ago(10), Ev::pause_for_days(30).days_ago(1)], news, D("VETO-PAUSE", "paused")),
        case("VETO-PAUSE: an ended pause stops nothing", "UK", vec![Ev::grant("news").days_ago(100), Ev::pause_for_days(30).days_ago(40)], news, A("PECR-22-2")),
        case("VETO-FREQUENCY: at most 2 a week, 2 sent this week", "UK", vec![Ev::grant("news").days_ago(100), Ev::frequency(2, Period::Week).days_ago(50)], news, D("VETO-FREQUENCY", "frequency_limit")).sends(vec![1, 3]),
        case("VETO-FREQUENCY: at most 2 a week, 1 sent this week and 1 last week", "UK", vec![Ev::grant("news").days_ago(100), Ev::frequency(2, Period::Week).days_ago(50)], news, A("PECR-22-2")).sends(vec![1, 9]),
        // ---- live calls: PECR reg 21 and the telephone preference service --------------
        case("PECR-21: a UK contact who agreed to calls may be called, TPS or not (non-objection)", "UK", vec![Ev::grant("news").on(Channel::Phone)], news, A("PECR-21")).channel(Channel::Phone).tps(3, Some(400)),
        case("PECR-21: consent to calls needs no screening", "UK", vec![Ev::grant("news").on(Channel::Phone)], news, A("PECR-21")).channel(Channel::Phone),
        case("PECR-21: a number listed on the TPS 27 days ago may be called (edge 5)", "UK", vec![Ev::purchase("hats").on(Channel::Phone)], news, A("PECR-21")).channel(Channel::Phone).tps(1, Some(27)),
        case("PECR-21: a number listed 28 days ago may not (edge 5)", "UK", vec![Ev::purchase("hats").on(Channel::Phone)], news, D("PECR-21", "tps_listed")).channel(Channel::Phone).tps(1, Some(28)),
        case("PECR-21: a customer whose number is not listed may be called", "UK", vec![Ev::purchase("hats").on(Channel::Phone)], news, A("PECR-21")).channel(Channel::Phone).tps(27, None),
        case("PECR-21: a corporate subscriber on the CTPS for 28 days may not", "UK", vec![Ev::purchase("hats").on(Channel::Phone)], news, D("PECR-21", "tps_listed")).channel(Channel::Phone).tps(0, Some(60)).corporate(),
        case("PECR-21: told the caller no (withdrew calls): never, whatever the TPS says", "UK", vec![Ev::grant("news").on(Channel::Phone).days_ago(30), Ev::withdraw("news").on(Channel::Phone).days_ago(2)], news, D("GDPR-7", "withdrawn")).channel(Channel::Phone).tps(1, None),
        case("PECR-21: an objection stops calls too", "UK", vec![Ev::purchase("hats").on(Channel::Phone).days_ago(30), Ev::object().days_ago(2)], news, D("GDPR-21", "objected")).channel(Channel::Phone).tps(1, None),
        case("PECR-21-SCREEN: a call needs screening data when there is no consent", "UK", vec![Ev::purchase("hats").on(Channel::Phone)], news, D("PECR-21-SCREEN", "tps_not_screened")).channel(Channel::Phone),
        case("PECR-21-SCREEN: screening data older than 28 days is stale (edge 5)", "UK", vec![Ev::purchase("hats").on(Channel::Phone)], news, D("PECR-21-SCREEN", "tps_screening_stale")).channel(Channel::Phone).tps(28, None),
        case("PECR-21: no record of the person: no call", "UK", vec![], news, D("VETO-NO-RECORD", "no_evidence")).channel(Channel::Phone).tps(1, None),
        case("VETO-EXPRESS-ONLY: calls outside the UK need express consent (rules not modelled)", "EU", vec![Ev::purchase("hats").on(Channel::Phone)], news, D("VETO-EXPRESS-ONLY", "express_consent_required")).channel(Channel::Phone).tps(1, None),
        case("VETO-EXPRESS-ONLY: a US call with express consent", "US", vec![Ev::grant("news").on(Channel::Phone)], news, A("VETO-EXPRESS-ONLY")).channel(Channel::Phone),
        case("PECR-19: automated calls need prior consent", "UK", vec![], news, D("PECR-19", "no_consent")).channel(Channel::Phone)
            .ignored("automated-call classification comes with the decisions API (issue 6)"),
        case("edge 11: bounced and undelivered sends are logged as communications", "UK", vec![], news, D("PECR-22-2", "no_consent"))
            .ignored("receipts of sends come with the gateway (issue 4)"),
    ]
}
