//! `Idempotency-Key` on POSTs: the same key with the same request gets the
//! first answer again (nothing is created twice); the same key with another
//! request is a 422. Keys live in the store, per API key, so they survive
//! restarts and hold across nodes; they are kept for a day.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use veto_store::IdempotencyClaim;

use super::{ApiError, Caller};
use crate::AppState;

pub const HEADER: &str = "idempotency-key";
/// Set on a response that is a replay of the first one.
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY: usize = 255;
/// Bodies larger than this are not taken anyway.
const MAX_BODY: usize = 2 * 1024 * 1024;

fn bad_key(message: &str) -> Response {
    ApiError::invalid("Idempotency-Key", "invalid_idempotency_key", message).into_response()
}

pub(crate) async fn idempotency(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return bad_key(
                "Idempotency-Key must be 1 to 255 visible ASCII characters, such as a UUID",
            );
        }
    };
    let Some(caller) = req
        .extensions()
        .get::<Caller>()
        .map(|c| format!("key:{}", c.0.id))
    else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large",
            )
            .into_response();
        }
    };
    let fingerprint = request_hash(&parts.method, parts.uri.path(), parts.uri.query(), &bytes);
    let store = state.store();
    match store.claim_idempotency(&caller, &key, &fingerprint).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(IdempotencyClaim::Replay { status, body }) => replay(status, body),
        Ok(IdempotencyClaim::Mismatch) => ApiError::invalid(
            "Idempotency-Key",
            "idempotency_key_reused",
            format!(
                "Idempotency-Key {key:?} was already used for a different request (another path or body); use a new key for a new request"
            ),
        )
        .into_response(),
        Ok(IdempotencyClaim::InProgress) => ApiError::conflict(
            "idempotency_key_in_use",
            Some("Idempotency-Key"),
            format!("a request with Idempotency-Key {key:?} is still being answered; retry in a moment"),
        )
        .into_response(),
        Ok(IdempotencyClaim::New) => {
            let res = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            if !res.status().is_success() {
                // A failed request created nothing: the key may be used again.
                if let Err(e) = store.release_idempotency(&caller, &key).await {
                    tracing::error!(error = ?e, "could not release an idempotency key");
                }
                return res;
            }
            let (parts, body) = res.into_parts();
            let body = match to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => return ApiError::internal(&e).into_response(),
            };
            let text = String::from_utf8_lossy(&body);
            if let Err(e) = store
                .complete_idempotency(&caller, &key, parts.status.as_u16(), &text)
                .await
            {
                // The work is done and answered; only a replay is lost.
                tracing::error!(error = ?e, "could not store an idempotent answer");
            }
            Response::from_parts(parts, Body::from(body))
        }
    }
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut res = (status, Bytes::from(body)).into_response();
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        HeaderName::from_static(REPLAYED),
        HeaderValue::from_static("true"),
    );
    res
}

fn request_hash(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        path.as_bytes(),
        query.unwrap_or("").as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(body);
    h.finalize().to_vec()
}
