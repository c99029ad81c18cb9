//! Service sends held by the bulk brake (`450 4.7.1` at the gateway), and
//! their approval by a data protection officer other than the requester.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;
use veto_core::{Role, Timestamp};
use veto_store::Approval;

use super::audit::{Audited, note};
use super::page::{ApiQuery, Paging};
use super::schema::{ApprovalOut, ApprovalResult, ApprovalsPage, ErrorBody};
use super::{ApiError, Caller, positive_id};
use crate::AppState;

/// Held service sends and their approvals, by id (`pending=true`: only
/// those still waiting).
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals", params(ApprovalQuery),
    responses((status = 200, body = ApprovalsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ApprovalQuery>,
) -> Result<Json<ApprovalsPage>, ApiError> {
    dpo_or_admin(&caller, "see approval requests")?;
    let paging = Paging::new(q.limit.as_deref(), q.cursor.as_deref())?;
    let pending = match q.pending.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "pending",
                "invalid_value",
                format!("pending must be true or false, not {other:?}"),
            ));
        }
    };
    let all = state.store().approvals(pending).await?;
    let (rows, next_cursor) = paging.slice(all, |a| a.id);
    Ok(Json(ApprovalsPage {
        approvals: rows.into_iter().map(ApprovalOut::from).collect(),
        next_cursor,
    }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ApprovalQuery {
    /// Only requests still waiting for a DPO.
    #[param(value_type = Option<bool>)]
    pending: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    cursor: Option<String>,
}

/// Approves a held service send: lifts the brake on the requester's key
/// for one bulk window; its held mail goes through when the tool retries.
#[utoipa::path(post, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = ApprovalResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Audited<Json<ApprovalResult>>, ApiError> {
    let key = &caller.0;
    if key.role != Role::Dpo {
        return Err(ApiError::forbidden(format!(
            "only a dpo key may approve a held send; this is a {} key",
            key.role
        )));
    }
    let id = positive_id(&id, "approval")?;
    let store = state.store();
    let Some(request) = store.approval(id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no approval request {id}"),
        ));
    };
    let me = format!("api-key:{}", key.prefix);
    let Some(owner) = key.owner.as_deref() else {
        return Err(ApiError::forbidden(
            "this dpo key names no holder, so veto cannot tell that the approver is not the requester; create one with `veto keys create --role dpo --owner NAME`".into(),
        ));
    };
    if request.actor == me || request.owner.as_deref() == Some(owner) {
        return Err(ApiError::forbidden(format!(
            "{owner} requested this send; another DPO must approve it"
        )));
    }
    if request.approved_at.is_some() {
        return Ok(Audited(
            note(
                "approvals.approve",
                format!("approval:{id}"),
                json!({"already_approved": true}),
            ),
            Json(ApprovalResult {
                approval: request.into(),
            }),
        ));
    }
    let approved: Approval = store.approve(id, &me, owner, Timestamp::now()).await?;
    tracing::info!(
        approval = id,
        by = %me,
        owner,
        sender = %approved.actor,
        "held service send approved"
    );
    Ok(Audited(
        note(
            "approvals.approve",
            format!("approval:{id}"),
            json!({"sender": approved.actor, "class": approved.class, "recipients": approved.recipients}),
        ),
        Json(ApprovalResult {
            approval: approved.into(),
        }),
    ))
}

fn dpo_or_admin(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match caller.0.role {
        Role::Dpo | Role::Admin => Ok(()),
        role => Err(ApiError::forbidden(format!(
            "a {role} key may not {what}; use a dpo or admin key"
        ))),
    }
}
