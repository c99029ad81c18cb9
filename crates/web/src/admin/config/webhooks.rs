//! Webhook deliveries (`/admin/webhooks`): counts per endpoint, and the
//! deliveries pending (with the last error and the next attempt), failed
//! and gone, or those of one status; Retry for those who may.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use veto_store::{WebhookDelivery, WebhookStatus};

use super::{record, refused};
use crate::AppState;
use crate::admin::{AdminError, Posted, Staff, done, render, show_time};
use crate::api::webhooks::{delivery_status, retry_delivery};

const PAGE: &str = "/admin/webhooks";
/// Rows shown per status.
const SHOWN: i64 = 200;

#[derive(Deserialize)]
pub(super) struct Filter {
    status: Option<String>,
}

fn row(d: WebhookDelivery) -> Value {
    let pending = d.status == WebhookStatus::Pending;
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "contact_id": d.contact_id,
        "endpoint": d.endpoint,
        "kind": d.kind,
        "status": d.status.as_str(),
        "badge": match d.status {
            WebhookStatus::Delivered => "ok",
            WebhookStatus::Pending => "warn",
            WebhookStatus::Failed | WebhookStatus::Gone => "bad",
        },
        "attempts": d.attempts,
        "created": show_time(d.created_at),
        "next_attempt": pending.then(|| show_time(d.next_attempt_at)),
        "last_attempt": d.last_attempt_at.map(show_time),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered": d.delivered_at.map(show_time),
        "retryable": d.status != WebhookStatus::Delivered,
    })
}

pub(super) async fn page(
    State(state): State<AppState>,
    staff: Staff,
    Query(filter): Query<Filter>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/webhooks/deliveries")?;
    // The form's "open" choice sends an empty value: pending, failed and gone.
    let status = match delivery_status(filter.status.as_deref().filter(|s| !s.is_empty())) {
        Ok(s) => s,
        Err(e) => {
            return Err(AdminError::BadRequest(
                e.client_message().unwrap_or("bad status").to_owned(),
            ));
        }
    };
    let shown = match status {
        Some(s) => vec![s],
        None => vec![
            WebhookStatus::Pending,
            WebhookStatus::Failed,
            WebhookStatus::Gone,
        ],
    };
    let mut deliveries = Vec::new();
    for s in shown {
        deliveries.extend(
            state
                .store()
                .webhook_deliveries(Some(s), None, SHOWN)
                .await?
                .into_iter()
                .map(row),
        );
    }
    let counts: Vec<Value> = state
        .store()
        .webhook_counts()
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "endpoint": c.endpoint, "pending": c.pending, "retrying": c.retrying,
                "delivered": c.delivered, "failed": c.failed, "gone": c.gone,
                "oldest_pending": c.oldest_pending.map(show_time),
            })
        })
        .collect();
    render(
        &state,
        &staff,
        "admin/webhooks.html",
        "Webhook deliveries",
        json!({
            "current": PAGE,
            "counts": counts,
            "deliveries": deliveries,
            "status": status.map(|s| s.as_str()).unwrap_or(""),
            "statuses": WebhookStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "shown": SHOWN,
            "may_retry": staff.may("POST", "/webhooks/deliveries/{id}/retry"),
        }),
    )
}

pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, .. }: Posted<Value>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/webhooks/deliveries/{id}/retry")?;
    let Some(id) = id.parse::<i64>().ok().filter(|n| *n > 0) else {
        return Err(AdminError::NotFound(format!(
            "There is no webhook delivery {id:?}."
        )));
    };
    let (d, note) = match retry_delivery(&state, id).await {
        Ok(done) => done,
        Err(e) => return refused(PAGE, e),
    };
    record(&state, &staff, note).await?;
    Ok(done(
        PAGE,
        format!(
            "Delivery {id} of event {} to {} is queued again and will be sent within a minute.",
            d.event_id, d.endpoint
        ),
    ))
}
