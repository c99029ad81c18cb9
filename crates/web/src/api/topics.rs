//! Topics (list, create, change the description), the declared service
//! types (from the configuration, read-only), and wordings (list, create).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use veto_core::TopicKey;
use veto_store::{NewTopic, StoreError};

use super::audit::{AuditNote, Audited, note};
use super::fields::{JsonBody, checked_text};
use super::page::{ApiQuery, Paging};
use super::schema::*;
use super::{ApiError, positive_id};
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// How many items (1 to 500, default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn paging(&self) -> Result<Paging, ApiError> {
        Paging::new(self.limit.as_deref(), self.cursor.as_deref())
    }
}

fn topic_key(key: &str) -> Result<TopicKey, ApiError> {
    TopicKey::parse(key)
        .map_err(|e| ApiError::invalid("key", "invalid_topic_key", format!("topic {e}")))
}

pub(crate) async fn find_topic(state: &AppState, key: &str) -> Result<veto_core::Topic, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no topic {key:?}"),
        )
    };
    let Ok(parsed) = TopicKey::parse(key) else {
        return Err(not_found());
    };
    state.store().topic(&parsed).await?.ok_or_else(not_found)
}

/// The topics people can choose on their own, by id.
#[utoipa::path(get, path = "/api/v1/topics", tag = "topics", params(PageQuery),
    responses((status = 200, body = TopicsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<TopicsPage>, ApiError> {
    let paging = q.paging()?;
    let (topics, next_cursor) = paging.slice(state.store().topics().await?, |t| i64::from(t.id.0));
    Ok(Json(TopicsPage {
        topics: topics.into_iter().map(TopicOut::from).collect(),
        next_cursor,
    }))
}

/// One topic.
#[utoipa::path(get, path = "/api/v1/topics/{key}", tag = "topics",
    params(("key" = String, Path, description = "the topic's key")),
    responses((status = 200, body = TopicResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<TopicResult>, ApiError> {
    Ok(Json(TopicResult {
        topic: find_topic(&state, &key).await?.into(),
    }))
}

/// Adds a topic (409 when the key is taken).
#[utoipa::path(post, path = "/api/v1/topics", tag = "topics", request_body = TopicIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = TopicResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<TopicResult>)>, ApiError> {
    body.only(&["key", "name", "description", "group"])?;
    let key = body.required_str("key", "lower-case letters, digits and hyphens")?;
    let (topic, note) = add_topic(
        &state,
        key,
        body.str("name")?,
        body.str("description")?,
        body.str("group")?,
    )
    .await?;
    Ok(Audited(
        note,
        (
            StatusCode::CREATED,
            Json(TopicResult {
                topic: topic.into(),
            }),
        ),
    ))
}

/// Checks and adds a topic (`POST /topics`, and the admin UI's form):
/// the topic and what the audit trail records about it.
pub(crate) async fn add_topic(
    state: &AppState,
    key: &str,
    name: Option<&str>,
    description: Option<&str>,
    group: Option<&str>,
) -> Result<(veto_core::Topic, AuditNote), ApiError> {
    let key = topic_key(key)?;
    let name = checked_text("name", name, 200)?.ok_or_else(|| {
        ApiError::invalid("name", "missing_field", "name is required: what people see")
    })?;
    let description = checked_text("description", description, 1000)?.ok_or_else(|| {
        ApiError::invalid(
            "description",
            "missing_field",
            "description is required: one plain sentence people read on their preference page",
        )
    })?;
    let group = checked_text("group", group, 200)?;
    if state.store().topic(&key).await?.is_some() {
        return Err(ApiError::conflict(
            "already_exists",
            Some("key"),
            format!("there is already a topic {key}"),
        ));
    }
    let topic = state
        .store()
        .add_topic(NewTopic {
            key,
            name,
            description,
            group,
        })
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => ApiError::conflict("already_exists", Some("key"), m),
            other => other.into(),
        })?;
    let note = note(
        "topics.create",
        format!("topic:{}", topic.key),
        json!({"name": topic.name, "group": topic.group}),
    );
    Ok((topic, note))
}

/// Changes a topic's description (what people read about it).
#[utoipa::path(patch, path = "/api/v1/topics/{key}", tag = "topics", request_body = TopicPatch,
    params(("key" = String, Path, description = "the topic's key")),
    responses((status = 200, body = TopicResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(key): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Audited<Json<TopicResult>>, ApiError> {
    let topic = find_topic(&state, &key).await?;
    body.only(&["description"])?;
    let (updated, note) = change_description(&state, &topic, body.str("description")?).await?;
    Ok(Audited(
        note,
        Json(TopicResult {
            topic: updated.into(),
        }),
    ))
}

/// Checks and sets a topic's new description (`PATCH /topics/{key}`, and
/// the admin UI's form).
pub(crate) async fn change_description(
    state: &AppState,
    topic: &veto_core::Topic,
    description: Option<&str>,
) -> Result<(veto_core::Topic, AuditNote), ApiError> {
    let description = checked_text("description", description, 1000)?.ok_or_else(|| {
        ApiError::invalid(
            "description",
            "missing_field",
            "description is required and may not be blank",
        )
    })?;
    let updated = state
        .store()
        .update_topic_description(&topic.key, &description)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("there is no topic {:?}", topic.key.as_str()),
            )
        })?;
    let note = note(
        "topics.update",
        format!("topic:{}", topic.key),
        json!({"description": {"from": topic.description, "to": updated.description}}),
    );
    Ok((updated, note))
}

/// The service types declared in the configuration (`[service.types]`).
#[utoipa::path(get, path = "/api/v1/service-types", tag = "topics",
    responses((status = 200, body = ServiceTypes), (status = "4XX", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn service_types(State(state): State<AppState>) -> Json<ServiceTypes> {
    Json(ServiceTypes {
        service_types: state
            .settings()
            .service_types
            .iter()
            .map(|s| ServiceTypeOut {
                key: s.key.clone(),
                description: s.description.clone(),
            })
            .collect(),
    })
}

/// The consent texts people were shown, by id (each id is a version).
#[utoipa::path(get, path = "/api/v1/wordings", tag = "wordings", params(PageQuery),
    responses((status = 200, body = WordingsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn wordings(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<WordingsPage>, ApiError> {
    let paging = q.paging()?;
    let rows = state.store().wordings(paging.after, paging.fetch()).await?;
    let (rows, next_cursor) = paging.finish(rows, |w| w.id.0);
    Ok(Json(WordingsPage {
        wordings: rows.into_iter().map(WordingOut::from).collect(),
        next_cursor,
    }))
}

/// One wording.
#[utoipa::path(get, path = "/api/v1/wordings/{id}", tag = "wordings",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = WordingResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn wording(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WordingResult>, ApiError> {
    let id = positive_id(&id, "wording")?;
    match state.store().wording(veto_core::WordingId(id)).await? {
        Some(w) => Ok(Json(WordingResult { wording: w.into() })),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no wording {id}"),
        )),
    }
}

/// Stores an exact consent text; the same text gives the same id (200), a
/// new one 201.
#[utoipa::path(post, path = "/api/v1/wordings", tag = "wordings", request_body = WordingIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = WordingResult), (status = 200, body = WordingResult),
        (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn add_wording(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<WordingResult>)>, ApiError> {
    body.only(&["text"])?;
    let text = body.required_str("text", "the exact consent text people are shown")?;
    let (w, created, note) = store_wording(&state, text).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Audited(
        note,
        (status, Json(WordingResult { wording: w.into() })),
    ))
}

/// Checks and stores a wording (`POST /wordings`, and the admin UI's
/// form): the wording, whether it is new (the same text keeps its id).
pub(crate) async fn store_wording(
    state: &AppState,
    text: &str,
) -> Result<(veto_core::Wording, bool, AuditNote), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "text",
            "missing_field",
            "text may not be blank",
        ));
    }
    if text.chars().count() > 10_000 {
        return Err(ApiError::invalid(
            "text",
            "too_long",
            "text is longer than 10000 characters",
        ));
    }
    let before = state.store().wording_ids().await?;
    let w = state.store().add_wording(text).await?;
    let created = !before.contains(&w.id.0);
    let note = note(
        "wordings.create",
        format!("wording:{}", w.id.0),
        json!({"sha256": w.hash}),
    );
    Ok((w, created, note))
}
