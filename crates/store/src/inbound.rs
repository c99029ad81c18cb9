//! Mail received at veto's own addresses (DESIGN.md, "feedback"): mailto
//! unsubscribes, bounces and complaints, each recorded once, with its
//! evidence, in the same transaction as the ledger event it leads to.

use std::time::Duration;

use serde::Serialize;
use veto_core::{
    Channel, ContactId, EmailAddress, EventId, EventKind, NewEvent, Refusal, Scope, Source,
    Timestamp,
};

use crate::{Append, ContactInput, Evidence};

impl Append {
    /// A person's own withdrawal through a link or an address veto gave
    /// them (one-click, `unsubscribe+TOKEN@`): email, recorded as theirs.
    pub fn withdrawal_by_person(
        email: EmailAddress,
        scope: Scope,
        source: Source,
        evidence: Evidence,
        at: Timestamp,
    ) -> Append {
        Append {
            contact: ContactInput::new(email),
            event: NewEvent {
                kind: EventKind::Withdraw,
                scope,
                channel: Some(Channel::Email),
                source,
                at,
            },
            evidence,
            actor: "person".into(),
        }
    }
}

/// What a mail to one of veto's addresses means for its contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundKind {
    /// RFC 2369 mailto unsubscribe: the person withdraws from this scope.
    Unsubscribe(Scope),
    /// A permanent failure (DSN `Action: failed` with a 5.x.x status).
    HardBounce,
    /// A temporary failure or a delay; enough of them make a hard bounce.
    SoftBounce,
    /// An abuse report (ARF): stops all marketing by email.
    Complaint,
}

impl InboundKind {
    /// How the `kind` column spells it.
    pub fn name(self) -> &'static str {
        match self {
            InboundKind::Unsubscribe(_) => "unsubscribe",
            InboundKind::HardBounce => "hard_bounce",
            InboundKind::SoftBounce => "soft_bounce",
            InboundKind::Complaint => "complaint",
        }
    }
}

/// One mail, with the evidence kept for it.
#[derive(Debug, Clone)]
pub struct NewInboundReport {
    /// Whom the token in the address names.
    pub contact: ContactId,
    /// The same key twice records once: `message-id:<…>` or `sha256:<body hash>`.
    pub key: String,
    pub kind: InboundKind,
    pub received_at: Timestamp,
    /// The client that delivered it (the person's or the provider's MTA).
    pub peer_ip: Option<String>,
    /// `MAIL FROM`; `None` for the null sender `<>`.
    pub envelope_from: Option<String>,
    /// The veto address it was sent to.
    pub envelope_to: String,
    pub message_id: Option<String>,
    /// DSN `Status` (`5.1.1`).
    pub status: Option<String>,
    /// DSN `Diagnostic-Code`.
    pub diagnostic: Option<String>,
    /// DSN `Reporting-MTA`, or ARF `Reporting-MTA` / `User-Agent`.
    pub reporting_mta: Option<String>,
    /// ARF `Feedback-Type`.
    pub feedback_type: Option<String>,
}

/// `[gateway] soft_bounce_threshold` soft bounces within
/// `soft_bounce_window` make a hard bounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftBounceLimit {
    /// At least 1.
    pub threshold: u32,
    pub window: Duration,
}

impl Default for SoftBounceLimit {
    fn default() -> Self {
        SoftBounceLimit {
            threshold: 5,
            window: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

/// What recording a mail did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    /// The ledger event it led to (for a soft bounce: the one that reached
    /// the threshold).
    Recorded { event: EventId },
    /// A soft bounce, counted: `count` within the window, below `threshold`.
    SoftBounceCounted { count: u32, threshold: u32 },
    /// The same mail was recorded before; nothing new now.
    Duplicate,
    /// The contact no longer has an address (erased) or never existed:
    /// there is nobody left to stop mailing.
    NoContact,
    /// The ledger refused the event (kept as evidence without one).
    Refused(Refusal),
}

/// A recorded mail, as `veto export` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InboundReport {
    pub id: i64,
    pub kind: String,
    pub key: String,
    /// The ledger event it led to, if any.
    pub event: Option<i64>,
    pub received_at: String,
    pub peer_ip: Option<String>,
    pub envelope_from: Option<String>,
    pub envelope_to: String,
    pub message_id: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub reporting_mta: Option<String>,
    pub feedback_type: Option<String>,
}
