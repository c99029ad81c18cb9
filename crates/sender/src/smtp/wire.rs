//! The bytes of an SMTP transaction: replies as upstream sends them, and
//! commands and message content as veto writes them. No I/O here.

/// Longest reply veto reads (all lines together): a server that sends more
/// is broken or hostile.
pub const MAX_REPLY: usize = 64 * 1024;

/// One SMTP reply, all its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The reply as one line of printable text: `250 2.0.0 Ok: queued as X`
    /// (the text of continuation lines follows, separated by spaces). It
    /// goes into receipts and may go into the gateway's own reply text, so
    /// it never holds control characters.
    pub text: String,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

/// A reply that is not SMTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Parses one complete reply at the start of `buf`. `Ok(None)`: more bytes
/// are needed. `Ok(Some((reply, used)))`: the reply took `used` bytes.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    let mut pos = 0;
    let mut code = None;
    let mut text = String::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_REPLY {
                return Err(Malformed(format!("a reply longer than {MAX_REPLY} bytes")));
            }
            return Ok(None);
        };
        let end = pos + nl;
        let mut line = &buf[pos..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let digits = line
            .get(..3)
            .filter(|d| d.iter().all(u8::is_ascii_digit) && (b'2'..=b'5').contains(&d[0]));
        let Some(digits) = digits else {
            return Err(Malformed(format!(
                "not an SMTP reply: {:?}",
                printable(&line[..line.len().min(80)])
            )));
        };
        let this = digits
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if code.is_some_and(|c| c != this) {
            return Err(Malformed(format!(
                "reply lines with different codes: {} then {this}",
                code.unwrap_or_default()
            )));
        }
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => {
                return Err(Malformed(format!(
                    "not an SMTP reply: {:?}",
                    printable(&line[..line.len().min(80)])
                )));
            }
        };
        let body = printable(line.get(4..).unwrap_or_default());
        let body = body.trim();
        if code.is_none() {
            text.push_str(&this.to_string());
        }
        if !body.is_empty() {
            text.push(' ');
            text.push_str(body);
        }
        code = Some(this);
        pos = end + 1;
        if last {
            return Ok(Some((Reply { code: this, text }, pos)));
        }
        if pos > MAX_REPLY {
            return Err(Malformed(format!("a reply longer than {MAX_REPLY} bytes")));
        }
    }
}

/// Text from upstream with every control character replaced by a space.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An address for `MAIL FROM:<…>` / `RCPT TO:<…>`: no angle brackets,
/// spaces or control characters, so it cannot end the command early or
/// smuggle another one. `""` (and `"<>"` for MAIL) is the null path.
pub fn path(address: &str) -> Option<&str> {
    let bare = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    let ok = bare.len() <= 512
        && !bare
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>'));
    ok.then_some(bare)
}

/// What upstream offers (from its EHLO reply) that changes what veto writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920: commands may be sent in groups.
    pub pipelining: bool,
    /// RFC 3030: `BDAT`, so the message can go in the same write as the envelope.
    pub chunking: bool,
    /// RFC 6152: `BODY=8BITMIME`.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 1870: announce the size in `MAIL FROM`.
    pub size: bool,
}

/// Appends `MAIL FROM:<from>` with the parameters that apply.
pub fn push_mail_from(out: &mut Vec<u8>, from: &str, to: &str, message: &[u8], ext: Extensions) {
    out.extend_from_slice(b"MAIL FROM:<");
    out.extend_from_slice(from.as_bytes());
    out.push(b'>');
    if ext.size {
        out.extend_from_slice(b" SIZE=");
        push_number(out, message.len());
    }
    if ext.eight_bit_mime && !message.is_ascii() {
        out.extend_from_slice(b" BODY=8BITMIME");
    }
    if ext.smtputf8 && !(from.is_ascii() && to.is_ascii()) {
        out.extend_from_slice(b" SMTPUTF8");
    }
    out.extend_from_slice(b"\r\n");
}

pub fn push_rcpt_to(out: &mut Vec<u8>, to: &str) {
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(b">\r\n");
}

/// Appends `BDAT <n> LAST` and the message (line ends made CRLF; BDAT
/// needs no dot-stuffing, RFC 3030 §2).
pub fn push_bdat(out: &mut Vec<u8>, message: &[u8]) {
    let header_at = out.len();
    push_lines(out, message, false);
    let len = out.len() - header_at;
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(b"BDAT ");
    push_number(&mut header, len);
    header.extend_from_slice(b" LAST\r\n");
    out.splice(header_at..header_at, header);
}

/// Appends the message as DATA content, with the terminating `.` line.
pub fn push_data(out: &mut Vec<u8>, message: &[u8]) {
    push_lines(out, message, true);
    out.extend_from_slice(b".\r\n");
}

/// Appends `message` with every line end CRLF — a bare CR or LF becomes
/// CRLF, so no server can find a line end (or an end of data) where another
/// would not (RFC 5321 §2.3.8; SMTP smuggling) — and a final CRLF if the
/// message lacks one. With `dot_stuff`, a `.` that starts a line is doubled
/// (RFC 5321 §4.5.2), the first line included.
pub fn push_lines(out: &mut Vec<u8>, message: &[u8], dot_stuff: bool) {
    out.reserve(message.len() + 8);
    let mut line_start = true;
    let mut copied = 0;
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'.' if line_start && dot_stuff => {
                out.extend_from_slice(&message[copied..i]);
                out.push(b'.');
                copied = i;
                line_start = false;
                i += 1;
            }
            b'\r' if message.get(i + 1) == Some(&b'\n') => {
                line_start = true;
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(&message[copied..i]);
                out.extend_from_slice(b"\r\n");
                line_start = true;
                i += 1;
                copied = i;
            }
            _ => {
                line_start = false;
                i += 1;
            }
        }
    }
    out.extend_from_slice(&message[copied..]);
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
}

fn push_number(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(message: &str) -> String {
        let mut out = Vec::new();
        push_data(&mut out, message.as_bytes());
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn dot_stuffing_and_line_ends() {
        for (message, wire) in [
            ("", ".\r\n"),
            ("a", "a\r\n.\r\n"),
            ("a\r\n", "a\r\n.\r\n"),
            (".", "..\r\n.\r\n"),
            (".a\r\n", "..a\r\n.\r\n"),
            ("a\r\n.\r\n", "a\r\n..\r\n.\r\n"),
            ("a\r\n..\r\nb", "a\r\n...\r\nb\r\n.\r\n"),
            ("a.b\r\n", "a.b\r\n.\r\n"),
            // Bare LF and bare CR are line ends, never something a server
            // could read as the end of the data (SMTP smuggling).
            ("a\n.\nMAIL FROM:<x>\n", "a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
            ("a\r.\rb", "a\r\n..\r\nb\r\n.\r\n"),
            ("a\r\n.\r", "a\r\n..\r\n.\r\n"),
            ("a\r\r\n", "a\r\n\r\n.\r\n"),
            ("a\n\r\n", "a\r\n\r\n.\r\n"),
        ] {
            assert_eq!(data(message), wire, "for {message:?}");
        }
    }

    #[test]
    fn bdat_counts_the_normalised_bytes() {
        let mut out = b"RCPT TO:<a@b>\r\n".to_vec();
        push_bdat(&mut out, b"Subject: x\n\n.hi");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "RCPT TO:<a@b>\r\nBDAT 19 LAST\r\nSubject: x\r\n\r\n.hi\r\n"
        );
    }

    #[test]
    fn mail_from_parameters_follow_the_extensions() {
        let mut out = Vec::new();
        push_mail_from(&mut out, "", "a@b", b"x", Extensions::default());
        assert_eq!(out, b"MAIL FROM:<>\r\n");
        out.clear();
        let all = Extensions {
            pipelining: true,
            chunking: true,
            eight_bit_mime: true,
            smtputf8: true,
            size: true,
        };
        push_mail_from(&mut out, "b@x", "ü@b", "Grüße".as_bytes(), all);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "MAIL FROM:<b@x> SIZE=7 BODY=8BITMIME SMTPUTF8\r\n"
        );
        out.clear();
        push_mail_from(&mut out, "b@x", "a@b", b"plain", all);
        assert_eq!(out, b"MAIL FROM:<b@x> SIZE=5\r\n");
    }

    #[test]
    fn paths_cannot_carry_commands() {
        assert_eq!(path(""), Some(""));
        assert_eq!(path("<>"), Some(""));
        assert_eq!(
            path("bounces+abc@example.org"),
            Some("bounces+abc@example.org")
        );
        assert_eq!(path("<a@b>"), Some("a@b"));
        for bad in ["a@b>\r\nRCPT TO:<x@y", "a b@c", "a@b\n", "<a@b", "a>@b"] {
            assert_eq!(path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replies() {
        let (r, used) = parse_reply(b"250 2.0.0 Ok: queued as X\r\nrest")
            .expect("reply")
            .expect("complete");
        assert_eq!(r.code, 250);
        assert_eq!(r.text, "250 2.0.0 Ok: queued as X");
        assert_eq!(used, 27);

        let multi = b"250-mta.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n";
        let (r, used) = parse_reply(multi).expect("reply").expect("complete");
        assert_eq!(r.text, "250 mta.example PIPELINING SIZE 100");
        assert_eq!(used, multi.len());

        let (r, _) = parse_reply(b"354\n").expect("reply").expect("complete");
        assert_eq!((r.code, r.text.as_str()), (354, "354"));
        let (r, _) = parse_reply(b"550 5.1.1 no\x07 such\tuser\r\n")
            .expect("reply")
            .expect("complete");
        assert_eq!(r.text, "550 5.1.1 no  such user");

        assert_eq!(parse_reply(b"250-a\r\n250 b"), Ok(None));
        assert_eq!(parse_reply(b""), Ok(None));
        assert!(parse_reply(b"hello\r\n").is_err());
        assert!(parse_reply(b"250-a\r\n451 b\r\n").is_err());
        assert!(parse_reply(b"2500 x\r\n").is_err());
        assert!(parse_reply(&vec![b'2'; MAX_REPLY + 1]).is_err());
    }
}
