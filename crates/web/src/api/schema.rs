//! The shapes the API takes and gives, as OpenAPI schemas. Responses are
//! built from these types (so the description is what is sent); request
//! bodies are read field by field (`fields.rs`, so that each problem names
//! its field) and described by the `*In` types here.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use veto_store::{
    ApiKeyInfo, Approval, Contact, Receipt, StaffAction, StaffUser, StoredEvent, SuppressionEntry,
    VerifyReport,
};

// ---- errors -------------------------------------------------------------------------

/// Every error: `{"error": {"code", "message", "field"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code, such as `forbidden`, `missing_field`, `only_the_person_can_regrant`.
    pub code: String,
    /// What was wrong, in words.
    pub message: String,
    /// The field, query parameter or header it is about, if any.
    pub field: Option<String>,
}

// ---- topics, service types, wordings ------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct TopicOut {
    pub id: i64,
    pub key: String,
    pub name: String,
    pub description: String,
    /// The similar-products group: a purchase in it gives a soft opt-in.
    pub group: Option<String>,
}

impl From<veto_core::Topic> for TopicOut {
    fn from(t: veto_core::Topic) -> Self {
        TopicOut {
            id: i64::from(t.id.0),
            key: t.key.to_string(),
            name: t.name,
            description: t.description,
            group: t.group,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TopicsPage {
    pub topics: Vec<TopicOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TopicResult {
    pub topic: TopicOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicIn {
    /// Lower-case letters, digits and hyphens, e.g. `product-news`.
    #[schema(min_length = 1, max_length = 40, pattern = "^[a-z0-9][a-z0-9-]*$")]
    pub key: String,
    /// What people see, e.g. "Product news".
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// One plain sentence about what it is and how often.
    #[schema(min_length = 1, max_length = 1000)]
    pub description: String,
    pub group: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicPatch {
    #[schema(min_length = 1, max_length = 1000)]
    pub description: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceTypeOut {
    pub key: String,
    /// What the preference centre tells people about these messages.
    pub description: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceTypes {
    pub service_types: Vec<ServiceTypeOut>,
}

#[derive(Serialize, ToSchema)]
pub struct WordingOut {
    pub id: i64,
    /// The exact consent text people were shown.
    pub text: String,
    /// SHA-256 of the text, hex.
    pub sha256: String,
}

impl From<veto_core::Wording> for WordingOut {
    fn from(w: veto_core::Wording) -> Self {
        WordingOut {
            id: w.id.0,
            text: w.text,
            sha256: w.hash,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WordingsPage {
    pub wordings: Vec<WordingOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WordingResult {
    pub wording: WordingOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WordingIn {
    /// The exact text; the same text again gives the same id.
    #[schema(min_length = 1, max_length = 10000)]
    pub text: String,
}

// ---- contacts, events, suppressions, receipts ---------------------------------------

#[derive(Serialize, ToSchema)]
pub struct ContactOut {
    pub id: i64,
    /// `null` once erased.
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub postal_address: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// `UK|EU`; empty: the configured defaults.
    pub jurisdictions: String,
    pub subscriber_type: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub erased_at: Option<String>,
}

impl From<Contact> for ContactOut {
    fn from(c: Contact) -> Self {
        ContactOut {
            id: c.id,
            email: c.email,
            name: c.name,
            phone: c.phone,
            postal_address: c.postal_address,
            attributes: c.attributes,
            jurisdictions: c.jurisdictions,
            subscriber_type: c.subscriber_type,
            created_at: c.created_at,
            erased_at: c.erased_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ContactsPage {
    pub contacts: Vec<ContactOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ContactResult {
    pub contact: ContactOut,
}

#[derive(Serialize, ToSchema)]
pub struct ContactUpserted {
    pub contact: ContactOut,
    /// True when this call created the contact.
    pub created: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactIn {
    #[schema(format = Email)]
    pub email: String,
    pub name: Option<String>,
    /// E.164, e.g. +447700900123.
    pub phone: Option<String>,
    pub postal_address: Option<String>,
    /// Values for templates.
    pub attributes: Option<BTreeMap<String, String>>,
    /// `UK`, `EU`, `US`, `CA`; several as `UK|EU`.
    pub jurisdiction: Option<String>,
    /// `individual` or `corporate`.
    pub subscriber_type: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventOut {
    pub id: i64,
    pub contact: i64,
    /// grant, withdraw, object, purchase, negotiation, inquiry, refused,
    /// hard_bounce, bounce_cleared, complaint, pause, frequency, erasure.
    pub kind: String,
    /// A topic key; `null`: all marketing.
    pub topic: Option<String>,
    /// `null`: every channel.
    pub channel: Option<String>,
    pub source: String,
    pub actor: String,
    #[schema(format = DateTime)]
    pub at: String,
    #[schema(format = DateTime)]
    pub recorded_at: String,
    pub wording: Option<i64>,
    pub form_url: Option<String>,
    pub order_ref: Option<String>,
    /// SHA-256 of the event in its hash chain, hex.
    pub hash: String,
}

impl EventOut {
    pub fn new(e: &StoredEvent, topics: &std::collections::HashMap<u16, String>) -> Self {
        EventOut {
            id: e.event.id.0,
            contact: e.contact.0,
            kind: e.event.kind.name().to_owned(),
            topic: match e.event.scope {
                veto_core::Scope::All => None,
                veto_core::Scope::Topic(t) => Some(
                    topics
                        .get(&t.0)
                        .cloned()
                        .unwrap_or_else(|| format!("#{}", t.0)),
                ),
            },
            channel: e.event.channel.map(|c| c.as_str().to_owned()),
            source: e.event.source.as_str().to_owned(),
            actor: e.actor.clone(),
            at: e.event.at.to_string(),
            recorded_at: e.recorded_at.to_string(),
            wording: e.wording.map(|w| w.0),
            form_url: e.form_url.clone(),
            order_ref: e.order_ref.clone(),
            hash: e.hash.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    pub events: Vec<EventOut>,
    pub next_cursor: Option<String>,
}

/// What `POST /consents`, `/purchases` and `/events` recorded.
#[derive(Serialize, ToSchema)]
pub struct EventRecorded {
    pub event_id: i64,
    pub contact_id: i64,
    /// True when the contact was created by this event.
    pub created: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKindIn {
    Grant,
    Withdraw,
    Object,
    Refused,
    HardBounce,
    Complaint,
    Pause,
    Frequency,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    #[schema(format = Email)]
    pub email: String,
    pub kind: EventKindIn,
    /// A topic key; absent: all marketing. For grant, withdraw, refused and pause.
    pub topic: Option<String>,
    /// email (default), sms, phone or post.
    pub channel: Option<String>,
    /// The wording id the person was shown: required for a grant.
    #[schema(minimum = 1)]
    pub wording: Option<i64>,
    /// When it happened (RFC 3339), default now; never in the future.
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// For a pause: until when.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// For a frequency limit: at most this many…
    pub max: Option<i64>,
    /// …a `week` or `month`; both absent lifts the limit.
    pub per: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub form_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SuppressionOut {
    /// The ledger event behind it; `DELETE /suppressions/{id}` takes this id.
    pub id: i64,
    pub contact: i64,
    pub email: Option<String>,
    /// withdrawn, refused, objection, complaint, hard_bounce, erased.
    pub kind: String,
    pub topic: Option<String>,
    pub channel: Option<String>,
    pub source: String,
    #[schema(format = DateTime)]
    pub at: String,
    /// Only a hard bounce can be taken out, and only by a DPO.
    pub removable: bool,
}

impl From<SuppressionEntry> for SuppressionOut {
    fn from(s: SuppressionEntry) -> Self {
        SuppressionOut {
            removable: s.removable(),
            id: s.event,
            contact: s.contact,
            email: s.email,
            kind: s.kind,
            topic: s.topic,
            channel: s.channel,
            source: s.source,
            at: s.at.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SuppressionsPage {
    pub suppressions: Vec<SuppressionOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionKindIn {
    /// Withdraws consent (a topic, or all marketing).
    Withdraw,
    /// An objection to all marketing on every channel (GDPR Art 21).
    Object,
    HardBounce,
    Complaint,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressionIn {
    #[schema(format = Email)]
    pub email: String,
    pub kind: SuppressionKindIn,
    /// For a withdrawal: a topic key; absent: all marketing.
    pub topic: Option<String>,
    /// email (default), sms, phone or post; not for an objection.
    pub channel: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BounceCleared {
    /// The bounce_cleared event appended to the ledger.
    pub event_id: i64,
    pub contact_id: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ReceiptOut {
    pub id: i64,
    pub message_id: String,
    pub contact: Option<i64>,
    /// `(erased)` once the person was erased.
    pub recipient: String,
    pub subject: Option<String>,
    pub content_hash: Option<String>,
    pub template_version: Option<String>,
    /// A topic key, or `service:<type>`.
    pub class: String,
    pub channel: String,
    /// Whether the guard admitted the message to this recipient.
    pub allowed: bool,
    /// The rule that decided (e.g. `PECR-22-2`).
    pub rule: String,
    pub reason: Option<String>,
    /// The ledger event behind the decision.
    pub event: Option<i64>,
    /// The time of the final guard check.
    #[schema(format = DateTime)]
    pub checked_at: String,
    /// What the MTA said.
    pub outcome: Option<String>,
}

impl From<Receipt> for ReceiptOut {
    fn from(r: Receipt) -> Self {
        let x = r.receipt;
        ReceiptOut {
            id: r.id,
            checked_at: veto_core::Timestamp::from_microsecond(x.checked_at)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            message_id: x.message_id,
            contact: x.contact,
            recipient: x.recipient,
            subject: x.subject,
            content_hash: x.content_hash,
            template_version: x.template_version,
            class: x.class,
            channel: x.channel,
            allowed: x.allowed,
            rule: x.rule,
            reason: x.reason,
            event: x.event,
            outcome: x.outcome,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReceiptsPage {
    pub receipts: Vec<ReceiptOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Timeline {
    pub contact: ContactOut,
    /// Consent events, oldest first.
    pub events: Vec<EventOut>,
    /// A receipt for every message veto decided about, oldest first.
    pub receipts: Vec<ReceiptOut>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureIn {
    #[schema(format = Email)]
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct ErasureOut {
    /// True when this call erased the person; false when they already were.
    pub erased: bool,
    /// The erasure event in the ledger.
    pub event_id: Option<i64>,
    /// When the address was erased (an earlier erasure, when `erased` is false).
    #[schema(format = DateTime)]
    pub erased_at: Option<String>,
}

// ---- keys, users, audit ------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct KeyOut {
    pub id: i64,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub role: String,
    pub default_topic: Option<String>,
    pub default_service: Option<String>,
    pub owner: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

impl From<ApiKeyInfo> for KeyOut {
    fn from(k: ApiKeyInfo) -> Self {
        KeyOut {
            id: k.id,
            prefix: k.prefix,
            role: k.role.as_str().to_owned(),
            default_topic: k.default_topic,
            default_service: k.default_service,
            owner: k.owner,
            created_at: k.created_at.to_string(),
            revoked_at: k.revoked_at.map(|t| t.to_string()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct KeysPage {
    pub keys: Vec<KeyOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyCreated {
    /// The key itself: shown this once, only its hash is kept.
    pub key: String,
    pub api_key: KeyOut,
}

#[derive(Serialize, ToSchema)]
pub struct KeyResult {
    pub api_key: KeyOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RoleIn {
    Viewer,
    Marketer,
    ServiceSender,
    Dpo,
    Admin,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyIn {
    pub role: RoleIn,
    /// A topic key: this key's mail at the gateway is this topic by default.
    pub default_topic: Option<String>,
    /// A declared service type: this key's mail is that by default.
    pub service_type: Option<String>,
    /// Who holds the key (a DPO may not approve their own sends).
    pub owner: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<StaffUser> for UserOut {
    fn from(u: StaffUser) -> Self {
        UserOut {
            id: u.id,
            name: u.name,
            role: u.role.as_str().to_owned(),
            disabled: u.disabled,
            created_at: u.created_at.to_string(),
            updated_at: u.updated_at.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UsersPage {
    pub users: Vec<UserOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserResult {
    pub user: UserOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    /// Letters, digits, `.`, `_`, `-`, `@`; at most 64.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    pub role: RoleIn,
    /// At least 12 characters; kept only as an argon2id hash.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub role: Option<RoleIn>,
    /// A disabled user cannot sign in.
    pub disabled: Option<bool>,
    #[schema(min_length = 12, max_length = 1024)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct StaffActionOut {
    pub seq: i64,
    /// `api-key:<prefix>`, `user:<name>` or `cli`.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
    #[schema(format = DateTime)]
    pub at: String,
    /// SHA-256 of this entry in the chain, hex.
    pub hash: String,
}

impl From<StaffAction> for StaffActionOut {
    fn from(a: StaffAction) -> Self {
        StaffActionOut {
            seq: a.seq,
            actor: a.actor,
            action: a.action,
            target: a.target,
            detail: a.detail,
            at: a.at.to_string(),
            hash: a.hash,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LedgerProblem {
    pub partition: i64,
    pub event: Option<i64>,
    pub seq: Option<i64>,
    pub problem: String,
}

#[derive(Serialize, ToSchema)]
pub struct StaffTrailProblem {
    pub seq: Option<i64>,
    pub problem: String,
}

#[derive(Serialize, ToSchema)]
pub struct VerifyOut {
    /// True when every chain verified.
    pub ok: bool,
    pub partitions: i64,
    pub events: i64,
    pub personal_rows_checked: i64,
    /// The first problem in each ledger chain that has one.
    pub problems: Vec<LedgerProblem>,
    pub staff_actions: i64,
    pub staff_problem: Option<StaffTrailProblem>,
}

impl From<VerifyReport> for VerifyOut {
    fn from(r: VerifyReport) -> Self {
        VerifyOut {
            ok: r.ok(),
            partitions: r.partitions,
            events: r.events,
            personal_rows_checked: r.personal_rows_checked,
            problems: r
                .problems
                .into_iter()
                .map(|p| LedgerProblem {
                    partition: p.partition,
                    event: p.event,
                    seq: p.seq,
                    problem: p.problem,
                })
                .collect(),
            staff_actions: r.staff_actions,
            staff_problem: r.staff_problem.map(|p| StaffTrailProblem {
                seq: p.seq,
                problem: p.problem,
            }),
        }
    }
}

// ---- consent capture, approvals, campaigns, messages (the earlier endpoints) --------

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentAction {
    Grant,
    Withdraw,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FormSource {
    Form,
    Api,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentIn {
    #[schema(format = Email)]
    pub email: String,
    /// A topic key; absent: all marketing.
    pub topic: Option<String>,
    pub channel: Option<String>,
    pub action: ConsentAction,
    /// The id of the exact consent text shown: required for a grant.
    #[schema(minimum = 1)]
    pub wording: Option<i64>,
    pub source: Option<FormSource>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub form_url: Option<String>,
    #[schema(format = DateTime)]
    pub at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseIn {
    #[schema(format = Email)]
    pub email: String,
    pub order_ref: Option<String>,
    pub product_group: Option<String>,
    /// Whether a simple, free opt-out was offered (PECR reg 22(3)(c)).
    pub opt_out_offered: bool,
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// `UK`, `UK|EU`, or a list of codes.
    #[schema(value_type = Option<Object>)]
    pub jurisdiction: Option<Value>,
    pub subscriber_type: Option<String>,
    pub channel: Option<String>,
    pub source: Option<FormSource>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub form_url: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupIn {
    #[schema(format = Email)]
    pub email: String,
    pub topic: Option<String>,
    /// The id of the exact consent text the form showed.
    #[schema(minimum = 1)]
    pub wording: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub form_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignupStatus {
    /// confirmation_sent, confirmation_already_sent or already_subscribed.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalOut {
    pub id: i64,
    pub actor: String,
    pub owner: Option<String>,
    pub class: String,
    pub recipients: i64,
    pub window_count: i64,
    #[schema(format = DateTime)]
    pub requested_at: String,
    pub approved_by: Option<String>,
    pub approver_owner: Option<String>,
    #[schema(format = DateTime)]
    pub approved_at: Option<String>,
}

impl From<Approval> for ApprovalOut {
    fn from(a: Approval) -> Self {
        ApprovalOut {
            id: a.id,
            actor: a.actor,
            owner: a.owner,
            class: a.class,
            recipients: a.recipients,
            window_count: a.window_count,
            requested_at: a.requested_at.to_string(),
            approved_by: a.approved_by,
            approver_owner: a.approver_owner,
            approved_at: a.approved_at.map(|t| t.to_string()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalsPage {
    pub approvals: Vec<ApprovalOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalResult {
    pub approval: ApprovalOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignIn {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The topic the campaign markets.
    #[schema(min_length = 1, max_length = 40, pattern = "^[a-z0-9][a-z0-9-]*$")]
    pub topic: String,
    /// The sender's address.
    #[schema(format = Email)]
    pub from: String,
    pub from_name: Option<String>,
    /// Templates (minijinja).
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    #[schema(format = DateTime)]
    pub scheduled_at: Option<String>,
    /// Messages per second in all.
    pub rate: Option<f64>,
    /// Messages per second to any one domain.
    pub domain_rate: Option<f64>,
    #[schema(minimum = 1, maximum = 256)]
    pub concurrency: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignResult {
    /// The campaign (with progress, feedback and rates when shown alone).
    #[schema(value_type = Object)]
    pub campaign: Value,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignsPage {
    #[schema(value_type = Vec<Object>)]
    pub campaigns: Vec<Value>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewIn {
    /// The address to render the campaign for.
    #[schema(format = Email)]
    pub contact: String,
}

#[derive(Serialize, ToSchema)]
pub struct PreviewResult {
    /// The guard's decision for that person and the rendered message.
    #[schema(value_type = Object)]
    pub preview: Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestIn {
    /// Where the test copies go (each still checked by the guard).
    #[schema(min_items = 1)]
    pub to: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TestResults {
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageIn {
    /// A service type declared in `[service.types]`.
    #[serde(rename = "type")]
    pub kind: String,
    pub to: Vec<String>,
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// A whole RFC 5322 message instead of templates.
    pub raw: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageOutcome {
    /// `sent` (200) or `held` (202, awaiting a DPO's approval).
    pub outcome: String,
    pub message: Option<String>,
    pub approval: Option<ApprovalOut>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub results: Option<Vec<Value>>,
}
