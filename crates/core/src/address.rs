//! Email addresses and phone numbers, parsed once at the edge.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// An email address that RFC 5321 / RFC 6531 would accept for delivery.
///
/// The only way to get one is [`EmailAddress::parse`]. Two forms are kept:
///
/// * the *address* (`as_str`): the local part as given (NFC), `@`, the domain
///   in ASCII (IDN labels converted to punycode, lower case);
/// * the *key* (`key`): the address in lower case, NFC. This is what veto
///   matches on: suppression, contact lookup, import. RFC 5321 allows a
///   mailbox to treat `Jo@x` and `jo@x` as different people, but no common
///   provider does, and matching case-insensitively errs on the side of
///   *blocking* a message, never of sending one. Dots and `+tags` are kept:
///   they are different addresses to most providers.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress {
    address: String,
    key_start: usize,
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    #[error("{0:?} has no @")]
    NoAt(String),
    #[error("nothing before the @ in {0:?}")]
    EmptyLocal(String),
    #[error("nothing after the @ in {0:?}")]
    EmptyDomain(String),
    #[error("the part before the @ is {0} octets long; RFC 5321 allows at most 64")]
    LocalTooLong(usize),
    #[error("the address is {0} octets long; at most 254 can be delivered")]
    TooLong(usize),
    #[error("character {0:?} is not allowed before the @ (use quotes for it)")]
    BadLocalChar(char),
    #[error("dots may not start, end or follow each other before the @")]
    BadDots,
    #[error("the quoted part before the @ is not closed or holds a bare {0:?}")]
    BadQuoted(char),
    #[error("address literals like {0:?} are not accepted; use a domain name")]
    AddressLiteral(String),
    #[error("domain {0:?} is not a valid domain name: {1}")]
    BadDomain(String, &'static str),
    #[error("{0:?} looks like a display name with an address; give the bare address")]
    DisplayName(String),
}

const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.contains('<') || s.contains('>') {
            return Err(AddressError::DisplayName(s.to_owned()));
        }
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| AddressError::NoAt(s.to_owned()))?;
        if local.is_empty() {
            return Err(AddressError::EmptyLocal(s.to_owned()));
        }
        if domain.is_empty() {
            return Err(AddressError::EmptyDomain(s.to_owned()));
        }
        let local: String = local.nfc().collect();
        check_local(&local)?;
        if local.len() > 64 {
            return Err(AddressError::LocalTooLong(local.len()));
        }
        let domain = ascii_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > 254 {
            return Err(AddressError::TooLong(address.len()));
        }
        let key = format!(
            "{}@{domain}",
            local.to_lowercase().nfc().collect::<String>()
        );
        Ok(EmailAddress {
            key_start: local.len() + 1,
            address,
            key,
        })
    }

    /// The address, to put on an envelope or in a header.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The normalised key veto matches addresses on (lower case, NFC).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The domain, in ASCII.
    pub fn domain(&self) -> &str {
        &self.address[self.key_start..]
    }

    /// Enough for a person to recognise their own address, no more:
    /// `j•••@example.com`.
    pub fn masked(&self) -> String {
        let local = &self.address[..self.key_start - 1];
        let first: String = local.chars().take(1).collect();
        format!("{first}\u{2022}\u{2022}\u{2022}@{}", self.domain())
    }
}

fn check_local(local: &str) -> Result<(), AddressError> {
    if let Some(inner) = local.strip_prefix('"') {
        // RFC 5321 quoted-string: qtextSMTP or quoted-pairSMTP.
        let Some(inner) = inner.strip_suffix('"') else {
            return Err(AddressError::BadQuoted('"'));
        };
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(' '..='~') => {}
                    _ => return Err(AddressError::BadQuoted('\\')),
                },
                '"' => return Err(AddressError::BadQuoted('"')),
                ' ' | '!' | '#'..='[' | ']'..='~' => {}
                c if !c.is_ascii() && !c.is_control() => {}
                c => return Err(AddressError::BadQuoted(c)),
            }
        }
        return Ok(());
    }
    // RFC 5321 Dot-string, with RFC 6531 UTF-8 atext.
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(AddressError::BadDots);
    }
    for c in local.chars() {
        let ok = c.is_ascii_alphanumeric()
            || c == '.'
            || ATEXT_SPECIALS.contains(c)
            || (!c.is_ascii() && !c.is_control() && !c.is_whitespace());
        if !ok {
            return Err(AddressError::BadLocalChar(c));
        }
    }
    Ok(())
}

fn ascii_domain(domain: &str) -> Result<String, AddressError> {
    if domain.starts_with('[') {
        return Err(AddressError::AddressLiteral(domain.to_owned()));
    }
    let bad = |why| AddressError::BadDomain(domain.to_owned(), why);
    let ascii =
        idna::domain_to_ascii(domain).map_err(|_| bad("it cannot be converted to ASCII (IDNA)"))?;
    if ascii.is_empty() {
        return Err(bad("it is empty"));
    }
    if ascii.len() > 253 {
        return Err(bad("it is longer than 253 octets"));
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label (two dots, or a dot at an end)"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 octets"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with a hyphen"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("only letters, digits and hyphens are allowed"));
        }
    }
    if ascii
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("the last label is all digits"));
    }
    Ok(ascii)
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({:?})", self.address)
    }
}

impl std::str::FromStr for EmailAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A phone number in E.164 form (`+447700900123`), for the SMS and phone
/// channels. Spaces, dots, hyphens and brackets are dropped on parsing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number {0:?} must start with + and the country code (E.164)")]
    NoPlus(String),
    #[error("phone number {0:?} may hold only digits after the +")]
    NotDigits(String),
    #[error("phone number {0:?} has {1} digits; E.164 numbers have 8 to 15")]
    Length(String, usize),
    #[error("phone number {0:?}: country codes never start with 0")]
    LeadingZero(String),
}

impl PhoneNumber {
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let s = input.trim();
        let compact: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let Some(digits) = compact.strip_prefix('+') else {
            return Err(PhoneError::NoPlus(s.to_owned()));
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::NotDigits(s.to_owned()));
        }
        if !(8..=15).contains(&digits.len()) {
            return Err(PhoneError::Length(s.to_owned(), digits.len()));
        }
        if digits.starts_with('0') {
            return Err(PhoneError::LeadingZero(s.to_owned()));
        }
        Ok(PhoneNumber(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_normalises() {
        let a = EmailAddress::parse("  Jo.Bloggs+news@Example.COM \n").unwrap();
        assert_eq!(a.as_str(), "Jo.Bloggs+news@example.com");
        assert_eq!(a.key(), "jo.bloggs+news@example.com");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.masked(), "J\u{2022}\u{2022}\u{2022}@example.com");
    }

    #[test]
    fn idn_domain_to_ascii_and_nfc_local() {
        let a = EmailAddress::parse("Ame\u{301}lie@Bücher.example").unwrap();
        assert_eq!(a.as_str(), "Amélie@xn--bcher-kva.example");
        assert_eq!(a.key(), "amélie@xn--bcher-kva.example");
        // NFC: the composed and decomposed forms are one key.
        let b = EmailAddress::parse("amélie@bücher.example").unwrap();
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn quoted_local_part() {
        assert!(EmailAddress::parse("\"john doe\"@example.com").is_ok());
        assert_eq!(
            EmailAddress::parse("\"john@example.com"),
            Err(AddressError::BadQuoted('"'))
        );
    }

    #[test]
    fn rejections_say_why() {
        use AddressError::*;
        let cases: &[(&str, AddressError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("jo.example.com", NoAt("jo.example.com".into())),
            ("@example.com", EmptyLocal("@example.com".into())),
            ("jo@", EmptyDomain("jo@".into())),
            ("jo..b@example.com", BadDots),
            (".jo@example.com", BadDots),
            ("jo.@example.com", BadDots),
            ("jo b@example.com", BadLocalChar(' ')),
            ("jo,b@example.com", BadLocalChar(',')),
            ("jo@[192.0.2.1]", AddressLiteral("[192.0.2.1]".into())),
            (
                "Jo <jo@example.com>",
                DisplayName("Jo <jo@example.com>".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&EmailAddress::parse(input).unwrap_err(), want, "{input:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(EmailAddress::parse(&long_local), Err(LocalTooLong(65)));
        for bad in [
            "jo@exa_mple.com",
            "jo@-example.com",
            "jo@example..com",
            "jo@example.com.",
            "jo@1.2.3.4",
        ] {
            assert!(
                matches!(EmailAddress::parse(bad), Err(BadDomain(..))),
                "{bad:?} should be a bad domain, got {:?}",
                EmailAddress::parse(bad)
            );
        }
        let msg = EmailAddress::parse("jo b@example.com")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("' '"), "{msg}");
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(
            PhoneNumber::parse("+44 7700 900-123").unwrap().as_str(),
            "+447700900123"
        );
        assert!(matches!(
            PhoneNumber::parse("07700900123"),
            Err(PhoneError::NoPlus(_))
        ));
        assert!(matches!(
            PhoneNumber::parse("+44 77x"),
            Err(PhoneError::NotDigits(_))
        ));
        assert!(matches!(
            PhoneNumber::parse("+4412"),
            Err(PhoneError::Length(_, 4))
        ));
        assert!(matches!(
            PhoneNumber::parse("+0441234567"),
            Err(PhoneError::LeadingZero(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = EmailAddress::parse(&s);
            let _ = PhoneNumber::parse(&s);
        }

        #[test]
        fn valid_dot_atoms_round_trip(local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-zA-Z0-9_-]{1,10}){0,2}",
                                      domain in "[a-z0-9]{1,10}(-[a-z0-9]{1,5})?\\.[a-z]{2,6}") {
            let input = format!("{local}@{domain}");
            let a = EmailAddress::parse(&input).unwrap();
            prop_assert_eq!(a.as_str(), input.as_str());
            prop_assert_eq!(a.key(), input.to_lowercase());
            // Parsing the key again gives the same key: normalisation is idempotent.
            let again = EmailAddress::parse(a.key()).unwrap();
            prop_assert_eq!(again.key(), a.key());
        }
    }
}
