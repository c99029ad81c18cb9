//! What `/metrics` reports: counters and latency histograms kept in
//! process-wide atomics, so that counting costs a relaxed `fetch_add` and
//! never a lock or an allocation on the paths it measures.
//!
//! The counts are this process's since it started (Prometheus handles the
//! resets); gauges that describe the store (the campaign queue) are read
//! from it when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use veto_core::{EventKind, Source};

/// Refusal reasons as receipts name them ([`veto_core::Reason::code`]);
/// anything else is counted as `other`.
const REASONS: [&str; 15] = [
    "no_record",
    "no_evidence",
    "no_consent",
    "withdrawn",
    "refused_at_collection",
    "objected",
    "complained",
    "hard_bounced",
    "erased",
    "suppressed",
    "implied_consent_expired",
    "express_consent_required",
    "paused",
    "frequency_limit",
    "set_by_the_person",
];

static ALLOWED_MARKETING: AtomicU64 = AtomicU64::new(0);
static ALLOWED_SERVICE: AtomicU64 = AtomicU64::new(0);
/// One slot per entry of [`REASONS`], and `other` last.
static REFUSED: [AtomicU64; REASONS.len() + 1] = [const { AtomicU64::new(0) }; REASONS.len() + 1];
/// One slot per [`Source::ALL`] entry.
static UNSUBSCRIBES: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

static SESSIONS_STARTED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static SESSIONS_ACTIVE: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];
static CONNECTIONS_REFUSED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Which SMTP listener a session belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Listener {
    Submission = 0,
    Inbound = 1,
}

const LISTENERS: [&str; 2] = ["submission", "inbound"];

/// Counts one receipt: a recipient of a message allowed, or refused with
/// its reason code. Called once the receipt is committed.
pub fn count_receipt(allowed: bool, class: &str, reason: Option<&str>) {
    if allowed {
        if class.starts_with("service:") {
            ALLOWED_SERVICE.fetch_add(1, Relaxed);
        } else {
            ALLOWED_MARKETING.fetch_add(1, Relaxed);
        }
        return;
    }
    let slot = reason
        .and_then(|r| REASONS.iter().position(|known| *known == r))
        .unwrap_or(REASONS.len());
    REFUSED[slot].fetch_add(1, Relaxed);
}

/// Unsubscribes (withdrawals and objections) recorded in one transaction,
/// published once it commits.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally([u32; 9]);

impl Tally {
    pub(crate) fn note(&mut self, kind: &EventKind, source: Source) {
        if matches!(kind, EventKind::Withdraw | EventKind::Object)
            && let Some(slot) = self.0.get_mut(source as usize)
        {
            *slot += 1;
        }
    }

    pub(crate) fn publish(self) {
        for (slot, n) in UNSUBSCRIBES.iter().zip(self.0) {
            if n > 0 {
                slot.fetch_add(u64::from(n), Relaxed);
            }
        }
    }
}

/// A session of `listener` started; it counts as active until the guard drops.
pub fn session_started(listener: Listener) -> SessionGuard {
    SESSIONS_STARTED[listener as usize].fetch_add(1, Relaxed);
    SESSIONS_ACTIVE[listener as usize].fetch_add(1, Relaxed);
    SessionGuard(listener)
}

/// Held for as long as a session runs.
pub struct SessionGuard(Listener);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        SESSIONS_ACTIVE[self.0 as usize].fetch_sub(1, Relaxed);
    }
}

/// A connection turned away by the connection limits.
pub fn connection_refused(listener: Listener) {
    CONNECTIONS_REFUSED[listener as usize].fetch_add(1, Relaxed);
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 12] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];

/// A latency histogram in atomics.
struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS_US.len()],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// The store operations whose latency is measured.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// The guard's read of consent state, right before a hand-off.
    GuardRead = 0,
    /// A ledger append (unsubscribes, grants, imports), committed.
    LedgerAppend = 1,
    /// Receipts and relay records, committed.
    ReceiptCommit = 2,
}

const OPS: [&str; 3] = ["guard_read", "ledger_append", "receipt_commit"];
static LATENCY: [Histogram; 3] = [Histogram::new(), Histogram::new(), Histogram::new()];

pub(crate) fn observe(op: Op, took: Duration) {
    LATENCY[op as usize].observe(took);
}

/// What is read from the store when `/metrics` is scraped.
#[derive(Debug, Clone, Default)]
pub struct StoreGauges {
    /// Campaign recipients waiting to be sent (queued or claimed).
    pub campaign_queue: i64,
    /// How long a trivial query took just now; `None` if it failed.
    pub ping: Option<Duration>,
}

/// Everything, in the Prometheus text exposition format (version 0.0.4).
pub fn render(gauges: &StoreGauges) -> String {
    let mut out = String::with_capacity(4096);
    let w = &mut out;
    head(
        w,
        "veto_messages_allowed_total",
        "counter",
        "Recipients of messages the guard allowed (one per receipt).",
    );
    for (class, n) in [
        ("marketing", &ALLOWED_MARKETING),
        ("service", &ALLOWED_SERVICE),
    ] {
        let _ = writeln!(
            w,
            "veto_messages_allowed_total{{class=\"{class}\"}} {}",
            n.load(Relaxed)
        );
    }
    head(
        w,
        "veto_messages_refused_total",
        "counter",
        "Recipients of messages the guard refused, by reason (one per receipt).",
    );
    for (i, n) in REFUSED.iter().enumerate() {
        let reason = REASONS.get(i).copied().unwrap_or("other");
        let _ = writeln!(
            w,
            "veto_messages_refused_total{{reason=\"{reason}\"}} {}",
            n.load(Relaxed)
        );
    }
    head(
        w,
        "veto_unsubscribes_total",
        "counter",
        "Withdrawals and objections recorded, by how they arrived.",
    );
    for (source, n) in Source::ALL.iter().zip(&UNSUBSCRIBES) {
        let _ = writeln!(
            w,
            "veto_unsubscribes_total{{source=\"{}\"}} {}",
            source.as_str(),
            n.load(Relaxed)
        );
    }
    head(
        w,
        "veto_gateway_sessions_total",
        "counter",
        "SMTP sessions started, by listener.",
    );
    for (l, n) in LISTENERS.iter().zip(&SESSIONS_STARTED) {
        let _ = writeln!(
            w,
            "veto_gateway_sessions_total{{listener=\"{l}\"}} {}",
            n.load(Relaxed)
        );
    }
    head(
        w,
        "veto_gateway_sessions_active",
        "gauge",
        "SMTP sessions running now, by listener.",
    );
    for (l, n) in LISTENERS.iter().zip(&SESSIONS_ACTIVE) {
        let _ = writeln!(
            w,
            "veto_gateway_sessions_active{{listener=\"{l}\"}} {}",
            n.load(Relaxed)
        );
    }
    head(
        w,
        "veto_gateway_connections_refused_total",
        "counter",
        "SMTP connections turned away by the connection limits, by listener.",
    );
    for (l, n) in LISTENERS.iter().zip(&CONNECTIONS_REFUSED) {
        let _ = writeln!(
            w,
            "veto_gateway_connections_refused_total{{listener=\"{l}\"}} {}",
            n.load(Relaxed)
        );
    }
    head(
        w,
        "veto_campaign_queue_depth",
        "gauge",
        "Campaign recipients queued or claimed, not yet sent or refused.",
    );
    let _ = writeln!(w, "veto_campaign_queue_depth {}", gauges.campaign_queue);
    head(
        w,
        "veto_store_up",
        "gauge",
        "1 if the store answered a query during this scrape.",
    );
    let _ = writeln!(w, "veto_store_up {}", u8::from(gauges.ping.is_some()));
    if let Some(ping) = gauges.ping {
        head(
            w,
            "veto_store_ping_seconds",
            "gauge",
            "How long a trivial store query took during this scrape.",
        );
        let _ = writeln!(w, "veto_store_ping_seconds {:.6}", ping.as_secs_f64());
    }
    head(
        w,
        "veto_store_latency_seconds",
        "histogram",
        "Latency of store operations on the sending and unsubscribe paths.",
    );
    for (op, h) in OPS.iter().zip(&LATENCY) {
        let mut cumulative = 0;
        for (le, n) in BUCKETS_US.iter().zip(&h.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                w,
                "veto_store_latency_seconds_bucket{{op=\"{op}\",le=\"{}\"}} {cumulative}",
                *le as f64 / 1e6
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(
            w,
            "veto_store_latency_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            w,
            "veto_store_latency_seconds_sum{{op=\"{op}\"}} {:.6}",
            h.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(w, "veto_store_latency_seconds_count{{op=\"{op}\"}} {count}");
    }
    out
}

fn head(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_and_source_has_a_slot() {
        assert_eq!(Source::ALL.len(), UNSUBSCRIBES.len());
        for (i, s) in Source::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "Source::ALL is in declaration order");
        }
        let reasons = [
            veto_core::Reason::NoRecord,
            veto_core::Reason::NoEvidence,
            veto_core::Reason::NoConsent,
            veto_core::Reason::Withdrawn,
            veto_core::Reason::RefusedAtCollection,
            veto_core::Reason::Objected,
            veto_core::Reason::Complained,
            veto_core::Reason::HardBounced,
            veto_core::Reason::Erased,
            veto_core::Reason::Suppressed,
            veto_core::Reason::ImpliedConsentExpired,
            veto_core::Reason::ExpressConsentRequired,
            veto_core::Reason::SetByThePerson,
        ];
        for r in reasons {
            assert!(REASONS.contains(&r.code()), "{} has no slot", r.code());
        }
    }

    #[test]
    fn the_exposition_is_well_formed() {
        count_receipt(false, "news", Some("withdrawn"));
        count_receipt(false, "news", Some("something new"));
        let text = render(&StoreGauges {
            campaign_queue: 3,
            ping: Some(Duration::from_micros(250)),
        });
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(text.contains("veto_campaign_queue_depth 3\n"));
        assert!(text.contains("veto_messages_refused_total{reason=\"other\"}"));
    }
}
