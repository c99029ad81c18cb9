//! Opaque, unforgeable tokens for unsubscribe, preference, bounce and
//! confirmation links (DESIGN.md, "Messages that carry choice").
//!
//! A token is 40 characters of lowercase base32 (RFC 4648 alphabet, no
//! padding), small enough for the local part of `unsubscribe+TOKEN@…`.
//! 40 × 5 bits is exactly 25 bytes, so every character carries bits covered
//! by the tag:
//!
//! ```text
//! byte  0       key id
//! bytes 1..15   payload XOR keystream
//! bytes 15..25  tag
//!
//! payload   = contact id (48 bits) || scope (16 bits, 0 = all marketing)
//!             || message ref (48 bits, 0 = none), big endian
//! tag       = HMAC-SHA256(mac_key, "veto-token-v1" || purpose || key id || payload)[..10]
//! keystream = HMAC-SHA256(enc_key, "veto-token-enc" || key id || tag)[..14]
//! ```
//!
//! The tag doubles as the IV (a synthetic-IV construction), so minting is
//! deterministic: the same claims, purpose and key always give the same
//! token. The purpose is not stored in the token; it only separates domains,
//! so a bounce token never works as an unsubscribe token.
//!
//! Tokens do not expire: unsubscribe links must keep working for years
//! (CAN-SPAM needs 30 days, CASL 60). Keys rotate by id; a token stops
//! verifying only when its key is removed from [`TokenKeys`].

use std::fmt;

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Length of every token, in characters.
pub const TOKEN_LEN: usize = 40;

const RAW_LEN: usize = 25;
const PAYLOAD_LEN: usize = 14;
const TAG_LEN: usize = 10;
const PAYLOAD: std::ops::Range<usize> = 1..1 + PAYLOAD_LEN;
const TAG: std::ops::Range<usize> = 1 + PAYLOAD_LEN..RAW_LEN;

/// Largest contact id or message ref a token can carry (48 bits).
pub const MAX_TOKEN_ID: u64 = (1 << 48) - 1;

const MAC_CONTEXT: &[u8] = b"veto-token-v1";
const ENC_CONTEXT: &[u8] = b"veto-token-enc";
const MAC_KEY_LABEL: &[u8] = b"veto token mac";
const ENC_KEY_LABEL: &[u8] = b"veto token enc";

/// What a token is for. A token minted for one purpose does not verify for
/// another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    Unsubscribe,
    Preferences,
    Bounce,
    /// A double opt-in confirmation (the claims' contact is the pending signup).
    Confirm,
    /// Confirms a request to download one's data (message = expiry, in minutes since the epoch).
    ConfirmDownload,
    /// Confirms a request to erase one's data (message = expiry, in minutes since the epoch).
    ConfirmErase,
    /// The anti-forgery field of a form veto rendered (message = render time, in minutes since the epoch).
    Form,
}

impl Purpose {
    /// The byte mixed into the tag. Part of the token format: renumbering
    /// would invalidate every token already sent.
    fn domain_byte(self) -> u8 {
        match self {
            Purpose::Unsubscribe => 1,
            Purpose::Preferences => 2,
            Purpose::Bounce => 3,
            Purpose::Confirm => 4,
            Purpose::ConfirmDownload => 5,
            Purpose::ConfirmErase => 6,
            Purpose::Form => 7,
        }
    }
}

/// What a token says about its recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Claims {
    /// Contact id, below 2^48.
    pub contact: u64,
    pub scope: TokenScope,
    /// The message the link was sent in, if any; 1 to 2^48 - 1.
    pub message: Option<u64>,
}

/// What the token lets the recipient act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenScope {
    AllMarketing,
    /// A topic id, from 1 (0 on the wire means all marketing).
    Topic(u16),
}

impl From<TokenScope> for veto_core::Scope {
    /// What the token lets its holder act on, as the ledger names it.
    fn from(scope: TokenScope) -> Self {
        match scope {
            TokenScope::AllMarketing => veto_core::Scope::All,
            TokenScope::Topic(t) => veto_core::Scope::Topic(veto_core::TopicId(t)),
        }
    }
}

/// A minted token: exactly 40 characters in `[a-z2-7]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not 40 characters of base32; the text says what was wrong.
    #[error("{0}")]
    Malformed(String),
    #[error("token was made with key id {0}, which is not configured (retired or never existed)")]
    UnknownKey(u8),
    #[error(
        "token does not verify: it was altered, or made for another purpose or with another key"
    )]
    BadMac,
    /// A claim that does not fit in a token (raised by `mint`).
    #[error("{what} {value} does not fit in a token (allowed: {allowed})")]
    OutOfRange {
        what: &'static str,
        value: u64,
        allowed: &'static str,
    },
    /// Two configured keys share an id (raised by `TokenKeys::new`).
    #[error("token key id {0} is configured more than once")]
    DuplicateKeyId(u8),
}

/// One token key: an id and the two keys derived from its 32-byte secret.
#[derive(Clone)]
pub struct TokenKey {
    id: u8,
    /// HMAC keyed with mac_key = HMAC-SHA256(secret, "veto token mac").
    mac: HmacSha256,
    /// HMAC keyed with enc_key = HMAC-SHA256(secret, "veto token enc").
    enc: HmacSha256,
}

impl TokenKey {
    pub fn new(id: u8, secret: [u8; 32]) -> Self {
        let mac_key = derive_key(&secret, MAC_KEY_LABEL);
        let enc_key = derive_key(&secret, ENC_KEY_LABEL);
        Self {
            id,
            mac: keyed_hmac(&mac_key),
            enc: keyed_hmac(&enc_key),
        }
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    fn tag(&self, purpose: Purpose, payload: &[u8; PAYLOAD_LEN]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(MAC_CONTEXT);
        mac.update(&[purpose.domain_byte(), self.id]);
        mac.update(payload);
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        tag
    }

    /// XORs `data` with the keystream for `tag`: encrypts and decrypts.
    fn apply_keystream(&self, tag: &[u8; TAG_LEN], data: &mut [u8; PAYLOAD_LEN]) {
        let mut mac = self.enc.clone();
        mac.update(ENC_CONTEXT);
        mac.update(&[self.id]);
        mac.update(tag);
        let stream = mac.finalize().into_bytes();
        for (byte, key) in data.iter_mut().zip(stream.iter()) {
            *byte ^= key;
        }
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn keyed_hmac(key: &[u8]) -> HmacSha256 {
    // RFC 2104 §2: HMAC takes keys of any length (long ones are hashed,
    // short ones padded), so `new_from_slice` cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn derive_key(secret: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = keyed_hmac(secret);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The key ring: the current key mints, every key verifies.
#[derive(Clone)]
pub struct TokenKeys {
    current: TokenKey,
    older: Vec<TokenKey>,
}

impl TokenKeys {
    /// Fails if two keys share an id: a token names its key only by id.
    pub fn new(current: TokenKey, older: Vec<TokenKey>) -> Result<Self, TokenError> {
        for (i, key) in older.iter().enumerate() {
            if key.id == current.id || older[..i].iter().any(|k| k.id == key.id) {
                return Err(TokenError::DuplicateKeyId(key.id));
            }
        }
        Ok(Self { current, older })
    }

    pub fn mint(&self, claims: &Claims, purpose: Purpose) -> Result<Token, TokenError> {
        let key = &self.current;
        let mut payload = encode_claims(claims)?;
        let tag = key.tag(purpose, &payload);
        key.apply_keystream(&tag, &mut payload);

        let mut raw = [0; RAW_LEN];
        raw[0] = key.id;
        raw[PAYLOAD].copy_from_slice(&payload);
        raw[TAG].copy_from_slice(&tag);
        Ok(Token(BASE32_NOPAD.encode(&raw).to_ascii_lowercase()))
    }

    /// Accepts any letter case: some MTAs change the case of local parts.
    pub fn verify(&self, token: &str, purpose: Purpose) -> Result<Claims, TokenError> {
        let raw = decode_token(token)?;
        let key_id = raw[0];
        let key = self.key(key_id).ok_or(TokenError::UnknownKey(key_id))?;

        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&raw[TAG]);
        let mut payload = [0; PAYLOAD_LEN];
        payload.copy_from_slice(&raw[PAYLOAD]);
        key.apply_keystream(&tag, &mut payload);

        if bool::from(key.tag(purpose, &payload).ct_eq(&tag)) {
            Ok(decode_claims(&payload))
        } else {
            Err(TokenError::BadMac)
        }
    }

    fn key(&self, id: u8) -> Option<&TokenKey> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|key| key.id == id)
    }
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let older: Vec<u8> = self.older.iter().map(TokenKey::id).collect();
        f.debug_struct("TokenKeys")
            .field("current", &self.current.id)
            .field("older", &older)
            .finish()
    }
}

fn encode_claims(claims: &Claims) -> Result<[u8; PAYLOAD_LEN], TokenError> {
    if claims.contact > MAX_TOKEN_ID {
        return Err(TokenError::OutOfRange {
            what: "contact id",
            value: claims.contact,
            allowed: "0 to 2^48 - 1",
        });
    }
    let scope = match claims.scope {
        TokenScope::AllMarketing => 0,
        TokenScope::Topic(0) => {
            return Err(TokenError::OutOfRange {
                what: "topic id",
                value: 0,
                allowed: "1 to 65535; use AllMarketing for all marketing",
            });
        }
        TokenScope::Topic(topic) => topic,
    };
    let message = match claims.message {
        None => 0,
        Some(message @ 1..=MAX_TOKEN_ID) => message,
        Some(message) => {
            return Err(TokenError::OutOfRange {
                what: "message ref",
                value: message,
                allowed: "1 to 2^48 - 1; use None for no message",
            });
        }
    };

    let mut payload = [0; PAYLOAD_LEN];
    payload[0..6].copy_from_slice(&claims.contact.to_be_bytes()[2..]);
    payload[6..8].copy_from_slice(&scope.to_be_bytes());
    payload[8..14].copy_from_slice(&message.to_be_bytes()[2..]);
    Ok(payload)
}

fn decode_claims(payload: &[u8; PAYLOAD_LEN]) -> Claims {
    let u48 = |bytes: &[u8]| {
        let mut wide = [0; 8];
        wide[2..].copy_from_slice(bytes);
        u64::from_be_bytes(wide)
    };
    let scope = match u16::from_be_bytes([payload[6], payload[7]]) {
        0 => TokenScope::AllMarketing,
        topic => TokenScope::Topic(topic),
    };
    let message = match u48(&payload[8..14]) {
        0 => None,
        message => Some(message),
    };
    Claims {
        contact: u48(&payload[0..6]),
        scope,
        message,
    }
}

fn decode_token(token: &str) -> Result<[u8; RAW_LEN], TokenError> {
    let len = token.chars().count();
    if len != TOKEN_LEN {
        return Err(TokenError::Malformed(format!(
            "token must be {TOKEN_LEN} characters of base32, got {len}"
        )));
    }
    let is_base32 = |c: char| matches!(c.to_ascii_lowercase(), 'a'..='z' | '2'..='7');
    if let Some((i, c)) = token.chars().enumerate().find(|&(_, c)| !is_base32(c)) {
        return Err(TokenError::Malformed(format!(
            "token must be base32 (letters a-z, digits 2-7), but character {} of {TOKEN_LEN} is {c:?}",
            i + 1
        )));
    }
    // The tokens are lowercase, but BASE32_NOPAD uses RFC 4648's uppercase
    // alphabet; case never matters to the token.
    let bytes = BASE32_NOPAD
        .decode(token.to_ascii_uppercase().as_bytes())
        .map_err(|e| TokenError::Malformed(format!("token is not valid base32: {e}")))?;
    <[u8; RAW_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        TokenError::Malformed(format!(
            "token must decode to {RAW_LEN} bytes, got {}",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    const PURPOSES: [Purpose; 4] = [
        Purpose::Unsubscribe,
        Purpose::Preferences,
        Purpose::Bounce,
        Purpose::Confirm,
    ];

    fn key(id: u8) -> TokenKey {
        TokenKey::new(id, [id.wrapping_mul(37).wrapping_add(11); 32])
    }

    fn keys() -> TokenKeys {
        TokenKeys::new(key(1), vec![]).expect("one key")
    }

    fn claims(contact: u64) -> Claims {
        Claims {
            contact,
            scope: TokenScope::Topic(7),
            message: Some(99),
        }
    }

    fn any_purpose() -> impl Strategy<Value = Purpose> {
        prop::sample::select(PURPOSES.to_vec())
    }

    fn any_claims() -> impl Strategy<Value = Claims> {
        let scope = prop_oneof![
            Just(TokenScope::AllMarketing),
            (1..=u16::MAX).prop_map(TokenScope::Topic),
        ];
        (0..=MAX_TOKEN_ID, scope, prop::option::of(1..=MAX_TOKEN_ID)).prop_map(
            |(contact, scope, message)| Claims {
                contact,
                scope,
                message,
            },
        )
    }

    fn is_token_shaped(token: &str) -> bool {
        token.len() == TOKEN_LEN && token.bytes().all(|b| ALPHABET.contains(&b))
    }

    proptest! {
        #[test]
        fn round_trip_for_any_claims_and_purpose(claims in any_claims(), purpose in any_purpose()) {
            let keys = keys();
            let token = keys.mint(&claims, purpose)?;
            prop_assert!(is_token_shaped(token.as_str()), "{token}");
            prop_assert_eq!(keys.verify(token.as_str(), purpose), Ok(claims));
        }

        #[test]
        fn any_single_changed_character_fails(
            claims in any_claims(),
            purpose in any_purpose(),
            position in 0..TOKEN_LEN,
            shift in 1..ALPHABET.len(),
        ) {
            let keys = keys();
            let token = keys.mint(&claims, purpose)?;
            let mut bytes = token.as_str().as_bytes().to_vec();
            let index = ALPHABET.iter().position(|&b| b == bytes[position]).expect("token is base32");
            bytes[position] = ALPHABET[(index + shift) % ALPHABET.len()];
            let altered = String::from_utf8(bytes).expect("ASCII");
            prop_assert!(keys.verify(&altered, purpose).is_err(), "{altered} verified");
        }

        #[test]
        fn wrong_purpose_fails(claims in any_claims(), minted in any_purpose(), checked in any_purpose()) {
            prop_assume!(minted != checked);
            let keys = keys();
            let token = keys.mint(&claims, minted)?;
            prop_assert_eq!(keys.verify(token.as_str(), checked), Err(TokenError::BadMac));
        }

        #[test]
        fn upper_and_mixed_case_verify(claims in any_claims(), purpose in any_purpose(), mask in any::<u64>()) {
            let keys = keys();
            let token = keys.mint(&claims, purpose)?;
            prop_assert_eq!(keys.verify(&token.as_str().to_ascii_uppercase(), purpose), Ok(claims));
            let mixed: String = token
                .as_str()
                .chars()
                .enumerate()
                .map(|(i, c)| if mask >> i & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect();
            prop_assert_eq!(keys.verify(&mixed, purpose), Ok(claims));
        }

        #[test]
        fn arbitrary_text_is_an_error_not_a_panic(text in any::<String>(), purpose in any_purpose()) {
            prop_assert!(keys().verify(&text, purpose).is_err());
        }

        #[test]
        fn arbitrary_base32_does_not_verify(text in "[a-z2-7]{40}", purpose in any_purpose()) {
            prop_assert!(keys().verify(&text, purpose).is_err());
        }

        #[test]
        fn neighbouring_contacts_look_unrelated(contact in 0..MAX_TOKEN_ID, purpose in any_purpose()) {
            let keys = keys();
            let a = keys.mint(&claims(contact), purpose)?;
            let b = keys.mint(&claims(contact + 1), purpose)?;
            let differing = a.as_str().bytes().zip(b.as_str().bytes()).filter(|(x, y)| x != y).count();
            // Only the first character (the key id) is shared by design;
            // ~37 of the other 39 should differ.
            prop_assert!(differing > 20, "{a} and {b} differ in only {differing} characters");
        }
    }

    #[test]
    fn matches_reference_vectors() {
        // Computed independently from the format description with Python's
        // hmac and base64 modules; pins the wire format.
        let keys = TokenKeys::new(
            TokenKey::new(1, std::array::from_fn(|i| i as u8)),
            vec![TokenKey::new(200, [0xab; 32])],
        )
        .expect("distinct ids");
        let first = Claims {
            contact: 42,
            scope: TokenScope::Topic(7),
            message: Some(1_234_567_890),
        };
        let token = keys.mint(&first, Purpose::Unsubscribe).expect("in range");
        assert_eq!(token.as_str(), "ahr5pdvzyyvmq556f763aqunnep2bh2nztn2xn7w");

        let second = Claims {
            contact: MAX_TOKEN_ID,
            scope: TokenScope::AllMarketing,
            message: None,
        };
        assert_eq!(
            keys.verify("zcprkpaxmcdkvxnqakcdfu462ux6ydi46m36vu3k", Purpose::Bounce),
            Ok(second)
        );
    }

    #[test]
    fn every_single_character_change_fails() {
        let keys = keys();
        let token = keys
            .mint(&claims(5), Purpose::Unsubscribe)
            .expect("in range");
        for position in 0..TOKEN_LEN {
            for &replacement in ALPHABET {
                let mut bytes = token.as_str().as_bytes().to_vec();
                if bytes[position] == replacement {
                    continue;
                }
                bytes[position] = replacement;
                let altered = String::from_utf8(bytes).expect("ASCII");
                assert!(
                    keys.verify(&altered, Purpose::Unsubscribe).is_err(),
                    "{altered} verified"
                );
            }
        }
    }

    #[test]
    fn old_key_still_verifies_after_rotation() {
        let before = keys();
        let token = before
            .mint(&claims(5), Purpose::Unsubscribe)
            .expect("in range");

        let after = TokenKeys::new(key(2), vec![key(1)]).expect("distinct ids");
        assert_eq!(
            after.verify(token.as_str(), Purpose::Unsubscribe),
            Ok(claims(5))
        );
        let fresh = after
            .mint(&claims(5), Purpose::Unsubscribe)
            .expect("in range");
        assert_ne!(fresh, token, "new tokens use the new current key");
        assert_eq!(
            before.verify(fresh.as_str(), Purpose::Unsubscribe),
            Err(TokenError::UnknownKey(2))
        );
    }

    #[test]
    fn retired_key_is_unknown() {
        let token = keys()
            .mint(&claims(5), Purpose::Preferences)
            .expect("in range");
        let retired = TokenKeys::new(key(2), vec![]).expect("one key");
        assert_eq!(
            retired.verify(token.as_str(), Purpose::Preferences),
            Err(TokenError::UnknownKey(1))
        );
    }

    #[test]
    fn same_id_with_another_secret_fails() {
        let token = keys()
            .mint(&claims(5), Purpose::Unsubscribe)
            .expect("in range");
        let impostor = TokenKeys::new(TokenKey::new(1, [0; 32]), vec![]).expect("one key");
        assert_eq!(
            impostor.verify(token.as_str(), Purpose::Unsubscribe),
            Err(TokenError::BadMac)
        );
    }

    #[test]
    fn duplicate_key_ids_are_refused() {
        assert_eq!(
            TokenKeys::new(key(1), vec![key(2), key(1)]).map(|_| ()),
            Err(TokenError::DuplicateKeyId(1))
        );
        assert_eq!(
            TokenKeys::new(key(1), vec![key(2), key(3), key(2)]).map(|_| ()),
            Err(TokenError::DuplicateKeyId(2))
        );
    }

    #[test]
    fn wrong_length_says_so() {
        let keys = keys();
        let token = keys
            .mint(&claims(5), Purpose::Unsubscribe)
            .expect("in range");
        for text in ["", "abc", &token.as_str()[..39], &format!("{token}a")] {
            let err = keys
                .verify(text, Purpose::Unsubscribe)
                .expect_err("wrong length");
            let len = text.len();
            assert_eq!(
                err.to_string(),
                format!("token must be 40 characters of base32, got {len}")
            );
        }
    }

    #[test]
    fn non_base32_characters_are_errors() {
        let keys = keys();
        let token = keys
            .mint(&claims(5), Purpose::Unsubscribe)
            .expect("in range");
        for bad in ['0', '1', '8', '9', '=', '-', '+', ' ', 'é', '\u{0}'] {
            let text: String = token
                .as_str()
                .chars()
                .enumerate()
                .map(|(i, c)| if i == 9 { bad } else { c })
                .collect();
            let err = keys
                .verify(&text, Purpose::Unsubscribe)
                .expect_err("not base32");
            assert!(matches!(err, TokenError::Malformed(_)), "{err:?}");
            assert!(
                err.to_string().contains("character 10 of 40"),
                "{err} for {bad:?}"
            );
        }
    }

    #[test]
    fn out_of_range_claims_are_refused() {
        let keys = keys();
        let too_big = MAX_TOKEN_ID + 1;
        let cases = [
            (
                Claims {
                    contact: too_big,
                    ..claims(1)
                },
                "contact id",
            ),
            (
                Claims {
                    message: Some(too_big),
                    ..claims(1)
                },
                "message ref",
            ),
            (
                Claims {
                    message: Some(0),
                    ..claims(1)
                },
                "message ref",
            ),
            (
                Claims {
                    scope: TokenScope::Topic(0),
                    ..claims(1)
                },
                "topic id",
            ),
        ];
        for (claims, field) in cases {
            match keys.mint(&claims, Purpose::Unsubscribe) {
                Err(TokenError::OutOfRange { what, .. }) => assert_eq!(what, field),
                other => panic!("{claims:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = key(3);
        assert_eq!(format!("{key:?}"), "TokenKey { id: 3, .. }");
        let keys = TokenKeys::new(key, vec![self::key(2)]).expect("distinct ids");
        assert_eq!(format!("{keys:?}"), "TokenKeys { current: 3, older: [2] }");
    }
}
