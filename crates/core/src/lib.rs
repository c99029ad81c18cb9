//! veto-core: the domain of consent and the guard's decision.
//!
//! Everything here is pure: no IO, no async, no clock. The store feeds
//! [`ConsentState`] in, [`decide`] says yes or no and why.

mod address;
mod channel;
mod event;
mod policy;
mod role;
mod state;
mod topic;

pub use address::{AddressError, EmailAddress, PhoneError, PhoneNumber};
pub use channel::{Channel, Jurisdiction, JurisdictionSet, ParseEnumError, SubscriberType};
pub use event::{
    ContactId, Event, EventId, EventKind, FrequencyLimit, NewEvent, Period, Relationship,
    RelationshipKind, Scope, Source, WordingId,
};
pub use policy::{
    Allowance, CHARITY_SOFT_OPT_IN_START, Decision, Message, MessageClass, PolicySettings,
    PurchaseAfterOptOut, Reason, Refusal, Rule, TPS_DAYS, check_append, decide, tps_days_passed,
};
pub use role::Role;
pub use state::{Cause, ConsentState, EventRef, Fact, Say, SubscriberKind};
pub use topic::{ServiceType, Topic, TopicId, TopicKey, TopicKeyError, Wording};

/// A point in time. veto stores times as microseconds since the Unix epoch.
pub use jiff::Timestamp;
