//! The configuration pages: topics and service types, wordings, API keys,
//! staff users and webhook deliveries. Each does what its `/api/v1`
//! endpoint does, through the same checks and store calls
//! (`crate::api::{topics, keys, webhooks}`), and records the same action
//! in the audit trail.

mod keys;
mod topics;
mod users;
mod webhooks;

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};

use super::{AdminError, Staff, done_with_error};
use crate::AppState;
use crate::api::ApiError;
use crate::api::audit::AuditNote;

pub(in crate::admin) fn routes() -> Router<AppState> {
    Router::new()
        .route("/topics", get(topics::page).post(topics::add))
        .route("/topics/{key}", post(topics::describe))
        .route("/wordings", get(topics::wordings).post(topics::add_wording))
        .route("/keys", get(keys::page).post(keys::create))
        .route(
            "/keys/{id}/revoke",
            get(keys::confirm_revoke).post(keys::revoke),
        )
        .route("/users", get(users::page).post(users::add))
        .route("/users/{id}", post(users::change))
        .route("/webhooks", get(webhooks::page))
        .route("/webhooks/{id}/retry", post(webhooks::retry))
}

/// A refusal by the API's own checks: back to `to` with its message (a
/// client error), or an error page (our side failed).
fn refused(to: &str, e: ApiError) -> Result<Response, AdminError> {
    match e.client_message() {
        Some(m) => Ok(done_with_error(to, sentence(m))),
        None => Err(AdminError::Internal(
            "an API check failed on our side".into(),
        )),
    }
}

/// "password must have…" → "Password must have….".
fn sentence(m: &str) -> String {
    let mut c = m.chars();
    let mut s: String = c
        .next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// Records `note` as this member of staff's action.
async fn record(state: &AppState, staff: &Staff, note: AuditNote) -> Result<(), AdminError> {
    staff
        .record(state, note.action, note.target, note.detail)
        .await
}

/// A form field that says something, or `None` (blank fields are absent).
fn given(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}
