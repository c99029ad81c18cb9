//! Topics (kinds of marketing), service message types and consent wordings.

use std::fmt;

use sha2::{Digest, Sha256};

/// A topic's number in the store. Tokens carry it in 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u16);

/// A topic's key: lower-case letters, digits and hyphens, 1 to 40 long,
/// starting with a letter or digit. It appears in `List-Id: <key.domain>`
/// (RFC 2919), so it must be a valid DNS label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid key: use 1 to 40 lower-case letters, digits and hyphens, starting with a letter or digit"
)]
pub struct TopicKeyError(pub String);

impl TopicKey {
    pub fn parse(s: &str) -> Result<Self, TopicKeyError> {
        let t = s.trim();
        let ok = !t.is_empty()
            && t.len() <= 40
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !t.starts_with('-')
            && !t.ends_with('-');
        if ok {
            Ok(TopicKey(t.to_owned()))
        } else {
            Err(TopicKeyError(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A kind of marketing a person can agree to or refuse, on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub id: TopicId,
    pub key: TopicKey,
    /// What the person sees: "Product news".
    pub name: String,
    /// One plain sentence: "New products and features, about once a month."
    pub description: String,
    /// The similar-products group this topic markets (PECR reg 22(3)(b)):
    /// a purchase in this group gives a soft opt-in for this topic.
    pub group: Option<String>,
}

/// A declared kind of service message (bills, security alerts). Not marketing;
/// its description tells the person why it still arrives after they opt out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceType {
    pub key: String,
    pub description: String,
}

/// The exact consent text a person was shown, content-hashed so the evidence
/// can prove which words they saw (ICO-REC, CASL-EXPRESS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wording {
    pub id: crate::WordingId,
    pub text: String,
    pub hash: String,
}

impl Wording {
    /// Hex SHA-256 of the text as shown.
    pub fn content_hash(text: &str) -> String {
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys() {
        assert_eq!(TopicKey::parse(" news ").unwrap().as_str(), "news");
        assert!(TopicKey::parse("product-news2").is_ok());
        for bad in ["", "News", "a b", "-x", "x-", "x_y", &"a".repeat(41)] {
            assert!(TopicKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wording_hash_is_stable() {
        assert_eq!(
            Wording::content_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
