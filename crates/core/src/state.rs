//! The current consent of one contact: a fold of its ledger events.

use jiff::Timestamp;

use crate::{
    Channel, Event, EventId, EventKind, FrequencyLimit, JurisdictionSet, RelationshipKind, Scope,
    Source, SubscriberType, TopicId,
};

/// Which event a fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventRef {
    pub id: EventId,
    pub at: Timestamp,
    pub source: Source,
}

impl EventRef {
    fn of(e: &Event) -> Self {
        EventRef {
            id: e.id,
            at: e.at,
            source: e.source,
        }
    }

    /// Later events win; equal times are ordered by their number.
    fn is_after(&self, other: &EventRef) -> bool {
        (self.at, self.id) > (other.at, other.id)
    }
}

/// What a person said about marketing in some scope and channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Say {
    Granted,
    Withdrawn,
    /// Opted out at collection (the box was ticked).
    Refused,
}

/// One current fact about a contact. A newer event with the same key
/// replaces an older fact (see [`Fact::same_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fact {
    Consent {
        scope: Scope,
        channel: Option<Channel>,
        say: Say,
        ev: EventRef,
    },
    /// GDPR Art 21 objection: all marketing, all channels.
    Objection {
        ev: EventRef,
    },
    Complaint {
        channel: Option<Channel>,
        ev: EventRef,
    },
    HardBounce {
        channel: Option<Channel>,
        ev: EventRef,
    },
    Relationship {
        kind: RelationshipKind,
        product_group: Option<String>,
        channel: Option<Channel>,
        opt_out_offered: bool,
        ev: EventRef,
    },
    Pause {
        scope: Scope,
        until: Timestamp,
        ev: EventRef,
    },
    Frequency {
        limit: FrequencyLimit,
        ev: EventRef,
    },
    Erased {
        ev: EventRef,
    },
    /// The address is on the erasure suppression list (a keyed hash of it,
    /// kept after an earlier contact with this address was erased). Not an
    /// event of this contact's: the store adds it when it loads the state.
    Suppressed {
        since: Timestamp,
    },
    /// The person's phone number screened against the telephone preference
    /// lists (TPS, CTPS): when the list data was taken, and since when the
    /// number has been listed (`None`: not listed). Not an event: the store
    /// adds it for decisions on the phone channel.
    PhoneScreen {
        screened_at: Timestamp,
        listed_since: Option<Timestamp>,
    },
}

impl Fact {
    fn same_key(&self, other: &Fact) -> bool {
        use Fact::*;
        match (self, other) {
            (
                Consent {
                    scope: a,
                    channel: c,
                    ..
                },
                Consent {
                    scope: b,
                    channel: d,
                    ..
                },
            ) => a == b && c == d,
            (Objection { .. }, Objection { .. }) | (Erased { .. }, Erased { .. }) => true,
            (Frequency { .. }, Frequency { .. }) => true,
            (Complaint { channel: a, .. }, Complaint { channel: b, .. }) => a == b,
            (HardBounce { channel: a, .. }, HardBounce { channel: b, .. }) => a == b,
            (
                Relationship {
                    kind: k1,
                    product_group: g1,
                    channel: c1,
                    ..
                },
                Relationship {
                    kind: k2,
                    product_group: g2,
                    channel: c2,
                    ..
                },
            ) => k1 == k2 && g1 == g2 && c1 == c2,
            (Pause { scope: a, .. }, Pause { scope: b, .. }) => a == b,
            _ => false,
        }
    }

    pub fn event(&self) -> Option<EventRef> {
        use Fact::*;
        match self {
            Consent { ev, .. }
            | Objection { ev }
            | Complaint { ev, .. }
            | HardBounce { ev, .. }
            | Relationship { ev, .. }
            | Pause { ev, .. }
            | Frequency { ev, .. }
            | Erased { ev } => Some(*ev),
            Suppressed { .. } | PhoneScreen { .. } => None,
        }
    }
}

/// Does a fact's channel (`None` = all) apply to this channel?
pub(crate) fn on_channel(fact: Option<Channel>, channel: Channel) -> bool {
    fact.is_none_or(|c| c == channel)
}

/// Everything the policy needs to know about one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentState {
    /// veto has a contact record for this address.
    pub known: bool,
    /// The contact's jurisdictions; empty means `[policy] default_jurisdictions`.
    pub jurisdictions: JurisdictionSet,
    pub subscriber: SubscriberKind,
    pub facts: Vec<Fact>,
    /// When marketing was last handed off to this contact, for frequency
    /// limits: the store fills in the sends of the last 30 days.
    pub recent_sends: Vec<Timestamp>,
}

/// `SubscriberType` with a default, so that `ConsentState: Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriberKind {
    #[default]
    Individual,
    Corporate,
}

impl From<SubscriberType> for SubscriberKind {
    fn from(s: SubscriberType) -> Self {
        match s {
            SubscriberType::Individual => SubscriberKind::Individual,
            SubscriberType::Corporate => SubscriberKind::Corporate,
        }
    }
}

impl ConsentState {
    /// The state of a known contact with no events yet.
    pub fn known(jurisdictions: JurisdictionSet, subscriber: SubscriberType) -> Self {
        ConsentState {
            known: true,
            jurisdictions,
            subscriber: subscriber.into(),
            ..Default::default()
        }
    }

    /// Folds one event into the state. Events must come in ledger order.
    pub fn apply(&mut self, e: &Event) {
        let ev = EventRef::of(e);
        let fact = match &e.kind {
            EventKind::Grant => consent(e, Say::Granted, ev),
            EventKind::Withdraw => consent(e, Say::Withdrawn, ev),
            EventKind::Refused => consent(e, Say::Refused, ev),
            EventKind::Object => Fact::Objection { ev },
            EventKind::Complaint => Fact::Complaint {
                channel: e.channel,
                ev,
            },
            EventKind::HardBounce => Fact::HardBounce {
                channel: e.channel,
                ev,
            },
            EventKind::BounceCleared => {
                self.facts.retain(|f| {
                    !matches!(f, Fact::HardBounce { channel, .. } if *channel == e.channel || e.channel.is_none())
                });
                return;
            }
            EventKind::Relationship(r) => Fact::Relationship {
                kind: r.kind,
                product_group: r.product_group.clone(),
                channel: e.channel,
                opt_out_offered: r.opt_out_offered,
                ev,
            },
            EventKind::Pause { until } => Fact::Pause {
                scope: e.scope,
                until: *until,
                ev,
            },
            EventKind::Frequency(Some(limit)) => Fact::Frequency { limit: *limit, ev },
            EventKind::Frequency(None) => {
                self.facts.retain(|f| !matches!(f, Fact::Frequency { .. }));
                return;
            }
            EventKind::Erasure => Fact::Erased { ev },
        };
        self.known = true;
        self.upsert(fact);
    }

    /// Replaces the fact with the same key, or adds it.
    pub fn upsert(&mut self, fact: Fact) {
        match self.facts.iter_mut().find(|f| f.same_key(&fact)) {
            Some(slot) => *slot = fact,
            None => self.facts.push(fact),
        }
    }

    /// The newest thing the person said that applies to marketing on `topic`
    /// (or, with `None`, to any topic) on `channel`: a consent or withdrawal
    /// in a covering scope, an objection, a complaint, or a suppression entry.
    /// Returns what it says and the event (`None` for a suppression entry).
    pub fn latest_say(&self, topic: Option<TopicId>, channel: Channel) -> Option<(Say, Cause)> {
        let mut best: Option<(Say, Cause)> = None;
        let mut consider = |say: Say, cause: Cause| {
            let newer = match &best {
                None => true,
                Some((_, b)) => cause.is_after(b),
            };
            if newer {
                best = Some((say, cause));
            }
        };
        // After an erasure only the person's own consent counts (ICO-SUPP).
        let suppressed = self
            .facts
            .iter()
            .any(|f| matches!(f, Fact::Suppressed { .. }));
        for f in &self.facts {
            match f {
                Fact::Consent {
                    say: Say::Granted,
                    ev,
                    ..
                } if suppressed && !ev.source.is_the_person() => {}
                Fact::Consent {
                    scope,
                    channel: c,
                    say,
                    ev,
                } if on_channel(*c, channel) && topic.is_none_or(|t| scope.covers(t)) => {
                    let cause = match say {
                        Say::Granted => Cause::Granted(*ev),
                        Say::Withdrawn => Cause::Withdrawn(*ev),
                        Say::Refused => Cause::Refused(*ev),
                    };
                    consider(*say, cause)
                }
                Fact::Objection { ev } => consider(Say::Withdrawn, Cause::Objected(*ev)),
                Fact::Complaint { channel: c, ev } if on_channel(*c, channel) => {
                    consider(Say::Withdrawn, Cause::Complained(*ev))
                }
                Fact::Suppressed { since } => consider(Say::Withdrawn, Cause::Suppressed(*since)),
                _ => {}
            }
        }
        best
    }

    pub(crate) fn erased(&self) -> Option<EventRef> {
        self.facts.iter().find_map(|f| match f {
            Fact::Erased { ev } => Some(*ev),
            _ => None,
        })
    }

    /// The telephone preference screening the store added, if any.
    pub(crate) fn phone_screen(&self) -> Option<(Timestamp, Option<Timestamp>)> {
        self.facts.iter().find_map(|f| match f {
            Fact::PhoneScreen {
                screened_at,
                listed_since,
            } => Some((*screened_at, *listed_since)),
            _ => None,
        })
    }

    pub(crate) fn hard_bounce(&self, channel: Channel) -> Option<EventRef> {
        self.facts.iter().find_map(|f| match f {
            Fact::HardBounce { channel: c, ev } if on_channel(*c, channel) => Some(*ev),
            _ => None,
        })
    }
}

fn consent(e: &Event, say: Say, ev: EventRef) -> Fact {
    Fact::Consent {
        scope: e.scope,
        channel: e.channel,
        say,
        ev,
    }
}

/// Why the latest say is what it is: the event (or suppression entry) behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Granted(EventRef),
    Withdrawn(EventRef),
    Refused(EventRef),
    Objected(EventRef),
    Complained(EventRef),
    Suppressed(Timestamp),
}

impl Cause {
    pub fn event(self) -> Option<EventRef> {
        match self {
            Cause::Granted(e)
            | Cause::Withdrawn(e)
            | Cause::Refused(e)
            | Cause::Objected(e)
            | Cause::Complained(e) => Some(e),
            Cause::Suppressed(_) => None,
        }
    }

    pub fn at(self) -> Timestamp {
        match self {
            Cause::Suppressed(t) => t,
            other => other.event().map(|e| e.at).unwrap_or_default(),
        }
    }

    /// Ties between a suppression entry and an event go to the suppression.
    fn is_after(&self, other: &Cause) -> bool {
        match (self.event(), other.event()) {
            (Some(a), Some(b)) => a.is_after(&b),
            (None, _) => self.at() >= other.at(),
            (Some(a), None) => a.at > other.at(),
        }
    }
}
