//! One error type for the web side: client errors say what was wrong, server
//! errors give a generic page and log the cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("too many requests; try again in a minute")]
    TooManyRequests,
    #[error("the store is unavailable")]
    Store(#[from] veto_store::StoreError),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, text) = match &self {
            WebError::NotFound => (
                StatusCode::NOT_FOUND,
                "This link is not valid. If you copied it from an email, check that all of it was copied.".to_owned(),
            ),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            WebError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, self.to_string()),
            WebError::Store(e) => {
                tracing::error!(error = ?e, "store error");
                // Temporarily unavailable: nothing was done, retrying is safe.
                (StatusCode::SERVICE_UNAVAILABLE, "Sorry, we could not do that just now. Nothing was changed; please try again in a minute.".to_owned())
            }
            WebError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "Sorry, something went wrong on our side. Nothing was changed.".to_owned())
            }
        };
        let mut res = (status, format!("{text}\n")).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("60"),
            );
        }
        res
    }
}
