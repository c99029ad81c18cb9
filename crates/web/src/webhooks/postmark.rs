//! `POST /webhooks/postmark`: Postmark's Bounce and SpamComplaint webhooks.
//!
//! Postmark does not sign webhooks; its documented protection is HTTP Basic
//! credentials in the webhook URL (`https://user:password@host/webhooks/postmark`),
//! over HTTPS. A request without the configured credentials gets 401.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use data_encoding::BASE64;
use serde_json::Value;
use subtle::ConstantTimeEq;
use veto_store::{Provider, ProviderFeedback};

use super::{HookError, Summary, evidence_text, object, opt_str, str_field};
use crate::AppState;

/// `[feedback.postmark]`, checked: the Basic credentials Postmark sends.
#[derive(Clone)]
pub struct PostmarkSettings {
    username: String,
    password: String,
}

impl std::fmt::Debug for PostmarkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostmarkSettings")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl PostmarkSettings {
    /// Both must be non-empty, and the username must not hold `:`.
    pub fn new(username: &str, password: &str) -> Result<PostmarkSettings, String> {
        if username.is_empty() || password.is_empty() {
            return Err("username and password must both be set".into());
        }
        if username.contains(':') {
            return Err("username must not contain ':' (HTTP Basic)".into());
        }
        Ok(PostmarkSettings {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), HookError> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b64| BASE64.decode(b64.trim().as_bytes()).ok());
        let expected = format!("{}:{}", self.username, self.password);
        match given {
            Some(given) if bool::from(given.ct_eq(expected.as_bytes())) => Ok(()),
            Some(_) => Err(unauthorized("the webhook credentials are wrong")),
            None => Err(unauthorized(
                "HTTP Basic credentials are required (put them in the webhook URL in Postmark)",
            )),
        }
    }
}

fn unauthorized(message: &str) -> HookError {
    HookError {
        challenge: Some("Basic realm=\"veto webhooks\""),
        ..HookError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

pub(super) async fn receive(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Summary>, HookError> {
    let hooks = super::hooks(&state)
        .ok_or_else(|| HookError::off("Postmark"))?
        .clone();
    let settings = hooks
        .postmark
        .as_ref()
        .ok_or_else(|| HookError::off("Postmark"))?;
    settings.check(&headers)?;
    let value = super::json(&body)?;
    let p = object(&value, "(body)")?;
    let record_type = str_field(p, "RecordType", "RecordType")?;
    let feedback = match record_type {
        "SpamComplaint" => Some(ProviderFeedback::Complaint),
        "Bounce" => match str_field(p, "Type", "Type")? {
            "HardBounce" | "BadEmailAddress" => Some(ProviderFeedback::HardBounce),
            // Temporary: counted towards the soft-bounce threshold.
            "SoftBounce" | "Transient" | "DnsError" | "Blocked" => {
                Some(ProviderFeedback::SoftBounce)
            }
            "SpamComplaint" => Some(ProviderFeedback::Complaint),
            // AutoResponder, Unsubscribe (Postmark's own list), ChallengeVerification, ...
            _ => None,
        },
        // Delivery, Open, Click, SubscriptionChange, ...
        _ => None,
    };
    let Some(feedback) = feedback else {
        return super::record(&state, &hooks, Vec::new(), 1).await;
    };
    // Postmark's IDs are 64-bit numbers; taken as text either way.
    let event_id = match p.get("ID") {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => s.clone(),
        Some(_) => return Err(HookError::field("ID", "must be a number")),
        None => return Err(HookError::field("ID", "is missing")),
    };
    let mut r = super::recipient("Email", str_field(p, "Email", "Email")?, feedback)?;
    r.diagnostic = match opt_str(p, "Details", "Details")? {
        Some(d) if !d.is_empty() => Some(evidence_text(d)),
        _ => opt_str(p, "Description", "Description")?.map(evidence_text),
    };
    r.message_id = opt_str(p, "MessageID", "MessageID")?.map(evidence_text);
    r.feedback_type = (feedback == ProviderFeedback::Complaint).then(|| "abuse".to_owned());
    let kind = opt_str(p, "Type", "Type")?.unwrap_or(record_type);
    let event = super::event(
        Provider::Postmark,
        event_id,
        kind,
        super::peer(&state, client, &headers),
        vec![r],
    );
    super::record(&state, &hooks, vec![event], 0).await
}
