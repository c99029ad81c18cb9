//! veto-sender: sending under the guard.
//!
//! Every [`Transport`] takes an [`veto_store::Admitted`] recipient, which
//! only the guard can make. Transports: the maildir (the default for a fresh
//! install, so a newcomer sees exactly what would have gone out) and the
//! upstream SMTP relay ([`SmtpTransport`]). The gateway relays through them,
//! and so does [`Mailer`], for the messages veto itself sends (confirmation
//! links), which writes a receipt for every recipient it was asked about,
//! sent or not. Campaigns come with the sender issue.

pub mod campaign;
pub mod copy;
mod maildir;
pub mod outbound;
pub mod service;
pub mod smtp;
pub mod template;
pub mod transport;
pub mod webhook;

pub use copy::{CopyMaker, PersonalCopy};
pub use maildir::Maildir;
pub use smtp::{SmtpCredentials, SmtpSettings, SmtpSetupError, SmtpTransport, TlsMode};
pub use transport::{MaildirTransport, Outcome, Transport, TransportError, TransportFuture};
pub use webhook::{WebhookSender, WebhookSettings, WebhookTarget};

use std::sync::Arc;

use veto_core::{Channel, EmailAddress, Refusal, Timestamp};
use veto_store::{Guard, GuardClass, NewReceipt, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the message could not be written to the outbox: {0}")]
    Io(#[from] std::io::Error),
    /// The transport could not take the message now (try again later).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Upstream refused the message for good (its 5xx reply).
    #[error("upstream refused the message: {0}")]
    Rejected(String),
}

/// What happened to one recipient.
#[derive(Debug)]
pub enum Sent {
    /// Handed off (the receipt says where).
    Delivered { message_id: String },
    /// The guard said no (receipted too).
    Refused(Refusal),
}

/// veto's own messages: sender identity, guard and transport together.
#[derive(Clone)]
pub struct Mailer {
    guard: Guard,
    transport: Arc<dyn Transport>,
    from_name: String,
    from_address: String,
    domain: String,
}

impl Mailer {
    /// `domain` is veto's own domain (`[organisation] domain`): messages come
    /// from `no-reply@domain` in the organisation's name. They go to the
    /// maildir `outbox`.
    pub fn new(guard: Guard, outbox: Maildir, from_name: &str, domain: &str) -> Mailer {
        Self::with_transport(
            guard,
            Arc::new(MaildirTransport::new(outbox)),
            from_name,
            domain,
        )
    }

    /// Like [`Mailer::new`], through any transport (the one the gateway
    /// uses, so both share one upstream connection pool).
    pub fn with_transport(
        guard: Guard,
        transport: Arc<dyn Transport>,
        from_name: &str,
        domain: &str,
    ) -> Mailer {
        Mailer {
            guard,
            transport,
            from_name: from_name.to_owned(),
            from_address: format!("no-reply@{domain}"),
            domain: domain.to_owned(),
        }
    }

    pub fn store(&self) -> &Store {
        self.guard.store()
    }

    /// The `[policy]` the mailer's guard decides by.
    pub fn policy(&self) -> &veto_core::PolicySettings {
        self.guard.settings()
    }

    /// Sends a plain-text message to one person, if the guard admits it now.
    pub async fn send_text(
        &self,
        to: &EmailAddress,
        class: GuardClass<'_>,
        subject: &str,
        text: &str,
    ) -> Result<Sent, SendError> {
        let message_id = format!("{}@{}", random_id(), self.domain);
        let base = NewReceipt {
            message_id: format!("<{message_id}>"),
            contact: None,
            recipient: to.as_str().to_owned(),
            subject: Some(subject.to_owned()),
            content_hash: None,
            template_version: None,
            class: class.label(),
            channel: Channel::Email.as_str().to_owned(),
            allowed: false,
            rule: String::new(),
            reason: None,
            event: None,
            checked_at: 0,
            outcome: None,
            relayed_at: None,
        };
        match self.guard.admit(to, class, Channel::Email).await? {
            Err((contact, refusal)) => {
                let receipt = NewReceipt {
                    contact: contact.map(|c| c.0),
                    rule: refusal.rule.id().to_owned(),
                    reason: Some(refusal.reason.code().to_owned()),
                    event: refusal.event.map(|e| e.0),
                    checked_at: Timestamp::now().as_microsecond(),
                    outcome: Some("not sent".into()),
                    ..base
                };
                self.store().record_receipts(vec![receipt]).await?;
                Ok(Sent::Refused(refusal))
            }
            Ok(admitted) => {
                let bytes = mail_builder::MessageBuilder::new()
                    .from((self.from_name.as_str(), self.from_address.as_str()))
                    .to(admitted.to().as_str())
                    .subject(subject)
                    .message_id(message_id.as_str())
                    .text_body(text)
                    .write_to_vec()?;
                let receipt = NewReceipt {
                    contact: admitted.contact().map(|c| c.0),
                    allowed: true,
                    rule: admitted.allowance().rule.id().to_owned(),
                    event: admitted.allowance().event.map(|e| e.0),
                    checked_at: admitted.checked_at().as_microsecond(),
                    ..base
                };
                // Return path: the From address (the null path `<>` is
                // for DSNs only, RFC 5321 §4.5.5).
                let relayed = self
                    .transport
                    .relay(&self.from_address, &admitted, &bytes)
                    .await;
                let (outcome, result) = match relayed {
                    Ok(Outcome::Accepted { reply }) => (
                        reply,
                        Ok(Sent::Delivered {
                            message_id: format!("<{message_id}>"),
                        }),
                    ),
                    Ok(Outcome::Rejected { reply }) => (
                        format!("rejected upstream: {reply}"),
                        Err(SendError::Rejected(reply)),
                    ),
                    Err(e) => (format!("not relayed: {e}"), Err(SendError::Transport(e))),
                };
                let receipt = NewReceipt {
                    outcome: Some(outcome),
                    ..receipt
                };
                self.store().record_receipts(vec![receipt]).await?;
                result
            }
        }
    }
}

pub(crate) fn random_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}
