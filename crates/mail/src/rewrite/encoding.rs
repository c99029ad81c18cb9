//! Line endings and content-transfer-encodings (RFC 2045 §6), byte-exact.

use std::borrow::Cow;

use data_encoding::BASE64;
use memchr::{memchr_iter, memchr2_iter};

/// RFC 5322 §2.1.1: a line is at most 998 octets, excluding the CRLF.
pub const MAX_LINE_OCTETS: usize = 998;

/// Quoted-printable and base64 lines are at most 76 characters (RFC 2045).
const ENCODED_LINE: usize = 76;

/// Turns every bare LF into CRLF, the canonical form of a message on the
/// wire (RFC 5321 §2.3.8). Other bytes, bare CR included, are left alone.
pub fn normalise_line_endings(input: &[u8]) -> Cow<'_, [u8]> {
    // The scans here run over every body part of every copy: they jump
    // from line break to line break (memchr) rather than test each byte.
    let bare = |i: usize| i == 0 || input[i - 1] != b'\r';
    if !memchr_iter(b'\n', input).any(bare) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut start = 0;
    for i in memchr_iter(b'\n', input).filter(|&i| bare(i)) {
        out.extend_from_slice(&input[start..i]);
        out.push(b'\r');
        start = i; // the LF itself starts the next run
    }
    out.extend_from_slice(&input[start..]);
    Cow::Owned(out)
}

/// The 1-based number of the first line longer than [`MAX_LINE_OCTETS`].
pub fn first_long_line(data: &[u8]) -> Option<usize> {
    let mut start = 0;
    let ends = memchr_iter(b'\n', data).chain(std::iter::once(data.len()));
    for (i, end) in ends.enumerate() {
        let line = &data[start..end];
        let len = line.len() - usize::from(line.last() == Some(&b'\r'));
        if len > MAX_LINE_OCTETS {
            return Some(i + 1);
        }
        start = end + 1;
    }
    None
}

/// The 1-based number of the first line that ends in a bare LF or holds a
/// bare CR.
pub fn first_bare_line_break(data: &[u8]) -> Option<usize> {
    let mut line = 1;
    for i in memchr2_iter(b'\r', b'\n', data) {
        match data[i] {
            b'\n' if i == 0 || data[i - 1] != b'\r' => return Some(line),
            b'\n' => line += 1,
            _ if data.get(i + 1) != Some(&b'\n') => return Some(line),
            _ => {}
        }
    }
    None
}

/// True when `data` may travel unencoded as `7bit` (RFC 2045 §2.7):
/// US-ASCII without NUL, CR and LF only as CRLF, short lines.
pub fn is_7bit_safe(data: &[u8]) -> bool {
    data.is_ascii() && is_8bit_safe(data)
}

/// True when `data` may travel unencoded as `8bit` (RFC 2045 §2.8).
pub fn is_8bit_safe(data: &[u8]) -> bool {
    !data.contains(&0) && first_bare_line_break(data).is_none() && first_long_line(data).is_none()
}

/// Canonical text form (RFC 2046 §4.1.1): every line break is CRLF.
pub fn text_to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    // `start`: the first byte not yet copied (past the last line break).
    let mut start = 0;
    for i in memchr2_iter(b'\r', b'\n', data) {
        if i < start {
            continue; // the LF of a CRLF, taken with its CR
        }
        out.extend_from_slice(&data[start..i]);
        out.extend_from_slice(b"\r\n");
        start = if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i + 2
        } else {
            i + 1
        };
    }
    out.extend_from_slice(&data[start..]);
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

    /// The byte-at-a-time definitions the fast scans must agree with.
    mod reference {
        use super::super::MAX_LINE_OCTETS;

        pub fn normalise_line_endings(input: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut previous = 0u8;
            for &b in input {
                if b == b'\n' && previous != b'\r' {
                    out.push(b'\r');
                }
                out.push(b);
                previous = b;
            }
            out
        }

        pub fn first_long_line(data: &[u8]) -> Option<usize> {
            data.split(|&b| b == b'\n')
                .enumerate()
                .find_map(|(i, line)| {
                    let len = line.len() - usize::from(line.last() == Some(&b'\r'));
                    (len > MAX_LINE_OCTETS).then_some(i + 1)
                })
        }

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

        pub fn is_7bit_safe(data: &[u8]) -> bool {
            data.iter().all(|&b| b != 0 && b < 0x80)
                && !data.contains(&0)
                && first_bare_line_break(data).is_none()
                && first_long_line(data).is_none()
        }

        pub fn text_to_crlf(data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
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
    }

    /// Bytes rich in line breaks, NULs, high bytes and long runs, so that
    /// every branch of the scans is taken.
    fn text() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(vec![0u8]),
            Just(vec![0xc3, 0xa9]),
            Just(vec![b'x'; 999]),
            Just(vec![b'y'; 998]),
            proptest::collection::vec(any::<u8>(), 0..8),
            "[a-z .]{0,40}".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn the_scans_agree_with_their_definitions(data in text()) {
            prop_assert_eq!(normalise_line_endings(&data).into_owned(), reference::normalise_line_endings(&data));
            prop_assert_eq!(first_long_line(&data), reference::first_long_line(&data));
            prop_assert_eq!(first_bare_line_break(&data), reference::first_bare_line_break(&data));
            prop_assert_eq!(is_7bit_safe(&data), reference::is_7bit_safe(&data));
            prop_assert_eq!(text_to_crlf(&data), reference::text_to_crlf(&data));
        }

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
