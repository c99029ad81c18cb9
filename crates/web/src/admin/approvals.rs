//! Approvals: service sends held by the bulk brake, and their approval by
//! a DPO other than the requester (through the API's own
//! [`crate::api::approvals::approve_held`]). In the UI a DPO is known by
//! their user name: one whose name is the requesting key's holder may not
//! approve it.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use veto_core::Role;

use super::render::show_time;
use super::{AdminError, Posted, Staff, done, done_with_error, render};
use crate::AppState;
use crate::api::approvals::{Approved, Refused, approve_held};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}", post(approve))
}

/// The newest this many requests are listed.
const SHOWN: usize = 200;

pub(super) async fn list(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    staff.require("GET", "/approvals")?;
    let may_approve = staff.may("POST", "/approvals/{id}");
    let mut all = state.store().approvals(false).await?;
    // Waiting first, then the newest.
    all.sort_by_key(|a| (a.approved_at.is_some(), std::cmp::Reverse(a.id)));
    let rows: Vec<Value> = all
        .iter()
        .take(SHOWN)
        .map(|a| {
            let own = a.owner.as_deref() == Some(staff.user.name.as_str());
            json!({
                "id": a.id,
                "actor": a.actor,
                "owner": a.owner,
                "class": a.class,
                "recipients": a.recipients,
                "window_count": a.window_count,
                "requested_at": show_time(a.requested_at),
                "approved": a.approved_at.is_some(),
                "approved_by": a.approved_by,
                "approver_owner": a.approver_owner,
                "approved_at": a.approved_at.map(show_time),
                "own": own,
            })
        })
        .collect();
    render(
        &state,
        &staff,
        "admin/approvals.html",
        "Approvals",
        json!({
            "current": "/admin/approvals",
            "approvals": rows,
            "more": all.len() > SHOWN,
            "may_approve": may_approve,
        }),
    )
}

pub(super) async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, .. }: Posted<Value>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/approvals/{id}")?;
    // The role table says DPO; the API's handler says so again.
    if staff.user.role != Role::Dpo {
        return Err(AdminError::Forbidden(
            "Only a DPO may approve a held send.".into(),
        ));
    }
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AdminError::NotFound(format!("There is no approval request {id:?}.")))?;
    let name = staff.user.name.clone();
    let (approval, already) = match approve_held(state.store(), id, &staff.actor(), &name).await {
        Ok(Approved::Now(a)) => (a, false),
        Ok(Approved::Before(a)) => (a, true),
        Err(Refused::NotFound) => {
            return Err(AdminError::NotFound(format!(
                "There is no approval request {id}."
            )));
        }
        Err(Refused::OwnRequest) => {
            return Ok(done_with_error(
                "/admin/approvals",
                format!(
                    "Not approved: request {id} was made with a key held by {name}, and you are signed in as {name}. Another DPO must approve it."
                ),
            ));
        }
        Err(Refused::Store(e)) => return Err(e.into()),
    };
    let detail = if already {
        json!({"already_approved": true})
    } else {
        json!({"sender": approval.actor, "class": approval.class, "recipients": approval.recipients})
    };
    staff
        .record(
            &state,
            "approvals.approve",
            Some(format!("approval:{id}")),
            detail,
        )
        .await?;
    Ok(done(
        "/admin/approvals",
        if already {
            format!("Request {id} was already approved; nothing changed.")
        } else {
            format!(
                "Approved request {id}: {} may send {} to {} recipients for one bulk window; the held mail goes when the tool retries.",
                approval.actor, approval.class, approval.recipients
            )
        },
    ))
}
