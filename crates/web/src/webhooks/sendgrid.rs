//! `POST /webhooks/sendgrid`: SendGrid's signed event webhook.
//!
//! SendGrid signs the timestamp header followed by the raw body with ECDSA
//! P-256 / SHA-256 (`X-Twilio-Email-Event-Webhook-Signature`, base64 DER);
//! the verification key is the one its settings page shows. A timestamp
//! further from now than `max_age` is refused, so a captured request cannot
//! be replayed later (and a replay within it records nothing new anyway).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use data_encoding::BASE64;
use veto_core::Timestamp;
use veto_store::{Provider, ProviderFeedback};

use super::{HookError, Summary, evidence_text, object, opt_str, str_field};
use crate::AppState;

const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

/// The DER prefix of a P-256 public key (SubjectPublicKeyInfo with
/// id-ecPublicKey and prime256v1), before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// `[feedback.sendgrid]`, checked.
#[derive(Clone)]
pub struct SendGridSettings {
    /// The uncompressed P-256 point.
    point: Vec<u8>,
    /// How far the signed timestamp may be from now, either way.
    pub max_age: Duration,
}

impl std::fmt::Debug for SendGridSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendGridSettings")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendGridKeyError(String);

impl SendGridSettings {
    /// `public_key` as SendGrid shows it: base64 of the DER public key
    /// (`MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE…`), or the same as PEM.
    pub fn new(public_key: &str, max_age: Duration) -> Result<SendGridSettings, SendGridKeyError> {
        let text: String = public_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = BASE64.decode(text.as_bytes()).map_err(|e| {
            SendGridKeyError(format!(
                "is not base64 (the key from SendGrid's settings page): {e}"
            ))
        })?;
        let point = der
            .strip_prefix(&P256_SPKI_PREFIX[..])
            .filter(|p| p.len() == 65 && p[0] == 4)
            .ok_or_else(|| SendGridKeyError("is not an ECDSA P-256 public key".into()))?;
        // Refuses a point that is not on the curve, now rather than per request.
        aws_lc_rs::signature::ParsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            point,
        )
        .map_err(|_| SendGridKeyError("is not a valid P-256 public key".into()))?;
        Ok(SendGridSettings {
            point: point.to_vec(),
            max_age,
        })
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), HookError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| HookError::forbidden(format!("the {name} header is missing")))
        };
        let signature = BASE64
            .decode(header(SIGNATURE)?.as_bytes())
            .map_err(|_| HookError::forbidden(format!("the {SIGNATURE} header is not base64")))?;
        let timestamp = header(TIMESTAMP)?;
        let seconds: i64 = timestamp.parse().map_err(|_| {
            HookError::forbidden(format!("the {TIMESTAMP} header is not a number of seconds"))
        })?;
        let now = Timestamp::now().as_second();
        let max_age = i64::try_from(self.max_age.as_secs()).unwrap_or(i64::MAX);
        if now.abs_diff(seconds) > max_age.unsigned_abs() {
            return Err(HookError::forbidden(format!(
                "the signed timestamp is {}s from now; more than [feedback.sendgrid] max_age",
                now.saturating_sub(seconds)
            )));
        }
        let mut signed = Vec::with_capacity(timestamp.len() + body.len());
        signed.extend_from_slice(timestamp.as_bytes());
        signed.extend_from_slice(body);
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            &self.point,
        )
        .verify(&signed, &signature)
        .map_err(|_| HookError::forbidden("the event webhook signature does not verify"))
    }
}

pub(super) async fn receive(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Summary>, HookError> {
    let hooks = super::hooks(&state)
        .ok_or_else(|| HookError::off("SendGrid"))?
        .clone();
    let settings = hooks
        .sendgrid
        .as_ref()
        .ok_or_else(|| HookError::off("SendGrid"))?;
    settings.verify(&headers, &body)?;
    let value = super::json(&body)?;
    let items = value
        .as_array()
        .ok_or_else(|| HookError::field("(body)", "must be a JSON array of events"))?;
    let peer = super::peer(&state, client, &headers);
    let mut events = Vec::new();
    let mut ignored = 0;
    for (i, item) in items.iter().enumerate() {
        let at = format!("[{i}]");
        let e = object(item, &at)?;
        let kind = str_field(e, "event", &format!("{at}.event"))?;
        let reason = opt_str(e, "reason", &format!("{at}.reason"))?;
        let feedback = match kind {
            // type "blocked": refused for now (reputation, content), not
            // for good; counted like a soft bounce.
            "bounce" => match opt_str(e, "type", &format!("{at}.type"))? {
                Some("blocked") => ProviderFeedback::SoftBounce,
                _ => ProviderFeedback::HardBounce,
            },
            "spamreport" => ProviderFeedback::Complaint,
            // Dropped because of an earlier bounce or complaint that veto may
            // not have seen (SendGrid's own suppression lists).
            "dropped" => match reason {
                Some("Bounced Address") => ProviderFeedback::HardBounce,
                Some("Spam Reporting Address") => ProviderFeedback::Complaint,
                _ => {
                    ignored += 1;
                    continue;
                }
            },
            _ => {
                ignored += 1;
                continue;
            }
        };
        let id_field = format!("{at}.sg_event_id");
        let event_id = str_field(e, "sg_event_id", &id_field)?;
        if event_id.is_empty() || event_id.len() > 200 {
            return Err(HookError::field(id_field, "must be 1 to 200 characters"));
        }
        let email_field = format!("{at}.email");
        let mut r = super::recipient(&email_field, str_field(e, "email", &email_field)?, feedback)?;
        r.status = opt_str(e, "status", &format!("{at}.status"))?.map(evidence_text);
        r.diagnostic = reason.map(evidence_text);
        r.message_id =
            opt_str(e, "sg_message_id", &format!("{at}.sg_message_id"))?.map(evidence_text);
        events.push(super::event(
            Provider::SendGrid,
            event_id.to_owned(),
            kind,
            peer,
            vec![r],
        ));
    }
    super::record(&state, &hooks, events, ignored).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_p256_public_keys() {
        // SendGrid's documentation example key.
        let key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
        SendGridSettings::new(key, Duration::from_secs(600)).unwrap();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &key[..64],
            &key[64..]
        );
        SendGridSettings::new(&pem, Duration::from_secs(600)).unwrap();
        assert!(SendGridSettings::new("not base64!", Duration::from_secs(1)).is_err());
        assert!(SendGridSettings::new("MFkwEwYHKoZIzj0CAQ==", Duration::from_secs(1)).is_err());
    }
}
