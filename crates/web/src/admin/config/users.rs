//! Staff users (`/admin/users`, admins only): the list, adding one,
//! changing a role, disabling and enabling, setting a new password. An
//! admin may not disable themselves or take away their own admin role:
//! the organisation could be left with no one to run veto.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use veto_core::Role;
use veto_store::UserUpdate;

use super::{given, record, refused};
use crate::AppState;
use crate::admin::{AdminError, Posted, Staff, done, done_with_error, render, show_time};
use crate::api::keys::{add_staff_user, change_user, checked_password, checked_role};

const PAGE: &str = "/admin/users";

pub(super) async fn page(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    staff.require("GET", "/users")?;
    let mut users = Vec::new();
    let mut after = None;
    loop {
        let page = state.store().users(after, 500).await?;
        let more = page.len() == 500;
        after = page.last().map(|u| u.id);
        users.extend(page.into_iter().map(|u| {
            json!({
                "id": u.id,
                "name": u.name,
                "role": u.role.as_str(),
                "disabled": u.disabled,
                "created": show_time(u.created_at),
                "me": u.id == staff.user.id,
            })
        }));
        if !more {
            break;
        }
    }
    render(
        &state,
        &staff,
        "admin/users.html",
        "Staff users",
        json!({
            "current": PAGE,
            "users": users,
            "roles": Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "min_password": veto_store::MIN_PASSWORD_CHARS,
            "may_add": staff.may("POST", "/users"),
            "may_change": staff.may("PATCH", "/users/{id}"),
        }),
    )
}

#[derive(Deserialize)]
pub(super) struct UserForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
}

/// The two password fields must agree (the API takes it once).
fn same_password(form: &UserForm) -> Result<(), String> {
    if form.password != form.password2 {
        return Err("The two passwords differ; type the same password twice.".into());
    }
    Ok(())
}

pub(super) async fn add(
    State(state): State<AppState>,
    Posted { staff, form }: Posted<UserForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/users")?;
    let name = form.name.trim();
    if name.is_empty() {
        return Ok(done_with_error(
            PAGE,
            "Name is required: the name the person signs in with.",
        ));
    }
    if let Err(m) = same_password(&form) {
        return Ok(done_with_error(PAGE, m));
    }
    let (user, note) = match add_staff_user(
        &state,
        name,
        given(&form.role),
        (!form.password.is_empty()).then_some(form.password.as_str()),
    )
    .await
    {
        Ok(done) => done,
        Err(e) => return refused(PAGE, e),
    };
    record(&state, &staff, note).await?;
    Ok(done(
        PAGE,
        format!("{} was added as {}.", user.name, user.role),
    ))
}

#[derive(Deserialize)]
pub(super) struct ChangeForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
    #[serde(default)]
    confirm: String,
}

pub(super) async fn change(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<ChangeForm>,
) -> Result<Response, AdminError> {
    staff.require("PATCH", "/users/{id}")?;
    let Some(id) = id.parse::<i64>().ok().filter(|n| *n > 0) else {
        return Err(AdminError::NotFound(format!(
            "There is no staff user {id:?}."
        )));
    };
    let me = id == staff.user.id;
    let update = match form.action.as_str() {
        "role" => {
            let role = match checked_role(given(&form.role), true) {
                Ok(r) => r,
                Err(e) => return refused(PAGE, e),
            };
            if me && role != Some(Role::Admin) {
                return Ok(done_with_error(
                    PAGE,
                    "You cannot take away your own admin role: the organisation could be left without an admin. Ask another admin to do it.",
                ));
            }
            UserUpdate {
                role,
                ..Default::default()
            }
        }
        "disable" => {
            if me {
                return Ok(done_with_error(
                    PAGE,
                    "You cannot disable yourself: the organisation could be left without an admin. Ask another admin to do it.",
                ));
            }
            if form.confirm != "yes" {
                return Ok(done_with_error(
                    PAGE,
                    "Tick the box to confirm disabling; nothing was changed.",
                ));
            }
            UserUpdate {
                disabled: Some(true),
                ..Default::default()
            }
        }
        "enable" => UserUpdate {
            disabled: Some(false),
            ..Default::default()
        },
        "password" => {
            if form.password != form.password2 {
                return Ok(done_with_error(
                    PAGE,
                    "The two passwords differ; type the same password twice. Nothing was changed.",
                ));
            }
            let password = match checked_password(Some(&form.password), true) {
                Ok(p) => p,
                Err(e) => return refused(PAGE, e),
            };
            UserUpdate {
                password,
                ..Default::default()
            }
        }
        other => {
            return Err(AdminError::BadRequest(format!(
                "There is no change {other:?} for a staff user."
            )));
        }
    };
    let what = match (&update.role, update.disabled, &update.password) {
        (Some(r), _, _) => format!("now has the role {r}"),
        (_, Some(true), _) => "is disabled; their sessions have ended".to_owned(),
        (_, Some(false), _) => "is enabled again".to_owned(),
        _ => "has a new password; their sessions have ended".to_owned(),
    };
    let (user, note) = match change_user(&state, id, update).await {
        Ok(done) => done,
        Err(e) => return refused(PAGE, e),
    };
    record(&state, &staff, note).await?;
    Ok(done(PAGE, format!("{} {what}.", user.name)))
}
