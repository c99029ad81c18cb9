//! `POST /api/v1/messages`: a declared service message (a bill, a security
//! alert) to a few recipients, by templates or as a whole message. Only
//! service-sender keys. More than `[service] bulk_threshold` recipients
//! within `bulk_window` is held (`202`, an approval request) until a DPO
//! other than the key's holder approves it; the caller then sends again.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use veto_core::Role;
use veto_sender::service::{ServiceError, ServiceOutcome, ServiceRequest};

use super::audit::{Audited, note};
use super::fields::JsonBody;
use super::{ApiError, Caller};
use crate::AppState;

const FIELDS: &[&str] = &[
    "type",
    "to",
    "from",
    "from_name",
    "subject",
    "text",
    "html",
    "raw",
];

/// A declared service message to a few recipients, by templates or whole.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", request_body = super::schema::MessageIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 200, body = super::schema::MessageOutcome, description = "sent (each recipient checked and receipted)"),
        (status = 202, body = super::schema::MessageOutcome, description = "held for a DPO's approval"),
        (status = "4XX", body = super::schema::ErrorBody), (status = 503, body = super::schema::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn send(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<Value>)>, ApiError> {
    if caller.0.role != Role::ServiceSender {
        return Err(ApiError::forbidden(format!(
            "a {} key may not send service messages; create a service-sender key",
            caller.0.role
        )));
    }
    let Some((out, settings)) = state.service() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "this server does not send service messages",
        ));
    };
    body.only(FIELDS)?;
    let req = ServiceRequest {
        kind: body
            .required_str("type", "the declared service type, e.g. \"billing\"")?
            .to_owned(),
        to: body.strings("to")?,
        from_name: body.text("from_name", 200)?,
        from_address: body.str("from")?.map(str::to_owned),
        subject: body.str("subject")?.map(str::to_owned),
        text: body.str("text")?.map(str::to_owned),
        html: body.str("html")?.map(str::to_owned),
        raw: body.str("raw")?.map(str::to_owned),
        actor: format!("api-key:{}", caller.0.prefix),
        owner: caller.0.owner.clone(),
    };
    let kind = req.kind.clone();
    let asked = req.to.len();
    match veto_sender::service::send(out, settings, req).await {
        // The request that was held is in the audit trail, and so is (by
        // `POST /approvals/{id}`) the approval that lets it go.
        Ok(ServiceOutcome::Held { approval }) => Ok(Audited(
            note(
                "messages.held",
                format!("approval:{}", approval.id),
                json!({"type": kind, "recipients": asked, "threshold": settings.bulk_threshold}),
            ),
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "outcome": "held",
                    "message": format!(
                        "held: more than {} service recipients within the bulk window; approval request {} awaits a DPO other than this key's holder (POST /api/v1/approvals/{}), then send again",
                        settings.bulk_threshold, approval.id, approval.id
                    ),
                    "approval": approval,
                })),
            ),
        )),
        Ok(ServiceOutcome::Sent { results }) => {
            let sent = results.iter().filter(|r| r.status == "sent").count();
            Ok(Audited(
                note(
                    "messages.send",
                    None,
                    json!({"type": kind, "recipients": asked, "sent": sent}),
                ),
                (
                    StatusCode::OK,
                    Json(json!({ "outcome": "sent", "results": results })),
                ),
            ))
        }
        Err(ServiceError::Invalid { field, message }) => Err(ApiError::invalid(
            field,
            "invalid_message",
            format!("{field}: {message}"),
        )),
        Err(ServiceError::Store(e)) => Err(ApiError::from(e)),
    }
}
