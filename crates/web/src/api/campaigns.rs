//! `/api/v1/campaigns`: create, preview, test, start, pause, resume,
//! cancel and watch campaigns. Marketers, DPOs and admins may change them;
//! any key may read them. Sending happens in `veto serve`'s campaign
//! sender, each recipient checked by the guard immediately before hand-off.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use veto_core::Role;
use veto_sender::campaign::{CampaignError, CampaignSpec, Campaigns};

use super::audit::{Audited, note};
use super::fields::JsonBody;
use super::page::ApiQuery;
use super::schema::{
    CampaignIn, CampaignResult, CampaignsPage, ErrorBody, PreviewIn, PreviewResult, TestIn,
    TestResults,
};
use super::topics::PageQuery;
use super::{ApiError, Caller, positive_id};
use crate::AppState;

const CREATE_FIELDS: &[&str] = &[
    "name",
    "topic",
    "from",
    "from_name",
    "subject",
    "text",
    "html",
    "scheduled_at",
    "rate",
    "domain_rate",
    "concurrency",
];

type Reply = Result<(StatusCode, Json<Value>), ApiError>;
type AuditedReply = Result<Audited<(StatusCode, Json<Value>)>, ApiError>;

fn campaigns(state: &AppState) -> Result<&std::sync::Arc<Campaigns>, ApiError> {
    state.campaigns().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "this server does not send campaigns",
        )
    })
}

/// Marketing work: marketer, DPO and admin keys.
fn may_run(caller: &Caller) -> Result<(), ApiError> {
    match caller.0.role {
        Role::Marketer | Role::Dpo | Role::Admin => Ok(()),
        role => Err(ApiError::forbidden(format!(
            "a {role} key may not create or run campaigns; use a marketer key"
        ))),
    }
}

fn id_of(id: &str) -> Result<i64, ApiError> {
    positive_id(id, "campaign")
}

impl From<CampaignError> for ApiError {
    fn from(e: CampaignError) -> ApiError {
        match e {
            CampaignError::Invalid { field, message } => {
                ApiError::invalid(field, "invalid_campaign", format!("{field}: {message}"))
            }
            CampaignError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("there is no campaign {id}"),
            ),
            CampaignError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            CampaignError::Store(e) => ApiError::from(e),
        }
    }
}

/// A new draft campaign.
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "campaigns", request_body = CampaignIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = CampaignResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> AuditedReply {
    may_run(&caller)?;
    body.only(CREATE_FIELDS)?;
    let spec = CampaignSpec {
        name: body
            .text("name", 200)?
            .ok_or_else(|| ApiError::invalid("name", "missing_field", "name is required"))?,
        topic: body
            .required_str("topic", "the topic the campaign markets")?
            .to_owned(),
        from_address: body
            .required_str("from", "the sender's address")?
            .to_owned(),
        from_name: body.text("from_name", 200)?,
        subject: body
            .required_str("subject", "the subject template")?
            .to_owned(),
        text: body
            .required_str("text", "the plain-text template")?
            .to_owned(),
        html: body.str("html")?.map(str::to_owned),
        scheduled_at: body.time("scheduled_at")?,
        rate: body.number("rate")?,
        domain_rate: body.number("domain_rate")?,
        concurrency: match body.number("concurrency")? {
            None => None,
            Some(n) if n.fract() == 0.0 && (1.0..=256.0).contains(&n) => Some(n as u32),
            Some(n) => {
                return Err(ApiError::invalid(
                    "concurrency",
                    "invalid_campaign",
                    format!("concurrency must be a whole number from 1 to 256, not {n}"),
                ));
            }
        },
        created_by: format!("api-key:{}", caller.0.prefix),
    };
    let c = campaigns(&state)?.create(spec).await?;
    Ok(Audited(
        note(
            "campaigns.create",
            format!("campaign:{}", c.id),
            json!({"name": c.name, "topic": c.topic}),
        ),
        (StatusCode::CREATED, Json(json!({ "campaign": c }))),
    ))
}

/// Every campaign, by id.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns", params(PageQuery),
    responses((status = 200, body = CampaignsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Reply {
    let paging = q.paging()?;
    let (rows, next_cursor) = paging.slice(state.store().campaigns().await?, |c| c.id);
    Ok((
        StatusCode::OK,
        Json(json!({ "campaigns": rows, "next_cursor": next_cursor })),
    ))
}

/// The campaign, its progress, and what came back.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = CampaignResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Reply {
    let status = campaigns(&state)?.status(id_of(&id)?).await?;
    Ok((StatusCode::OK, Json(json!({ "campaign": status }))))
}

/// Renders the campaign for one person, with the guard's decision for them.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/preview", tag = "campaigns", request_body = PreviewIn,
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = PreviewResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Reply {
    may_run(&caller)?;
    body.only(&["contact"])?;
    let email = body.required_str("contact", "the address to render the campaign for")?;
    let p = campaigns(&state)?.preview(id_of(&id)?, email).await?;
    Ok((StatusCode::OK, Json(json!({ "preview": p }))))
}

/// Sends test copies (each still checked by the guard).
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/test", tag = "campaigns", request_body = TestIn,
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = TestResults), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> AuditedReply {
    may_run(&caller)?;
    body.only(&["to"])?;
    let to = body.strings("to")?;
    let id = id_of(&id)?;
    let results = campaigns(&state)?.test_send(id, &to).await?;
    Ok(Audited(
        note(
            "campaigns.test",
            format!("campaign:{id}"),
            json!({"to": to.len()}),
        ),
        (StatusCode::OK, Json(json!({ "results": results }))),
    ))
}

/// Starts, pauses, resumes or cancels a campaign.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/{action}", tag = "campaigns",
    params(("id" = i64, Path, minimum = 1),
        ("action" = String, Path, description = "start, pause, resume or cancel", pattern = "^(start|pause|resume|cancel)$")),
    responses((status = 200, body = CampaignResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn control(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> AuditedReply {
    may_run(&caller)?;
    let id = id_of(&id)?;
    let c = campaigns(&state)?;
    let by = format!("api-key:{}", caller.0.prefix);
    let (campaign, verb) = match action.as_str() {
        "start" => (c.start(id).await?, "campaigns.start"),
        "pause" => (c.pause(id, &by).await?, "campaigns.pause"),
        "resume" => (c.resume(id).await?, "campaigns.resume"),
        "cancel" => (c.cancel(id, &by).await?, "campaigns.cancel"),
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_endpoint",
                format!(
                    "there is no campaign action {other:?}: use start, pause, resume, cancel, preview or test"
                ),
            ));
        }
    };
    tracing::info!(campaign = id, action = %action, by = %by, "campaign changed");
    Ok(Audited(
        note(
            verb,
            format!("campaign:{id}"),
            json!({"state": campaign.state}),
        ),
        (StatusCode::OK, Json(json!({ "campaign": campaign }))),
    ))
}
