//! What the admin dashboard and the staff pages read: receipts counted per
//! UTC day, ledger events counted by kind, the staff audit trail newest
//! first, and the suppression list of one kind. Each count is one grouped
//! query over an indexed time column (`receipts_checked`,
//! `events_kind_recorded`), so it stays quick with millions of rows.

use serde::Serialize;
use veto_core::Timestamp;

use crate::{Result, StaffAction, Store, SuppressionEntry, postgres, sqlite};

/// Microseconds in a day: receipts are grouped by `checked_at / DAY_US`.
pub const DAY_US: i64 = 86_400_000_000;

/// Receipts of one UTC day with one decision and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptDay {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub allowed: bool,
    /// For a refusal, the reason code (or the rule when there was none);
    /// `None` for an allowed message.
    pub reason: Option<String>,
    pub count: i64,
}

/// Ledger events recorded since a time, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LedgerCounts {
    pub withdrawals: i64,
    pub objections: i64,
    pub hard_bounces: i64,
    pub complaints: i64,
}

impl Store {
    /// Receipts checked at or after `since`, counted per UTC day, decision
    /// and reason, oldest day first.
    pub async fn receipts_by_day(&self, since: Timestamp) -> Result<Vec<ReceiptDay>> {
        dispatch!(self, receipts_by_day(since.as_microsecond()))
    }

    /// Messages allowed (handed off) since `since`.
    pub async fn count_allowed_since(&self, since: Timestamp) -> Result<i64> {
        dispatch!(self, count_allowed_since(since.as_microsecond()))
    }

    /// Withdrawals, objections, hard bounces and complaints recorded in the
    /// ledger since `since`.
    pub async fn ledger_counts_since(&self, since: Timestamp) -> Result<LedgerCounts> {
        dispatch!(self, ledger_counts_since(since.as_microsecond()))
    }

    /// The staff audit trail newest first: entries before `before` (a
    /// `seq`; `None`: from the newest).
    pub async fn staff_actions_newest(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StaffAction>> {
        dispatch!(self, staff_actions_newest(before, limit))
    }

    /// The newest staff action named `action` (e.g. `audit.verify`).
    pub async fn last_staff_action(&self, action: &str) -> Result<Option<StaffAction>> {
        dispatch!(self, last_staff_action(action))
    }

    /// As [`Store::suppressions`], of one kind only (withdrawn, refused,
    /// objection, complaint, hard_bounce or erased) when `kind` is given.
    pub async fn suppressions_of_kind(
        &self,
        kind: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SuppressionEntry>> {
        dispatch!(self, suppressions_of_kind(kind, after, limit))
    }
}
