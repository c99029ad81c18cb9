//! RCPT TO: who may relay, and the first guard check.

use tokio::io::{AsyncRead, AsyncWrite};
use veto_core::{Channel, EmailAddress, Timestamp};
use veto_store::NewReceipt;

use super::{Sender, Session, State};
use crate::{Fail, RefusedRecipients, Reply};

/// The outcome in the receipt of a recipient discarded at RCPT.
pub(super) const DISCARDED: &str = "discarded at RCPT (told 250: accept-and-discard)";

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn handle_rcpt(&mut self, address: &str) {
        match self.state {
            State::Mail | State::Rcpt => {}
            _ => return self.error(Reply::new(503, "5.5.1", "Send MAIL FROM first")),
        }
        // Never an open relay: an API key or a trusted network, or nothing.
        let Some(sender) = self.sender.clone() else {
            return self.error(Fail::AuthRequired.reply());
        };
        let Ok(to) = EmailAddress::parse(address) else {
            return self.error(Reply::new(501, "5.1.3", "Bad recipient address syntax"));
        };
        if self.tx.recipients.contains(&to) {
            return self.reply(Reply::new(250, "2.1.5", "OK"));
        }
        if self.tx.recipients.len() + self.tx.refused.len() >= self.gateway.config.max_recipients {
            return self.reply(Reply::new(452, "4.5.3", "Too many recipients"));
        }
        let reply = match self.check_recipient(&sender, &to).await {
            Ok(admitted) => {
                if admitted {
                    self.tx.recipients.push(to);
                }
                self.state = State::Rcpt;
                Reply::new(250, "2.1.5", "OK")
            }
            Err(fail) => {
                if let Fail::Store(e) = &fail {
                    tracing::error!(error = %e, "guard check at RCPT failed");
                }
                fail.reply()
            }
        };
        self.reply(reply);
    }

    /// The RCPT-time check, when the classification is known; otherwise
    /// the recipient is accepted provisionally (DATA checks again anyway).
    /// `Ok(false)`: refused, but the tool is told 250 (accept-and-discard).
    async fn check_recipient(&mut self, sender: &Sender, to: &EmailAddress) -> Result<bool, Fail> {
        let Some(class) = self.default_class(sender).await? else {
            return Ok(true);
        };
        let (contact, refusal) = match self
            .gateway
            .guard
            .admit(to, class.guard_class(), Channel::Email)
            .await?
        {
            Ok(_) => return Ok(true),
            Err(refused) => refused,
        };
        let discard = self.gateway.config.refused_recipients == RefusedRecipients::Discard;
        self.tx.refused.push(NewReceipt {
            message_id: String::new(),
            contact: contact.map(|c| c.0),
            recipient: to.as_str().to_owned(),
            subject: None,
            content_hash: None,
            template_version: None,
            class: class.guard_class().label(),
            channel: Channel::Email.as_str().to_owned(),
            allowed: false,
            rule: refusal.rule.id().to_owned(),
            reason: Some(refusal.reason.code().to_owned()),
            event: refusal.event.map(|e| e.0),
            checked_at: Timestamp::now().as_microsecond(),
            outcome: Some(if discard {
                DISCARDED.into()
            } else {
                "refused at RCPT".into()
            }),
            relayed_at: None,
        });
        if discard {
            return Ok(false);
        }
        Err(Fail::NotAgreed {
            address: to.as_str().to_owned(),
            topic: class.what(),
            reason: refusal.reason,
        })
    }
}
