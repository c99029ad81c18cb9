//! API keys (list without secrets, create returning the key once, revoke)
//! and the staff users of the admin UI (list, add, change). Admins only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;
use veto_core::{Role, TopicKey};
use veto_store::{ApiKeyInfo, KeySpec, NewApiKey, StaffUser, StoreError, UserUpdate};

use super::audit::{AuditNote, Audited, note};
use super::fields::{Fields, JsonBody, checked_text};
use super::page::ApiQuery;
use super::schema::*;
use super::topics::PageQuery;
use super::{ApiError, Caller, positive_id};
use crate::AppState;

fn role(body: &Fields, required: bool) -> Result<Option<Role>, ApiError> {
    checked_role(body.str("role")?, required)
}

/// A role's name as a key or user is given it (API bodies, admin forms).
pub(crate) fn checked_role(value: Option<&str>, required: bool) -> Result<Option<Role>, ApiError> {
    match value {
        None if required => Err(ApiError::invalid(
            "role",
            "missing_field",
            "role is required: viewer, marketer, service-sender, dpo or admin",
        )),
        None => Ok(None),
        Some(r) => r
            .parse::<Role>()
            .map(Some)
            .map_err(|e| ApiError::invalid("role", "invalid_value", e.to_string())),
    }
}

/// Every API key, revoked ones too; never the key itself.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = KeysPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<KeysPage>, ApiError> {
    let paging = q.paging()?;
    let rows = state.store().api_keys(paging.after, paging.fetch()).await?;
    let (rows, next_cursor) = paging.finish(rows, |k| k.id);
    Ok(Json(KeysPage {
        keys: rows.into_iter().map(KeyOut::from).collect(),
        next_cursor,
    }))
}

/// Creates a key. The answer is the only time the key is shown.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = KeyIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = KeyCreated), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<KeyCreated>)>, ApiError> {
    body.only(&["role", "default_topic", "service_type", "owner"])?;
    let (k, info, note) = create_key(
        &state,
        body.str("role")?,
        body.str("default_topic")?,
        body.str("service_type")?,
        body.str("owner")?,
    )
    .await?;
    Ok(Audited(
        note,
        (
            StatusCode::CREATED,
            Json(KeyCreated {
                key: k.key,
                api_key: KeyOut::from(info),
            }),
        ),
    ))
}

/// Checks and creates a key (`POST /keys`, and the admin UI's form): the
/// new key (its only showing), what is listed about it, and the audit note.
pub(crate) async fn create_key(
    state: &AppState,
    role: Option<&str>,
    default_topic: Option<&str>,
    service_type: Option<&str>,
    owner: Option<&str>,
) -> Result<(NewApiKey, ApiKeyInfo, AuditNote), ApiError> {
    let role = checked_role(role, true)?.unwrap_or(Role::Viewer);
    let default_topic = match default_topic {
        None => None,
        Some(t) => {
            let key = TopicKey::parse(t).map_err(|e| {
                ApiError::invalid("default_topic", "unknown_topic", format!("topic {e}"))
            })?;
            if state.store().topic(&key).await?.is_none() {
                return Err(ApiError::invalid(
                    "default_topic",
                    "unknown_topic",
                    format!("there is no topic {t:?}"),
                ));
            }
            Some(key)
        }
    };
    let default_service = match service_type {
        None => None,
        Some(kind) => {
            if default_topic.is_some() {
                return Err(ApiError::invalid(
                    "service_type",
                    "conflicting_fields",
                    "a key classifies its mail as a topic or a service type, not both",
                ));
            }
            if !state.settings().service_types.iter().any(|s| s.key == kind) {
                return Err(ApiError::invalid(
                    "service_type",
                    "unknown_service_type",
                    format!("{kind:?} is not declared under [service.types]"),
                ));
            }
            Some(kind.to_owned())
        }
    };
    let owner = checked_text("owner", owner, 200)?;
    let k = state
        .store()
        .create_api_key_with(KeySpec {
            role,
            default_topic,
            default_service,
            owner,
        })
        .await?;
    let info = state
        .store()
        .api_key_info(k.id)
        .await?
        .ok_or_else(|| ApiError::internal(&"a new key was not found"))?;
    let note = note(
        "keys.create",
        format!("key:{}", k.id),
        json!({"role": info.role.as_str(), "prefix": info.prefix, "owner": info.owner, "default_topic": info.default_topic, "service_type": info.default_service}),
    );
    Ok((k, info, note))
}

/// Revokes a key at once (it stays listed, with `revoked_at`).
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = KeyResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Audited<Json<KeyResult>>, ApiError> {
    let id = positive_id(&id, "key")?;
    if caller.0.id == id {
        return Err(ApiError::conflict(
            "own_key",
            None,
            "a key cannot revoke itself; use another admin key, so that one always remains".into(),
        ));
    }
    let (info, note) = revoke_key(&state, id).await?;
    Ok(Audited(
        note,
        Json(KeyResult {
            api_key: info.into(),
        }),
    ))
}

/// Revokes key `id` (`DELETE /keys/{id}`, and the admin UI's button).
pub(crate) async fn revoke_key(
    state: &AppState,
    id: i64,
) -> Result<(ApiKeyInfo, AuditNote), ApiError> {
    let info = state.store().revoke_api_key(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no key {id}"),
        )
    })?;
    let note = note(
        "keys.revoke",
        format!("key:{id}"),
        json!({"prefix": info.prefix, "role": info.role.as_str()}),
    );
    Ok((info, note))
}

/// The staff users who sign in to the admin UI.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageQuery),
    responses((status = 200, body = UsersPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn users(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<UsersPage>, ApiError> {
    let paging = q.paging()?;
    let rows = state.store().users(paging.after, paging.fetch()).await?;
    let (rows, next_cursor) = paging.finish(rows, |u| u.id);
    Ok(Json(UsersPage {
        users: rows.into_iter().map(UserOut::from).collect(),
        next_cursor,
    }))
}

fn password(body: &Fields, required: bool) -> Result<Option<String>, ApiError> {
    checked_password(body.str("password")?, required)
}

/// A new staff password: at least [`veto_store::MIN_PASSWORD_CHARS`]
/// characters (API bodies, admin forms).
pub(crate) fn checked_password(
    value: Option<&str>,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match value {
        None if required => Err(ApiError::invalid(
            "password",
            "missing_field",
            format!(
                "password is required (at least {} characters)",
                veto_store::MIN_PASSWORD_CHARS
            ),
        )),
        None => Ok(None),
        Some(p) if p.chars().count() < veto_store::MIN_PASSWORD_CHARS => Err(ApiError::invalid(
            "password",
            "too_short",
            format!(
                "password must have at least {} characters",
                veto_store::MIN_PASSWORD_CHARS
            ),
        )),
        Some(p) if p.chars().count() > 1024 => Err(ApiError::invalid(
            "password",
            "too_long",
            "password is longer than 1024 characters",
        )),
        Some(p) => Ok(Some(p.to_owned())),
    }
}

/// Adds a staff user; the password is kept only as an argon2id hash.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = UserIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = UserResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn add_user(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<UserResult>)>, ApiError> {
    body.only(&["name", "role", "password"])?;
    let name = body.required_str("name", "the name the person signs in with")?;
    let (user, note) =
        add_staff_user(&state, name, body.str("role")?, body.str("password")?).await?;
    Ok(Audited(
        note,
        (StatusCode::CREATED, Json(UserResult { user: user.into() })),
    ))
}

/// Checks and adds a staff user (`POST /users`, and the admin UI's form).
pub(crate) async fn add_staff_user(
    state: &AppState,
    name: &str,
    role: Option<&str>,
    password: Option<&str>,
) -> Result<(StaffUser, AuditNote), ApiError> {
    let role = checked_role(role, true)?.unwrap_or(Role::Viewer);
    let password = checked_password(password, true)?.unwrap_or_default();
    let user = state
        .store()
        .add_user(name, role, &password)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) if m.starts_with("there is already") => {
                ApiError::conflict("already_exists", Some("name"), m)
            }
            StoreError::Invalid(m) => ApiError::invalid("name", "invalid_value", m),
            other => other.into(),
        })?;
    let note = note(
        "users.add",
        format!("user:{}", user.name),
        json!({"id": user.id, "role": user.role.as_str()}),
    );
    Ok((user, note))
}

/// Changes a user's role, disables or re-enables them, or sets a new password.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UserPatch,
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = UserResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Audited<Json<UserResult>>, ApiError> {
    let id = positive_id(&id, "user")?;
    body.only(&["role", "disabled", "password"])?;
    let update = UserUpdate {
        role: role(&body, false)?,
        disabled: body.bool("disabled")?,
        password: password(&body, false)?,
    };
    let (user, note) = change_user(&state, id, update).await?;
    Ok(Audited(note, Json(UserResult { user: user.into() })))
}

/// Changes staff user `id` (`PATCH /users/{id}`, and the admin UI's
/// forms); the store ends their sessions when disabled or given a new
/// password.
pub(crate) async fn change_user(
    state: &AppState,
    id: i64,
    update: UserUpdate,
) -> Result<(StaffUser, AuditNote), ApiError> {
    let detail = json!({
        "role": update.role.map(|r| r.as_str()),
        "disabled": update.disabled,
        "password_changed": update.password.is_some(),
    });
    let user = state
        .store()
        .update_user(id, update)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("there is no user {id}"),
            )
        })?;
    let note = note("users.update", format!("user:{}", user.name), detail);
    Ok((user, note))
}
