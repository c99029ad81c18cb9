//! Data-subject requests (GDPR Arts 15 to 21) as a DPO tracks them: when
//! each came in, the identity check, the answer, and the Art 12(3)
//! deadline (one month from receipt, extendable once, within that month,
//! to three). Every answer carries the deadline, the days left (negative
//! once overdue) and the status.
//!
//! An erasure request is answered `done` only once the person has been
//! erased through the one erasure path (`POST /api/v1/erasures`, the
//! preference centre or `veto erase`): answering never erases by itself,
//! so that an answer cannot remove someone by mistake.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use veto_core::{ContactId, EmailAddress, Timestamp};
use veto_store::{
    NewSubjectRequest, Outcome, RequestFilter, RequestKind, RequestRefused, RequestVia,
    SubjectRequest,
};

use super::audit::{Audited, note};
use super::fields::JsonBody;
use super::page::{ApiQuery, Paging};
use super::schema::ErrorBody;
use super::{ApiError, Caller, positive_id};
use crate::AppState;

/// The longest `due_within_days` asked for.
const MAX_DAYS: i64 = 366;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RequestQuery {
    /// open (not answered), overdue, answered (or refused) or all (the default).
    #[param(value_type = Option<String>, pattern = "^(open|overdue|answered|all)$")]
    status: Option<String>,
    /// Only requests not answered with at most this many days left
    /// (overdue ones too), 0 to 366.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 366)]
    due_within_days: Option<String>,
    /// How many (1 to 500, default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One data-subject request and where it stands.
#[derive(Serialize, ToSchema)]
pub(crate) struct RequestOut {
    id: i64,
    /// access, portability, erasure, rectification, objection or restriction.
    #[schema(pattern = "^(access|portability|erasure|rectification|objection|restriction)$")]
    kind: String,
    /// The GDPR article that gives the right (`Art 15`, …).
    article: String,
    /// open, identity_checked, answered or refused.
    #[schema(pattern = "^(open|identity_checked|answered|refused)$")]
    status: String,
    contact_id: Option<i64>,
    /// The address the person gave; null once blanked (an answered
    /// erasure, an erased contact, the retention purge).
    email: Option<String>,
    /// email, letter, phone, web_form or preference_centre.
    #[schema(pattern = "^(email|letter|phone|web_form|preference_centre)$")]
    via: String,
    note: Option<String>,
    #[schema(format = DateTime)]
    received_at: String,
    /// The deadline that applies now: the end of its day (UTC).
    #[schema(format = DateTime)]
    due_at: String,
    /// The deadline's date.
    #[schema(format = Date)]
    due_on: String,
    /// Whole days left to the deadline: 0 on its last day, negative once
    /// it has passed.
    days_left: i64,
    /// Not answered, and the deadline has passed.
    overdue: bool,
    /// One calendar month after receipt (Art 12(3)).
    #[schema(format = DateTime)]
    first_due_at: String,
    #[schema(format = DateTime)]
    extended_due_at: Option<String>,
    /// Why it was extended: the person must be told, within the first month.
    extension_reason: Option<String>,
    #[schema(format = DateTime)]
    extended_at: Option<String>,
    extended_by: Option<String>,
    #[schema(format = DateTime)]
    identity_checked_at: Option<String>,
    identity_checked_by: Option<String>,
    identity_how: Option<String>,
    #[schema(format = DateTime)]
    answered_at: Option<String>,
    answered_by: Option<String>,
    /// done or refused.
    outcome: Option<String>,
    refusal_reason: Option<String>,
    created_by: String,
    #[schema(format = DateTime)]
    created_at: String,
}

impl RequestOut {
    fn new(r: SubjectRequest, now: Timestamp) -> RequestOut {
        let deadline = r.deadline();
        let (outcome, refusal_reason) = match r.answer.as_ref().map(|a| &a.outcome) {
            None => (None, None),
            Some(Outcome::Done) => (Some("done".to_owned()), None),
            Some(Outcome::Refused { reason }) => (Some("refused".to_owned()), Some(reason.clone())),
        };
        RequestOut {
            id: r.id,
            kind: r.kind.as_str().to_owned(),
            article: r.kind.article().to_owned(),
            status: r.status().as_str().to_owned(),
            contact_id: r.contact.map(|c| c.0),
            email: r.email.clone(),
            via: r.via.as_str().to_owned(),
            note: r.note.clone(),
            received_at: r.received_at.to_string(),
            due_at: deadline.to_string(),
            due_on: veto_store::utc_date(deadline).to_string(),
            days_left: r.days_left(now),
            overdue: r.is_overdue(now),
            first_due_at: r.due_at.to_string(),
            extended_due_at: r.extension.as_ref().map(|e| e.due_at.to_string()),
            extension_reason: r.extension.as_ref().map(|e| e.reason.clone()),
            extended_at: r.extension.as_ref().map(|e| e.at.to_string()),
            extended_by: r.extension.as_ref().map(|e| e.by.clone()),
            identity_checked_at: r.identity.as_ref().map(|i| i.at.to_string()),
            identity_checked_by: r.identity.as_ref().map(|i| i.by.clone()),
            identity_how: r.identity.as_ref().map(|i| i.how.clone()),
            answered_at: r.answer.as_ref().map(|a| a.at.to_string()),
            answered_by: r.answer.as_ref().map(|a| a.by.clone()),
            outcome,
            refusal_reason,
            created_by: r.created_by,
            created_at: r.created_at.to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RequestsPage {
    requests: Vec<RequestOut>,
    next_cursor: Option<String>,
}

/// `POST /api/v1/requests`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct RequestIn {
    #[schema(pattern = "^(access|portability|erasure|rectification|objection|restriction)$")]
    kind: String,
    /// The address the person gave (or `contact_id`, or both).
    email: Option<String>,
    contact_id: Option<i64>,
    /// How it came in: email, letter, phone, web_form or preference_centre.
    #[schema(pattern = "^(email|letter|phone|web_form|preference_centre)$")]
    via: String,
    /// Free text (no more personal data than needed), up to 2,000 characters.
    note: Option<String>,
    /// When it arrived (default: now); the deadline counts from here.
    #[schema(format = DateTime)]
    received_at: Option<String>,
}

/// `POST /api/v1/requests/{id}/identity-checked`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct IdentityIn {
    /// How the identity was checked (a reply from the address on file, …).
    how: String,
}

/// `POST /api/v1/requests/{id}/extend`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct ExtendIn {
    /// Why more time is necessary: the person must be told (Art 12(3)).
    reason: String,
    /// The new deadline's date (default and latest: three months after receipt).
    #[schema(format = Date)]
    until: Option<String>,
}

/// `POST /api/v1/requests/{id}/answer`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct AnswerIn {
    #[schema(pattern = "^(done|refused)$")]
    outcome: String,
    /// Required when refused: what the person was told (Art 12(4)).
    reason: Option<String>,
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> ApiError {
    ApiError::invalid(
        field,
        "invalid_value",
        format!("{field} must be {}, not {value:?}", allowed.join(", ")),
    )
}

fn refused(e: RequestRefused) -> ApiError {
    let field = match &e {
        RequestRefused::NotFound(_) => {
            return ApiError::new(StatusCode::NOT_FOUND, e.code(), e.to_string()).on("id");
        }
        RequestRefused::IdentityNotChecked(_) | RequestRefused::ContactNotErased { .. } => {
            Some("outcome")
        }
        RequestRefused::AlreadyAnswered { .. }
        | RequestRefused::IdentityAlreadyChecked(_)
        | RequestRefused::AlreadyExtended(_)
        | RequestRefused::DeadlinePassed { .. } => None,
    };
    ApiError::conflict(e.code(), field, e.to_string())
}

/// Data-subject requests by id, each with its deadline, days left and status.
#[utoipa::path(get, path = "/api/v1/requests", tag = "requests", params(RequestQuery),
    responses((status = 200, body = RequestsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RequestQuery>,
) -> Result<Json<RequestsPage>, ApiError> {
    let paging = Paging::new(q.limit.as_deref(), q.cursor.as_deref())?;
    let status = match q.status.as_deref() {
        None | Some("all") => RequestFilter::All,
        Some("open") => RequestFilter::Open,
        Some("overdue") => RequestFilter::Overdue,
        Some("answered") => RequestFilter::Answered,
        Some(s) => return Err(one_of("status", s, &["open", "overdue", "answered", "all"])),
    };
    let filter = match q.due_within_days.as_deref() {
        None => status,
        Some(s) => {
            let days = s
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|d| (0..=MAX_DAYS).contains(d))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "due_within_days",
                        "invalid_value",
                        format!(
                            "due_within_days must be a whole number from 0 to {MAX_DAYS}, not {s:?}"
                        ),
                    )
                })?;
            if !matches!(status, RequestFilter::All | RequestFilter::Open) {
                return Err(ApiError::invalid(
                    "due_within_days",
                    "invalid_combination",
                    "due_within_days lists requests not answered yet: leave status out or set it to open",
                ));
            }
            RequestFilter::DueWithin(days)
        }
    };
    let now = Timestamp::now();
    let rows = state
        .store()
        .requests(filter, now, paging.after, paging.fetch())
        .await?;
    let (rows, next_cursor) = paging.finish(rows, |r| r.id);
    Ok(Json(RequestsPage {
        requests: rows.into_iter().map(|r| RequestOut::new(r, now)).collect(),
        next_cursor,
    }))
}

/// Records a request received from a person: its deadline is one calendar
/// month after `received_at`. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/requests", tag = "requests", request_body = RequestIn,
    responses((status = 201, body = RequestOut), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<RequestOut>)>, ApiError> {
    body.only(&["kind", "email", "contact_id", "via", "note", "received_at"])?;
    let kind_s = body.required_str("kind", "what the person asked for")?;
    let names: Vec<&str> = RequestKind::ALL.iter().map(|k| k.as_str()).collect();
    let kind = RequestKind::parse(kind_s).ok_or_else(|| one_of("kind", kind_s, &names))?;
    let via_s = body.required_str("via", "how the request came in")?;
    let names: Vec<&str> = RequestVia::ALL.iter().map(|v| v.as_str()).collect();
    let via = RequestVia::parse(via_s).ok_or_else(|| one_of("via", via_s, &names))?;
    let email = match body.str("email")? {
        None => None,
        Some(s) => Some(EmailAddress::parse(s).map_err(|e| {
            ApiError::invalid(
                "email",
                "invalid_email",
                format!("email is not a deliverable address: {e}"),
            )
        })?),
    };
    let contact = body.id("contact_id")?.map(ContactId);
    if email.is_none() && contact.is_none() {
        return Err(ApiError::invalid(
            "email",
            "missing_field",
            "email is required (or contact_id): whom the request is from",
        ));
    }
    let text = body.text("note", veto_store::MAX_REQUEST_TEXT)?;
    let now = Timestamp::now();
    let received_at = body.time("received_at")?.unwrap_or(now);
    if received_at > now + jiff::SignedDuration::from_secs(60) {
        return Err(ApiError::invalid(
            "received_at",
            "in_the_future",
            "received_at is in the future: when did the request arrive?",
        ));
    }
    let created = state
        .store()
        .create_request(NewSubjectRequest {
            kind,
            contact,
            email,
            via,
            note: text,
            received_at,
            actor: caller.actor(),
        })
        .await;
    let r = match (created, contact) {
        // The store looks the contact up (and refuses an unknown one).
        (Err(veto_store::StoreError::NotFound(_)), Some(c)) => {
            return Err(ApiError::invalid(
                "contact_id",
                "unknown_contact",
                format!("there is no contact {}", c.0),
            ));
        }
        (created, _) => created?,
    };
    tracing::info!(request = r.id, kind = kind.as_str(), by = %caller.actor(), "data-subject request recorded");
    Ok(Audited(
        // The address stays out of the trail: it is personal data.
        note(
            "requests.create",
            format!("request:{}", r.id),
            json!({"kind": kind.as_str(), "via": via.as_str(), "contact": r.contact.map(|c| c.0), "due_at": r.due_at.to_string()}),
        ),
        (StatusCode::CREATED, Json(RequestOut::new(r, now))),
    ))
}

async fn request_of(state: &AppState, id: &str) -> Result<SubjectRequest, ApiError> {
    let id = positive_id(id, "request")?;
    state
        .store()
        .request(id)
        .await?
        .ok_or_else(|| refused(RequestRefused::NotFound(id)))
}

/// One request.
#[utoipa::path(get, path = "/api/v1/requests/{id}", tag = "requests",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = RequestOut), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RequestOut>, ApiError> {
    let r = request_of(&state, &id).await?;
    Ok(Json(RequestOut::new(r, Timestamp::now())))
}

/// Records that the person's identity was checked, and how. Once only; not
/// after the answer (409).
#[utoipa::path(post, path = "/api/v1/requests/{id}/identity-checked", tag = "requests",
    params(("id" = i64, Path, minimum = 1)), request_body = IdentityIn,
    responses((status = 200, body = RequestOut), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn identity_checked(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Audited<Json<RequestOut>>, ApiError> {
    let id = positive_id(&id, "request")?;
    body.only(&["how"])?;
    let how = body
        .text("how", veto_store::MAX_REQUEST_TEXT)?
        .ok_or_else(|| {
            ApiError::invalid(
                "how",
                "missing_field",
                "how is required: how the person's identity was checked",
            )
        })?;
    let now = Timestamp::now();
    let r = state
        .store()
        .check_request_identity(id, &caller.actor(), &how, now)
        .await?
        .map_err(refused)?;
    Ok(Audited(
        note(
            "requests.identity_checked",
            format!("request:{id}"),
            json!({}),
        ),
        Json(RequestOut::new(r, now)),
    ))
}

/// Extends the deadline, once and within the first month, to `until` (at
/// most, and by default, three calendar months after receipt). The reason
/// is required: the person must be told it within the first month.
#[utoipa::path(post, path = "/api/v1/requests/{id}/extend", tag = "requests",
    params(("id" = i64, Path, minimum = 1)), request_body = ExtendIn,
    responses((status = 200, body = RequestOut), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Audited<Json<RequestOut>>, ApiError> {
    let id = positive_id(&id, "request")?;
    body.only(&["reason", "until"])?;
    let reason = body
        .text("reason", veto_store::MAX_REQUEST_TEXT)?
        .ok_or_else(|| {
            ApiError::invalid(
                "reason",
                "missing_field",
                "reason is required: why more time is necessary (Art 12(3)); the person must be told",
            )
        })?;
    let until = match body.str("until")? {
        None => None,
        Some(s) => Some(s.parse::<jiff::civil::Date>().map_err(|_| {
            ApiError::invalid(
                "until",
                "invalid_date",
                format!("until must be a date such as 2027-03-31, not {s:?}"),
            )
        })?),
    };
    let now = Timestamp::now();
    let r = state
        .store()
        .extend_request(id, &caller.actor(), &reason, until, now)
        .await
        .map_err(|e| match e {
            veto_store::StoreError::Invalid(m) => ApiError::invalid("until", "invalid_date", m),
            other => other.into(),
        })?
        .map_err(refused)?;
    let due = r.deadline().to_string();
    Ok(Audited(
        note(
            "requests.extend",
            format!("request:{id}"),
            json!({"due_at": due}),
        ),
        Json(RequestOut::new(r, now)),
    ))
}

/// Answers a request: `done` (after the identity check; for an erasure,
/// once the person has been erased through `POST /api/v1/erasures`), or
/// `refused` with the reason the person was given.
#[utoipa::path(post, path = "/api/v1/requests/{id}/answer", tag = "requests",
    params(("id" = i64, Path, minimum = 1)), request_body = AnswerIn,
    responses((status = 200, body = RequestOut), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn answer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Audited<Json<RequestOut>>, ApiError> {
    let id = positive_id(&id, "request")?;
    body.only(&["outcome", "reason"])?;
    let outcome_s = body.required_str("outcome", "done or refused")?;
    let reason = body.text("reason", veto_store::MAX_REQUEST_TEXT)?;
    let outcome = match (outcome_s, reason) {
        ("done", None) => Outcome::Done,
        ("done", Some(_)) => {
            return Err(ApiError::invalid(
                "reason",
                "unexpected_field",
                "reason is for a refusal; leave it out when the request was done",
            ));
        }
        ("refused", Some(reason)) => Outcome::Refused { reason },
        ("refused", None) => {
            return Err(ApiError::invalid(
                "reason",
                "missing_field",
                "reason is required when refusing: the person must be told why (Art 12(4))",
            ));
        }
        (other, _) => return Err(one_of("outcome", other, &["done", "refused"])),
    };
    let now = Timestamp::now();
    let r = state
        .store()
        .answer_request(id, &caller.actor(), outcome, now)
        .await?
        .map_err(refused)?;
    tracing::info!(request = id, status = r.status().as_str(), by = %caller.actor(), "data-subject request answered");
    Ok(Audited(
        note(
            "requests.answer",
            format!("request:{id}"),
            json!({"outcome": outcome_s, "days_left": r.days_left(now)}),
        ),
        Json(RequestOut::new(r, now)),
    ))
}
