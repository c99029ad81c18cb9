//! Operations on the store as a whole: the retention purge, what `/metrics`
//! reads from the store, and the SQLite online backup with the checks a
//! backup must pass before it is trusted.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use veto_core::Timestamp;

use crate::{Result, SCHEMA_VERSION, Store, StoreError, VerifyReport, metrics};

/// How long each kind of record is kept (`[retention]`). `None`: for ever.
/// Suppression entries and the ledger's events are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub receipts: Option<Duration>,
    pub evidence: Option<Duration>,
    pub relay_records: Duration,
}

/// What a purge removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub receipts: u64,
    pub evidence: EvidencePurged,
    pub relay_records: u64,
}

/// Records whose IP address and user agent were blanked.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct EvidencePurged {
    /// Personal-data rows of ledger events (the events themselves stay).
    pub ledger_rows: u64,
    /// Double opt-in signups.
    pub signups: u64,
    /// Records of mail to veto's own addresses.
    pub inbound_reports: u64,
    /// Answered data-subject requests whose address was blanked.
    pub requests: u64,
}

/// What the checks of a backup file found.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub schema_version: i64,
    pub contacts: i64,
    pub events: i64,
    pub suppressions: i64,
    /// The hash chains, when the file's schema is this build's (an older
    /// one is verified after it is migrated, see `veto restore`).
    pub verify: Option<VerifyReport>,
}

fn before(now: Timestamp, keep: Duration) -> Result<Timestamp> {
    let keep = jiff::SignedDuration::try_from(keep)
        .map_err(|_| StoreError::Invalid("retention period out of range".into()))?;
    now.checked_sub(keep)
        .map_err(|_| StoreError::Invalid("retention period out of range".into()))
}

impl Store {
    /// Deletes receipts and relay records, and blanks evidence (IP address,
    /// user agent), older than `retention` allows. Suppression entries and
    /// ledger events are never touched, so `veto audit verify` still passes.
    /// With `dry_run`, counts what would go and changes nothing.
    pub async fn purge(
        &self,
        retention: &Retention,
        now: Timestamp,
        dry_run: bool,
    ) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        if let Some(keep) = retention.receipts {
            let cut = before(now, keep)?.as_microsecond();
            report.receipts = match self {
                Store::Sqlite(b) => crate::sqlite::purge_receipts(b, cut, dry_run).await,
                Store::Postgres(b) => crate::postgres::purge_receipts(b, cut, dry_run).await,
            }?;
        }
        if let Some(keep) = retention.evidence {
            let cut = before(now, keep)?.as_microsecond();
            report.evidence = match self {
                Store::Sqlite(b) => crate::sqlite::purge_evidence(b, cut, dry_run).await,
                Store::Postgres(b) => crate::postgres::purge_evidence(b, cut, dry_run).await,
            }?;
        }
        let cut = before(now, retention.relay_records)?;
        report.relay_records = match self {
            Store::Sqlite(b) => crate::sqlite::purge_relayed(b, cut, dry_run).await,
            Store::Postgres(b) => crate::postgres::purge_relayed(b, cut, dry_run).await,
        }?;
        Ok(report)
    }

    /// What `/metrics` reads from the store: the campaign queue, and how
    /// long a trivial query takes now. A store that does not answer gives
    /// `ping: None`.
    pub async fn metrics_gauges(&self) -> metrics::StoreGauges {
        let ping = match self {
            Store::Sqlite(b) => crate::sqlite::ping(b).await,
            Store::Postgres(b) => crate::postgres::ping(b).await,
        };
        let queue = match self {
            Store::Sqlite(b) => crate::sqlite::campaign_queue_depth(b).await,
            Store::Postgres(b) => crate::postgres::campaign_queue_depth(b).await,
        };
        metrics::StoreGauges {
            campaign_queue: queue.unwrap_or(0),
            ping: ping.ok(),
        }
    }

    /// Writes a consistent copy of the SQLite store to `to` (which must not
    /// exist) while it is in use (`VACUUM INTO`: one read transaction, so
    /// writers go on), synced to disk, in rollback-journal mode so that the
    /// one file is the whole backup. PostgreSQL is backed up with
    /// `pg_dump`, not here.
    pub async fn backup_sqlite(&self, to: &Path) -> Result<()> {
        let Store::Sqlite(b) = self else {
            return Err(StoreError::Invalid(
                "the store is PostgreSQL: back it up with pg_dump (see the README)".into(),
            ));
        };
        let target = to
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("{} is not a UTF-8 path", to.display())))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&b.read)
            .await?;
        sqlite_single_file(to).await?;
        let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
        sync(to).map_err(|e| StoreError::Invalid(format!("cannot sync {}: {e}", to.display())))?;
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The new file's directory entry, on filesystems that need it.
            let _ = sync(dir);
        }
        Ok(())
    }
}

/// Leaves the SQLite database at `path` as one self-contained file: its
/// write-ahead log checkpointed and gone (rollback-journal mode; `veto
/// serve` turns WAL on again when it opens it). Nothing else may have it open.
pub async fn sqlite_single_file(path: &Path) -> Result<()> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .connect()
        .await?;
    sqlx::query("PRAGMA journal_mode = DELETE")
        .execute(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await?;
    Ok(())
}

/// Checks a SQLite backup file without changing it: SQLite's integrity
/// check, that it is a veto store of a schema this build understands, that
/// it holds the suppression secret (without it erased addresses could no
/// longer be recognised), and — when its schema is this build's — every
/// hash chain.
pub async fn inspect_sqlite(path: &Path) -> Result<Inspection> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    if !path.is_file() {
        return Err(StoreError::NotFound(format!("the file {}", path.display())));
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .read_only(true)
        .immutable(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| {
            StoreError::Invalid(format!("{} is not a SQLite database: {e}", path.display()))
        })?;
    let result = inspect_pool(path, &pool).await;
    pool.close().await;
    result
}

async fn inspect_pool(path: &Path, pool: &sqlx::SqlitePool) -> Result<Inspection> {
    let shown = path.display();
    let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(pool)
        .await
        .map_err(|e| StoreError::Invalid(format!("{shown} is not a SQLite database: {e}")))?;
    if integrity.first().map(String::as_str) != Some("ok") {
        let first: Vec<&str> = integrity.iter().take(3).map(String::as_str).collect();
        return Err(StoreError::Corrupt(format!(
            "{shown} fails SQLite's integrity check: {}",
            first.join("; ")
        )));
    }
    let has_schema: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'veto_schema'",
    )
    .fetch_one(pool)
    .await?;
    if has_schema == 0 {
        return Err(StoreError::Invalid(format!(
            "{shown} is a SQLite database but not a veto store (it has no veto_schema table)"
        )));
    }
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM veto_schema")
        .fetch_one(pool)
        .await?;
    let version = version.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let secret: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM server_secrets WHERE name = 'suppression'")
            .fetch_one(pool)
            .await?;
    if secret == 0 {
        return Err(StoreError::Corrupt(format!(
            "{shown} holds no suppression secret: erased addresses in it could no longer be recognised"
        )));
    }
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(pool)
            .await
    };
    let verify = if version == SCHEMA_VERSION {
        let store = Store::Sqlite(crate::sqlite::Backend::new(pool.clone(), pool.clone()));
        Some(store.verify().await?)
    } else {
        None
    };
    Ok(Inspection {
        schema_version: version,
        contacts: count("contacts").await?,
        events: count("events").await?,
        suppressions: count("suppressions").await?,
        verify,
    })
}
