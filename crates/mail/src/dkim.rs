//! DKIM signing (RFC 6376) with relaxed/relaxed canonicalisation, RSA-SHA256
//! or Ed25519-SHA256 (RFC 8463), and key generation for `veto dkim keygen`.
//!
//! RFC 8058 §4 needs the signature to cover both List-Unsubscribe fields, so
//! sign the personal copy after [`crate::rewrite`] has written them. Every
//! name in [`SIGNED_HEADERS`] is listed in `h=` whether the message has the
//! field or not, and the fields in [`OVERSIGNED_HEADERS`] are listed once
//! more than they occur: a field of those names added after signing, above
//! or below, breaks the signature (RFC 6376 §8.15).
//!
//! The crypto is aws-lc-rs (through mail-auth's `aws-lc-rs` feature and
//! directly for key generation); ring is not used.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256};
use data_encoding::BASE64;
use mail_auth::common::crypto::{Algorithm, CryptoError, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use sha2::Digest;

/// Header fields the signature covers (`h=`), in this order.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Sender",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// Fields that must not be added after signing, listed once more in `h=`.
pub const OVERSIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Sender",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// Smallest RSA key accepted (RFC 8301 §3.2 wants at least 1024; mailbox
/// providers expect 2048).
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("private key: {0}")]
    Key(String),
    #[error("RSA key is smaller than {MIN_RSA_BITS} bits")]
    WeakKey,
    #[error("RSA keys of {0} bits cannot be generated (choose 2048, 3072 or 4096)")]
    UnsupportedKeySize(usize),
    #[error("invalid {field}: {reason}")]
    InvalidParameter {
        field: &'static str,
        reason: &'static str,
    },
    #[error("message cannot be signed: {0}")]
    Message(&'static str),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The signing algorithm, which follows from the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// `rsa-sha256`
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463)
    Ed25519Sha256,
}

/// Signs messages for one domain and selector. Cheap to share between
/// threads; `Debug` never shows the key.
pub struct Signer {
    signer: DkimSigner<Key, Done>,
    domain: String,
    selector: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("algorithm", &self.algorithm())
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, RSA or
    /// Ed25519) or PKCS#1 (`BEGIN RSA PRIVATE KEY`). RSA keys need at least
    /// [`MIN_RSA_BITS`] bits.
    pub fn from_pem(
        private_key_pem: &str,
        domain: &str,
        selector: &str,
    ) -> Result<Self, DkimError> {
        check_dns_labels("domain", domain)?;
        check_dns_labels("selector", selector)?;
        let key = Key::from_pem(private_key_pem)?;
        let mut headers: Vec<&str> = SIGNED_HEADERS.to_vec();
        headers.extend_from_slice(OVERSIGNED_HEADERS);
        let signer = DkimSigner::from_key(key)
            .domain(domain.to_ascii_lowercase())
            .selector(selector.to_ascii_lowercase())
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        Ok(Signer {
            signer,
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_ascii_lowercase(),
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.signer.key {
            Key::Rsa(_) => KeyAlgorithm::RsaSha256,
            Key::Ed25519(_) => KeyAlgorithm::Ed25519Sha256,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// Where the public key is published: `SELECTOR._domainkey.DOMAIN`.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record value for [`Signer::dns_name`].
    pub fn dns_record(&self) -> String {
        self.signer.key.dns_record()
    }

    /// Returns `message` with a `DKIM-Signature` field prepended.
    ///
    /// The message must be in wire form (CRLF line endings) and have
    /// exactly one From field, which DKIM requires to be signed.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let headers = mail_parser::MessageParser::new()
            .parse_headers(message)
            .ok_or(DkimError::Message("it has no header fields"))?;
        let from_fields = headers
            .headers()
            .iter()
            .filter(|h| h.name == mail_parser::HeaderName::From)
            .count();
        if from_fields != 1 {
            return Err(DkimError::Message(
                "it must have exactly one From field (RFC 5322 §3.6)",
            ));
        }
        let signature = self
            .signer
            .sign(message)
            .map_err(|e| DkimError::Signing(e.to_string()))?;
        let field = signature.to_header();
        let mut out = Vec::with_capacity(field.len() + message.len());
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(message);
        Ok(out)
    }
}

/// A new key pair: the private key as PKCS#8 PEM and the TXT record value
/// to publish at `SELECTOR._domainkey.DOMAIN`. `Debug` hides the private key.
pub struct GeneratedKey {
    pub private_key_pem: String,
    /// `v=DKIM1; k=rsa; p=…` or `v=DKIM1; k=ed25519; p=…`. An RSA value is
    /// longer than 255 bytes, so DNS tools store it as several strings.
    pub dns_record: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("private_key_pem", &"<redacted>")
            .field("dns_record", &self.dns_record)
            .finish()
    }
}

/// Generates an RSA key of 2048, 3072 or 4096 bits.
pub fn generate_rsa(bits: usize) -> Result<GeneratedKey, DkimError> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => return Err(DkimError::UnsupportedKeySize(other)),
    };
    let pair = RsaKeyPair::generate(size).map_err(|e| DkimError::Key(e.to_string()))?;
    let der = AsDer::<Pkcs8V1Der>::as_der(&pair).map_err(|e| DkimError::Key(e.to_string()))?;
    let key = Key::Rsa(pair);
    Ok(GeneratedKey {
        private_key_pem: pem("PRIVATE KEY", der.as_ref()),
        dns_record: key.dns_record(),
    })
}

/// Generates an Ed25519 key (RFC 8463). Not every receiver verifies
/// Ed25519 yet: sign with an RSA key as well.
pub fn generate_ed25519() -> Result<GeneratedKey, DkimError> {
    let pair = Ed25519KeyPair::generate().map_err(|e| DkimError::Key(e.to_string()))?;
    let der = AsDer::<Pkcs8V1Der>::as_der(&pair).map_err(|e| DkimError::Key(e.to_string()))?;
    let key = Key::Ed25519(pair);
    Ok(GeneratedKey {
        private_key_pem: pem("PRIVATE KEY", der.as_ref()),
        dns_record: key.dns_record(),
    })
}

/// A signing key, signing the way RFC 6376 §3.3 and RFC 8463 §3 say.
enum Key {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl Key {
    fn from_pem(pem_text: &str) -> Result<Key, DkimError> {
        let (label, der) = parse_pem(pem_text)?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => Key::Rsa(RsaKeyPair::from_der(&der).map_err(rsa_rejected)?),
            "PRIVATE KEY" => match RsaKeyPair::from_pkcs8(&der) {
                Ok(pair) => Key::Rsa(pair),
                Err(e) if e.description_() == "TooSmall" => return Err(DkimError::WeakKey),
                Err(_) => Key::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(
                    |e| DkimError::Key(format!("neither an RSA nor an Ed25519 key: {e}")),
                )?),
            },
            "ENCRYPTED PRIVATE KEY" => {
                return Err(DkimError::Key(
                    "the key is encrypted; give it without a passphrase".into(),
                ));
            }
            other => {
                return Err(DkimError::Key(format!(
                    "a PEM block labelled {other:?} is not a supported private key"
                )));
            }
        };
        // aws-lc-rs refuses RSA keys under 2048 bits already; this keeps
        // the rule if that ever changes.
        if let Key::Rsa(pair) = &key
            && pair.public_modulus_len() * 8 < MIN_RSA_BITS
        {
            return Err(DkimError::WeakKey);
        }
        Ok(key)
    }

    fn dns_record(&self) -> String {
        match self {
            // p= is the DER SubjectPublicKeyInfo, as `openssl rsa -pubout` writes it.
            Key::Rsa(pair) => {
                let spki = pair
                    .public_key()
                    .as_der()
                    .map(|der| BASE64.encode(der.as_ref()))
                    .unwrap_or_default();
                format!("v=DKIM1; k=rsa; p={spki}")
            }
            // RFC 8463 §4.2: the raw 32-byte public key.
            Key::Ed25519(pair) => format!(
                "v=DKIM1; k=ed25519; p={}",
                BASE64.encode(pair.public_key().as_ref())
            ),
        }
    }
}

impl SigningKey for Key {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(1024);
        input.write(&mut data);
        match self {
            Key::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    &data,
                    &mut signature,
                )
                .map_err(|e| mail_auth::Error::Crypto(CryptoError::Library(e.to_string())))?;
                Ok(signature)
            }
            // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data.
            Key::Ed25519(pair) => {
                let digest = sha2::Sha256::digest(&data);
                Ok(pair.sign(&digest).as_ref().to_vec())
            }
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Key::Rsa(_) => Algorithm::RsaSha256,
            Key::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }
}

fn rsa_rejected(e: aws_lc_rs::error::KeyRejected) -> DkimError {
    if e.description_() == "TooSmall" {
        DkimError::WeakKey
    } else {
        DkimError::Key(format!("not an RSA key: {e}"))
    }
}

/// The label and contents of the first PEM block in `text`.
fn parse_pem(text: &str) -> Result<(String, Vec<u8>), DkimError> {
    let begin = text
        .find("-----BEGIN ")
        .ok_or_else(|| DkimError::Key("no PEM block (-----BEGIN …-----)".into()))?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| DkimError::Key("unterminated PEM BEGIN line".into()))?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body
        .find(&end_marker)
        .ok_or_else(|| DkimError::Key(format!("no {end_marker} line")))?;
    let body = &body[..body_end];
    if body.contains(':') {
        return Err(DkimError::Key(
            "the key is encrypted (PEM headers); give it without a passphrase".into(),
        ));
    }
    let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = BASE64
        .decode(base64.as_bytes())
        .map_err(|e| DkimError::Key(format!("PEM body is not base64: {e}")))?;
    Ok((label, der))
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Domains and selectors are dot-separated DNS labels (letters, digits,
/// hyphens, underscores), which also keeps `;` and white space out of the
/// signature's tags.
fn check_dns_labels(field: &'static str, value: &str) -> Result<(), DkimError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(DkimError::InvalidParameter {
            field,
            reason: "must be dot-separated DNS labels (letters, digits, '-', '_')",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_describe_their_dns_record() {
        let rsa = generate_rsa(2048).unwrap();
        assert!(
            rsa.private_key_pem
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert!(rsa.dns_record.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
        let signer = Signer::from_pem(&rsa.private_key_pem, "example.org", "veto1").unwrap();
        assert_eq!(signer.algorithm(), KeyAlgorithm::RsaSha256);
        assert_eq!(signer.dns_record(), rsa.dns_record);
        assert_eq!(signer.dns_name(), "veto1._domainkey.example.org");

        let ed = generate_ed25519().unwrap();
        assert!(ed.dns_record.starts_with("v=DKIM1; k=ed25519; p="));
        let signer = Signer::from_pem(&ed.private_key_pem, "example.org", "ed1").unwrap();
        assert_eq!(signer.algorithm(), KeyAlgorithm::Ed25519Sha256);
        assert_eq!(signer.dns_record(), ed.dns_record);
        assert!(!format!("{ed:?}").contains("BEGIN"));
        assert!(!format!("{signer:?}").contains("BEGIN"));
    }

    /// Throwaway test keys written by OpenSSL: a PKCS#1 RSA key that is too
    /// small, and an Ed25519 key in PKCS#8 v1 (no public key inside).
    const OPENSSL_RSA_1024_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----\n\
MIICXgIBAAKBgQDJM9X/fmbn7E3SBEwW0eemT0FPUQGhufkvVfqmv8w7CuKJP1Nu\n\
ha4Gt0Kmx2WlQ1YDJVIsZL/79JPExTqAVY5N8p9qn5NMOMJ+F36NBmSifcEOgUDv\n\
iAk8qlasExZ1wZIOI6EmP3h7XkC91hKnLk54aRegD/IiVn11Xh0uR/BENQIDAQAB\n\
AoGBAJntODigoWWpGNglRXjn2UsYsyRVGuR5fLPEGWBct4gsCadqdQ/G4Z5tsWYa\n\
gh7u5uy9LqKb6Wx+blZJdTodOiH4s9I3eV4vK644Ma01ENTBgwtYZ0LgVwjMC5C3\n\
84C0+fbPzyRTKu9Hm6uZFIaWEqSboKFZALUVzGkS1ySLDFtBAkEA6Eb56kz0sJ4c\n\
WOyfJs4ACT4jtvK30HZkgOmN7doWI0SBD+cvOVEfNXZk7ABuo0cwCg4IqZfrNi73\n\
pjnGHtwGOQJBAN3AZFCG8ZBnd2JGs6mJfi5WOdKDQvEgu1QPCEttSOUGy2QFrLYJ\n\
HtrjzJmkbNWw4yPfxN/5j1/GjqIGEaUeDd0CQESaEd3ddLdlO0IYQLkZRnF0ZN/3\n\
t8pd7TkVwdFqA/fOl7+2q//lsa38lboONp8Ku2l805ojQFj0bjguABHFMiECQQCi\n\
DfXBe7yRgWuXoH+vyFE0X8NF+rMzMG52Eb5IEQeSiBKfeB4tsiCgapWdOrJmwCxe\n\
jSt9Ww3SOnMGKVU/y+TpAkEAiunWxFcSU6Jm6UOJ4ZdmLG15sd16GTzUf6dVPz/i\n\
Mtw941SoSltw0aTncJXbTI+XMA8WIH1DJ/taZFoHJKrZyw==\n\
-----END RSA PRIVATE KEY-----";
    const OPENSSL_ED25519_PKCS8_V1: &str = "-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIPvjguEw2qTYvtuJ83YtnbHsweH2xUWG3msYZziAfu2o\n\
-----END PRIVATE KEY-----";

    #[test]
    fn reads_openssl_keys_and_refuses_small_rsa_keys() {
        assert!(matches!(
            Signer::from_pem(OPENSSL_RSA_1024_PKCS1, "example.org", "s"),
            Err(DkimError::WeakKey)
        ));
        let signer = Signer::from_pem(OPENSSL_ED25519_PKCS8_V1, "example.org", "s").unwrap();
        assert_eq!(signer.algorithm(), KeyAlgorithm::Ed25519Sha256);
        let signed = signer
            .sign(b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n")
            .unwrap();
        assert!(signed.starts_with(b"DKIM-Signature: v=1; a=ed25519-sha256; s=s; d=example.org;"));
    }

    #[test]
    fn signers_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Signer>();
    }

    #[test]
    fn refuses_bad_keys_sizes_and_names() {
        assert!(matches!(
            generate_rsa(1024),
            Err(DkimError::UnsupportedKeySize(1024))
        ));
        assert!(matches!(
            Signer::from_pem("not a key", "example.org", "s"),
            Err(DkimError::Key(_))
        ));
        let ed = generate_ed25519().unwrap();
        assert!(matches!(
            Signer::from_pem(&ed.private_key_pem, "example.org; x=1", "s"),
            Err(DkimError::InvalidParameter {
                field: "domain",
                ..
            })
        ));
    }
}
