//! The guard's decision: may this message go to this person now?
//!
//! `decide` is pure and total: every input gets an answer, and an answer it
//! cannot justify is a refusal (fail closed). Rule ids are those of
//! `shared/reference/law-rules.md`; veto's own rules start with `VETO-`.

use std::fmt;

use jiff::{Timestamp, ToSpan, tz::TimeZone};

use crate::state::{Cause, on_channel};
use crate::{
    Channel, ConsentState, EventId, EventKind, EventRef, Fact, FrequencyLimit, Jurisdiction,
    JurisdictionSet, NewEvent, RelationshipKind, Say, Scope, Topic,
};

/// The day PECR reg 22(3A) (charity soft opt-in, DUAA 2025 s.114) came into
/// force: 5 Feb 2026. Supporters recruited before it have no soft opt-in.
pub const CHARITY_SOFT_OPT_IN_START: Timestamp = Timestamp::constant(1_770_249_600, 0);

/// PECR reg 21's 28 days: a TPS/CTPS listing binds callers 28 days after it
/// is made, and screening data older than this is stale.
pub const TPS_DAYS: i64 = 28;

/// At least [`TPS_DAYS`] whole days from `since` to `now`.
pub fn tps_days_passed(since: Timestamp, now: Timestamp) -> bool {
    now.as_second() - since.as_second() >= TPS_DAYS * 86_400
}

/// Where the law leaves a choice: a new purchase after an opt-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PurchaseAfterOptOut {
    /// The opt-out stands until the person gives fresh express consent
    /// (the safe reading of PECR reg 22(3) and GDPR Art 21). Default.
    #[default]
    StaysOptedOut,
    /// A purchase (or, under CASL, inquiry) *after* a plain withdrawal, with
    /// the opt-out offered again and not taken, is a new soft opt-in /
    /// implied-consent basis. Objections, complaints, refusals at collection
    /// and erasures are never revived.
    NewBasis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySettings {
    /// For contacts whose jurisdiction is not recorded.
    pub default_jurisdictions: JurisdictionSet,
    pub purchase_after_opt_out: PurchaseAfterOptOut,
    /// The organisation is a charity (PECR reg 22(3A)).
    pub charity: bool,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            default_jurisdictions: JurisdictionSet::of(&[Jurisdiction::Uk, Jurisdiction::Eu]),
            purchase_after_opt_out: PurchaseAfterOptOut::StaysOptedOut,
            charity: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageClass<'a> {
    Marketing(&'a Topic),
    /// A declared service message (bill, security alert): no consent needed.
    Service,
    /// A message the person asked for just now on veto's own pages (a
    /// double opt-in confirmation, a link to their data). Only veto's web
    /// flows send it, never a tool or the API; it goes even to an address on
    /// the suppression list, because the person asked (not to a bounced one).
    Requested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub class: MessageClass<'a>,
    pub channel: Channel,
}

/// The rules a decision can rest on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// PECR reg 22(2): consent for electronic mail marketing.
    Pecr22_2,
    /// PECR reg 22(3): soft opt-in.
    Pecr22_3,
    /// PECR reg 22(3A): charity soft opt-in.
    Pecr22_3A,
    /// PECR reg 21: live marketing calls; not to a number listed on the
    /// TPS/CTPS for 28 days or more, unless the subscriber told the caller
    /// they do not object.
    Pecr21,
    /// PECR reg 21 in practice: a call list is screened against the TPS at
    /// least every 28 days; a decision needs screening data that fresh.
    Pecr21Screen,
    /// PECR reg 22(1): corporate subscribers are outside reg 22.
    PecrCorp,
    /// GDPR Art 6: a lawful basis (legitimate interests for post).
    Gdpr6,
    /// GDPR Art 7: demonstrable consent; withdrawal at any time.
    Gdpr7,
    /// GDPR Art 17: erasure.
    Gdpr17,
    /// GDPR Art 21: objection to direct marketing is absolute.
    Gdpr21,
    /// ePrivacy Art 13(2): soft opt-in for customers of a sale only.
    Ep13_2,
    /// CAN-SPAM: commercial email needs no consent (opt-out regime).
    CsId,
    /// CAN-SPAM: opt-outs are honoured (veto: at once).
    CsHonor,
    /// CASL s.6: commercial electronic messages need consent.
    Casl6,
    /// CASL s.10(1): express consent.
    CaslExpress,
    /// CASL s.10(9)-(14): implied consent, 2 years after a purchase, 6 months after an inquiry.
    Casl10Implied,
    /// CASL s.11: unsubscribe requests are honoured.
    Casl11,
    /// ICO: suppression lists are kept and screened against.
    IcoSupp,
    /// veto: an address with no record gets no marketing, whatever the jurisdiction.
    VetoNoRecord,
    /// veto: a spam complaint stops all marketing on that channel.
    VetoComplaint,
    /// veto: a hard-bounced address gets nothing until the bounce is cleared.
    VetoHardBounce,
    /// veto: the person paused marketing.
    VetoPause,
    /// veto: the person's frequency limit.
    VetoFrequency,
    /// veto: channels whose rules veto does not model (phone before TPS
    /// screening, US SMS) need express consent.
    VetoExpressOnly,
    /// veto: postal marketing outside the UK and EU, opt-out regime.
    VetoPostal,
    /// veto: declared service messages need no consent.
    VetoService,
    /// veto: limits and pauses the person set can only be loosened by them.
    VetoPersonOnly,
    /// veto: a message the person asked for on veto's pages.
    VetoRequested,
}

impl Rule {
    pub fn id(self) -> &'static str {
        match self {
            Rule::Pecr22_2 => "PECR-22-2",
            Rule::Pecr22_3 => "PECR-22-3",
            Rule::Pecr22_3A => "PECR-22-3A",
            Rule::Pecr21 => "PECR-21",
            Rule::Pecr21Screen => "PECR-21-SCREEN",
            Rule::PecrCorp => "PECR-CORP",
            Rule::Gdpr6 => "GDPR-6",
            Rule::Gdpr7 => "GDPR-7",
            Rule::Gdpr17 => "GDPR-17",
            Rule::Gdpr21 => "GDPR-21",
            Rule::Ep13_2 => "EP-13-2",
            Rule::CsId => "CS-ID",
            Rule::CsHonor => "CS-HONOR",
            Rule::Casl6 => "CASL-6",
            Rule::CaslExpress => "CASL-EXPRESS",
            Rule::Casl10Implied => "CASL-10-IMPL",
            Rule::Casl11 => "CASL-11",
            Rule::IcoSupp => "ICO-SUPP",
            Rule::VetoNoRecord => "VETO-NO-RECORD",
            Rule::VetoComplaint => "VETO-COMPLAINT",
            Rule::VetoHardBounce => "VETO-HARD-BOUNCE",
            Rule::VetoPause => "VETO-PAUSE",
            Rule::VetoFrequency => "VETO-FREQUENCY",
            Rule::VetoExpressOnly => "VETO-EXPRESS-ONLY",
            Rule::VetoPostal => "VETO-POSTAL",
            Rule::VetoService => "VETO-SERVICE",
            Rule::VetoPersonOnly => "VETO-PERSON-ONLY",
            Rule::VetoRequested => "VETO-REQUESTED",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Why a message may not go, in words a person reads after the address:
/// "jo@example.com has not agreed to receive news (withdrew consent)".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoRecord,
    /// Known, but with no record of how the address was obtained.
    NoEvidence,
    NoConsent,
    Withdrawn,
    RefusedAtCollection,
    Objected,
    Complained,
    HardBounced,
    Erased,
    Suppressed,
    ImpliedConsentExpired,
    ExpressConsentRequired,
    Paused {
        until: Timestamp,
    },
    FrequencyLimit(FrequencyLimit),
    /// A staff action would loosen a limit the person set.
    SetByThePerson,
    /// The number has been on the TPS/CTPS for 28 days or more.
    TpsListed {
        since: Timestamp,
    },
    /// No telephone preference list has been loaded to screen against.
    NotScreened,
    /// The loaded telephone preference list is more than 28 days old.
    ScreeningStale {
        screened_at: Timestamp,
    },
}

impl Reason {
    /// A stable machine name, for receipts, metrics and JSON.
    pub fn code(self) -> &'static str {
        match self {
            Reason::NoRecord => "no_record",
            Reason::NoEvidence => "no_evidence",
            Reason::NoConsent => "no_consent",
            Reason::Withdrawn => "withdrawn",
            Reason::RefusedAtCollection => "refused_at_collection",
            Reason::Objected => "objected",
            Reason::Complained => "complained",
            Reason::HardBounced => "hard_bounced",
            Reason::Erased => "erased",
            Reason::Suppressed => "suppressed",
            Reason::ImpliedConsentExpired => "implied_consent_expired",
            Reason::ExpressConsentRequired => "express_consent_required",
            Reason::Paused { .. } => "paused",
            Reason::FrequencyLimit(_) => "frequency_limit",
            Reason::SetByThePerson => "set_by_the_person",
            Reason::TpsListed { .. } => "tps_listed",
            Reason::NotScreened => "tps_not_screened",
            Reason::ScreeningStale { .. } => "tps_screening_stale",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoRecord => f.write_str("no record of this address"),
            Reason::NoEvidence => f.write_str("no record of how the address was obtained"),
            Reason::NoConsent => f.write_str("never agreed"),
            Reason::Withdrawn => f.write_str("withdrew consent"),
            Reason::RefusedAtCollection => {
                f.write_str("opted out when their details were collected")
            }
            Reason::Objected => f.write_str("objected to all marketing"),
            Reason::Complained => f.write_str("reported a message as spam"),
            Reason::HardBounced => f.write_str("the address bounced"),
            Reason::Erased => f.write_str("their data was erased"),
            Reason::Suppressed => {
                f.write_str("the address is on the suppression list after an erasure")
            }
            Reason::ImpliedConsentExpired => f.write_str("implied consent has expired"),
            Reason::ExpressConsentRequired => f.write_str("this channel needs express consent"),
            Reason::Paused { until } => {
                write!(f, "paused marketing until {}", until.strftime("%Y-%m-%d"))
            }
            Reason::FrequencyLimit(l) => {
                write!(f, "reached their limit of {} a {}", l.max, l.per.as_str())
            }
            Reason::SetByThePerson => f.write_str("only the person can loosen a limit they set"),
            Reason::TpsListed { since } => write!(
                f,
                "the number has been on the telephone preference service since {}",
                since.strftime("%Y-%m-%d")
            ),
            Reason::NotScreened => f.write_str(
                "the number has not been screened against the telephone preference service",
            ),
            Reason::ScreeningStale { screened_at } => write!(
                f,
                "the telephone preference screening data is from {}, more than 28 days ago",
                screened_at.strftime("%Y-%m-%d")
            ),
        }
    }
}

/// Allowed: on which rule, by which event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub rule: Rule,
    pub event: Option<EventId>,
    pub jurisdiction: Option<Jurisdiction>,
}

/// Denied: by which rule, why, and the event behind it if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    pub reason: Reason,
    pub event: Option<EventId>,
    pub jurisdiction: Option<Jurisdiction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed(Allowance),
    Denied(Refusal),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }

    pub fn rule(&self) -> Rule {
        match self {
            Decision::Allowed(a) => a.rule,
            Decision::Denied(r) => r.rule,
        }
    }

    pub fn event(&self) -> Option<EventId> {
        match self {
            Decision::Allowed(a) => a.event,
            Decision::Denied(r) => r.event,
        }
    }
}

fn refuse(rule: Rule, reason: Reason, event: Option<EventRef>) -> Refusal {
    Refusal {
        rule,
        reason,
        event: event.map(|e| e.id),
        jurisdiction: None,
    }
}

fn allow(rule: Rule, event: Option<EventRef>) -> Allowance {
    Allowance {
        rule,
        event: event.map(|e| e.id),
        jurisdiction: None,
    }
}

/// May `message` go to the person whose consent is `state`, at `now`?
pub fn decide(
    state: &ConsentState,
    message: &Message,
    settings: &PolicySettings,
    now: Timestamp,
) -> Decision {
    match decide_inner(state, message, settings, now) {
        Ok(a) => Decision::Allowed(a),
        Err(r) => Decision::Denied(r),
    }
}

fn decide_inner(
    state: &ConsentState,
    message: &Message,
    settings: &PolicySettings,
    now: Timestamp,
) -> Result<Allowance, Refusal> {
    let channel = message.channel;
    if let Some(ev) = state.erased() {
        return Err(refuse(Rule::Gdpr17, Reason::Erased, Some(ev)));
    }
    if let Some(ev) = state.hard_bounce(channel) {
        return Err(refuse(Rule::VetoHardBounce, Reason::HardBounced, Some(ev)));
    }
    let topic = match message.class {
        MessageClass::Service => {
            // An erased address stays blocked, service mail included, until
            // the person comes back and agrees to something themselves.
            if let Some((Say::Withdrawn, Cause::Suppressed(_))) = state.latest_say(None, channel) {
                return Err(refuse(Rule::IcoSupp, Reason::Suppressed, None));
            }
            return Ok(allow(Rule::VetoService, None));
        }
        MessageClass::Requested => return Ok(allow(Rule::VetoRequested, None)),
        MessageClass::Marketing(topic) => topic,
    };
    // (A screening result is not a record of the person.)
    let no_record = state
        .facts
        .iter()
        .all(|f| matches!(f, Fact::PhoneScreen { .. }));
    if !state.known && no_record {
        return Err(refuse(Rule::VetoNoRecord, Reason::NoRecord, None));
    }
    let jurisdictions = if state.jurisdictions.is_empty() {
        settings.default_jurisdictions
    } else {
        state.jurisdictions
    };

    let mut consent = None;
    // Relationships older than this do not count (they predate an opt-out).
    let mut not_before = None;
    let mut withdrawal = None;
    match state.latest_say(Some(topic.id), channel) {
        Some((Say::Granted, cause)) => consent = cause.event(),
        Some((_, cause)) => {
            let refusal = opt_out_refusal(cause, jurisdictions);
            let revivable = matches!(cause, Cause::Withdrawn(_))
                && settings.purchase_after_opt_out == PurchaseAfterOptOut::NewBasis;
            if !revivable {
                return Err(refusal);
            }
            not_before = Some(cause.at());
            withdrawal = Some(refusal);
        }
        None => {}
    }

    let ctx = Context {
        state,
        topic,
        channel,
        consent,
        not_before,
        settings,
        now,
    };
    let mut allowance = None;
    for j in jurisdictions.iter() {
        match ctx.judge(j) {
            Ok(a) => {
                allowance.get_or_insert(Allowance {
                    jurisdiction: Some(j),
                    ..a
                });
            }
            Err(r) => {
                // After a withdrawal, "no basis" is best explained by the withdrawal.
                let r = match (withdrawal, r.reason) {
                    (Some(w), Reason::NoConsent | Reason::NoEvidence) => w,
                    _ => r,
                };
                return Err(Refusal {
                    jurisdiction: Some(j),
                    ..r
                });
            }
        }
    }
    // No jurisdiction at all (a misconfiguration): nothing allowed it.
    let allowance = allowance.ok_or(refuse(Rule::VetoNoRecord, Reason::NoConsent, None))?;

    for f in &state.facts {
        match f {
            Fact::Pause { scope, until, ev } if scope.covers(topic.id) && *until > now => {
                return Err(refuse(
                    Rule::VetoPause,
                    Reason::Paused { until: *until },
                    Some(*ev),
                ));
            }
            Fact::Frequency { limit, ev } => {
                let since = now.as_second() - limit.per.days() * 86_400;
                let sent = state
                    .recent_sends
                    .iter()
                    .filter(|t| t.as_second() > since)
                    .count();
                if sent >= limit.max as usize {
                    return Err(refuse(
                        Rule::VetoFrequency,
                        Reason::FrequencyLimit(*limit),
                        Some(*ev),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(allowance)
}

/// The refusal for an opt-out, under the strictest jurisdiction's rule.
fn opt_out_refusal(cause: Cause, jurisdictions: JurisdictionSet) -> Refusal {
    let gdpr = jurisdictions.contains(Jurisdiction::Uk) || jurisdictions.contains(Jurisdiction::Eu);
    let withdrawal_rule = if gdpr {
        Rule::Gdpr7
    } else if jurisdictions.contains(Jurisdiction::Ca) {
        Rule::Casl11
    } else {
        Rule::CsHonor
    };
    match cause {
        Cause::Granted(ev) => refuse(Rule::VetoNoRecord, Reason::NoConsent, Some(ev)),
        Cause::Withdrawn(ev) => refuse(withdrawal_rule, Reason::Withdrawn, Some(ev)),
        Cause::Refused(ev) => refuse(withdrawal_rule, Reason::RefusedAtCollection, Some(ev)),
        Cause::Objected(ev) if gdpr => refuse(Rule::Gdpr21, Reason::Objected, Some(ev)),
        Cause::Objected(ev) => refuse(withdrawal_rule, Reason::Objected, Some(ev)),
        Cause::Complained(ev) => refuse(Rule::VetoComplaint, Reason::Complained, Some(ev)),
        Cause::Suppressed(_) => refuse(Rule::IcoSupp, Reason::Suppressed, None),
    }
}

struct Context<'a> {
    state: &'a ConsentState,
    topic: &'a Topic,
    channel: Channel,
    consent: Option<EventRef>,
    not_before: Option<Timestamp>,
    settings: &'a PolicySettings,
    now: Timestamp,
}

struct Rel<'a> {
    kind: RelationshipKind,
    group: Option<&'a str>,
    opt_out_offered: bool,
    ev: EventRef,
}

impl<'a> Context<'a> {
    /// Relationships on this channel that count (newer than any opt-out), newest first.
    fn relationships(&self) -> impl Iterator<Item = Rel<'a>> + '_ {
        self.state.facts.iter().filter_map(move |f| match f {
            Fact::Relationship {
                kind,
                product_group,
                channel,
                opt_out_offered,
                ev,
            } if on_channel(*channel, self.channel)
                && self.not_before.is_none_or(|t| ev.at > t) =>
            {
                Some(Rel {
                    kind: *kind,
                    group: product_group.as_deref(),
                    opt_out_offered: *opt_out_offered,
                    ev: *ev,
                })
            }
            _ => None,
        })
    }

    fn newest(&self, pred: impl Fn(&Rel) -> bool) -> Option<EventRef> {
        self.relationships()
            .filter(|r| pred(r))
            .map(|r| r.ev)
            .max_by_key(|e| (e.at, e.id))
    }

    /// Same similar-products group as the topic (PECR reg 22(3)(b)).
    fn similar(&self, r: &Rel) -> bool {
        matches!((r.group, self.topic.group.as_deref()), (Some(a), Some(b)) if a == b)
    }

    /// Any evidence of how the address was obtained: a grant or a relationship.
    fn evidence(&self) -> Option<EventRef> {
        self.consent.or_else(|| self.newest(|_| true))
    }

    fn judge(&self, j: Jurisdiction) -> Result<Allowance, Refusal> {
        use Jurisdiction::*;
        match self.channel {
            Channel::Email | Channel::Sms => match j {
                Uk => self.uk_electronic(),
                Eu => self.eu_electronic(),
                Us if self.channel == Channel::Email => self.opt_out_regime(Rule::CsId),
                Us => self.express_only(),
                Ca => self.casl(),
            },
            Channel::Post => match j {
                Uk | Eu => self.opt_out_regime(Rule::Gdpr6),
                Us | Ca => self.opt_out_regime(Rule::VetoPostal),
            },
            // Live calls: PECR reg 21 in the UK; elsewhere veto does not
            // model the rules (TCPA, DNCL, member states' choices under
            // ePrivacy Art 13(3)), so only express consent allows a call.
            Channel::Phone => match j {
                Uk => self.uk_call(),
                Eu | Us | Ca => self.express_only(),
            },
        }
    }

    /// PECR reg 21: an opt-out regime for live calls, screened against the
    /// TPS/CTPS. The subscriber's own consent to calls (they told the
    /// organisation they do not object) overrides a listing; without it the
    /// number must have been screened against list data at most 28 days
    /// old, and not be listed for 28 days or more (the lists give callers 28
    /// days to catch up with a new registration).
    fn uk_call(&self) -> Result<Allowance, Refusal> {
        if self.consent.is_some() {
            return Ok(allow(Rule::Pecr21, self.consent));
        }
        let Some((screened_at, listed_since)) = self.state.phone_screen() else {
            return Err(refuse(Rule::Pecr21Screen, Reason::NotScreened, None));
        };
        if tps_days_passed(screened_at, self.now) {
            return Err(refuse(
                Rule::Pecr21Screen,
                Reason::ScreeningStale { screened_at },
                None,
            ));
        }
        if let Some(since) = listed_since
            && tps_days_passed(since, self.now)
        {
            return Err(refuse(Rule::Pecr21, Reason::TpsListed { since }, None));
        }
        self.opt_out_regime(Rule::Pecr21)
    }

    fn uk_electronic(&self) -> Result<Allowance, Refusal> {
        if self.consent.is_some() {
            return Ok(allow(Rule::Pecr22_2, self.consent));
        }
        if self.state.subscriber == crate::state::SubscriberKind::Corporate {
            // PECR-CORP: reg 22 does not protect corporate subscribers; GDPR
            // Art 21 still does (objections were handled before).
            return self.opt_out_regime(Rule::PecrCorp);
        }
        let soft = self.newest(|r| {
            matches!(
                r.kind,
                RelationshipKind::Purchase | RelationshipKind::Negotiation
            ) && r.opt_out_offered
                && self.similar(r)
        });
        if soft.is_some() {
            return Ok(allow(Rule::Pecr22_3, soft));
        }
        if self.settings.charity {
            let charity =
                self.newest(|r| r.opt_out_offered && r.ev.at >= CHARITY_SOFT_OPT_IN_START);
            if charity.is_some() {
                return Ok(allow(Rule::Pecr22_3A, charity));
            }
        }
        Err(refuse(Rule::Pecr22_2, Reason::NoConsent, None))
    }

    fn eu_electronic(&self) -> Result<Allowance, Refusal> {
        if self.consent.is_some() {
            return Ok(allow(Rule::Gdpr7, self.consent));
        }
        // Art 13(2) covers natural persons; member states differ on legal
        // persons, so veto treats corporate subscribers the same (strictest).
        let soft = self.newest(|r| {
            r.kind == RelationshipKind::Purchase && r.opt_out_offered && self.similar(r)
        });
        match soft {
            Some(_) => Ok(allow(Rule::Ep13_2, soft)),
            None => Err(refuse(Rule::Ep13_2, Reason::NoConsent, None)),
        }
    }

    fn casl(&self) -> Result<Allowance, Refusal> {
        if self.consent.is_some() {
            return Ok(allow(Rule::CaslExpress, self.consent));
        }
        let now = self.now;
        let valid = |r: &Rel| {
            let span = match r.kind {
                RelationshipKind::Purchase => 2.years(),
                RelationshipKind::Negotiation | RelationshipKind::Inquiry => 6.months(),
            };
            // Calendar arithmetic in UTC; an overflow counts as expired.
            r.ev.at
                .to_zoned_datetime(TimeZone::UTC)
                .checked_add(span)
                .is_ok_and(|end| end.timestamp() > now)
        };
        if let Some(ev) = self.newest(valid) {
            return Ok(allow(Rule::Casl10Implied, Some(ev)));
        }
        match self.newest(|_| true) {
            Some(ev) => Err(refuse(
                Rule::Casl10Implied,
                Reason::ImpliedConsentExpired,
                Some(ev),
            )),
            None => Err(refuse(Rule::Casl6, Reason::NoConsent, None)),
        }
    }

    fn opt_out_regime(&self, rule: Rule) -> Result<Allowance, Refusal> {
        match self.evidence() {
            Some(ev) => Ok(allow(rule, Some(ev))),
            None => Err(refuse(Rule::VetoNoRecord, Reason::NoEvidence, None)),
        }
    }

    fn express_only(&self) -> Result<Allowance, Refusal> {
        match self.consent {
            Some(ev) => Ok(allow(Rule::VetoExpressOnly, Some(ev))),
            None => Err(refuse(
                Rule::VetoExpressOnly,
                Reason::ExpressConsentRequired,
                None,
            )),
        }
    }
}

/// May this event be appended to this contact's ledger? Withdrawals always
/// may. A grant after a withdrawal, objection, complaint or erasure may come
/// only from the person; so may anything about an erased address, and
/// anything that loosens a pause or frequency limit the person set.
pub fn check_append(state: &ConsentState, event: &NewEvent) -> Result<(), Refusal> {
    if let Some(ev) = state.erased() {
        return Err(refuse(Rule::Gdpr17, Reason::Erased, Some(ev)));
    }
    // An erased address holds nothing but its suppression entry. Only the
    // person's own new consent brings it back; anything else (even their own
    // withdrawal, which changes nothing) would store personal data again.
    for f in &state.facts {
        if let Fact::Suppressed { since } = f {
            let came_back = state.facts.iter().any(|g| {
                matches!(g, Fact::Consent { say: Say::Granted, ev, .. } if ev.source.is_the_person() && ev.at >= *since)
            });
            let comes_back = event.source.is_the_person() && event.kind == EventKind::Grant;
            if !came_back && !comes_back {
                return Err(refuse(Rule::IcoSupp, Reason::Suppressed, None));
            }
        }
    }
    if event.source.is_the_person() {
        return Ok(());
    }
    let channels: &[Channel] = match &event.channel {
        Some(c) => std::slice::from_ref(c),
        None => Channel::ALL,
    };
    match &event.kind {
        EventKind::Grant => {
            for &channel in channels {
                if let Some(cause) = standing_opt_out(state, event.scope, channel) {
                    let jurisdictions = if state.jurisdictions.is_empty() {
                        JurisdictionSet::of(&[Jurisdiction::Uk])
                    } else {
                        state.jurisdictions
                    };
                    return Err(opt_out_refusal(cause, jurisdictions));
                }
            }
            Ok(())
        }
        EventKind::Frequency(new) => {
            let loosens = state.facts.iter().find_map(|f| match f {
                Fact::Frequency { limit, ev } if ev.source.is_the_person() => {
                    let looser = new.is_none_or(|n| {
                        n.max as f64 / n.per.days() as f64
                            > limit.max as f64 / limit.per.days() as f64
                    });
                    looser.then_some(*ev)
                }
                _ => None,
            });
            match loosens {
                Some(ev) => Err(refuse(
                    Rule::VetoPersonOnly,
                    Reason::SetByThePerson,
                    Some(ev),
                )),
                None => Ok(()),
            }
        }
        EventKind::Pause { until } => {
            let shortens = state.facts.iter().find_map(|f| match f {
                Fact::Pause {
                    scope,
                    until: current,
                    ev,
                } if *scope == event.scope && ev.source.is_the_person() && current > until => {
                    Some(*ev)
                }
                _ => None,
            });
            match shortens {
                Some(ev) => Err(refuse(
                    Rule::VetoPersonOnly,
                    Reason::SetByThePerson,
                    Some(ev),
                )),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// An opt-out that a grant in `scope` on `channel` would override.
fn standing_opt_out(state: &ConsentState, scope: Scope, channel: Channel) -> Option<Cause> {
    match scope {
        Scope::Topic(t) => match state.latest_say(Some(t), channel) {
            Some((Say::Granted, _)) | None => None,
            Some((_, cause)) => Some(cause),
        },
        // A grant for all marketing would override every opt-out on the
        // channel, in any topic, unless a later all-marketing grant (by the
        // person, necessarily) already did.
        Scope::All => {
            let last_all_grant = state
                .facts
                .iter()
                .filter_map(|f| match f {
                    Fact::Consent {
                        scope: Scope::All,
                        channel: c,
                        say: Say::Granted,
                        ev,
                    } if on_channel(*c, channel) => Some(ev.at),
                    _ => None,
                })
                .max();
            state.facts.iter().find_map(|f| {
                let cause = match f {
                    Fact::Consent {
                        channel: c,
                        say: Say::Withdrawn,
                        ev,
                        ..
                    } if on_channel(*c, channel) => Cause::Withdrawn(*ev),
                    Fact::Consent {
                        channel: c,
                        say: Say::Refused,
                        ev,
                        ..
                    } if on_channel(*c, channel) => Cause::Refused(*ev),
                    Fact::Objection { ev } => Cause::Objected(*ev),
                    Fact::Complaint { channel: c, ev } if on_channel(*c, channel) => {
                        Cause::Complained(*ev)
                    }
                    _ => return None,
                };
                let lifted = last_all_grant.is_some_and(|g| g > cause.at());
                (!lifted).then_some(cause)
            })
        }
    }
}
