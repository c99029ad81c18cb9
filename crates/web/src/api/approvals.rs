//! Service sends held by the bulk brake (`450 4.7.1` at the gateway), and
//! their approval by a data protection officer other than the requester.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use veto_core::{Role, Timestamp};
use veto_store::Approval;

use super::{ApiError, Caller};
use crate::AppState;

/// `GET /api/v1/approvals`: every request, pending ones first.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    dpo_or_admin(&caller, "see approval requests")?;
    let mut all = state.store().approvals(false).await?;
    all.sort_by_key(|a| (a.approved_at.is_some(), a.id));
    Ok(Json(json!({ "approvals": all })))
}

/// `POST /api/v1/approvals/{id}`: lifts the brake on the requester's key
/// for one bulk window; its held mail goes through when the tool retries.
pub(crate) async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = &caller.0;
    if key.role != Role::Dpo {
        return Err(ApiError::forbidden(format!(
            "only a dpo key may approve a held send; this is a {} key",
            key.role
        )));
    }
    let Ok(id) = id.parse::<i64>() else {
        return Err(ApiError::invalid(
            "id",
            "invalid_id",
            format!("{id:?} is not an approval id (a number)"),
        ));
    };
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
        return Ok((StatusCode::OK, Json(json!({ "approval": request }))));
    }
    let approved: Approval = store.approve(id, &me, owner, Timestamp::now()).await?;
    tracing::info!(
        approval = id,
        by = %me,
        owner,
        sender = %approved.actor,
        "held service send approved"
    );
    Ok((StatusCode::OK, Json(json!({ "approval": approved }))))
}

fn dpo_or_admin(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match caller.0.role {
        Role::Dpo | Role::Admin => Ok(()),
        role => Err(ApiError::forbidden(format!(
            "a {role} key may not {what}; use a dpo or admin key"
        ))),
    }
}
