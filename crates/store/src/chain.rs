//! The hash chain over ledger events, and its verification.
//!
//! The ledger is split into [`PARTITIONS`] chains by contact id, so that
//! writers on several nodes do not all wait on one head. Each event's hash
//! covers the previous hash in its partition and every column of the event
//! row (personal data by its own salted hash only). Each partition's head
//! (last seq and hash) is stored, so deleting the newest events shows too.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// How many chains the ledger is split into. Fixed: changing it would move
/// contacts between chains.
pub const PARTITIONS: i64 = 16;

pub(crate) fn partition_of(contact_id: i64) -> i64 {
    contact_id.rem_euclid(PARTITIONS)
}

/// An event row as stored, minus its own hash.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventRecord {
    pub id: i64,
    pub partition: i64,
    pub seq: i64,
    pub contact_id: i64,
    pub kind: String,
    pub scope_topic: Option<i64>,
    pub channel: Option<String>,
    pub source: String,
    pub actor: String,
    pub at: i64,
    pub recorded_at: i64,
    pub wording_id: Option<i64>,
    pub product_group: Option<String>,
    pub order_ref: Option<String>,
    pub opt_out_offered: Option<i64>,
    pub form_url: Option<String>,
    pub until_at: Option<i64>,
    pub freq_max: Option<i64>,
    pub freq_per: Option<String>,
    pub pd_id: Option<i64>,
    pub pd_hash: Option<Vec<u8>>,
    pub prev_hash: Vec<u8>,
}

/// Length-prefixed, tagged fields: no two different rows encode alike.
struct Canon(Sha256);

impl Canon {
    fn field(&mut self, tag: u8, bytes: Option<&[u8]>) {
        self.0.update([tag]);
        match bytes {
            None => self.0.update([0]),
            Some(b) => {
                self.0.update([1]);
                self.0.update((b.len() as u64).to_be_bytes());
                self.0.update(b);
            }
        }
    }
    fn int(&mut self, tag: u8, v: Option<i64>) {
        self.field(tag, v.map(|v| v.to_be_bytes()).as_ref().map(|b| &b[..]));
    }
    fn text(&mut self, tag: u8, v: Option<&str>) {
        self.field(tag, v.map(str::as_bytes));
    }
}

impl EventRecord {
    pub fn hash(&self) -> [u8; 32] {
        let mut c = Canon(Sha256::new());
        c.0.update(b"veto-ledger-v1");
        c.field(1, Some(&self.prev_hash));
        c.int(2, Some(self.id));
        c.int(3, Some(self.partition));
        c.int(4, Some(self.seq));
        c.int(5, Some(self.contact_id));
        c.text(6, Some(&self.kind));
        c.int(7, self.scope_topic);
        c.text(8, self.channel.as_deref());
        c.text(9, Some(&self.source));
        c.text(10, Some(&self.actor));
        c.int(11, Some(self.at));
        c.int(12, Some(self.recorded_at));
        c.int(13, self.wording_id);
        c.text(14, self.product_group.as_deref());
        c.text(15, self.order_ref.as_deref());
        c.int(16, self.opt_out_offered);
        c.text(17, self.form_url.as_deref());
        c.int(18, self.until_at);
        c.int(19, self.freq_max);
        c.text(20, self.freq_per.as_deref());
        c.int(21, self.pd_id);
        c.field(22, self.pd_hash.as_deref());
        c.0.finalize().into()
    }
}

/// A staff audit trail row as stored, minus its own hash. The trail is one
/// chain (staff actions are few); its hash uses the same canonical encoding
/// as the ledger's, under its own domain tag.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditRecord {
    pub seq: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: String,
    pub at: i64,
    pub prev_hash: Vec<u8>,
}

impl AuditRecord {
    pub fn hash(&self) -> [u8; 32] {
        let mut c = Canon(Sha256::new());
        c.0.update(b"veto-staff-audit-v1");
        c.field(1, Some(&self.prev_hash));
        c.int(2, Some(self.seq));
        c.text(3, Some(&self.actor));
        c.text(4, Some(&self.action));
        c.text(5, self.target.as_deref());
        c.text(6, Some(&self.detail));
        c.int(7, Some(self.at));
        c.0.finalize().into()
    }
}

/// The hash of a personal-data row: SHA-256 over a random salt and the body.
/// Erasure deletes salt and body together, so the hash left in the ledger
/// cannot be tested against guessed addresses.
pub(crate) fn personal_hash(salt: &[u8], body: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"veto-personal-v1");
    h.update(salt);
    h.update(body.as_bytes());
    h.finalize().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `veto audit verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub partitions: i64,
    pub events: i64,
    pub personal_rows_checked: i64,
    /// The first problem in each partition that has one.
    pub problems: Vec<VerifyProblem>,
    /// Entries of the staff audit trail that verified.
    pub staff_actions: i64,
    /// The first problem in the staff audit trail, if any.
    pub staff_problem: Option<StaffAuditProblem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.staff_problem.is_none()
    }
}

/// Where the staff audit trail stops verifying.
#[derive(Debug, Clone, Serialize)]
pub struct StaffAuditProblem {
    /// The first entry that does not verify (`None`: the problem is at the head).
    pub seq: Option<i64>,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyProblem {
    pub partition: i64,
    /// The first event that does not verify (`None`: the problem is at the head).
    pub event: Option<i64>,
    pub seq: Option<i64>,
    pub problem: String,
}
