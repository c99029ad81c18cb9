// Included once per backend by `backend!` in lib.rs, with `Db` and `IS_PG`
// in scope. Everything here is plain runtime SQL valid on both SQLite and
// PostgreSQL; the few differences branch on `IS_PG`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Pool, QueryBuilder, Row, Transaction};
use veto_core::{
    Channel, EventKind, EventRef, Fact, FrequencyLimit, NewEvent, Period, Relationship, RelationshipKind, Say,
    Scope, Source, SubscriberType, Timestamp, TopicId, check_append,
};

use crate::chain::{EventRecord, VerifyProblem, hex, partition_of, personal_hash};

type Tx = Transaction<'static, Db>;
type DbRow = <Db as sqlx::Database>::Row;

/// Rows per multi-row INSERT: under both backends' limits on bound values.
const CHUNK: usize = 1000;

#[derive(Clone, Debug)]
pub struct Backend {
    pub(crate) write: Pool<Db>,
    pub(crate) read: Pool<Db>,
    suppression_key: Arc<OnceLock<[u8; 32]>>,
    pub(crate) fence: Arc<crate::fence::HandoffFence>,
    /// The webhook endpoints appends write delivery rows for.
    pub(crate) webhooks: Arc<std::sync::RwLock<Arc<Vec<crate::WebhookEndpoint>>>>,
    /// SQLite only: the gateway's hot path without sqlx (see [`crate::direct`]).
    pub(crate) direct: Option<Arc<crate::direct::Direct>>,
}

impl Backend {
    pub(crate) fn new(write: Pool<Db>, read: Pool<Db>) -> Self {
        Backend { write, read, suppression_key: Arc::default(), fence: Arc::default(), webhooks: Arc::default(), direct: None }
    }

    fn webhook_endpoints(&self) -> Arc<Vec<crate::WebhookEndpoint>> {
        Arc::clone(&self.webhooks.read().unwrap_or_else(|e| e.into_inner()))
    }
}

fn now_us() -> i64 {
    Timestamp::now().as_microsecond()
}

pub(crate) fn ts(us: i64) -> Result<Timestamp> {
    Timestamp::from_microsecond(us).map_err(|_| StoreError::Corrupt(format!("time {us} out of range")))
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b
}

async fn begin(b: &Backend) -> Result<Tx> {
    if IS_PG {
        Ok(b.write.begin().await?)
    } else {
        // Take the write lock up front: a deferred transaction that reads
        // and then writes can fail with SQLITE_BUSY instead of waiting.
        Ok(b.write.begin_with("BEGIN IMMEDIATE").await?)
    }
}

pub(crate) async fn close(b: &Backend) {
    if let Some(direct) = &b.direct {
        direct.close();
    }
    b.write.close().await;
    b.read.close().await;
}

// ---- schema ------------------------------------------------------------------

const MIGRATIONS: &[(i64, &str)] = if IS_PG {
    &[
        (1, include_str!("migrations/postgres_0001.sql")),
        (2, include_str!("migrations/postgres_0002.sql")),
        (3, include_str!("migrations/postgres_0003.sql")),
        (4, include_str!("migrations/postgres_0004.sql")),
        (5, include_str!("migrations/postgres_0005.sql")),
        (6, include_str!("migrations/postgres_0006.sql")),
        (7, include_str!("migrations/postgres_0007.sql")),
        (8, include_str!("migrations/postgres_0008.sql")),
        (11, include_str!("migrations/postgres_0011.sql")),
        (12, include_str!("migrations/postgres_0012.sql")),
        (13, include_str!("migrations/postgres_0013.sql")),
        (14, include_str!("migrations/postgres_0014.sql")),
        (15, include_str!("migrations/postgres_0015.sql")),
    ]
} else {
    &[
        (1, include_str!("migrations/sqlite_0001.sql")),
        (2, include_str!("migrations/sqlite_0002.sql")),
        (3, include_str!("migrations/sqlite_0003.sql")),
        (4, include_str!("migrations/sqlite_0004.sql")),
        (5, include_str!("migrations/sqlite_0005.sql")),
        (6, include_str!("migrations/sqlite_0006.sql")),
        (7, include_str!("migrations/sqlite_0007.sql")),
        (8, include_str!("migrations/sqlite_0008.sql")),
        (11, include_str!("migrations/sqlite_0011.sql")),
        (12, include_str!("migrations/sqlite_0012.sql")),
        (13, include_str!("migrations/sqlite_0013.sql")),
        (14, include_str!("migrations/sqlite_0014.sql")),
        (15, include_str!("migrations/sqlite_0015.sql")),
    ]
};

pub(crate) async fn migrate(b: &Backend) -> Result<()> {
    let mut tx = begin(b).await?;
    if IS_PG {
        // Nodes starting together migrate one at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(745100)").execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS veto_schema (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM veto_schema").fetch_one(&mut *tx).await?;
    let current = current.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { found: current, supported: SCHEMA_VERSION });
    }
    // Every migration not yet applied, in order (not only those above the
    // highest: one numbered between two applied ones still runs).
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM veto_schema").fetch_all(&mut *tx).await?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        sqlx::raw_sql(AssertSqlSafe(*sql)).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO veto_schema (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(now_us())
            .execute(&mut *tx)
            .await?;
    }
    for p in 0..crate::PARTITIONS {
        sqlx::query("INSERT INTO chain_heads (partition, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (partition) DO NOTHING")
            .bind(p)
            .bind(vec![0u8; 32])
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("INSERT INTO staff_audit_head (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING")
        .bind(vec![0u8; 32])
        .execute(&mut *tx)
        .await?;
    // The suppression secret: made once, never rotated (rotating it would
    // let erased addresses back in), the same for every node sharing the store.
    sqlx::query("INSERT INTO server_secrets (name, value, created_at) VALUES ('suppression', $1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(random32().to_vec())
        .bind(now_us())
        .execute(&mut *tx)
        .await?;
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM token_keys").fetch_one(&mut *tx).await?;
    if keys == 0 {
        sqlx::query("INSERT INTO token_keys (id, secret, created_at) VALUES (1, $1, $2)")
            .bind(random32().to_vec())
            .bind(now_us())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn suppression_key(b: &Backend) -> Result<[u8; 32]> {
    if let Some(k) = b.suppression_key.get() {
        return Ok(*k);
    }
    let v: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = 'suppression'")
        .fetch_one(&b.read)
        .await?;
    let key: [u8; 32] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt("the suppression secret is not 32 bytes".into()))?;
    Ok(*b.suppression_key.get_or_init(|| key))
}

/// The suppression list's keyed hash of an address (HMAC-SHA256).
pub(crate) fn addr_hash(key: &[u8; 32], email_key: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(b"veto-suppression-v1\0");
    m.update(email_key.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// `n` fresh ids for `table`, never handed out before: from a counter row on
/// SQLite (which holds the write lock), from the id sequence on PostgreSQL.
async fn allocate_ids(tx: &mut Tx, table: &'static str, n: usize) -> Result<Vec<i64>> {
    if n == 0 {
        return Ok(vec![]);
    }
    if IS_PG {
        let sql = format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, $1)");
        let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(sql)).bind(n as i64).fetch_all(&mut **tx).await?;
        Ok(ids)
    } else {
        let last: i64 = sqlx::query_scalar("UPDATE id_counters SET last = last + $1 WHERE name = $2 RETURNING last")
            .bind(n as i64)
            .bind(table)
            .fetch_one(&mut **tx)
            .await?;
        Ok((last - n as i64 + 1..=last).collect())
    }
}

// ---- facts <-> consent_state rows ------------------------------------------------

fn scope_col(s: Scope) -> Option<i64> {
    match s {
        Scope::All => None,
        Scope::Topic(t) => Some(i64::from(t.0)),
    }
}

fn scope_from(col: Option<i64>) -> Result<Scope> {
    match col {
        None => Ok(Scope::All),
        Some(t) => u16::try_from(t)
            .map(|t| Scope::Topic(TopicId(t)))
            .map_err(|_| StoreError::Corrupt(format!("topic id {t} out of range"))),
    }
}

fn channel_col(c: Option<Channel>) -> Option<String> {
    c.map(|c| c.as_str().to_owned())
}

fn channel_from(col: Option<String>) -> Result<Option<Channel>> {
    col.map(|c| c.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))).transpose()
}

fn source_from(s: &str) -> Result<Source> {
    Source::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown event source {s:?}")))
}

fn period_from(s: &str) -> Result<Period> {
    match s {
        "week" => Ok(Period::Week),
        "month" => Ok(Period::Month),
        other => Err(StoreError::Corrupt(format!("unknown period {other:?}"))),
    }
}

fn rel_kind_from(s: &str) -> Option<RelationshipKind> {
    match s {
        "purchase" => Some(RelationshipKind::Purchase),
        "negotiation" => Some(RelationshipKind::Negotiation),
        "inquiry" => Some(RelationshipKind::Inquiry),
        _ => None,
    }
}

/// One consent_state row.
#[derive(Debug, Clone)]
struct FactRow {
    contact_id: i64,
    fact_key: String,
    kind: &'static str,
    scope_topic: Option<i64>,
    channel: Option<String>,
    event_id: i64,
    at: i64,
    source: &'static str,
    product_group: Option<String>,
    opt_out_offered: Option<i64>,
    until_at: Option<i64>,
    freq_max: Option<i64>,
    freq_per: Option<&'static str>,
}

fn fact_row(contact_id: i64, f: &Fact) -> Option<FactRow> {
    let ev = f.event()?;
    let ch = |c: &Option<Channel>| c.map_or("*", |c| c.as_str());
    let sc = |s: &Scope| match s {
        Scope::All => "*".to_owned(),
        Scope::Topic(t) => t.0.to_string(),
    };
    let mut row = FactRow {
        contact_id,
        fact_key: String::new(),
        kind: "",
        scope_topic: None,
        channel: None,
        event_id: ev.id.0,
        at: ev.at.as_microsecond(),
        source: ev.source.as_str(),
        product_group: None,
        opt_out_offered: None,
        until_at: None,
        freq_max: None,
        freq_per: None,
    };
    match f {
        Fact::Consent { scope, channel, say, .. } => {
            row.fact_key = format!("consent:{}:{}", sc(scope), ch(channel));
            row.kind = match say {
                Say::Granted => "granted",
                Say::Withdrawn => "withdrawn",
                Say::Refused => "refused",
            };
            row.scope_topic = scope_col(*scope);
            row.channel = channel_col(*channel);
        }
        Fact::Objection { .. } => {
            row.fact_key = "objection".into();
            row.kind = "objection";
        }
        Fact::Complaint { channel, .. } => {
            row.fact_key = format!("complaint:{}", ch(channel));
            row.kind = "complaint";
            row.channel = channel_col(*channel);
        }
        Fact::HardBounce { channel, .. } => {
            row.fact_key = format!("bounce:{}", ch(channel));
            row.kind = "hard_bounce";
            row.channel = channel_col(*channel);
        }
        Fact::Relationship { kind, product_group, channel, opt_out_offered, .. } => {
            row.fact_key = format!("rel:{}:{}:{}", kind.as_str(), product_group.as_deref().unwrap_or(""), ch(channel));
            row.kind = kind.as_str();
            row.product_group = product_group.clone();
            row.channel = channel_col(*channel);
            row.opt_out_offered = Some(i64::from(*opt_out_offered));
        }
        Fact::Pause { scope, until, .. } => {
            row.fact_key = format!("pause:{}", sc(scope));
            row.kind = "pause";
            row.scope_topic = scope_col(*scope);
            row.until_at = Some(until.as_microsecond());
        }
        Fact::Frequency { limit, .. } => {
            row.fact_key = "frequency".into();
            row.kind = "frequency";
            row.freq_max = Some(i64::from(limit.max));
            row.freq_per = Some(limit.per.as_str());
        }
        Fact::Erased { .. } => {
            row.fact_key = "erased".into();
            row.kind = "erased";
        }
        Fact::Suppressed { .. } | Fact::PhoneScreen { .. } => return None,
    }
    Some(row)
}

fn fact_from_row(r: &DbRow) -> Result<Fact> {
    let kind: String = r.try_get("kind")?;
    let source: String = r.try_get("source")?;
    let channel: Option<String> = r.try_get("channel")?;
    let freq_per: Option<String> = r.try_get("freq_per")?;
    let product_group: Option<String> = r.try_get("product_group")?;
    fact_from_parts(FactCols {
        kind: &kind,
        source: &source,
        event_id: r.try_get("event_id")?,
        at: r.try_get("at")?,
        channel: channel.as_deref(),
        scope_topic: r.try_get("scope_topic")?,
        until_at: r.try_get("until_at")?,
        freq_max: r.try_get("freq_max")?,
        freq_per: freq_per.as_deref(),
        product_group: product_group.as_deref(),
        opt_out_offered: r.try_get("opt_out_offered")?,
    })
}

/// The columns of one consent_state row that make a fact.
pub(crate) struct FactCols<'a> {
    pub(crate) kind: &'a str,
    pub(crate) source: &'a str,
    pub(crate) event_id: i64,
    pub(crate) at: i64,
    pub(crate) channel: Option<&'a str>,
    pub(crate) scope_topic: Option<i64>,
    pub(crate) until_at: Option<i64>,
    pub(crate) freq_max: Option<i64>,
    pub(crate) freq_per: Option<&'a str>,
    pub(crate) product_group: Option<&'a str>,
    pub(crate) opt_out_offered: Option<i64>,
}

pub(crate) fn fact_from_parts(r: FactCols<'_>) -> Result<Fact> {
    let ev = EventRef { id: veto_core::EventId(r.event_id), at: ts(r.at)?, source: source_from(r.source)? };
    let channel = r.channel.map(|c| c.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))).transpose()?;
    let scope = scope_from(r.scope_topic)?;
    let consent = |say| Fact::Consent { scope, channel, say, ev };
    Ok(match r.kind {
        "granted" => consent(Say::Granted),
        "withdrawn" => consent(Say::Withdrawn),
        "refused" => consent(Say::Refused),
        "objection" => Fact::Objection { ev },
        "complaint" => Fact::Complaint { channel, ev },
        "hard_bounce" => Fact::HardBounce { channel, ev },
        "pause" => Fact::Pause { scope, until: ts(r.until_at.unwrap_or(0))?, ev },
        "frequency" => Fact::Frequency {
            limit: FrequencyLimit {
                max: u32::try_from(r.freq_max.unwrap_or(0)).unwrap_or(0),
                per: period_from(r.freq_per.unwrap_or(""))?,
            },
            ev,
        },
        "erased" => Fact::Erased { ev },
        other => match rel_kind_from(other) {
            Some(kind) => Fact::Relationship {
                kind,
                product_group: r.product_group.map(str::to_owned),
                channel,
                opt_out_offered: r.opt_out_offered.unwrap_or(0) != 0,
                ev,
            },
            None => return Err(StoreError::Corrupt(format!("unknown consent_state kind {other:?}"))),
        },
    })
}

// ---- events <-> rows --------------------------------------------------------------

fn record_of(
    id: i64,
    contact_id: i64,
    e: &NewEvent,
    evidence: &Evidence,
    actor: &str,
    recorded_at: i64,
    pd: Option<(i64, Vec<u8>)>,
) -> EventRecord {
    let mut r = EventRecord {
        id,
        partition: partition_of(contact_id),
        contact_id,
        kind: e.kind.name().to_owned(),
        scope_topic: scope_col(e.scope),
        channel: channel_col(e.channel),
        source: e.source.as_str().to_owned(),
        actor: actor.to_owned(),
        at: e.at.as_microsecond(),
        recorded_at,
        wording_id: evidence.wording,
        form_url: evidence.form_url.clone(),
        ..Default::default()
    };
    match &e.kind {
        EventKind::Relationship(rel) => {
            r.product_group = rel.product_group.clone();
            r.order_ref = rel.order_ref.clone();
            r.opt_out_offered = Some(i64::from(rel.opt_out_offered));
        }
        EventKind::Pause { until } => r.until_at = Some(until.as_microsecond()),
        EventKind::Frequency(Some(l)) => {
            r.freq_max = Some(i64::from(l.max));
            r.freq_per = Some(l.per.as_str().to_owned());
        }
        _ => {}
    }
    if let Some((pd_id, pd_hash)) = pd {
        r.pd_id = Some(pd_id);
        r.pd_hash = Some(pd_hash);
    }
    r
}

fn record_from_row(r: &DbRow) -> Result<EventRecord> {
    Ok(EventRecord {
        id: r.try_get("id")?,
        partition: r.try_get("partition")?,
        seq: r.try_get("seq")?,
        contact_id: r.try_get("contact_id")?,
        kind: r.try_get("kind")?,
        scope_topic: r.try_get("scope_topic")?,
        channel: r.try_get("channel")?,
        source: r.try_get("source")?,
        actor: r.try_get("actor")?,
        at: r.try_get("at")?,
        recorded_at: r.try_get("recorded_at")?,
        wording_id: r.try_get("wording_id")?,
        product_group: r.try_get("product_group")?,
        order_ref: r.try_get("order_ref")?,
        opt_out_offered: r.try_get("opt_out_offered")?,
        form_url: r.try_get("form_url")?,
        until_at: r.try_get("until_at")?,
        freq_max: r.try_get("freq_max")?,
        freq_per: r.try_get("freq_per")?,
        pd_id: r.try_get("pd_id")?,
        pd_hash: r.try_get("pd_hash")?,
        prev_hash: r.try_get("prev_hash")?,
    })
}

fn event_of(r: &EventRecord) -> Result<veto_core::Event> {
    let kind = match r.kind.as_str() {
        "grant" => EventKind::Grant,
        "withdraw" => EventKind::Withdraw,
        "object" => EventKind::Object,
        "refused" => EventKind::Refused,
        "hard_bounce" => EventKind::HardBounce,
        "bounce_cleared" => EventKind::BounceCleared,
        "complaint" => EventKind::Complaint,
        "erasure" => EventKind::Erasure,
        "pause" => EventKind::Pause { until: ts(r.until_at.unwrap_or(0))? },
        "frequency" => EventKind::Frequency(match (r.freq_max, r.freq_per.as_deref()) {
            (Some(max), Some(per)) => Some(FrequencyLimit { max: u32::try_from(max).unwrap_or(0), per: period_from(per)? }),
            _ => None,
        }),
        other => match rel_kind_from(other) {
            Some(kind) => EventKind::Relationship(Relationship {
                kind,
                product_group: r.product_group.clone(),
                order_ref: r.order_ref.clone(),
                opt_out_offered: r.opt_out_offered.unwrap_or(0) != 0,
            }),
            None => return Err(StoreError::Corrupt(format!("event #{} has unknown kind {other:?}", r.id))),
        },
    };
    Ok(veto_core::Event {
        id: veto_core::EventId(r.id),
        kind,
        scope: scope_from(r.scope_topic)?,
        channel: channel_from(r.channel.clone())?,
        source: source_from(&r.source)?,
        at: ts(r.at)?,
    })
}

// ---- appending ------------------------------------------------------------------

/// A contact as the append works on it.
struct Working {
    id: i64,
    exists: bool,
    /// Accepted at least one event: must be written.
    touched: bool,
    fields_changed: bool,
    state: ConsentState,
    contact: ContactInput,
}

struct PdRow {
    id: i64,
    contact_id: i64,
    salt: Vec<u8>,
    body: String,
    hash: Vec<u8>,
}

pub(crate) async fn append(b: &Backend, items: Vec<Append>, dry_run: bool) -> Result<Vec<AppendOutcome>> {
    let started = std::time::Instant::now();
    let mut batch = batch(b).await?;
    let out = batch.append(items).await?;
    if dry_run {
        batch.tx.rollback().await?;
    } else {
        batch.tx.commit().await?;
        batch.tally.publish();
        crate::metrics::observe(crate::metrics::Op::LedgerAppend, started.elapsed());
    }
    Ok(out)
}

/// A write transaction that several appends share.
pub struct BatchTx {
    b: Backend,
    tx: Tx,
    /// Unsubscribes recorded, counted in `/metrics` once committed.
    tally: crate::metrics::Tally,
}

pub(crate) async fn batch(b: &Backend) -> Result<BatchTx> {
    Ok(BatchTx { b: b.clone(), tx: begin(b).await?, tally: Default::default() })
}

impl BatchTx {
    pub(crate) async fn append(&mut self, items: Vec<Append>) -> Result<Vec<AppendOutcome>> {
        append_in(&self.b, &mut self.tx, items, &mut self.tally).await
    }

    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        self.tally.publish();
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }
}

async fn append_in(
    b: &Backend,
    tx: &mut Tx,
    items: Vec<Append>,
    tally: &mut crate::metrics::Tally,
) -> Result<Vec<AppendOutcome>> {
    if items.is_empty() {
        return Ok(vec![]);
    }
    let now = now_us();
    let skey = suppression_key(b).await?;

    // Every address in the batch, with its contact and state if it exists.
    let mut order: Vec<String> = vec![];
    let mut work: HashMap<String, Working> = HashMap::new();
    for it in &items {
        let key = it.contact.email.key().to_owned();
        if let std::collections::hash_map::Entry::Vacant(slot) = work.entry(key.clone()) {
            order.push(key);
            slot.insert(Working {
                id: 0,
                exists: false,
                touched: false,
                fields_changed: false,
                state: ConsentState::default(),
                contact: ContactInput::new(it.contact.email.clone()),
            });
        }
    }
    let mut by_id: HashMap<i64, String> = HashMap::new();
    for chunk in order.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "SELECT id, email_key, jurisdictions, subscriber_type FROM contacts WHERE email_key IN (",
        );
        let mut sep = qb.separated(", ");
        for k in chunk {
            sep.push_bind(k.clone());
        }
        sep.push_unseparated(")");
        for row in qb.build().fetch_all(&mut **tx).await? {
            let key: String = row.try_get("email_key")?;
            let id: i64 = row.try_get("id")?;
            let j: String = row.try_get("jurisdictions")?;
            let st: String = row.try_get("subscriber_type")?;
            let subscriber = st.parse().unwrap_or(SubscriberType::Individual);
            if let Some(w) = work.get_mut(&key) {
                w.id = id;
                w.exists = true;
                w.state = ConsentState::known(crate::parse_jurisdictions(&j), subscriber);
                w.contact.jurisdictions = w.state.jurisdictions;
                w.contact.subscriber_type = Some(subscriber);
                by_id.insert(id, key);
            }
        }
    }
    let existing: Vec<i64> = by_id.keys().copied().collect();
    for chunk in existing.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new("SELECT * FROM consent_state WHERE contact_id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        sep.push_unseparated(")");
        for row in qb.build().fetch_all(&mut **tx).await? {
            let cid: i64 = row.try_get("contact_id")?;
            let fact = fact_from_row(&row)?;
            if let Some(w) = by_id.get(&cid).and_then(|k| work.get_mut(k)) {
                w.state.facts.push(fact);
            }
        }
    }
    // The erasure suppression list, by keyed hash.
    let hashes: HashMap<Vec<u8>, String> = order.iter().map(|k| (addr_hash(&skey, k), k.clone())).collect();
    let hash_list: Vec<Vec<u8>> = hashes.keys().cloned().collect();
    for chunk in hash_list.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new("SELECT addr_hash, created_at FROM suppressions WHERE addr_hash IN (");
        let mut sep = qb.separated(", ");
        for h in chunk {
            sep.push_bind(h.clone());
        }
        sep.push_unseparated(")");
        for row in qb.build().fetch_all(&mut **tx).await? {
            let h: Vec<u8> = row.try_get("addr_hash")?;
            let since = ts(row.try_get("created_at")?)?;
            if let Some(w) = hashes.get(&h).and_then(|k| work.get_mut(k)) {
                w.state.upsert(Fact::Suppressed { since });
            }
        }
    }

    // Ids for the new contacts, then lock the chain heads this batch touches.
    let new_keys: Vec<&String> = order.iter().filter(|k| !work[*k].exists).collect();
    let new_ids = allocate_ids(tx, "contacts", new_keys.len()).await?;
    for (k, id) in new_keys.into_iter().zip(new_ids) {
        if let Some(w) = work.get_mut(k) {
            w.id = id;
        }
    }
    let mut partitions: Vec<i64> = work.values().map(|w| partition_of(w.id)).collect();
    partitions.sort_unstable();
    partitions.dedup();
    let mut heads: HashMap<i64, (i64, Vec<u8>)> = HashMap::new();
    {
        let mut qb = QueryBuilder::<Db>::new("SELECT partition, seq, hash FROM chain_heads WHERE partition IN (");
        let mut sep = qb.separated(", ");
        for p in &partitions {
            sep.push_bind(*p);
        }
        sep.push_unseparated(") ORDER BY partition");
        if IS_PG {
            qb.push(" FOR UPDATE");
        }
        for row in qb.build().fetch_all(&mut **tx).await? {
            heads.insert(row.try_get("partition")?, (row.try_get("seq")?, row.try_get("hash")?));
        }
    }
    let mut event_ids = allocate_ids(tx, "events", items.len()).await?.into_iter();
    let mut pd_ids = allocate_ids(tx, "personal_data", items.len()).await?.into_iter();

    let mut outcomes = Vec::with_capacity(items.len());
    let mut events: Vec<(EventRecord, Vec<u8>)> = vec![];
    let mut pds: Vec<PdRow> = vec![];
    // The address each recorded event is about, for the webhook outbox.
    let mut told: Vec<(String, String)> = vec![];
    for it in items {
        let Some(w) = work.get_mut(it.contact.email.key()) else {
            return Err(StoreError::Corrupt("an address vanished from the batch".into()));
        };
        if let Err(refusal) = check_append(&w.state, &it.event) {
            outcomes.push(AppendOutcome::Refused(refusal));
            continue;
        }
        let created = !w.exists && !w.touched;
        w.touched = true;
        merge_contact(w, &it.contact);

        let id = event_ids.next().ok_or_else(|| StoreError::Corrupt("ran out of event ids".into()))?;
        let pd = if it.event.kind == EventKind::Erasure {
            None
        } else {
            let pd_id = pd_ids.next().ok_or_else(|| StoreError::Corrupt("ran out of ids".into()))?;
            let body = serde_json::to_string(&PersonalData {
                email: Some(it.contact.email.as_str().to_owned()),
                name: it.contact.name.clone(),
                ip: it.evidence.ip.clone(),
                user_agent: it.evidence.user_agent.clone(),
            })
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let mut salt = vec![0u8; 16];
            rand::rng().fill_bytes(&mut salt);
            let hash = personal_hash(&salt, &body).to_vec();
            pds.push(PdRow { id: pd_id, contact_id: w.id, salt, body, hash: hash.clone() });
            Some((pd_id, hash))
        };
        let mut rec = record_of(id, w.id, &it.event, &it.evidence, &it.actor, now, pd);
        let head = heads
            .get_mut(&rec.partition)
            .ok_or_else(|| StoreError::Corrupt(format!("chain head of partition {} is missing", rec.partition)))?;
        rec.seq = head.0 + 1;
        rec.prev_hash = head.1.clone();
        let hash = rec.hash().to_vec();
        *head = (rec.seq, hash.clone());
        w.state.apply(&it.event.with_id(veto_core::EventId(id)));
        tally.note(&it.event.kind, it.event.source);
        events.push((rec, hash));
        told.push((it.contact.email.key().to_owned(), it.contact.email.as_str().to_owned()));
        outcomes.push(AppendOutcome::Recorded { contact: ContactId(w.id), event: veto_core::EventId(id), created });
    }

    // Write: contacts, personal data, events, state, heads.
    let new_contacts: Vec<&Working> = work.values().filter(|w| w.touched && !w.exists).collect();
    for chunk in new_contacts.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO contacts (id, email_key, email, name, phone, postal_address, attributes, jurisdictions, subscriber_type, created_at) ",
        );
        qb.push_values(chunk, |mut row, w| {
            let c = &w.contact;
            row.push_bind(w.id)
                .push_bind(c.email.key().to_owned())
                .push_bind(c.email.as_str().to_owned())
                .push_bind(c.name.clone())
                .push_bind(c.phone.as_ref().map(|p| p.as_str().to_owned()))
                .push_bind(c.postal_address.clone())
                .push_bind(serde_json::to_string(&c.attributes).unwrap_or_else(|_| "{}".into()))
                .push_bind(c.jurisdictions.to_pipe_list())
                .push_bind(c.subscriber_type.unwrap_or(SubscriberType::Individual).as_str().to_owned())
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await?;
    }
    for w in work.values().filter(|w| w.touched && w.exists && w.fields_changed) {
        update_contact(tx, w.id, &w.contact).await?;
    }
    for chunk in pds.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new("INSERT INTO personal_data (id, contact_id, salt, body, hash) ");
        qb.push_values(chunk, |mut row, p| {
            row.push_bind(p.id)
                .push_bind(p.contact_id)
                .push_bind(p.salt.clone())
                .push_bind(p.body.clone())
                .push_bind(p.hash.clone());
        });
        qb.build().execute(&mut **tx).await?;
    }
    for chunk in events.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO events (id, partition, seq, contact_id, kind, scope_topic, channel, source, actor, at, recorded_at, \
             wording_id, product_group, order_ref, opt_out_offered, form_url, until_at, freq_max, freq_per, pd_id, pd_hash, prev_hash, hash) ",
        );
        qb.push_values(chunk, |mut row, (r, hash)| {
            row.push_bind(r.id)
                .push_bind(r.partition)
                .push_bind(r.seq)
                .push_bind(r.contact_id)
                .push_bind(r.kind.clone())
                .push_bind(r.scope_topic)
                .push_bind(r.channel.clone())
                .push_bind(r.source.clone())
                .push_bind(r.actor.clone())
                .push_bind(r.at)
                .push_bind(r.recorded_at)
                .push_bind(r.wording_id)
                .push_bind(r.product_group.clone())
                .push_bind(r.order_ref.clone())
                .push_bind(r.opt_out_offered)
                .push_bind(r.form_url.clone())
                .push_bind(r.until_at)
                .push_bind(r.freq_max)
                .push_bind(r.freq_per.clone())
                .push_bind(r.pd_id)
                .push_bind(r.pd_hash.clone())
                .push_bind(r.prev_hash.clone())
                .push_bind(hash.clone());
        });
        qb.build().execute(&mut **tx).await?;
    }
    // The state of every contact that changed, replaced whole: it is small,
    // and this also drops facts an event removed (a cleared bounce).
    let changed: Vec<&Working> = work.values().filter(|w| w.touched).collect();
    let changed_existing: Vec<i64> = changed.iter().filter(|w| w.exists).map(|w| w.id).collect();
    for chunk in changed_existing.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new("DELETE FROM consent_state WHERE contact_id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        sep.push_unseparated(")");
        qb.build().execute(&mut **tx).await?;
    }
    let rows: Vec<FactRow> = changed.iter().flat_map(|w| w.state.facts.iter().filter_map(|f| fact_row(w.id, f))).collect();
    insert_fact_rows(tx, &rows).await?;
    insert_webhook_rows(b, tx, &skey, &events, &told, now).await?;
    for (p, (seq, hash)) in &heads {
        sqlx::query("UPDATE chain_heads SET seq = $1, hash = $2 WHERE partition = $3")
            .bind(seq)
            .bind(hash.clone())
            .bind(p)
            .execute(&mut **tx)
            .await?;
    }
    Ok(outcomes)
}

async fn insert_fact_rows(tx: &mut Tx, rows: &[FactRow]) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO consent_state (contact_id, fact_key, kind, scope_topic, channel, event_id, at, source, \
             product_group, opt_out_offered, until_at, freq_max, freq_per) ",
        );
        qb.push_values(chunk, |mut row, f| {
            row.push_bind(f.contact_id)
                .push_bind(f.fact_key.clone())
                .push_bind(f.kind)
                .push_bind(f.scope_topic)
                .push_bind(f.channel.clone())
                .push_bind(f.event_id)
                .push_bind(f.at)
                .push_bind(f.source)
                .push_bind(f.product_group.clone())
                .push_bind(f.opt_out_offered)
                .push_bind(f.until_at)
                .push_bind(f.freq_max)
                .push_bind(f.freq_per);
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Writes a contact's fields (not its address, which is its identity).
async fn update_contact(tx: &mut Tx, id: i64, c: &ContactInput) -> Result<()> {
    sqlx::query(
        "UPDATE contacts SET name = $1, phone = $2, postal_address = $3, attributes = $4, jurisdictions = $5, \
         subscriber_type = $6 WHERE id = $7",
    )
    .bind(c.name.clone())
    .bind(c.phone.as_ref().map(|p| p.as_str().to_owned()))
    .bind(c.postal_address.clone())
    .bind(serde_json::to_string(&c.attributes).unwrap_or_else(|_| "{}".into()))
    .bind(c.jurisdictions.to_pipe_list())
    .bind(c.subscriber_type.unwrap_or(SubscriberType::Individual).as_str())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What an append says about the contact overrides what the store had;
/// what it leaves out stays.
fn merge_contact(w: &mut Working, c: &ContactInput) {
    let mut changed = false;
    let mut set = |slot: &mut Option<String>, v: &Option<String>| {
        if v.is_some() && slot != v {
            *slot = v.clone();
            changed = true;
        }
    };
    set(&mut w.contact.name, &c.name);
    set(&mut w.contact.postal_address, &c.postal_address);
    if c.phone.is_some() && w.contact.phone != c.phone {
        w.contact.phone = c.phone.clone();
        changed = true;
    }
    for (k, v) in &c.attributes {
        if w.contact.attributes.get(k) != Some(v) {
            w.contact.attributes.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    if !c.jurisdictions.is_empty() && w.contact.jurisdictions != c.jurisdictions {
        w.contact.jurisdictions = c.jurisdictions;
        w.state.jurisdictions = c.jurisdictions;
        changed = true;
    }
    if c.subscriber_type.is_some() && w.contact.subscriber_type != c.subscriber_type {
        w.contact.subscriber_type = c.subscriber_type;
        if let Some(s) = c.subscriber_type {
            w.state.subscriber = s.into();
        }
        changed = true;
    }
    w.fields_changed |= changed;
}

// ---- reading ----------------------------------------------------------------------

pub(crate) async fn load_state(
    b: &Backend,
    email: &EmailAddress,
    now: Timestamp,
) -> Result<(Option<ContactId>, ConsentState)> {
    let skey = suppression_key(b).await?;
    if let Some(direct) = &b.direct {
        return direct.load_state(email.key(), &addr_hash(&skey, email.key()), now);
    }
    let mut conn = b.read.acquire().await?;
    // One round trip (the guard asks twice per recipient): the contact, its
    // facts (one row each; one row of NULLs when it has none or is
    // unknown) and the suppression entry.
    let rows = sqlx::query(
        "SELECT c.id AS cid, c.jurisdictions, c.subscriber_type, \
         (SELECT created_at FROM suppressions WHERE addr_hash = $2 AND scope = 'all') AS suppressed_at, s.* \
         FROM (SELECT 1 AS one) AS o \
         LEFT JOIN contacts c ON c.email_key = $1 \
         LEFT JOIN consent_state s ON s.contact_id = c.id",
    )
    .bind(email.key())
    .bind(addr_hash(&skey, email.key()))
    .fetch_all(&mut *conn)
    .await?;
    let mut state = ConsentState::default();
    let mut id = None;
    let mut suppressed: Option<i64> = None;
    for (i, row) in rows.iter().enumerate() {
        if i == 0 {
            suppressed = row.try_get("suppressed_at")?;
            if let Some(cid) = row.try_get::<Option<i64>, _>("cid")? {
                let j: String = row.try_get("jurisdictions")?;
                let st: String = row.try_get("subscriber_type")?;
                state = ConsentState::known(crate::parse_jurisdictions(&j), st.parse().unwrap_or(SubscriberType::Individual));
                id = Some(ContactId(cid));
            }
        }
        if row.try_get::<Option<String>, _>("kind")?.is_some() {
            state.facts.push(fact_from_row(row)?);
        }
    }
    if let Some(ContactId(cid)) = id
        && state.facts.iter().any(|f| matches!(f, Fact::Frequency { .. }))
    {
        let since = now.as_microsecond() - 31 * 86_400 * 1_000_000;
        let sends: Vec<i64> = sqlx::query_scalar(
            "SELECT checked_at FROM receipts WHERE contact_id = $1 AND allowed = 1 AND channel = 'email' \
             AND class NOT LIKE 'service:%' AND checked_at > $2",
        )
        .bind(cid)
        .bind(since)
        .fetch_all(&mut *conn)
        .await?;
        state.recent_sends = sends.into_iter().map(ts).collect::<Result<_>>()?;
    }
    if let Some(since) = suppressed {
        state.upsert(Fact::Suppressed { since: ts(since)? });
    }
    Ok((id, state))
}

pub(crate) async fn load_states(
    b: &Backend,
    emails: &[EmailAddress],
    now: Timestamp,
) -> Result<Vec<(Option<ContactId>, ConsentState)>> {
    let skey = suppression_key(b).await?;
    let mut conn = b.read.acquire().await?;
    let mut found: HashMap<String, (ContactId, ConsentState)> = HashMap::new();
    let mut suppressed: HashMap<Vec<u8>, i64> = HashMap::new();
    for chunk in emails.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "SELECT c.id AS cid, c.email_key, c.jurisdictions, c.subscriber_type, s.* FROM contacts c \
             LEFT JOIN consent_state s ON s.contact_id = c.id WHERE c.email_key IN (",
        );
        let mut sep = qb.separated(", ");
        for e in chunk {
            sep.push_bind(e.key().to_owned());
        }
        sep.push_unseparated(")");
        for row in qb.build().fetch_all(&mut *conn).await? {
            let key: String = row.try_get("email_key")?;
            let entry = match found.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let j: String = row.try_get("jurisdictions")?;
                    let st: String = row.try_get("subscriber_type")?;
                    let state = ConsentState::known(
                        crate::parse_jurisdictions(&j),
                        st.parse().unwrap_or(SubscriberType::Individual),
                    );
                    v.insert((ContactId(row.try_get("cid")?), state))
                }
            };
            if row.try_get::<Option<String>, _>("kind")?.is_some() {
                entry.1.facts.push(fact_from_row(&row)?);
            }
        }
        let mut qb = QueryBuilder::<Db>::new("SELECT addr_hash, created_at FROM suppressions WHERE scope = 'all' AND addr_hash IN (");
        let mut sep = qb.separated(", ");
        for e in chunk {
            sep.push_bind(addr_hash(&skey, e.key()));
        }
        sep.push_unseparated(")");
        for row in qb.build().fetch_all(&mut *conn).await? {
            suppressed.insert(row.try_get("addr_hash")?, row.try_get("created_at")?);
        }
    }
    // Frequency limits count recent marketing sends.
    let limited: Vec<i64> = found
        .values()
        .filter(|(_, s)| s.facts.iter().any(|f| matches!(f, Fact::Frequency { .. })))
        .map(|(id, _)| id.0)
        .collect();
    let mut sends: HashMap<i64, Vec<Timestamp>> = HashMap::new();
    let since = now.as_microsecond() - 31 * 86_400 * 1_000_000;
    for chunk in limited.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "SELECT contact_id, checked_at FROM receipts WHERE allowed = 1 AND channel = 'email' \
             AND class NOT LIKE 'service:%' AND checked_at > ",
        );
        qb.push_bind(since).push(" AND contact_id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        sep.push_unseparated(")");
        for row in qb.build().fetch_all(&mut *conn).await? {
            sends.entry(row.try_get("contact_id")?).or_default().push(ts(row.try_get("checked_at")?)?);
        }
    }
    emails
        .iter()
        .map(|e| {
            let (id, mut state) = match found.get(e.key()) {
                Some((id, state)) => (Some(*id), state.clone()),
                None => (None, ConsentState::default()),
            };
            if let Some(id) = id {
                state.recent_sends = sends.get(&id.0).cloned().unwrap_or_default();
            }
            if let Some(&since) = suppressed.get(&addr_hash(&skey, e.key())) {
                state.upsert(Fact::Suppressed { since: ts(since)? });
            }
            Ok((id, state))
        })
        .collect()
}

pub(crate) async fn rebuild_state(b: &Backend, contact: ContactId) -> Result<ConsentState> {
    let row = sqlx::query("SELECT jurisdictions, subscriber_type FROM contacts WHERE id = $1")
        .bind(contact.0)
        .fetch_optional(&b.read)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("contact #{}", contact.0)))?;
    let j: String = row.try_get("jurisdictions")?;
    let st: String = row.try_get("subscriber_type")?;
    let mut state = ConsentState::known(crate::parse_jurisdictions(&j), st.parse().unwrap_or(SubscriberType::Individual));
    for e in events_of(b, contact).await? {
        state.apply(&e.event);
    }
    Ok(state)
}

fn contact_from_row(r: &DbRow) -> Result<Contact> {
    let attrs: String = r.try_get("attributes")?;
    let when = |us: i64| ts(us).map(|t| t.to_string());
    Ok(Contact {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        phone: r.try_get("phone")?,
        postal_address: r.try_get("postal_address")?,
        attributes: serde_json::from_str::<BTreeMap<String, String>>(&attrs).unwrap_or_default(),
        jurisdictions: r.try_get("jurisdictions")?,
        subscriber_type: r.try_get("subscriber_type")?,
        created_at: when(r.try_get("created_at")?)?,
        erased_at: r.try_get::<Option<i64>, _>("erased_at")?.map(when).transpose()?,
    })
}

pub(crate) async fn find_contact(b: &Backend, email: &EmailAddress) -> Result<Option<Contact>> {
    let row = sqlx::query("SELECT * FROM contacts WHERE email_key = $1").bind(email.key()).fetch_optional(&b.read).await?;
    row.as_ref().map(contact_from_row).transpose()
}

pub(crate) async fn contact(b: &Backend, id: ContactId) -> Result<Option<Contact>> {
    let row = sqlx::query("SELECT * FROM contacts WHERE id = $1").bind(id.0).fetch_optional(&b.read).await?;
    row.as_ref().map(contact_from_row).transpose()
}

const EVENT_SELECT: &str = "SELECT e.*, pd.body AS pd_body FROM events e LEFT JOIN personal_data pd ON pd.id = e.pd_id";

fn stored_event(r: &DbRow) -> Result<StoredEvent> {
    let rec = record_from_row(r)?;
    let hash: Vec<u8> = r.try_get("hash")?;
    let body: Option<String> = r.try_get("pd_body")?;
    Ok(StoredEvent {
        contact: ContactId(rec.contact_id),
        event: event_of(&rec)?,
        partition: rec.partition,
        seq: rec.seq,
        actor: rec.actor.clone(),
        recorded_at: ts(rec.recorded_at)?,
        wording: rec.wording_id.map(WordingId),
        form_url: rec.form_url.clone(),
        order_ref: rec.order_ref.clone(),
        personal: body.and_then(|b| serde_json::from_str(&b).ok()),
        hash: hex(&hash),
    })
}

pub(crate) async fn events_of(b: &Backend, contact: ContactId) -> Result<Vec<StoredEvent>> {
    let sql = format!("{EVENT_SELECT} WHERE e.contact_id = $1 ORDER BY e.at, e.id");
    let rows = sqlx::query(AssertSqlSafe(sql)).bind(contact.0).fetch_all(&b.read).await?;
    rows.iter().map(stored_event).collect()
}

pub(crate) async fn event(b: &Backend, id: veto_core::EventId) -> Result<Option<StoredEvent>> {
    let sql = format!("{EVENT_SELECT} WHERE e.id = $1");
    let row = sqlx::query(AssertSqlSafe(sql)).bind(id.0).fetch_optional(&b.read).await?;
    row.as_ref().map(stored_event).transpose()
}

pub(crate) async fn is_suppressed(b: &Backend, email: &EmailAddress) -> Result<Option<Timestamp>> {
    let skey = suppression_key(b).await?;
    let at: Option<i64> = sqlx::query_scalar("SELECT created_at FROM suppressions WHERE addr_hash = $1 AND scope = 'all'")
        .bind(addr_hash(&skey, email.key()))
        .fetch_optional(&b.read)
        .await?;
    at.map(ts).transpose()
}

pub(crate) async fn count_events(b: &Backend) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&b.read).await?)
}

pub(crate) async fn count_contacts(b: &Backend) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM contacts").fetch_one(&b.read).await?)
}

pub(crate) async fn upsert_contact(b: &Backend, c: ContactInput) -> Result<Result<ContactId, Refusal>> {
    let skey = suppression_key(b).await?;
    let mut tx = begin(b).await?;
    let suppressed: Option<i64> =
        sqlx::query_scalar("SELECT created_at FROM suppressions WHERE addr_hash = $1 AND scope = 'all'")
            .bind(addr_hash(&skey, c.email.key()))
            .fetch_optional(&mut *tx)
            .await?;
    let row = sqlx::query("SELECT * FROM contacts WHERE email_key = $1").bind(c.email.key()).fetch_optional(&mut *tx).await?;
    let id = match row {
        Some(row) => {
            let existing = contact_from_row(&row)?;
            let mut w = Working {
                id: existing.id,
                exists: true,
                touched: true,
                fields_changed: false,
                state: ConsentState::default(),
                contact: ContactInput {
                    name: existing.name,
                    phone: existing.phone.and_then(|p| veto_core::PhoneNumber::parse(&p).ok()),
                    postal_address: existing.postal_address,
                    attributes: existing.attributes,
                    jurisdictions: crate::parse_jurisdictions(&existing.jurisdictions),
                    subscriber_type: existing.subscriber_type.parse().ok(),
                    ..ContactInput::new(c.email.clone())
                },
            };
            merge_contact(&mut w, &c);
            update_contact(&mut tx, w.id, &w.contact).await?;
            w.id
        }
        None => {
            if suppressed.is_some() {
                return Ok(Err(veto_core::Refusal {
                    rule: veto_core::Rule::IcoSupp,
                    reason: veto_core::Reason::Suppressed,
                    event: None,
                    jurisdiction: None,
                }));
            }
            let id = allocate_ids(&mut tx, "contacts", 1).await?[0];
            sqlx::query(
                "INSERT INTO contacts (id, email_key, email, name, phone, postal_address, attributes, jurisdictions, subscriber_type, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id)
            .bind(c.email.key())
            .bind(c.email.as_str())
            .bind(c.name.clone())
            .bind(c.phone.as_ref().map(|p| p.as_str().to_owned()))
            .bind(c.postal_address.clone())
            .bind(serde_json::to_string(&c.attributes).unwrap_or_else(|_| "{}".into()))
            .bind(c.jurisdictions.to_pipe_list())
            .bind(c.subscriber_type.unwrap_or(SubscriberType::Individual).as_str())
            .bind(now_us())
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    tx.commit().await?;
    Ok(Ok(ContactId(id)))
}

// ---- erasure ----------------------------------------------------------------------

pub(crate) async fn erase(b: &Backend, email: &EmailAddress, actor: &str, at: Timestamp) -> Result<veto_core::EventId> {
    let skey = suppression_key(b).await?;
    let mut tx = begin(b).await?;
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM contacts WHERE email_key = $1")
        .bind(email.key())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(id) = id else {
        return Err(StoreError::NotFound(format!("no contact with the address {email}")));
    };
    let item = Append {
        contact: ContactInput::new(email.clone()),
        event: NewEvent { kind: EventKind::Erasure, scope: Scope::All, channel: None, source: Source::Admin, at },
        evidence: Evidence::default(),
        actor: actor.to_owned(),
    };
    let event = match append_in(b, &mut tx, vec![item], &mut Default::default()).await?.pop() {
        Some(AppendOutcome::Recorded { event, .. }) => event,
        Some(AppendOutcome::Refused(r)) => return Err(StoreError::Invalid(format!("cannot erase: {}", crate::refusal_text(&r)))),
        None => return Err(StoreError::Corrupt("erasure produced no outcome".into())),
    };
    let now = at.as_microsecond();
    sqlx::query("DELETE FROM personal_data WHERE contact_id = $1").bind(id).execute(&mut *tx).await?;
    // Signups (address, IPs) for the address go too: the suppression entry is all that stays.
    sqlx::query("DELETE FROM signups WHERE email_key = $1").bind(email.key()).execute(&mut *tx).await?;
    // Mail to veto's addresses (envelopes, diagnostics) goes too; the events stay.
    sqlx::query("DELETE FROM inbound_reports WHERE contact_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query(
        "UPDATE contacts SET email_key = NULL, email = NULL, name = NULL, phone = NULL, postal_address = NULL, \
         attributes = '{}', erased_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE receipts SET recipient = NULL WHERE contact_id = $1").bind(id).execute(&mut *tx).await?;
    redact_webhook_payloads(&mut tx, id).await?;
    // Data-subject requests stay (the record of what was asked and answered), without the address.
    blank_request_addresses(&mut tx, id, email).await?;
    sqlx::query(
        "INSERT INTO suppressions (addr_hash, scope, reason, created_at) VALUES ($1, 'all', 'erasure', $2) \
         ON CONFLICT (addr_hash, scope) DO NOTHING",
    )
    .bind(addr_hash(&skey, email.key()))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(event)
}

// ---- topics, wordings, keys --------------------------------------------------------

fn topic_from_row(r: &DbRow) -> Result<Topic> {
    let id: i64 = r.try_get("id")?;
    let key: String = r.try_get("key")?;
    Ok(Topic {
        id: TopicId(u16::try_from(id).map_err(|_| StoreError::Corrupt(format!("topic id {id} out of range")))?),
        key: TopicKey::parse(&key).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        group: r.try_get("product_group")?,
    })
}

pub(crate) async fn add_topic(b: &Backend, t: NewTopic) -> Result<Topic> {
    let mut tx = begin(b).await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM topics WHERE key = $1")
        .bind(t.key.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_some() {
        return Err(StoreError::Invalid(format!("topic {} already exists", t.key)));
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM topics").fetch_one(&mut *tx).await?;
    if count >= i64::from(u16::MAX) {
        return Err(StoreError::Invalid("veto holds at most 65,535 topics".into()));
    }
    let row = sqlx::query(
        "INSERT INTO topics (key, name, description, product_group, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING *",
    )
    .bind(t.key.as_str())
    .bind(&t.name)
    .bind(&t.description)
    .bind(&t.group)
    .bind(now_us())
    .fetch_one(&mut *tx)
    .await?;
    let topic = topic_from_row(&row)?;
    tx.commit().await?;
    Ok(topic)
}

pub(crate) async fn topics(b: &Backend) -> Result<Vec<Topic>> {
    let rows = sqlx::query("SELECT * FROM topics ORDER BY key").fetch_all(&b.read).await?;
    rows.iter().map(topic_from_row).collect()
}

pub(crate) async fn topic(b: &Backend, key: &TopicKey) -> Result<Option<Topic>> {
    let row = sqlx::query("SELECT * FROM topics WHERE key = $1").bind(key.as_str()).fetch_optional(&b.read).await?;
    row.as_ref().map(topic_from_row).transpose()
}

pub(crate) async fn add_wording(b: &Backend, text: &str) -> Result<Wording> {
    let hash = Wording::content_hash(text);
    let mut tx = begin(b).await?;
    sqlx::query("INSERT INTO wordings (text, hash, created_at) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING")
        .bind(text)
        .bind(&hash)
        .bind(now_us())
        .execute(&mut *tx)
        .await?;
    let id: i64 = sqlx::query_scalar("SELECT id FROM wordings WHERE hash = $1").bind(&hash).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(Wording { id: WordingId(id), text: text.to_owned(), hash })
}

pub(crate) async fn wording(b: &Backend, id: WordingId) -> Result<Option<Wording>> {
    let row = sqlx::query("SELECT id, text, hash FROM wordings WHERE id = $1").bind(id.0).fetch_optional(&b.read).await?;
    row.map(|r| Ok(Wording { id: WordingId(r.try_get("id")?), text: r.try_get("text")?, hash: r.try_get("hash")? }))
        .transpose()
}

pub(crate) async fn wording_ids(b: &Backend) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar("SELECT id FROM wordings").fetch_all(&b.read).await?)
}

fn key_hash(plain: &str) -> Vec<u8> {
    Sha256::digest(plain.as_bytes()).to_vec()
}

pub(crate) async fn create_api_key(b: &Backend, spec: KeySpec) -> Result<NewApiKey> {
    let KeySpec { role, default_topic, default_service, owner } = spec;
    // 256 random bits; the key is shown once, its SHA-256 kept.
    let key = format!("veto_{}", data_encoding_lower(&random32()));
    let prefix = key[..13].to_owned();
    let mut tx = begin(b).await?;
    if let Some(t) = &default_topic {
        let known: Option<i64> = sqlx::query_scalar("SELECT id FROM topics WHERE key = $1")
            .bind(t.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(StoreError::Invalid(format!("unknown topic {t}: add it first with `veto topics add`")));
        }
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_keys (prefix, hash, role, default_topic, default_service, owner, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&prefix)
    .bind(key_hash(&key))
    .bind(role.as_str())
    .bind(default_topic.map(|t| t.as_str().to_owned()))
    .bind(default_service)
    .bind(owner)
    .bind(now_us())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(NewApiKey { id, key, prefix, role })
}

fn data_encoding_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub(crate) async fn api_key(b: &Backend, plain: &str) -> Result<Option<ApiKey>> {
    let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
        .bind(key_hash(plain))
        .fetch_optional(&b.read)
        .await?;
    row.map(|r| {
        let role: String = r.try_get("role")?;
        Ok(ApiKey {
            id: r.try_get("id")?,
            prefix: r.try_get("prefix")?,
            role: role.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
            default_topic: r.try_get("default_topic")?,
            default_service: r.try_get("default_service")?,
            owner: r.try_get("owner")?,
            created_at: ts(r.try_get("created_at")?)?,
        })
    })
    .transpose()
}

pub(crate) async fn token_keys(b: &Backend) -> Result<Vec<(u8, [u8; 32])>> {
    let rows = sqlx::query("SELECT id, secret FROM token_keys WHERE retired_at IS NULL ORDER BY id DESC")
        .fetch_all(&b.read)
        .await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("id")?;
            let secret: Vec<u8> = r.try_get("secret")?;
            Ok((
                u8::try_from(id).map_err(|_| StoreError::Corrupt(format!("token key id {id}")))?,
                secret.try_into().map_err(|_| StoreError::Corrupt("token key is not 32 bytes".into()))?,
            ))
        })
        .collect()
}

pub(crate) async fn rotate_token_key(b: &Backend) -> Result<u8> {
    let mut tx = begin(b).await?;
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM token_keys").fetch_one(&mut *tx).await?;
    let next = max.unwrap_or(0) + 1;
    let id = u8::try_from(next)
        .map_err(|_| StoreError::Invalid("all 255 token key ids are used".into()))?;
    sqlx::query("INSERT INTO token_keys (id, secret, created_at) VALUES ($1, $2, $3)")
        .bind(i64::from(id))
        .bind(random32().to_vec())
        .bind(now_us())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

// ---- receipts ---------------------------------------------------------------------

pub(crate) async fn record_deliveries(b: &Backend, deliveries: Vec<Delivery>) -> Result<()> {
    let mut tx = begin(b).await?;
    let receipts: Vec<&NewReceipt> = deliveries.iter().flat_map(|d| &d.receipts).collect();
    let now = now_us();
    for (actor, recipients) in deliveries.iter().filter_map(|d| d.service.as_ref()) {
        sqlx::query("INSERT INTO service_volume (actor, sent_at, recipients) VALUES ($1, $2, $3)")
            .bind(actor)
            .bind(now)
            .bind(recipients)
            .execute(&mut *tx)
            .await?;
    }
    insert_receipts(&mut tx, &receipts).await?;
    tx.commit().await?;
    count_receipts(&receipts);
    Ok(())
}

/// Counts committed receipts in `/metrics`.
fn count_receipts(receipts: &[&NewReceipt]) {
    for r in receipts {
        crate::metrics::count_receipt(r.allowed, &r.class, r.reason.as_deref());
    }
}

async fn insert_receipts(tx: &mut Tx, receipts: &[&NewReceipt]) -> Result<()> {
    for chunk in receipts.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO receipts (message_id, contact_id, recipient, subject, content_hash, template_version, class, channel, \
             allowed, rule, reason, event_id, checked_at, outcome, relayed_at) ",
        );
        qb.push_values(chunk, |mut row, r| {
            row.push_bind(r.message_id.clone())
                .push_bind(r.contact)
                .push_bind(r.recipient.clone())
                .push_bind(r.subject.clone())
                .push_bind(r.content_hash.clone())
                .push_bind(r.template_version.clone())
                .push_bind(r.class.clone())
                .push_bind(r.channel.clone())
                .push_bind(i64::from(r.allowed))
                .push_bind(r.rule.clone())
                .push_bind(r.reason.clone())
                .push_bind(r.event)
                .push_bind(r.checked_at)
                .push_bind(r.outcome.clone())
                .push_bind(r.relayed_at);
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn receipt_from_row(r: &DbRow) -> Result<Receipt> {
    Ok(Receipt {
        id: r.try_get("id")?,
        receipt: NewReceipt {
            message_id: r.try_get("message_id")?,
            contact: r.try_get("contact_id")?,
            recipient: r.try_get::<Option<String>, _>("recipient")?.unwrap_or_else(|| "(erased)".into()),
            subject: r.try_get("subject")?,
            content_hash: r.try_get("content_hash")?,
            template_version: r.try_get("template_version")?,
            class: r.try_get("class")?,
            channel: r.try_get("channel")?,
            allowed: r.try_get::<i64, _>("allowed")? != 0,
            rule: r.try_get("rule")?,
            reason: r.try_get("reason")?,
            event: r.try_get("event_id")?,
            checked_at: r.try_get("checked_at")?,
            outcome: r.try_get("outcome")?,
            relayed_at: r.try_get("relayed_at")?,
        },
    })
}

pub(crate) async fn receipts_for_message(b: &Backend, message_id: &str) -> Result<Vec<Receipt>> {
    let rows = sqlx::query("SELECT * FROM receipts WHERE message_id = $1 ORDER BY id")
        .bind(message_id)
        .fetch_all(&b.read)
        .await?;
    rows.iter().map(receipt_from_row).collect()
}

pub(crate) async fn receipts_for_contact(b: &Backend, contact: ContactId) -> Result<Vec<Receipt>> {
    let rows = sqlx::query("SELECT * FROM receipts WHERE contact_id = $1 ORDER BY checked_at, id")
        .bind(contact.0)
        .fetch_all(&b.read)
        .await?;
    rows.iter().map(receipt_from_row).collect()
}

// ---- audit ------------------------------------------------------------------------

pub(crate) async fn verify(b: &Backend) -> Result<VerifyReport> {
    const PAGE: i64 = 20_000;
    let mut report = VerifyReport { partitions: crate::PARTITIONS, ..Default::default() };
    let heads: Vec<(i64, i64, Vec<u8>)> = sqlx::query("SELECT partition, seq, hash FROM chain_heads ORDER BY partition")
        .fetch_all(&b.read)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("partition")?, r.try_get("seq")?, r.try_get("hash")?)))
        .collect::<Result<_>>()?;
    'partition: for p in 0..crate::PARTITIONS {
        let problem = |event: Option<i64>, seq: Option<i64>, problem: String| VerifyProblem { partition: p, event, seq, problem };
        let Some((_, head_seq, head_hash)) = heads.iter().find(|h| h.0 == p).cloned() else {
            report.problems.push(problem(None, None, format!("the head of chain partition {p} is missing")));
            continue;
        };
        let mut prev = vec![0u8; 32];
        let mut expected = 1i64;
        loop {
            let rows = sqlx::query(
                "SELECT e.*, pd.salt AS pd_salt, pd.body AS pd_body, pd.hash AS pd_row_hash, \
                 pd.evidence_purged_at AS pd_purged_at, pd.purged_hash AS pd_purged_hash, c.erased_at AS erased_at \
                 FROM events e LEFT JOIN personal_data pd ON pd.id = e.pd_id LEFT JOIN contacts c ON c.id = e.contact_id \
                 WHERE e.partition = $1 AND e.seq >= $2 ORDER BY e.seq LIMIT $3",
            )
            .bind(p)
            .bind(expected)
            .bind(PAGE)
            .fetch_all(&b.read)
            .await?;
            let n = rows.len() as i64;
            for r in &rows {
                let mut rec = record_from_row(r)?;
                let stored: Vec<u8> = r.try_get("hash")?;
                if rec.seq != expected {
                    report.problems.push(problem(
                        Some(rec.id),
                        Some(rec.seq),
                        format!(
                            "event #{} has seq {} where seq {expected} was expected: events were deleted or reordered before it",
                            rec.id, rec.seq
                        ),
                    ));
                    continue 'partition;
                }
                if rec.prev_hash != prev {
                    report.problems.push(problem(
                        Some(rec.id),
                        Some(rec.seq),
                        format!("event #{} does not link to the event before it: the chain was edited or reordered here", rec.id),
                    ));
                    continue 'partition;
                }
                rec.prev_hash = prev.clone();
                if rec.hash().as_slice() != stored.as_slice() {
                    report.problems.push(problem(
                        Some(rec.id),
                        Some(rec.seq),
                        format!("event #{} was altered: its contents no longer match its hash", rec.id),
                    ));
                    continue 'partition;
                }
                if let Some(pd_id) = rec.pd_id {
                    let salt: Option<Vec<u8>> = r.try_get("pd_salt")?;
                    let body: Option<String> = r.try_get("pd_body")?;
                    let row_hash: Option<Vec<u8>> = r.try_get("pd_row_hash")?;
                    let erased: Option<i64> = r.try_get("erased_at")?;
                    let purged: Option<i64> = r.try_get("pd_purged_at")?;
                    let purged_hash: Option<Vec<u8>> = r.try_get("pd_purged_hash")?;
                    match (salt, body) {
                        (Some(salt), Some(body)) => {
                            report.personal_rows_checked += 1;
                            let h = personal_hash(&salt, &body).to_vec();
                            // After the retention purge the row holds less than
                            // the event's hash covers: it is still the row the
                            // event names (`hash`), and what is left matches the
                            // hash the purge wrote.
                            let intact = if purged.is_some() {
                                row_hash.is_some() && row_hash == rec.pd_hash && Some(&h) == purged_hash.as_ref()
                            } else {
                                Some(&h) == rec.pd_hash.as_ref() && Some(&h) == row_hash.as_ref()
                            };
                            if !intact {
                                report.problems.push(problem(
                                    Some(rec.id),
                                    Some(rec.seq),
                                    format!("personal data row #{pd_id} of event #{} was altered", rec.id),
                                ));
                                continue 'partition;
                            }
                        }
                        _ if erased.is_none() => {
                            report.problems.push(problem(
                                Some(rec.id),
                                Some(rec.seq),
                                format!(
                                    "personal data row #{pd_id} of event #{} is missing, but its contact was not erased",
                                    rec.id
                                ),
                            ));
                            continue 'partition;
                        }
                        _ => {}
                    }
                }
                report.events += 1;
                prev = stored;
                expected += 1;
            }
            if n < PAGE {
                break;
            }
        }
        let last = expected - 1;
        if head_seq != last || head_hash != prev {
            let what = if head_seq > last {
                format!(
                    "chain partition {p} ends at seq {last}, but its head says {head_seq}: the newest events were deleted"
                )
            } else {
                format!("chain partition {p} ends at seq {last}, but its head (seq {head_seq}) does not match it")
            };
            report.problems.push(problem(None, Some(last + 1), what));
        }
    }
    (report.staff_actions, report.staff_problem) = verify_staff_audit(b).await?;
    Ok(report)
}

// ---- signups ----

fn signup_from_row(r: &DbRow) -> Result<Signup> {
    let id: i64 = r.try_get("id")?;
    let email: String = r.try_get("email")?;
    let email = EmailAddress::parse(&email).map_err(|e| StoreError::Corrupt(format!("signup #{id}: {e}")))?;
    let topic = match r.try_get::<Option<i64>, _>("topic_id")? {
        None => None,
        Some(t) => Some(TopicId(
            u16::try_from(t).map_err(|_| StoreError::Corrupt(format!("signup #{id}: topic id {t} out of range")))?,
        )),
    };
    let confirmed = match r.try_get::<Option<i64>, _>("confirmed_at")? {
        None => None,
        Some(at) => Some(SignupConfirmation {
            at: ts(at)?,
            ip: r.try_get("confirm_ip")?,
            user_agent: r.try_get("confirm_user_agent")?,
            event: r.try_get::<Option<i64>, _>("event_id")?.map(veto_core::EventId),
        }),
    };
    Ok(Signup {
        id,
        request: NewSignup {
            email,
            topic,
            wording: WordingId(r.try_get("wording_id")?),
            ip: r.try_get("ip")?,
            user_agent: r.try_get("user_agent")?,
            form_url: r.try_get("form_url")?,
        },
        requested_at: ts(r.try_get("requested_at")?)?,
        confirmed,
    })
}

pub(crate) async fn create_signup(
    b: &Backend,
    s: NewSignup,
    now: Timestamp,
    quiet: std::time::Duration,
) -> Result<SignupRequested> {
    let hash = addr_hash(&suppression_key(b).await?, s.email.key());
    let now = now.as_microsecond();
    let quiet = i64::try_from(quiet.as_micros()).unwrap_or(i64::MAX);
    let mut tx = begin(b).await?;
    // Claims the address's mail slot if it is free (never mailed, or not
    // within the quiet period). On PostgreSQL a concurrent claim waits on
    // the row and then sees the new time; SQLite holds the write lock.
    let claimed: Option<i64> = sqlx::query_scalar(
        "INSERT INTO signup_mails (addr_hash, last_sent_at) VALUES ($1, $2) \
         ON CONFLICT (addr_hash) DO UPDATE SET last_sent_at = excluded.last_sent_at \
         WHERE signup_mails.last_sent_at <= $3 RETURNING last_sent_at",
    )
    .bind(&hash)
    .bind(now)
    .bind(now.saturating_sub(quiet))
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_none() {
        let at: i64 = sqlx::query_scalar("SELECT last_sent_at FROM signup_mails WHERE addr_hash = $1")
            .bind(&hash)
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        return Ok(SignupRequested::RecentlyMailed { at: ts(at)? });
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO signups (email_key, email, topic_id, wording_id, ip, user_agent, form_url, requested_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(s.email.key())
    .bind(s.email.as_str())
    .bind(s.topic.map(|t| i64::from(t.0)))
    .bind(s.wording.0)
    .bind(s.ip)
    .bind(s.user_agent)
    .bind(s.form_url)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(SignupRequested::Created { id })
}

pub(crate) async fn signup(b: &Backend, id: i64) -> Result<Option<Signup>> {
    let row = sqlx::query("SELECT * FROM signups WHERE id = $1").bind(id).fetch_optional(&b.read).await?;
    row.as_ref().map(signup_from_row).transpose()
}

pub(crate) async fn cancel_signup(b: &Backend, id: i64) -> Result<()> {
    let skey = suppression_key(b).await?;
    let mut tx = begin(b).await?;
    let row = sqlx::query("SELECT email_key, requested_at FROM signups WHERE id = $1 AND confirmed_at IS NULL")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = row {
        let key: String = row.try_get("email_key")?;
        let at: i64 = row.try_get("requested_at")?;
        sqlx::query("DELETE FROM signups WHERE id = $1").bind(id).execute(&mut *tx).await?;
        // Only the claim this signup made: a newer one stays.
        sqlx::query("DELETE FROM signup_mails WHERE addr_hash = $1 AND last_sent_at = $2")
            .bind(addr_hash(&skey, &key))
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn confirm_signup(
    b: &Backend,
    id: i64,
    ip: Option<String>,
    user_agent: Option<String>,
    at: Timestamp,
) -> Result<SignupConfirmed> {
    let mut tx = begin(b).await?;
    // Two confirmations at once: the second waits here, then sees the first.
    let sql = if IS_PG {
        "SELECT * FROM signups WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM signups WHERE id = $1"
    };
    let Some(row) = sqlx::query(sql).bind(id).fetch_optional(&mut *tx).await? else {
        return Ok(SignupConfirmed::NotFound);
    };
    let signup = signup_from_row(&row)?;
    if let Some(done) = signup.confirmed {
        return Ok(SignupConfirmed::AlreadyConfirmed { event: done.event });
    }
    let s = signup.request;
    let item = Append {
        contact: ContactInput::new(s.email),
        event: NewEvent {
            kind: EventKind::Grant,
            scope: s.topic.map_or(Scope::All, Scope::Topic),
            channel: Some(Channel::Email),
            source: Source::DoubleOptIn,
            at,
        },
        evidence: Evidence { wording: Some(s.wording.0), ip: ip.clone(), user_agent: user_agent.clone(), form_url: s.form_url },
        actor: "person".into(),
    };
    match append_in(b, &mut tx, vec![item], &mut Default::default()).await?.pop() {
        Some(AppendOutcome::Recorded { contact, event, .. }) => {
            sqlx::query(
                "UPDATE signups SET confirmed_at = $1, confirm_ip = $2, confirm_user_agent = $3, event_id = $4 WHERE id = $5",
            )
            .bind(at.as_microsecond())
            .bind(ip)
            .bind(user_agent)
            .bind(event.0)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(SignupConfirmed::Recorded { contact, event })
        }
        Some(AppendOutcome::Refused(r)) => {
            tx.rollback().await?;
            Ok(SignupConfirmed::Refused(r))
        }
        None => Err(StoreError::Corrupt("a confirmation produced no outcome".into())),
    }
}

// ---- relay memory, service brake -------------------------------------------

pub(crate) async fn relayed_recipients(b: &Backend, message_key: &str, since: Timestamp) -> Result<Vec<String>> {
    // The gateway reads it through `relayed_and_state`; this is for the rest.
    let recipients: Vec<Option<String>> =
        sqlx::query_scalar("SELECT recipient FROM receipts WHERE message_id = $1 AND relayed_at >= $2")
            .bind(message_key)
            .bind(since.as_microsecond())
            .fetch_all(&b.read)
            .await?;
    // An erased recipient's receipt keeps no address: nothing to match.
    Ok(recipients.into_iter().flatten().collect())
}

/// `relayed_recipients` and `load_state`, read at one moment (one read
/// transaction on SQLite's direct path).
pub(crate) async fn relayed_and_state(
    b: &Backend,
    message_key: &str,
    since: Timestamp,
    email: &EmailAddress,
    now: Timestamp,
) -> Result<(Vec<String>, crate::GuardState)> {
    if let Some(direct) = &b.direct {
        let skey = suppression_key(b).await?;
        return direct.relayed_and_state(message_key, since, email.key(), &addr_hash(&skey, email.key()), now);
    }
    let relayed = relayed_recipients(b, message_key, since).await?;
    Ok((relayed, load_state(b, email, now).await?))
}

pub(crate) async fn prune_relayed(b: &Backend, before: Timestamp) -> Result<u64> {
    let done = sqlx::query("UPDATE receipts SET relayed_at = NULL WHERE relayed_at < $1")
        .bind(before.as_microsecond())
        .execute(&b.write)
        .await?;
    sqlx::query("DELETE FROM service_volume WHERE sent_at < $1")
        .bind(before.as_microsecond())
        .execute(&b.write)
        .await?;
    Ok(done.rows_affected())
}

/// Recipients of service mail `actor` sent since `since`.
pub(crate) async fn service_volume(b: &Backend, actor: &str, since: Timestamp) -> Result<i64> {
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(SUM(recipients) AS BIGINT) FROM service_volume WHERE actor = $1 AND sent_at >= $2",
    )
    .bind(actor)
    .bind(since.as_microsecond())
    .fetch_one(&b.read)
    .await?;
    Ok(n.unwrap_or(0))
}

fn approval_from_row(r: &DbRow) -> Result<Approval> {
    let approved_at: Option<i64> = r.try_get("approved_at")?;
    Ok(Approval {
        id: r.try_get("id")?,
        actor: r.try_get("actor")?,
        owner: r.try_get("owner")?,
        class: r.try_get("class")?,
        recipients: r.try_get("recipients")?,
        window_count: r.try_get("window_count")?,
        requested_at: ts(r.try_get("requested_at")?)?,
        approved_by: r.try_get("approved_by")?,
        approver_owner: r.try_get("approver_owner")?,
        approved_at: approved_at.map(ts).transpose()?,
    })
}

/// The pending request of `actor`, or a new one: a tool retrying a held
/// send does not file a request per attempt.
pub(crate) async fn hold_for_approval(b: &Backend, hold: HoldRequest) -> Result<Approval> {
    let mut tx = begin(b).await?;
    let pending = sqlx::query("SELECT * FROM approvals WHERE actor = $1 AND approved_at IS NULL ORDER BY id DESC LIMIT 1")
        .bind(&hold.actor)
        .fetch_optional(&mut *tx)
        .await?;
    let row = match pending {
        Some(row) => {
            let id: i64 = row.try_get("id")?;
            let sql = if IS_PG {
                "UPDATE approvals SET recipients = GREATEST(recipients, $1), window_count = $2 WHERE id = $3 RETURNING *"
            } else {
                "UPDATE approvals SET recipients = MAX(recipients, $1), window_count = $2 WHERE id = $3 RETURNING *"
            };
            sqlx::query(sql)
            .bind(hold.recipients)
            .bind(hold.window_count)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
        }
        None => {
            sqlx::query(
                "INSERT INTO approvals (actor, owner, class, recipients, window_count, requested_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(&hold.actor)
            .bind(&hold.owner)
            .bind(&hold.class)
            .bind(hold.recipients)
            .bind(hold.window_count)
            .bind(hold.at.as_microsecond())
            .fetch_one(&mut *tx)
            .await?
        }
    };
    let approval = approval_from_row(&row)?;
    tx.commit().await?;
    Ok(approval)
}

pub(crate) async fn approval(b: &Backend, id: i64) -> Result<Option<Approval>> {
    sqlx::query("SELECT * FROM approvals WHERE id = $1")
        .bind(id)
        .fetch_optional(&b.read)
        .await?
        .map(|r| approval_from_row(&r))
        .transpose()
}

pub(crate) async fn approvals(b: &Backend, pending_only: bool) -> Result<Vec<Approval>> {
    let sql = if pending_only {
        "SELECT * FROM approvals WHERE approved_at IS NULL ORDER BY id"
    } else {
        "SELECT * FROM approvals ORDER BY id"
    };
    sqlx::query(sql).fetch_all(&b.read).await?.iter().map(approval_from_row).collect()
}

/// When `actor`'s latest approved hold was approved.
pub(crate) async fn latest_approval(b: &Backend, actor: &str) -> Result<Option<Timestamp>> {
    let at: Option<i64> = sqlx::query_scalar("SELECT MAX(approved_at) FROM approvals WHERE actor = $1")
        .bind(actor)
        .fetch_one(&b.read)
        .await?;
    at.map(ts).transpose()
}

/// Records the approval, once; approving again changes nothing.
pub(crate) async fn approve(b: &Backend, id: i64, by: &str, by_owner: &str, at: Timestamp) -> Result<Approval> {
    let mut tx = begin(b).await?;
    let row = sqlx::query(
        "UPDATE approvals SET approved_by = $1, approver_owner = $2, approved_at = $3 \
         WHERE id = $4 AND approved_at IS NULL RETURNING *",
    )
    .bind(by)
    .bind(by_owner)
    .bind(at.as_microsecond())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let row = match row {
        Some(row) => row,
        None => sqlx::query("SELECT * FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("approval {id}")))?,
    };
    let approval = approval_from_row(&row)?;
    tx.commit().await?;
    Ok(approval)
}

// ---- mail to veto's own addresses --------------------------------------------------

pub(crate) async fn record_inbound(b: &Backend, r: NewInboundReport, limit: SoftBounceLimit) -> Result<InboundOutcome> {
    let mut tx = begin(b).await?;
    let Some(email) = lock_contact(&mut tx, r.contact).await? else {
        return Ok(InboundOutcome::NoContact);
    };
    let actor = match r.kind {
        InboundKind::Complaint => "feedback:arf",
        _ => "feedback:dsn",
    };
    let mut tally = crate::metrics::Tally::default();
    let outcome = record_inbound_in(b, &mut tx, r, email, limit, actor, &mut tally).await?;
    if outcome != InboundOutcome::Duplicate {
        tx.commit().await?;
        tally.publish();
    }
    Ok(outcome)
}

/// The contact's address, locking the contact for this transaction (SQLite's
/// write lock does this already): two soft bounces at once must not both
/// count four of five. `None` if erased or unknown.
async fn lock_contact(tx: &mut Tx, contact: ContactId) -> Result<Option<EmailAddress>> {
    let sql = if IS_PG { "SELECT email FROM contacts WHERE id = $1 FOR UPDATE" } else { "SELECT email FROM contacts WHERE id = $1" };
    let email: Option<Option<String>> = sqlx::query_scalar(sql).bind(contact.0).fetch_optional(&mut **tx).await?;
    Ok(email.flatten().and_then(|e| EmailAddress::parse(&e).ok()))
}

/// Records one report and the ledger event it leads to, inside `tx`
/// (the caller commits). `actor` names who reported a hard bounce or a
/// complaint.
async fn record_inbound_in(
    b: &Backend,
    tx: &mut Tx,
    r: NewInboundReport,
    email: EmailAddress,
    limit: SoftBounceLimit,
    actor: &str,
    tally: &mut crate::metrics::Tally,
) -> Result<InboundOutcome> {
    let at = r.received_at.as_microsecond();
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO inbound_reports (contact_id, report_key, kind, received_at, peer_ip, envelope_from, envelope_to, \
         message_id, status, diagnostic, reporting_mta, feedback_type) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (contact_id, report_key) DO NOTHING RETURNING id",
    )
    .bind(r.contact.0)
    .bind(&r.key)
    .bind(r.kind.name())
    .bind(at)
    .bind(&r.peer_ip)
    .bind(&r.envelope_from)
    .bind(&r.envelope_to)
    .bind(&r.message_id)
    .bind(&r.status)
    .bind(&r.diagnostic)
    .bind(&r.reporting_mta)
    .bind(&r.feedback_type)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(id) = id else {
        return Ok(InboundOutcome::Duplicate);
    };
    let evidence = Evidence { ip: r.peer_ip.clone(), ..Evidence::default() };
    let feedback = |kind: EventKind, actor: &str| Append {
        contact: ContactInput::new(email.clone()),
        event: NewEvent { kind, scope: Scope::All, channel: Some(Channel::Email), source: Source::Feedback, at: r.received_at },
        evidence: evidence.clone(),
        actor: actor.to_owned(),
    };
    let window = i64::try_from(limit.window.as_micros()).unwrap_or(i64::MAX);
    let since = at.saturating_sub(window);
    let item = match r.kind {
        InboundKind::Unsubscribe(scope) => {
            Append::withdrawal_by_person(email.clone(), scope, Source::Mailto, evidence.clone(), r.received_at)
        }
        InboundKind::HardBounce => feedback(EventKind::HardBounce, actor),
        InboundKind::Complaint => feedback(EventKind::Complaint, actor),
        InboundKind::SoftBounce => {
            // Soft bounces not yet part of a hard bounce, this one included,
            // whichever way they came (DSN or a provider's webhook).
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM inbound_reports WHERE contact_id = $1 AND kind = 'soft_bounce' \
                 AND event_id IS NULL AND received_at > $2",
            )
            .bind(r.contact.0)
            .bind(since)
            .fetch_one(&mut **tx)
            .await?;
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            if count < limit.threshold {
                return Ok(InboundOutcome::SoftBounceCounted { count, threshold: limit.threshold });
            }
            feedback(EventKind::HardBounce, "feedback:soft-bounces")
        }
    };
    match append_in(b, tx, vec![item], tally).await?.pop() {
        Some(AppendOutcome::Recorded { event, .. }) => {
            if r.kind == InboundKind::SoftBounce {
                sqlx::query(
                    "UPDATE inbound_reports SET event_id = $1 WHERE contact_id = $2 AND kind = 'soft_bounce' \
                     AND event_id IS NULL AND received_at > $3",
                )
                .bind(event.0)
                .bind(r.contact.0)
                .bind(since)
                .execute(&mut **tx)
                .await?;
            } else {
                sqlx::query("UPDATE inbound_reports SET event_id = $1 WHERE id = $2").bind(event.0).bind(id).execute(&mut **tx).await?;
            }
            Ok(InboundOutcome::Recorded { event })
        }
        // Kept without an event: a second delivery is still a duplicate.
        Some(AppendOutcome::Refused(refusal)) => Ok(InboundOutcome::Refused(refusal)),
        None => Err(StoreError::Corrupt("an inbound report produced no outcome".into())),
    }
}

/// A provider's event, once per `(provider, event_id)`: the idempotency row,
/// each known recipient's report and ledger event, all in one transaction.
pub(crate) async fn record_provider_event(b: &Backend, e: ProviderEvent, limit: SoftBounceLimit) -> Result<ProviderOutcome> {
    let mut tx = begin(b).await?;
    let mut tally = crate::metrics::Tally::default();
    let fresh: Option<String> = sqlx::query_scalar(
        "INSERT INTO provider_events (provider, event_id, event_type, received_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (provider, event_id) DO NOTHING RETURNING provider",
    )
    .bind(e.provider.name())
    .bind(&e.event_id)
    .bind(&e.event_type)
    .bind(e.received_at.as_microsecond())
    .fetch_optional(&mut *tx)
    .await?;
    if fresh.is_none() {
        return Ok(ProviderOutcome::Duplicate);
    }
    let actor = format!("feedback:{}", e.provider.name());
    let mut outcomes = Vec::with_capacity(e.recipients.len());
    for recipient in &e.recipients {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM contacts WHERE email_key = $1")
            .bind(recipient.email.key())
            .fetch_optional(&mut *tx)
            .await?;
        let locked = match id {
            Some(id) => lock_contact(&mut tx, ContactId(id)).await?.map(|email| (ContactId(id), email)),
            None => None,
        };
        let Some((contact, email)) = locked else {
            outcomes.push(InboundOutcome::NoContact);
            continue;
        };
        let report = recipient.report(&e, contact);
        outcomes.push(record_inbound_in(b, &mut tx, report, email, limit, &actor, &mut tally).await?);
    }
    tx.commit().await?;
    tally.publish();
    Ok(ProviderOutcome::Recorded(outcomes))
}

pub(crate) async fn inbound_reports_of(b: &Backend, contact: ContactId) -> Result<Vec<InboundReport>> {
    let rows = sqlx::query("SELECT * FROM inbound_reports WHERE contact_id = $1 ORDER BY received_at, id")
        .bind(contact.0)
        .fetch_all(&b.read)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(InboundReport {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                key: r.try_get("report_key")?,
                event: r.try_get("event_id")?,
                received_at: ts(r.try_get("received_at")?)?.to_string(),
                peer_ip: r.try_get("peer_ip")?,
                envelope_from: r.try_get("envelope_from")?,
                envelope_to: r.try_get("envelope_to")?,
                message_id: r.try_get("message_id")?,
                status: r.try_get("status")?,
                diagnostic: r.try_get("diagnostic")?,
                reporting_mta: r.try_get("reporting_mta")?,
                feedback_type: r.try_get("feedback_type")?,
            })
        })
        .collect()
}
