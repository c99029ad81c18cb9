//! The people pages: contacts (search, one contact with its decisions and
//! its history in plain language, the DPO's export and erasure), the
//! suppression list (add; take out a mistaken hard bounce), and the staff
//! audit trail. Each page and action names the API endpoint that does the
//! same, and does it through the same functions.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use veto_core::{
    Channel, ContactId, Decision, EmailAddress, Message, MessageClass, Timestamp, WordingId,
};
use veto_store::describe::{self, when};

use super::{AdminError, Posted, Staff, done, done_with_error, render};
use crate::AppState;
use crate::api::contacts::{Erased, erase_person};
use crate::api::fields::Fields;
use crate::api::suppressions::{add_suppression, clear_bounce};

/// Rows per page.
const PAGE: i64 = 50;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/contacts", get(contacts))
        .route("/contacts/{id}", get(contact))
        .route("/contacts/{id}/export", get(export))
        .route("/contacts/{id}/erase", get(erase_page).post(erase))
        .route("/suppressions", get(suppressions).post(add))
        .route("/suppressions/{id}/remove", get(remove_page).post(remove))
        .route("/audit", get(audit))
}

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    q: Option<String>,
    kind: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

/// A paging position from the query: a positive number or nothing.
fn position(v: Option<&str>, name: &str) -> Result<Option<i64>, AdminError> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                AdminError::BadRequest(format!("{name} must be a positive number, not {s:?}."))
            }),
    }
}

/// A stored RFC 3339 time as people read it ("12 Mar 2026 14:05 UTC").
fn shown(t: &str) -> String {
    t.parse::<Timestamp>()
        .map(when)
        .unwrap_or_else(|_| t.to_owned())
}

fn contact_id(id: &str) -> Result<i64, AdminError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AdminError::NotFound(format!("{id:?} is not a contact id.")))
}

async fn contact_of(state: &AppState, id: &str) -> Result<veto_store::Contact, AdminError> {
    let id = contact_id(id)?;
    state
        .store()
        .contact(ContactId(id))
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("There is no contact {id}.")))
}

// ---- contacts -------------------------------------------------------------------

pub(super) async fn contacts(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ListQuery>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/contacts")?;
    let after = position(q.after.as_deref(), "after")?;
    let text = q.q.as_deref().map(str::trim).unwrap_or_default().to_owned();
    if text.chars().count() > 320 {
        return Err(AdminError::BadRequest(
            "The search is longer than an address can be.".into(),
        ));
    }
    let mut rows = state
        .store()
        .search_contacts(
            Some(&text).filter(|t| !t.is_empty()).map(|t| t.as_str()),
            after,
            PAGE + 1,
        )
        .await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let next = if more {
        rows.last().map(|c| {
            format!(
                "/admin/contacts?q={}&after={}",
                super::render::urlencode(&text),
                c.id
            )
        })
    } else {
        None
    };
    let list: Vec<Value> = rows
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "email": c.email,
                "name": c.name,
                "created": shown(&c.created_at),
                "erased": c.erased_at.is_some(),
            })
        })
        .collect();
    render(
        &state,
        &staff,
        "admin/contacts.html",
        "Contacts",
        json!({"current": "/admin/contacts", "q": text, "contacts": list, "next": next, "searched": q.q.is_some()}),
    )
}

pub(super) async fn contact(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/contacts/{id}")?;
    let contact = contact_of(&state, &id).await?;
    let store = state.store();
    let cid = ContactId(contact.id);
    let topics = store.topics().await?;
    let names_by_id: HashMap<u16, String> =
        topics.iter().map(|t| (t.id.0, t.name.clone())).collect();
    let names_by_key: HashMap<String, String> = topics
        .iter()
        .map(|t| (t.key.to_string(), t.name.clone()))
        .collect();

    // The guard's decision for each topic by email, now.
    let now = Timestamp::now();
    let email = contact
        .email
        .as_deref()
        .and_then(|e| EmailAddress::parse(e).ok());
    let mut decisions = Vec::new();
    if let Some(email) = &email {
        let settings = state.policy();
        let (_, consent) = store.load_state(email, now).await?;
        for t in &topics {
            let d = veto_core::decide(
                &consent,
                &Message {
                    class: MessageClass::Marketing(t),
                    channel: Channel::Email,
                },
                &settings,
                now,
            );
            let (allowed, text) = match &d {
                Decision::Allowed(a) => (true, format!("allowed under rule {}", a.rule.id())),
                Decision::Denied(r) => (false, format!("{} (rule {})", r.reason, r.rule.id())),
            };
            decisions.push(json!({"topic": t.name, "key": t.key.to_string(), "allowed": allowed, "text": text}));
        }
    }

    // The timeline: consent events and receipts, newest first.
    let events = store.events_of(cid).await?;
    let receipts = store.receipts_for_contact(cid).await?;
    let mut wordings: HashMap<i64, String> = HashMap::new();
    for w in events.iter().filter_map(|e| e.wording) {
        if let std::collections::hash_map::Entry::Vacant(slot) = wordings.entry(w.0)
            && let Some(found) = store.wording(WordingId(w.0)).await?
        {
            slot.insert(found.text);
        }
    }
    let mut timeline: Vec<(i64, Value)> = Vec::new();
    for e in &events {
        let at = e.event.at;
        timeline.push((
            at.as_microsecond(),
            json!({
                "date": describe::day(at),
                "time": when(at),
                "sentence": format!("{}: {}", describe::day(at), describe::event_sentence(e, &names_by_id)),
                "kind": "consent",
                "wording": e.wording.map(|w| json!({"id": w.0, "text": wordings.get(&w.0)})),
            }),
        ));
    }
    let mut campaign_names: HashMap<i64, String> = HashMap::new();
    for id in receipts
        .iter()
        .filter_map(|r| veto_store::campaign_of_message_id(&r.receipt.message_id))
    {
        if let std::collections::hash_map::Entry::Vacant(slot) = campaign_names.entry(id)
            && let Some(c) = store.campaign(id).await?
        {
            slot.insert(c.name);
        }
    }
    for r in &receipts {
        let at = Timestamp::from_microsecond(r.receipt.checked_at).unwrap_or(now);
        timeline.push((
            r.receipt.checked_at,
            json!({
                "date": describe::day(at),
                "time": when(at),
                "sentence": format!("{}: {}", describe::day(at), describe::receipt_sentence(r, &names_by_key, &campaign_names)),
                "kind": if r.receipt.allowed { "sent" } else { "not sent" },
                "message": r.receipt.message_id,
            }),
        ));
    }
    timeline.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let timeline: Vec<Value> = timeline.into_iter().map(|(_, v)| v).collect();

    let preferences = if email.is_some() {
        Some(
            crate::links(state.keys(), &state.settings().public_url, contact.id, None)?.preferences,
        )
    } else {
        None
    };
    render(
        &state,
        &staff,
        "admin/contact.html",
        &format!("Contact {}", contact.id),
        json!({
            "current": "/admin/contacts",
            "contact": {
                "id": contact.id,
                "email": contact.email,
                "name": contact.name,
                "phone": contact.phone,
                "jurisdictions": contact.jurisdictions,
                "created": shown(&contact.created_at),
                "erased": contact.erased_at.as_deref().map(shown),
            },
            "decisions": decisions,
            "timeline": timeline,
            "preferences": preferences,
            "may_export": email.is_some() && staff.may("GET", "/contacts/{id}/export"),
            "may_erase": email.is_some() && staff.may("POST", "/erasures"),
        }),
    )
}

/// Everything veto holds about the person, as a JSON download (the API's
/// `GET /contacts/{id}/export`, `veto export`).
pub(super) async fn export(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/contacts/{id}/export")?;
    let contact = contact_of(&state, &id).await?;
    let erased = || {
        AdminError::NotFound(format!(
            "Contact {} was erased: veto holds nothing about them but a keyed hash.",
            contact.id
        ))
    };
    let email = contact
        .email
        .as_deref()
        .and_then(|e| EmailAddress::parse(e).ok())
        .ok_or_else(erased)?;
    let v = veto_store::export::person(state.store(), &email, &state.settings().organisation.name)
        .await?
        .ok_or_else(erased)?;
    staff
        .record(
            &state,
            "contacts.export",
            Some(format!("contact:{}", contact.id)),
            json!({}),
        )
        .await?;
    let body = serde_json::to_string_pretty(&v).map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"veto-contact-{}.json\"", contact.id),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// The confirmation step before an erasure.
pub(super) async fn erase_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/erasures")?;
    let contact = contact_of(&state, &id).await?;
    render(
        &state,
        &staff,
        "admin/erase.html",
        "Erase a person",
        json!({"current": "/admin/contacts", "contact": {"id": contact.id, "email": contact.email, "erased": contact.erased_at}}),
    )
}

#[derive(Deserialize)]
pub(super) struct ConfirmForm {
    #[serde(default)]
    confirm: String,
}

/// Erases the person (the API's `POST /erasures`, `veto erase`).
pub(super) async fn erase(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<ConfirmForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/erasures")?;
    let contact = contact_of(&state, &id).await?;
    let back = format!("/admin/contacts/{}", contact.id);
    if form.confirm != "yes" {
        return Ok(done_with_error(
            &format!("{back}/erase"),
            "Nothing was erased: tick the box to confirm that this person's data is to be erased.",
        ));
    }
    let Some(email) = contact
        .email
        .as_deref()
        .and_then(|e| EmailAddress::parse(e).ok())
    else {
        return Ok(done_with_error(&back, "This person was already erased."));
    };
    match erase_person(&state, &staff.actor(), &email).await {
        Ok(Erased::Now { contact, event, .. }) => {
            staff
                .record(
                    &state,
                    "contacts.erase",
                    Some(format!("contact:{contact}")),
                    json!({"event": event}),
                )
                .await?;
            Ok(done(
                &back,
                format!(
                    "Contact {contact} was erased (ledger event {event}). Their address stays suppressed by a keyed hash."
                ),
            ))
        }
        Ok(Erased::Already { .. }) => Ok(done_with_error(&back, "This person was already erased.")),
        Err(e) => Ok(done_with_error(
            &back,
            format!("Nothing was erased: {}.", e.message()),
        )),
    }
}

// ---- suppressions -----------------------------------------------------------------

/// The kinds of standing "no", as the list filters them.
const KINDS: &[(&str, &str)] = &[
    ("withdrawn", "Withdrawal"),
    ("refused", "Opt-out at collection"),
    ("objection", "Objection to all marketing"),
    ("complaint", "Spam complaint"),
    ("hard_bounce", "Hard bounce"),
    ("erased", "Erasure"),
];

pub(super) async fn suppressions(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ListQuery>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/suppressions")?;
    let after = position(q.after.as_deref(), "after")?;
    let kind = q.kind.as_deref().map(str::trim).filter(|k| !k.is_empty());
    if let Some(k) = kind
        && !KINDS.iter().any(|(code, _)| *code == k)
    {
        return Err(AdminError::BadRequest(format!(
            "kind must be one of {}, not {k:?}.",
            KINDS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut rows = state
        .store()
        .suppressions_of_kind(kind, after, PAGE + 1)
        .await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let next = if more {
        rows.last().map(|s| {
            format!(
                "/admin/suppressions?kind={}&after={}",
                kind.unwrap_or_default(),
                s.event
            )
        })
    } else {
        None
    };
    let may_remove = staff.may("DELETE", "/suppressions/{id}");
    let list: Vec<Value> = rows
        .iter()
        .map(|s| {
            json!({
                "id": s.event,
                "contact": s.contact,
                "email": s.email,
                "kind": KINDS.iter().find(|(c, _)| *c == s.kind).map_or(s.kind.as_str(), |(_, l)| *l),
                "topic": s.topic,
                "channel": s.channel,
                "source": s.source.replace('_', " "),
                "at": when(s.at),
                "removable": may_remove && s.removable(),
            })
        })
        .collect();
    let topics: Vec<Value> = state
        .store()
        .topics()
        .await?
        .iter()
        .map(|t| json!({"key": t.key.to_string(), "name": t.name}))
        .collect();
    render(
        &state,
        &staff,
        "admin/suppressions.html",
        "Suppressions",
        json!({
            "current": "/admin/suppressions",
            "kinds": KINDS.iter().map(|(c, l)| json!({"code": c, "label": l})).collect::<Vec<_>>(),
            "kind": kind,
            "rows": list,
            "next": next,
            "topics": topics,
            "may_add": staff.may("POST", "/suppressions"),
            "may_remove": may_remove,
        }),
    )
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    channel: String,
}

/// Adds a "no" (the API's `POST /suppressions`).
pub(super) async fn add(
    State(state): State<AppState>,
    Posted { staff, form }: Posted<AddForm>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/suppressions")?;
    let mut map = Map::new();
    for (k, v) in [
        ("email", form.email.trim()),
        ("kind", form.kind.trim()),
        ("topic", form.topic.trim()),
        ("channel", form.channel.trim()),
    ] {
        // An objection covers every channel: the form's channel is not asked.
        if v.is_empty() || (k == "channel" && form.kind.trim() == "object") {
            continue;
        }
        map.insert(k.into(), Value::String(v.into()));
    }
    if !map.contains_key("email") {
        return Ok(done_with_error(
            "/admin/suppressions",
            "Nothing was added: enter the email address to suppress.",
        ));
    }
    if !map.contains_key("kind") {
        return Ok(done_with_error(
            "/admin/suppressions",
            "Nothing was added: choose the kind of suppression.",
        ));
    }
    match add_suppression(&state, staff.actor(), &Fields::from(map)).await {
        Ok(added) => {
            staff
                .record(
                    &state,
                    "suppressions.add",
                    Some(format!("contact:{}", added.recorded.contact_id)),
                    added.detail(),
                )
                .await?;
            Ok(done(
                "/admin/suppressions",
                format!(
                    "Added: {} for contact {} (ledger event {}). It applies before the next message.",
                    added.kind.replace('_', " "),
                    added.recorded.contact_id,
                    added.recorded.event_id
                ),
            ))
        }
        Err(e) if e.status().is_client_error() => Ok(done_with_error(
            "/admin/suppressions",
            format!("Nothing was added: {}.", e.message().trim_end_matches('.')),
        )),
        Err(e) => Err(AdminError::Internal(e.message().to_owned())),
    }
}

fn suppression_id(id: &str) -> Result<i64, AdminError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AdminError::NotFound(format!("{id:?} is not a suppression id.")))
}

/// The confirmation step before taking out a hard bounce.
pub(super) async fn remove_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    staff.require("DELETE", "/suppressions/{id}")?;
    let id = suppression_id(&id)?;
    let entry = state.store().suppression(id).await?.ok_or_else(|| {
        AdminError::NotFound(format!(
            "There is no standing suppression {id} (it may have been lifted or replaced)."
        ))
    })?;
    if !entry.removable() {
        return Ok(done_with_error(
            "/admin/suppressions",
            format!(
                "Suppression {id} cannot be removed: only hard bounces can be taken out. What the person said, complaints and erasures stay."
            ),
        ));
    }
    render(
        &state,
        &staff,
        "admin/suppression_remove.html",
        "Remove a hard bounce",
        json!({"current": "/admin/suppressions", "entry": {
            "id": entry.event, "contact": entry.contact, "email": entry.email,
            "channel": entry.channel, "at": when(entry.at),
        }}),
    )
}

/// Takes out a hard bounce found to be wrong (the API's `DELETE
/// /suppressions/{id}`); anything else is refused with the reason.
pub(super) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { staff, form }: Posted<ConfirmForm>,
) -> Result<Response, AdminError> {
    staff.require("DELETE", "/suppressions/{id}")?;
    let id = suppression_id(&id)?;
    if form.confirm != "yes" {
        return Ok(done_with_error(
            &format!("/admin/suppressions/{id}/remove"),
            "Nothing was removed: tick the box to confirm that this hard bounce was a mistake.",
        ));
    }
    match clear_bounce(&state, staff.actor(), id).await {
        Ok((recorded, entry)) => {
            staff
                .record(
                    &state,
                    "suppressions.remove",
                    Some(format!("contact:{}", recorded.contact_id)),
                    json!({"bounce_event": id, "event": recorded.event_id, "channel": entry.channel}),
                )
                .await?;
            Ok(done(
                "/admin/suppressions",
                format!(
                    "The hard bounce {id} was cleared for contact {} (ledger event {}); the bounce itself stays in the ledger.",
                    recorded.contact_id, recorded.event_id
                ),
            ))
        }
        Err(e) if e.status().is_client_error() => Ok(done_with_error(
            "/admin/suppressions",
            format!(
                "Nothing was removed: {}.",
                e.message().trim_end_matches('.')
            ),
        )),
        Err(e) => Err(AdminError::Internal(e.message().to_owned())),
    }
}

// ---- the staff audit trail -----------------------------------------------------------

pub(super) async fn audit(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ListQuery>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/audit")?;
    let before = position(q.before.as_deref(), "before")?;
    let mut rows = state.store().staff_actions_newest(before, PAGE + 1).await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let next = if more {
        rows.last()
            .map(|a| format!("/admin/audit?before={}", a.seq))
    } else {
        None
    };
    let list: Vec<Value> = rows
        .iter()
        .map(|a| {
            let detail = match &a.detail {
                Value::Object(m) if m.is_empty() => String::new(),
                Value::Null => String::new(),
                d => d.to_string(),
            };
            json!({"seq": a.seq, "when": when(a.at), "who": a.actor, "what": a.action, "target": a.target, "detail": detail})
        })
        .collect();
    render(
        &state,
        &staff,
        "admin/audit.html",
        "Audit trail",
        json!({"current": "/admin/audit", "rows": list, "next": next, "newest": before.is_none()}),
    )
}
