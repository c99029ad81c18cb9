// Included once per backend by `backend!` in lib.rs, after queries.rs:
// the retention purge, the campaign queue gauge, the store ping and the
// SQLite online backup. Suppression entries are never touched here.

/// Rows per purge step: each step is one short write transaction, so the
/// gateway and the web side keep writing in between.
const PURGE_STEP: i64 = 2000;

/// Receipts checked before `before` (microseconds): counted, or deleted.
pub(crate) async fn purge_receipts(b: &Backend, before: i64, dry_run: bool) -> Result<u64> {
    if dry_run {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts WHERE checked_at < $1")
            .bind(before)
            .fetch_one(&b.read)
            .await?;
        return Ok(u64::try_from(n).unwrap_or(0));
    }
    let mut total = 0;
    loop {
        let done = sqlx::query("DELETE FROM receipts WHERE id IN (SELECT id FROM receipts WHERE checked_at < $1 LIMIT $2)")
            .bind(before)
            .bind(PURGE_STEP)
            .execute(&b.write)
            .await?;
        total += done.rows_affected();
        if done.rows_affected() < PURGE_STEP as u64 {
            return Ok(total);
        }
    }
}

/// Relay records (and service-mail volume) older than `before`: counted, or deleted.
pub(crate) async fn purge_relayed(b: &Backend, before: Timestamp, dry_run: bool) -> Result<u64> {
    if dry_run {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts WHERE relayed_at < $1")
            .bind(before.as_microsecond())
            .fetch_one(&b.read)
            .await?;
        return Ok(u64::try_from(n).unwrap_or(0));
    }
    prune_relayed(b, before).await
}

/// Blanks the IP addresses and user agents recorded before `before`
/// (microseconds): in ledger events' personal-data rows (the event and its
/// chain untouched, see migration 11), in double opt-in signups, and in the
/// records of mail to veto's own addresses.
pub(crate) async fn purge_evidence(b: &Backend, before: i64, dry_run: bool) -> Result<crate::EvidencePurged> {
    let mut out = crate::EvidencePurged::default();
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(
            "SELECT e.id AS event_id, pd.id AS pd_id, pd.body AS body, pd.hash AS hash FROM events e \
             JOIN personal_data pd ON pd.id = e.pd_id \
             WHERE e.id > $1 AND e.recorded_at < $2 AND pd.evidence_purged_at IS NULL ORDER BY e.id LIMIT $3",
        )
        .bind(after)
        .bind(before)
        .bind(PURGE_STEP)
        .fetch_all(&b.read)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("event_id")?;
        let full = rows.len() as i64 == PURGE_STEP;
        let now = now_us();
        let mut tx = if dry_run { None } else { Some(begin(b).await?) };
        for r in &rows {
            let pd_id: i64 = r.try_get("pd_id")?;
            let body: String = r.try_get("body")?;
            let Ok(mut pd) = serde_json::from_str::<PersonalData>(&body) else {
                tracing::warn!(row = pd_id, "personal data row is not readable; its evidence was left as it is");
                continue;
            };
            let had_evidence = pd.ip.is_some() || pd.user_agent.is_some();
            if had_evidence {
                out.ledger_rows += 1;
            }
            let Some(tx) = tx.as_mut() else { continue };
            let update = if had_evidence {
                pd.ip = None;
                pd.user_agent = None;
                let body = serde_json::to_string(&pd).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let salt = random32()[..16].to_vec();
                let purged_hash = personal_hash(&salt, &body).to_vec();
                sqlx::query(
                    "UPDATE personal_data SET salt = $1, body = $2, purged_hash = $3, evidence_purged_at = $4 \
                     WHERE id = $5 AND evidence_purged_at IS NULL",
                )
                .bind(salt)
                .bind(body)
                .bind(purged_hash)
                .bind(now)
                .bind(pd_id)
            } else {
                // Nothing to blank: marked, so that it is not read again; the
                // body and salt stay, so its purged hash is its hash.
                let hash: Vec<u8> = r.try_get("hash")?;
                sqlx::query(
                    "UPDATE personal_data SET purged_hash = $1, evidence_purged_at = $2 WHERE id = $3 AND evidence_purged_at IS NULL",
                )
                .bind(hash)
                .bind(now)
                .bind(pd_id)
            };
            update.execute(&mut **tx).await?;
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        if !full {
            break;
        }
    }
    const SIGNUPS: &str = "FROM signups WHERE requested_at < $1 AND \
         (ip IS NOT NULL OR user_agent IS NOT NULL OR confirm_ip IS NOT NULL OR confirm_user_agent IS NOT NULL)";
    const INBOUND: &str = "FROM inbound_reports WHERE received_at < $1 AND peer_ip IS NOT NULL";
    if dry_run {
        let count = |sql: String| async move {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql)).bind(before).fetch_one(&b.read).await?;
            Ok::<_, StoreError>(u64::try_from(n).unwrap_or(0))
        };
        out.signups = count(format!("SELECT COUNT(*) {SIGNUPS}")).await?;
        out.inbound_reports = count(format!("SELECT COUNT(*) {INBOUND}")).await?;
    } else {
        let signups = format!(
            "UPDATE signups SET ip = NULL, user_agent = NULL, confirm_ip = NULL, confirm_user_agent = NULL \
             WHERE id IN (SELECT id {SIGNUPS})"
        );
        out.signups = sqlx::query(AssertSqlSafe(signups)).bind(before).execute(&b.write).await?.rows_affected();
        let inbound = format!("UPDATE inbound_reports SET peer_ip = NULL WHERE id IN (SELECT id {INBOUND})");
        out.inbound_reports = sqlx::query(AssertSqlSafe(inbound)).bind(before).execute(&b.write).await?.rows_affected();
    }
    out.requests = purge_request_addresses(b, before, dry_run).await?;
    Ok(out)
}

/// Recipients of campaigns still under way that are queued or claimed.
pub(crate) async fn campaign_queue_depth(b: &Backend) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM campaign_recipients r JOIN campaigns c ON c.id = r.campaign_id \
         WHERE c.state IN ('scheduled', 'sending', 'paused') AND r.state IN ('queued', 'claimed')",
    )
    .fetch_one(&b.read)
    .await?)
}

/// A trivial query, timed.
pub(crate) async fn ping(b: &Backend) -> Result<std::time::Duration> {
    let started = std::time::Instant::now();
    let _: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)").fetch_one(&b.read).await?;
    Ok(started.elapsed())
}
