//! Feedback from mail providers (DESIGN.md, "feedback"): Amazon SES through
//! SNS, SendGrid's event webhook and Postmark's bounce and spam-complaint
//! webhooks become the same ledger events as a DSN or an ARF report to the
//! gateway: a hard bounce, or a complaint, which stop marketing by email.
//!
//! Each receiver authenticates in its provider's own way (SNS: the message's
//! signature and its certificate; SendGrid: an ECDSA signature over the
//! timestamp and the body; Postmark: HTTP Basic credentials) and is off
//! (404) until configured. One provider event is recorded once, by its id,
//! in one transaction with the events it leads to: a retry answers 200 and
//! records nothing. Bad input gets a 4xx naming the field; only our own
//! failures (the store) get a 5xx, and then nothing was written.

mod postmark;
mod sendgrid;
mod sns;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use veto_core::{EmailAddress, Timestamp};
use veto_store::{
    InboundOutcome, Provider, ProviderEvent, ProviderFeedback, ProviderOutcome, ProviderRecipient,
    SoftBounceLimit,
};

use crate::AppState;

pub use postmark::PostmarkSettings;
pub use sendgrid::{SendGridKeyError, SendGridSettings};
pub use sns::{CertificateHost, SesSettings, SnsSetupError, Trust};

/// The receivers that are on, and how soft bounces count.
#[derive(Default)]
pub struct Webhooks {
    /// `[gateway] soft_bounce_threshold` and `soft_bounce_window`: provider
    /// soft bounces count with the gateway's.
    pub soft_bounces: SoftBounceLimit,
    pub(crate) ses: Option<sns::SesReceiver>,
    pub(crate) sendgrid: Option<SendGridSettings>,
    pub(crate) postmark: Option<PostmarkSettings>,
}

impl Webhooks {
    /// All receivers off (each answers 404).
    pub fn new(soft_bounces: SoftBounceLimit) -> Webhooks {
        Webhooks {
            soft_bounces,
            ..Webhooks::default()
        }
    }

    /// Turns on `POST /webhooks/ses`: loads the trust and builds the HTTPS
    /// client that fetches signing certificates.
    pub fn with_ses(mut self, settings: SesSettings) -> Result<Webhooks, SnsSetupError> {
        self.ses = Some(sns::SesReceiver::new(settings)?);
        Ok(self)
    }

    /// Turns on `POST /webhooks/sendgrid`.
    pub fn with_sendgrid(mut self, settings: SendGridSettings) -> Webhooks {
        self.sendgrid = Some(settings);
        self
    }

    /// Turns on `POST /webhooks/postmark`.
    pub fn with_postmark(mut self, settings: PostmarkSettings) -> Webhooks {
        self.postmark = Some(settings);
        self
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/ses", post(sns::receive))
        .route("/webhooks/sendgrid", post(sendgrid::receive))
        .route("/webhooks/postmark", post(postmark::receive))
}

/// A webhook's error: JSON like the API's, `{"error": {code, message, field}}`.
#[derive(Debug)]
pub(crate) struct HookError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    challenge: Option<&'static str>,
}

impl HookError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HookError {
        HookError {
            status,
            code,
            message: message.into(),
            field: None,
            challenge: None,
        }
    }

    /// The receiver is not configured.
    fn off(provider: &str) -> HookError {
        HookError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the {provider} webhook is not enabled"),
        )
    }

    /// A field is missing or wrong (400), named by its path in the payload.
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> HookError {
        let field = field.into();
        HookError {
            message: format!("{field}: {}", message.into()),
            field: Some(field),
            ..HookError::new(StatusCode::BAD_REQUEST, "invalid_payload", "")
        }
    }

    /// The body is not what the provider sends at all (400).
    fn malformed(message: impl Into<String>) -> HookError {
        HookError::new(StatusCode::BAD_REQUEST, "invalid_payload", message)
    }

    /// The signature or the credentials do not check out (403).
    fn forbidden(message: impl Into<String>) -> HookError {
        HookError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// Something we depend on failed; the provider should try again (503).
    fn unavailable(message: impl Into<String>) -> HookError {
        HookError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl From<veto_store::StoreError> for HookError {
    fn from(e: veto_store::StoreError) -> HookError {
        tracing::error!(error = ?e, "store error in a feedback webhook");
        // Nothing was committed: a retry is safe and records it once.
        HookError::unavailable("the store is unavailable; nothing was recorded, try again")
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for HookError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut res = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        res
    }
}

/// What a webhook call did, as its 200 answer says.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    /// Ledger events written (hard bounces, complaints, soft bounces that
    /// reached the threshold).
    recorded: u32,
    /// Soft bounces counted towards the threshold, no event yet.
    soft_bounces_counted: u32,
    /// Events seen before (by their id): nothing new.
    duplicates: u32,
    /// Addresses veto does not know (or erased): nothing to stop.
    unknown_addresses: u32,
    /// Refused by the ledger (kept as evidence only).
    refused: u32,
    /// Event types that mean nothing for consent (deliveries, opens, ...).
    ignored: u32,
}

impl Summary {
    fn add(&mut self, provider: Provider, event_id: &str, outcome: ProviderOutcome) {
        let outcomes = match outcome {
            ProviderOutcome::Duplicate => {
                self.duplicates += 1;
                return;
            }
            ProviderOutcome::Recorded(outcomes) => outcomes,
        };
        for outcome in outcomes {
            match outcome {
                InboundOutcome::Recorded { .. } => self.recorded += 1,
                InboundOutcome::SoftBounceCounted { .. } => self.soft_bounces_counted += 1,
                InboundOutcome::Duplicate => self.duplicates += 1,
                InboundOutcome::NoContact => {
                    tracing::info!(
                        provider = provider.name(),
                        event_id,
                        "provider feedback for an address veto does not know; ignored"
                    );
                    self.unknown_addresses += 1;
                }
                InboundOutcome::Refused(refusal) => {
                    tracing::warn!(
                        provider = provider.name(),
                        event_id,
                        ?refusal,
                        "the ledger refused provider feedback"
                    );
                    self.refused += 1;
                }
            }
        }
    }
}

/// One recipient of a provider event, checked.
pub(crate) fn recipient(
    field: &str,
    address: &str,
    feedback: ProviderFeedback,
) -> Result<ProviderRecipient, HookError> {
    let email = EmailAddress::parse(address)
        .map_err(|e| HookError::field(field, format!("not an email address: {e}")))?;
    Ok(ProviderRecipient {
        email,
        feedback,
        status: None,
        diagnostic: None,
        message_id: None,
        feedback_type: None,
    })
}

/// A provider event with its recipients, ready to record.
pub(crate) fn event(
    provider: Provider,
    event_id: String,
    event_type: &str,
    peer: Option<IpAddr>,
    recipients: Vec<ProviderRecipient>,
) -> ProviderEvent {
    ProviderEvent {
        provider,
        event_id,
        event_type: event_type.to_owned(),
        received_at: Timestamp::now(),
        peer_ip: peer.map(|p| p.to_string()),
        recipients,
    }
}

/// Records checked events, each once, and says what happened. Every event
/// was checked before the first is written, so bad input writes nothing.
pub(crate) async fn record(
    state: &AppState,
    hooks: &Webhooks,
    events: Vec<ProviderEvent>,
    ignored: u32,
) -> Result<Json<Summary>, HookError> {
    let mut summary = Summary {
        ignored,
        ..Summary::default()
    };
    for event in events {
        let (provider, id) = (event.provider, event.event_id.clone());
        let outcome = state
            .store()
            .record_provider_event(event, hooks.soft_bounces)
            .await?;
        summary.add(provider, &id, outcome);
    }
    Ok(Json(summary))
}

/// The provider's address, as evidence (through a trusted proxy's
/// `X-Forwarded-For`, as for people).
pub(crate) fn peer(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Option<IpAddr> {
    Some(crate::client::client_ip(
        peer,
        headers,
        &state.settings().trusted_proxies,
    ))
}

/// The configured receivers, if the state has any.
pub(crate) fn hooks(state: &AppState) -> Option<&Arc<Webhooks>> {
    state.webhooks()
}

/// A string field of a JSON object: missing or not a string is an error
/// naming `path`.
pub(crate) fn str_field<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, HookError> {
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(HookError::field(path, "must be a string")),
        None => Err(HookError::field(path, "is missing")),
    }
}

/// An optional string field; present but not a string is an error.
pub(crate) fn opt_str<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, HookError> {
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Null) | None => Ok(None),
        Some(_) => Err(HookError::field(path, "must be a string")),
    }
}

/// A JSON object, or an error naming `path`.
pub(crate) fn object<'a>(
    value: &'a serde_json::Value,
    path: &str,
) -> Result<&'a serde_json::Map<String, serde_json::Value>, HookError> {
    value
        .as_object()
        .ok_or_else(|| HookError::field(path, "must be a JSON object"))
}

/// Parses a body as JSON, saying where it is broken.
pub(crate) fn json(body: &[u8]) -> Result<serde_json::Value, HookError> {
    serde_json::from_slice(body).map_err(|e| {
        HookError::malformed(format!(
            "the body is not JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })
}

/// Text for the evidence columns: no control characters, at most 1000
/// characters.
pub(crate) fn evidence_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect()
}
