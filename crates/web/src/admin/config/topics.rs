//! Topics (`/admin/topics`: list, add, change a description; the service
//! types declared in veto.toml, read-only) and wordings (`/admin/wordings`:
//! list, add; never edited or deleted, they are evidence).

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{given, record, refused};
use crate::AppState;
use crate::admin::{AdminError, Posted, Staff, done, render};
use crate::api::topics::{add_topic, change_description, find_topic, store_wording};

pub(super) async fn page(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    staff.require("GET", "/topics")?;
    let topics: Vec<_> = state
        .store()
        .topics()
        .await?
        .into_iter()
        .map(|t| {
            json!({"key": t.key.as_str(), "name": t.name, "description": t.description, "group": t.group})
        })
        .collect();
    let service_types: Vec<_> = if staff.may("GET", "/service-types") {
        state
            .settings()
            .service_types
            .iter()
            .map(|s| json!({"key": s.key, "description": s.description}))
            .collect()
    } else {
        Vec::new()
    };
    render(
        &state,
        &staff,
        "admin/topics.html",
        "Topics",
        json!({
            "current": "/admin/topics",
            "topics": topics,
            "service_types": service_types,
            "may_add": staff.may("POST", "/topics"),
            "may_edit": staff.may("PATCH", "/topics/{key}"),
        }),
    )
}

#[derive(Deserialize)]
pub(super) struct TopicForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    group: String,
}

pub(super) async fn add(
    State(state): State<AppState>,
    Posted { staff, form }: Posted<TopicForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/topics")?;
    let (topic, note) = match add_topic(
        &state,
        &form.key,
        given(&form.name),
        given(&form.description),
        given(&form.group),
    )
    .await
    {
        Ok(done) => done,
        Err(e) => return refused("/admin/topics", e),
    };
    record(&state, &staff, note).await?;
    Ok(done(
        "/admin/topics",
        format!("Topic {} ({}) added.", topic.key, topic.name),
    ))
}

#[derive(Deserialize)]
pub(super) struct DescriptionForm {
    #[serde(default)]
    description: String,
}

pub(super) async fn describe(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Posted { staff, form }: Posted<DescriptionForm>,
) -> Result<Response, AdminError> {
    staff.require("PATCH", "/topics/{key}")?;
    let topic = match find_topic(&state, &key).await {
        Ok(t) => t,
        Err(e) => return refused("/admin/topics", e),
    };
    let (updated, note) = match change_description(&state, &topic, given(&form.description)).await {
        Ok(done) => done,
        Err(e) => return refused("/admin/topics", e),
    };
    record(&state, &staff, note).await?;
    Ok(done(
        "/admin/topics",
        format!("The description of topic {} was changed.", updated.key),
    ))
}

pub(super) async fn wordings(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    staff.require("GET", "/wordings")?;
    let mut rows = Vec::new();
    let mut after = None;
    // Every wording, oldest first, a page at a time as the API reads them.
    loop {
        let page = state.store().wordings(after, 500).await?;
        let more = page.len() == 500;
        after = page.last().map(|w| w.id.0);
        rows.extend(page.into_iter().map(
            |w| json!({"id": w.id.0, "version": format!("v{}", w.id.0), "text": w.text, "hash": w.hash}),
        ));
        if !more {
            break;
        }
    }
    render(
        &state,
        &staff,
        "admin/wordings.html",
        "Wordings",
        json!({
            "current": "/admin/wordings",
            "wordings": rows,
            "may_add": staff.may("POST", "/wordings"),
        }),
    )
}

#[derive(Deserialize)]
pub(super) struct WordingForm {
    #[serde(default)]
    text: String,
}

pub(super) async fn add_wording(
    State(state): State<AppState>,
    Posted { staff, form }: Posted<WordingForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/wordings")?;
    let (w, created, note) = match store_wording(&state, &form.text).await {
        Ok(done) => done,
        Err(e) => return refused("/admin/wordings", e),
    };
    record(&state, &staff, note).await?;
    Ok(done(
        "/admin/wordings",
        if created {
            format!("Wording v{} added.", w.id.0)
        } else {
            format!(
                "That exact text is already wording v{}; it keeps its id.",
                w.id.0
            )
        },
    ))
}
