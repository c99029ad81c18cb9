//! Running veto: `veto backup`, `veto restore`, `veto purge`, the daily
//! purge and the lock that `veto serve` holds on a SQLite data directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use veto_core::Timestamp;
use veto_store::{Retention, Store};

use crate::app::{self, App};
use crate::config::Config;

/// Exit status when the command cannot do what was asked (nothing was changed).
const EXIT_REFUSED: u8 = 2;

const PG_BACKUP: &str = "this installation's store is PostgreSQL ([store] url), which veto does not copy itself: \
back it up with `pg_dump --format=custom --file=veto.dump \"$URL\"` and restore it with \
`pg_restore --clean --if-exists --dbname=\"$URL\" veto.dump` (see \"Running in production\" in the README)";

/// `[retention]` as the store takes it.
pub fn retention(config: &Config) -> Retention {
    let r = &config.retention;
    Retention {
        receipts: r.receipts,
        evidence: r.evidence,
        relay_records: r.relay_records,
    }
}

/// `[metrics]` as the web side takes it.
pub fn metrics_access(config: &Config) -> veto_web::MetricsAccess {
    let m = &config.metrics;
    veto_web::MetricsAccess {
        networks: veto_web::TrustedProxies(
            m.allowed_networks
                .iter()
                .map(|c| (c.addr(), c.prefix_len()))
                .collect(),
        ),
        bearer_token: (!m.bearer_token.is_empty()).then(|| m.bearer_token.expose().to_owned()),
    }
}

// ---- the lock ------------------------------------------------------------------------

/// An exclusive lock on a SQLite data directory (`veto.lock`), held by
/// `veto serve` while it runs and by `veto restore` while it works, so that
/// a restore never replaces a store in use. The operating system drops it
/// when the process ends, however it ends.
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock, or says who holds it.
    pub fn take(data_dir: &Path, what: &str) -> Result<DataLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let path = data_dir.join("veto.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another veto process".to_owned()
                } else {
                    holder.to_owned()
                };
                bail!(
                    "the store in {} is in use by {holder}; stop it first",
                    data_dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Who holds it, for the message above.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{what} (pid {})", std::process::id());
        let _ = file.flush();
        Ok(DataLock { _file: file })
    }
}

// ---- backup ---------------------------------------------------------------------------

pub async fn backup(cfg: Option<&Path>, file: &Path) -> Result<ExitCode> {
    let config = app::load_config(cfg)?;
    let Some(db) = config.store.database_path() else {
        eprintln!("veto backup: {PG_BACKUP}");
        return Ok(ExitCode::from(EXIT_REFUSED));
    };
    if file.exists() {
        bail!(
            "{} already exists: veto backup never overwrites a file; name a new one",
            file.display()
        );
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!("{} is not a directory", dir.display());
    }
    let app = App::open_with(config).await?;
    app.store
        .backup_sqlite(file)
        .await
        .with_context(|| format!("cannot write the backup {}", file.display()))?;
    let inspection = veto_store::inspect_sqlite(file)
        .await
        .with_context(|| format!("the backup {} does not pass its checks", file.display()))?;
    if let Some(report) = inspection.verify.as_ref().filter(|r| !r.ok()) {
        bail!(
            "the backup {} was written, but its hash chains do not verify ({}); the store itself may be damaged: run `veto audit verify`",
            file.display(),
            first_problem(report)
        );
    }
    app.audit(
        "store.backup",
        Some(file.display().to_string()),
        json!({"events": inspection.events, "schema_version": inspection.schema_version}),
    )
    .await?;
    println!(
        "backed up {} to {}: {} contacts, {} events, {} suppression entries, schema version {}; \
         integrity and hash chains verified",
        db.display(),
        file.display(),
        inspection.contacts,
        inspection.events,
        inspection.suppressions,
        inspection.schema_version
    );
    Ok(ExitCode::SUCCESS)
}

fn first_problem(report: &veto_store::VerifyReport) -> String {
    report
        .problems
        .first()
        .map(|p| format!("partition {}: {}", p.partition, p.problem))
        .or_else(|| report.staff_problem.as_ref().map(|p| p.problem.clone()))
        .unwrap_or_else(|| "unknown problem".to_owned())
}

// ---- restore --------------------------------------------------------------------------

fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn sync_dir(dir: &Path) {
    // Makes renames durable where the filesystem needs it; best effort.
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

pub async fn restore(cfg: Option<&Path>, file: &Path, replace: bool) -> Result<ExitCode> {
    let config = app::load_config(cfg)?;
    let Some(target) = config.store.database_path() else {
        eprintln!("veto restore: {PG_BACKUP}");
        return Ok(ExitCode::from(EXIT_REFUSED));
    };
    let refuse = |why: String| {
        eprintln!("veto restore: refused: {why}; nothing was changed");
        Ok(ExitCode::from(EXIT_REFUSED))
    };
    if !file.is_file() {
        return refuse(format!("{} is not a file", file.display()));
    }
    if beside(file, "-wal").exists() {
        return refuse(format!(
            "{} has a write-ahead log beside it ({}-wal): it is a store in use or one not closed cleanly, \
             not a backup; make one with `veto backup`",
            file.display(),
            file.display()
        ));
    }
    if let (Ok(a), Ok(b)) = (file.canonicalize(), target.canonicalize())
        && a == b
    {
        return refuse(format!("{} is the store itself", file.display()));
    }
    let _lock = match DataLock::take(&config.store.data_dir, "veto restore") {
        Ok(lock) => lock,
        Err(e) => return refuse(format!("{e:#}")),
    };
    if target.exists() && !replace {
        return refuse(format!(
            "{} already holds a store; to put the backup in its place run `veto restore {} --replace` \
             (the current store is then kept beside it, renamed, not deleted)",
            target.display(),
            file.display()
        ));
    }

    // 1. The backup as it is: integrity, a schema this build knows, the
    //    suppression secret, and (same schema) the hash chains.
    let inspection = match veto_store::inspect_sqlite(file).await {
        Ok(i) => i,
        Err(e) => return refuse(format!("{}: {e}", file.display())),
    };
    if let Some(report) = inspection.verify.as_ref().filter(|r| !r.ok()) {
        return refuse(format!(
            "the hash chains in {} do not verify ({})",
            file.display(),
            first_problem(report)
        ));
    }

    // 2. A copy beside the store, migrated to this build's schema and
    //    verified again; only then is it put in place.
    let staging = beside(&target, ".restoring");
    for stale in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(beside(&staging, stale));
    }
    std::fs::copy(file, &staging)
        .with_context(|| format!("cannot copy {} to {}", file.display(), staging.display()))?;
    let checked = check_staged(&staging).await;
    let report = match checked {
        Ok(report) => report,
        Err(e) => {
            for f in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(beside(&staging, f));
            }
            return refuse(format!("{}: {e:#}", file.display()));
        }
    };
    File::open(&staging)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", staging.display()))?;

    // 3. The current store (with its WAL) moves aside; the copy takes its place.
    let mut kept = None;
    if target.exists() {
        let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let aside = beside(&target, &format!(".replaced-{stamp}"));
        for f in ["-wal", "-shm", ""] {
            let from = beside(&target, f);
            if from.exists() {
                std::fs::rename(&from, beside(&aside, f))
                    .with_context(|| format!("cannot move {} aside", from.display()))?;
            }
        }
        kept = Some(aside);
    }
    std::fs::rename(&staging, &target)
        .with_context(|| format!("cannot move {} to {}", staging.display(), target.display()))?;
    if let Some(dir) = target.parent() {
        sync_dir(dir);
    }
    drop(_lock);

    let app = App::open_with(config.clone()).await?;
    app.audit(
        "store.restore",
        Some(file.display().to_string()),
        json!({"events": report.events, "from_schema_version": inspection.schema_version}),
    )
    .await?;
    println!(
        "restored {} into {}: {} contacts, {} events, {} suppression entries, schema version {}{}; \
         integrity and hash chains verified",
        file.display(),
        target.display(),
        inspection.contacts,
        inspection.events,
        inspection.suppressions,
        inspection.schema_version,
        if inspection.schema_version < veto_store::SCHEMA_VERSION {
            format!(" (migrated to {})", veto_store::SCHEMA_VERSION)
        } else {
            String::new()
        }
    );
    if let Some(kept) = kept {
        println!("the store it replaced is kept as {}", kept.display());
    }
    println!(
        "the data directory's other files (outbox, TLS certificate, DKIM keys) are not part of a backup"
    );
    Ok(ExitCode::SUCCESS)
}

/// Opens the staged copy as veto would (migrating an older schema),
/// verifies it, and leaves it as one file (no WAL beside it).
async fn check_staged(staging: &Path) -> Result<veto_store::VerifyReport> {
    let store = Store::open_sqlite(staging)
        .await
        .context("cannot open it as a veto store")?;
    let report = store.verify().await;
    store.close().await;
    let report = report.context("cannot verify it")?;
    if !report.ok() {
        return Err(anyhow!(
            "its hash chains do not verify ({})",
            first_problem(&report)
        ));
    }
    veto_store::sqlite_single_file(staging)
        .await
        .with_context(|| format!("cannot checkpoint {}", staging.display()))?;
    Ok(report)
}

// ---- purge ----------------------------------------------------------------------------

pub async fn purge(app: &App, dry_run: bool, json_out: bool) -> Result<ExitCode> {
    let retention = retention(&app.config);
    let report = app
        .store
        .purge(&retention, Timestamp::now(), dry_run)
        .await
        .context("the purge failed")?;
    if !dry_run {
        app.audit(
            "store.purge",
            None,
            serde_json::to_value(&report).unwrap_or_default(),
        )
        .await?;
    }
    if json_out {
        println!("{}", json!({"dry_run": dry_run, "purged": report}));
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    let blank = if dry_run { "would blank" } else { "blanked" };
    let keep = |d: Option<Duration>| {
        d.map_or("kept for ever".to_owned(), |d| {
            format!("older than {} days", d.as_secs() / 86_400)
        })
    };
    println!(
        "receipts ({}): {verb} {}",
        keep(retention.receipts),
        report.receipts
    );
    println!(
        "evidence ({}): {blank} IP address and user agent in {} ledger personal-data rows, {} signups, {} records of mail to veto; the address in {} answered data-subject requests",
        keep(retention.evidence),
        report.evidence.ledger_rows,
        report.evidence.signups,
        report.evidence.inbound_reports,
        report.evidence.requests
    );
    println!(
        "relay records (older than {} days): {verb} {}",
        retention.relay_records.as_secs() / 86_400,
        report.relay_records
    );
    println!("suppression entries and ledger events are kept for ever");
    Ok(ExitCode::SUCCESS)
}

/// How often `veto serve` purges.
const PURGE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);
/// After a failed purge, the next try.
const PURGE_RETRY: Duration = Duration::from_secs(60 * 60);

/// `veto serve`'s daily purge, from a minute after the start until `stop`.
pub async fn purge_daily(
    store: Store,
    retention: Retention,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = match store.purge(&retention, Timestamp::now(), false).await {
            Ok(report) => {
                tracing::info!(
                    receipts = report.receipts,
                    evidence_ledger_rows = report.evidence.ledger_rows,
                    evidence_signups = report.evidence.signups,
                    evidence_inbound_reports = report.evidence.inbound_reports,
                    evidence_requests = report.evidence.requests,
                    relay_records = report.relay_records,
                    "retention purge done"
                );
                PURGE_EVERY
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention purge failed; trying again in an hour");
                PURGE_RETRY
            }
        };
    }
}
