//! Campaigns: the list with each one's progress, a form for a new one, and
//! one campaign's page (details, what came back, a preview, a test send,
//! and start / pause / resume / cancel as its state allows). A running
//! campaign's progress is also served as JSON for admin.js to refresh.
//!
//! Everything goes through the campaign sender the API uses
//! ([`veto_sender::campaign::Campaigns`]): the same checks, the same state
//! changes, the guard for every recipient.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use veto_sender::campaign::{CampaignError, CampaignSpec, Campaigns};
use veto_store::{Campaign, CampaignProgress, CampaignState};

use super::render::{show_time, thousands};
use super::{AdminError, Posted, Staff, done, done_with_error, render};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/campaigns", get(list).post(create))
        .route("/campaigns/new", get(new_form))
        .route("/campaigns/{id}", get(show))
        .route("/campaigns/{id}/progress", get(progress))
        .route("/campaigns/{id}/test", post(test))
        .route("/campaigns/{id}/cancel", get(confirm_cancel).post(cancel))
        .route("/campaigns/{id}/{action}", post(control))
}

fn sender(state: &AppState) -> Result<&std::sync::Arc<Campaigns>, AdminError> {
    state.campaigns().ok_or_else(|| {
        AdminError::BadRequest(
            "This server does not send campaigns (no campaign sender is configured).".into(),
        )
    })
}

fn id_of(id: &str) -> Result<i64, AdminError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AdminError::NotFound(format!("There is no campaign {id:?}.")))
}

async fn campaign_of(state: &AppState, id: i64) -> Result<Campaign, AdminError> {
    state
        .store()
        .campaign(id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("There is no campaign {id}.")))
}

/// The badge class for a state (its name is always shown as text too).
fn badge(s: CampaignState) -> &'static str {
    match s {
        CampaignState::Sending | CampaignState::Done => "ok",
        CampaignState::Draft | CampaignState::Scheduled | CampaignState::Paused => "warn",
        CampaignState::Cancelled => "bad",
    }
}

/// Whether the campaign's progress may still change on its own.
fn running(s: CampaignState) -> bool {
    matches!(s, CampaignState::Sending | CampaignState::Scheduled)
}

/// What `POST /campaigns/{id}/{action}` can do in this state.
fn actions(s: CampaignState) -> &'static [&'static str] {
    match s {
        CampaignState::Draft => &["start", "cancel"],
        CampaignState::Scheduled | CampaignState::Sending => &["pause", "cancel"],
        CampaignState::Paused => &["resume", "cancel"],
        CampaignState::Cancelled | CampaignState::Done => &[],
    }
}

/// The progress as the pages and the JSON endpoint show it:
/// `{"total", "done", "max", "text", "status", "running"}`.
fn progress_of(c: &Campaign, p: &CampaignProgress) -> Value {
    let withheld = p.refused_total();
    let mut text = format!(
        "{} of {} sent, {} withheld",
        thousands(p.sent),
        thousands(p.total),
        thousands(withheld)
    );
    if p.failed > 0 {
        text.push_str(&format!(", {} failed", thousands(p.failed)));
    }
    json!({
        "total": p.total,
        "done": p.sent + p.failed + withheld,
        "max": p.total.max(1),
        "text": text,
        "status": c.state.as_str(),
        "running": running(c.state),
    })
}

pub(super) async fn list(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    staff.require("GET", "/campaigns")?;
    let mut campaigns = state.store().campaigns().await?;
    campaigns.sort_by_key(|c| std::cmp::Reverse(c.id));
    let mut rows = Vec::new();
    for c in campaigns.iter().take(200) {
        let p = state.store().campaign_progress(c.id).await?;
        rows.push(json!({
            "id": c.id,
            "name": c.name,
            "topic": c.topic,
            "state": c.state.as_str(),
            "badge": badge(c.state),
            "created_at": show_time(c.created_at),
            "progress": progress_of(c, &p),
        }));
    }
    render(
        &state,
        &staff,
        "admin/campaigns.html",
        "Campaigns",
        json!({
            "current": "/admin/campaigns",
            "campaigns": rows,
            "more": campaigns.len() > 200,
            "may_create": staff.may("POST", "/campaigns") && state.campaigns().is_some(),
            "sends": state.campaigns().is_some(),
        }),
    )
}

/// The fields of `POST /api/v1/campaigns`, as a form sends them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CampaignForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    from_name: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    html: String,
    #[serde(default)]
    scheduled_at: String,
    #[serde(default)]
    rate: String,
    #[serde(default)]
    domain_rate: String,
    #[serde(default)]
    concurrency: String,
}

async fn form_page(
    state: &AppState,
    staff: &Staff,
    form: &CampaignForm,
    error: Option<(&str, String)>,
) -> Result<Response, AdminError> {
    let topics: Vec<Value> = state
        .store()
        .topics()
        .await?
        .iter()
        .map(|t| json!({"key": t.key.as_str(), "name": t.name}))
        .collect();
    let mut res = render(
        state,
        staff,
        "admin/campaign_new.html",
        "New campaign",
        json!({
            "current": "/admin/campaigns",
            "topics": topics,
            "form": {
                "name": form.name, "topic": form.topic, "from": form.from,
                "from_name": form.from_name, "subject": form.subject, "text": form.text,
                "html": form.html, "scheduled_at": form.scheduled_at, "rate": form.rate,
                "domain_rate": form.domain_rate, "concurrency": form.concurrency,
            },
            "error": error.as_ref().map(|(field, text)| json!({"field": field, "text": text})),
        }),
    )?;
    if error.is_some() {
        *res.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

pub(super) async fn new_form(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    staff.require("POST", "/campaigns")?;
    sender(&state)?;
    form_page(&state, &staff, &CampaignForm::default(), None).await
}

/// An optional number field: `None` when empty.
fn number(field: &'static str, v: &str) -> Result<Option<f64>, (&'static str, String)> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<f64>().map(Some).map_err(|_| {
        (
            field,
            format!("{field}: {v:?} is not a number; give messages per second, or leave it empty"),
        )
    })
}

/// The form as the sender's [`CampaignSpec`]; the sender checks the rest
/// (name, topic, address, templates, ranges), as for the API.
fn spec_of(form: &CampaignForm, by: String) -> Result<CampaignSpec, (&'static str, String)> {
    let opt = |s: &str| Some(s.to_owned()).filter(|s| !s.trim().is_empty());
    let scheduled_at = match form.scheduled_at.trim() {
        "" => None,
        s => Some(parse_time(s).ok_or_else(|| {
            (
                "scheduled_at",
                format!(
                    "scheduled_at: {s:?} is not a time; give it as 2026-12-24 09:00 (UTC) or 2026-12-24T09:00:00Z"
                ),
            )
        })?),
    };
    let concurrency = match form.concurrency.trim() {
        "" => None,
        s => Some(s.parse::<u32>().map_err(|_| {
            (
                "concurrency",
                format!("concurrency must be a whole number from 1 to 256, not {s:?}"),
            )
        })?),
    };
    Ok(CampaignSpec {
        name: form.name.clone(),
        topic: form.topic.trim().to_owned(),
        from_name: opt(&form.from_name),
        from_address: form.from.trim().to_owned(),
        subject: form.subject.clone(),
        text: form.text.replace("\r\n", "\n"),
        html: opt(&form.html).map(|h| h.replace("\r\n", "\n")),
        scheduled_at,
        rate: number("rate", &form.rate)?,
        domain_rate: number("domain_rate", &form.domain_rate)?,
        concurrency,
        created_by: by,
    })
}

/// An RFC 3339 time, or a date and time in UTC as a `datetime-local`
/// input sends it (`2026-12-24T09:00`, or with a space).
fn parse_time(s: &str) -> Option<veto_core::Timestamp> {
    if let Ok(t) = s.parse::<veto_core::Timestamp>() {
        return Some(t);
    }
    let civil: jiff::civil::DateTime = s.replacen(' ', "T", 1).parse().ok()?;
    jiff::tz::Offset::UTC.to_timestamp(civil).ok()
}

pub(super) async fn create(
    State(state): State<AppState>,
    Posted { staff, form }: Posted<CampaignForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/campaigns")?;
    let campaigns = sender(&state)?;
    let spec = match spec_of(&form, staff.actor()) {
        Ok(spec) => spec,
        Err(e) => return form_page(&state, &staff, &form, Some(e)).await,
    };
    let c = match campaigns.create(spec).await {
        Ok(c) => c,
        Err(CampaignError::Invalid { field, message }) => {
            return form_page(
                &state,
                &staff,
                &form,
                Some((field, format!("{field}: {message}"))),
            )
            .await;
        }
        Err(e) => return Err(campaign_error(e)),
    };
    staff
        .record(
            &state,
            "campaigns.create",
            Some(format!("campaign:{}", c.id)),
            json!({"name": c.name, "topic": c.topic}),
        )
        .await?;
    Ok(done(
        &format!("/admin/campaigns/{}", c.id),
        format!(
            "Campaign \"{}\" was created as a draft. Preview it, send a test, then start it.",
            c.name
        ),
    ))
}

fn campaign_error(e: CampaignError) -> AdminError {
    match e {
        CampaignError::Invalid { field, message } => {
            AdminError::BadRequest(format!("{field}: {message}"))
        }
        CampaignError::NotFound(id) => AdminError::NotFound(format!("There is no campaign {id}.")),
        CampaignError::Conflict(m) => AdminError::BadRequest(m),
        CampaignError::Store(e) => AdminError::Store(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ShowQuery {
    /// An address to preview the campaign for.
    preview: Option<String>,
}

pub(super) async fn show(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/campaigns/{id}")?;
    let id = id_of(&id)?;
    // With a sender, its status holds the campaign, progress, feedback and
    // rates, read once; without one, the store's own reads.
    let (c, p, feedback, rates) = match state.campaigns() {
        Some(sender) => {
            let s = sender.status(id).await.map_err(campaign_error)?;
            (s.campaign, s.progress, s.feedback, Some(s.rates))
        }
        None => {
            let c = campaign_of(&state, id).await?;
            let store = state.store();
            let p = store.campaign_progress(id).await?;
            let feedback = store.campaign_feedback(id).await?;
            (c, p, feedback, None)
        }
    };
    let may_run = staff.may("POST", "/campaigns/{id}/{action}") && state.campaigns().is_some();
    let may_preview = staff.may("POST", "/campaigns/{id}/preview") && state.campaigns().is_some();
    let may_test = staff.may("POST", "/campaigns/{id}/test") && state.campaigns().is_some();
    if q.preview.is_some() {
        staff.require("POST", "/campaigns/{id}/preview")?;
    }
    let preview = match (q.preview.as_deref().map(str::trim), state.campaigns()) {
        (None, _) => None,
        (Some(""), _) => {
            Some(json!({"error": "Enter the address of a contact to preview the campaign for."}))
        }
        (Some(addr), Some(sender)) => Some(match sender.preview(id, addr).await {
            Ok(p) => {
                let mut shown = shown_message(p.message.as_bytes());
                if let Some(o) = shown.as_object_mut() {
                    o.insert("address".into(), json!(addr));
                    o.insert("allowed".into(), json!(p.allowed));
                    o.insert("rule".into(), json!(p.rule));
                    o.insert("reason".into(), json!(p.reason));
                }
                shown
            }
            Err(CampaignError::Invalid { field, message }) => {
                json!({"error": format!("{field}: {message}"), "address": addr})
            }
            Err(e) => return Err(campaign_error(e)),
        }),
        (Some(_), None) => None,
    };
    let refused: Vec<Value> = p
        .refused
        .iter()
        .map(|(reason, n)| json!({"reason": reason, "count": thousands(*n)}))
        .collect();
    render(
        &state,
        &staff,
        "admin/campaign.html",
        &format!("Campaign: {}", c.name),
        json!({
            "current": "/admin/campaigns",
            "c": {
                "id": c.id, "name": c.name, "topic": c.topic, "from_name": c.from_name,
                "from_address": c.from_address, "subject": c.subject, "text": c.text,
                "html": c.html, "template_version": c.template_version,
                "state": c.state.as_str(), "badge": badge(c.state), "state_reason": c.state_reason,
                "scheduled_at": c.scheduled_at.map(show_time),
                "rate": c.rate, "domain_rate": c.domain_rate, "concurrency": c.concurrency,
                "created_by": c.created_by, "created_at": show_time(c.created_at),
                "started_at": c.started_at.map(show_time),
                "finished_at": c.finished_at.map(show_time),
            },
            "progress": progress_of(&c, &p),
            "counts": {
                "total": thousands(p.total), "queued": thousands(p.queued),
                "in_flight": thousands(p.in_flight), "sent": thousands(p.sent),
                "failed": thousands(p.failed), "refused": thousands(p.refused_total()),
            },
            "refused": refused,
            "feedback": {
                "unsubscribes": thousands(feedback.unsubscribes),
                "hard_bounces": thousands(feedback.hard_bounces),
                "complaints": thousands(feedback.complaints),
            },
            "rates": rates.map(|r| json!({
                "complaint": percent(r.complaint_rate), "complaint_limit": percent(r.complaint_limit),
                "hard_bounce": percent(r.hard_bounce_rate), "hard_bounce_limit": percent(r.hard_bounce_limit),
                "unsubscribe": percent(r.unsubscribe_rate),
            })),
            "actions": if may_run { actions(c.state) } else { &[] },
            "may_preview": may_preview,
            "may_test": may_test,
            "preview": preview,
            "max_test": veto_sender::campaign::MAX_TEST_RECIPIENTS,
        }),
    )
}

fn percent(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

/// A message as the pages show it: the subject, and each text and HTML
/// part as text (HTML as its escaped source, never rendered).
pub(super) fn shown_message(raw: &[u8]) -> Value {
    let Some(m) = mail_parser::MessageParser::default().parse(raw) else {
        return json!({"error": "The message could not be read as MIME."});
    };
    let mut text = Vec::new();
    let mut html = Vec::new();
    for part in &m.parts {
        match &part.body {
            mail_parser::PartType::Text(t) => text.push(t.to_string()),
            mail_parser::PartType::Html(h) => html.push(h.to_string()),
            _ => {}
        }
    }
    let headers: Vec<Value> = m
        .headers()
        .iter()
        .map(|h| {
            let raw = m
                .raw_message
                .get(h.offset_start as usize..h.offset_end as usize)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            // Folded lines unfolded, for reading.
            let value = raw
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            // The name as written (mail-parser would say `List-ID`).
            let name = m
                .raw_message
                .get(h.offset_field as usize..h.offset_start as usize)
                .map(String::from_utf8_lossy)
                .map(|n| n.trim().trim_end_matches(':').trim().to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| h.name.as_str().to_owned());
            json!({"name": name, "value": value})
        })
        .collect();
    json!({
        "subject": m.subject().unwrap_or(""),
        "headers": headers,
        "text": text,
        "html": html,
    })
}

pub(super) async fn progress(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/campaigns/{id}")?;
    let id = id_of(&id)?;
    let c = campaign_of(&state, id).await?;
    let p = state.store().campaign_progress(id).await?;
    let mut body = progress_of(&c, &p);
    if let Some(o) = body.as_object_mut() {
        o.remove("max");
    }
    let mut res = Json(body).into_response();
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

#[derive(Debug, Deserialize)]
pub(super) struct TestForm {
    #[serde(default)]
    to: String,
}

pub(super) async fn test(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<TestForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/campaigns/{id}/test")?;
    let id = id_of(&id)?;
    let sender = sender(&state)?;
    let back = format!("/admin/campaigns/{id}");
    let to: Vec<String> = form
        .to
        .split([',', ';', ' ', '\n', '\r', '\t'])
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let results = match sender.test_send(id, &to).await {
        Ok(r) => r,
        Err(CampaignError::Invalid { field, message }) => {
            return Ok(done_with_error(&back, format!("{field}: {message}")));
        }
        Err(e) => return Err(campaign_error(e)),
    };
    staff
        .record(
            &state,
            "campaigns.test",
            Some(format!("campaign:{id}")),
            json!({"to": to.len()}),
        )
        .await?;
    let text = results
        .iter()
        .map(|r| {
            if r.sent {
                format!("Test sent to {}.", r.to)
            } else {
                format!("Not sent to {}: {}.", r.to, r.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if results.iter().all(|r| r.sent) {
        Ok(done(&back, text))
    } else {
        Ok(done_with_error(&back, text))
    }
}

pub(super) async fn confirm_cancel(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/campaigns/{id}/{action}")?;
    let id = id_of(&id)?;
    let c = campaign_of(&state, id).await?;
    let p = state.store().campaign_progress(id).await?;
    render(
        &state,
        &staff,
        "admin/campaign_cancel.html",
        &format!("Cancel campaign: {}", c.name),
        json!({
            "current": "/admin/campaigns",
            "c": {"id": c.id, "name": c.name, "state": c.state.as_str(), "badge": badge(c.state)},
            "progress": progress_of(&c, &p),
            "may_cancel": actions(c.state).contains(&"cancel"),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct CancelForm {
    #[serde(default)]
    confirm: String,
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<CancelForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/campaigns/{id}/{action}")?;
    let n = id_of(&id)?;
    if form.confirm != "yes" {
        return Ok(done_with_error(
            &format!("/admin/campaigns/{n}/cancel"),
            "Tick the box to confirm that the campaign should be cancelled; nothing was changed.",
        ));
    }
    act(&state, &staff, n, "cancel").await
}

pub(super) async fn control(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    Posted { staff, .. }: Posted<Value>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/campaigns/{id}/{action}")?;
    let id = id_of(&id)?;
    match action.as_str() {
        "start" | "pause" | "resume" => act(&state, &staff, id, &action).await,
        // Cancelling needs its confirmation page.
        _ => Err(AdminError::NotFound(format!(
            "There is no campaign action {action:?}: use start, pause, resume or cancel."
        ))),
    }
}

/// Starts, pauses, resumes or cancels, as `POST /api/v1/campaigns/{id}/{action}`.
async fn act(
    state: &AppState,
    staff: &Staff,
    id: i64,
    action: &str,
) -> Result<Response, AdminError> {
    let sender = sender(state)?;
    let by = staff.actor();
    let back = format!("/admin/campaigns/{id}");
    let result = match action {
        "start" => sender.start(id).await,
        "pause" => sender.pause(id, &by).await,
        "resume" => sender.resume(id).await,
        _ => sender.cancel(id, &by).await,
    };
    let c = match result {
        Ok(c) => c,
        Err(CampaignError::Conflict(m)) => {
            return Ok(done_with_error(
                &back,
                format!("The campaign could not be {}: {m}", past(action)),
            ));
        }
        Err(e) => return Err(campaign_error(e)),
    };
    tracing::info!(campaign = id, action, by = %by, "campaign changed");
    staff
        .record(
            state,
            &format!("campaigns.{action}"),
            Some(format!("campaign:{id}")),
            json!({"state": c.state}),
        )
        .await?;
    Ok(done(
        &back,
        format!(
            "Campaign \"{}\" was {}; it is now {}.",
            c.name,
            past(action),
            c.state
        ),
    ))
}

fn past(action: &str) -> &'static str {
    match action {
        "start" => "started",
        "pause" => "paused",
        "resume" => "resumed",
        _ => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_utc() {
        let want: veto_core::Timestamp = "2026-12-24T09:00:00Z".parse().unwrap();
        assert_eq!(parse_time("2026-12-24T09:00"), Some(want));
        assert_eq!(parse_time("2026-12-24 09:00"), Some(want));
        assert_eq!(parse_time("2026-12-24T09:00:00Z"), Some(want));
        assert_eq!(parse_time("next week"), None);
    }
}
