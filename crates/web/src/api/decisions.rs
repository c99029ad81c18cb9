//! `POST /api/v1/decisions`: may the organisation contact these people on
//! this topic and channel now? For call-centre diallers and SMS tools,
//! which contact people outside veto's transports. On the phone channel the
//! answer includes the telephone preference screening (PECR reg 21).
//!
//! A decision is the guard's, on the same state and rules as a message:
//! nothing here can allow what the guard would refuse.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use veto_core::{
    Channel, ConsentState, ContactId, Decision, EmailAddress, Message, MessageClass, PhoneNumber,
    Timestamp, TopicKey,
};
use veto_store::{PhoneScreening, TpsList};

use super::ApiError;
use super::fields::JsonBody;
use super::schema::ErrorBody;
use crate::AppState;

/// The most people one request may ask about.
const MAX_PEOPLE: usize = 1000;

/// The request as described; it is read field by field (`fields.rs`).
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionsIn {
    /// The topic of the marketing.
    #[schema(min_length = 1, max_length = 40, pattern = "^[a-z0-9][a-z0-9-]*$")]
    pub topic: String,
    /// email, sms, phone or post (default email).
    #[schema(pattern = "^(email|sms|phone|post)$")]
    pub channel: Option<String>,
    /// Up to 1,000 people, each by exactly one of email, phone or contact id.
    #[schema(min_items = 1, max_items = 1000)]
    pub people: Vec<PersonIn>,
}

#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonIn {
    /// An email address.
    #[schema(min_length = 3, max_length = 320)]
    pub email: Option<String>,
    /// A phone number in E.164 form (`+447700900123`).
    #[schema(min_length = 2, max_length = 32)]
    pub phone: Option<String>,
    /// A contact id.
    #[schema(minimum = 1)]
    pub contact: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionsOut {
    /// When the decisions were made; they hold for that moment only.
    pub decided_at: String,
    pub topic: String,
    pub channel: String,
    /// One per person asked about, in order.
    pub decisions: Vec<DecisionOut>,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionOut {
    /// The person as asked about.
    #[schema(value_type = Object)]
    pub person: Value,
    /// The contacts veto holds for them (a phone number can be shared).
    pub contacts: Vec<i64>,
    pub allowed: bool,
    /// The rule the decision rests on, e.g. `PECR-21`, `GDPR-7`.
    pub rule: String,
    /// Why not, as a stable code (`withdrawn`, `tps_listed`, …); null when allowed.
    pub reason: Option<String>,
    /// The decision in words.
    pub explanation: String,
    /// The ledger event behind the decision, if any.
    pub event: Option<i64>,
    /// The jurisdiction whose rule decided.
    pub jurisdiction: Option<String>,
    /// On the phone channel: the telephone preference screening.
    pub screening: Option<ScreeningOut>,
}

#[derive(Serialize, ToSchema)]
pub struct ScreeningOut {
    /// The number screened.
    pub number: Option<String>,
    /// The list that screens this subscriber: tps (individuals) or ctps (corporate).
    pub list: String,
    /// The date of that list's data (null: never loaded).
    pub screened_at: Option<String>,
    /// The data is more than 28 days old (or missing): a call needs fresh screening.
    pub stale: bool,
    /// The lists the number is on.
    pub listed_on: Vec<String>,
    /// Since when it has been listed.
    pub listed_since: Option<String>,
}

/// Decides, for each person, whether they may be contacted on this topic
/// and channel now.
#[utoipa::path(post, path = "/api/v1/decisions", tag = "decisions", request_body = DecisionsIn,
    responses((status = 200, body = DecisionsOut), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<DecisionsOut>, ApiError> {
    body.only(&["topic", "channel", "people"])?;
    let key = body.required_str("topic", "the topic of the marketing")?;
    let not_found = || {
        ApiError::invalid(
            "topic",
            "unknown_topic",
            format!("there is no topic {key:?}"),
        )
    };
    let key = TopicKey::parse(key).map_err(|_| not_found())?;
    let topic = state.store().topic(&key).await?.ok_or_else(not_found)?;
    let channel = body.channel()?;
    let people = people(body.value("people"))?;

    let now = Timestamp::now();
    let settings = state.policy();
    let store = state.store();
    let mut decisions = Vec::with_capacity(people.len());
    for (given, who) in people {
        let mut contacts: Vec<i64> = match &who {
            // `load_state` below finds the person and their state at once.
            Who::Email(_) => Vec::new(),
            Who::Phone(p) => store
                .contacts_with_phone(p)
                .await?
                .into_iter()
                .map(|c| c.0)
                .collect(),
            Who::Contact(id) => store
                .contact(ContactId(*id))
                .await?
                .filter(|c| c.erased_at.is_none())
                .map(|c| c.id)
                .into_iter()
                .collect(),
        };
        // Each contact's state; a person asked about by address, an unknown
        // one (or an erased address, which the suppression list still
        // knows) is asked about as such.
        let mut states: Vec<(Option<i64>, ConsentState, Option<PhoneNumber>)> = Vec::new();
        // The contact `load_state` found by address, listed after the loop.
        let mut by_address = None;
        if contacts.is_empty() {
            let (found, s) = match &who {
                Who::Email(e) => store.load_state(e, now).await?,
                _ => (None, ConsentState::default()),
            };
            let phone = match (&who, found) {
                (Who::Phone(p), _) => Some(p.clone()),
                // Their number matters only to a call.
                (Who::Email(_), Some(id)) if channel == Channel::Phone => store
                    .contact(id)
                    .await?
                    .and_then(|c| c.phone)
                    .and_then(|p| PhoneNumber::parse(&p).ok()),
                _ => None,
            };
            if matches!(who, Who::Email(_)) {
                by_address = found.map(|c| c.0);
            }
            states.push((found.map(|c| c.0), s, phone));
        }
        for id in &contacts {
            let Some(c) = store.contact(ContactId(*id)).await? else {
                continue;
            };
            let Some(email) = c.email.as_deref().and_then(|e| EmailAddress::parse(e).ok()) else {
                continue;
            };
            let (_, s) = store.load_state(&email, now).await?;
            let phone = match &who {
                Who::Phone(p) => Some(p.clone()),
                _ => c.phone.as_deref().and_then(|p| PhoneNumber::parse(p).ok()),
            };
            states.push((Some(*id), s, phone));
        }
        contacts.extend(by_address);
        // The first refusal decides (every contact holding the number must
        // be callable); otherwise the first allowance.
        let mut chosen: Option<(Decision, Option<ScreeningOut>)> = None;
        for (_, mut s, phone) in states {
            let screening = if channel == Channel::Phone {
                let screening = match &phone {
                    Some(p) => store.phone_screening(p, s.subscriber).await?,
                    None => PhoneScreening {
                        list: TpsList::for_subscriber(s.subscriber),
                        screened_at: None,
                        listed_since: None,
                        listed_on: Vec::new(),
                    },
                };
                // Without a number there is nothing to screen: the fact is
                // left out and only the person's consent can allow a call.
                if phone.is_some()
                    && let Some(f) = screening.fact()
                {
                    s.upsert(f);
                }
                Some(screening_out(phone.as_ref(), &screening, now))
            } else {
                None
            };
            let d = veto_core::decide(
                &s,
                &Message {
                    class: MessageClass::Marketing(&topic),
                    channel,
                },
                &settings,
                now,
            );
            let replace = match &chosen {
                None => true,
                Some((prev, _)) => prev.is_allowed() && !d.is_allowed(),
            };
            if replace {
                chosen = Some((d, screening));
            }
        }
        let (d, screening) = chosen.expect("at least one state is decided");
        decisions.push(decision_out(given, contacts, d, screening));
    }
    Ok(Json(DecisionsOut {
        decided_at: now.to_string(),
        topic: topic.key.as_str().to_owned(),
        channel: channel.as_str().to_owned(),
        decisions,
    }))
}

enum Who {
    Email(EmailAddress),
    Phone(PhoneNumber),
    Contact(i64),
}

fn people(value: Option<&Value>) -> Result<Vec<(Value, Who)>, ApiError> {
    let items = match value {
        None => {
            return Err(ApiError::invalid(
                "people",
                "missing_field",
                "people is required: a list of {\"email\"}, {\"phone\"} or {\"contact\"}",
            ));
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::invalid(
                "people",
                "invalid_type",
                "people must be a list of {\"email\"}, {\"phone\"} or {\"contact\"}",
            ));
        }
    };
    if items.is_empty() || items.len() > MAX_PEOPLE {
        return Err(ApiError::invalid(
            "people",
            "invalid_length",
            format!(
                "people must hold 1 to {MAX_PEOPLE} people; it has {}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| person(i, v).map(|w| (v.clone(), w)))
        .collect()
}

fn person(i: usize, v: &Value) -> Result<Who, ApiError> {
    let field = format!("people[{i}]");
    let empty = Map::new();
    let obj = match v {
        Value::Object(o) => o,
        _ => &empty,
    };
    let given: Vec<(&String, &Value)> = obj.iter().filter(|(_, v)| !v.is_null()).collect();
    if !v.is_object() || given.len() != 1 {
        return Err(ApiError::invalid(
            &field,
            "invalid_person",
            format!(
                "{field} must be an object with exactly one of email, phone or contact, like {{\"phone\": \"+447700900123\"}}"
            ),
        ));
    }
    let (name, value) = given[0];
    let at = format!("{field}.{name}");
    match (name.as_str(), value) {
        ("email", Value::String(s)) => EmailAddress::parse(s).map(Who::Email).map_err(|e| {
            ApiError::invalid(
                &at,
                "invalid_email",
                format!("{at} is not a deliverable address: {e}"),
            )
        }),
        ("phone", Value::String(s)) => PhoneNumber::parse(s)
            .map(Who::Phone)
            .map_err(|e| ApiError::invalid(&at, "invalid_phone", format!("{at}: {e}"))),
        ("contact", v) => match v.as_i64() {
            Some(n) if n > 0 => Ok(Who::Contact(n)),
            _ => Err(ApiError::invalid(
                &at,
                "invalid_type",
                format!("{at} must be a positive whole number (a contact id)"),
            )),
        },
        ("email" | "phone", _) => Err(ApiError::invalid(
            &at,
            "invalid_type",
            format!("{at} must be a string"),
        )),
        (other, _) => Err(ApiError::invalid(
            &format!("{field}.{other}"),
            "unknown_field",
            format!("{field} has an unknown field {other:?}: use email, phone or contact"),
        )),
    }
}

fn screening_out(number: Option<&PhoneNumber>, s: &PhoneScreening, now: Timestamp) -> ScreeningOut {
    let stale = s
        .screened_at
        .is_none_or(|t| veto_core::tps_days_passed(t, now));
    ScreeningOut {
        number: number.map(|n| n.as_str().to_owned()),
        list: s.list.as_str().to_owned(),
        screened_at: s.screened_at.map(|t| t.to_string()),
        stale,
        listed_on: s.listed_on.iter().map(|l| l.as_str().to_owned()).collect(),
        listed_since: s.listed_since.map(|t| t.to_string()),
    }
}

fn decision_out(
    person: Value,
    contacts: Vec<i64>,
    d: Decision,
    screening: Option<ScreeningOut>,
) -> DecisionOut {
    let (allowed, reason, explanation, jurisdiction) = match d {
        Decision::Allowed(a) => (
            true,
            None,
            format!("allowed under {}", a.rule.id()),
            a.jurisdiction,
        ),
        Decision::Denied(r) => (
            false,
            Some(r.reason.code().to_owned()),
            format!("not allowed: {} ({})", r.reason, r.rule.id()),
            r.jurisdiction,
        ),
    };
    DecisionOut {
        person,
        contacts,
        allowed,
        rule: d.rule().id().to_owned(),
        reason,
        explanation,
        event: d.event().map(|e| e.0),
        jurisdiction: jurisdiction.map(|j| j.as_str().to_owned()),
        screening,
    }
}
