//! Per-recipient copies of a message (DESIGN.md, "Messages that carry
//! choice"): the list headers of RFC 2369, RFC 2919 and RFC 8058, Gmail's
//! Feedback-ID, and a visible footer in every text and HTML body part.
//!
//! Pure functions over bytes; no IO, no clock, no randomness. The same input
//! gives the same output, so a retried hand-off writes the same copy.
//!
//! [`Original::parse`] reads a message once; [`Original::personal_copy`]
//! then writes one copy per recipient. [`personal_copy`] does both.
//!
//! # What is changed, and what is kept
//!
//! * Top-level `List-Unsubscribe`, `List-Unsubscribe-Post`, `List-Id`,
//!   `Feedback-ID` and every `Veto-*` field are removed (case-insensitive):
//!   they are instructions to veto, never relayed. One of each list header is
//!   added at the end of the header block, and a `Message-ID` when the
//!   original has none (derived from the message and the personalisation,
//!   so it is stable across retries).
//! * With a footer, every body part gets it: each `text/plain` and
//!   `text/html` leaf that is not `Content-Disposition: attachment`, carries
//!   no file name (`filename=` or `name=`, except on a single-part message)
//!   and is not inside an attached `message/rfc822`. Only those parts are
//!   rewritten; every other byte (other header fields in order, attachments,
//!   preambles, boundaries) is copied as it was.
//! * A rewritten part keeps its transfer encoding when it can: base64 stays
//!   base64 and quoted-printable stays quoted-printable; `7bit`, `8bit`,
//!   `binary` or none stay as they are when the new text still fits that
//!   encoding and become quoted-printable otherwise (say, non-ASCII footer
//!   text in a `7bit` part).
//! * Charsets: the footer is written into the part's own charset when that
//!   is exact, else the part is converted to UTF-8 and its charset parameter
//!   changed. HTML footers are pure ASCII (numeric character references)
//!   unless the part is UTF-8, so they fit any ASCII-compatible charset
//!   unchanged. A text footer that is ASCII is appended to any
//!   ASCII-compatible charset unchanged. A non-ASCII text footer in a
//!   non-UTF-8 part converts the part to UTF-8; a `us-ascii` part is only
//!   relabelled. UTF-16, UTF-32 and UTF-7 parts are always converted. An
//!   unknown charset is assumed ASCII-compatible for an ASCII footer and
//!   refused for a non-ASCII text footer.
//! * The text footer follows a `-- ` line at the end of the text. The HTML
//!   footer, a small `<div>`, goes before the last `</body>` (else before
//!   the last `</html>`, else at the end).
//! * Rewritten text is in canonical form: CRLF line breaks.
//! * Input with bare LF line endings is first normalised to CRLF (the SMTP
//!   wire form); a bare CR is refused. Every line of the output is at most
//!   998 octets: an unencoded part with longer lines is re-encoded as
//!   quoted-printable even without a footer (its decoded bytes unchanged),
//!   any other overlong line is an error.
//!
//! # Refused input
//!
//! Larger than [`MAX_MESSAGE_SIZE`]; no header fields; no empty line between
//! header and body; a header line without a colon, starting the block with a
//! continuation, holding only white space or longer than 998 octets; a bare
//! CR. With a footer also: no body part to carry it, a signed or encrypted
//! message (the footer would break the signature), a body part whose
//! encoding is unknown or broken.

mod encoding;
mod footer;
mod header;
mod validate;

use std::ops::Range;

use mail_parser::decoders::charsets::{DecoderFnc, map::charset_decoder};
use mail_parser::{ContentType, MessageParser, MessagePart, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

pub use encoding::MAX_LINE_OCTETS;
use header::{Field, MimeEdits};

/// Largest message accepted, in bytes (32 MiB): above what mailbox
/// providers accept (Gmail 25 MB), so real mail is never refused for size.
pub const MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;

/// What makes a copy personal.
#[derive(Clone, Copy, Debug)]
pub struct Personalisation<'a> {
    /// The one-click URI, `https://HOST/u/TOKEN` (RFC 8058 §3.1 needs https;
    /// plain http is accepted only for loopback hosts, for demos).
    pub unsubscribe_url: &'a str,
    /// `unsubscribe+TOKEN@DOMAIN` (a leading `mailto:` is accepted); empty
    /// for none.
    pub unsubscribe_mailto: &'a str,
    pub preferences_url: &'a str,
    /// `news.example.org` → `List-Id: <news.example.org>`, or with the topic
    /// name as phrase: `Product news <news.example.org>` (RFC 2919).
    pub list_id: &'a str,
    /// `campaign:topic:stream:senderid` (Gmail's Feedback-ID; one header).
    pub feedback_id: &'a str,
    /// The domain of a `Message-ID` added when the original has none.
    pub message_id_domain: &'a str,
    /// `None` for service messages. With no footer, an empty
    /// `unsubscribe_url` leaves out the list headers too.
    pub footer: Option<Footer<'a>>,
}

/// The visible footer's words; veto adds the links.
#[derive(Clone, Copy, Debug)]
pub struct Footer<'a> {
    /// "You get this because you signed up for Product news."
    pub why: &'a str,
    pub unsubscribe_text: &'a str,
    pub preferences_text: &'a str,
    /// May span several lines; they are joined with commas.
    pub postal_address: &'a str,
    pub organisation: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("message is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a parsable message")]
    NotAMessage,
    #[error("message has no header fields (it starts with an empty line)")]
    NoHeaders,
    #[error("message has no empty line between its header and its body")]
    NoHeaderBodySeparator,
    #[error("line {line}: {reason}")]
    MalformedHeader { line: usize, reason: &'static str },
    #[error("line {line}: bare CR (a CR not followed by LF)")]
    BareCarriageReturn { line: usize },
    #[error("MIME part {part}: {reason}")]
    Part { part: String, reason: String },
    #[error("no text/plain or text/html body part to carry the footer")]
    NoBodyForFooter,
    #[error("a footer would break the message's {0}")]
    SignedOrEncrypted(String),
    #[error("line {line} of the rewritten message would be longer than 998 octets")]
    LineTooLong { line: usize },
    #[error("invalid {field}: {reason}")]
    InvalidPersonalisation { field: &'static str, reason: String },
}

/// Reads `original` and writes the copy for one recipient.
pub fn personal_copy(original: &[u8], p: &Personalisation<'_>) -> Result<Vec<u8>, RewriteError> {
    Original::parse(original)?.personal_copy(p)
}

/// A message read once, ready for any number of personal copies.
pub struct Original {
    /// The message with CRLF line endings.
    raw: Vec<u8>,
    header: Vec<Field>,
    body_start: usize,
    leaves: Vec<Leaf>,
    /// Set when the message is signed or encrypted (multipart/signed,
    /// multipart/encrypted, application/pkcs7-mime).
    protected: Option<String>,
    has_message_id: bool,
    has_mime_version: bool,
}

impl std::fmt::Debug for Original {
    // Not the message itself: it is personal data and may be large.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Original")
            .field("bytes", &self.raw.len())
            .field(
                "body_parts",
                &self.leaves.iter().filter(|l| l.kind.is_some()).count(),
            )
            .field("protected", &self.protected)
            .field("has_message_id", &self.has_message_id)
            .finish_non_exhaustive()
    }
}

/// A leaf part that a copy may rewrite: a body part, or one whose lines
/// are too long to relay as they are.
#[derive(Debug)]
struct Leaf {
    /// IMAP-style section number ("1", "2.1"), for errors.
    path: String,
    /// The part's own header fields; `None` for the root part of a
    /// single-part message, whose fields are the message's.
    header: Option<Vec<Field>>,
    /// From the part's first header byte (or its body, for the root part) to
    /// the end of its body.
    span: Range<usize>,
    /// `Some` for a body part that carries the footer.
    kind: Option<BodyKind>,
    content_type: Option<ContentType<'static>>,
    charset: Charset,
    encoding: TransferEncoding,
    /// The body with its transfer encoding undone.
    content: Result<Vec<u8>, String>,
    /// The body re-encoded with lines of at most 998 octets, when the
    /// original's are longer.
    reencoded: Option<Result<(Vec<u8>, TransferEncoding), String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    Text,
    Html,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TransferEncoding {
    /// No Content-Transfer-Encoding field (7bit).
    Absent,
    SevenBit,
    EightBit,
    Binary,
    QuotedPrintable,
    Base64,
    Unknown(String),
}

impl TransferEncoding {
    fn parse(value: Option<&str>) -> Self {
        let Some(value) = value else {
            return TransferEncoding::Absent;
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "7bit" => TransferEncoding::SevenBit,
            "8bit" => TransferEncoding::EightBit,
            "binary" => TransferEncoding::Binary,
            "quoted-printable" => TransferEncoding::QuotedPrintable,
            "base64" => TransferEncoding::Base64,
            other => TransferEncoding::Unknown(other.to_string()),
        }
    }

    fn decode(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            TransferEncoding::QuotedPrintable => Ok(encoding::quoted_printable_decode(body)),
            TransferEncoding::Base64 => mail_parser::decoders::base64::base64_decode(body)
                .ok_or_else(|| "body is not valid base64".to_string()),
            TransferEncoding::Unknown(name) => {
                Err(format!("unknown Content-Transfer-Encoding {name:?}"))
            }
            _ => Ok(body.to_vec()),
        }
    }

    /// The transfer encoding for new `content` of a part that had `self`.
    fn for_content(&self, content: &[u8]) -> TransferEncoding {
        match self {
            TransferEncoding::Base64 => TransferEncoding::Base64,
            TransferEncoding::QuotedPrintable => TransferEncoding::QuotedPrintable,
            identity if encoding::is_7bit_safe(content) => identity.clone(),
            TransferEncoding::EightBit | TransferEncoding::Binary
                if encoding::is_8bit_safe(content) =>
            {
                self.clone()
            }
            _ => TransferEncoding::QuotedPrintable,
        }
    }

    fn encode(&self, content: Vec<u8>) -> Vec<u8> {
        match self {
            TransferEncoding::Base64 => encoding::base64_encode(&content),
            TransferEncoding::QuotedPrintable => encoding::quoted_printable_encode(&content),
            _ => content,
        }
    }

    fn field_value(&self) -> &'static str {
        match self {
            TransferEncoding::Base64 => "base64",
            TransferEncoding::QuotedPrintable => "quoted-printable",
            TransferEncoding::EightBit => "8bit",
            TransferEncoding::Binary => "binary",
            _ => "7bit",
        }
    }
}

/// A text part's charset, as far as writing a footer into it goes.
#[derive(Clone, Copy)]
enum Charset {
    Utf8,
    /// us-ascii, or no charset parameter (RFC 2046 §4.1.2).
    Ascii,
    /// Known and ASCII-compatible: ASCII bytes mean ASCII characters.
    AsciiCompatible(DecoderFnc),
    /// UTF-16, UTF-32, UTF-7: ASCII bytes cannot be appended as they are.
    AsciiIncompatible(Option<DecoderFnc>),
    Unknown,
}

impl std::fmt::Debug for Charset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Charset::Utf8 => "Utf8",
            Charset::Ascii => "Ascii",
            Charset::AsciiCompatible(_) => "AsciiCompatible",
            Charset::AsciiIncompatible(_) => "AsciiIncompatible",
            Charset::Unknown => "Unknown",
        })
    }
}

impl Charset {
    fn classify(name: Option<&str>) -> Charset {
        let Some(name) = name.map(|n| n.trim().to_ascii_lowercase()) else {
            return Charset::Ascii;
        };
        match name.as_str() {
            "" | "us-ascii" | "ascii" | "ansi_x3.4-1968" => Charset::Ascii,
            "utf-8" | "utf8" => Charset::Utf8,
            n if [
                "utf-16",
                "utf16",
                "utf-32",
                "utf32",
                "utf-7",
                "utf7",
                "ucs",
                "unicode",
                "iso-10646",
            ]
            .iter()
            .any(|prefix| n.starts_with(prefix)) =>
            {
                Charset::AsciiIncompatible(charset_decoder(n.as_bytes()))
            }
            n => charset_decoder(n.as_bytes()).map_or(Charset::Unknown, Charset::AsciiCompatible),
        }
    }
}

impl Original {
    /// Reads a message: normalises line endings, checks the header block
    /// and finds the parts a copy may rewrite.
    pub fn parse(original: &[u8]) -> Result<Original, RewriteError> {
        if original.len() > MAX_MESSAGE_SIZE {
            return Err(RewriteError::TooLarge {
                size: original.len(),
                limit: MAX_MESSAGE_SIZE,
            });
        }
        let raw = encoding::normalise_line_endings(original).into_owned();
        let (header, body_start) = header::split_header_block(&raw, 0)?;
        if let Some(line) = encoding::first_bare_line_break(&raw) {
            return Err(RewriteError::BareCarriageReturn { line });
        }
        let message = parse_mime(&raw).ok_or(RewriteError::NotAMessage)?;
        match message.parts.first() {
            Some(root) if root.offset_body as usize == body_start => {}
            _ => return Err(RewriteError::NotAMessage),
        }

        let paths = section_paths(&message.parts);
        let mut leaves = Vec::new();
        let mut protected = None;
        for (index, part) in message.parts.iter().enumerate() {
            let path = paths.get(index).cloned().unwrap_or_else(|| "?".into());
            if let Some(kind) = protection(part) {
                protected.get_or_insert(kind);
            }
            if let Some(leaf) = Leaf::read(&raw, index, part, path)? {
                leaves.push(leaf);
            }
        }
        leaves.sort_by_key(|leaf| leaf.span.start);
        let mut end = body_start;
        for leaf in &leaves {
            if leaf.span.start < end || leaf.span.end > raw.len() {
                return Err(RewriteError::Part {
                    part: leaf.path.clone(),
                    reason: "overlaps another part".into(),
                });
            }
            end = leaf.span.end;
        }

        let has_message_id = header
            .iter()
            .any(|f| f.is("message-id") && !header::field_value(&raw, f).is_empty());
        let has_mime_version = header.iter().any(|f| f.is("mime-version"));
        Ok(Original {
            raw,
            header,
            body_start,
            leaves,
            protected,
            has_message_id,
            has_mime_version,
        })
    }

    /// Writes the copy for one recipient.
    pub fn personal_copy(&self, p: &Personalisation<'_>) -> Result<Vec<u8>, RewriteError> {
        // A service message (no footer) may go without list headers: there
        // is no list to leave, and a bill must not offer to unsubscribe.
        let list = if p.footer.is_none() && p.unsubscribe_url.is_empty() {
            None
        } else {
            Some(validate::list_headers(p)?)
        };
        let feedback_id = validate::feedback_id(p.feedback_id)?;
        validate::message_id_domain(p.message_id_domain)?;
        if let Some(footer) = &p.footer {
            validate::footer(footer)?;
            if let Some(kind) = &self.protected {
                return Err(RewriteError::SignedOrEncrypted(kind.clone()));
            }
            if !self.leaves.iter().any(|leaf| leaf.kind.is_some()) {
                return Err(RewriteError::NoBodyForFooter);
            }
        }

        // Each rewritten leaf: its span, new header fields (None for the
        // root, whose edits go into the message header), new body.
        let mut root_edits = MimeEdits::default();
        let mut replacements: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
        for leaf in &self.leaves {
            let rewritten = match (&p.footer, leaf.kind) {
                (Some(footer), Some(kind)) => Some(leaf.with_footer(kind, footer, p)?),
                _ => match &leaf.reencoded {
                    Some(Ok((body, encoding))) => {
                        let edits = MimeEdits {
                            transfer_encoding: (encoding != &leaf.encoding)
                                .then(|| encoding.field_value()),
                            content_type: None,
                        };
                        Some((edits, body.clone()))
                    }
                    Some(Err(reason)) => return Err(leaf.error(reason)),
                    None => None,
                },
            };
            let Some((edits, body)) = rewritten else {
                continue;
            };
            match &leaf.header {
                None => {
                    root_edits = edits;
                    replacements.push((leaf.span.clone(), body));
                }
                Some(fields) => {
                    let mut bytes = Vec::with_capacity(body.len() + 256);
                    header::write_fields(&self.raw, fields, |_| false, &edits, &mut bytes);
                    bytes.extend_from_slice(b"\r\n");
                    bytes.extend_from_slice(&body);
                    // A boundary delimiter starts on a line of its own.
                    if leaf.span.end < self.raw.len()
                        && !self.raw[leaf.span.end..].starts_with(b"\r\n")
                        && !bytes.ends_with(b"\r\n")
                    {
                        bytes.extend_from_slice(b"\r\n");
                    }
                    replacements.push((leaf.span.clone(), bytes));
                }
            }
        }

        let mut out = Vec::with_capacity(self.raw.len() + 2048);
        let add_message_id = !self.has_message_id;
        header::write_fields(
            &self.raw,
            &self.header,
            |name| {
                is_veto_instruction(name)
                    || (add_message_id && name.eq_ignore_ascii_case("message-id"))
            },
            &root_edits,
            &mut out,
        );
        if !root_edits.is_empty() && !self.has_mime_version {
            header::write_field(&mut out, "MIME-Version", "1.0");
        }
        if let Some(list) = &list {
            header::write_field(&mut out, "List-Unsubscribe", &list.list_unsubscribe);
            // RFC 8058 §3.1: exactly this value.
            header::write_field(
                &mut out,
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click",
            );
            header::write_field(&mut out, "List-Id", &list.list_id);
        }
        header::write_field(&mut out, "Feedback-ID", &feedback_id);
        if add_message_id {
            let id = self.message_id(p);
            header::write_field(&mut out, "Message-ID", &id);
        }
        out.extend_from_slice(b"\r\n");

        let mut pos = self.body_start;
        for (span, bytes) in replacements {
            out.extend_from_slice(&self.raw[pos..span.start]);
            out.extend_from_slice(&bytes);
            pos = span.end;
        }
        out.extend_from_slice(&self.raw[pos..]);

        if let Some(line) = encoding::first_long_line(&out) {
            return Err(RewriteError::LineTooLong { line });
        }
        Ok(out)
    }

    /// `<hash@domain>`: a hash of the message and of everything that makes
    /// the copy personal, so each recipient's copy has its own id and a
    /// retried copy has the same one.
    fn message_id(&self, p: &Personalisation<'_>) -> String {
        let mut hasher = Sha256::new();
        for part in [
            &self.raw[..],
            p.unsubscribe_url.as_bytes(),
            p.unsubscribe_mailto.as_bytes(),
            p.list_id.as_bytes(),
            p.feedback_id.as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let local = data_encoding::BASE32_NOPAD
            .encode(&digest[..20])
            .to_ascii_lowercase();
        format!("<{local}@{}>", p.message_id_domain.to_ascii_lowercase())
    }
}

/// mail-parser's reading of the MIME structure.
///
/// mail-parser 0.11.9 never panics in release builds, but on some malformed
/// nestings (a `message/rfc822` part that runs into its parent's boundary)
/// it reaches `debug_assert!(false, ..)` (parsers/message.rs:485), which
/// panics in debug builds. Such input counts as unparsable there, so that a
/// debug build of the gateway refuses it instead of losing the session.
fn parse_mime(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::new().parse(raw))
        .ok()
        .flatten()
}

/// Header fields that are instructions to veto, never relayed, or that
/// veto writes itself.
fn is_veto_instruction(name: &str) -> bool {
    matches!(
        name,
        "list-unsubscribe" | "list-unsubscribe-post" | "list-id" | "feedback-id"
    ) || name.starts_with("veto-")
}

/// What a footer would break, if this part is signed or encrypted.
fn protection(part: &MessagePart<'_>) -> Option<String> {
    let ct = part.content_type()?;
    let full = format!(
        "{}/{}",
        ct.ctype().to_ascii_lowercase(),
        ct.subtype().unwrap_or("").to_ascii_lowercase()
    );
    matches!(
        full.as_str(),
        "multipart/signed"
            | "multipart/encrypted"
            | "application/pkcs7-mime"
            | "application/x-pkcs7-mime"
    )
    .then_some(full)
}

/// IMAP-style section numbers for each part: the root's children are 1, 2,
/// …, theirs 2.1, 2.2, …; a single-part message's body is 1.
fn section_paths(parts: &[MessagePart<'_>]) -> Vec<String> {
    let mut paths = vec![String::new(); parts.len()];
    if let Some(first) = paths.first_mut() {
        *first = "1".into();
    }
    let mut stack = vec![(0usize, String::new())];
    let mut seen = vec![false; parts.len()];
    while let Some((index, path)) = stack.pop() {
        if std::mem::replace(&mut seen[index], true) {
            continue;
        }
        if let PartType::Multipart(children) = &parts[index].body {
            for (n, &child) in children.iter().enumerate() {
                let child = child as usize;
                if child < parts.len() && !seen[child] {
                    let child_path = if path.is_empty() {
                        format!("{}", n + 1)
                    } else {
                        format!("{path}.{}", n + 1)
                    };
                    paths[child] = child_path.clone();
                    stack.push((child, child_path));
                }
            }
        }
    }
    paths
}

impl Leaf {
    /// The leaf at `index`, when a copy may rewrite it.
    fn read(
        raw: &[u8],
        index: usize,
        part: &MessagePart<'_>,
        path: String,
    ) -> Result<Option<Leaf>, RewriteError> {
        if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
            return Ok(None);
        }
        let (header_start, body_start, end) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        let Some(body) = raw.get(body_start..end) else {
            return Ok(None);
        };
        let kind = body_kind(part, index == 0);
        let long_lines = encoding::first_long_line(body).is_some();
        if kind.is_none() && !long_lines {
            return Ok(None);
        }

        let part_error = |reason: String| RewriteError::Part {
            part: path.clone(),
            reason,
        };
        let (header, span) = if index == 0 {
            (None, body_start..end)
        } else {
            let (fields, header_end) = header::split_header_block(raw, header_start)
                .map_err(|e| part_error(e.to_string()))?;
            if header_end != body_start {
                return Err(part_error("its header block is ambiguous".into()));
            }
            (Some(fields), header_start..end)
        };
        let content_type = part.content_type().map(owned_content_type);
        let charset =
            Charset::classify(content_type.as_ref().and_then(|ct| ct.attribute("charset")));
        let encoding = TransferEncoding::parse(part.content_transfer_encoding());
        let content = encoding.decode(body);
        let reencoded = long_lines.then(|| {
            content.clone().map(|content| {
                let target = if encoding == TransferEncoding::Base64 {
                    TransferEncoding::Base64
                } else {
                    TransferEncoding::QuotedPrintable
                };
                (target.encode(content), target)
            })
        });
        Ok(Some(Leaf {
            path,
            header,
            span,
            kind,
            content_type,
            charset,
            encoding,
            content,
            reencoded,
        }))
    }

    fn error(&self, reason: &str) -> RewriteError {
        RewriteError::Part {
            part: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// The part's new MIME edits and body with the footer in.
    fn with_footer(
        &self,
        kind: BodyKind,
        footer: &Footer<'_>,
        p: &Personalisation<'_>,
    ) -> Result<(MimeEdits, Vec<u8>), RewriteError> {
        let content = self.content.as_ref().map_err(|reason| self.error(reason))?;
        let to_utf8 = |decoder: Option<DecoderFnc>| -> Result<Vec<u8>, RewriteError> {
            match decoder {
                Some(decode) => Ok(decode(content).into_bytes()),
                None => Err(self.error("its charset cannot be converted to UTF-8")),
            }
        };
        // (text in canonical form, its charset after the change if any)
        let (text, relabel, html_mode) = match (kind, self.charset) {
            (_, Charset::Utf8) => (content.clone(), false, footer::HtmlText::Utf8),
            (_, Charset::AsciiIncompatible(decoder)) => {
                (to_utf8(decoder)?, true, footer::HtmlText::Utf8)
            }
            (BodyKind::Html, _) => (content.clone(), false, footer::HtmlText::AsciiOnly),
            (BodyKind::Text, _) if footer_is_ascii(footer) => {
                (content.clone(), false, footer::HtmlText::AsciiOnly)
            }
            (BodyKind::Text, Charset::Ascii) => match String::from_utf8(content.clone()) {
                Ok(text) => (text.into_bytes(), true, footer::HtmlText::Utf8),
                Err(e) => (
                    String::from_utf8_lossy(e.as_bytes())
                        .into_owned()
                        .into_bytes(),
                    true,
                    footer::HtmlText::Utf8,
                ),
            },
            (BodyKind::Text, Charset::AsciiCompatible(decoder)) => {
                (to_utf8(Some(decoder))?, true, footer::HtmlText::Utf8)
            }
            (BodyKind::Text, Charset::Unknown) => {
                return Err(self.error(
                    "its charset is unknown, so a non-ASCII footer cannot be written into it",
                ));
            }
        };
        let mut text = encoding::text_to_crlf(&text);
        match kind {
            BodyKind::Text => {
                if !text.is_empty() && !text.ends_with(b"\r\n") {
                    text.extend_from_slice(b"\r\n");
                }
                text.extend_from_slice(footer::text(footer, p).as_bytes());
            }
            BodyKind::Html => {
                let block = footer::html(footer, p, html_mode);
                let at = rfind_ascii_ci(&text, b"</body")
                    .or_else(|| rfind_ascii_ci(&text, b"</html"))
                    .unwrap_or(text.len());
                text.splice(at..at, block.bytes());
            }
        }

        let encoding = self.encoding.for_content(&text);
        let edits = MimeEdits {
            content_type: relabel
                .then(|| header::content_type_with_charset(self.content_type.as_ref(), "utf-8")),
            transfer_encoding: (encoding != self.encoding).then(|| encoding.field_value()),
        };
        Ok((edits, encoding.encode(text)))
    }
}

fn footer_is_ascii(footer: &Footer<'_>) -> bool {
    [
        footer.why,
        footer.unsubscribe_text,
        footer.preferences_text,
        footer.postal_address,
        footer.organisation,
    ]
    .iter()
    .all(|s| s.is_ascii())
}

/// Whether `part` is a body part that carries the footer.
fn body_kind(part: &MessagePart<'_>, is_root: bool) -> Option<BodyKind> {
    let (ctype, subtype) = match part.content_type() {
        Some(ct) => (ct.ctype(), ct.subtype().unwrap_or("")),
        None => ("text", "plain"),
    };
    if !ctype.eq_ignore_ascii_case("text") {
        return None;
    }
    let kind = if subtype.eq_ignore_ascii_case("plain") {
        BodyKind::Text
    } else if subtype.eq_ignore_ascii_case("html") {
        BodyKind::Html
    } else {
        return None;
    };
    if let Some(disposition) = part.content_disposition() {
        if disposition.ctype().eq_ignore_ascii_case("attachment") {
            return None;
        }
        if !is_root && disposition.has_attribute("filename") {
            return None;
        }
    }
    if !is_root
        && part
            .content_type()
            .is_some_and(|ct| ct.has_attribute("name"))
    {
        return None;
    }
    Some(kind)
}

fn owned_content_type(ct: &ContentType<'_>) -> ContentType<'static> {
    ContentType {
        c_type: ct.c_type.to_string().into(),
        c_subtype: ct.c_subtype.as_ref().map(|s| s.to_string().into()),
        attributes: ct.attributes.as_ref().map(|attributes| {
            attributes
                .iter()
                .map(|a| mail_parser::Attribute {
                    name: a.name.to_string().into(),
                    value: a.value.to_string().into(),
                })
                .collect()
        }),
    }
}

/// The last position of `needle` (ASCII) in `haystack`, ignoring case.
fn rfind_ascii_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .rev()
        .find(|&i| haystack[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOOTER: Footer<'static> = Footer {
        why: "You get this because you signed up for Product news.",
        unsubscribe_text: "Unsubscribe",
        preferences_text: "Preferences",
        postal_address: "1 High Street, London",
        organisation: "Example",
    };

    fn p(footer: Option<Footer<'static>>) -> Personalisation<'static> {
        Personalisation {
            unsubscribe_url: "https://veto.example.org/u/abc",
            unsubscribe_mailto: "unsubscribe+abc@veto.example.org",
            preferences_url: "https://veto.example.org/p/abc",
            list_id: "news.example.org",
            feedback_id: "c:t:s:sender",
            message_id_domain: "veto.example.org",
            footer,
        }
    }

    fn copy(input: &str, footer: Footer<'static>) -> Result<String, RewriteError> {
        personal_copy(input.as_bytes(), &p(Some(footer)))
            .map(|out| String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn an_empty_body_gets_the_footer() {
        let out = copy("From: a@example.org\r\nSubject: x\r\n\r\n", FOOTER).unwrap();
        assert!(out.ends_with("\r\n\r\n\r\n-- \r\nYou get this because you signed up for Product news.\r\nUnsubscribe: https://veto.example.org/u/abc\r\nPreferences: https://veto.example.org/p/abc\r\nExample, 1 High Street, London\r\n"), "{out}");
    }

    #[test]
    fn html_footer_goes_before_the_last_body_end_tag_in_any_case() {
        let out = copy(
            "From: a@example.org\r\nContent-Type: text/html\r\n\r\n<HTML><BODY><p>x</p></BODY></HTML>\r\n",
            FOOTER,
        )
        .unwrap();
        let footer = out.find("<div class=\"veto-footer\"").unwrap();
        assert!(footer > out.find("<p>x</p>").unwrap());
        assert!(footer < out.find("</BODY>").unwrap());
    }

    #[test]
    fn utf16_html_is_converted_to_utf8() {
        let html: Vec<u8> = "<html><body>Grüß</body></html>"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let input = format!(
            "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-16le\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            data_encoding::BASE64.encode(&html)
        );
        let out = personal_copy(input.as_bytes(), &p(Some(FOOTER))).unwrap();
        let message = MessageParser::new().parse(&out).unwrap();
        assert_eq!(
            message.parts[0]
                .content_type()
                .unwrap()
                .attribute("charset"),
            Some("utf-8")
        );
        let body = message.body_html(0).unwrap();
        assert!(
            body.contains("Grüß<div class=\"veto-footer\"")
                || body.contains("Grüß\r\n<div class=\"veto-footer\""),
            "{body}"
        );
    }

    #[test]
    fn a_non_ascii_text_footer_cannot_go_into_an_unknown_charset() {
        let footer = Footer {
            why: "Parce que vous êtes inscrite.",
            ..FOOTER
        };
        let input =
            "From: a@example.org\r\nContent-Type: text/plain; charset=x-martian\r\n\r\nhi\r\n";
        assert!(matches!(
            copy(input, footer),
            Err(RewriteError::Part { ref part, .. }) if part == "1"
        ));
        // An ASCII footer is fine.
        assert!(copy(input, FOOTER).is_ok());
    }

    #[test]
    fn unknown_or_broken_transfer_encodings_are_errors_only_with_a_footer() {
        for cte in ["x-uuencode", "base64"] {
            let input = format!(
                "From: a@example.org\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: {cte}\r\n\r\n!!! not base64 !!!\r\n"
            );
            assert!(
                matches!(copy(&input, FOOTER), Err(RewriteError::Part { .. })),
                "{cte}"
            );
            assert!(personal_copy(input.as_bytes(), &p(None)).is_ok(), "{cte}");
        }
    }

    #[test]
    fn inline_text_files_are_not_body_parts() {
        let input = "From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: inline; filename=notes.txt\r\n\r\nnotes\r\n--b--\r\n";
        let out = copy(input, FOOTER).unwrap();
        assert_eq!(out.matches(FOOTER.why).count(), 1);
        assert!(out.contains("filename=notes.txt\r\n\r\nnotes\r\n--b--"));
    }

    #[test]
    fn a_boundary_in_the_middle_of_a_line_still_starts_a_new_line_after_a_rewrite() {
        let input = "From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody--b--\r\n";
        let out = copy(input, FOOTER).unwrap();
        assert!(out.contains("London\r\n--b--"), "{out}");
    }

    #[test]
    fn section_paths_name_nested_parts() {
        let input = b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\na\r\n--i\r\nContent-Type: text/html\r\n\r\nb\r\n--i--\r\n--o\r\nContent-Type: image/png\r\n\r\nx\r\n--o--\r\n";
        let message = MessageParser::new().parse(&input[..]).unwrap();
        assert_eq!(section_paths(&message.parts), ["1", "1", "1.1", "1.2", "2"]);
    }
}
