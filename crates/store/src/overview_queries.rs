// The dashboard's counts and the staff pages' reads (overview.rs).
// Included once per backend next to queries.rs (same module, same imports).

use crate::overview::{DAY_US, LedgerCounts, ReceiptDay};

pub(crate) async fn receipts_by_day(b: &Backend, since: i64) -> Result<Vec<ReceiptDay>> {
    // Grouped in SQL: one row per day, decision and reason, never per receipt.
    let sql = format!(
        "SELECT checked_at / {DAY_US} AS d, allowed, \
         CASE WHEN allowed <> 0 THEN NULL ELSE COALESCE(reason, rule) END AS why, COUNT(*) AS n \
         FROM receipts WHERE checked_at >= $1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let rows = sqlx::query(AssertSqlSafe(sql)).bind(since).fetch_all(&b.read).await?;
    rows.iter()
        .map(|r| {
            Ok(ReceiptDay {
                day: r.try_get("d")?,
                allowed: r.try_get::<i64, _>("allowed")? != 0,
                reason: r.try_get("why")?,
                count: r.try_get("n")?,
            })
        })
        .collect()
}

pub(crate) async fn count_allowed_since(b: &Backend, since: i64) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM receipts WHERE checked_at >= $1 AND allowed <> 0")
        .bind(since)
        .fetch_one(&b.read)
        .await?)
}

pub(crate) async fn ledger_counts_since(b: &Backend, since: i64) -> Result<LedgerCounts> {
    let rows = sqlx::query(
        "SELECT kind, COUNT(*) AS n FROM events \
         WHERE kind IN ('withdraw', 'object', 'hard_bounce', 'complaint') AND recorded_at >= $1 GROUP BY kind",
    )
    .bind(since)
    .fetch_all(&b.read)
    .await?;
    let mut c = LedgerCounts::default();
    for r in &rows {
        let kind: String = r.try_get("kind")?;
        let n: i64 = r.try_get("n")?;
        match kind.as_str() {
            "withdraw" => c.withdrawals = n,
            "object" => c.objections = n,
            "hard_bounce" => c.hard_bounces = n,
            "complaint" => c.complaints = n,
            _ => {}
        }
    }
    Ok(c)
}

pub(crate) async fn staff_actions_newest(b: &Backend, before: Option<i64>, limit: i64) -> Result<Vec<StaffAction>> {
    let rows = sqlx::query("SELECT * FROM staff_audit WHERE seq < $1 ORDER BY seq DESC LIMIT $2")
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&b.read)
        .await?;
    rows.iter().map(staff_action_from_row).collect()
}

pub(crate) async fn last_staff_action(b: &Backend, action: &str) -> Result<Option<StaffAction>> {
    let row = sqlx::query("SELECT * FROM staff_audit WHERE action = $1 ORDER BY seq DESC LIMIT 1")
        .bind(action)
        .fetch_optional(&b.read)
        .await?;
    row.as_ref().map(staff_action_from_row).transpose()
}

pub(crate) async fn suppressions_of_kind(
    b: &Backend,
    kind: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<SuppressionEntry>> {
    let Some(kind) = kind else {
        return suppressions(b, after, limit).await;
    };
    let sql = format!("{SUPPRESSION_SELECT} AND s.kind = $1 AND s.event_id > $2 ORDER BY s.event_id LIMIT $3");
    let rows =
        sqlx::query(AssertSqlSafe(sql)).bind(kind).bind(after.unwrap_or(0)).bind(limit).fetch_all(&b.read).await?;
    rows.iter().map(suppression_from_row).collect()
}
