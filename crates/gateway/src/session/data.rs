//! DATA: reading the message safely, classifying it, the authoritative
//! guard check, the personal copies, the hand-off and the receipts.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use data_encoding::HEXLOWER;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use veto_core::{Channel, ContactId, EmailAddress, EventKind, NewEvent, Scope, Source, Timestamp};
use veto_mail::TokenKeys;
use veto_mail::rewrite::Original;
use veto_sender::copy::{CopyClass, PersonalCopy, Stream};
use veto_store::receipt_log::RELAY_MEMORY;
use veto_store::{Append, ContactInput, Delivery, Evidence, GuardClass, NewReceipt};

use super::class::{Class, named_by_header};
use super::rcpt::DISCARDED;
use super::{Line, Mode, Sender, Session, State};
use crate::{Fail, Gateway, RelayOutcome, Reply, dsn};

/// What reading the data gave, when the session goes on.
enum Data {
    Message(Vec<u8>),
    Refused(Fail),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn handle_data(&mut self) -> std::io::Result<()> {
        match self.state {
            State::Rcpt => {}
            State::Mail => {
                self.error(Reply::new(554, "5.5.1", "No valid recipients"));
                return Ok(());
            }
            _ => {
                self.error(Reply::new(503, "5.5.1", "Send MAIL FROM and RCPT TO first"));
                return Ok(());
            }
        }
        self.reply(Reply::new(
            354,
            "",
            "Start mail input; end with <CRLF>.<CRLF>",
        ));
        self.state = State::Data;
        let reply = match self.read_data().await? {
            None => return Ok(()),
            Some(Data::Refused(fail)) => fail.reply(),
            // The inbound listener's mail is for veto itself: never relayed.
            Some(Data::Message(message)) if self.mode == Mode::Inbound => self.take(&message).await,
            Some(Data::Message(message)) => match self.deliver(message).await {
                Ok(reply) => reply,
                Err(fail) => {
                    if let Fail::Store(e) = &fail {
                        tracing::error!(error = %e, "guard check at end of DATA failed");
                    }
                    fail.reply()
                }
            },
        };
        self.reply(reply);
        self.reset_transaction();
        Ok(())
    }

    /// Reads up to `<CRLF>.<CRLF>`, undoing dot-stuffing. Only that exact
    /// sequence ends the data; a bare LF or CR anywhere refuses the message
    /// (SMTP smuggling: a `<LF>.<LF>` that upstream would read as the end).
    /// `None`: the session ended (EOF or timeout).
    async fn read_data(&mut self) -> std::io::Result<Option<Data>> {
        let limit = self.gateway.config.max_message_size;
        let line_limit = self.gateway.config.max_data_line;
        let timeout = self.gateway.config.data_timeout;
        let mut message = Vec::new();
        let (mut smuggling, mut too_large, mut too_long) = (false, false, false);
        loop {
            let line = match self.read_line(line_limit, timeout).await? {
                Line::Eof => {
                    self.state = State::Quit;
                    return Ok(None);
                }
                Line::Timeout => {
                    self.timed_out();
                    return Ok(None);
                }
                Line::TooLong => {
                    too_long = true;
                    continue;
                }
                Line::Complete(at) => at,
            };
            // The line itself, from the session's buffer (no copy of its own).
            let line = &self.input[line];
            if line == b".\r\n" {
                break;
            }
            match line.strip_suffix(b"\r\n") {
                Some(content) if !content.contains(&b'\r') => {}
                _ => smuggling = true,
            }
            // RFC 5321 §4.5.2: remove the first of leading dots.
            let line = line.strip_prefix(b".").unwrap_or(line);
            if message.len() + line.len() > limit {
                too_large = true;
            } else if !too_large {
                message.extend_from_slice(line);
            }
        }
        Ok(Some(if smuggling {
            Data::Refused(Fail::Smuggling)
        } else if too_large {
            Data::Refused(Fail::TooLarge(limit))
        } else if too_long {
            Data::Refused(Fail::DataLineTooLong(line_limit))
        } else {
            Data::Message(message)
        }))
    }

    /// From a complete message to the reply for the tool.
    async fn deliver(&mut self, message: Vec<u8>) -> Result<Reply, Fail> {
        let sender = self.sender.clone().ok_or(Fail::AuthRequired)?;
        let header = Header::scan(&message);
        let declared = header
            .fields
            .iter()
            .filter_map(|f| named_by_header(&f.name, &field_value(&message, f)))
            .collect::<Result<Vec<_>, Fail>>()?;
        let class = self.final_class(&sender, declared).await?;
        let content_hash = HEXLOWER.encode(&Sha256::digest(&message));
        let domain = &self.gateway.config.links.mail_domain;
        let subject = header.value(&message, "subject");
        let (message, message_id) = prepare(&message, &header, domain, &content_hash);
        let original = Arc::new(Original::parse(&message)?);
        let keys = self
            .gateway
            .cache
            .token_keys(self.gateway.guard.store(), false)
            .await?;
        let label = class.guard_class().label();
        let receipt = |to: &str| NewReceipt {
            message_id: message_id.clone(),
            contact: None,
            recipient: to.to_owned(),
            subject: subject.clone(),
            content_hash: Some(content_hash.clone()),
            template_version: None,
            class: label.clone(),
            channel: Channel::Email.as_str().to_owned(),
            allowed: false,
            rule: String::new(),
            reason: None,
            event: None,
            checked_at: 0,
            outcome: None,
            relayed_at: None,
        };

        let mut receipts: Vec<NewReceipt> = std::mem::take(&mut self.tx.refused)
            .into_iter()
            .map(|r| NewReceipt {
                message_id: message_id.clone(),
                subject: subject.clone(),
                content_hash: Some(content_hash.clone()),
                ..r
            })
            .collect();
        // Recipients told 250 at RCPT but discarded count as withheld; those
        // refused with a 550 were told already.
        let mut withheld = receipts
            .iter()
            .filter(|r| r.outcome.as_deref() == Some(DISCARDED))
            .count();

        // A retry of a message whose earlier attempt got a 451: the copies
        // upstream already took are not sent again. The first recipient's
        // authoritative check is read with that memory, at the same moment.
        let since = Timestamp::now() - RELAY_MEMORY;
        let recipients = std::mem::take(&mut self.tx.recipients);
        let (earlier, mut first_check) = match recipients.first() {
            Some(first) => {
                let (earlier, checked) = self
                    .gateway
                    .guard
                    .admit_with_relayed(
                        &message_id,
                        since,
                        first,
                        class.guard_class(),
                        Channel::Email,
                    )
                    .await?;
                (earlier, Some((first.clone(), checked)))
            }
            None => (Vec::new(), None),
        };
        let earlier: HashSet<String> = earlier.into_iter().collect();
        let recipients: Vec<EmailAddress> = recipients
            .into_iter()
            .filter(|to| !earlier.contains(to.as_str()))
            .collect();
        let sent_earlier = earlier.len();

        if let Class::Service(_) = &class {
            self.bulk_brake(&sender, &class, recipients.len()).await?;
        }

        let campaign = &content_hash[..12];
        let (mut delivered, mut rejected) = (0, Vec::new());
        let mut unavailable = None;
        let mut pending = Vec::new();
        for (i, to) in recipients.iter().enumerate() {
            // The authoritative check, immediately before this copy's
            // hand-off: a withdrawal while DATA was open, or while the
            // copies before this one went out, counts. (The first copy's
            // was read with the relay memory, a moment ago.)
            let checked = match first_check.take().filter(|(addr, _)| addr == to) {
                Some((_, checked)) => checked,
                None => {
                    self.gateway
                        .guard
                        .admit(to, class.guard_class(), Channel::Email)
                        .await?
                }
            };
            let checked = match checked {
                // Service mail may go to an address veto has no record of (a
                // new customer's first bill); its copy's return path needs a
                // contact for a bounce to be attributed to. Storing it is
                // refused only if the address was erased a moment ago.
                Ok(a) => match a.contact() {
                    Some(id) => Ok((a, id)),
                    None => self
                        .gateway
                        .guard
                        .store()
                        .upsert_contact(ContactInput::new(a.to().clone()))
                        .await?
                        .map(|id| (a, id))
                        .map_err(|refusal| (None, refusal)),
                },
                Err(refused) => Err(refused),
            };
            let (a, contact) = match checked {
                Ok(admitted) => admitted,
                Err((contact, refusal)) => {
                    withheld += 1;
                    receipts.push(NewReceipt {
                        contact: contact.map(|c| c.0),
                        rule: refusal.rule.id().to_owned(),
                        reason: Some(refusal.reason.code().to_owned()),
                        event: refusal.event.map(|e| e.0),
                        checked_at: Timestamp::now().as_microsecond(),
                        outcome: Some("withheld at end of DATA".into()),
                        ..receipt(to.as_str())
                    });
                    continue;
                }
            };
            let mut relayed_at = None;
            let outcome = if unavailable.is_some() {
                "not relayed: upstream unavailable".to_owned()
            } else {
                let copy = self
                    .personal_copy(&original, &class, &keys, contact, campaign)
                    .await?;
                match self
                    .gateway
                    .relay
                    .relay(&copy.return_path, &a, &copy.bytes)
                    .await
                {
                    Ok(RelayOutcome::Accepted { reply }) => {
                        delivered += 1;
                        relayed_at = Some(Timestamp::now().as_microsecond());
                        reply
                    }
                    Ok(RelayOutcome::Rejected { reply }) => {
                        let outcome = format!("rejected upstream: {reply}");
                        rejected.push((a.to().clone(), reply));
                        outcome
                    }
                    Err(e) => {
                        let outcome = format!("not relayed: {e}");
                        unavailable = Some(e);
                        outcome
                    }
                }
            };
            let receipt = NewReceipt {
                contact: Some(contact.0),
                allowed: true,
                rule: a.allowance().rule.id().to_owned(),
                event: a.allowance().event.map(|e| e.0),
                checked_at: a.checked_at().as_microsecond(),
                outcome: Some(outcome),
                relayed_at,
                ..receipt(a.to().as_str())
            };
            // A relayed copy's receipt (the relay memory) is written while
            // the next copy goes out, so that a crash re-sends at most the
            // copies of its last moment. The last copy's goes with the rest.
            if relayed_at.is_some() && i + 1 < recipients.len() {
                let early = Delivery {
                    receipts: vec![receipt],
                    service: None,
                };
                match self.gateway.receipt_log().submit(early.clone()).await {
                    Ok(p) => pending.push(p),
                    Err(_) => receipts.extend(early.receipts),
                }
            } else {
                receipts.push(receipt);
            }
        }
        let delivery = Delivery {
            receipts,
            service: matches!(class, Class::Service(_))
                .then(|| (sender.actor.clone(), delivered as i64)),
        };
        let mut committed = self.gateway.receipt_log().record(delivery.clone()).await;
        for p in pending {
            committed = committed.and(p.committed().await);
        }
        if let Err(e) = committed {
            // Copies may already be upstream: a 4xx now would make the tool
            // send them again. The evidence goes to the log instead.
            tracing::error!(
                error = %e,
                message_id = %message_id,
                delivery = ?delivery,
                "receipts not recorded"
            );
        }
        if !rejected.is_empty() {
            self.upstream_refused(&message_id, subject.as_deref(), &rejected)
                .await;
        }
        if let Some(e) = unavailable {
            return Err(Fail::Upstream(e.0));
        }
        let mut text = format!("queued; {delivered} delivered, {withheld} withheld");
        if !rejected.is_empty() {
            text.push_str(&format!(", {} refused upstream", rejected.len()));
        }
        if sent_earlier > 0 {
            text.push_str(&format!(", {sent_earlier} sent by an earlier attempt"));
        }
        Ok(Reply::new(250, "2.0.0", text))
    }

    /// The brake on "the tool mailed everyone": service mail beyond the
    /// threshold within the window waits for a DPO. An approval lifts the
    /// brake on that sender for one window.
    async fn bulk_brake(
        &self,
        sender: &Sender,
        class: &Class,
        recipients: usize,
    ) -> Result<(), Fail> {
        let config = &self.gateway.config;
        let settings = veto_sender::service::ServiceSettings {
            types: Default::default(),
            bulk_threshold: config.bulk_threshold,
            bulk_window: config.bulk_window,
        };
        match veto_sender::service::bulk_brake(
            self.gateway.guard.store(),
            &settings,
            &sender.actor,
            sender.owner.as_deref(),
            &class.guard_class().label(),
            recipients,
        )
        .await?
        {
            None => Ok(()),
            Some((hold, count)) => Err(Fail::Held {
                id: hold.id,
                sender: sender.actor.clone(),
                count,
                threshold: config.bulk_threshold,
            }),
        }
    }

    /// Upstream refused copies for good: each address gets a hard-bounce
    /// event (the guard refuses it from now on), and the envelope sender a
    /// delivery status notification.
    async fn upstream_refused(
        &self,
        message_id: &str,
        subject: Option<&str>,
        rejected: &[(EmailAddress, String)],
    ) {
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
        if let Err(e) = self.gateway.guard.store().append(items, false).await {
            tracing::error!(error = %e, message_id, "hard bounces from upstream not recorded");
        }
        if self.tx.from.is_empty() {
            return; // a bounce of a bounce: none (RFC 5321 §4.5.5)
        }
        let failures: Vec<dsn::Failure> = rejected
            .iter()
            .map(|(to, reply)| dsn::Failure {
                recipient: to.as_str(),
                reply,
            })
            .collect();
        let config = &self.gateway.config;
        let report = dsn::failure_report(&dsn::Report {
            reporting_mta: &config.hostname,
            to: &self.tx.from,
            message_id,
            subject,
            failures: &failures,
            at: now,
        });
        let Ok(to) = EmailAddress::parse(&self.tx.from) else {
            return;
        };
        match self
            .gateway
            .guard
            .admit(
                &to,
                GuardClass::Requested("delivery-status"),
                Channel::Email,
            )
            .await
        {
            Ok(Ok(admitted)) => {
                if let Err(e) = self.gateway.relay.relay("", &admitted, &report).await {
                    tracing::warn!(error = %e, to = %self.tx.from, "delivery status notification not sent");
                }
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!(error = %e, "delivery status notification not sent"),
        }
    }

    /// `contact`'s copy. Signing one with RSA-2048 takes half a millisecond
    /// or more: with DKIM, the copy is made on the blocking pool, so
    /// that the other sessions on the gateway's thread go on meanwhile and
    /// signing uses every core.
    async fn personal_copy(
        &self,
        original: &Arc<Original>,
        class: &Class,
        keys: &Arc<TokenKeys>,
        contact: ContactId,
        campaign: &str,
    ) -> Result<PersonalCopy, Fail> {
        if self.gateway.copies.dkim.is_empty() {
            return copy_of(&self.gateway, original, class, keys, contact, campaign);
        }
        let (gateway, original, class, keys, campaign) = (
            Arc::clone(&self.gateway),
            Arc::clone(original),
            class.clone(),
            Arc::clone(keys),
            campaign.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            copy_of(&gateway, &original, &class, &keys, contact, &campaign)
        })
        .await
        .map_err(|e| Fail::Signing(e.to_string()))?
    }
}

fn copy_of(
    gateway: &Gateway,
    original: &Original,
    class: &Class,
    keys: &TokenKeys,
    contact: ContactId,
    campaign: &str,
) -> Result<PersonalCopy, Fail> {
    let class = match class {
        Class::Marketing(topic) => CopyClass::Marketing(topic.as_ref()),
        Class::Service(kind) => CopyClass::Service(kind),
    };
    let stream = Stream {
        campaign,
        name: "gateway",
    };
    Ok(gateway
        .copies
        .personal_copy(original, class, keys, contact, stream)?)
}

/// One header field: its name and where it is (CRLF included).
struct Field {
    name: String,
    span: Range<usize>,
}

/// The header block of a message with CRLF line endings.
struct Header {
    fields: Vec<Field>,
}

impl Header {
    fn scan(message: &[u8]) -> Header {
        let mut fields: Vec<Field> = Vec::new();
        let mut at = 0;
        while at < message.len() {
            let end = message[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(message.len(), |p| at + p + 1);
            let line = &message[at..end];
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            if matches!(line[0], b' ' | b'\t') {
                if let Some(last) = fields.last_mut() {
                    last.span.end = end;
                }
            } else {
                let name = line
                    .iter()
                    .position(|&b| b == b':')
                    .map(|colon| String::from_utf8_lossy(&line[..colon]).trim().to_owned())
                    .unwrap_or_default();
                fields.push(Field {
                    name,
                    span: at..end,
                });
            }
            at = end;
        }
        Header { fields }
    }

    /// The first non-empty value of the field `name`, unfolded.
    fn value(&self, message: &[u8], name: &str) -> Option<String> {
        self.fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| field_value(message, f))
            .find(|v| !v.is_empty())
    }
}

/// The unfolded value of a field, trimmed.
fn field_value(message: &[u8], field: &Field) -> String {
    let raw = String::from_utf8_lossy(&message[field.span.clone()]);
    let value = raw.split_once(':').map_or("", |(_, v)| v);
    value
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Removes the `Veto-*` fields (they are for veto, not for the recipient)
/// and adds a `Message-ID` if there is none, so that every copy and every
/// receipt share one. A made-up Message-ID comes from the content's hash, so
/// that a tool's retry of the same message is known as the same message.
/// Returns the message and its Message-ID.
fn prepare(message: &[u8], header: &Header, domain: &str, content_hash: &str) -> (Vec<u8>, String) {
    let existing = header.value(message, "message-id");
    let message_id = existing
        .clone()
        .unwrap_or_else(|| format!("<{}@{domain}>", &content_hash[..40]));
    let mut out = Vec::with_capacity(message.len() + 100);
    if existing.is_none() {
        out.extend_from_slice(format!("Message-ID: {message_id}\r\n").as_bytes());
    }
    let mut at = 0;
    for field in &header.fields {
        if field
            .name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("veto-"))
        {
            out.extend_from_slice(&message[at..field.span.start]);
            at = field.span.end;
        }
    }
    out.extend_from_slice(&message[at..]);
    (out, message_id)
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
