//! Header blocks: split into fields, edited, written back.

use std::ops::Range;

use mail_parser::ContentType;

use super::RewriteError;

/// One header field: its lowercased name and the bytes of the whole field
/// in the message, continuation lines and final CRLF included.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub span: Range<usize>,
}

impl Field {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Splits the header block that starts at `start` into fields and returns
/// them with the offset just past the empty line that ends the block.
///
/// Stricter than mail-parser on purpose: a line without a colon, a block
/// that starts with a continuation line, or a line of only white space is
/// read differently by different parsers, so veto refuses it rather than
/// guess which header a receiver would see.
pub fn split_header_block(raw: &[u8], start: usize) -> Result<(Vec<Field>, usize), RewriteError> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = start;
    loop {
        let Some(rel_end) = raw
            .get(pos..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        else {
            return Err(if fields.is_empty() && pos == raw.len() && start == 0 {
                RewriteError::NotAMessage
            } else {
                RewriteError::NoHeaderBodySeparator
            });
        };
        let line_end = pos + rel_end + 1;
        let line = &raw[pos..line_end];
        let content = line.strip_suffix(b"\r\n").unwrap_or(line);
        let line_no = || line_number(raw, pos);
        if content.is_empty() {
            if fields.is_empty() && start == 0 {
                return Err(RewriteError::NoHeaders);
            }
            return Ok((fields, line_end));
        }
        if content.len() > super::MAX_LINE_OCTETS {
            return Err(RewriteError::MalformedHeader {
                line: line_no(),
                reason: "header line is longer than 998 octets",
            });
        }
        if content.iter().all(|&b| b == b' ' || b == b'\t') {
            return Err(RewriteError::MalformedHeader {
                line: line_no(),
                reason: "header line holds only white space",
            });
        }
        if content[0] == b' ' || content[0] == b'\t' {
            match fields.last_mut() {
                Some(field) => field.span.end = line_end,
                None => {
                    return Err(RewriteError::MalformedHeader {
                        line: line_no(),
                        reason: "header block starts with a continuation line",
                    });
                }
            }
        } else {
            let Some(colon) = content.iter().position(|&b| b == b':') else {
                return Err(RewriteError::MalformedHeader {
                    line: line_no(),
                    reason: "header line has no colon",
                });
            };
            // RFC 5322 §3.6.8 ftext; obs-optional allows white space before the colon.
            let name = trim_end_wsp(&content[..colon]);
            if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
                return Err(RewriteError::MalformedHeader {
                    line: line_no(),
                    reason: "header field name is empty or has characters other than printable US-ASCII",
                });
            }
            fields.push(Field {
                name: String::from_utf8_lossy(name).to_ascii_lowercase(),
                span: pos..line_end,
            });
        }
        pos = line_end;
    }
}

/// The 1-based line of the message that `offset` falls on.
pub fn line_number(raw: &[u8], offset: usize) -> usize {
    raw[..offset.min(raw.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn trim_end_wsp(data: &[u8]) -> &[u8] {
    let end = data
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |p| p + 1);
    &data[..end]
}

/// The value of a field, unfolded and trimmed.
pub fn field_value(raw: &[u8], field: &Field) -> String {
    let bytes = &raw[field.span.clone()];
    let value = bytes
        .iter()
        .position(|&b| b == b':')
        .map_or(&[][..], |colon| &bytes[colon + 1..]);
    let unfolded: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    String::from_utf8_lossy(&unfolded).trim().to_string()
}

/// Changes to the MIME header fields of one part.
#[derive(Debug, Default)]
pub struct MimeEdits {
    /// Replaces every Content-Type field (or is added when there is none).
    pub content_type: Option<String>,
    /// Replaces every Content-Transfer-Encoding field (or is added).
    pub transfer_encoding: Option<&'static str>,
}

impl MimeEdits {
    pub fn is_empty(&self) -> bool {
        self.content_type.is_none() && self.transfer_encoding.is_none()
    }
}

/// Writes `fields`, leaving out those `drop` names, applying `edits` in
/// place of the first field each replaces and appending the rest at the end.
pub fn write_fields(
    raw: &[u8],
    fields: &[Field],
    drop: impl Fn(&str) -> bool,
    edits: &MimeEdits,
    out: &mut Vec<u8>,
) {
    let mut wrote_type = false;
    let mut wrote_encoding = false;
    for field in fields {
        if drop(&field.name) {
            continue;
        }
        match (&edits.content_type, edits.transfer_encoding) {
            (Some(value), _) if field.is("content-type") => {
                if !wrote_type {
                    write_field(out, "Content-Type", value);
                    wrote_type = true;
                }
            }
            (_, Some(value)) if field.is("content-transfer-encoding") => {
                if !wrote_encoding {
                    write_field(out, "Content-Transfer-Encoding", value);
                    wrote_encoding = true;
                }
            }
            _ => out.extend_from_slice(&raw[field.span.clone()]),
        }
    }
    if let (Some(value), false) = (&edits.content_type, wrote_type) {
        write_field(out, "Content-Type", value);
    }
    if let (Some(value), false) = (edits.transfer_encoding, wrote_encoding) {
        write_field(out, "Content-Transfer-Encoding", value);
    }
}

pub fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A Content-Type value for `content_type` with its charset set to
/// `charset`, its other parameters kept (comments are not). Parameters go on
/// lines of their own when the line would pass 78 characters.
pub fn content_type_with_charset(content_type: Option<&ContentType<'_>>, charset: &str) -> String {
    let (ctype, subtype) = match content_type {
        Some(ct) => (ct.ctype(), ct.subtype().unwrap_or("plain")),
        None => ("text", "plain"),
    };
    let mut value = format!("{ctype}/{subtype}");
    let mut line_len = "Content-Type: ".len() + value.len();
    let mut params = vec![("charset".to_string(), charset.to_string())];
    for attribute in content_type
        .and_then(|ct| ct.attributes())
        .unwrap_or_default()
    {
        let name = attribute.name.to_ascii_lowercase();
        if name != "charset" && !name.is_empty() && name.bytes().all(is_token_char) {
            params.push((name, attribute.value.to_string()));
        }
    }
    for (name, param_value) in params {
        let param = format_parameter(&name, &param_value);
        if line_len + param.len() + 2 > 78 {
            value.push_str(";\r\n\t");
            line_len = 8;
        } else {
            value.push_str("; ");
            line_len += 2;
        }
        line_len += param.len();
        value.push_str(&param);
    }
    value
}

/// `name=value`, quoted when needed, RFC 2231-encoded when not ASCII.
fn format_parameter(name: &str, value: &str) -> String {
    if !value.is_empty() && value.bytes().all(is_token_char) {
        format!("{name}={value}")
    } else if value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{name}=\"{escaped}\"")
    } else {
        let mut encoded = String::with_capacity(value.len() * 3);
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                encoded.push(char::from(b));
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        format!("{name}*=utf-8''{encoded}")
    }
}

/// RFC 2045 §5.1 token characters.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// A phrase (RFC 5322 §3.2.5) for a header: a quoted string when it is
/// ASCII, RFC 2047 encoded words when it is not.
pub fn encode_phrase(phrase: &str) -> String {
    if phrase.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        let escaped = phrase.replace('\\', "\\\\").replace('"', "\\\"");
        return format!("\"{escaped}\"");
    }
    // Encoded words are at most 75 characters: "=?utf-8?b?" + 60 + "?=" fits,
    // and 45 bytes of UTF-8 are 60 of base64. Split on character boundaries.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in phrase.chars() {
        if chunk.len() + ch.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(ch);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|word| {
            format!(
                "=?utf-8?b?{}?=",
                data_encoding::BASE64.encode(word.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(raw: &[u8]) -> Result<(Vec<Field>, usize), RewriteError> {
        split_header_block(raw, 0)
    }

    #[test]
    fn splits_folded_fields_and_finds_the_body() {
        let raw = b"From: a@example.org\r\nSubject: one\r\n two\r\nX-A : b\r\n\r\nbody";
        let (fields, body) = split(raw).unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["from", "subject", "x-a"]);
        assert_eq!(&raw[fields[1].span.clone()], b"Subject: one\r\n two\r\n");
        assert_eq!(&raw[body..], b"body");
        assert_eq!(field_value(raw, &fields[1]), "one two");
    }

    #[test]
    fn refuses_ambiguous_header_blocks() {
        assert_eq!(split(b"\r\nbody").unwrap_err(), RewriteError::NoHeaders);
        assert_eq!(
            split(b"From: a@example.org\r\n").unwrap_err(),
            RewriteError::NoHeaderBodySeparator
        );
        for (raw, line) in [
            (&b"From: a\r\nno colon here\r\n\r\n"[..], 2),
            (b" Subject: x\r\n\r\n", 1),
            (b"From: a\r\n \t\r\n\r\n", 2),
            (b"Fr om: a\r\n\r\n", 1),
        ] {
            match split(raw) {
                Err(RewriteError::MalformedHeader { line: l, .. }) => assert_eq!(l, line),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
            }
        }
    }

    #[test]
    fn parameters_are_quoted_or_encoded_as_needed() {
        assert_eq!(format_parameter("format", "flowed"), "format=flowed");
        assert_eq!(format_parameter("name", "a b\"c"), "name=\"a b\\\"c\"");
        assert_eq!(format_parameter("name", "é"), "name*=utf-8''%C3%A9");
    }

    #[test]
    fn phrases_are_quoted_or_encoded_words() {
        assert_eq!(encode_phrase("Product news"), "\"Product news\"");
        assert_eq!(encode_phrase("Café"), "=?utf-8?b?Q2Fmw6k=?=");
    }
}
