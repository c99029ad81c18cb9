//! The API's one error shape: `{"error": {"code", "message", "field"}}`.
//! Client errors say what was wrong and where; server errors say only that
//! it was our side, and log the cause.

use axum::http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::WebError;

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// RFC 6750 §3: the `WWW-Authenticate` challenge of a 401.
    challenge: Option<HeaderValue>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            challenge: None,
        }
    }

    /// A field's value was wrong (422).
    pub fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).on(field)
    }

    /// Names the field the error is about.
    pub fn on(mut self, field: &str) -> ApiError {
        self.field = Some(field.to_owned());
        self
    }

    /// What a person should read about a refusal: the message of a client
    /// error (4xx); `None` when the failure was on our side.
    pub fn client_message(&self) -> Option<&str> {
        self.status
            .is_client_error()
            .then_some(self.message.as_str())
    }

    pub fn unauthorized(error: Option<&'static str>, message: &str) -> ApiError {
        let challenge = match error {
            None => HeaderValue::from_static("Bearer realm=\"veto\""),
            Some("invalid_token") => {
                HeaderValue::from_static("Bearer realm=\"veto\", error=\"invalid_token\"")
            }
            Some(_) => HeaderValue::from_static("Bearer realm=\"veto\", error=\"invalid_request\""),
        };
        ApiError {
            challenge: Some(challenge),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    pub fn forbidden(message: String) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(code: &'static str, field: Option<&str>, message: String) -> ApiError {
        let e = ApiError::new(StatusCode::CONFLICT, code, message);
        match field {
            Some(f) => e.on(f),
            None => e,
        }
    }

    /// Our side failed: a generic answer; the cause goes to the log only.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; nothing was recorded",
        )
    }

    /// The store (or the mail that depends on it) is unavailable: retrying is safe.
    pub fn unavailable(cause: &dyn std::fmt::Debug) -> ApiError {
        tracing::error!(error = ?cause, "API request failed: store unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is unavailable just now; nothing was recorded, please retry in a minute",
        )
    }
}

impl From<WebError> for ApiError {
    fn from(e: WebError) -> ApiError {
        match e {
            WebError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            WebError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
            WebError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            WebError::TooManyRequests => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many requests; try again in a minute",
            ),
            WebError::Store(e) => ApiError::unavailable(&e),
            WebError::Internal(e) => ApiError::internal(&e),
        }
    }
}

impl From<veto_store::StoreError> for ApiError {
    fn from(e: veto_store::StoreError) -> ApiError {
        match e {
            // The store's own checks of what it was given: the caller's to fix.
            veto_store::StoreError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
            }
            veto_store::StoreError::NotFound(m) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{m} not found"))
            }
            other => ApiError::from(WebError::Store(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            res.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        match self.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("60"));
            }
            _ => {}
        }
        res
    }
}

/// `/api/v1/<anything else>`.
pub(crate) async fn no_such_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "there is no endpoint {method} {}; the endpoints are described at /api/v1/openapi.json",
            uri.path()
        ),
    )
}

/// Errors that axum answers itself (405, 413, …) become the JSON shape too,
/// keeping their headers (`Allow`).
pub(crate) async fn json_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take that method (see the Allow header)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is too large"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        s if s.is_server_error() => ("internal", "something went wrong on our side"),
        _ => (
            "bad_request",
            status.canonical_reason().unwrap_or("bad request"),
        ),
    };
    let (mut parts, _) = res.into_parts();
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [ALLOW, WWW_AUTHENTICATE, RETRY_AFTER] {
        if let Some(v) = parts.headers.remove(&name) {
            out.headers_mut().insert(name, v);
        }
    }
    out
}
