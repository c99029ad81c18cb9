//! The webhook outbox: consent changes told to the organisation's other
//! systems (CRM, call centre, another email provider) so that their copies
//! stop too.
//!
//! A delivery row per ledger event per configured endpoint is written in
//! the transaction that appends the event ([`Store::append`] and everything
//! built on it), so what committed is always told and what rolled back
//! never is. The worker in `veto-sender` claims due rows, POSTs them and
//! records the outcome here.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use veto_core::Timestamp;

use crate::{Result, Store, StoreError, postgres, sqlite};

/// Every event kind a webhook can carry, as `[[webhooks.endpoints]] events`
/// names them.
pub const WEBHOOK_EVENT_KINDS: &[&str] = &[
    "grant",
    "withdraw",
    "object",
    "refused",
    "purchase",
    "negotiation",
    "inquiry",
    "hard_bounce",
    "bounce_cleared",
    "complaint",
    "pause",
    "frequency",
    "erasure",
];

/// What an endpoint gets when its `events` is not set: every change to
/// whether (or how often) a person may be mailed. Purchases, negotiations
/// and inquiries are the organisation's own records, so they are left out.
pub const DEFAULT_WEBHOOK_EVENTS: &[&str] = &[
    "grant",
    "withdraw",
    "object",
    "refused",
    "hard_bounce",
    "bounce_cleared",
    "complaint",
    "pause",
    "frequency",
    "erasure",
];

/// An endpoint as the outbox sees it: a name and the event kinds it wants.
/// (Its URL and secret are the worker's business.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub name: String,
    /// Event kind names (see [`WEBHOOK_EVENT_KINDS`]).
    pub events: Vec<String>,
}

impl WebhookEndpoint {
    /// An endpoint for the default events.
    pub fn new(name: impl Into<String>) -> WebhookEndpoint {
        WebhookEndpoint {
            name: name.into(),
            events: DEFAULT_WEBHOOK_EVENTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind)
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Not yet accepted by the receiver; tried again at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Retries ran out (`[webhooks] give_up_after`); kept until retried.
    Failed,
    /// The receiver answered 410 Gone: not tried again unless retried.
    Gone,
}

impl WebhookStatus {
    pub const ALL: [WebhookStatus; 4] = [
        WebhookStatus::Pending,
        WebhookStatus::Delivered,
        WebhookStatus::Failed,
        WebhookStatus::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Pending => "pending",
            WebhookStatus::Delivered => "delivered",
            WebhookStatus::Failed => "failed",
            WebhookStatus::Gone => "gone",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookStatus> {
        WebhookStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for WebhookStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event for one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookDelivery {
    pub id: i64,
    /// The ledger event (also the `Veto-Event-Id` header).
    pub event_id: i64,
    pub contact_id: i64,
    pub endpoint: String,
    /// The event kind (`withdraw`, `erasure`, …).
    pub kind: String,
    /// The JSON body, exactly as sent.
    pub payload: String,
    pub status: WebhookStatus,
    /// Attempts made so far.
    pub attempts: i64,
    pub created_at: Timestamp,
    /// When the current run of retries started (creation, or the last
    /// manual retry): `give_up_after` counts from here.
    pub pending_since: Timestamp,
    pub next_attempt_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
}

/// How one attempt ended, as the worker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx.
    Delivered { status: u16 },
    /// 410: stop trying for this row.
    Gone { status: u16 },
    /// Anything else: try again at `next_at`.
    Retry {
        status: Option<u16>,
        error: String,
        next_at: Timestamp,
    },
    /// Anything else, and the retry window has run out.
    GaveUp { status: Option<u16>, error: String },
}

/// How many deliveries are in each status, per endpoint.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WebhookCounts {
    pub endpoint: String,
    pub pending: i64,
    /// Pending rows whose last attempt failed.
    pub retrying: i64,
    pub delivered: i64,
    pub failed: i64,
    pub gone: i64,
    /// The oldest pending row's creation time.
    pub oldest_pending: Option<Timestamp>,
}

/// What a manual retry found.
#[derive(Debug, Clone)]
pub enum RetryOutcome {
    /// Pending again, due now.
    Queued(WebhookDelivery),
    /// Delivered already: nothing to do.
    AlreadyDelivered(WebhookDelivery),
    NotFound,
}

impl Store {
    /// The endpoints that the appends of this process write delivery rows
    /// for (from `[[webhooks.endpoints]]`). None: no rows are written.
    pub fn set_webhook_endpoints(&self, endpoints: Vec<WebhookEndpoint>) {
        let slot = match self {
            Store::Sqlite(b) => &b.webhooks,
            Store::Postgres(b) => &b.webhooks,
        };
        let mut w = slot.write().unwrap_or_else(|e| e.into_inner());
        *w = Arc::new(endpoints);
    }

    /// Claims up to `n` due pending deliveries for `node` for `lease`
    /// (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so several nodes share the
    /// work; a claim that runs out is taken over).
    pub async fn claim_webhook_deliveries(
        &self,
        node: &str,
        n: usize,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Vec<WebhookDelivery>> {
        let until = now
            .checked_add(lease)
            .map_err(|_| StoreError::Invalid("lease out of range".into()))?;
        dispatch!(self, claim_webhook_deliveries(node, n, now, until))
    }

    /// Records how `node`'s attempt at delivery `id` ended. Ignored when
    /// the row is no longer `node`'s claim (its lease ran out and another
    /// took it, or staff retried it meanwhile).
    pub async fn finish_webhook_attempt(
        &self,
        id: i64,
        node: &str,
        outcome: AttemptOutcome,
        now: Timestamp,
    ) -> Result<bool> {
        dispatch!(self, finish_webhook_attempt(id, node, outcome, now))
    }

    /// Deliveries by id, `status` only if given, after the id `after`.
    pub async fn webhook_deliveries(
        &self,
        status: Option<WebhookStatus>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        dispatch!(self, webhook_deliveries(status, after, limit))
    }

    pub async fn webhook_delivery(&self, id: i64) -> Result<Option<WebhookDelivery>> {
        dispatch!(self, webhook_delivery(id))
    }

    /// Makes a failed, gone or pending delivery due now, with a fresh retry
    /// window. A delivered one is left alone.
    pub async fn retry_webhook_delivery(&self, id: i64, now: Timestamp) -> Result<RetryOutcome> {
        dispatch!(self, retry_webhook_delivery(id, now))
    }

    /// Deletes deliveries delivered before `before`. Failed and gone ones
    /// stay until staff retry them.
    pub async fn purge_webhook_deliveries(&self, before: Timestamp) -> Result<u64> {
        dispatch!(self, purge_webhook_deliveries(before))
    }

    /// Counts per endpoint, by name.
    pub async fn webhook_counts(&self) -> Result<Vec<WebhookCounts>> {
        dispatch!(self, webhook_counts())
    }
}
