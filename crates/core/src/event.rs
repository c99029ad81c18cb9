//! Consent events: what the ledger records.

use std::fmt;

use jiff::Timestamp;

use crate::{Channel, TopicId};

/// A contact's number in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactId(pub i64);

/// A ledger event's number in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub i64);

/// A wording's number (its version) in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WordingId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What an event is about: one topic, or all marketing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    All,
    Topic(TopicId),
}

impl Scope {
    pub fn covers(self, topic: TopicId) -> bool {
        match self {
            Scope::All => true,
            Scope::Topic(t) => t == topic,
        }
    }
}

/// Where an event came from. Only the person themselves can re-grant after
/// a withdrawal: see [`Source::is_the_person`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The organisation's own sign-up or checkout form, via the API.
    Form,
    /// An API call by the organisation's systems.
    Api,
    /// A CSV import by staff.
    Import,
    /// The person, on veto's preference centre.
    PreferenceCentre,
    /// The person, by RFC 8058 one-click or the unsubscribe page.
    OneClick,
    /// The person, by mail to `unsubscribe+TOKEN@`.
    Mailto,
    /// The person, by following a double opt-in confirmation link.
    DoubleOptIn,
    /// Bounces and complaints from mailbox providers.
    Feedback,
    /// A member of staff in the admin API or UI.
    Admin,
}

impl Source {
    pub const ALL: &'static [Source] = &[
        Source::Form,
        Source::Api,
        Source::Import,
        Source::PreferenceCentre,
        Source::OneClick,
        Source::Mailto,
        Source::DoubleOptIn,
        Source::Feedback,
        Source::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Form => "form",
            Source::Api => "api",
            Source::Import => "import",
            Source::PreferenceCentre => "preference_centre",
            Source::OneClick => "one_click",
            Source::Mailto => "mailto",
            Source::DoubleOptIn => "double_opt_in",
            Source::Feedback => "feedback",
            Source::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.iter().copied().find(|x| x.as_str() == s)
    }

    /// True when the person acted themselves, through a channel veto controls
    /// and the person reached with their own token or confirmation link.
    /// Staff, imports and the organisation's systems never count.
    pub fn is_the_person(self) -> bool {
        matches!(
            self,
            Source::PreferenceCentre | Source::OneClick | Source::Mailto | Source::DoubleOptIn
        )
    }
}

/// How the organisation got the person's details (the soft opt-in basis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelationshipKind {
    /// A sale (PECR reg 22(3)(a), ePrivacy Art 13(2), CASL s.10(10)(a)).
    Purchase,
    /// Negotiations for a sale, such as a quote (PECR only, not ePrivacy).
    Negotiation,
    /// An inquiry or application (CASL: implied consent for 6 months).
    Inquiry,
}

impl RelationshipKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RelationshipKind::Purchase => "purchase",
            RelationshipKind::Negotiation => "negotiation",
            RelationshipKind::Inquiry => "inquiry",
        }
    }
}

/// A purchase, negotiation or inquiry, with what the soft opt-in needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Relationship {
    pub kind: RelationshipKind,
    /// What it was about, matched against topics' similar-products groups.
    pub product_group: Option<String>,
    pub order_ref: Option<String>,
    /// Whether a simple, free opt-out was offered at collection (and not
    /// taken: a taken one is a `Refused` event instead). PECR reg 22(3)(c).
    pub opt_out_offered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Week,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The rolling window a limit counts sends in.
    pub fn days(self) -> i64 {
        match self {
            Period::Week => 7,
            Period::Month => 30,
        }
    }
}

/// "At most `max` marketing messages a `per`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrequencyLimit {
    pub max: u32,
    pub per: Period,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Express consent (GDPR Art 7, CASL express consent).
    Grant,
    /// Withdrawal of consent (GDPR Art 7(3)), or a CAN-SPAM opt-out.
    Withdraw,
    /// Objection to all direct marketing (GDPR Art 21): all topics, all channels.
    Object,
    /// A purchase, negotiation or inquiry: a soft opt-in / implied consent basis.
    Relationship(Relationship),
    /// The person ticked the opt-out at collection (PECR reg 22(3)(c)).
    Refused,
    HardBounce,
    /// A hard bounce found to be wrong, cleared by the DPO.
    BounceCleared,
    /// A spam complaint (feedback loop, ARF): stops all marketing on the channel.
    Complaint,
    /// No marketing until this time.
    Pause {
        until: Timestamp,
    },
    /// A frequency limit, or `None` to lift it.
    Frequency(Option<FrequencyLimit>),
    /// The person's data was erased (GDPR Art 17); a suppression entry remains.
    Erasure,
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Grant => "grant",
            EventKind::Withdraw => "withdraw",
            EventKind::Object => "object",
            EventKind::Relationship(r) => r.kind.as_str(),
            EventKind::Refused => "refused",
            EventKind::HardBounce => "hard_bounce",
            EventKind::BounceCleared => "bounce_cleared",
            EventKind::Complaint => "complaint",
            EventKind::Pause { .. } => "pause",
            EventKind::Frequency(_) => "frequency",
            EventKind::Erasure => "erasure",
        }
    }
}

/// An event as the policy sees it: what, about which scope and channel, by
/// whom, and when. Evidence and hashes live in the store's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub kind: EventKind,
    pub scope: Scope,
    /// `None`: every channel.
    pub channel: Option<Channel>,
    pub source: Source,
    pub at: Timestamp,
}

/// An event about to be appended, before the store has given it a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub scope: Scope,
    pub channel: Option<Channel>,
    pub source: Source,
    pub at: Timestamp,
}

impl NewEvent {
    pub fn with_id(&self, id: EventId) -> Event {
        Event {
            id,
            kind: self.kind.clone(),
            scope: self.scope,
            channel: self.channel,
            source: self.source,
            at: self.at,
        }
    }
}
