//! veto-store: the ledger, consent state, suppressions and receipts, on
//! SQLite (default, embedded) or PostgreSQL (several veto nodes).
//!
//! The query code is written once, in `queries.rs`, and compiled for each
//! backend by [`backend!`]; `Store` is the one place that dispatches.

mod chain;
mod direct;
pub mod export;
pub mod fence;
pub mod guard;
mod inbound;
pub mod metrics;
mod model;
pub mod receipt_log;

pub use chain::{PARTITIONS, StaffAuditProblem, VerifyProblem, VerifyReport};
pub use fence::{HandoffFence, Handoffs};
pub use guard::{Admitted, Guard, GuardClass};
pub use inbound::*;
pub use model::*;
pub use receipt_log::ReceiptLog;

use std::path::Path;
use std::time::Duration;

use veto_core::{
    ConsentState, ContactId, EmailAddress, EventId, JurisdictionSet, Refusal, Role, Timestamp,
    Topic, TopicKey, Wording, WordingId,
};

/// The schema version this build writes. A store with a newer one is refused.
pub const SCHEMA_VERSION: i64 = 15;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store could not be reached or answered with an error")]
    Database(#[from] sqlx::Error),
    /// From the SQLite connections veto opens itself rather than through
    /// sqlx (see `direct.rs`); the guard's reads fail closed on it too.
    #[error("the store could not be reached or answered with an error: {0}")]
    Sqlite(String),
    #[error(
        "the store's schema is version {found}, but this veto understands up to {supported}; upgrade veto"
    )]
    NewerSchema { found: i64, supported: i64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("the data in the store is inconsistent: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

macro_rules! backend {
    ($name:ident, $db:ty, $pg:expr) => {
        pub(crate) mod $name {
            #![allow(clippy::too_many_arguments)]
            use super::*;
            pub(crate) type Db = $db;
            pub(crate) const IS_PG: bool = $pg;
            include!("queries.rs");
            include!("campaign_queries.rs");
            include!("staff_queries.rs");
            include!("tps_queries.rs");
            include!("retention_queries.rs");
            include!("webhook_queries.rs");
            include!("requests_queries.rs");
            include!("session_queries.rs");
            include!("overview_queries.rs");
        }
    };
}
backend!(sqlite, sqlx::Sqlite, false);
backend!(postgres, sqlx::Postgres, true);

/// Where veto keeps its data.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(sqlite::Backend),
    Postgres(postgres::Backend),
}

/// A recipient's contact (when veto knows the address) and consent state,
/// as the guard reads them.
pub type GuardState = (Option<ContactId>, ConsentState);

/// Calls the same function on whichever backend this store is.
macro_rules! dispatch {
    ($self:expr, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(b) => sqlite::$f(b $(, $arg)*).await,
            Store::Postgres(b) => postgres::$f(b $(, $arg)*).await,
        }
    };
}

mod campaign;
pub use campaign::*;
mod retention;
pub use retention::{
    EvidencePurged, Inspection, PurgeReport, Retention, inspect_sqlite, sqlite_single_file,
};
pub mod describe;
mod overview;
pub use overview::*;
mod session;
pub use session::*;
mod staff;
pub use staff::*;
mod tps;
pub use tps::*;
mod webhook;
pub use webhook::*;
mod requests;
pub use requests::*;

impl Store {
    /// Opens (creating if needed) the SQLite store at `path`: WAL, and every
    /// commit synced to disk before it returns (`synchronous = FULL`).
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Invalid(format!(
                    "cannot create the data directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            .pragma("cache_size", "-65536");
        // One writer connection: writes queue in the pool instead of
        // spinning on SQLite's busy lock; readers run beside it (WAL).
        // No ping before each use: a local file does not drop connections,
        // and each ping is another round trip to the connection's thread.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts.read_only(false))
            .await?;
        let mut backend = sqlite::Backend::new(write, read);
        Store::Sqlite(backend.clone()).migrate().await?;
        // The gateway's hot path: its own connections, opened once the
        // schema is there (see `direct.rs`).
        backend.direct = Some(std::sync::Arc::new(direct::Direct::open(path)?));
        Ok(Store::Sqlite(backend))
    }

    /// Connects to PostgreSQL. With `schema`, veto's tables live in that
    /// schema (created if missing), so several installations or test runs
    /// can share one database.
    pub async fn open_postgres(url: &str, schema: Option<&str>) -> Result<Store> {
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        let mut opts: PgConnectOptions = url.parse().map_err(|e| {
            StoreError::Invalid(format!("[store] url is not a PostgreSQL URL: {e}"))
        })?;
        if let Some(schema) = schema {
            if !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(StoreError::Invalid(format!(
                    "schema name {schema:?} may hold only a-z, 0-9 and _"
                )));
            }
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
            opts = opts.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        let store = Store::Postgres(postgres::Backend::new(pool.clone(), pool));
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the store a `[store] url` names: empty means SQLite at `sqlite_path`.
    pub async fn open(url: &str, sqlite_path: &Path) -> Result<Store> {
        if url.is_empty() {
            Store::open_sqlite(sqlite_path).await
        } else if ["postgres://", "postgresql://"].iter().any(|p| {
            url.get(..p.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(p))
        }) {
            Store::open_postgres(url, None).await
        } else {
            Err(StoreError::Invalid(
                "[store] url must be empty (SQLite in the data directory) or a postgres:// URL"
                    .into(),
            ))
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        dispatch!(self, close())
    }

    async fn migrate(&self) -> Result<()> {
        dispatch!(self, migrate())
    }

    /// Appends events in one transaction, contact by contact, in order.
    /// Each item is either recorded (its contact created or updated, its
    /// event chained and folded into the state) or refused with the reason;
    /// a refused item writes nothing. With `dry_run`, nothing is committed.
    ///
    /// Returns only once no hand-off to these contacts that the guard
    /// admitted before the commit is still in progress (see [`fence`]).
    pub async fn append(&self, items: Vec<Append>, dry_run: bool) -> Result<Vec<AppendOutcome>> {
        let out = dispatch!(self, append(items, dry_run))?;
        if !dry_run {
            self.fence().wait_clear(&recorded_contacts(&out)).await;
        }
        Ok(out)
    }

    /// On SQLite, a connection of its own for the receipt committer (see
    /// [`ReceiptLog`]); `None` on PostgreSQL.
    pub(crate) fn direct_writer(&self) -> Option<Result<direct::Conn>> {
        match self {
            Store::Sqlite(b) => b.direct.as_ref().map(|d| d.writer()),
            Store::Postgres(_) => None,
        }
    }

    /// The hand-offs in progress in this process (see [`fence`]).
    pub fn fence(&self) -> &std::sync::Arc<HandoffFence> {
        match self {
            Store::Sqlite(b) => &b.fence,
            Store::Postgres(b) => &b.fence,
        }
    }

    /// Opens a write transaction for several appends: they see each other,
    /// and commit or roll back together. Holds the SQLite write lock until
    /// it ends.
    pub async fn batch(&self) -> Result<Batch> {
        let tx = match self {
            Store::Sqlite(b) => BatchTx::Sqlite(sqlite::batch(b).await?),
            Store::Postgres(b) => BatchTx::Postgres(postgres::batch(b).await?),
        };
        Ok(Batch {
            tx,
            fence: std::sync::Arc::clone(self.fence()),
            recorded: Vec::new(),
        })
    }

    /// The consent state of an address: its contact's facts, the
    /// suppression list, and recent sends for frequency limits.
    /// `now` bounds the recent sends counted for frequency limits.
    pub async fn load_state(
        &self,
        email: &EmailAddress,
        now: Timestamp,
    ) -> Result<(Option<ContactId>, ConsentState)> {
        let started = std::time::Instant::now();
        let state = dispatch!(self, load_state(email, now));
        metrics::observe(metrics::Op::GuardRead, started.elapsed());
        state
    }

    /// [`Store::load_state`] for several addresses at once, in order.
    pub async fn load_states(
        &self,
        emails: &[EmailAddress],
        now: Timestamp,
    ) -> Result<Vec<(Option<ContactId>, ConsentState)>> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let states = dispatch!(self, load_states(emails, now));
        metrics::observe(metrics::Op::GuardRead, started.elapsed());
        states
    }

    /// Creates or updates a contact without a consent event. An address on
    /// the erasure suppression list is refused: only the person can bring it back.
    pub async fn upsert_contact(
        &self,
        contact: ContactInput,
    ) -> Result<Result<ContactId, Refusal>> {
        dispatch!(self, upsert_contact(contact))
    }

    /// Rebuilds a contact's state from its ledger events alone.
    pub async fn rebuild_state(&self, contact: ContactId) -> Result<ConsentState> {
        dispatch!(self, rebuild_state(contact))
    }

    pub async fn find_contact(&self, email: &EmailAddress) -> Result<Option<Contact>> {
        dispatch!(self, find_contact(email))
    }

    /// A contact by id (an erased one has no address left).
    pub async fn contact(&self, id: ContactId) -> Result<Option<Contact>> {
        dispatch!(self, contact(id))
    }

    /// The contact's ledger events with their evidence, oldest first.
    pub async fn events_of(&self, contact: ContactId) -> Result<Vec<StoredEvent>> {
        dispatch!(self, events_of(contact))
    }

    pub async fn event(&self, id: EventId) -> Result<Option<StoredEvent>> {
        dispatch!(self, event(id))
    }

    /// Erases a person: their personal data goes, a keyed-hash suppression
    /// entry and the (non-personal) ledger stay. Returns the erasure event.
    pub async fn erase(&self, email: &EmailAddress, actor: &str, at: Timestamp) -> Result<EventId> {
        let contact = if self.fence().is_idle() {
            None
        } else {
            self.find_contact(email).await?.map(|c| c.id)
        };
        let event = dispatch!(self, erase(email, actor, at))?;
        if let Some(c) = contact {
            self.fence().wait_clear(&[c]).await;
        }
        Ok(event)
    }

    pub async fn is_suppressed(&self, email: &EmailAddress) -> Result<Option<Timestamp>> {
        dispatch!(self, is_suppressed(email))
    }

    pub async fn add_topic(&self, topic: NewTopic) -> Result<Topic> {
        dispatch!(self, add_topic(topic))
    }

    pub async fn topics(&self) -> Result<Vec<Topic>> {
        dispatch!(self, topics())
    }

    pub async fn topic(&self, key: &TopicKey) -> Result<Option<Topic>> {
        dispatch!(self, topic(key))
    }

    /// Stores a wording; the same text again gives the same id.
    pub async fn add_wording(&self, text: &str) -> Result<Wording> {
        dispatch!(self, add_wording(text))
    }

    pub async fn wording(&self, id: WordingId) -> Result<Option<Wording>> {
        dispatch!(self, wording(id))
    }

    pub async fn wording_ids(&self) -> Result<Vec<i64>> {
        dispatch!(self, wording_ids())
    }

    /// Creates an API key; the plain key is returned once and only its hash kept.
    pub async fn create_api_key(
        &self,
        role: Role,
        default_topic: Option<&TopicKey>,
    ) -> Result<NewApiKey> {
        self.create_api_key_with(KeySpec {
            role,
            default_topic: default_topic.cloned(),
            default_service: None,
            owner: None,
        })
        .await
    }

    /// A new key with a holder and defaults; the plain key is returned once.
    pub async fn create_api_key_with(&self, spec: KeySpec) -> Result<NewApiKey> {
        dispatch!(self, create_api_key(spec))
    }

    pub async fn api_key(&self, plain: &str) -> Result<Option<ApiKey>> {
        dispatch!(self, api_key(plain))
    }

    /// The token keys, newest first (created on first use).
    pub async fn token_keys(&self) -> Result<Vec<(u8, [u8; 32])>> {
        dispatch!(self, token_keys())
    }

    /// Adds a new token key that signs from now on; old ones still verify.
    pub async fn rotate_token_key(&self) -> Result<u8> {
        dispatch!(self, rotate_token_key())
    }

    pub async fn record_receipts(&self, receipts: Vec<NewReceipt>) -> Result<()> {
        self.record_deliveries(vec![Delivery {
            receipts,
            ..Delivery::default()
        }])
        .await
    }

    /// Receipts, relayed copies and service volume of several messages, in
    /// one transaction (see [`ReceiptLog`] for committing them in groups).
    pub async fn record_deliveries(&self, deliveries: Vec<Delivery>) -> Result<()> {
        let started = std::time::Instant::now();
        let done = dispatch!(self, record_deliveries(deliveries));
        metrics::observe(metrics::Op::ReceiptCommit, started.elapsed());
        done
    }

    /// The recipients of `message_key` that upstream accepted since `since`,
    /// as their receipts say (once for each copy accepted).
    pub async fn relayed_recipients(
        &self,
        message_key: &str,
        since: Timestamp,
    ) -> Result<Vec<String>> {
        dispatch!(self, relayed_recipients(message_key, since))
    }

    /// [`Store::relayed_recipients`] and [`Store::load_state`] of `email`,
    /// read at one moment (on SQLite, in one read transaction): the
    /// gateway's end of DATA needs both for the first copy of a message.
    pub async fn relayed_and_state(
        &self,
        message_key: &str,
        since: Timestamp,
        email: &EmailAddress,
        now: Timestamp,
    ) -> Result<(Vec<String>, crate::GuardState)> {
        let started = std::time::Instant::now();
        let out = dispatch!(self, relayed_and_state(message_key, since, email, now));
        metrics::observe(metrics::Op::GuardRead, started.elapsed());
        out
    }

    /// Forgets relayed copies (the receipts stay) and service volume older
    /// than `before`.
    pub async fn prune_relayed(&self, before: Timestamp) -> Result<u64> {
        dispatch!(self, prune_relayed(before))
    }

    /// Recipients of service mail that `actor` sent since `since`.
    pub async fn service_volume(&self, actor: &str, since: Timestamp) -> Result<i64> {
        dispatch!(self, service_volume(actor, since))
    }

    /// Files (or refreshes) `actor`'s pending request for a DPO's approval.
    pub async fn hold_for_approval(&self, hold: HoldRequest) -> Result<Approval> {
        dispatch!(self, hold_for_approval(hold))
    }

    pub async fn approval(&self, id: i64) -> Result<Option<Approval>> {
        dispatch!(self, approval(id))
    }

    pub async fn approvals(&self, pending_only: bool) -> Result<Vec<Approval>> {
        dispatch!(self, approvals(pending_only))
    }

    /// When `actor`'s service sends were last approved.
    pub async fn latest_approval(&self, actor: &str) -> Result<Option<Timestamp>> {
        dispatch!(self, latest_approval(actor))
    }

    /// Records a DPO's approval of a held send. The caller checks that the
    /// approver may (a DPO, not the requester); approving twice keeps the first.
    pub async fn approve(
        &self,
        id: i64,
        by: &str,
        by_owner: &str,
        at: Timestamp,
    ) -> Result<Approval> {
        dispatch!(self, approve(id, by, by_owner, at))
    }

    /// Stores a double opt-in signup, unless a confirmation was mailed to
    /// the same address less than `quiet` ago: then nothing is stored. The
    /// check and the claim are one statement, so two nodes (or two
    /// requests) never both mail.
    pub async fn create_signup(
        &self,
        signup: NewSignup,
        now: Timestamp,
        quiet: Duration,
    ) -> Result<SignupRequested> {
        dispatch!(self, create_signup(signup, now, quiet))
    }

    pub async fn signup(&self, id: i64) -> Result<Option<Signup>> {
        dispatch!(self, signup(id))
    }

    /// Deletes a signup that is not confirmed (its mail could not be sent)
    /// and frees its address's mail slot.
    pub async fn cancel_signup(&self, id: i64) -> Result<()> {
        dispatch!(self, cancel_signup(id))
    }

    /// The person confirmed: records their grant (source double opt-in,
    /// the signup's wording, the confirmation's IP and user agent) and
    /// marks the signup confirmed, in one transaction. Confirming again
    /// records nothing more.
    pub async fn confirm_signup(
        &self,
        id: i64,
        ip: Option<String>,
        user_agent: Option<String>,
        at: Timestamp,
    ) -> Result<SignupConfirmed> {
        dispatch!(self, confirm_signup(id, ip, user_agent, at))
    }

    pub async fn receipts_for_message(&self, message_id: &str) -> Result<Vec<Receipt>> {
        dispatch!(self, receipts_for_message(message_id))
    }

    pub async fn receipts_for_contact(&self, contact: ContactId) -> Result<Vec<Receipt>> {
        dispatch!(self, receipts_for_contact(contact))
    }

    /// Recomputes every chain partition and compares it with its stored head.
    pub async fn verify(&self) -> Result<VerifyReport> {
        dispatch!(self, verify())
    }

    /// Records mail received at one of veto's own addresses, once (by its
    /// key), with the ledger event it means, in one transaction: a mailto
    /// withdrawal, a hard bounce, a complaint, or a soft bounce that becomes
    /// a hard bounce when it is the `limit.threshold`th within `limit.window`.
    pub async fn record_inbound(
        &self,
        report: NewInboundReport,
        limit: SoftBounceLimit,
    ) -> Result<InboundOutcome> {
        dispatch!(self, record_inbound(report, limit))
    }

    /// Records a provider's webhook event once per `(provider, event_id)`:
    /// each known recipient's hard bounce or complaint (soft bounces count
    /// towards `limit`, with the gateway's), in one transaction.
    pub async fn record_provider_event(
        &self,
        event: ProviderEvent,
        limit: SoftBounceLimit,
    ) -> Result<ProviderOutcome> {
        dispatch!(self, record_provider_event(event, limit))
    }

    /// The mail a contact sent or caused to veto's own addresses, oldest first.
    pub async fn inbound_reports_of(&self, contact: ContactId) -> Result<Vec<InboundReport>> {
        dispatch!(self, inbound_reports_of(contact))
    }

    pub async fn count_events(&self) -> Result<i64> {
        dispatch!(self, count_events())
    }

    pub async fn count_contacts(&self) -> Result<i64> {
        dispatch!(self, count_contacts())
    }
}

/// Appends that commit or roll back together (see [`Store::batch`]).
pub struct Batch {
    tx: BatchTx,
    fence: std::sync::Arc<HandoffFence>,
    /// Contacts with events in this batch, for the hand-off fence.
    recorded: Vec<i64>,
}

enum BatchTx {
    Sqlite(sqlite::BatchTx),
    Postgres(postgres::BatchTx),
}

impl Batch {
    pub async fn append(&mut self, items: Vec<Append>) -> Result<Vec<AppendOutcome>> {
        let out = match &mut self.tx {
            BatchTx::Sqlite(t) => t.append(items).await,
            BatchTx::Postgres(t) => t.append(items).await,
        }?;
        self.recorded.extend(recorded_contacts(&out));
        Ok(out)
    }

    /// Commits, then waits for hand-offs in progress to these contacts
    /// (see [`fence`]).
    pub async fn commit(self) -> Result<()> {
        match self.tx {
            BatchTx::Sqlite(t) => t.commit().await,
            BatchTx::Postgres(t) => t.commit().await,
        }?;
        self.fence.wait_clear(&self.recorded).await;
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        match self.tx {
            BatchTx::Sqlite(t) => t.rollback().await,
            BatchTx::Postgres(t) => t.rollback().await,
        }
    }
}

fn recorded_contacts(out: &[AppendOutcome]) -> Vec<i64> {
    out.iter()
        .filter_map(|o| match o {
            AppendOutcome::Recorded { contact, .. } => Some(contact.0),
            AppendOutcome::Refused(_) => None,
        })
        .collect()
}

/// Jurisdictions as stored: `UK|EU`, empty for the defaults.
pub(crate) fn parse_jurisdictions(s: &str) -> JurisdictionSet {
    // Written by veto itself; an unreadable value falls back to the
    // defaults, which are the strict UK and EU packs.
    JurisdictionSet::parse_list(s).unwrap_or_default()
}

pub(crate) fn refusal_text(r: &Refusal) -> String {
    format!("{} ({})", r.reason, r.rule.id())
}

// ---- signups ----

/// A double opt-in signup, as the organisation's form sent it.
#[derive(Debug, Clone)]
pub struct NewSignup {
    pub email: EmailAddress,
    /// `None`: all marketing.
    pub topic: Option<veto_core::TopicId>,
    /// The wording the form showed: what the person confirms.
    pub wording: WordingId,
    /// Evidence of the request (the confirmation brings its own).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub form_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Signup {
    pub id: i64,
    pub request: NewSignup,
    pub requested_at: Timestamp,
    pub confirmed: Option<SignupConfirmation>,
}

/// When and from where the person confirmed, and the grant it recorded.
#[derive(Debug, Clone)]
pub struct SignupConfirmation {
    pub at: Timestamp,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub event: Option<EventId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupRequested {
    /// Stored: mail the confirmation link now.
    Created { id: i64 },
    /// A confirmation went to this address at `at`, within the quiet period.
    RecentlyMailed { at: Timestamp },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignupConfirmed {
    Recorded {
        contact: ContactId,
        event: EventId,
    },
    /// Confirmed before: nothing new was recorded.
    AlreadyConfirmed {
        event: Option<EventId>,
    },
    Refused(Refusal),
    NotFound,
}
