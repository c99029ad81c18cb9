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
    let me = format!("api-key:{}", key.prefix);
    let Some(owner) = key.owner.as_deref() else {
        return Err(ApiError::forbidden(
            "this dpo key names no holder, so veto cannot tell that the approver is not the requester; create one with `veto keys create --role dpo --owner NAME`".into(),
        ));
    };
    let (approval, already) = match approve_held(state.store(), id, &me, owner).await {
        Ok(Approved::Now(a)) => (a, false),
        Ok(Approved::Before(a)) => (a, true),
        Err(Refused::NotFound) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("there is no approval request {id}"),
            ));
        }
        Err(Refused::OwnRequest) => {
            return Err(ApiError::forbidden(format!(
                "{owner} requested this send; another DPO must approve it"
            )));
        }
        Err(Refused::Store(e)) => return Err(e.into()),
    };
    let detail = if already {
        json!({"already_approved": true})
    } else {
        json!({"sender": approval.actor, "class": approval.class, "recipients": approval.recipients})
    };
    Ok(Audited(
        note("approvals.approve", format!("approval:{id}"), detail),
        Json(ApprovalResult {
            approval: approval.into(),
        }),
    ))
}

/// What approving a held send did.
pub(crate) enum Approved {
    /// Approved by this call.
    Now(Approval),
    /// It was approved already; nothing changed.
    Before(Approval),
}

/// Why a held send was not approved.
pub(crate) enum Refused {
    NotFound,
    /// The approver is the requester (the same key, or the same holder).
    OwnRequest,
    Store(veto_store::StoreError),
}

/// Approves held send `id` for the approver `me` (`api-key:<prefix>` or
/// `user:<name>`) held by `owner` (the key's holder, or the user's name):
/// refused when they are the requester, named by the requesting key or its
/// holder. The API and the admin UI both approve through this; the caller
/// has checked the DPO role.
pub(crate) async fn approve_held(
    store: &veto_store::Store,
    id: i64,
    me: &str,
    owner: &str,
) -> Result<Approved, Refused> {
    let Some(request) = store.approval(id).await.map_err(Refused::Store)? else {
        return Err(Refused::NotFound);
    };
    if request.actor == me || request.owner.as_deref() == Some(owner) {
        return Err(Refused::OwnRequest);
    }
    if request.approved_at.is_some() {
        return Ok(Approved::Before(request));
    }
    let approved: Approval = store
        .approve(id, me, owner, Timestamp::now())
        .await
        .map_err(Refused::Store)?;
    tracing::info!(
        approval = id,
        by = %me,
        owner,
        sender = %approved.actor,
        "held service send approved"
    );
    Ok(Approved::Now(approved))
}

fn dpo_or_admin(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match caller.0.role {
        Role::Dpo | Role::Admin => Ok(()),
        role => Err(ApiError::forbidden(format!(
            "a {role} key may not {what}; use a dpo or admin key"
        ))),
    }
}
