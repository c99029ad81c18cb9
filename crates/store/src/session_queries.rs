// Admin UI sessions. Included once per backend next to queries.rs (same
// module, same imports).

use crate::session::{NewSession, SESSION_IDLE_SECS, SESSION_MAX_SECS, StaffSession, random_token, token_hash};

pub(crate) async fn start_session(b: &Backend, user_id: i64) -> Result<NewSession> {
    let now = now_us();
    let new = NewSession { token: random_token(), csrf: random_token() };
    let mut tx = begin(b).await?;
    // Sessions that ended on their own are swept as new ones start.
    sqlx::query("DELETE FROM staff_sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
        .bind(now)
        .bind(now - SESSION_IDLE_SECS * 1_000_000)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO staff_sessions (token_hash, user_id, csrf, created_at, last_seen_at, expires_at) \
         VALUES ($1, $2, $3, $4, $4, $5)",
    )
    .bind(token_hash(&new.token))
    .bind(user_id)
    .bind(&new.csrf)
    .bind(now)
    .bind(now + SESSION_MAX_SECS * 1_000_000)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(new)
}

pub(crate) async fn session(b: &Backend, token: &str) -> Result<Option<StaffSession>> {
    let now = now_us();
    let hash = token_hash(token);
    let row = sqlx::query(
        "SELECT u.*, s.csrf AS session_csrf, s.last_seen_at AS session_seen, s.expires_at AS session_expires \
         FROM staff_sessions s JOIN staff_users u ON u.id = s.user_id WHERE s.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&b.read)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let user = user_from_row(&row)?;
    let seen: i64 = row.try_get("session_seen")?;
    let expires: i64 = row.try_get("session_expires")?;
    if user.disabled || expires <= now || seen <= now - SESSION_IDLE_SECS * 1_000_000 {
        return Ok(None);
    }
    // Activity is written at most once a minute per session.
    if now - seen > 60 * 1_000_000 {
        sqlx::query("UPDATE staff_sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(&hash)
            .execute(&b.write)
            .await?;
    }
    Ok(Some(StaffSession { user, csrf: row.try_get("session_csrf")?, expires_at: ts(expires)? }))
}

pub(crate) async fn end_session(b: &Backend, token: &str) -> Result<()> {
    sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1").bind(token_hash(token)).execute(&b.write).await?;
    Ok(())
}

/// A disabled user, or one with a new password, is signed out everywhere.
pub(crate) async fn end_sessions_of(tx: &mut Tx, user_id: i64) -> Result<()> {
    sqlx::query("DELETE FROM staff_sessions WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
    Ok(())
}
