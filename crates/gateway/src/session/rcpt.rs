//! RCPT TO: who may relay, and the first guard check.

use tokio::io::{AsyncRead, AsyncWrite};
use veto_core::{Channel, EmailAddress, Role, Timestamp, Topic};
use veto_store::{GuardClass, NewReceipt};

use super::{Session, State, topic_key};
use crate::{Fail, Reply};

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
        if self.tx.recipients.len() >= self.gateway.config.max_recipients {
            return self.reply(Reply::new(452, "4.5.3", "Too many recipients"));
        }
        let reply = match self.check_recipient(&sender, &to).await {
            Ok(()) => {
                self.tx.recipients.push(to);
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
    async fn check_recipient(
        &mut self,
        sender: &super::Sender,
        to: &EmailAddress,
    ) -> Result<(), Fail> {
        let Some(topic) = self.rcpt_topic(sender).await? else {
            return Ok(());
        };
        match self
            .gateway
            .guard
            .admit(to, GuardClass::Marketing(&topic), Channel::Email)
            .await?
        {
            Ok(_) => Ok(()),
            Err((contact, refusal)) => {
                self.tx.refused.push(NewReceipt {
                    message_id: String::new(),
                    contact: contact.map(|c| c.0),
                    recipient: to.as_str().to_owned(),
                    subject: None,
                    content_hash: None,
                    template_version: None,
                    class: GuardClass::Marketing(&topic).label(),
                    channel: Channel::Email.as_str().to_owned(),
                    allowed: false,
                    rule: refusal.rule.id().to_owned(),
                    reason: Some(refusal.reason.code().to_owned()),
                    event: refusal.event.map(|e| e.0),
                    checked_at: Timestamp::now().as_microsecond(),
                    outcome: Some("refused at RCPT".into()),
                });
                Err(Fail::NotAgreed {
                    address: to.as_str().to_owned(),
                    topic: topic.key.as_str().to_owned(),
                    reason: refusal.reason,
                })
            }
        }
    }

    /// The sender's default topic, looked up once per transaction.
    async fn rcpt_topic(&mut self, sender: &super::Sender) -> Result<Option<Topic>, Fail> {
        if let Some(topic) = &self.tx.topic {
            return Ok(Some(topic.clone()));
        }
        let Some(key) = &sender.default_topic else {
            return Ok(None);
        };
        check_role(sender)?;
        let topic = resolve_topic(self, key).await?;
        self.tx.topic = Some(topic.clone());
        Ok(Some(topic))
    }
}

/// Marketing needs a key with the role for it (trusted networks are
/// configured by an administrator, and may).
pub(super) fn check_role(sender: &super::Sender) -> Result<(), Fail> {
    match sender.role {
        None | Some(Role::Marketer | Role::Admin) => Ok(()),
        Some(role) => Err(Fail::RoleMayNotSendMarketing(role.as_str().to_owned())),
    }
}

pub(super) async fn resolve_topic<S>(session: &Session<S>, key: &str) -> Result<Topic, Fail> {
    let Some(parsed) = topic_key(key) else {
        return Err(Fail::UnknownTopic(key.to_owned()));
    };
    session
        .gateway
        .guard
        .store()
        .topic(&parsed)
        .await?
        .ok_or_else(|| Fail::UnknownTopic(key.to_owned()))
}
