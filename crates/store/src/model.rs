//! What goes into and comes out of the store.

use std::collections::BTreeMap;

use serde::Serialize;
use veto_core::{
    ContactId, EmailAddress, Event, EventId, JurisdictionSet, NewEvent, PhoneNumber, Refusal, Role,
    SubscriberType, Timestamp, TopicKey, WordingId,
};

/// Who an event is about, with what the organisation knows of them.
/// `None` and empty fields leave what the store has unchanged.
#[derive(Debug, Clone)]
pub struct ContactInput {
    pub email: EmailAddress,
    pub name: Option<String>,
    pub phone: Option<PhoneNumber>,
    pub postal_address: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub jurisdictions: JurisdictionSet,
    pub subscriber_type: Option<SubscriberType>,
}

impl ContactInput {
    pub fn new(email: EmailAddress) -> Self {
        ContactInput {
            email,
            name: None,
            phone: None,
            postal_address: None,
            attributes: BTreeMap::new(),
            jurisdictions: JurisdictionSet::EMPTY,
            subscriber_type: None,
        }
    }
}

/// What proves an event: the wording shown, and where it happened.
/// IP and user agent are personal data: kept apart, deleted on erasure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub wording: Option<i64>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub form_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Append {
    pub contact: ContactInput,
    pub event: NewEvent,
    pub evidence: Evidence,
    /// Who did it: `import:<file>`, `api-key:<prefix>`, `person`, `admin:<user>`.
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    Recorded {
        contact: ContactId,
        event: EventId,
        created: bool,
    },
    Refused(Refusal),
}

#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    pub id: i64,
    /// `None` once erased.
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub postal_address: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub jurisdictions: String,
    pub subscriber_type: String,
    pub created_at: String,
    pub erased_at: Option<String>,
}

/// The personal data an event refers to (deleted on erasure).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PersonalData {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub contact: ContactId,
    pub event: Event,
    pub partition: i64,
    pub seq: i64,
    pub actor: String,
    pub recorded_at: Timestamp,
    pub wording: Option<WordingId>,
    pub form_url: Option<String>,
    pub order_ref: Option<String>,
    /// `None` when the event has none, or it was erased.
    pub personal: Option<PersonalData>,
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub key: TopicKey,
    pub name: String,
    pub description: String,
    pub group: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: i64,
    /// Shown once; only its SHA-256 is stored.
    pub key: String,
    pub prefix: String,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: i64,
    pub prefix: String,
    pub role: Role,
    pub default_topic: Option<String>,
    /// The service type of its mail when a message does not say.
    pub default_service: Option<String>,
    /// The person who holds the key (a DPO may not approve their own sends).
    pub owner: Option<String>,
    pub created_at: Timestamp,
}

/// What a new API key may do and who holds it.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub role: Role,
    /// Must be a topic in the store.
    pub default_topic: Option<TopicKey>,
    /// A service type declared in the configuration (checked by the caller).
    pub default_service: Option<String>,
    pub owner: Option<String>,
}

/// What one message's hand-off leaves behind, committed together.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// A copy upstream accepted is remembered by its receipt
    /// ([`NewReceipt::relayed_at`]).
    pub receipts: Vec<NewReceipt>,
    /// Service mail: who sent it, to how many recipients (the bulk brake counts it).
    pub service: Option<(String, i64)>,
}

/// A service send held by the bulk brake, and its approval if given.
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub id: i64,
    /// `api-key:<prefix>` or `trusted-network:<cidr>`.
    pub actor: String,
    pub owner: Option<String>,
    /// `service:<type>`.
    pub class: String,
    /// Recipients of the held message.
    pub recipients: i64,
    /// Recipients already sent in the window when it was held.
    pub window_count: i64,
    pub requested_at: Timestamp,
    pub approved_by: Option<String>,
    pub approver_owner: Option<String>,
    pub approved_at: Option<Timestamp>,
}

/// A service send the brake stops.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub actor: String,
    pub owner: Option<String>,
    pub class: String,
    pub recipients: i64,
    pub window_count: i64,
    pub at: Timestamp,
}

/// One recipient of one message: the decision and its evidence.
#[derive(Debug, Clone, Serialize)]
pub struct NewReceipt {
    pub message_id: String,
    pub contact: Option<i64>,
    pub recipient: String,
    pub subject: Option<String>,
    pub content_hash: Option<String>,
    pub template_version: Option<String>,
    /// A topic key, or `service:<type>`.
    pub class: String,
    pub channel: String,
    pub allowed: bool,
    pub rule: String,
    pub reason: Option<String>,
    pub event: Option<i64>,
    /// The time of the final guard check, in microseconds.
    pub checked_at: i64,
    pub outcome: Option<String>,
    /// When upstream accepted this copy, in microseconds; `None` when it
    /// did not (refused, withheld, not relayed). The gateway's relay memory:
    /// a tool's retry of the same message does not send this copy again
    /// (forgotten after `[retention] relay_records`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub id: i64,
    #[serde(flatten)]
    pub receipt: NewReceipt,
}
