//! The webhook outbox as staff see it: what is waiting, failing or
//! delivered to the organisation's other systems, and a retry for a
//! delivery that failed (or was refused with 410) once the receiver is
//! fixed. A retry is a staff action, recorded in the audit trail.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use veto_core::Timestamp;
use veto_store::{RetryOutcome, WebhookDelivery, WebhookStatus};

use super::audit::{AuditNote, Audited, note};
use super::page::{ApiQuery, Paging};
use super::schema::ErrorBody;
use super::{ApiError, positive_id};
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveryQuery {
    /// Only deliveries in this status.
    #[param(value_type = Option<String>, pattern = "^(pending|delivered|failed|gone)$")]
    status: Option<String>,
    /// How many (1 to 500, default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One event for one endpoint.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookDeliveryOut {
    id: i64,
    /// The ledger event (the `Veto-Event-Id` header).
    event_id: i64,
    contact_id: i64,
    endpoint: String,
    /// The event kind: withdraw, object, grant, erasure, hard_bounce, …
    kind: String,
    /// pending, delivered, failed (retries ran out) or gone (the receiver answered 410).
    #[schema(pattern = "^(pending|delivered|failed|gone)$")]
    status: String,
    attempts: i64,
    #[schema(format = DateTime)]
    created_at: String,
    /// When a pending delivery is tried next.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    last_attempt_at: Option<String>,
    /// The HTTP status of the last attempt, if there was an answer.
    last_status: Option<u16>,
    last_error: Option<String>,
    #[schema(format = DateTime)]
    delivered_at: Option<String>,
    /// The body as sent (without the address once the person is erased).
    #[schema(value_type = Object)]
    payload: Value,
}

impl From<WebhookDelivery> for WebhookDeliveryOut {
    fn from(d: WebhookDelivery) -> Self {
        let pending = d.status == WebhookStatus::Pending;
        WebhookDeliveryOut {
            id: d.id,
            event_id: d.event_id,
            contact_id: d.contact_id,
            endpoint: d.endpoint,
            kind: d.kind,
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            created_at: d.created_at.to_string(),
            next_attempt_at: pending.then(|| d.next_attempt_at.to_string()),
            last_attempt_at: d.last_attempt_at.map(|t| t.to_string()),
            last_status: d.last_status,
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(|t| t.to_string()),
            payload: serde_json::from_str(&d.payload).unwrap_or(Value::String(d.payload)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookDeliveriesPage {
    deliveries: Vec<WebhookDeliveryOut>,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookRetryResult {
    delivery: WebhookDeliveryOut,
}

/// Webhook deliveries to the organisation's other systems, oldest first:
/// `status=pending` for what is waiting (with the last error of those
/// being retried), `failed` for those whose retries ran out, `gone` for
/// those a receiver refused with 410, `delivered` for recent successes.
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "webhooks", params(DeliveryQuery),
    responses((status = 200, body = WebhookDeliveriesPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<WebhookDeliveriesPage>, ApiError> {
    let paging = Paging::new(q.limit.as_deref(), q.cursor.as_deref())?;
    let status = delivery_status(q.status.as_deref())?;
    let rows = state
        .store()
        .webhook_deliveries(status, paging.after, paging.fetch())
        .await?;
    let (rows, next_cursor) = paging.finish(rows, |d| d.id);
    Ok(Json(WebhookDeliveriesPage {
        deliveries: rows.into_iter().map(WebhookDeliveryOut::from).collect(),
        next_cursor,
    }))
}

/// The status filter of a delivery list (the API's query, the admin UI's).
pub(crate) fn delivery_status(value: Option<&str>) -> Result<Option<WebhookStatus>, ApiError> {
    match value {
        None => Ok(None),
        Some(s) => WebhookStatus::parse(s).map(Some).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "invalid_value",
                format!("status must be pending, delivered, failed or gone, not {s:?}"),
            )
        }),
    }
}

/// Sends a failed, gone or pending delivery again now, with a fresh retry
/// window. A delivered one is not sent again (409).
#[utoipa::path(post, path = "/api/v1/webhooks/deliveries/{id}/retry", tag = "webhooks",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = WebhookRetryResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Audited<Json<WebhookRetryResult>>, ApiError> {
    let id = positive_id(&id, "webhook delivery")?;
    let (d, note) = retry_delivery(&state, id).await?;
    Ok(Audited(
        note,
        Json(WebhookRetryResult { delivery: d.into() }),
    ))
}

/// Queues delivery `id` again (`POST /webhooks/deliveries/{id}/retry`,
/// and the admin UI's button).
pub(crate) async fn retry_delivery(
    state: &AppState,
    id: i64,
) -> Result<(WebhookDelivery, AuditNote), ApiError> {
    match state
        .store()
        .retry_webhook_delivery(id, Timestamp::now())
        .await?
    {
        RetryOutcome::Queued(d) => {
            tracing::info!(delivery = id, endpoint = %d.endpoint, event = d.event_id, "webhook delivery queued again by staff");
            let note = note(
                "webhooks.retry",
                format!("webhook-delivery:{id}"),
                json!({"endpoint": d.endpoint, "event": d.event_id}),
            );
            Ok((d, note))
        }
        RetryOutcome::AlreadyDelivered(_) => Err(ApiError::conflict(
            "already_delivered",
            Some("id"),
            format!("webhook delivery {id} was delivered already; it is not sent again"),
        )),
        RetryOutcome::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no webhook delivery {id} (delivered ones are deleted after [webhooks] retention)"),
        )
        .on("id")),
    }
}
