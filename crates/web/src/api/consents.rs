//! `POST /api/v1/consents`: a grant or withdrawal from the organisation's form.
//! `POST /api/v1/purchases`: a purchase, the soft opt-in basis (PECR reg 22(3)).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use veto_core::{
    EmailAddress, EventKind, JurisdictionSet, NewEvent, Reason, Refusal, Relationship,
    RelationshipKind, Scope, SubscriberType,
};
use veto_store::{Append, AppendOutcome, ContactInput, Evidence};

use super::fields::{Fields, FormEvidence, JsonBody};
use super::{ApiError, Recorder};
use crate::AppState;

const CONSENT_FIELDS: &[&str] = &[
    "email",
    "topic",
    "channel",
    "action",
    "wording",
    "source",
    "ip",
    "user_agent",
    "form_url",
    "at",
];

const PURCHASE_FIELDS: &[&str] = &[
    "email",
    "order_ref",
    "product_group",
    "opt_out_offered",
    "at",
    "jurisdiction",
    "subscriber_type",
    "channel",
    "source",
    "ip",
    "user_agent",
    "form_url",
];

type Created = (StatusCode, Json<Value>);

/// A grant or withdrawal from the organisation's form. A grant after an
/// opt-out is refused (409) with the reason: only the person can re-grant.
#[utoipa::path(post, path = "/api/v1/consents", tag = "consent capture", request_body = super::schema::ConsentIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = super::schema::EventRecorded), (status = "4XX", body = super::schema::ErrorBody),
        (status = 503, body = super::schema::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn record(
    State(state): State<AppState>,
    caller: Recorder,
    JsonBody(body): JsonBody,
) -> Result<Created, ApiError> {
    body.only(CONSENT_FIELDS)?;
    let email = body.email()?;
    let topic = body.topic(&state).await?;
    let channel = body.channel()?;
    let kind = match body.required_str("action", "\"grant\" or \"withdraw\"")? {
        "grant" => EventKind::Grant,
        "withdraw" => EventKind::Withdraw,
        other => {
            return Err(ApiError::invalid(
                "action",
                "invalid_value",
                format!("action must be \"grant\" or \"withdraw\", not {other:?}"),
            ));
        }
    };
    let wording = body
        .wording(
            &state,
            (kind == EventKind::Grant).then_some(
                "a grant must say which exact consent text the person was shown (its wording id)",
            ),
        )
        .await?;
    let source = body.source()?;
    let at = body.at()?;
    let FormEvidence {
        ip,
        user_agent,
        form_url,
    } = body.evidence()?;
    let item = Append {
        contact: ContactInput::new(email.clone()),
        event: NewEvent {
            kind,
            scope: topic.as_ref().map_or(Scope::All, |t| Scope::Topic(t.id)),
            channel: Some(channel),
            source,
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
    append(&state, &email, item).await
}

/// A purchase: the soft opt-in basis (PECR reg 22(3)).
#[utoipa::path(post, path = "/api/v1/purchases", tag = "consent capture", request_body = super::schema::PurchaseIn,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer to a retried request")),
    responses((status = 201, body = super::schema::EventRecorded), (status = "4XX", body = super::schema::ErrorBody),
        (status = 503, body = super::schema::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn purchase(
    State(state): State<AppState>,
    caller: Recorder,
    JsonBody(body): JsonBody,
) -> Result<Created, ApiError> {
    body.only(PURCHASE_FIELDS)?;
    let email = body.email()?;
    let opt_out_offered = body.required_bool(
        "opt_out_offered",
        "whether the person was offered a simple, free way to refuse marketing when their details were taken (PECR reg 22(3)(c))",
    )?;
    let order_ref = body.short_text("order_ref")?;
    let product_group = body.short_text("product_group")?;
    let jurisdictions = jurisdictions(&body)?;
    let subscriber_type =
        match body.str("subscriber_type")? {
            None => None,
            Some(s) => Some(s.parse::<SubscriberType>().map_err(|e| {
                ApiError::invalid("subscriber_type", "invalid_value", e.to_string())
            })?),
        };
    let channel = body.channel()?;
    let source = body.source()?;
    let at = body.at()?;
    let FormEvidence {
        ip,
        user_agent,
        form_url,
    } = body.evidence()?;
    let item = Append {
        contact: ContactInput {
            jurisdictions,
            subscriber_type,
            ..ContactInput::new(email.clone())
        },
        event: NewEvent {
            kind: EventKind::Relationship(Relationship {
                kind: RelationshipKind::Purchase,
                product_group,
                order_ref,
                opt_out_offered,
            }),
            // A relationship is with the organisation; topics match it by group.
            scope: Scope::All,
            channel: Some(channel),
            source,
            at,
        },
        evidence: Evidence {
            wording: None,
            ip,
            user_agent,
            form_url,
        },
        actor: caller.actor(),
    };
    append(&state, &email, item).await
}

/// `jurisdiction`: "UK", "UK|EU", or a list like ["UK", "EU"].
fn jurisdictions(body: &Fields) -> Result<JurisdictionSet, ApiError> {
    let bad = |e: veto_core::ParseEnumError| {
        ApiError::invalid("jurisdiction", "invalid_value", e.to_string())
    };
    match body.value("jurisdiction") {
        None => Ok(JurisdictionSet::EMPTY),
        Some(Value::String(s)) => JurisdictionSet::parse_list(s).map_err(bad),
        Some(Value::Array(items)) => items.iter().try_fold(JurisdictionSet::EMPTY, |set, item| {
            let s = item.as_str().ok_or_else(|| {
                ApiError::invalid(
                    "jurisdiction",
                    "invalid_type",
                    "jurisdiction must be a code like \"UK\" or a list of codes",
                )
            })?;
            Ok(set.with(s.parse().map_err(bad)?))
        }),
        Some(_) => Err(ApiError::invalid(
            "jurisdiction",
            "invalid_type",
            "jurisdiction must be a code like \"UK\" or a list of codes",
        )),
    }
}

/// Appends through the group committer: durable before the 201.
async fn append(state: &AppState, email: &EmailAddress, item: Append) -> Result<Created, ApiError> {
    let is_grant = item.event.kind == EventKind::Grant;
    match state.append(item).await? {
        AppendOutcome::Recorded {
            contact,
            event,
            created,
        } => Ok((
            StatusCode::CREATED,
            Json(json!({"event_id": event.0, "contact_id": contact.0, "created": created})),
        )),
        AppendOutcome::Refused(refusal) => Err(refused(state, email, is_grant, refusal).await),
    }
}

/// Why the ledger refused, in words an integrator can act on.
pub(crate) async fn refused(
    state: &AppState,
    email: &EmailAddress,
    is_grant: bool,
    r: Refusal,
) -> ApiError {
    match refusal_words(state, email, &r).await {
        Ok(what) if is_grant => ApiError::conflict(
            "only_the_person_can_regrant",
            Some("action"),
            format!(
                "{what}; only the person can re-grant, on the preference centre or by confirming a signup"
            ),
        ),
        Ok(what) if matches!(r.reason, Reason::Suppressed | Reason::Erased) => ApiError::conflict(
            "address_erased",
            Some("email"),
            format!(
                "{what}; veto records nothing more about this address until the person signs up again themselves"
            ),
        ),
        Ok(what) => ApiError::conflict("refused", None, what),
        Err(e) => e,
    }
}

/// "j•••@example.com withdrew from Product news on 2026-05-01 (GDPR-7)".
async fn refusal_words(
    state: &AppState,
    email: &EmailAddress,
    r: &Refusal,
) -> Result<String, ApiError> {
    let (date, scope) = match r.event {
        Some(id) => match state.store().event(id).await? {
            Some(e) => (Some(e.event.at), Some(e.event.scope)),
            None => (None, None),
        },
        None if r.reason == Reason::Suppressed => (state.store().is_suppressed(email).await?, None),
        None => (None, None),
    };
    let scope = match scope {
        Some(Scope::Topic(id)) => state
            .store()
            .topics()
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .map_or_else(|| format!("topic #{}", id.0), |t| t.name),
        _ => "all marketing".to_owned(),
    };
    let on = date.map_or_else(String::new, |d| format!(" on {}", d.strftime("%Y-%m-%d")));
    let who = email.masked();
    let rule = r.rule.id();
    Ok(match r.reason {
        Reason::Withdrawn => format!("{who} withdrew from {scope}{on} ({rule})"),
        Reason::RefusedAtCollection => {
            format!("{who} opted out of {scope} when their details were collected{on} ({rule})")
        }
        Reason::Objected => format!("{who} objected to all marketing{on} ({rule})"),
        Reason::Complained => format!("{who} reported a message as spam{on} ({rule})"),
        Reason::Erased | Reason::Suppressed => format!("{who} was erased{on} ({rule})"),
        other => format!("{who}: {other} ({rule})"),
    })
}
