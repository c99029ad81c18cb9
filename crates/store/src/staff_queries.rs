// Staff users, the staff audit trail, idempotency keys and the admin API's
// paged reads. Included once per backend next to queries.rs (same module,
// same imports).

use crate::chain::AuditRecord;
use crate::staff::{ApiKeyInfo, IdempotencyClaim, NewStaffAction, ReceiptFilter, StaffAction, StaffUser, SuppressionEntry};

/// A first request that has not answered within this long died: its key
/// may be claimed again.
const IDEMPOTENCY_STALE_US: i64 = 5 * 60 * 1_000_000;
/// Answers are replayed for a day, then forgotten.
const IDEMPOTENCY_KEEP_US: i64 = 24 * 3600 * 1_000_000;

fn user_from_row(r: &DbRow) -> Result<StaffUser> {
    let role: String = r.try_get("role")?;
    Ok(StaffUser {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: role.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: ts(r.try_get("created_at")?)?,
        updated_at: ts(r.try_get("updated_at")?)?,
    })
}

pub(crate) async fn add_user(b: &Backend, name: &str, role: Role, hash: &str) -> Result<StaffUser> {
    let mut tx = begin(b).await?;
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT id FROM staff_users WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
    if exists.is_some() {
        return Err(StoreError::Invalid(format!("there is already a user named {name:?}")));
    }
    let now = now_us();
    let row = sqlx::query(
        "INSERT INTO staff_users (name, role, password_hash, disabled, created_at, updated_at) \
         VALUES ($1, $2, $3, 0, $4, $4) RETURNING *",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let user = user_from_row(&row)?;
    tx.commit().await?;
    Ok(user)
}

pub(crate) async fn users(b: &Backend, after: Option<i64>, limit: i64) -> Result<Vec<StaffUser>> {
    let rows = sqlx::query("SELECT * FROM staff_users WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after.unwrap_or(0))
        .bind(limit)
        .fetch_all(&b.read)
        .await?;
    rows.iter().map(user_from_row).collect()
}

pub(crate) async fn user(b: &Backend, id: i64) -> Result<Option<StaffUser>> {
    let row = sqlx::query("SELECT * FROM staff_users WHERE id = $1").bind(id).fetch_optional(&b.read).await?;
    row.as_ref().map(user_from_row).transpose()
}

pub(crate) async fn user_with_hash(b: &Backend, name: &str) -> Result<Option<(StaffUser, String)>> {
    let row = sqlx::query("SELECT * FROM staff_users WHERE name = $1").bind(name).fetch_optional(&b.read).await?;
    row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?))).transpose()
}

pub(crate) async fn update_user(
    b: &Backend,
    id: i64,
    role: Option<Role>,
    disabled: Option<bool>,
    hash: Option<String>,
) -> Result<Option<StaffUser>> {
    let password_changed = hash.is_some();
    let mut tx = begin(b).await?;
    let row = sqlx::query(
        "UPDATE staff_users SET role = COALESCE($1, role), disabled = COALESCE($2, disabled), \
         password_hash = COALESCE($3, password_hash), updated_at = $4 WHERE id = $5 RETURNING *",
    )
    .bind(role.map(|r| r.as_str()))
    .bind(disabled.map(i64::from))
    .bind(hash)
    .bind(now_us())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let user = row.as_ref().map(user_from_row).transpose()?;
    if user.is_some() && (disabled == Some(true) || password_changed) {
        end_sessions_of(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(user)
}

// ---- the staff audit trail ----

fn audit_record_from_row(r: &DbRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: r.try_get("detail")?,
        at: r.try_get("at")?,
        prev_hash: r.try_get("prev_hash")?,
    })
}

fn staff_action_from_row(r: &DbRow) -> Result<StaffAction> {
    let hash: Vec<u8> = r.try_get("hash")?;
    staff_action_of(audit_record_from_row(r)?, &hash)
}

fn staff_action_of(rec: AuditRecord, hash: &[u8]) -> Result<StaffAction> {
    Ok(StaffAction {
        seq: rec.seq,
        detail: serde_json::from_str(&rec.detail).unwrap_or(serde_json::Value::String(rec.detail.clone())),
        actor: rec.actor,
        action: rec.action,
        target: rec.target,
        at: ts(rec.at)?,
        hash: hex(hash),
    })
}

pub(crate) async fn record_staff_action(b: &Backend, a: NewStaffAction) -> Result<StaffAction> {
    let mut tx = begin(b).await?;
    // The head row serialises writers on every node (SQLite: the write lock).
    let lock = if IS_PG { " FOR UPDATE" } else { "" };
    let head = sqlx::query(AssertSqlSafe(format!("SELECT seq, hash FROM staff_audit_head WHERE id = 1{lock}")))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the head of the staff audit trail is missing".into()))?;
    let (seq, prev): (i64, Vec<u8>) = (head.try_get("seq")?, head.try_get("hash")?);
    let rec = AuditRecord {
        seq: seq + 1,
        actor: a.actor,
        action: a.action,
        target: a.target,
        detail: a.detail.to_string(),
        at: now_us(),
        prev_hash: prev,
    };
    let hash = rec.hash().to_vec();
    sqlx::query(
        "INSERT INTO staff_audit (seq, actor, action, target, detail, at, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(rec.seq)
    .bind(&rec.actor)
    .bind(&rec.action)
    .bind(&rec.target)
    .bind(&rec.detail)
    .bind(rec.at)
    .bind(&rec.prev_hash)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE staff_audit_head SET seq = $1, hash = $2 WHERE id = 1").bind(rec.seq).bind(&hash).execute(&mut *tx).await?;
    tx.commit().await?;
    staff_action_of(rec, &hash)
}

pub(crate) async fn staff_actions(b: &Backend, after: Option<i64>, limit: i64) -> Result<Vec<StaffAction>> {
    let rows = sqlx::query("SELECT * FROM staff_audit WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after.unwrap_or(0))
        .bind(limit)
        .fetch_all(&b.read)
        .await?;
    rows.iter().map(staff_action_from_row).collect()
}

/// Recomputes the staff audit chain: `(entries verified, first problem)`.
pub(crate) async fn verify_staff_audit(b: &Backend) -> Result<(i64, Option<crate::StaffAuditProblem>)> {
    const PAGE: i64 = 20_000;
    let problem = |seq: Option<i64>, problem: String| Some(crate::StaffAuditProblem { seq, problem });
    let head = sqlx::query("SELECT seq, hash FROM staff_audit_head WHERE id = 1").fetch_optional(&b.read).await?;
    let Some(head) = head else {
        return Ok((0, problem(None, "the head of the staff audit trail is missing".into())));
    };
    let (head_seq, head_hash): (i64, Vec<u8>) = (head.try_get("seq")?, head.try_get("hash")?);
    let mut prev = vec![0u8; 32];
    let mut expected = 1i64;
    loop {
        let rows = sqlx::query("SELECT * FROM staff_audit WHERE seq >= $1 ORDER BY seq LIMIT $2")
            .bind(expected)
            .bind(PAGE)
            .fetch_all(&b.read)
            .await?;
        let n = rows.len() as i64;
        for r in &rows {
            let rec = audit_record_from_row(r)?;
            let stored: Vec<u8> = r.try_get("hash")?;
            if rec.seq != expected {
                return Ok((
                    expected - 1,
                    problem(
                        Some(rec.seq),
                        format!(
                            "staff action #{} comes where #{expected} was expected: entries were deleted before it",
                            rec.seq
                        ),
                    ),
                ));
            }
            if rec.prev_hash != prev {
                return Ok((
                    expected - 1,
                    problem(
                        Some(rec.seq),
                        format!("staff action #{} does not link to the one before it: the trail was edited here", rec.seq),
                    ),
                ));
            }
            if rec.hash().as_slice() != stored.as_slice() {
                return Ok((
                    expected - 1,
                    problem(
                        Some(rec.seq),
                        format!(
                            "staff action #{} ({} by {}) was altered: its contents no longer match its hash",
                            rec.seq, rec.action, rec.actor
                        ),
                    ),
                ));
            }
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
            format!("the staff audit trail ends at #{last}, but its head says #{head_seq}: the newest entries were deleted")
        } else {
            format!("the staff audit trail ends at #{last}, but its head (#{head_seq}) does not match it")
        };
        return Ok((last, problem(Some(last + 1), what)));
    }
    Ok((last, None))
}

// ---- idempotency keys ----

pub(crate) async fn claim_idempotency(b: &Backend, caller: &str, key: &str, request_hash: &[u8]) -> Result<IdempotencyClaim> {
    let now = now_us();
    let mut tx = begin(b).await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(now - IDEMPOTENCY_KEEP_US).execute(&mut *tx).await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (caller, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (caller, key) DO NOTHING",
    )
    .bind(caller)
    .bind(key)
    .bind(request_hash)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        tx.commit().await?;
        return Ok(IdempotencyClaim::New);
    }
    let row = sqlx::query("SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE caller = $1 AND key = $2")
        .bind(caller)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
    let stored: Vec<u8> = row.try_get("request_hash")?;
    let status: Option<i64> = row.try_get("status")?;
    let body: Option<String> = row.try_get("body")?;
    let created: i64 = row.try_get("created_at")?;
    let claim = if stored != request_hash {
        IdempotencyClaim::Mismatch
    } else if let (Some(status), Some(body)) = (status, body) {
        IdempotencyClaim::Replay { status: u16::try_from(status).unwrap_or(500), body }
    } else if created < now - IDEMPOTENCY_STALE_US {
        // The first request died without answering: this one takes over.
        sqlx::query("UPDATE idempotency_keys SET created_at = $1 WHERE caller = $2 AND key = $3")
            .bind(now)
            .bind(caller)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        IdempotencyClaim::New
    } else {
        IdempotencyClaim::InProgress
    };
    tx.commit().await?;
    Ok(claim)
}

pub(crate) async fn complete_idempotency(b: &Backend, caller: &str, key: &str, status: u16, body: &str) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE caller = $3 AND key = $4")
        .bind(i64::from(status))
        .bind(body)
        .bind(caller)
        .bind(key)
        .execute(&b.write)
        .await?;
    Ok(())
}

pub(crate) async fn release_idempotency(b: &Backend, caller: &str, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND status IS NULL")
        .bind(caller)
        .bind(key)
        .execute(&b.write)
        .await?;
    Ok(())
}

// ---- keys, topics, wordings ----

fn key_info_from_row(r: &DbRow) -> Result<ApiKeyInfo> {
    let role: String = r.try_get("role")?;
    Ok(ApiKeyInfo {
        id: r.try_get("id")?,
        prefix: r.try_get("prefix")?,
        role: role.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
        default_topic: r.try_get("default_topic")?,
        default_service: r.try_get("default_service")?,
        owner: r.try_get("owner")?,
        created_at: ts(r.try_get("created_at")?)?,
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(ts).transpose()?,
    })
}

pub(crate) async fn api_keys(b: &Backend, after: Option<i64>, limit: i64) -> Result<Vec<ApiKeyInfo>> {
    let rows = sqlx::query("SELECT * FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after.unwrap_or(0))
        .bind(limit)
        .fetch_all(&b.read)
        .await?;
    rows.iter().map(key_info_from_row).collect()
}

pub(crate) async fn api_key_info(b: &Backend, id: i64) -> Result<Option<ApiKeyInfo>> {
    let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1").bind(id).fetch_optional(&b.read).await?;
    row.as_ref().map(key_info_from_row).transpose()
}

pub(crate) async fn revoke_api_key(b: &Backend, id: i64) -> Result<Option<ApiKeyInfo>> {
    let mut tx = begin(b).await?;
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_us())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
    let info = row.as_ref().map(key_info_from_row).transpose()?;
    tx.commit().await?;
    Ok(info)
}

pub(crate) async fn update_topic_description(b: &Backend, key: &TopicKey, description: &str) -> Result<Option<Topic>> {
    let mut tx = begin(b).await?;
    let row = sqlx::query("UPDATE topics SET description = $1 WHERE key = $2 RETURNING *")
        .bind(description)
        .bind(key.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let topic = row.as_ref().map(topic_from_row).transpose()?;
    tx.commit().await?;
    Ok(topic)
}

pub(crate) async fn wordings(b: &Backend, after: Option<i64>, limit: i64) -> Result<Vec<Wording>> {
    let rows = sqlx::query("SELECT id, text, hash FROM wordings WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after.unwrap_or(0))
        .bind(limit)
        .fetch_all(&b.read)
        .await?;
    rows.iter()
        .map(|r| Ok(Wording { id: WordingId(r.try_get("id")?), text: r.try_get("text")?, hash: r.try_get("hash")? }))
        .collect()
}

// ---- contacts, suppressions, receipts ----

pub(crate) async fn search_contacts(b: &Backend, q: Option<&str>, after: Option<i64>, limit: i64) -> Result<Vec<Contact>> {
    let rows = match q.map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => {
            // email_key is lower case: so is the pattern; LIKE's wildcards are escaped.
            let mut pattern = String::from("%");
            for c in q.to_lowercase().chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            sqlx::query("SELECT * FROM contacts WHERE id > $1 AND email_key LIKE $2 ESCAPE '\\' ORDER BY id LIMIT $3")
                .bind(after.unwrap_or(0))
                .bind(pattern)
                .bind(limit)
                .fetch_all(&b.read)
                .await?
        }
        None => {
            sqlx::query("SELECT * FROM contacts WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after.unwrap_or(0))
                .bind(limit)
                .fetch_all(&b.read)
                .await?
        }
    };
    rows.iter().map(contact_from_row).collect()
}

const SUPPRESSION_SELECT: &str = "SELECT s.event_id, s.contact_id, c.email, s.kind, t.key AS topic_key, s.channel, s.source, s.at \
     FROM consent_state s JOIN contacts c ON c.id = s.contact_id LEFT JOIN topics t ON t.id = s.scope_topic \
     WHERE s.kind IN ('withdrawn', 'refused', 'objection', 'complaint', 'hard_bounce', 'erased')";

fn suppression_from_row(r: &DbRow) -> Result<SuppressionEntry> {
    Ok(SuppressionEntry {
        event: r.try_get("event_id")?,
        contact: r.try_get("contact_id")?,
        email: r.try_get("email")?,
        kind: r.try_get("kind")?,
        topic: r.try_get("topic_key")?,
        channel: r.try_get("channel")?,
        source: r.try_get("source")?,
        at: ts(r.try_get("at")?)?,
    })
}

pub(crate) async fn suppressions(b: &Backend, after: Option<i64>, limit: i64) -> Result<Vec<SuppressionEntry>> {
    let sql = format!("{SUPPRESSION_SELECT} AND s.event_id > $1 ORDER BY s.event_id LIMIT $2");
    let rows = sqlx::query(AssertSqlSafe(sql)).bind(after.unwrap_or(0)).bind(limit).fetch_all(&b.read).await?;
    rows.iter().map(suppression_from_row).collect()
}

pub(crate) async fn suppression(b: &Backend, event: i64) -> Result<Option<SuppressionEntry>> {
    let sql = format!("{SUPPRESSION_SELECT} AND s.event_id = $1");
    let row = sqlx::query(AssertSqlSafe(sql)).bind(event).fetch_optional(&b.read).await?;
    row.as_ref().map(suppression_from_row).transpose()
}

pub(crate) async fn receipts_page(b: &Backend, filter: &ReceiptFilter, after: Option<i64>, limit: i64) -> Result<Vec<Receipt>> {
    let q = match filter {
        ReceiptFilter::Message(m) => {
            sqlx::query("SELECT * FROM receipts WHERE message_id = $1 AND id > $2 ORDER BY id LIMIT $3").bind(m.clone())
        }
        ReceiptFilter::Contact(c) => {
            sqlx::query("SELECT * FROM receipts WHERE contact_id = $1 AND id > $2 ORDER BY id LIMIT $3").bind(c.0)
        }
    };
    let rows = q.bind(after.unwrap_or(0)).bind(limit).fetch_all(&b.read).await?;
    rows.iter().map(receipt_from_row).collect()
}
