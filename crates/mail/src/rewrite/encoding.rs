//! Line endings and content-transfer-encodings (RFC 2045 §6), byte-exact.

use std::borrow::Cow;

use data_encoding::BASE64;

/// RFC 5322 §2.1.1: a line is at most 998 octets, excluding the CRLF.
pub const MAX_LINE_OCTETS: usize = 998;

/// Quoted-printable and base64 lines are at most 76 characters (RFC 2045).
const ENCODED_LINE: usize = 76;

/// Turns every bare LF into CRLF, the canonical form of a message on the
/// wire (RFC 5321 §2.3.8). Other bytes, bare CR included, are left alone.
pub fn normalise_line_endings(input: &[u8]) -> Cow<'_, [u8]> {
    let bare_lf = input
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || input[i - 1] != b'\r'));
    if !bare_lf {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut previous = 0u8;
    for &b in input {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    Cow::Owned(out)
}

/// The 1-based number of the first line longer than [`MAX_LINE_OCTETS`].
pub fn first_long_line(data: &[u8]) -> Option<usize> {
    data.split(|&b| b == b'\n')
        .enumerate()
        .find_map(|(i, line)| {
            let len = line.len() - usize::from(line.last() == Some(&b'\r'));
            (len > MAX_LINE_OCTETS).then_some(i + 1)
        })
}

/// The 1-based number of the first line that ends in a bare LF or holds a
/// bare CR.
pub fn first_bare_line_break(data: &[u8]) -> Option<usize> {
    let mut line = 1;
    for (i, &b) in data.iter().enumerate() {
        match b {
            b'\n' if i == 0 || data[i - 1] != b'\r' => return Some(line),
            b'\n' => line += 1,
            b'\r' if data.get(i + 1) != Some(&b'\n') => return Some(line),
            _ => {}
        }
    }
    None
}

/// True when `data` may travel unencoded as `7bit` (RFC 2045 §2.7):
/// US-ASCII without NUL, CR and LF only as CRLF, short lines.
pub fn is_7bit_safe(data: &[u8]) -> bool {
    data.iter().all(|&b| b != 0 && b < 0x80) && is_8bit_safe(data)
}

/// True when `data` may travel unencoded as `8bit` (RFC 2045 §2.8).
pub fn is_8bit_safe(data: &[u8]) -> bool {
    !data.contains(&0) && first_bare_line_break(data).is_none() && first_long_line(data).is_none()
}

/// Canonical text form (RFC 2046 §4.1.1): every line break is CRLF.
pub fn text_to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Base64 in lines of 76 characters, each ending in CRLF.
pub fn base64_encode(data: &[u8]) -> Vec<u8> {
    let encoded = BASE64.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / ENCODED_LINE * 2 + 2);
    for line in encoded.as_bytes().chunks(ENCODED_LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7) that round-trips any bytes: CRLF
/// becomes a hard line break, everything else that is not printable
/// (bare CR and LF included) is escaped, and lines are soft-broken at 76.
pub fn quoted_printable_encode(data: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(data.len() + data.len() / 8);
    let mut line_len = 0;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            line_len = 0;
            i += 2;
            continue;
        }
        let at_line_end =
            i + 1 == data.len() || (data[i + 1] == b'\r' && data.get(i + 2) == Some(&b'\n'));
        let literal = match b {
            b'!'..=b'<' | b'>'..=b'~' => true,
            // §6.7 rule 3: white space at the end of a line must be encoded.
            b' ' | b'\t' => !at_line_end,
            _ => false,
        };
        let width = if literal { 1 } else { 3 };
        // Room for the token plus the "=" of a soft line break.
        if line_len + width > ENCODED_LINE - 1 {
            out.extend_from_slice(b"=\r\n");
            line_len = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
        line_len += width;
        i += 1;
    }
    out
}

/// Decodes quoted-printable leniently, the way RFC 2045 §6.7 advises robust
/// decoders to: a `=` that starts no valid escape is kept as it is, and
/// trailing white space on a line (added in transport) is dropped.
pub fn quoted_printable_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let last = lines.len() - 1;
    for (n, line) in lines.iter().enumerate() {
        let had_lf = n < last;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let trimmed_len = line
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |p| p + 1);
        let line = &line[..trimmed_len];
        let (line, soft_break) = match line.strip_suffix(b"=") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            if b == b'='
                && let (Some(h), Some(l)) = (
                    line.get(i + 1).and_then(|&c| hex_value(c)),
                    line.get(i + 2).and_then(|&c| hex_value(c)),
                )
            {
                out.push((h << 4) | l);
                i += 3;
                continue;
            }
            out.push(b);
            i += 1;
        }
        if had_lf && !soft_break {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bare_lf_becomes_crlf_and_crlf_stays() {
        assert_eq!(&*normalise_line_endings(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert!(matches!(
            normalise_line_endings(b"a\r\nb"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn quoted_printable_escapes_trailing_space_and_soft_breaks_long_lines() {
        assert_eq!(quoted_printable_encode(b"a \r\nb\t"), b"a=20\r\nb=09");
        let long = vec![b'x'; 200];
        let encoded = quoted_printable_encode(&long);
        assert!(encoded.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        assert_eq!(quoted_printable_decode(&encoded), long);
    }

    #[test]
    fn quoted_printable_decoding_keeps_stray_equals_signs() {
        assert_eq!(
            quoted_printable_decode(b"a=b=3D=\r\nc  \r\nd"),
            b"a=b=c\r\nd"
        );
    }

    #[test]
    fn line_checks_find_the_offending_line() {
        let mut data = b"ok\r\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 999));
        assert_eq!(first_long_line(&data), Some(2));
        assert_eq!(first_bare_line_break(b"a\r\nb\nc"), Some(2));
        assert_eq!(first_bare_line_break(b"a\rb"), Some(1));
        assert!(is_7bit_safe(b"hello\r\nworld"));
        assert!(!is_7bit_safe("café".as_bytes()));
        assert!(is_8bit_safe("café".as_bytes()));
    }

    proptest! {
        #[test]
        fn quoted_printable_round_trips_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let encoded = quoted_printable_encode(&data);
            prop_assert!(is_7bit_safe(&encoded));
            prop_assert!(encoded.split(|&b| b == b'\n').all(|l| l.len() <= 77));
            prop_assert_eq!(quoted_printable_decode(&encoded), data);
        }

        #[test]
        fn base64_lines_are_short_and_decode(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let encoded = base64_encode(&data);
            prop_assert!(is_7bit_safe(&encoded));
            prop_assert_eq!(mail_parser::decoders::base64::base64_decode(&encoded), Some(data));
        }
    }
}
