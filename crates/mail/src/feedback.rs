//! Bounce and complaint reports arriving at veto's `bounces+TOKEN@DOMAIN`
//! address (DESIGN.md, "feedback"), parsed into structured values.
//!
//! - Delivery status notifications: RFC 3464 `multipart/report;
//!   report-type=delivery-status` with a `message/delivery-status` part, or
//!   its internationalised form `message/global-delivery-status` (RFC 6533).
//! - Complaints: RFC 5965 ARF, `multipart/report; report-type=feedback-report`
//!   with a `message/feedback-report` part and the original message (or only
//!   its header) as `message/rfc822` or `text/rfc822-headers`.
//!
//! Everything here is a pure function over bytes: no IO, no clock, no store.
//! The MIME walk is deliberately small and our own (multipart splitting,
//! base64 and quoted-printable, header unfolding): a report needs no more,
//! and its behaviour on broken input is then ours to test. The report
//! fields are parsed leniently where real providers are sloppy:
//!
//! - field names in any case; folded (continued) lines; `type;address` with
//!   or without a space; `<…>` around addresses;
//! - a missing `Version` or `User-Agent` in an ARF report; the older
//!   `Received-Date` for `Arrival-Date`;
//! - a DSN without `Status`: the status is taken from `Diagnostic-Code`
//!   (`smtp; 550 5.1.1 user unknown` gives 5.1.1; `smtp; 550 no such user`
//!   gives 5.0.0); a DSN without `Action` gets it from the status class;
//! - a per-message block not separated from the first recipient, or
//!   recipients not separated from each other, by a blank line;
//! - a `multipart/report` wrapped in another multipart (gateways that add a
//!   disclaimer do this); a report part with a `Content-Transfer-Encoding`.
//!
//! What cannot be understood is an error that says what and where
//! ([`FeedbackError`]); malformed input never panics.

use std::borrow::Cow;

/// A parsed bounce or complaint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// RFC 3464 (or RFC 6533) delivery status notification.
    Delivery(DeliveryReport),
    /// RFC 5965 abuse feedback report.
    Complaint(ComplaintReport),
}

/// A delivery status notification (RFC 3464 section 2.2 and 2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// `Reporting-MTA`, without its type (`dns; mx.example.com` gives `mx.example.com`).
    pub reporting_mta: Option<String>,
    /// `Original-Envelope-Id` as written (veto's ENVID, when the MTA kept it).
    pub original_envelope_id: Option<String>,
    /// One entry per per-recipient block, in order.
    pub recipients: Vec<RecipientStatus>,
    /// The header of the returned message (third part: `message/rfc822`,
    /// `text/rfc822-headers`, `message/global` or `message/global-headers`),
    /// empty when the MTA returned none. See [`ComplaintReport::original_headers`].
    pub original_headers: Vec<(String, String)>,
}

impl DeliveryReport {
    /// First header of the returned message with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.original_headers, name)
    }
}

/// The per-recipient fields of a DSN (RFC 3464 section 2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `Final-Recipient`, address only: the address type (`rfc822;`) and any
    /// `<…>` removed. For the `utf-8` type inside a `message/delivery-status`
    /// part, `\x{HEX}` escapes (RFC 6533 utf-8-addr-xtext) are decoded.
    pub final_recipient: Option<String>,
    /// `Original-Recipient`, the same way.
    pub original_recipient: Option<String>,
    pub action: Action,
    /// `Status` as (class, subject, detail); from `Diagnostic-Code` when
    /// `Status` is missing or unreadable.
    pub status: Option<(u8, u16, u16)>,
    /// `Diagnostic-Code` without its type (`smtp; 550 …` gives `550 …`),
    /// folded lines joined with one space.
    pub diagnostic: Option<String>,
    /// `Remote-MTA` without its type.
    pub remote_mta: Option<String>,
}

impl RecipientStatus {
    /// Hard: the MTA gave up (`Action: failed`) with a permanent status
    /// (5.x.x). Soft: delivery was delayed, or failed with a transient status
    /// (4.x.x). `None` for everything else (delivered, relayed, expanded, or a
    /// failure without a status class veto can read).
    pub fn bounce(&self) -> Option<Bounce> {
        match (self.action, self.status) {
            (Action::Failed, Some((5, _, _))) => Some(Bounce::Hard),
            (Action::Failed, Some((4, _, _))) | (Action::Delayed, _) => Some(Bounce::Soft),
            _ => None,
        }
    }
}

/// RFC 3464 `Action` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    /// The RFC 3464 spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    fn parse(value: &str) -> Option<Action> {
        let word = first_word(value);
        [
            Action::Failed,
            Action::Delayed,
            Action::Delivered,
            Action::Relayed,
            Action::Expanded,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(word))
    }
}

/// How a failed or delayed delivery counts against an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bounce {
    /// Permanent: the address should not be mailed again.
    Hard,
    /// Temporary: the MTA retries, or a later message may get through.
    Soft,
}

/// An abuse feedback report (RFC 5965 section 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComplaintReport {
    pub feedback_type: FeedbackType,
    pub user_agent: Option<String>,
    /// `Version`; `None` when missing (several providers send `0.1` or nothing).
    pub version: Option<String>,
    /// Every `Original-Rcpt-To`, `<…>` removed. Often redacted by the
    /// provider, so not a reliable way to find the person: see [`Self::header`].
    pub original_rcpt_to: Vec<String>,
    /// `Original-Mail-From`, `<…>` removed; `None` for the null sender `<>`.
    pub original_mail_from: Option<String>,
    /// `Arrival-Date` (or the older `Received-Date`) as written.
    pub arrival_date: Option<String>,
    /// Every `Reported-Domain`.
    pub reported_domain: Vec<String>,
    pub source_ip: Option<String>,
    /// The header of the reported message, from the third part
    /// (`message/rfc822`, `text/rfc822-headers`, `message/global` or
    /// `message/global-headers`), in order, repeated names kept. Values are
    /// unfolded (each line break and the indentation after it become one
    /// space) and trimmed, but not RFC 2047-decoded. Empty when the provider
    /// sent no third part.
    pub original_headers: Vec<(String, String)>,
}

impl ComplaintReport {
    /// First header of the reported message with this name
    /// (case-insensitive), e.g. `List-Unsubscribe`, `Feedback-ID` or a veto
    /// trace header: these survive when the provider redacts the recipient.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.original_headers, name)
    }
}

/// RFC 5965 section 7.3 feedback types.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FeedbackType {
    Abuse,
    Fraud,
    Other,
    Virus,
    NotSpam,
    /// Any other value, lower-cased (e.g. `auth-failure` from RFC 6591, or
    /// `opt-out` from pre-RFC drafts).
    Unknown(String),
}

impl FeedbackType {
    /// The registered spelling (or the unknown value).
    pub fn as_str(&self) -> &str {
        match self {
            FeedbackType::Abuse => "abuse",
            FeedbackType::Fraud => "fraud",
            FeedbackType::Other => "other",
            FeedbackType::Virus => "virus",
            FeedbackType::NotSpam => "not-spam",
            FeedbackType::Unknown(value) => value,
        }
    }

    fn parse(value: &str) -> FeedbackType {
        let word = first_word(value).to_ascii_lowercase();
        match word.as_str() {
            "abuse" => FeedbackType::Abuse,
            "fraud" => FeedbackType::Fraud,
            "other" => FeedbackType::Other,
            "virus" => FeedbackType::Virus,
            "not-spam" => FeedbackType::NotSpam,
            _ => FeedbackType::Unknown(word),
        }
    }
}

const DELIVERY_STATUS: &str = "message/delivery-status";
const GLOBAL_DELIVERY_STATUS: &str = "message/global-delivery-status";
const FEEDBACK_REPORT: &str = "message/feedback-report";

/// Why a message is not a bounce or complaint veto can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// Nothing that looks like a message header at all.
    #[error("not an email message: no header section")]
    NotMessage,
    /// A message, but no `multipart/report` in it (a plain auto-reply, or a
    /// bounce in an MTA's own text format).
    #[error("not a multipart/report (Content-Type: {content_type})")]
    NotReport { content_type: String },
    /// A `multipart/report` without `report-type` and without a part that
    /// says which kind it is.
    #[error(
        "multipart/report without a report-type parameter and without a \
         {DELIVERY_STATUS} or {FEEDBACK_REPORT} part"
    )]
    MissingReportType,
    /// A report of another kind, e.g. `disposition-notification` (a read
    /// receipt, RFC 8098).
    #[error("unknown report-type {0:?} (expected delivery-status or feedback-report)")]
    UnknownReportType(String),
    /// The report part itself is missing (often: a truncated message).
    #[error("multipart/report; report-type={report_type} has no {expected} part")]
    MissingStatusPart {
        report_type: String,
        expected: &'static str,
    },
    /// A line in the report part that is neither a `Name: value` field nor
    /// the continuation of one.
    #[error("{part}, line {line}: not a \"Name: value\" field: {text:?}")]
    Syntax {
        part: &'static str,
        line: usize,
        text: String,
    },
    /// A field whose value cannot be understood.
    #[error("{part}, line {line}, {field}: {reason}")]
    Field {
        part: &'static str,
        line: usize,
        field: String,
        reason: String,
    },
    /// A required field is missing from the block of fields starting at `line`.
    #[error("{part}, fields starting at line {line}: required field {field} is missing")]
    MissingField {
        part: &'static str,
        line: usize,
        field: &'static str,
    },
    /// A delivery status part with no per-recipient block.
    #[error("{part} has no per-recipient fields (truncated report?)")]
    NoRecipients { part: &'static str },
}

/// Parses a bounce (DSN) or complaint (ARF) from a raw message, as received
/// (CRLF or LF line ends). Never panics: whatever cannot be read is a
/// [`FeedbackError`].
pub fn parse_feedback(raw: &[u8]) -> Result<Feedback, FeedbackError> {
    let root = Entity::parse(raw, Junk::EndsHeader);
    if root.headers.is_empty() {
        return Err(FeedbackError::NotMessage);
    }
    let report = find_report(&root, 0).ok_or_else(|| FeedbackError::NotReport {
        content_type: root.content_type.describe(),
    })?;
    let children: Vec<Entity<'_>> = report
        .content_type
        .param("boundary")
        .map(|boundary| split_multipart(report.body, boundary.as_bytes()))
        .unwrap_or_default()
        .into_iter()
        .map(|body| Entity::parse(body, Junk::EndsHeader))
        .collect();
    let find = |types: &[&str]| {
        children
            .iter()
            .find(|p| types.iter().any(|t| p.content_type.is(t)))
    };
    let status_types = [DELIVERY_STATUS, GLOBAL_DELIVERY_STATUS];
    let kind = match report.content_type.param("report-type") {
        Some(rt)
            if rt.eq_ignore_ascii_case("delivery-status")
                || rt.eq_ignore_ascii_case("global-delivery-status") =>
        {
            Kind::Delivery(rt.to_owned())
        }
        Some(rt) if rt.eq_ignore_ascii_case("feedback-report") => Kind::Complaint(rt.to_owned()),
        Some(rt) => return Err(FeedbackError::UnknownReportType(rt.to_owned())),
        None if find(&status_types).is_some() => Kind::Delivery("(none)".to_owned()),
        None if find(&[FEEDBACK_REPORT]).is_some() => Kind::Complaint("(none)".to_owned()),
        None => return Err(FeedbackError::MissingReportType),
    };
    let original_headers = find(&[
        "message/rfc822",
        "text/rfc822-headers",
        "message/global",
        "message/global-headers",
    ])
    .map(|p| Entity::parse(&p.decoded_body(), Junk::Skipped).into_headers())
    .unwrap_or_default();

    match kind {
        Kind::Delivery(report_type) => {
            let part = find(&status_types).ok_or(FeedbackError::MissingStatusPart {
                report_type,
                expected: DELIVERY_STATUS,
            })?;
            let name = if part.content_type.is(GLOBAL_DELIVERY_STATUS) {
                GLOBAL_DELIVERY_STATUS
            } else {
                DELIVERY_STATUS
            };
            let mut report = parse_delivery_status(&part.text(), name)?;
            report.original_headers = original_headers;
            Ok(Feedback::Delivery(report))
        }
        Kind::Complaint(report_type) => {
            let part = find(&[FEEDBACK_REPORT]).ok_or(FeedbackError::MissingStatusPart {
                report_type,
                expected: FEEDBACK_REPORT,
            })?;
            let mut report = parse_feedback_report(&part.text())?;
            report.original_headers = original_headers;
            Ok(Feedback::Complaint(report))
        }
    }
}

/// The token in a VERP address: `bounces+TOKEN@domain` gives `TOKEN`.
///
/// The local part must be `prefix` (ASCII case-insensitive) followed by `+`;
/// the token is everything after that first `+` up to the next `@`, as
/// written (not case-folded). Surrounding whitespace and `<…>` are ignored.
/// `None` without a `+`, with another prefix, without a domain, or with an
/// empty token.
pub fn verp_token<'a>(address: &'a str, prefix: &str) -> Option<&'a str> {
    let address = address.trim();
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address)
        .trim();
    let (head, rest) = address.split_once('+')?;
    let (token, domain) = rest.split_once('@')?;
    if head.contains('@') || domain.is_empty() || token.is_empty() {
        return None;
    }
    head.eq_ignore_ascii_case(prefix).then_some(token)
}

enum Kind {
    Delivery(String),
    Complaint(String),
}

/// How deep multiparts are searched for the report.
const MAX_DEPTH: usize = 8;

/// The `multipart/report` itself, or the first one inside other multiparts
/// (depth first). Attached messages (`message/*`) are not opened, so a
/// forwarded report does not count.
fn find_report<'a>(entity: &Entity<'a>, depth: usize) -> Option<Entity<'a>> {
    if entity.content_type.is("multipart/report") {
        return Some(entity.clone());
    }
    if depth >= MAX_DEPTH || entity.content_type.kind != "multipart" {
        return None;
    }
    let boundary = entity.content_type.param("boundary")?;
    split_multipart(entity.body, boundary.as_bytes())
        .into_iter()
        .find_map(|body| find_report(&Entity::parse(body, Junk::EndsHeader), depth + 1))
}

/// What a header parser does with a line that is neither a field nor a
/// continuation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Junk {
    /// The body starts there (a MIME entity without the blank line).
    EndsHeader,
    /// Skip it (headers-only parts from feedback loops are often mangled).
    Skipped,
}

/// A MIME entity: its header and its still-encoded body.
#[derive(Clone)]
struct Entity<'a> {
    headers: Vec<(String, String)>,
    content_type: MimeType,
    body: &'a [u8],
}

impl<'a> Entity<'a> {
    /// Splits header and body at the first blank line. Field names are
    /// kept as written; values are unfolded and trimmed. An mbox `From `
    /// first line is skipped; with [`Junk::Skipped`], so are blank lines
    /// before the first field.
    fn parse(bytes: &'a [u8], junk: Junk) -> Entity<'a> {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut body_start = bytes.len();
        // Whether the last line read was a field (so an indented line continues it).
        let mut in_field = false;
        let mut pos = 0;
        while pos < bytes.len() {
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| pos + i);
            let next = (end + 1).min(bytes.len());
            let raw_line = &bytes[pos..end];
            let raw_line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
            let line = String::from_utf8_lossy(raw_line);
            let line_start = pos;
            pos = next;
            if line.trim().is_empty() {
                if headers.is_empty() && junk == Junk::Skipped {
                    continue;
                }
                body_start = next;
                break;
            }
            if line.starts_with([' ', '\t']) {
                if in_field && let Some((_, value)) = headers.last_mut() {
                    push_continuation(value, &line);
                }
                continue;
            }
            if line_start == 0 && line.starts_with("From ") {
                continue;
            }
            in_field = false;
            let field = line.split_once(':').and_then(|(name, value)| {
                let name = name.trim_end();
                is_field_name(name).then(|| (name.to_owned(), value.trim().to_owned()))
            });
            match (field, junk) {
                (Some(field), _) => {
                    headers.push(field);
                    in_field = true;
                }
                (None, Junk::Skipped) => {}
                (None, Junk::EndsHeader) => {
                    body_start = line_start;
                    break;
                }
            }
        }
        let content_type = MimeType::parse(find_header(&headers, "Content-Type"));
        Entity {
            headers,
            content_type,
            body: &bytes[body_start..],
        }
    }

    fn into_headers(self) -> Vec<(String, String)> {
        self.headers
    }

    /// The body with its Content-Transfer-Encoding undone (leniently).
    fn decoded_body(&self) -> Cow<'a, [u8]> {
        let encoding = find_header(&self.headers, "Content-Transfer-Encoding").map(first_word);
        match encoding {
            Some(e) if e.eq_ignore_ascii_case("base64") => Cow::Owned(decode_base64(self.body)),
            Some(e) if e.eq_ignore_ascii_case("quoted-printable") => {
                Cow::Owned(decode_quoted_printable(self.body))
            }
            _ => Cow::Borrowed(self.body),
        }
    }

    /// The decoded body as text. Report parts are ASCII, or UTF-8 for RFC
    /// 6533; other bytes become U+FFFD.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.decoded_body()).into_owned()
    }
}

/// A Content-Type: lower-cased type and subtype, and parameters.
#[derive(Clone, Debug)]
struct MimeType {
    /// False when there is no Content-Type (RFC 2045: then text/plain).
    given: bool,
    kind: String,
    subtype: String,
    /// Names lower-cased, values unquoted.
    params: Vec<(String, String)>,
}

impl MimeType {
    fn parse(value: Option<&str>) -> MimeType {
        let Some(value) = value else {
            return MimeType {
                given: false,
                kind: "text".to_owned(),
                subtype: "plain".to_owned(),
                params: Vec::new(),
            };
        };
        let mut pieces = split_params(value).into_iter();
        let full = pieces.next().unwrap_or_default().to_ascii_lowercase();
        let (kind, subtype) = full.split_once('/').unwrap_or((full.as_str(), ""));
        let params = pieces
            .filter_map(|piece| {
                let (name, value) = piece.split_once('=')?;
                Some((name.trim().to_ascii_lowercase(), unquote(value.trim())))
            })
            .collect();
        MimeType {
            given: true,
            kind: kind.trim().to_owned(),
            subtype: subtype.trim().to_owned(),
            params,
        }
    }

    /// Whether this is `type/subtype` (ASCII case-insensitive).
    fn is(&self, full: &str) -> bool {
        full.split_once('/').is_some_and(|(kind, subtype)| {
            self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
        })
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn describe(&self) -> String {
        if self.given {
            format!("{}/{}", self.kind, self.subtype)
        } else {
            "none, i.e. text/plain".to_owned()
        }
    }
}

/// Splits a header value at `;` outside quoted strings.
fn split_params(value: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                pieces.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    pieces.push(current);
    pieces
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// The bodies of a multipart's parts (RFC 2046 section 5.1.1): between
/// delimiter lines `--boundary`, up to the close delimiter
/// `--boundary--`, or to the end of a truncated message. The line break
/// before a delimiter belongs to the delimiter. Preamble and epilogue are
/// dropped.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    // Start of the current part's body, once the first delimiter was seen.
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i);
        let next = (end + 1).min(body.len());
        let line = &body[pos..end];
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let close = rest.starts_with(b"--");
            let rest = if close { &rest[2..] } else { rest };
            if rest.iter().all(u8::is_ascii_whitespace) {
                if let Some(start) = start {
                    // Drop the line break that precedes the delimiter.
                    let mut part_end = pos.saturating_sub(1).max(start);
                    if part_end > start && body[part_end - 1] == b'\r' {
                        part_end -= 1;
                    }
                    parts.push(&body[start..part_end.max(start)]);
                }
                if close {
                    return parts;
                }
                start = Some(next);
            }
        }
        pos = next;
    }
    if let Some(start) = start {
        parts.push(&body[start.min(body.len())..]);
    }
    parts
}

/// Base64 without complaints: characters outside the alphabet are skipped,
/// decoding stops at padding.
fn decode_base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in input {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable (RFC 2045 section 6.7); malformed escapes stay as written.
fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'=' {
            let rest = &input[i + 1..];
            let blanks = rest
                .iter()
                .take_while(|c| matches!(c, b' ' | b'\t'))
                .count();
            // A soft line break, or a trailing `=`.
            match &rest[blanks..] {
                [b'\n', ..] => {
                    i += 1 + blanks + 1;
                    continue;
                }
                [b'\r', b'\n', ..] => {
                    i += 1 + blanks + 2;
                    continue;
                }
                [] => break,
                _ => {}
            }
            if let [h, l, ..] = rest
                && let (Some(h), Some(l)) = (hex(*h), hex(*l))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One `Name: value` field of a report part, unfolded.
#[derive(Debug)]
struct Field {
    line: usize,
    name: String,
    value: String,
}

impl Field {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

fn first<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields.iter().find(|f| f.is(name))
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Appends a continuation line to a field value: the line break and the
/// indentation become one space.
fn push_continuation(value: &mut String, line: &str) {
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    if !value.is_empty() {
        value.push(' ');
    }
    value.push_str(line);
}

/// Splits a report part (RFC 3464 section 2.1, RFC 5965 section 3.5) into
/// blocks of fields separated by blank lines. Line numbers count from 1 at
/// the first line of the part's (decoded) body.
fn parse_field_blocks(text: &str, part: &'static str) -> Result<Vec<Vec<Field>>, FeedbackError> {
    let mut blocks = Vec::new();
    let mut block: Vec<Field> = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line_no = index + 1;
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
            continue;
        }
        if line.starts_with([' ', '\t'])
            && let Some(last) = block.last_mut()
        {
            push_continuation(&mut last.value, line);
            continue;
        }
        let trimmed = line.trim_start();
        let field = trimmed.split_once(':').and_then(|(name, value)| {
            let name = name.trim_end();
            is_field_name(name).then(|| Field {
                line: line_no,
                name: name.to_owned(),
                value: value.trim().to_owned(),
            })
        });
        match field {
            Some(field) => block.push(field),
            None => {
                return Err(FeedbackError::Syntax {
                    part,
                    line: line_no,
                    text: excerpt(trimmed),
                });
            }
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    Ok(blocks)
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Splits `type; value` (address-type, mta-name-type, diagnostic-type).
/// Without a plausible type before the first `;`, the whole value is the value.
fn split_typed(value: &str) -> (Option<&str>, &str) {
    if let Some((kind, rest)) = value.split_once(';') {
        let kind = kind.trim();
        if !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return (Some(kind), rest.trim());
        }
    }
    (None, value.trim())
}

fn strip_angle(value: &str) -> &str {
    let value = value.trim();
    value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .map_or(value, str::trim)
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn first_word(value: &str) -> &str {
    value
        .trim()
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '(' | ','))
        .next()
        .unwrap_or("")
}

/// An address field (`Final-Recipient`, `Original-Recipient`): type removed,
/// `<…>` removed, utf-8-addr-xtext decoded.
fn address_value(value: &str, global: bool) -> Option<String> {
    let (kind, address) = split_typed(value);
    let address = strip_angle(address);
    if !global && kind.is_some_and(|k| k.eq_ignore_ascii_case("utf-8")) {
        return non_empty(&decode_utf8_xtext(address));
    }
    non_empty(address)
}

/// Decodes RFC 6533 `\x{HEX}` escapes; anything malformed stays as written.
fn decode_utf8_xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("\\x{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let decoded = after.split_once('}').and_then(|(hex, tail)| {
            let valid = (1..=6).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit());
            valid
                .then(|| u32::from_str_radix(hex, 16).ok().and_then(char::from_u32))
                .flatten()
                .map(|c| (c, tail))
        });
        match decoded {
            Some((c, tail)) => {
                out.push(c);
                rest = tail;
            }
            None => {
                out.push_str("\\x{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Finds a status code in a `Status` or `Diagnostic-Code` value: the first
/// enhanced status code x.y.z (RFC 3463: class 2, 4 or 5, subject and detail
/// of one to three digits) whose class agrees with a leading SMTP reply code
/// (RFC 2034), else the class of a leading reply code as x.0.0.
fn find_status(text: &str) -> Option<(u8, u16, u16)> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let reply_class = match bytes {
        [
            c @ (b'2' | b'4' | b'5'),
            b'0'..=b'9',
            b'0'..=b'9',
            rest @ ..,
        ] if rest
            .first()
            .is_none_or(|b| b.is_ascii_whitespace() || *b == b'-') =>
        {
            Some(c - b'0')
        }
        _ => None,
    };
    for start in 0..bytes.len() {
        let Some(code) = enhanced_code_at(bytes, start) else {
            continue;
        };
        if reply_class.is_none_or(|class| class == code.0) {
            return Some(code);
        }
    }
    reply_class.map(|class| (class, 0, 0))
}

fn enhanced_code_at(bytes: &[u8], start: usize) -> Option<(u8, u16, u16)> {
    let class = *bytes.get(start)?;
    if !matches!(class, b'2' | b'4' | b'5') {
        return None;
    }
    if start > 0 {
        let before = bytes[start - 1];
        if before.is_ascii_alphanumeric() || before == b'.' {
            return None;
        }
    }
    if bytes.get(start + 1) != Some(&b'.') {
        return None;
    }
    let (subject, after_subject) = digits(bytes, start + 2)?;
    if bytes.get(after_subject) != Some(&b'.') {
        return None;
    }
    let (detail, end) = digits(bytes, after_subject + 1)?;
    match bytes.get(end) {
        Some(b) if b.is_ascii_alphanumeric() => return None,
        // "5.1.1." ends a sentence; "5.1.1.2" is something else.
        Some(b'.') if bytes.get(end + 1).is_some_and(u8::is_ascii_digit) => return None,
        _ => {}
    }
    Some((class - b'0', subject, detail))
}

/// One to three ASCII digits at `start`, not followed by a fourth.
fn digits(bytes: &[u8], start: usize) -> Option<(u16, usize)> {
    let mut value: u16 = 0;
    let mut end = start;
    while let Some(b) = bytes.get(end).filter(|b| b.is_ascii_digit()) {
        if end - start == 3 {
            return None;
        }
        value = value * 10 + u16::from(b - b'0');
        end += 1;
    }
    (end > start).then_some((value, end))
}

/// Per-recipient field names (RFC 3464 section 2.3); they end the
/// per-message block when a DSN leaves out the blank line.
const RECIPIENT_FIELDS: [&str; 9] = [
    "Original-Recipient",
    "Final-Recipient",
    "Action",
    "Status",
    "Remote-MTA",
    "Diagnostic-Code",
    "Last-Attempt-Date",
    "Final-Log-ID",
    "Will-Retry-Until",
];

fn parse_delivery_status(text: &str, part: &'static str) -> Result<DeliveryReport, FeedbackError> {
    let global = part == GLOBAL_DELIVERY_STATUS;
    let mut blocks = parse_field_blocks(text, part)?.into_iter();
    let mut per_message = blocks.next().unwrap_or_default();
    let split = per_message
        .iter()
        .position(|f| RECIPIENT_FIELDS.iter().any(|n| f.is(n)))
        .unwrap_or(per_message.len());
    let head_recipients = per_message.split_off(split);

    let mut report = DeliveryReport {
        reporting_mta: first(&per_message, "Reporting-MTA")
            .and_then(|f| non_empty(split_typed(&f.value).1)),
        original_envelope_id: first(&per_message, "Original-Envelope-Id")
            .and_then(|f| non_empty(&f.value)),
        ..DeliveryReport::default()
    };
    for block in std::iter::once(head_recipients).chain(blocks) {
        for recipient in split_recipients(block) {
            if let Some(status) = parse_recipient(&recipient, part, global)? {
                report.recipients.push(status);
            }
        }
    }
    if report.recipients.is_empty() {
        return Err(FeedbackError::NoRecipients { part });
    }
    Ok(report)
}

/// Splits a block that holds several recipients because the DSN left out
/// the blank lines between them: a new recipient starts at a second
/// `Final-Recipient`, or at an `Original-Recipient` after another one or
/// after a `Final-Recipient` with its `Action` or `Status`.
fn split_recipients(block: Vec<Field>) -> Vec<Vec<Field>> {
    let mut recipients = Vec::new();
    let mut current: Vec<Field> = Vec::new();
    for field in block {
        let has = |name: &str| current.iter().any(|f| f.is(name));
        let starts_new = if field.is("Original-Recipient") {
            // Postfix writes Final-Recipient before Original-Recipient.
            has("Original-Recipient") || has("Final-Recipient") && (has("Action") || has("Status"))
        } else if field.is("Final-Recipient") {
            has("Final-Recipient")
        } else {
            false
        };
        if starts_new {
            recipients.push(std::mem::take(&mut current));
        }
        current.push(field);
    }
    if !current.is_empty() {
        recipients.push(current);
    }
    recipients
}

/// One per-recipient block; `None` for a block without any recipient field
/// (vendor extensions only).
fn parse_recipient(
    fields: &[Field],
    part: &'static str,
    global: bool,
) -> Result<Option<RecipientStatus>, FeedbackError> {
    let Some(block_line) = fields.first().map(|f| f.line) else {
        return Ok(None);
    };
    let final_recipient = first(fields, "Final-Recipient");
    let original_recipient = first(fields, "Original-Recipient");
    let action = first(fields, "Action");
    let status = first(fields, "Status");
    if final_recipient.is_none()
        && original_recipient.is_none()
        && action.is_none()
        && status.is_none()
    {
        return Ok(None);
    }
    let diagnostic =
        first(fields, "Diagnostic-Code").and_then(|f| non_empty(split_typed(&f.value).1));
    let from_diagnostic = || diagnostic.as_deref().and_then(find_status);
    let status = match status {
        Some(field) => match find_status(&field.value).or_else(from_diagnostic) {
            Some(code) => Some(code),
            None => {
                return Err(FeedbackError::Field {
                    part,
                    line: field.line,
                    field: field.name.clone(),
                    reason: format!("{:?} is not a status code x.y.z", excerpt(&field.value)),
                });
            }
        },
        None => from_diagnostic(),
    };
    let action = match action {
        Some(field) => Action::parse(&field.value).ok_or_else(|| FeedbackError::Field {
            part,
            line: field.line,
            field: field.name.clone(),
            reason: format!(
                "{:?} is not one of failed, delayed, delivered, relayed, expanded",
                excerpt(&field.value)
            ),
        })?,
        None => match status {
            Some((5, _, _)) => Action::Failed,
            Some((4, _, _)) => Action::Delayed,
            Some((2, _, _)) => Action::Delivered,
            _ => {
                return Err(FeedbackError::MissingField {
                    part,
                    line: block_line,
                    field: "Action",
                });
            }
        },
    };
    Ok(Some(RecipientStatus {
        final_recipient: final_recipient.and_then(|f| address_value(&f.value, global)),
        original_recipient: original_recipient.and_then(|f| address_value(&f.value, global)),
        action,
        status,
        diagnostic,
        remote_mta: first(fields, "Remote-MTA").and_then(|f| non_empty(split_typed(&f.value).1)),
    }))
}

fn parse_feedback_report(text: &str) -> Result<ComplaintReport, FeedbackError> {
    let part = FEEDBACK_REPORT;
    // One block per RFC 5965; blank lines inside are tolerated.
    let fields: Vec<Field> = parse_field_blocks(text, part)?
        .into_iter()
        .flatten()
        .collect();
    let feedback_type = first(&fields, "Feedback-Type").ok_or(FeedbackError::MissingField {
        part,
        line: fields.first().map_or(1, |f| f.line),
        field: "Feedback-Type",
    })?;
    if first_word(&feedback_type.value).is_empty() {
        return Err(FeedbackError::Field {
            part,
            line: feedback_type.line,
            field: feedback_type.name.clone(),
            reason: "empty value".to_owned(),
        });
    }
    let all = |name: &str, f: fn(&str) -> &str| -> Vec<String> {
        fields
            .iter()
            .filter(|field| field.is(name))
            .filter_map(|field| non_empty(f(&field.value)))
            .collect()
    };
    let one = |name: &str| first(&fields, name).and_then(|f| non_empty(&f.value));
    Ok(ComplaintReport {
        feedback_type: FeedbackType::parse(&feedback_type.value),
        user_agent: one("User-Agent"),
        version: one("Version"),
        original_rcpt_to: all("Original-Rcpt-To", strip_angle),
        original_mail_from: first(&fields, "Original-Mail-From")
            .and_then(|f| non_empty(strip_angle(&f.value))),
        arrival_date: one("Arrival-Date").or_else(|| one("Received-Date")),
        reported_domain: all("Reported-Domain", str::trim),
        source_ip: one("Source-IP"),
        original_headers: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_found_where_providers_put_them() {
        assert_eq!(find_status("5.1.1"), Some((5, 1, 1)));
        assert_eq!(find_status("5.0.0 (permanent failure)"), Some((5, 0, 0)));
        assert_eq!(find_status("550 5.1.1 user unknown"), Some((5, 1, 1)));
        assert_eq!(find_status("550-5.1.1 The email account"), Some((5, 1, 1)));
        assert_eq!(find_status("#5.2.2 mailbox full"), Some((5, 2, 2)));
        assert_eq!(find_status("failed with 4.4.7."), Some((4, 4, 7)));
        assert_eq!(find_status("550 no such user"), Some((5, 0, 0)));
        assert_eq!(find_status("421 try later"), Some((4, 0, 0)));
        // An IP address or a version number is not a status code.
        assert_eq!(find_status("host 192.0.2.1 said: go away"), None);
        assert_eq!(find_status("Exim 4.94.2.1"), None);
        assert_eq!(find_status("5.1.1234"), None);
        // The enhanced code must agree with the reply code.
        assert_eq!(find_status("550 4.2.2 then 5.2.2"), Some((5, 2, 2)));
        assert_eq!(find_status("soon"), None);
        assert_eq!(find_status(""), None);
    }

    #[test]
    fn typed_values_lose_their_type_only_when_it_looks_like_one() {
        assert_eq!(split_typed("rfc822;a@b"), (Some("rfc822"), "a@b"));
        assert_eq!(
            split_typed(" dns ;  mx.example "),
            (Some("dns"), "mx.example")
        );
        assert_eq!(split_typed("a@b"), (None, "a@b"));
        assert_eq!(
            split_typed("550 <a@b>; no"),
            (None, "550 <a@b>; no"),
            "a reply with a ';' is not a typed value"
        );
    }

    #[test]
    fn utf8_xtext_addresses_are_decoded() {
        assert_eq!(
            address_value("utf-8; \\x{7528}\\x{6237}@example.org", false).as_deref(),
            Some("用户@example.org")
        );
        assert_eq!(
            address_value("utf-8; \\x{7528}@example.org", true).as_deref(),
            Some("\\x{7528}@example.org"),
            "message/global-delivery-status carries raw UTF-8"
        );
        assert_eq!(decode_utf8_xtext("a\\x{zz}b\\x{"), "a\\x{zz}b\\x{");
        assert_eq!(decode_utf8_xtext("\\x{D800}"), "\\x{D800}");
    }

    #[test]
    fn multipart_bodies_split_on_delimiter_lines() {
        let body = b"preamble\r\n--b\r\none\r\n--b  \r\n\r\ntwo\r\n--bx\r\n--b--\r\nepilogue";
        assert_eq!(
            split_multipart(body, b"b"),
            [&b"one"[..], &b"\r\ntwo\r\n--bx"[..]]
        );
        // Truncated: the last part runs to the end.
        assert_eq!(
            split_multipart(b"--b\nx\n--b\ny", b"b"),
            [&b"x"[..], &b"y"[..]]
        );
        assert_eq!(split_multipart(b"--b\n--b--", b"b"), [&b""[..]]);
        assert!(split_multipart(b"no delimiter", b"b").is_empty());
    }

    #[test]
    fn content_types() {
        let ct = MimeType::parse(Some(
            "Multipart/Report; Report-Type=\"delivery-status\"; boundary=\"a;b \\\"c\\\"\"",
        ));
        assert!(ct.is("multipart/report"));
        assert_eq!(ct.param("report-type"), Some("delivery-status"));
        assert_eq!(ct.param("boundary"), Some("a;b \"c\""));
        assert_eq!(ct.describe(), "multipart/report");
        let none = MimeType::parse(None);
        assert!(none.is("text/plain"));
        assert_eq!(none.describe(), "none, i.e. text/plain");
        assert_eq!(
            MimeType::parse(Some("multipart/report; boundary=")).param("boundary"),
            None
        );
    }

    #[test]
    fn transfer_encodings_are_undone_leniently() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\r\n"), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8"), b"hello");
        assert_eq!(decode_base64(b"a!G@V#s"), b"hel");
        assert_eq!(
            decode_quoted_printable(b"a=3Db=\r\nc= \nd=ZZ="),
            b"a=bcd=ZZ"
        );
    }

    #[test]
    fn header_blocks_unfold_and_stop_at_the_body() {
        let headers = Entity::parse(
            b"From MAILER-DAEMON Mon Jun  3 10:00:00 2024\r\n\
              Subject: one\r\n\ttwo\r\n\
              broken line\r\n\
              List-Unsubscribe: <https://a/u/x>,\r\n <mailto:u@a>\r\n\
              \r\n\
              Body: not a header\r\n",
            Junk::Skipped,
        )
        .into_headers();
        assert_eq!(
            headers,
            vec![
                ("Subject".to_owned(), "one two".to_owned()),
                (
                    "List-Unsubscribe".to_owned(),
                    "<https://a/u/x>, <mailto:u@a>".to_owned()
                ),
            ]
        );
    }
}
