//! The inbound listener's session (`[gateway] inbound_listen`): mail from
//! anyone, without AUTH, but only for veto's own addresses, and never
//! relayed (DESIGN.md, "gateway" and "feedback").
//!
//! - `unsubscribe+TOKEN@<mail_domain>`: RFC 2369 mailto unsubscribe. Any
//!   mail to it withdraws the token's scope for the token's contact
//!   (source `mailto`; evidence: the envelope, the Message-ID, the client).
//! - `bounces+TOKEN@<mail_domain>`: the VERP return path of every copy.
//!   A delivery status notification (RFC 3464) with `Action: failed` and a
//!   5.x.x status records a hard bounce; a delay or a 4.x.x failure is a
//!   soft bounce, and `soft_bounces.threshold` of them within the window
//!   record a hard bounce. An abuse report (RFC 5965 ARF) records a
//!   complaint. Anything else there (auto-replies, reports veto cannot
//!   read) is logged and accepted, so that no MTA retries it for days.
//!
//! The same mail delivered twice records once (by its Message-ID, or a
//! hash of its body). A store that cannot be reached answers `451 4.3.0`:
//! the sending MTA retries, and nothing acknowledged is lost.

use data_encoding::HEXLOWER;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use veto_core::{ContactId, EmailAddress, Timestamp};
use veto_mail::feedback::{
    Bounce, ComplaintReport, DeliveryReport, Feedback, FeedbackType, RecipientStatus,
    parse_feedback, verp_token,
};
use veto_mail::{Claims, Purpose};
use veto_store::{InboundKind, InboundOutcome, NewInboundReport, StoreError};

use super::{Session, State};
use crate::{Gateway, Reply};

/// Which listener a session serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `[gateway] listen`: the organisation's tools submit marketing mail.
    Submission,
    /// `[gateway] inbound_listen`: mail for veto's own addresses.
    Inbound,
}

/// One of veto's own mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mailbox {
    /// `unsubscribe+TOKEN@`: RFC 2369 mailto unsubscribe.
    Unsubscribe,
    /// `bounces+TOKEN@`: the VERP return path (DSNs, and ARF from
    /// providers that send complaints to the return path).
    Bounces,
}

impl Mailbox {
    fn prefix(self) -> &'static str {
        match self {
            Mailbox::Unsubscribe => "unsubscribe",
            Mailbox::Bounces => "bounces",
        }
    }

    fn purpose(self) -> Purpose {
        match self {
            Mailbox::Unsubscribe => Purpose::Unsubscribe,
            Mailbox::Bounces => Purpose::Bounce,
        }
    }
}

/// An accepted recipient: one of veto's addresses, and what its token says.
#[derive(Debug, Clone)]
pub(super) struct Recipient {
    /// As the client wrote it.
    address: String,
    mailbox: Mailbox,
    claims: Claims,
}

/// Longest diagnostic text kept as evidence (they are usually one line).
const MAX_EVIDENCE_TEXT: usize = 2000;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session of the inbound listener: nobody may relay, whoever connects.
    pub(crate) fn inbound(
        stream: S,
        peer: std::net::IpAddr,
        gateway: std::sync::Arc<Gateway>,
    ) -> Session<S> {
        let mut session = Session::new(stream, peer, gateway);
        session.sender = None;
        session.mode = Mode::Inbound;
        session
    }

    pub(super) async fn inbound_rcpt(&mut self, address: &str) {
        match self.state {
            State::Mail | State::Rcpt => {}
            _ => return self.error(Reply::new(503, "5.5.1", "Send MAIL FROM first")),
        }
        if self.tx.inbound.iter().any(|r| r.address == address) {
            return self.reply(Reply::new(250, "2.1.5", "OK"));
        }
        if self.tx.inbound.len() >= self.gateway.config.max_recipients {
            return self.reply(Reply::new(452, "4.5.3", "Too many recipients"));
        }
        match self.veto_address(address).await {
            Ok(recipient) => {
                self.tx.inbound.push(recipient);
                self.state = State::Rcpt;
                self.reply(Reply::new(250, "2.1.5", "OK"));
            }
            Err(Refused::Temporary(reply)) => self.reply(reply),
            // Strangers probing for an open relay or for tokens: counted.
            Err(Refused::Permanent(reply)) => self.error(reply),
        }
    }

    /// `address` if it is one of veto's own with a token that verifies.
    async fn veto_address(&self, address: &str) -> Result<Recipient, Refused> {
        let domain = &self.gateway.config.links.mail_domain;
        let unknown = || {
            Refused::Permanent(Reply::new(
                550,
                "5.1.1",
                format!("<{address}>: no such mailbox here"),
            ))
        };
        let Some((_, at_domain)) = address.rsplit_once('@') else {
            return Err(unknown());
        };
        if !at_domain.eq_ignore_ascii_case(domain) {
            // Never a relay: only veto's own domain is taken.
            return Err(Refused::Permanent(Reply::new(
                550,
                "5.7.1",
                format!("<{address}>: relaying denied; this server takes mail for {domain} only"),
            )));
        }
        let Some((mailbox, token)) = [Mailbox::Unsubscribe, Mailbox::Bounces]
            .into_iter()
            .find_map(|m| verp_token(address, m.prefix()).map(|t| (m, t)))
        else {
            return Err(unknown());
        };
        let keys = match self
            .gateway
            .cache
            .token_keys(self.gateway.guard().store(), true)
            .await
        {
            Ok(keys) => keys,
            Err(fail) => {
                tracing::error!(error = %fail, "inbound RCPT: token keys could not be read");
                return Err(Refused::Temporary(fail.reply()));
            }
        };
        let claims = keys.verify(token, mailbox.purpose()).map_err(|e| {
            tracing::info!(peer = %self.peer, %address, reason = %e, "inbound RCPT refused: the token does not verify");
            unknown()
        })?;
        if i64::try_from(claims.contact).is_err() {
            return Err(unknown());
        }
        Ok(Recipient {
            address: address.to_owned(),
            mailbox,
            claims,
        })
    }

    /// Acts on a complete mail for every recipient. One that cannot be
    /// recorded makes the whole mail temporary (451): the MTA sends it
    /// again, and what was recorded already is recognised as a duplicate.
    pub(super) async fn take(&mut self, message: &[u8]) -> Reply {
        let mail = Mail::of(message, self.tx.from.clone(), self.peer.to_string());
        let recipients = self.tx.inbound.clone();
        let mut done = Vec::with_capacity(recipients.len());
        for r in &recipients {
            match self.act_on(r, &mail).await {
                Ok(text) => done.push(text),
                Err(e) => {
                    tracing::error!(error = %e, to = %r.address, "inbound mail could not be recorded");
                    return Reply::new(
                        451,
                        "4.3.0",
                        "temporary failure recording the mail; try again later",
                    );
                }
            }
        }
        done.dedup();
        Reply::new(250, "2.0.0", format!("OK: {}", done.join("; ")))
    }

    /// What the mail means for one recipient, recorded; the reply's words.
    async fn act_on(&self, r: &Recipient, mail: &Mail<'_>) -> Result<&'static str, StoreError> {
        let contact = ContactId(i64::try_from(r.claims.contact).unwrap_or_default());
        let report = |kind| NewInboundReport {
            contact,
            key: mail.key(&r.address),
            kind,
            received_at: Timestamp::now(),
            peer_ip: Some(mail.peer.clone()),
            envelope_from: Some(mail.from.clone()).filter(|f| !f.is_empty()),
            envelope_to: r.address.clone(),
            message_id: mail.message_id.as_deref().map(evidence_text),
            status: None,
            diagnostic: None,
            reporting_mta: None,
            feedback_type: None,
        };
        match r.mailbox {
            Mailbox::Unsubscribe => {
                let scope = r.claims.scope.into();
                self.record(r, report(InboundKind::Unsubscribe(scope)))
                    .await?;
                Ok("unsubscribed")
            }
            Mailbox::Bounces => match parse_feedback(mail.bytes) {
                Err(e) => {
                    tracing::warn!(
                        peer = %self.peer, to = %r.address, message_id = ?mail.message_id, reason = %e,
                        "mail to a bounce address is not a report veto can read; ignored"
                    );
                    Ok("not a report veto can read; ignored")
                }
                Ok(Feedback::Delivery(dsn)) => {
                    let store = self.gateway.guard().store();
                    let address = store
                        .contact(contact)
                        .await?
                        .and_then(|c| c.email)
                        .and_then(|e| EmailAddress::parse(&e).ok());
                    let Some(address) = address else {
                        tracing::info!(contact = contact.0, to = %r.address, "bounce for a contact with no address left (erased); nothing to record");
                        return Ok("nothing to record");
                    };
                    let Some((bounce, status)) = failure_of(&dsn, &address) else {
                        tracing::info!(
                            contact = contact.0, message_id = ?mail.message_id,
                            "delivery report without a failure for this contact; nothing to record"
                        );
                        return Ok("no failure to record");
                    };
                    let kind = match bounce {
                        Bounce::Hard => InboundKind::HardBounce,
                        Bounce::Soft => InboundKind::SoftBounce,
                    };
                    self.record(
                        r,
                        NewInboundReport {
                            status: status.status.map(|(c, s, d)| format!("{c}.{s}.{d}")),
                            diagnostic: status.diagnostic.as_deref().map(evidence_text),
                            reporting_mta: dsn.reporting_mta.as_deref().map(evidence_text),
                            ..report(kind)
                        },
                    )
                    .await?;
                    Ok("bounce recorded")
                }
                Ok(Feedback::Complaint(arf)) => {
                    if !is_complaint(&arf) {
                        tracing::info!(
                            contact = contact.0,
                            feedback_type = arf.feedback_type.as_str(),
                            "feedback report that is not a complaint; nothing to record"
                        );
                        return Ok("not a complaint; nothing to record");
                    }
                    self.record(
                        r,
                        NewInboundReport {
                            feedback_type: Some(arf.feedback_type.as_str().to_owned()),
                            reporting_mta: arf.user_agent.as_deref().map(evidence_text),
                            ..report(InboundKind::Complaint)
                        },
                    )
                    .await?;
                    Ok("complaint recorded")
                }
            },
        }
    }

    async fn record(&self, r: &Recipient, report: NewInboundReport) -> Result<(), StoreError> {
        let (contact, kind, key) = (report.contact.0, report.kind.name(), report.key.clone());
        let limit = self.gateway.config.soft_bounces;
        let outcome = self
            .gateway
            .guard()
            .store()
            .record_inbound(report, limit)
            .await?;
        match outcome {
            InboundOutcome::Recorded { event } => {
                tracing::info!(contact, kind, event = event.0, to = %r.address, "inbound mail recorded");
            }
            InboundOutcome::SoftBounceCounted { count, threshold } => {
                tracing::info!(contact, count, threshold, "soft bounce counted");
            }
            InboundOutcome::Duplicate => {
                tracing::info!(
                    contact,
                    kind,
                    key,
                    "inbound mail seen before; nothing new recorded"
                );
            }
            InboundOutcome::NoContact => {
                tracing::info!(
                    contact,
                    kind,
                    "inbound mail for a contact with no address left (erased); nothing to record"
                );
            }
            InboundOutcome::Refused(refusal) => {
                tracing::warn!(contact, kind, reason = %refusal.reason, "the ledger refused the event of an inbound mail");
            }
        }
        Ok(())
    }
}

/// Why an inbound RCPT is refused.
enum Refused {
    /// 4xx: try again (the store could not be read).
    Temporary(Reply),
    /// 5xx: not one of veto's addresses.
    Permanent(Reply),
}

/// A received mail, with what identifies it.
struct Mail<'a> {
    bytes: &'a [u8],
    /// `MAIL FROM`; empty for `<>`.
    from: String,
    peer: String,
    message_id: Option<String>,
}

impl<'a> Mail<'a> {
    fn of(bytes: &'a [u8], from: String, peer: String) -> Mail<'a> {
        let message_id = header_value(bytes, "message-id").filter(|v| !v.is_empty());
        Mail {
            bytes,
            from,
            peer,
            message_id,
        }
    }

    /// The same mail to the same address twice gives the same key. A
    /// redelivery may carry more `Received` fields, but the same Message-ID
    /// and the same body; the address counts too (one mail to two
    /// unsubscribe addresses is two requests), in lower case (MTAs may
    /// change its case; tokens are lower case).
    fn key(&self, to: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(to.to_ascii_lowercase().as_bytes());
        hash.update([0]);
        let kind = match &self.message_id {
            Some(id) => {
                hash.update(id.as_bytes());
                "message-id"
            }
            None => {
                hash.update(body(self.bytes));
                "body"
            }
        };
        format!("{kind}:{}", HEXLOWER.encode(&hash.finalize()))
    }
}

/// The body: everything after the first empty line.
fn body(message: &[u8]) -> &[u8] {
    let mut at = 0;
    while at < message.len() {
        let end = message[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |p| at + p + 1);
        if matches!(&message[at..end], b"\r\n" | b"\n") {
            return &message[end..];
        }
        at = end;
    }
    &[]
}

/// The first `name` field of the message's header, unfolded and trimmed.
fn header_value(message: &[u8], name: &str) -> Option<String> {
    let head = &message[..message.len() - body(message).len()];
    let text = String::from_utf8_lossy(head);
    let mut found: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(value) = found.as_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((field, value)) = line.split_once(':')
            && field.trim().eq_ignore_ascii_case(name)
        {
            found = Some(value.trim().to_owned());
        }
    }
    found.map(|v| v.trim().to_owned())
}

/// Evidence text: bounded, without control characters.
fn evidence_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_EVIDENCE_TEXT)
        .collect()
}

/// How a DSN to the contact's return path counts against `address`.
///
/// The per-recipient blocks that name the address (as `Original-Recipient`
/// or `Final-Recipient`) decide; when none does (the MTA rewrote or
/// expanded it), all blocks do, since the return path was the contact's
/// own. Hard only when every deciding block failed permanently; any other
/// failure or delay is soft; delivered, relayed and expanded count nothing.
fn failure_of<'r>(
    dsn: &'r DeliveryReport,
    address: &EmailAddress,
) -> Option<(Bounce, &'r RecipientStatus)> {
    let names = |r: &RecipientStatus| {
        [&r.original_recipient, &r.final_recipient]
            .into_iter()
            .flatten()
            .filter_map(|a| EmailAddress::parse(a).ok())
            .any(|a| a.key() == address.key())
    };
    let naming: Vec<&RecipientStatus> = dsn.recipients.iter().filter(|r| names(r)).collect();
    let deciding = if naming.is_empty() {
        dsn.recipients.iter().collect()
    } else {
        naming
    };
    let failed: Vec<(Bounce, &RecipientStatus)> = deciding
        .iter()
        .filter_map(|r| r.bounce().map(|b| (b, *r)))
        .collect();
    let (_, first) = *failed.first()?;
    let hard = failed.len() == deciding.len() && failed.iter().all(|(b, _)| *b == Bounce::Hard);
    Some((if hard { Bounce::Hard } else { Bounce::Soft }, first))
}

/// RFC 5965 §7.3: `not-spam` is the opposite of a complaint, and RFC 6591
/// `auth-failure` is about authentication, not about the person's wishes.
/// Every other type (abuse, fraud, virus, other, and unregistered ones)
/// stops marketing: when in doubt, veto does not mail.
fn is_complaint(arf: &ComplaintReport) -> bool {
    match &arf.feedback_type {
        FeedbackType::NotSpam => false,
        FeedbackType::Unknown(t) => t != "auth-failure",
        FeedbackType::Abuse | FeedbackType::Fraud | FeedbackType::Other | FeedbackType::Virus => {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_unfold_and_stop_at_the_body() {
        let m = b"Subject: a\r\nMessage-ID:\r\n <x@y>\r\nX: 1\r\n\r\nMessage-ID: <body@z>\r\n";
        assert_eq!(header_value(m, "message-id").as_deref(), Some("<x@y>"));
        assert_eq!(header_value(m, "MESSAGE-ID").as_deref(), Some("<x@y>"));
        assert_eq!(
            header_value(b"X: 1\r\n\r\nMessage-ID: <b>\r\n", "message-id"),
            None
        );
        assert_eq!(body(m), b"Message-ID: <body@z>\r\n");
        assert_eq!(body(b"no body"), b"");
    }

    #[test]
    fn the_same_mail_to_the_same_address_has_the_same_key() {
        let mail = |bytes: &'static [u8]| Mail::of(bytes, String::new(), "ip".into());
        let a = mail(b"Received: one\r\nSubject: s\r\n\r\nbody\r\n");
        let b = mail(b"Received: two\r\nReceived: one\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(a.key("bounces+x@d"), b.key("BOUNCES+X@D"));
        assert!(a.key("bounces+x@d").starts_with("body:"));
        assert_ne!(a.key("bounces+x@d"), a.key("bounces+y@d"));
        let c = mail(b"Subject: s\r\n\r\nother\r\n");
        assert_ne!(a.key("bounces+x@d"), c.key("bounces+x@d"));
        let d = mail(b"Message-ID: <m@x>\r\n\r\nbody\r\n");
        let e = mail(b"Message-ID: <m@x>\r\n\r\nanother body\r\n");
        assert!(d.key("u@d").starts_with("message-id:"), "{}", d.key("u@d"));
        assert_eq!(d.key("u@d"), e.key("u@d"));
    }
}
