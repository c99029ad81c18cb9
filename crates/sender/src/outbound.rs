//! What campaigns and service messages share: the guard, the transport,
//! the personal copies, and the step from an admitted recipient to a
//! message handed off.

use std::sync::Arc;

use data_encoding::HEXLOWER;
use sha2::{Digest, Sha256};
use veto_core::{Channel, ContactId, EventKind, NewEvent, Scope, Source, Timestamp};
use veto_mail::rewrite::Original;
use veto_mail::{TokenKey, TokenKeys};
use veto_store::{Admitted, Append, ContactInput, Evidence, Guard, NewReceipt, Store, StoreError};

use crate::copy::{CopyClass, CopyError, CopyMaker, Stream};
use crate::template::{Rendered, TemplateError};
use crate::{Outcome, Transport, TransportError};

/// The guard, the transport and the copy maker, as campaigns and the
/// service-message API use them.
#[derive(Clone)]
pub struct Outbound {
    pub guard: Guard,
    pub transport: Arc<dyn Transport>,
    pub copies: CopyMaker,
}

/// The sender of a composed message.
#[derive(Debug, Clone)]
pub struct From {
    pub name: Option<String>,
    pub address: String,
}

/// What happened to one admitted recipient's message.
#[derive(Debug)]
pub enum HandOff {
    /// The next hop took it (its reply).
    Accepted(String),
    /// The next hop refused it for good (a hard bounce).
    Rejected(String),
    /// The next hop could not take it now: try again later.
    Unavailable(TransportError),
    /// The message could not be made for this recipient (their data broke
    /// the template, or the copy could not be written).
    Unmakeable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error("the message could not be built: {0}")]
    Build(String),
}

impl Outbound {
    pub fn store(&self) -> &Store {
        self.guard.store()
    }

    pub fn mail_domain(&self) -> &str {
        &self.copies.links.mail_domain
    }

    /// The keys that sign this moment's links.
    pub async fn token_keys(&self) -> Result<TokenKeys, StoreError> {
        let mut keys = self
            .store()
            .token_keys()
            .await?
            .into_iter()
            .map(|(id, secret)| TokenKey::new(id, secret));
        let current = keys
            .next()
            .ok_or_else(|| StoreError::Corrupt("the store holds no token key".into()))?;
        TokenKeys::new(current, keys.collect()).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The recipient's whole message: headers, bodies, their links and
    /// footer, signed. `message_id` is stable per recipient, so a message
    /// sent again after a crash is known upstream as the same one.
    #[allow(clippy::too_many_arguments)]
    pub fn compose(
        &self,
        rendered: &Rendered,
        from: &From,
        to: &str,
        message_id: &str,
        class: CopyClass<'_>,
        keys: &TokenKeys,
        contact: ContactId,
        stream: Stream<'_>,
        extra_headers: &[(&str, &str)],
    ) -> Result<crate::PersonalCopy, ComposeError> {
        let mut b = mail_builder::MessageBuilder::new();
        b = match &from.name {
            Some(name) => b.from((name.as_str(), from.address.as_str())),
            None => b.from(from.address.as_str()),
        };
        b = b
            .to(to)
            .subject(rendered.subject.as_str())
            .message_id(message_id.trim_matches(['<', '>']))
            .text_body(rendered.text.as_str());
        for (name, value) in extra_headers {
            b = b.header(*name, mail_builder::headers::raw::Raw::new(*value));
        }
        if let Some(html) = &rendered.html {
            b = b.html_body(html.as_str());
        }
        let bytes = b
            .write_to_vec()
            .map_err(|e| ComposeError::Build(e.to_string()))?;
        self.copy_of(&bytes, class, keys, contact, stream)
    }

    /// A personal copy of a complete message (raw content, CRLF or LF).
    pub fn copy_of(
        &self,
        message: &[u8],
        class: CopyClass<'_>,
        keys: &TokenKeys,
        contact: ContactId,
        stream: Stream<'_>,
    ) -> Result<crate::PersonalCopy, ComposeError> {
        let original = Original::parse(message).map_err(CopyError::from)?;
        Ok(self
            .copies
            .personal_copy(&original, class, keys, contact, stream)?)
    }

    /// Hands one copy to the transport.
    pub async fn hand_off(&self, admitted: &Admitted, copy: &crate::PersonalCopy) -> HandOff {
        match self
            .transport
            .relay(&copy.return_path, admitted, &copy.bytes)
            .await
        {
            Ok(Outcome::Accepted { reply }) => HandOff::Accepted(reply),
            Ok(Outcome::Rejected { reply }) => HandOff::Rejected(reply),
            Err(e) => HandOff::Unavailable(e),
        }
    }

    /// Addresses the next hop refused for good become hard bounces: the
    /// guard refuses them from now on.
    pub async fn record_hard_bounces(&self, rejected: &[(veto_core::EmailAddress, String)]) {
        if rejected.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let items = rejected
            .iter()
            .map(|(to, reply)| Append {
                contact: ContactInput::new(to.clone()),
                event: NewEvent {
                    kind: EventKind::HardBounce,
                    scope: Scope::All,
                    channel: Some(Channel::Email),
                    source: Source::Feedback,
                    at: now,
                },
                evidence: Evidence::default(),
                actor: format!("upstream: {}", truncate(reply, 200)),
            })
            .collect();
        if let Err(e) = self.store().append(items, false).await {
            tracing::error!(error = %e, "hard bounces from upstream not recorded");
        }
    }
}

/// A receipt for one recipient of a message, before the decision is known.
pub(crate) fn receipt_base(
    message_id: &str,
    recipient: &str,
    class: String,
    subject: Option<String>,
    template_version: Option<String>,
) -> NewReceipt {
    NewReceipt {
        message_id: message_id.to_owned(),
        contact: None,
        recipient: recipient.to_owned(),
        subject,
        content_hash: None,
        template_version,
        class,
        channel: Channel::Email.as_str().to_owned(),
        allowed: false,
        rule: String::new(),
        reason: None,
        event: None,
        checked_at: 0,
        outcome: None,
        relayed_at: None,
    }
}

/// The receipt of an admitted recipient.
pub(crate) fn admitted_receipt(base: NewReceipt, a: &Admitted, outcome: String) -> NewReceipt {
    NewReceipt {
        contact: a.contact().map(|c| c.0),
        allowed: true,
        rule: a.allowance().rule.id().to_owned(),
        event: a.allowance().event.map(|e| e.0),
        checked_at: a.checked_at().as_microsecond(),
        outcome: Some(outcome),
        ..base
    }
}

/// The receipt of a refused recipient.
pub(crate) fn refused_receipt(
    base: NewReceipt,
    contact: Option<ContactId>,
    refusal: &veto_core::Refusal,
    checked_at: Timestamp,
) -> NewReceipt {
    NewReceipt {
        contact: contact.map(|c| c.0),
        rule: refusal.rule.id().to_owned(),
        reason: Some(refusal.reason.code().to_owned()),
        event: refusal.event.map(|e| e.0),
        checked_at: checked_at.as_microsecond(),
        outcome: Some("not sent".into()),
        ..base
    }
}

pub(crate) fn content_hash(bytes: &[u8]) -> String {
    HEXLOWER.encode(&Sha256::digest(bytes))
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
