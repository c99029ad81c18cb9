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

/// A mail service that posts feedback to veto's webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Amazon SES, through SNS notifications.
    Ses,
    SendGrid,
    Postmark,
}

impl Provider {
    /// How the `provider` column, report keys and actors spell it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Ses => "ses",
            Provider::SendGrid => "sendgrid",
            Provider::Postmark => "postmark",
        }
    }
}

/// What a provider says happened to one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderFeedback {
    /// The receiving server refused the address for good.
    HardBounce,
    /// A temporary failure; counted like a DSN soft bounce.
    SoftBounce,
    /// The person reported the message as spam.
    Complaint,
}

impl ProviderFeedback {
    fn inbound_kind(self) -> InboundKind {
        match self {
            ProviderFeedback::HardBounce => InboundKind::HardBounce,
            ProviderFeedback::SoftBounce => InboundKind::SoftBounce,
            ProviderFeedback::Complaint => InboundKind::Complaint,
        }
    }
}

/// One address in a provider event, with the evidence the provider gave.
#[derive(Debug, Clone)]
pub struct ProviderRecipient {
    pub email: EmailAddress,
    pub feedback: ProviderFeedback,
    /// The bounce's status (`5.1.1`), if given.
    pub status: Option<String>,
    /// The receiving server's reply or the provider's description.
    pub diagnostic: Option<String>,
    /// The provider's id of the message that bounced or was reported.
    pub message_id: Option<String>,
    /// The complaint's feedback type (`abuse`), if given.
    pub feedback_type: Option<String>,
}

/// One event a provider posted: recorded once per `(provider, event_id)`.
#[derive(Debug, Clone)]
pub struct ProviderEvent {
    pub provider: Provider,
    /// The provider's own id (SES `feedbackId`, SendGrid `sg_event_id`,
    /// Postmark `ID`).
    pub event_id: String,
    /// The provider's name for it (`Bounce`, `spamreport`, ...).
    pub event_type: String,
    pub received_at: Timestamp,
    /// Who posted it.
    pub peer_ip: Option<String>,
    /// Usually one; an SES bounce may name several.
    pub recipients: Vec<ProviderRecipient>,
}

/// What recording a provider event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderOutcome {
    /// First time: what it did for each recipient, in order
    /// ([`InboundOutcome::NoContact`] for an address veto does not know).
    Recorded(Vec<InboundOutcome>),
    /// This `(provider, event_id)` was recorded before; nothing new now.
    Duplicate,
}

impl ProviderRecipient {
    /// The `inbound_reports` row for this recipient of `event`.
    pub(crate) fn report(&self, event: &ProviderEvent, contact: ContactId) -> NewInboundReport {
        NewInboundReport {
            contact,
            key: format!("{}:{}", event.provider.name(), event.event_id),
            kind: self.feedback.inbound_kind(),
            received_at: event.received_at,
            peer_ip: event.peer_ip.clone(),
            envelope_from: None,
            envelope_to: format!("webhook:{}", event.provider.name()),
            message_id: self.message_id.clone(),
            status: self.status.clone(),
            diagnostic: self.diagnostic.clone(),
            reporting_mta: Some(event.provider.name().to_owned()),
            feedback_type: self.feedback_type.clone(),
        }
    }
}
