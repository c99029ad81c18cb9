//! The consent-capture API (`/api/v1`) for the organisation's own sign-up
//! and checkout forms, and the double opt-in confirmation pages it leads to
//! (`/confirm/{token}`).
//!
//! Callers authenticate with a Bearer API key. Every error is JSON:
//! `{"error": {"code", "message", "field"}}`, a 4xx naming what was wrong
//! for bad input, a generic 5xx (the cause logged) for our own failures.
//! No request can re-grant consent after an opt-out: only the person can,
//! on the preference centre or by confirming a signup.

mod approvals;
mod confirm;
mod consents;
mod error;
mod fields;
mod signups;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, post};
use veto_core::Role;
use veto_store::ApiKey;

use crate::AppState;
pub(crate) use error::ApiError;

/// The API under `/api/v1` and the confirmation pages.
pub(crate) fn routes() -> Router<AppState> {
    let v1 = Router::new()
        .route("/consents", post(consents::record))
        .route("/purchases", post(consents::purchase))
        .route("/signups", post(signups::request))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", post(approvals::approve))
        .fallback(error::no_such_endpoint)
        .layer(axum::middleware::map_response(error::json_errors));
    Router::new().nest("/api/v1", v1).route(
        "/confirm/{token}",
        get(confirm::page).post(confirm::confirm),
    )
}

/// The API key a request came with (RFC 6750 Bearer).
pub(crate) struct Caller(ApiKey);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                None,
                "send an API key as `Authorization: Bearer <key>` (create one with `veto keys create`)",
            ));
        };
        let plain = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .filter(|key| !key.is_empty());
        let Some(plain) = plain else {
            return Err(ApiError::unauthorized(
                Some("invalid_request"),
                "the Authorization header must be `Bearer <key>`",
            ));
        };
        match state.store().api_key(plain).await? {
            Some(key) => Ok(Caller(key)),
            None => Err(ApiError::unauthorized(
                Some("invalid_token"),
                "this API key is not valid: it is unknown or was revoked",
            )),
        }
    }
}

/// A caller whose key may record consent, purchases and signups from the
/// organisation's forms: marketing work, so marketer, DPO and admin keys.
/// Checked before the body is read: a viewer key gets 403 whatever it sends.
pub(crate) struct Recorder(Caller);

impl FromRequestParts<AppState> for Recorder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.0.role {
            Role::Marketer | Role::Dpo | Role::Admin => Ok(Recorder(caller)),
            role @ (Role::Viewer | Role::ServiceSender) => Err(ApiError::forbidden(format!(
                "a {role} key may not record consent, purchases or signups; use a marketer, dpo or admin key"
            ))),
        }
    }
}

impl Recorder {
    /// How the ledger names who recorded an event.
    fn actor(&self) -> String {
        format!("api-key:{}", self.0.0.prefix)
    }
}
