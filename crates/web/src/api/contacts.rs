//! Contacts (search by address, upsert, one contact, its timeline), their
//! consent events (append only), receipts (the "why" of each message), and
//! the GDPR exports and erasures a DPO answers.
//!
//! No request here can re-grant consent after an opt-out: an upsert never
//! brings back an erased address, and an event is appended through the
//! ledger's own check (`check_append`), which refuses it with the reason.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use veto_core::{
    ContactId, EmailAddress, EventKind, FrequencyLimit, JurisdictionSet, NewEvent, Period,
    PhoneNumber, Scope, Source, SubscriberType, Timestamp,
};
use veto_store::{Append, AppendOutcome, ContactInput, Evidence, ReceiptFilter};

use super::audit::{Audited, note};
use super::consents::refused;
use super::fields::{Fields, FormEvidence, JsonBody};
use super::page::{ApiQuery, Paging};
use super::schema::*;
use super::{ApiError, Caller, positive_id};
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ContactQuery {
    /// Part of an address (case-insensitive); absent: every contact.
    pub q: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

fn not_found(what: &str, id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("there is no {what} {id}"),
    )
}

async fn contact_of(state: &AppState, id: &str) -> Result<veto_store::Contact, ApiError> {
    let id = positive_id(id, "contact")?;
    state
        .store()
        .contact(ContactId(id))
        .await?
        .ok_or_else(|| not_found("contact", id))
}

/// Contacts whose address contains `q`, by id.
#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts", params(ContactQuery),
    responses((status = 200, body = ContactsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn search(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ContactQuery>,
) -> Result<Json<ContactsPage>, ApiError> {
    let paging = Paging::new(q.limit.as_deref(), q.cursor.as_deref())?;
    if q.q.as_ref().is_some_and(|s| s.chars().count() > 320) {
        return Err(ApiError::invalid(
            "q",
            "too_long",
            "q is longer than an address can be",
        ));
    }
    let rows = state
        .store()
        .search_contacts(q.q.as_deref(), paging.after, paging.fetch())
        .await?;
    let (rows, next_cursor) = paging.finish(rows, |c| c.id);
    Ok(Json(ContactsPage {
        contacts: rows.into_iter().map(ContactOut::from).collect(),
        next_cursor,
    }))
}

/// One contact.
#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "contacts",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = ContactResult), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ContactResult>, ApiError> {
    Ok(Json(ContactResult {
        contact: contact_of(&state, &id).await?.into(),
    }))
}

const CONTACT_FIELDS: &[&str] = &[
    "email",
    "name",
    "phone",
    "postal_address",
    "attributes",
    "jurisdiction",
    "subscriber_type",
];

/// Creates or updates a contact by address (no consent is recorded). An
/// erased address is refused (409): only the person can bring it back.
#[utoipa::path(post, path = "/api/v1/contacts", tag = "contacts", request_body = ContactIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = ContactUpserted), (status = 200, body = ContactUpserted),
        (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn upsert(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<ContactUpserted>)>, ApiError> {
    body.only(CONTACT_FIELDS)?;
    let email = body.email()?;
    let mut input = ContactInput::new(email.clone());
    input.name = body.text("name", 200)?;
    input.postal_address = body.text("postal_address", 500)?;
    input.phone = match body.text("phone", 32)? {
        None => None,
        Some(p) => Some(
            PhoneNumber::parse(&p)
                .map_err(|e| ApiError::invalid("phone", "invalid_phone", format!("phone: {e}")))?,
        ),
    };
    input.attributes = attributes(&body)?;
    input.jurisdictions = match body.str("jurisdiction")? {
        None => JurisdictionSet::EMPTY,
        Some(s) => JurisdictionSet::parse_list(s)
            .map_err(|e| ApiError::invalid("jurisdiction", "invalid_value", e.to_string()))?,
    };
    input.subscriber_type =
        match body.str("subscriber_type")? {
            None => None,
            Some(s) => Some(s.parse::<SubscriberType>().map_err(|e| {
                ApiError::invalid("subscriber_type", "invalid_value", e.to_string())
            })?),
        };
    let existed = state.store().find_contact(&email).await?.is_some();
    let id = match state.store().upsert_contact(input).await? {
        Ok(id) => id,
        Err(refusal) => return Err(refused(&state, &email, false, refusal).await),
    };
    let contact = state
        .store()
        .contact(id)
        .await?
        .ok_or_else(|| not_found("contact", id.0))?;
    let fields: Vec<&String> = body.keys().filter(|k| k.as_str() != "email").collect();
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(Audited(
        note(
            if existed {
                "contacts.update"
            } else {
                "contacts.create"
            },
            format!("contact:{}", id.0),
            json!({"fields": fields}),
        ),
        (
            status,
            Json(ContactUpserted {
                contact: contact.into(),
                created: !existed,
            }),
        ),
    ))
}

fn attributes(body: &Fields) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    match body.value("attributes") {
        None => Ok(Default::default()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if k.len() <= 64 && s.len() <= 1000 => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::invalid(
                    &format!("attributes.{k}"),
                    "invalid_type",
                    "each attribute is a string of at most 1000 characters, under a name of at most 64",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(
            "attributes",
            "invalid_type",
            "attributes must be an object of strings",
        )),
    }
}

/// A contact's consent events and receipts, oldest first: what they said,
/// and every message veto decided about for them.
#[utoipa::path(get, path = "/api/v1/contacts/{id}/timeline", tag = "contacts",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Timeline), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Timeline>, ApiError> {
    let contact = contact_of(&state, &id).await?;
    let cid = ContactId(contact.id);
    let names = veto_store::export::topic_keys(state.store()).await?;
    let events = state.store().events_of(cid).await?;
    let receipts = state.store().receipts_for_contact(cid).await?;
    Ok(Json(Timeline {
        contact: contact.into(),
        events: events.iter().map(|e| EventOut::new(e, &names)).collect(),
        receipts: receipts.into_iter().map(ReceiptOut::from).collect(),
    }))
}

/// Everything veto holds about the person, as `veto export` prints it
/// (GDPR Art 15 and 20).
#[utoipa::path(get, path = "/api/v1/contacts/{id}/export", tag = "gdpr",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Object, description = "the same JSON as `veto export`"),
        (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Audited<Json<Value>>, ApiError> {
    let contact = contact_of(&state, &id).await?;
    let gone = || {
        ApiError::new(
            StatusCode::GONE,
            "erased",
            format!(
                "contact {} was erased: veto holds nothing about them but a keyed hash",
                contact.id
            ),
        )
    };
    let Some(email) = contact
        .email
        .as_deref()
        .and_then(|e| EmailAddress::parse(e).ok())
    else {
        return Err(gone());
    };
    let organisation = &state.settings().organisation.name;
    let v = veto_store::export::person(state.store(), &email, organisation)
        .await?
        .ok_or_else(gone)?;
    tracing::info!(contact = contact.id, by = %caller.actor(), "personal data exported");
    // A read, but of everything about a person: the trail says who took it.
    Ok(Audited(
        note(
            "contacts.export",
            format!("contact:{}", contact.id),
            json!({}),
        ),
        Json(v),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// The contact whose events to list.
    #[param(value_type = i64, minimum = 1)]
    pub contact: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A contact's consent events, by id.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let paging = Paging::new(q.limit.as_deref(), q.cursor.as_deref())?;
    let Some(contact) = q.contact.as_deref() else {
        return Err(ApiError::invalid(
            "contact",
            "missing_field",
            "contact is required: the id of the contact whose events to list",
        ));
    };
    let id = contact
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "contact",
                "invalid_id",
                format!("{contact:?} is not a contact id"),
            )
        })?;
    let names = veto_store::export::topic_keys(state.store()).await?;
    let all = state.store().events_of(ContactId(id)).await?;
    let (rows, next_cursor) = paging.slice(all, |e| e.event.id.0);
    Ok(Json(EventsPage {
        events: rows.iter().map(|e| EventOut::new(e, &names)).collect(),
        next_cursor,
    }))
}

const EVENT_FIELDS: &[&str] = &[
    "email",
    "kind",
    "topic",
    "channel",
    "wording",
    "at",
    "until",
    "max",
    "per",
    "ip",
    "user_agent",
    "form_url",
];

/// Appends a consent event recorded by staff (source `admin`). A grant
/// after a withdrawal, objection, complaint or erasure is refused with the
/// reason (409): only the person can re-grant.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = EventIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = EventRecorded), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn append(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<EventRecorded>)>, ApiError> {
    body.only(EVENT_FIELDS)?;
    let email = body.email()?;
    let kind_name = body.required_str(
        "kind",
        "grant, withdraw, object, refused, hard_bounce, complaint, pause or frequency",
    )?;
    let topic = body.topic(&state).await?;
    let scoped = matches!(kind_name, "grant" | "withdraw" | "refused" | "pause");
    if topic.is_some() && !scoped {
        return Err(ApiError::invalid(
            "topic",
            "not_applicable",
            format!("a {kind_name} event is about all marketing; leave topic out"),
        ));
    }
    let kind = match kind_name {
        "grant" => EventKind::Grant,
        "withdraw" => EventKind::Withdraw,
        "object" => EventKind::Object,
        "refused" => EventKind::Refused,
        "hard_bounce" => EventKind::HardBounce,
        "complaint" => EventKind::Complaint,
        "pause" => EventKind::Pause {
            until: body.time("until")?.ok_or_else(|| {
                ApiError::invalid(
                    "until",
                    "missing_field",
                    "until is required for a pause: when marketing may start again",
                )
            })?,
        },
        "frequency" => EventKind::Frequency(frequency(&body)?),
        other => {
            return Err(ApiError::invalid(
                "kind",
                "invalid_value",
                format!(
                    "kind must be grant, withdraw, object, refused, hard_bounce, complaint, pause or frequency, not {other:?}"
                ),
            ));
        }
    };
    for (field, allowed) in [
        ("until", matches!(kind, EventKind::Pause { .. })),
        ("max", matches!(kind, EventKind::Frequency(_))),
        ("per", matches!(kind, EventKind::Frequency(_))),
    ] {
        if !allowed && body.value(field).is_some() {
            return Err(ApiError::invalid(
                field,
                "not_applicable",
                format!("{field} does not apply to a {kind_name} event"),
            ));
        }
    }
    let wording = body
        .wording(
            &state,
            (kind == EventKind::Grant).then_some(
                "a grant must say which exact consent text the person was shown (its wording id)",
            ),
        )
        .await?;
    // An objection covers every channel (GDPR Art 21).
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
    let at = body.at()?;
    let FormEvidence {
        ip,
        user_agent,
        form_url,
    } = body.evidence()?;
    let item = Append {
        contact: ContactInput::new(email.clone()),
        event: NewEvent {
            kind: kind.clone(),
            scope: topic.as_ref().map_or(Scope::All, |t| Scope::Topic(t.id)),
            channel,
            source: Source::Admin,
            at,
        },
        evidence: Evidence {
            wording: wording.map(|w| w.0),
            ip,
            user_agent,
            form_url,
        },
        actor: caller.actor(),
    };
    let recorded = record_event(&state, &email, item).await?;
    Ok(Audited(
        note(
            "events.append",
            format!("contact:{}", recorded.contact_id),
            json!({"event": recorded.event_id, "kind": kind.name(), "topic": topic.map(|t| t.key.to_string())}),
        ),
        (StatusCode::CREATED, Json(recorded)),
    ))
}

fn frequency(body: &Fields) -> Result<Option<FrequencyLimit>, ApiError> {
    let max = body.value("max");
    let per = body.str("per")?;
    match (max, per) {
        (None, None) => Ok(None),
        (Some(m), Some(per)) => {
            let max = m
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "max",
                        "invalid_value",
                        "max must be a whole number from 1 to 1000",
                    )
                })?;
            let per = match per {
                "week" => Period::Week,
                "month" => Period::Month,
                other => {
                    return Err(ApiError::invalid(
                        "per",
                        "invalid_value",
                        format!("per must be \"week\" or \"month\", not {other:?}"),
                    ));
                }
            };
            Ok(Some(FrequencyLimit { max, per }))
        }
        (None, Some(_)) => Err(ApiError::invalid(
            "max",
            "missing_field",
            "max is required with per",
        )),
        (Some(_), None) => Err(ApiError::invalid(
            "per",
            "missing_field",
            "per is required with max",
        )),
    }
}

/// Appends through the group committer (durable before the answer); a
/// refusal says why, in words.
pub(crate) async fn record_event(
    state: &AppState,
    email: &EmailAddress,
    item: Append,
) -> Result<EventRecorded, ApiError> {
    let is_grant = item.event.kind == EventKind::Grant;
    match state.append(item).await? {
        AppendOutcome::Recorded {
            contact,
            event,
            created,
        } => Ok(EventRecorded {
            event_id: event.0,
            contact_id: contact.0,
            created,
        }),
        AppendOutcome::Refused(r) => Err(refused(state, email, is_grant, r).await),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReceiptQuery {
    /// A message's Message-ID: why it went, or not, to each recipient.
    pub message: Option<String>,
    /// A contact's id: every message veto decided about for them.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub contact: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// Receipts of one message or one contact (give exactly one of `message`
/// and `contact`): the decision, the rule, the event and the time of the
/// final check for each recipient.
#[utoipa::path(get, path = "/api/v1/receipts", tag = "receipts", params(ReceiptQuery),
    responses((status = 200, body = ReceiptsPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn receipts(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ReceiptQuery>,
) -> Result<Json<ReceiptsPage>, ApiError> {
    let paging = Paging::new(q.limit.as_deref(), q.cursor.as_deref())?;
    let filter = match (q.message.as_deref(), q.contact.as_deref()) {
        (Some(m), None) if !m.trim().is_empty() && m.len() <= 1000 => {
            ReceiptFilter::Message(m.trim().to_owned())
        }
        (None, Some(c)) => ReceiptFilter::Contact(ContactId(
            c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::invalid(
                    "contact",
                    "invalid_id",
                    format!("{c:?} is not a contact id"),
                )
            })?,
        )),
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "message",
                "invalid_value",
                "message must be a Message-ID",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "message",
                "missing_field",
                "give exactly one of message (a Message-ID) and contact (a contact id)",
            ));
        }
    };
    let rows = state
        .store()
        .receipts(&filter, paging.after, paging.fetch())
        .await?;
    let (rows, next_cursor) = paging.finish(rows, |r| r.id);
    Ok(Json(ReceiptsPage {
        receipts: rows.into_iter().map(ReceiptOut::from).collect(),
        next_cursor,
    }))
}

/// Erases a person, as `veto erase` does (GDPR Art 17): their data goes,
/// the non-personal ledger and a keyed-hash suppression entry stay.
/// Erasing an erased address again changes nothing (200).
#[utoipa::path(post, path = "/api/v1/erasures", tag = "gdpr", request_body = ErasureIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = ErasureOut), (status = 200, body = ErasureOut),
        (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Audited<(StatusCode, Json<ErasureOut>)>, ApiError> {
    body.only(&["email"])?;
    let email = body.email()?;
    match erase_person(&state, &caller.actor(), &email).await? {
        Erased::Already { at } => Ok(Audited(
            note("contacts.erase", None, json!({"already_erased": true})),
            (
                StatusCode::OK,
                Json(ErasureOut {
                    erased: false,
                    event_id: None,
                    erased_at: Some(at.to_string()),
                }),
            ),
        )),
        Erased::Now { contact, event, at } => Ok(Audited(
            // The address is not kept in the trail: it is what was erased.
            note(
                "contacts.erase",
                format!("contact:{contact}"),
                json!({"event": event}),
            ),
            (
                StatusCode::CREATED,
                Json(ErasureOut {
                    erased: true,
                    event_id: Some(event),
                    erased_at: Some(at.to_string()),
                }),
            ),
        )),
    }
}

/// What [`erase_person`] did.
pub(crate) enum Erased {
    Now {
        contact: i64,
        event: i64,
        at: Timestamp,
    },
    /// The address was erased before (only its keyed hash is left).
    Already { at: Timestamp },
}

/// Erases a person (GDPR Art 17): the API's `POST /erasures` and the
/// admin UI's erase button. 404 when veto holds nothing about them.
pub(crate) async fn erase_person(
    state: &AppState,
    actor: &str,
    email: &EmailAddress,
) -> Result<Erased, ApiError> {
    let store = state.store();
    let Some(contact) = store.find_contact(email).await? else {
        return match store.is_suppressed(email).await? {
            Some(at) => Ok(Erased::Already { at }),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("veto holds nothing about {}", email.masked()),
            )),
        };
    };
    let now = Timestamp::now();
    let event = store.erase(email, actor, now).await?;
    tracing::info!(contact = contact.id, by = %actor, "person erased");
    Ok(Erased::Now {
        contact: contact.id,
        event: event.0,
        at: now,
    })
}
