//! DATA: reading the message safely, classifying it, the authoritative
//! guard check, the personal copies, the hand-off and the receipts.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use data_encoding::HEXLOWER;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use veto_core::{Channel, EmailAddress, Timestamp, Topic};
use veto_mail::rewrite::{Footer, Original, Personalisation};
use veto_mail::{Claims, Purpose, TokenKey, TokenKeys, TokenScope};
use veto_store::{Admitted, GuardClass, NewReceipt};

use super::rcpt::{check_role, resolve_topic};
use super::{Line, Sender, Session, State};
use crate::{Fail, RelayOutcome, Reply};

/// One recipient's copy and its VERP return path.
struct PersonalCopy {
    bytes: Vec<u8>,
    return_path: String,
}

/// What reading the data gave, when the session goes on.
pub(super) enum Data {
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
    pub(super) async fn read_data(&mut self) -> std::io::Result<Option<Data>> {
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
                Line::Complete(line) => line,
            };
            if line == b".\r\n" {
                break;
            }
            match line.strip_suffix(b"\r\n") {
                Some(content) if !content.contains(&b'\r') => {}
                _ => smuggling = true,
            }
            // RFC 5321 §4.5.2: remove the first of leading dots.
            let line = line.strip_prefix(b".").unwrap_or(&line);
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
        let topic = self.classify(&sender, &message, &header).await?;
        let content_hash = HEXLOWER.encode(&Sha256::digest(&message));
        let domain = &self.gateway.config.links.mail_domain;
        let subject = header.value(&message, "subject");
        let (message, message_id) = prepare(&message, &header, domain, &content_hash);
        let original = Original::parse(&message)?;
        let keys = token_keys(self).await?;
        let class = GuardClass::Marketing(&topic).label();
        let receipt = |to: &str| NewReceipt {
            message_id: message_id.clone(),
            contact: None,
            recipient: to.to_owned(),
            subject: subject.clone(),
            content_hash: Some(content_hash.clone()),
            template_version: None,
            class: class.clone(),
            channel: Channel::Email.as_str().to_owned(),
            allowed: false,
            rule: String::new(),
            reason: None,
            event: None,
            checked_at: 0,
            outcome: None,
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

        // The authoritative check, immediately before the hand-off: a
        // withdrawal while DATA was open counts.
        let mut admitted = Vec::new();
        let mut withheld = 0;
        let recipients: Vec<EmailAddress> = self.tx.recipients.clone();
        for to in &recipients {
            match self
                .gateway
                .guard
                .admit(to, GuardClass::Marketing(&topic), Channel::Email)
                .await?
            {
                Ok(a) => admitted.push(a),
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
                }
            }
        }

        let campaign = &content_hash[..12];
        let copies = admitted
            .iter()
            .map(|a| self.personal_copy(&original, &topic, &keys, a, campaign))
            .collect::<Result<Vec<_>, Fail>>()?;

        let (mut delivered, mut rejected) = (0, 0);
        let mut unavailable = None;
        for (a, copy) in admitted.iter().zip(&copies) {
            let outcome = if unavailable.is_some() {
                "not relayed: upstream unavailable".to_owned()
            } else {
                match self
                    .gateway
                    .relay
                    .relay(&copy.return_path, a, &copy.bytes)
                    .await
                {
                    Ok(RelayOutcome::Accepted { reply }) => {
                        delivered += 1;
                        reply
                    }
                    Ok(RelayOutcome::Rejected { reply }) => {
                        rejected += 1;
                        format!("rejected upstream: {reply}")
                    }
                    Err(e) => {
                        let outcome = format!("not relayed: {e}");
                        unavailable = Some(e);
                        outcome
                    }
                }
            };
            receipts.push(NewReceipt {
                contact: a.contact().map(|c| c.0),
                allowed: true,
                rule: a.allowance().rule.id().to_owned(),
                event: a.allowance().event.map(|e| e.0),
                checked_at: a.checked_at().as_microsecond(),
                outcome: Some(outcome),
                ..receipt(a.to().as_str())
            });
        }

        if let Err(e) = self.gateway.guard.store().record_receipts(receipts).await {
            // Copies may already be upstream: a 4xx now would make the tool
            // send them again. The failure is logged for the operator.
            tracing::error!(error = %e, message_id = %message_id, "receipts not recorded");
        }
        if let Some(e) = unavailable {
            return Err(Fail::Upstream(e.0));
        }
        let mut text = format!("queued; {delivered} delivered, {withheld} withheld");
        if rejected > 0 {
            text.push_str(&format!(", {rejected} refused upstream"));
        }
        Ok(Reply::new(250, "2.0.0", text))
    }

    /// The class of the message: the RCPT-time default, which `Veto-Topic`
    /// or `Veto-Class` may set where there is none, or confirm — never change.
    async fn classify(
        &mut self,
        sender: &Sender,
        message: &[u8],
        header: &Header,
    ) -> Result<Topic, Fail> {
        let mut declared: Vec<String> = Vec::new();
        for field in &header.fields {
            let value = field_value(message, field);
            if field.name.eq_ignore_ascii_case("veto-topic") {
                let key = value.trim();
                if key.is_empty() {
                    return Err(Fail::MalformedClassHeader("Veto-Topic".into()));
                }
                declared.push(key.to_owned());
            } else if field.name.eq_ignore_ascii_case("veto-class") {
                declared.push(class_topic(&value)?);
            }
        }
        if let Some(other) = declared.iter().find(|k| **k != declared[0]) {
            return Err(Fail::Contradiction {
                header: format!("Veto-Topic: {other}"),
                known: format!("Veto-Topic: {}", declared[0]),
            });
        }
        let known = self.rcpt_topic_for_data(sender).await?;
        match (known, declared.first()) {
            (Some(topic), Some(key)) if topic.key.as_str() != key.as_str() => {
                Err(Fail::Contradiction {
                    header: format!("Veto-Topic: {key}"),
                    known: format!(
                        "topic {}, the default of {}",
                        topic.key.as_str(),
                        sender.actor
                    ),
                })
            }
            (Some(topic), _) => Ok(topic),
            (None, Some(key)) => {
                check_role(sender)?;
                resolve_topic(self, key).await
            }
            (None, None) => Err(Fail::NoClassification),
        }
    }

    async fn rcpt_topic_for_data(&mut self, sender: &Sender) -> Result<Option<Topic>, Fail> {
        if self.tx.topic.is_some() {
            return Ok(self.tx.topic.clone());
        }
        match &sender.default_topic {
            None => Ok(None),
            Some(key) => {
                check_role(sender)?;
                let topic = resolve_topic(self, key).await?;
                self.tx.topic = Some(topic.clone());
                Ok(Some(topic))
            }
        }
    }

    fn personal_copy(
        &self,
        original: &Original,
        topic: &Topic,
        keys: &TokenKeys,
        admitted: &Admitted,
        campaign: &str,
    ) -> Result<PersonalCopy, Fail> {
        let config = &self.gateway.config;
        let contact = admitted
            .contact()
            .and_then(|c| u64::try_from(c.0).ok())
            .ok_or_else(|| Fail::Token("an admitted recipient has no contact id".into()))?;
        let mint = |scope, purpose| {
            keys.mint(
                &Claims {
                    contact,
                    scope,
                    message: None,
                },
                purpose,
            )
            .map_err(|e| Fail::Token(e.to_string()))
        };
        let unsubscribe = mint(TokenScope::Topic(topic.id.0), Purpose::Unsubscribe)?;
        // VERP (RFC 3464 bounces come back to the return path): the token
        // names the contact, so a bounce is attributed without parsing.
        let bounce = mint(TokenScope::AllMarketing, Purpose::Bounce)?;
        let return_path = format!("bounces+{bounce}@{}", config.links.mail_domain);
        let preferences = mint(TokenScope::AllMarketing, Purpose::Preferences)?;
        let base = config.links.public_url.trim_end_matches('/');
        let unsubscribe_url = format!("{base}/u/{unsubscribe}");
        let preferences_url = format!("{base}/p/{preferences}");
        let mailto = format!("unsubscribe+{unsubscribe}@{}", config.links.mail_domain);
        let name = topic.name.replace('\\', "\\\\").replace('"', "\\\"");
        let list_id = format!(
            "\"{name}\" <{}.{}>",
            topic.key.as_str(),
            config.links.list_domain
        );
        let feedback_id = format!(
            "{campaign}:{}:gateway:{}",
            topic.key.as_str(),
            config.links.feedback_sender
        );
        let why = format!(
            "You get this because you agreed to receive {} from {}.",
            topic.name, config.footer.organisation
        );
        let p = Personalisation {
            unsubscribe_url: &unsubscribe_url,
            unsubscribe_mailto: &mailto,
            preferences_url: &preferences_url,
            list_id: &list_id,
            feedback_id: &feedback_id,
            message_id_domain: &config.links.mail_domain,
            footer: Some(Footer {
                why: &why,
                unsubscribe_text: &config.footer.unsubscribe_text,
                preferences_text: &config.footer.preferences_text,
                postal_address: &config.footer.postal_address,
                organisation: &config.footer.organisation,
            }),
        };
        let mut bytes = original.personal_copy(&p)?;
        for signer in &config.dkim {
            bytes = signer.sign(&bytes)?;
        }
        Ok(PersonalCopy { bytes, return_path })
    }
}

/// `Veto-Class: marketing; topic=<key>` names a topic; `service; ...` is
/// not accepted yet.
fn class_topic(value: &str) -> Result<String, Fail> {
    let mut parts = value.split(';');
    let kind = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    match kind.as_str() {
        "service" => Err(Fail::ServiceNotSupported),
        "marketing" => parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("topic"))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Fail::MalformedClassHeader("Veto-Class".into())),
        _ => Err(Fail::MalformedClassHeader("Veto-Class".into())),
    }
}

async fn token_keys<S>(session: &Session<S>) -> Result<TokenKeys, Fail> {
    let mut keys = session
        .gateway
        .guard
        .store()
        .token_keys()
        .await?
        .into_iter()
        .map(|(id, secret)| TokenKey::new(id, secret));
    let current = keys
        .next()
        .ok_or_else(|| Fail::Token("the store holds no token key".into()))?;
    TokenKeys::new(current, keys.collect()).map_err(|e| Fail::Token(e.to_string()))
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

static MESSAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the `Veto-*` fields (they are for veto, not for the recipient)
/// and adds a `Message-ID` if there is none, so that every copy and every
/// receipt share one. Returns the message and its Message-ID.
fn prepare(message: &[u8], header: &Header, domain: &str, content_hash: &str) -> (Vec<u8>, String) {
    let existing = header.value(message, "message-id");
    let message_id = existing.clone().unwrap_or_else(|| {
        format!(
            "<{}.{}.{}@{domain}>",
            Timestamp::now().as_microsecond(),
            MESSAGE_COUNTER.fetch_add(1, Ordering::Relaxed),
            &content_hash[..16]
        )
    });
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
