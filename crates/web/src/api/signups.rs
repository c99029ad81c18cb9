//! `POST /api/v1/signups`: double opt-in. The signup is stored, and the
//! person gets one email with a confirmation link; only their confirmation
//! (see `confirm.rs`) records consent.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use veto_core::{Channel, EmailAddress, Fact, Say, Scope, Timestamp, Topic};
use veto_mail::{Claims, Purpose, TokenScope};
use veto_sender::Sent;
use veto_store::{GuardClass, NewSignup, SignupRequested};

use super::fields::{FormEvidence, JsonBody};
use super::{ApiError, Recorder};
use crate::AppState;

const SIGNUP_FIELDS: &[&str] = &["email", "topic", "wording", "ip", "user_agent", "form_url"];

/// At most one confirmation email per address in this time, however many
/// signups arrive: a form cannot be used to flood someone's inbox.
const QUIET: Duration = Duration::from_secs(24 * 60 * 60);

/// How receipts name the confirmation email.
const CLASS: &str = "signup-confirmation";

/// Double opt-in: mails the person a confirmation link; only their
/// confirmation records consent.
#[utoipa::path(post, path = "/api/v1/signups", tag = "consent capture", request_body = super::schema::SignupIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 202, body = super::schema::SignupStatus, description = "the confirmation was sent (or was sent within the last day)"),
        (status = 200, body = super::schema::SignupStatus, description = "already subscribed: nothing sent"),
        (status = "4XX", body = super::schema::ErrorBody), (status = 503, body = super::schema::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn request(
    State(state): State<AppState>,
    _caller: Recorder,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    body.only(SIGNUP_FIELDS)?;
    let email = body.email()?;
    let topic = body.topic(&state).await?;
    let wording = body
        .required_wording(
            &state,
            "the id of the exact consent text the form showed, which the person confirms",
        )
        .await?;
    let FormEvidence {
        ip,
        user_agent,
        form_url,
    } = body.evidence()?;
    let mailer = state.mailer().map_err(|e| ApiError::unavailable(&e))?;

    // Nothing to confirm: the person already agreed. Asking again would
    // be a re-permission email; recording nothing keeps what they said.
    if already_subscribed(&state, &email, topic.as_ref()).await? {
        return Ok(status(StatusCode::OK, "already_subscribed"));
    }
    let signup = NewSignup {
        email: email.clone(),
        topic: topic.as_ref().map(|t| t.id),
        wording,
        ip,
        user_agent,
        form_url,
    };
    let id = match state
        .store()
        .create_signup(signup, Timestamp::now(), QUIET)
        .await?
    {
        SignupRequested::RecentlyMailed { .. } => {
            return Ok(status(StatusCode::ACCEPTED, "confirmation_already_sent"));
        }
        SignupRequested::Created { id } => id,
    };
    let sent = match confirmation(&state, id, topic.as_ref()) {
        Ok((subject, text)) => mailer
            .send_text(&email, GuardClass::Requested(CLASS), &subject, &text)
            .await
            .map_err(|e| match e {
                veto_sender::SendError::Store(e) => ApiError::from(e),
                other => ApiError::internal(&other),
            }),
        Err(e) => Err(e),
    };
    match sent {
        Ok(Sent::Delivered { .. }) => Ok(status(StatusCode::ACCEPTED, "confirmation_sent")),
        Ok(Sent::Refused(r)) => {
            cancel(&state, id).await;
            Err(ApiError::invalid(
                "email",
                "undeliverable",
                format!(
                    "no confirmation can be sent to {}: {} ({})",
                    email.masked(),
                    r.reason,
                    r.rule.id()
                ),
            ))
        }
        Err(e) => {
            cancel(&state, id).await;
            Err(e)
        }
    }
}

fn status(code: StatusCode, status: &str) -> (StatusCode, Json<Value>) {
    (code, Json(json!({"status": status})))
}

/// The mail did not go: forget the signup so the address can ask again.
async fn cancel(state: &AppState, id: i64) {
    if let Err(e) = state.store().cancel_signup(id).await {
        tracing::error!(error = ?e, signup = id, "could not cancel an unsent signup");
    }
}

/// Whether the person's current say for the topic (or for all marketing,
/// and every topic) is a grant.
async fn already_subscribed(
    state: &AppState,
    email: &EmailAddress,
    topic: Option<&Topic>,
) -> Result<bool, ApiError> {
    let (_, consent) = state.store().load_state(email, Timestamp::now()).await?;
    let granted = |t| {
        matches!(
            consent.latest_say(Some(t), Channel::Email),
            Some((Say::Granted, _))
        )
    };
    Ok(match topic {
        Some(t) => granted(t.id),
        None => {
            let all = consent.facts.iter().any(|f| {
                matches!(f, Fact::Consent { scope: Scope::All, say: Say::Granted, channel, .. }
                    if channel.is_none_or(|c| c == Channel::Email))
            });
            let topics = state.store().topics().await?;
            all && !topics.is_empty() && topics.iter().all(|t| granted(t.id))
        }
    })
}

/// The confirmation email: subject and text, with the link.
fn confirmation(
    state: &AppState,
    id: i64,
    topic: Option<&Topic>,
) -> Result<(String, String), ApiError> {
    let claims = Claims {
        contact: u64::try_from(id).map_err(|_| ApiError::internal(&format!("signup id {id}")))?,
        scope: topic.map_or(TokenScope::AllMarketing, |t| TokenScope::Topic(t.id.0)),
        message: None,
    };
    let token = state
        .keys()
        .mint(&claims, Purpose::Confirm)
        .map_err(|e| ApiError::internal(&e))?;
    let link = format!(
        "{}/confirm/{token}",
        state.settings().public_url.trim_end_matches('/')
    );
    let org = &state.settings().organisation.name;
    let what = match topic {
        Some(t) => format!("{} emails", t.name),
        None => "marketing emails".to_owned(),
    };
    let subject = match topic {
        Some(t) => format!("Please confirm: {} from {org}", t.name),
        None => format!("Please confirm: emails from {org}"),
    };
    let text = format!(
        "Hello,\n\n\
         Someone, hopefully you, asked to get {what}\n\
         from {org} at this address.\n\n\
         To confirm, open this link and press the button on the page:\n\n\
         {link}\n\n\
         If it wasn't you, you can ignore this email: we won't send\n\
         you marketing unless you confirm.\n\n\
         {org}\n"
    );
    Ok((subject, text))
}
