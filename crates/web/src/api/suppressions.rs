//! The suppression list: every standing "no" (withdrawals, opt-outs at
//! collection, objections, complaints, hard bounces, erasures). Staff may
//! add one; a DPO may take out only a hard bounce found to be wrong.
//! Complaints, objections, withdrawals and erasures can never be removed by
//! staff: only the person can change what they said.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;
use veto_core::{EventKind, NewEvent, Scope, Source, Timestamp};
use veto_store::{Append, ContactInput, Evidence, SuppressionEntry};

use super::audit::{Audited, note};
use super::contacts::record_event;
use super::fields::{Fields, JsonBody};
use super::page::ApiQuery;
use super::schema::*;
use super::topics::PageQuery;
use super::{ApiError, Caller, positive_id};
use crate::AppState;

/// Every standing "no", by the event behind it.
#[utoipa::path(get, path = "/api/v1/suppressions", tag = "suppressions", params(PageQuery),
    responses((status = 200, body = SuppressionsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<SuppressionsPage>, ApiError> {
    let paging = q.paging()?;
    let rows = state
        .store()
        .suppressions(paging.after, paging.fetch())
        .await?;
    let (rows, next_cursor) = paging.finish(rows, |s| s.event);
    Ok(Json(SuppressionsPage {
        suppressions: rows.into_iter().map(SuppressionOut::from).collect(),
        next_cursor,
    }))
}

/// Adds a "no" recorded by staff: a withdrawal, an objection, a hard bounce
/// or a complaint (source `admin`). It takes effect before the next hand-off.
#[utoipa::path(post, path = "/api/v1/suppressions", tag = "suppressions", request_body = SuppressionIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = EventRecorded), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn add(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<EventRecorded>)>, ApiError> {
    let added = add_suppression(&state, caller.actor(), &body).await?;
    Ok(Audited(
        note(
            "suppressions.add",
            format!("contact:{}", added.recorded.contact_id),
            added.detail(),
        ),
        (StatusCode::CREATED, Json(added.recorded)),
    ))
}

/// What [`add_suppression`] recorded.
pub(crate) struct SuppressionAdded {
    pub recorded: EventRecorded,
    pub kind: &'static str,
    pub topic: Option<String>,
}

impl SuppressionAdded {
    /// The audit trail's detail.
    pub fn detail(&self) -> serde_json::Value {
        json!({"event": self.recorded.event_id, "kind": self.kind, "topic": self.topic})
    }
}

/// Checks and records a "no" from staff (`email`, `kind`, `topic`,
/// `channel`): the API's `POST /suppressions` and the admin UI's form.
pub(crate) async fn add_suppression(
    state: &AppState,
    actor: String,
    body: &Fields,
) -> Result<SuppressionAdded, ApiError> {
    body.only(&["email", "kind", "topic", "channel"])?;
    let email = body.email()?;
    let kind_name = body.required_str("kind", "withdraw, object, hard_bounce or complaint")?;
    let kind = match kind_name {
        "withdraw" => EventKind::Withdraw,
        "object" => EventKind::Object,
        "hard_bounce" => EventKind::HardBounce,
        "complaint" => EventKind::Complaint,
        other => {
            return Err(ApiError::invalid(
                "kind",
                "invalid_value",
                format!("kind must be withdraw, object, hard_bounce or complaint, not {other:?}"),
            ));
        }
    };
    let topic = body.topic(state).await?;
    if topic.is_some() && kind != EventKind::Withdraw {
        return Err(ApiError::invalid(
            "topic",
            "not_applicable",
            format!("a {kind_name} is about all marketing; leave topic out"),
        ));
    }
    let channel = if kind == EventKind::Object {
        if body.value("channel").is_some() {
            return Err(ApiError::invalid(
                "channel",
                "not_applicable",
                "an objection covers every channel; leave channel out",
            ));
        }
        None
    } else {
        Some(body.channel()?)
    };
    let item = Append {
        contact: ContactInput::new(email.clone()),
        event: NewEvent {
            kind: kind.clone(),
            scope: topic.as_ref().map_or(Scope::All, |t| Scope::Topic(t.id)),
            channel,
            source: Source::Admin,
            at: Timestamp::now(),
        },
        evidence: Evidence::default(),
        actor,
    };
    let recorded = record_event(state, &email, item).await?;
    Ok(SuppressionAdded {
        recorded,
        kind: kind.name(),
        topic: topic.map(|t| t.key.to_string()),
    })
}

/// Takes out a hard bounce found to be wrong (a `bounce_cleared` event is
/// appended; the bounce stays in the ledger). Anything else is refused
/// with 409: what the person said, and erasures, stay.
#[utoipa::path(delete, path = "/api/v1/suppressions/{id}", tag = "suppressions",
    params(("id" = i64, Path, minimum = 1, description = "the suppression's id (the event behind it)")),
    responses((status = 200, body = BounceCleared), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Audited<Json<BounceCleared>>, ApiError> {
    let id = positive_id(&id, "suppression")?;
    let (recorded, entry) = clear_bounce(&state, caller.actor(), id).await?;
    Ok(Audited(
        note(
            "suppressions.remove",
            format!("contact:{}", recorded.contact_id),
            json!({"bounce_event": id, "event": recorded.event_id, "channel": entry.channel}),
        ),
        Json(BounceCleared {
            event_id: recorded.event_id,
            contact_id: recorded.contact_id,
        }),
    ))
}

/// Takes out suppression `id` if it is a hard bounce (a `bounce_cleared`
/// event); anything else is refused (409) with the reason. The API's
/// `DELETE /suppressions/{id}` and the admin UI's remove button.
pub(crate) async fn clear_bounce(
    state: &AppState,
    actor: String,
    id: i64,
) -> Result<(EventRecorded, SuppressionEntry), ApiError> {
    let Some(entry) = state.store().suppression(id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no standing suppression {id} (it may have been lifted or replaced)"),
        ));
    };
    if !entry.removable() {
        let what = match entry.kind.as_str() {
            "complaint" => "a spam complaint",
            "objection" => "an objection to marketing",
            "erased" => "an erasure",
            "refused" => "an opt-out at collection",
            _ => "a withdrawal of consent",
        };
        return Err(ApiError::conflict(
            "not_removable",
            None,
            format!(
                "suppression {id} is {what}: staff can never remove it; only the person can change what they said (preference centre or a confirmed signup). Only hard bounces can be taken out"
            ),
        ));
    }
    let email = entry
        .email
        .as_deref()
        .and_then(|e| veto_core::EmailAddress::parse(e).ok())
        .ok_or_else(|| {
            ApiError::conflict(
                "not_removable",
                None,
                format!("suppression {id}'s contact was erased"),
            )
        })?;
    let channel = entry.channel.as_deref().and_then(|c| c.parse().ok());
    let item = Append {
        contact: ContactInput::new(email.clone()),
        event: NewEvent {
            kind: EventKind::BounceCleared,
            scope: Scope::All,
            channel,
            source: Source::Admin,
            at: Timestamp::now(),
        },
        evidence: Evidence::default(),
        actor,
    };
    let recorded = record_event(state, &email, item).await?;
    Ok((recorded, entry))
}
