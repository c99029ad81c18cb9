//! Reading a JSON request body field by field, so that every problem names
//! its field: malformed JSON is a 400, a missing or mistyped field a 422.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use veto_core::{Channel, EmailAddress, Source, Timestamp, Topic, TopicKey, WordingId};

use super::ApiError;
use crate::AppState;

/// Clocks differ a little between the form's server and veto: a time up to
/// this far ahead is taken as "now". Further ahead is refused, because a
/// future-dated grant would outrank a withdrawal made before that time.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Evidence texts longer than this are refused, not cut: evidence is kept exactly.
const MAX_USER_AGENT: usize = 1024;
const MAX_URL: usize = 2048;
const MAX_TEXT: usize = 200;

/// A JSON object body. Axum's own rejections become [`ApiError`]s.
pub(crate) struct JsonBody(pub Fields);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<Map<String, Value>>::from_request(req, state).await {
            Ok(Json(map)) => Ok(JsonBody(Fields(map))),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                e.body_text(),
            )),
            Err(JsonRejection::JsonDataError(_)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body must be a JSON object, like {\"email\": \"jo@example.com\"}",
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON, with Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::new(e.status(), "unreadable_body", e.body_text())),
        }
    }
}

pub(crate) struct Fields(Map<String, Value>);

/// Where the person acted, as the organisation's form saw it.
pub(crate) struct FormEvidence {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub form_url: Option<String>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(name: &str, expected: &str, v: &Value) -> ApiError {
    ApiError::invalid(
        name,
        "invalid_type",
        format!("{name} must be {expected}, not {}", type_name(v)),
    )
}

fn missing(name: &str, why: &str) -> ApiError {
    ApiError::invalid(name, "missing_field", format!("{name} is required: {why}"))
}

/// A text field that says something: absent and blank are `None`, the
/// rest is trimmed and at most `max` characters (API bodies and admin forms).
pub(crate) fn checked_text(
    name: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let Some(s) = value.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if s.chars().count() > max {
        return Err(ApiError::invalid(
            name,
            "too_long",
            format!("{name} is longer than {max} characters"),
        ));
    }
    Ok(Some(s.to_owned()))
}

impl Fields {
    /// Refuses fields the endpoint does not know: a misspelt optional field
    /// (`"wordng"`) would otherwise be dropped without a word.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(
                k,
                "unknown_field",
                format!(
                    "unknown field {k:?}; this endpoint takes {}",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The field names the body has.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A string, or `None` when absent or null.
    pub fn str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong_type(name, "a string", v)),
        }
    }

    /// A string that says something: absent, null and blank are `None`.
    pub fn text(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        checked_text(name, self.str(name)?, max)
    }

    pub fn required_str(&self, name: &str, why: &str) -> Result<&str, ApiError> {
        self.str(name)?.ok_or_else(|| missing(name, why))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong_type(name, "true or false", v)),
        }
    }

    pub fn required_bool(&self, name: &str, why: &str) -> Result<bool, ApiError> {
        self.bool(name)?.ok_or_else(|| missing(name, why))
    }

    /// A store id: a positive integer.
    pub fn id(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.value(name) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(wrong_type(name, "a positive whole number (an id)", v)),
            },
        }
    }

    /// A number, or `None` when absent or null.
    pub fn number(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.value(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a number", v)),
        }
    }

    /// A list of strings (absent or null: empty).
    pub fn strings(&self, name: &str) -> Result<Vec<String>, ApiError> {
        match self.value(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(wrong_type(&format!("{name}[{i}]"), "a string", v)),
                })
                .collect(),
            Some(v) => Err(wrong_type(name, "a list of strings", v)),
        }
    }

    /// An RFC 3339 time (`2026-12-24T09:00:00Z`).
    pub fn time(&self, name: &str) -> Result<Option<veto_core::Timestamp>, ApiError> {
        let Some(s) = self.str(name)? else {
            return Ok(None);
        };
        s.parse().map(Some).map_err(|e| {
            ApiError::invalid(
                name,
                "invalid_time",
                format!("{name} is not an RFC 3339 time such as 2026-12-24T09:00:00Z: {e}"),
            )
        })
    }

    // ---- what the endpoints share --------------------------------------------

    pub fn email(&self) -> Result<EmailAddress, ApiError> {
        let s = self.required_str("email", "the person's email address")?;
        EmailAddress::parse(s).map_err(|e| {
            ApiError::invalid(
                "email",
                "invalid_email",
                format!("email is not a deliverable address: {e}"),
            )
        })
    }

    /// `topic`: a topic key, or absent / null for all marketing.
    pub async fn topic(&self, state: &AppState) -> Result<Option<Topic>, ApiError> {
        let Some(key) = self.str("topic")? else {
            return Ok(None);
        };
        if let Ok(parsed) = TopicKey::parse(key)
            && let Some(topic) = state.store().topic(&parsed).await?
        {
            return Ok(Some(topic));
        }
        let known: Vec<String> = state
            .store()
            .topics()
            .await?
            .into_iter()
            .map(|t| t.key.to_string())
            .collect();
        Err(ApiError::invalid(
            "topic",
            "unknown_topic",
            format!(
                "there is no topic {key:?}; the topics are: {} (leave topic out for all marketing)",
                if known.is_empty() {
                    "none yet".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ))
    }

    /// `wording`: the id of the exact consent text shown, which must exist.
    pub async fn wording(
        &self,
        state: &AppState,
        required: Option<&str>,
    ) -> Result<Option<WordingId>, ApiError> {
        let Some(id) = self.id("wording")? else {
            return match required {
                Some(why) => Err(missing("wording", why)),
                None => Ok(None),
            };
        };
        match state.store().wording(WordingId(id)).await? {
            Some(w) => Ok(Some(w.id)),
            None => Err(ApiError::invalid(
                "wording",
                "unknown_wording",
                format!(
                    "there is no wording #{id}; store the exact text the form shows with `veto wordings add` and send its id"
                ),
            )),
        }
    }

    /// `wording`, which this endpoint needs; `why` says what it is for.
    pub async fn required_wording(
        &self,
        state: &AppState,
        why: &str,
    ) -> Result<WordingId, ApiError> {
        self.wording(state, Some(why))
            .await?
            .ok_or_else(|| missing("wording", why))
    }

    /// `channel`: defaults to email.
    pub fn channel(&self) -> Result<Channel, ApiError> {
        match self.str("channel")? {
            None => Ok(Channel::Email),
            Some(s) => s
                .parse()
                .map_err(|e| ApiError::invalid("channel", "invalid_value", format!("{e}"))),
        }
    }

    /// `source`: "form" (the organisation's form) or "api" (the default).
    pub fn source(&self) -> Result<Source, ApiError> {
        match self.str("source")? {
            None | Some("api") => Ok(Source::Api),
            Some("form") => Ok(Source::Form),
            Some(other) => Err(ApiError::invalid(
                "source",
                "invalid_value",
                format!("source must be \"form\" or \"api\", not {other:?}"),
            )),
        }
    }

    /// `at`: when the person acted (RFC 3339), default now, never in the future.
    pub fn at(&self) -> Result<Timestamp, ApiError> {
        let now = Timestamp::now();
        let Some(s) = self.str("at")? else {
            return Ok(now);
        };
        let at: Timestamp = s.trim().parse().map_err(|e| {
            ApiError::invalid(
                "at",
                "invalid_time",
                format!(
                    "at must be an RFC 3339 time with an offset, like 2026-05-01T09:30:00Z ({e})"
                ),
            )
        })?;
        let latest = now.checked_add(CLOCK_SKEW).unwrap_or(now);
        if at > latest {
            return Err(ApiError::invalid(
                "at",
                "in_the_future",
                format!(
                    "at ({at}) is in the future (veto's clock says {now}); give the time the person acted"
                ),
            ));
        }
        Ok(at.min(now))
    }

    /// The request's evidence: the person's IP and user agent, and the form's URL.
    pub fn evidence(&self) -> Result<FormEvidence, ApiError> {
        let ip = match self.text("ip", 64)? {
            None => None,
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| {
                        ApiError::invalid(
                            "ip",
                            "invalid_ip",
                            format!(
                                "ip must be an IPv4 or IPv6 address, like 192.0.2.10, not {s:?}"
                            ),
                        )
                    })?
                    .to_canonical()
                    .to_string(),
            ),
        };
        let user_agent = self.text("user_agent", MAX_USER_AGENT)?;
        let form_url = self.text("form_url", MAX_URL)?;
        if let Some(u) = &form_url {
            let lower = u.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                return Err(ApiError::invalid(
                    "form_url",
                    "invalid_url",
                    "form_url must be the http:// or https:// address of the form",
                ));
            }
        }
        Ok(FormEvidence {
            ip,
            user_agent,
            form_url,
        })
    }

    /// A short free text such as an order reference.
    pub fn short_text(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.text(name, MAX_TEXT)
    }
}
