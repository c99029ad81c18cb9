//! The staff side of the store: admin users (argon2id password hashes),
//! the staff audit trail (one append-only hash chain, checked by
//! [`Store::verify`]), idempotency keys for the API, and the paged reads
//! the admin API lists with.

use serde::Serialize;
use veto_core::{ContactId, Role, Timestamp, Topic, TopicKey, Wording};

use crate::{Contact, Receipt, Result, Store, StoreError, postgres, sqlite};

/// A member of staff who signs in with a name and password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaffUser {
    pub id: i64,
    pub name: String,
    #[serde(serialize_with = "role_name")]
    pub role: Role,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

fn role_name<S: serde::Serializer>(role: &Role, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(role.as_str())
}

/// What may change about a user; `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// The shortest password veto accepts for a staff user.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// One staff action about to be recorded.
#[derive(Debug, Clone)]
pub struct NewStaffAction {
    /// `api-key:<prefix>`, `user:<name>` or `cli`.
    pub actor: String,
    /// A dotted verb: `keys.create`, `topics.update`, `contacts.erase`, …
    pub action: String,
    /// What it was done to: `key:7`, `topic:news`, `contact:42`.
    pub target: Option<String>,
    /// A short JSON object; never secrets (keys, passwords).
    pub detail: serde_json::Value,
}

impl NewStaffAction {
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        NewStaffAction {
            actor: actor.into(),
            action: action.into(),
            target: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A recorded staff action, with its place in the chain.
#[derive(Debug, Clone, Serialize)]
pub struct StaffAction {
    pub seq: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    pub at: Timestamp,
    /// This entry's SHA-256, hex.
    pub hash: String,
}

/// What an `Idempotency-Key` already stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// First use: run the request, then [`Store::complete_idempotency`]
    /// (or [`Store::release_idempotency`] when it failed).
    New,
    /// The same request ran before: send its answer again.
    Replay { status: u16, body: String },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    pub id: i64,
    pub prefix: String,
    #[serde(serialize_with = "role_name")]
    pub role: Role,
    pub default_topic: Option<String>,
    pub default_service: Option<String>,
    pub owner: Option<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A standing "no" on a contact: a withdrawal, opt-out at collection,
/// objection, complaint, hard bounce or erasure, as the consent state holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SuppressionEntry {
    /// The ledger event behind it.
    pub event: i64,
    pub contact: i64,
    /// `None` once erased.
    pub email: Option<String>,
    /// withdrawn, refused, objection, complaint, hard_bounce, erased.
    pub kind: String,
    /// A topic key, or `None` for all marketing.
    pub topic: Option<String>,
    /// `None`: every channel.
    pub channel: Option<String>,
    pub source: String,
    pub at: Timestamp,
}

impl SuppressionEntry {
    /// Staff may take out only a hard bounce (a mistaken one, by a DPO):
    /// what the person said, and erasures, stay.
    pub fn removable(&self) -> bool {
        self.kind == "hard_bounce"
    }
}

/// Which receipts to list.
#[derive(Debug, Clone)]
pub enum ReceiptFilter {
    Message(String),
    Contact(ContactId),
}

/// Checks a new password against the minimum, then hashes it with
/// argon2id (a fresh random salt, the crate's default cost).
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::PasswordHasher;
    use rand::RngCore;
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(StoreError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| StoreError::Invalid(format!("cannot make a salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Invalid(format!("cannot hash the password: {e}")))
}

/// Does `password` match the PHC string `hash`? A hash that does not parse
/// matches nothing.
pub(crate) fn password_matches(hash: &str, password: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::password_hash::PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Argon2 takes tens of milliseconds of CPU: off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Invalid(format!("password hashing failed: {e}")))
}

fn check_user_name(name: &str) -> Result<String> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(StoreError::Invalid(format!(
            "user name {name:?} must be 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

impl Store {
    // ---- users ----

    /// Adds a staff user with an argon2id hash of `password`.
    pub async fn add_user(&self, name: &str, role: Role, password: &str) -> Result<StaffUser> {
        let name = check_user_name(name)?;
        let password = password.to_owned();
        let hash = blocking(move || hash_password(&password)).await??;
        dispatch!(self, add_user(&name, role, &hash))
    }

    pub async fn users(&self, after: Option<i64>, limit: i64) -> Result<Vec<StaffUser>> {
        dispatch!(self, users(after, limit))
    }

    pub async fn user(&self, id: i64) -> Result<Option<StaffUser>> {
        dispatch!(self, user(id))
    }

    /// Changes a user's role, disabled flag or password.
    pub async fn update_user(&self, id: i64, update: UserUpdate) -> Result<Option<StaffUser>> {
        let hash = match update.password.clone() {
            Some(p) => Some(blocking(move || hash_password(&p)).await??),
            None => None,
        };
        dispatch!(self, update_user(id, update.role, update.disabled, hash))
    }

    /// The user, when `password` is theirs and they are not disabled. An
    /// unknown name costs the same hashing time as a wrong password, so
    /// that timing does not tell which names exist.
    pub async fn verify_user_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<StaffUser>> {
        let found = dispatch!(self, user_with_hash(name.trim()))?;
        let password = password.to_owned();
        let (user, hash) = match found {
            Some((u, h)) => (Some(u), h),
            // A hash of a random password: verifying against it takes as long.
            None => (None, dummy_hash().to_owned()),
        };
        let matches = blocking(move || password_matches(&hash, &password)).await?;
        Ok(user.filter(|u| matches && !u.disabled))
    }

    // ---- the staff audit trail ----

    /// Appends one staff action to the audit trail's hash chain.
    pub async fn record_staff_action(&self, action: NewStaffAction) -> Result<StaffAction> {
        dispatch!(self, record_staff_action(action))
    }

    /// Staff actions after `after` (a seq), oldest first.
    pub async fn staff_actions(&self, after: Option<i64>, limit: i64) -> Result<Vec<StaffAction>> {
        dispatch!(self, staff_actions(after, limit))
    }

    // ---- idempotency keys ----

    /// Claims `key` for this caller and request (`request_hash`: a hash of
    /// method, path and body), or says what it already stands for.
    pub async fn claim_idempotency(
        &self,
        caller: &str,
        key: &str,
        request_hash: &[u8],
    ) -> Result<IdempotencyClaim> {
        dispatch!(self, claim_idempotency(caller, key, request_hash))
    }

    /// Stores the answer to replay for `key`.
    pub async fn complete_idempotency(
        &self,
        caller: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        dispatch!(self, complete_idempotency(caller, key, status, body))
    }

    /// Forgets a claim whose request failed, so that it can be retried.
    pub async fn release_idempotency(&self, caller: &str, key: &str) -> Result<()> {
        dispatch!(self, release_idempotency(caller, key))
    }

    // ---- keys, topics, wordings ----

    pub async fn api_keys(&self, after: Option<i64>, limit: i64) -> Result<Vec<ApiKeyInfo>> {
        dispatch!(self, api_keys(after, limit))
    }

    pub async fn api_key_info(&self, id: i64) -> Result<Option<ApiKeyInfo>> {
        dispatch!(self, api_key_info(id))
    }

    /// Revokes a key at once; revoking twice keeps the first time.
    pub async fn revoke_api_key(&self, id: i64) -> Result<Option<ApiKeyInfo>> {
        dispatch!(self, revoke_api_key(id))
    }

    /// Changes the description people read on their preference page.
    pub async fn update_topic_description(
        &self,
        key: &TopicKey,
        description: &str,
    ) -> Result<Option<Topic>> {
        dispatch!(self, update_topic_description(key, description))
    }

    pub async fn wordings(&self, after: Option<i64>, limit: i64) -> Result<Vec<Wording>> {
        dispatch!(self, wordings(after, limit))
    }

    // ---- contacts, suppressions, receipts ----

    /// Contacts whose address contains `q` (case-insensitive; all when
    /// `None`), by id.
    pub async fn search_contacts(
        &self,
        q: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Contact>> {
        dispatch!(self, search_contacts(q, after, limit))
    }

    /// Every standing "no", by the event behind it.
    pub async fn suppressions(
        &self,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SuppressionEntry>> {
        dispatch!(self, suppressions(after, limit))
    }

    /// The standing "no" that event `event` holds, if it still does.
    pub async fn suppression(&self, event: i64) -> Result<Option<SuppressionEntry>> {
        dispatch!(self, suppression(event))
    }

    pub async fn receipts(
        &self,
        filter: &ReceiptFilter,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Receipt>> {
        dispatch!(self, receipts_page(filter, after, limit))
    }
}

/// An argon2id hash of a random password, made once: what an unknown user
/// name is checked against.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut pw = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut pw);
        let pw: String = pw.iter().map(|b| format!("{b:02x}")).collect();
        hash_password(&pw).unwrap_or_default()
    })
}
