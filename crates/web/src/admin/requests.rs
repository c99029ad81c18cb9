//! GDPR requests: the DPO's list of data-subject requests with their Art
//! 12(3) deadlines (colour and words for due soon and overdue), one page
//! per request, and the forms that record it, the identity check, an
//! extension and the answer — through the same store functions, role rows
//! and audit actions as `/api/v1/requests`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use veto_core::{EmailAddress, Timestamp};
use veto_store::describe;
use veto_store::{
    NewSubjectRequest, Outcome, RequestFilter, RequestKind, RequestRefused, RequestVia,
    SubjectRequest,
};

use super::render::show_time;
use super::{AdminError, Posted, Staff, done, done_with_error, render};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/requests", get(list).post(create))
        .route("/requests/{id}", get(show))
        .route("/requests/{id}/identity-checked", post(identity_checked))
        .route("/requests/{id}/extend", post(extend))
        .route("/requests/{id}/answer", post(answer))
}

/// At most this many requests on the list page.
const SHOWN: i64 = 500;
/// Fewer days left than this: "due soon".
const SOON_DAYS: i64 = 7;

/// The deadline in words, with a badge class: never by colour alone.
fn deadline_of(r: &SubjectRequest, now: Timestamp) -> Value {
    let days = r.days_left(now);
    let (badge, text) = match &r.answer {
        Some(a) => {
            let late = a.at > r.deadline();
            match (&a.outcome, late) {
                (Outcome::Done, false) => ("ok", "answered in time".to_owned()),
                (Outcome::Refused { .. }, false) => ("ok", "refused in time".to_owned()),
                (_, true) => ("bad", "answered late".to_owned()),
            }
        }
        None if days < 0 => (
            "bad",
            format!(
                "overdue by {} day{}",
                -days,
                if days == -1 { "" } else { "s" }
            ),
        ),
        None if days == 0 => ("bad", "due today".to_owned()),
        None if days <= SOON_DAYS => (
            "warn",
            format!(
                "due soon: {days} day{} left",
                if days == 1 { "" } else { "s" }
            ),
        ),
        None => ("ok", format!("{days} days left")),
    };
    json!({"badge": badge, "text": text, "date": describe::day(r.deadline()), "days_left": days})
}

fn status_text(r: &SubjectRequest) -> &'static str {
    match r.status() {
        veto_store::RequestStatus::Open => "open: identity not checked yet",
        veto_store::RequestStatus::IdentityChecked => "identity checked",
        veto_store::RequestStatus::Answered => "answered",
        veto_store::RequestStatus::Refused => "refused",
    }
}

fn row(r: &SubjectRequest, now: Timestamp) -> Value {
    json!({
        "id": r.id,
        "kind": r.kind.as_str(),
        "article": r.kind.article(),
        "email": r.email,
        "contact": r.contact.map(|c| c.0),
        "via": r.via.as_str().replace('_', " "),
        "received": show_time(r.received_at),
        "deadline": deadline_of(r, now),
        "status": status_text(r),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ListQuery>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/requests")?;
    let (filter, current) = match q.status.as_deref().unwrap_or("open") {
        "open" => (RequestFilter::Open, "open"),
        "soon" => (RequestFilter::DueWithin(SOON_DAYS), "soon"),
        "overdue" => (RequestFilter::Overdue, "overdue"),
        "answered" => (RequestFilter::Answered, "answered"),
        "all" => (RequestFilter::All, "all"),
        other => {
            return Err(AdminError::BadRequest(format!(
                "There is no list of {other:?} requests: choose open, soon, overdue, answered or all."
            )));
        }
    };
    let now = Timestamp::now();
    let store = state.store();
    let rows = store.requests(filter, now, None, SHOWN + 1).await?;
    let counts = store.request_counts(now).await?;
    let more = rows.len() as i64 > SHOWN;
    let rows: Vec<Value> = rows
        .iter()
        .take(SHOWN as usize)
        .map(|r| row(r, now))
        .collect();
    let filters: Vec<Value> = [
        ("open", "Open"),
        ("soon", "Due within 7 days or overdue"),
        ("overdue", "Overdue"),
        ("answered", "Answered"),
        ("all", "All"),
    ]
    .iter()
    .map(|(k, label)| json!({"key": k, "label": label, "current": *k == current}))
    .collect();
    render(
        &state,
        &staff,
        "admin/requests.html",
        "GDPR requests",
        json!({
            "current": "/admin/requests",
            "requests": rows,
            "more": more,
            "counts": counts,
            "filters": filters,
            "may_create": staff.may("POST", "/requests"),
            "kinds": RequestKind::ALL.iter().map(|k| json!({"key": k.as_str(), "article": k.article()})).collect::<Vec<_>>(),
            "vias": RequestVia::ALL.iter().filter(|v| **v != RequestVia::PreferenceCentre).map(|v| json!({"key": v.as_str(), "label": v.as_str().replace('_', " ")})).collect::<Vec<_>>(),
        }),
    )
}

fn id_of(id: &str) -> Result<i64, AdminError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AdminError::NotFound(format!("There is no request {id:?}.")))
}

pub(super) async fn show(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/requests/{id}")?;
    let id = id_of(&id)?;
    let r = state
        .store()
        .request(id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("There is no request {id}.")))?;
    let now = Timestamp::now();
    let open = r.answer.is_none();
    let latest = veto_store::latest_extension(r.received_at)?;
    let (outcome, refusal) = match r.answer.as_ref().map(|a| &a.outcome) {
        Some(Outcome::Done) => (Some("done"), None),
        Some(Outcome::Refused { reason }) => (Some("refused"), Some(reason.clone())),
        None => (None, None),
    };
    let r_json = json!({
        "id": r.id,
        "kind": r.kind.as_str(),
        "article": r.kind.article(),
        "erasure": r.kind == RequestKind::Erasure,
        "email": r.email,
        "contact": r.contact.map(|c| c.0),
        "via": r.via.as_str().replace('_', " "),
        "note": r.note,
        "received": show_time(r.received_at),
        "first_due": describe::day(r.due_at),
        "deadline": deadline_of(&r, now),
        "status": status_text(&r),
        "extension": r.extension.as_ref().map(|e| json!({"date": describe::day(e.due_at), "reason": e.reason, "at": show_time(e.at), "by": e.by})),
        "identity": r.identity.as_ref().map(|i| json!({"at": show_time(i.at), "by": i.by, "how": i.how})),
        "answer": r.answer.as_ref().map(|a| json!({"at": show_time(a.at), "by": a.by, "outcome": outcome, "reason": refusal})),
        "created_by": r.created_by,
    });
    let may = |path: &str| staff.may("POST", path);
    render(
        &state,
        &staff,
        "admin/request.html",
        &format!("GDPR request {id}"),
        json!({
            "current": "/admin/requests",
            "r": r_json,
            "may_check": open && r.identity.is_none() && may("/requests/{id}/identity-checked"),
            "may_extend": open && r.extension.is_none() && now <= r.due_at && may("/requests/{id}/extend"),
            "may_answer": open && may("/requests/{id}/answer"),
            "needs_check": r.identity.is_none(),
            "latest_extension": latest.strftime("%Y-%m-%d").to_string(),
            "latest_extension_text": describe::day(latest),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct NewForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    via: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    received_on: String,
}

const LIST: &str = "/admin/requests";

pub(super) async fn create(
    State(state): State<AppState>,
    Posted { staff, form }: Posted<NewForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/requests")?;
    let Some(kind) = RequestKind::parse(form.kind.trim()) else {
        return Ok(done_with_error(
            LIST,
            "Not recorded: choose what the person asked for (Kind).",
        ));
    };
    let Some(via) = RequestVia::parse(form.via.trim()) else {
        return Ok(done_with_error(
            LIST,
            "Not recorded: choose how the request came in (Received by).",
        ));
    };
    let email = match EmailAddress::parse(form.email.trim()) {
        Ok(e) => e,
        Err(e) => {
            return Ok(done_with_error(
                LIST,
                format!("Not recorded: the Address is not an email address ({e})."),
            ));
        }
    };
    let now = Timestamp::now();
    let received_at = match form.received_on.trim() {
        "" => now,
        s => match s.parse::<jiff::civil::Date>().ok().and_then(|d| {
            d.to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .ok()
                .map(|z| z.timestamp())
        }) {
            Some(t) if t <= now => t,
            Some(_) => {
                return Ok(done_with_error(
                    LIST,
                    "Not recorded: Received on is in the future.",
                ));
            }
            None => {
                return Ok(done_with_error(
                    LIST,
                    format!(
                        "Not recorded: Received on must be a date such as 2027-01-31, not {s:?}."
                    ),
                ));
            }
        },
    };
    let note = Some(form.note.trim().to_owned()).filter(|n| !n.is_empty());
    let r = match state
        .store()
        .create_request(NewSubjectRequest {
            kind,
            contact: None,
            email: Some(email),
            via,
            note,
            received_at,
            actor: staff.actor(),
        })
        .await
    {
        Ok(r) => r,
        Err(veto_store::StoreError::Invalid(m)) => {
            return Ok(done_with_error(LIST, format!("Not recorded: {m}.")));
        }
        Err(e) => return Err(e.into()),
    };
    staff
        .record(
            &state,
            "requests.create",
            Some(format!("request:{}", r.id)),
            json!({"kind": kind.as_str(), "via": via.as_str(), "contact": r.contact.map(|c| c.0), "due_at": r.due_at.to_string()}),
        )
        .await?;
    Ok(done(
        &format!("/admin/requests/{}", r.id),
        format!(
            "Recorded request {}: {} ({}), due {}.",
            r.id,
            kind.as_str(),
            kind.article(),
            describe::day(r.due_at)
        ),
    ))
}

/// A refused change: back to the request with what was wrong.
fn refused_page(id: i64, e: RequestRefused) -> Result<Response, AdminError> {
    match e {
        RequestRefused::NotFound(_) => {
            Err(AdminError::NotFound(format!("There is no request {id}.")))
        }
        e => Ok(done_with_error(
            &format!("/admin/requests/{id}"),
            format!("Nothing changed: {e}."),
        )),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CheckForm {
    #[serde(default)]
    how: String,
}

pub(super) async fn identity_checked(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<CheckForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/requests/{id}/identity-checked")?;
    let id = id_of(&id)?;
    let back = format!("/admin/requests/{id}");
    if form.how.trim().is_empty() {
        return Ok(done_with_error(
            &back,
            "Not recorded: say how the identity was checked (How).",
        ));
    }
    let r = match state
        .store()
        .check_request_identity(id, &staff.actor(), &form.how, Timestamp::now())
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return refused_page(id, e),
        Err(veto_store::StoreError::Invalid(m)) => {
            return Ok(done_with_error(&back, format!("Not recorded: {m}.")));
        }
        Err(e) => return Err(e.into()),
    };
    staff
        .record(
            &state,
            "requests.identity_checked",
            Some(format!("request:{id}")),
            json!({}),
        )
        .await?;
    Ok(done(
        &back,
        format!(
            "Recorded: the identity behind request {} was checked.",
            r.id
        ),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct ExtendForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    until: String,
}

pub(super) async fn extend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<ExtendForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/requests/{id}/extend")?;
    let id = id_of(&id)?;
    let back = format!("/admin/requests/{id}");
    if form.reason.trim().is_empty() {
        return Ok(done_with_error(
            &back,
            "Not extended: give the reason (Reason); the person must be told it.",
        ));
    }
    let until = match form.until.trim() {
        "" => None,
        s => match s.parse::<jiff::civil::Date>() {
            Ok(d) => Some(d),
            Err(_) => {
                return Ok(done_with_error(
                    &back,
                    format!(
                        "Not extended: New deadline must be a date such as 2027-03-31, not {s:?}."
                    ),
                ));
            }
        },
    };
    let r = match state
        .store()
        .extend_request(id, &staff.actor(), &form.reason, until, Timestamp::now())
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return refused_page(id, e),
        Err(veto_store::StoreError::Invalid(m)) => {
            return Ok(done_with_error(&back, format!("Not extended: {m}.")));
        }
        Err(e) => return Err(e.into()),
    };
    staff
        .record(
            &state,
            "requests.extend",
            Some(format!("request:{id}")),
            json!({"due_at": r.deadline().to_string()}),
        )
        .await?;
    Ok(done(
        &back,
        format!(
            "Extended request {id} to {}. Tell the person of the extension and its reason within the first month.",
            describe::day(r.deadline())
        ),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct AnswerForm {
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn answer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<AnswerForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/requests/{id}/answer")?;
    let id = id_of(&id)?;
    let back = format!("/admin/requests/{id}");
    let reason = form.reason.trim();
    let outcome = match (form.outcome.as_str(), reason.is_empty()) {
        ("done", _) => Outcome::Done,
        ("refused", false) => Outcome::Refused {
            reason: reason.to_owned(),
        },
        ("refused", true) => {
            return Ok(done_with_error(
                &back,
                "Not answered: a refusal needs the reason the person was given (Reason).",
            ));
        }
        _ => {
            return Ok(done_with_error(
                &back,
                "Not answered: choose done or refused (Outcome).",
            ));
        }
    };
    let name = if outcome == Outcome::Done {
        "done"
    } else {
        "refused"
    };
    let now = Timestamp::now();
    let r = match state
        .store()
        .answer_request(id, &staff.actor(), outcome, now)
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return refused_page(id, e),
        Err(veto_store::StoreError::Invalid(m)) => {
            return Ok(done_with_error(&back, format!("Not answered: {m}.")));
        }
        Err(e) => return Err(e.into()),
    };
    staff
        .record(
            &state,
            "requests.answer",
            Some(format!("request:{id}")),
            json!({"outcome": name, "days_left": r.days_left(now)}),
        )
        .await?;
    Ok(done(&back, format!("Request {id} is answered ({name}).")))
}
