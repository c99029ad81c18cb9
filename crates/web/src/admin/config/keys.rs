//! API keys (`/admin/keys`, admins only): the list (never the keys
//! themselves), creating one (shown once, on the page that answers the
//! form), and revoking one after a confirmation page.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use veto_core::Role;

use super::{given, record, refused};
use crate::AppState;
use crate::admin::{AdminError, Posted, Staff, done, done_with_error, render, show_time};
use crate::api::keys::{create_key, revoke_key};

fn key_id(id: &str) -> Result<i64, AdminError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AdminError::NotFound(format!("There is no API key {id:?}.")))
}

pub(super) async fn page(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    staff.require("GET", "/keys")?;
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = state.store().api_keys(after, 500).await?;
        let more = page.len() == 500;
        after = page.last().map(|k| k.id);
        keys.extend(page.into_iter().map(|k| {
            json!({
                "id": k.id,
                "prefix": k.prefix,
                "role": k.role.as_str(),
                "default_topic": k.default_topic,
                "default_service": k.default_service,
                "owner": k.owner,
                "created": show_time(k.created_at),
                "revoked": k.revoked_at.map(show_time),
            })
        }));
        if !more {
            break;
        }
    }
    let topics: Vec<String> = state
        .store()
        .topics()
        .await?
        .into_iter()
        .map(|t| t.key.as_str().to_owned())
        .collect();
    let service_types: Vec<&str> = state
        .settings()
        .service_types
        .iter()
        .map(|s| s.key.as_str())
        .collect();
    render(
        &state,
        &staff,
        "admin/keys.html",
        "API keys",
        json!({
            "current": "/admin/keys",
            "keys": keys,
            "roles": Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "topics": topics,
            "service_types": service_types,
            "may_create": staff.may("POST", "/keys"),
            "may_revoke": staff.may("DELETE", "/keys/{id}"),
        }),
    )
}

#[derive(Deserialize)]
pub(super) struct KeyForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    default_topic: String,
    #[serde(default)]
    service_type: String,
    #[serde(default)]
    owner: String,
}

/// Creates a key and answers with the page that shows it: the only time
/// it is shown (not in a redirect or a cookie; no page is cached).
pub(super) async fn create(
    State(state): State<AppState>,
    Posted { staff, form }: Posted<KeyForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/keys")?;
    let (k, info, note) = match create_key(
        &state,
        given(&form.role),
        given(&form.default_topic),
        given(&form.service_type),
        given(&form.owner),
    )
    .await
    {
        Ok(done) => done,
        Err(e) => return refused("/admin/keys", e),
    };
    record(&state, &staff, note).await?;
    let page = render(
        &state,
        &staff,
        "admin/key_created.html",
        "New API key",
        json!({
            "current": "/admin/keys",
            "key": k.key,
            "prefix": info.prefix,
            "key_role": info.role.as_str(),
            "default_topic": info.default_topic,
            "default_service": info.default_service,
            "owner": info.owner,
        }),
    )?;
    Ok((StatusCode::CREATED, page).into_response())
}

pub(super) async fn confirm_revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    staff: Staff,
) -> Result<Response, AdminError> {
    staff.require("DELETE", "/keys/{id}")?;
    let id = key_id(&id)?;
    let Some(k) = state.store().api_key_info(id).await? else {
        return Err(AdminError::NotFound(format!("There is no API key {id}.")));
    };
    if let Some(at) = k.revoked_at {
        return Ok(done_with_error(
            "/admin/keys",
            format!(
                "Key {} was revoked already, on {}.",
                k.prefix,
                show_time(at)
            ),
        ));
    }
    render(
        &state,
        &staff,
        "admin/key_revoke.html",
        "Revoke an API key",
        json!({
            "current": "/admin/keys",
            "id": k.id,
            "prefix": k.prefix,
            "key_role": k.role.as_str(),
            "owner": k.owner,
            "created": show_time(k.created_at),
        }),
    )
}

#[derive(Deserialize)]
pub(super) struct RevokeForm {
    #[serde(default)]
    confirm: String,
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<RevokeForm>,
) -> Result<Response, AdminError> {
    staff.require("DELETE", "/keys/{id}")?;
    let id = key_id(&id)?;
    if form.confirm != "yes" {
        return Ok(done_with_error(
            &format!("/admin/keys/{id}/revoke"),
            "Tick the box to confirm that the key should stop working; nothing was revoked.",
        ));
    }
    let (info, note) = match revoke_key(&state, id).await {
        Ok(done) => done,
        Err(e) => return refused("/admin/keys", e),
    };
    record(&state, &staff, note).await?;
    Ok(done(
        "/admin/keys",
        format!(
            "Key {} ({}) is revoked: it no longer works.",
            info.prefix, info.role
        ),
    ))
}
