//! The consent-capture API (`/api/v1`) for the organisation's own sign-up
//! and checkout forms, and the double opt-in confirmation pages it leads to
//! (`/confirm/{token}`).
//!
//! Callers authenticate with a Bearer API key. Every error is JSON:
//! `{"error": {"code", "message", "field"}}`, a 4xx naming what was wrong
//! for bad input, a generic 5xx (the cause logged) for our own failures.
//! No request can re-grant consent after an opt-out: only the person can,
//! on the preference centre or by confirming a signup.

pub(crate) mod approvals;
pub(crate) mod audit;
mod campaigns;
mod confirm;
mod consents;
pub(crate) mod contacts;
mod decisions;
mod error;
pub(crate) mod fields;
mod idempotency;
pub(crate) mod keys;
mod messages;
mod openapi;
mod page;
mod requests;
pub mod roles;
pub(crate) mod schema;
mod signups;
pub(crate) mod suppressions;
pub(crate) mod topics;
pub(crate) mod webhooks;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{delete, get, post};
use veto_core::Role;
use veto_store::ApiKey;

use crate::AppState;
pub(crate) use error::ApiError;

/// The API under `/api/v1` and the confirmation pages. Every `/api/v1`
/// request but the OpenAPI description passes the role check (the key, then
/// [`roles::TABLE`]), the audit trail and the idempotency layer, in that
/// order, before its handler.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    use axum::middleware::from_fn_with_state;
    let v1 = Router::new()
        .route("/consents", post(consents::record))
        .route("/purchases", post(consents::purchase))
        .route("/signups", post(signups::request))
        .route("/topics", get(topics::list).post(topics::create))
        .route("/topics/{key}", get(topics::show).patch(topics::update))
        .route("/service-types", get(topics::service_types))
        .route("/wordings", get(topics::wordings).post(topics::add_wording))
        .route("/wordings/{id}", get(topics::wording))
        .route("/contacts", get(contacts::search).post(contacts::upsert))
        .route("/contacts/{id}", get(contacts::show))
        .route("/contacts/{id}/timeline", get(contacts::timeline))
        .route("/contacts/{id}/export", get(contacts::export))
        .route("/events", get(contacts::events).post(contacts::append))
        .route("/receipts", get(contacts::receipts))
        .route("/erasures", post(contacts::erase))
        .route("/requests", get(requests::list).post(requests::create))
        .route("/requests/{id}", get(requests::show))
        .route(
            "/requests/{id}/identity-checked",
            post(requests::identity_checked),
        )
        .route("/requests/{id}/extend", post(requests::extend))
        .route("/requests/{id}/answer", post(requests::answer))
        .route(
            "/suppressions",
            get(suppressions::list).post(suppressions::add),
        )
        .route("/suppressions/{id}", delete(suppressions::remove))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", post(approvals::approve))
        .route("/campaigns", get(campaigns::list).post(campaigns::create))
        .route("/campaigns/{id}", get(campaigns::show))
        .route("/campaigns/{id}/preview", post(campaigns::preview))
        .route("/campaigns/{id}/test", post(campaigns::test))
        .route("/campaigns/{id}/{action}", post(campaigns::control))
        .route("/messages", post(messages::send))
        .route("/decisions", post(decisions::decide))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}", delete(keys::revoke))
        .route("/users", get(keys::users).post(keys::add_user))
        .route("/users/{id}", axum::routing::patch(keys::update_user))
        .route("/audit", get(audit::list))
        .route("/audit/verify", post(audit::verify))
        .route("/webhooks/deliveries", get(webhooks::list))
        .route("/webhooks/deliveries/{id}/retry", post(webhooks::retry))
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotency))
        .route_layer(from_fn_with_state(state.clone(), audit::record))
        .route_layer(from_fn_with_state(state.clone(), roles::authorize))
        // Public: tools read it before they have a key.
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(error::no_such_endpoint)
        .layer(axum::middleware::map_response(error::json_errors));
    Router::new().nest("/api/v1", v1).route(
        "/confirm/{token}",
        get(confirm::page).post(confirm::confirm),
    )
}

/// The OpenAPI description, as `GET /api/v1/openapi.json` serves it.
pub fn openapi_json() -> String {
    use utoipa::OpenApi;
    openapi::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_default()
}

/// A path id: a positive whole number; anything else names nothing (404).
pub(crate) fn positive_id(id: &str, what: &str) -> Result<i64, ApiError> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{id:?} names no {what}: {what} ids are positive numbers"),
        )
        .on("id")
    })
}

/// The API key a request came with (RFC 6750 Bearer).
#[derive(Clone)]
pub(crate) struct Caller(ApiKey);

impl Caller {
    /// Checks the `Authorization` header against the store's keys.
    pub(crate) async fn authenticate(
        headers: &HeaderMap,
        state: &AppState,
    ) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(AUTHORIZATION) else {
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

    /// How the ledger and the audit trail name who did it.
    pub(crate) fn actor(&self) -> String {
        format!("api-key:{}", self.0.prefix)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The role check put it there; look it up only when it did not run.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        Caller::authenticate(&parts.headers, state).await
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
        self.0.actor()
    }
}
