//! The preference centre (DESIGN.md, "Messages that carry choice").
//!
//! `GET /p/{token}` shows every topic with its current state, a frequency
//! limit, a pause, one "stop all marketing", the service messages that still
//! arrive and why, and the way to download or erase one's data. It changes
//! nothing (mail scanners fetch links). `POST /p/{token}` records only what
//! changed, as the person's own events: they may re-grant here.
//!
//! Every form is guarded twice against posts from other sites: an `Origin`
//! other than veto's own is refused, and each form carries a
//! [`Purpose::Form`] token minted when it was rendered, good for
//! [`FORM_MINUTES`] and for the same contact only.
//!
//! Download and erase take a second step: the preference link may have been
//! forwarded, so a link that works for an hour goes to the address itself
//! (`/p/confirm/{download,erase}/{token}`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use jiff::ToSpan;
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::{Value, json};
use veto_core::{
    Channel, ConsentState, ContactId, Decision, EmailAddress, EventKind, Fact, FrequencyLimit,
    Message, MessageClass, NewEvent, Period, PolicySettings, Scope, Source, Timestamp, Topic,
    decide,
};
use veto_mail::{Claims, Purpose, TokenScope};
use veto_sender::{SendError, Sent};
use veto_store::{Append, AppendOutcome, ContactInput, Evidence, GuardClass, RequestKind};

use crate::client::client_ip;
use crate::i18n::Lang;
use crate::pages::not_found_page_in;
use crate::{AppState, WebError};

/// Invalid tokens one address may try in a minute before it gets 429. The
/// budget is shared with the unsubscribe pages (same limiter key).
const INVALID_PER_IP: u32 = 30;
/// Page views and form posts per address, and per token, in a minute.
const PAGES_PER_IP: u32 = 600;
const PAGES_PER_TOKEN: u32 = 60;
/// How long a rendered form may be sent back.
const FORM_MINUTES: u64 = 120;
/// How long an emailed download or erase link works.
const CONFIRM_MINUTES: u64 = 60;
/// Download and erase links one contact may be sent in an hour.
const LINKS_PER_HOUR: usize = 3;
/// Requests for such links from one address in a minute.
const LINK_REQUESTS_PER_IP: u32 = 10;
/// The frequency limits offered (others set elsewhere are shown too).
const FREQUENCIES: [FrequencyLimit; 4] = [
    FrequencyLimit {
        max: 1,
        per: Period::Week,
    },
    FrequencyLimit {
        max: 2,
        per: Period::Week,
    },
    FrequencyLimit {
        max: 1,
        per: Period::Month,
    },
    FrequencyLimit {
        max: 2,
        per: Period::Month,
    },
];
/// The pauses offered, in months.
const PAUSE_MONTHS: [i64; 3] = [1, 3, 6];

const DOWNLOAD: GuardClass<'static> = GuardClass::Requested("download-data");
const ERASE: GuardClass<'static> = GuardClass::Requested("erase-data");

#[derive(Deserialize)]
pub struct LangQuery {
    lang: Option<String>,
}

fn lang(q: &LangQuery, headers: &HeaderMap) -> Lang {
    Lang::of_request(q.lang.as_deref(), headers)
}

/// Who a request is from: the client, and the language they read.
struct Visit<'a> {
    state: &'a AppState,
    ip: IpAddr,
    lang: Lang,
    headers: &'a HeaderMap,
    query_lang: Option<&'a str>,
}

impl<'a> Visit<'a> {
    fn new(
        state: &'a AppState,
        peer: SocketAddr,
        headers: &'a HeaderMap,
        q: &'a LangQuery,
    ) -> Visit<'a> {
        Visit {
            state,
            ip: client_ip(peer, headers, &state.settings().trusted_proxies),
            lang: lang(q, headers),
            headers,
            query_lang: q.lang.as_deref(),
        }
    }

    /// The claims of a valid token of `purpose`, still in date; `None`
    /// (after counting the miss against the address) otherwise.
    fn verify(&self, token: &str, purpose: Purpose) -> Result<Option<Claims>, WebError> {
        let valid = self
            .state
            .keys()
            .verify(token, purpose)
            .ok()
            .filter(|c| c.scope == TokenScope::AllMarketing)
            .filter(|c| match purpose {
                // An expiry, in minutes since the epoch.
                Purpose::ConfirmDownload | Purpose::ConfirmErase => c.message.is_some_and(|exp| {
                    (now_minute()..=now_minute() + CONFIRM_MINUTES).contains(&exp)
                }),
                _ => true,
            });
        if valid.is_none()
            && !self
                .state
                .inner
                .limiter
                .allow(&format!("invalid:{}", self.ip), INVALID_PER_IP)
        {
            return Err(WebError::TooManyRequests);
        }
        if valid.is_some() {
            let limiter = &self.state.inner.limiter;
            if !limiter.allow(&format!("page-ip:{}", self.ip), PAGES_PER_IP)
                || !limiter.allow(&format!("page-token:{token}"), PAGES_PER_TOKEN)
            {
                return Err(WebError::TooManyRequests);
            }
        }
        Ok(valid)
    }

    fn not_found(&self) -> Response {
        not_found_page_in(self.state, self.headers, self.query_lang)
    }

    fn text(&self, key: &str, args: &[(&str, &str)]) -> String {
        self.state.inner.pages.catalogues.fill(self.lang, key, args)
    }

    fn org(&self) -> &str {
        &self.state.settings().organisation.name
    }

    fn render(
        &self,
        status: StatusCode,
        template: &str,
        title_key: &str,
        ctx: Value,
    ) -> Result<Response, WebError> {
        let page = self
            .state
            .inner
            .pages
            .render(self.state, template, self.lang, title_key, ctx)?;
        Ok((status, page).into_response())
    }

    /// A page of a heading, some paragraphs and an optional link.
    fn message(
        &self,
        status: StatusCode,
        heading_key: &str,
        paragraphs: Vec<String>,
        back: Option<(String, &str)>,
    ) -> Result<Response, WebError> {
        let back = back.map(|(href, key)| json!({"href": href, "text": self.text(key, &[])}));
        let ctx = json!({
            "heading": self.text(heading_key, &[]),
            "paragraphs": paragraphs,
            "back": back,
        });
        self.render(status, "preferences_message.html", heading_key, ctx)
    }

    /// The person's data is gone: there is nothing to show or change.
    fn gone(&self) -> Result<Response, WebError> {
        self.message(
            StatusCode::OK,
            "pref_gone_heading",
            vec![self.text("pref_gone_explain", &[])],
            None,
        )
    }

    /// A form that did not come from veto's own page, or came too late.
    fn forbidden(&self, why_key: &str, again: String) -> Result<Response, WebError> {
        self.message(
            StatusCode::FORBIDDEN,
            "pref_forbidden_heading",
            vec![self.text(why_key, &[])],
            Some((again, "pref_forbidden_again")),
        )
    }

    /// Anti-forgery: the `Origin` (when the browser sent one) is veto's
    /// own, and the `form` field is a form token veto minted for this
    /// contact less than [`FORM_MINUTES`] ago. `Err` is the text key that
    /// says why the form is refused (403).
    fn unforged(
        &self,
        form: Result<Form<Vec<(String, String)>>, FormRejection>,
        contact: u64,
    ) -> Result<Fields, &'static str> {
        if !from_own_page(self.headers, &self.state.settings().public_url) {
            return Err("pref_forbidden_origin");
        }
        // A body veto's own page could not have sent has no form token either.
        let fields = form
            .map(|Form(f)| Fields(f))
            .map_err(|_| "pref_forbidden_form")?;
        if form_is_fresh(self.state, fields.get("form"), contact) {
            Ok(fields)
        } else {
            Err("pref_forbidden_form")
        }
    }

    fn evidence(&self, wording: i64) -> Evidence {
        let user_agent = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        Evidence {
            wording: Some(wording),
            ip: Some(self.ip.to_string()),
            user_agent,
            form_url: Some(format!("{}/p", public_base(self.state))),
        }
    }

    fn date(&self, t: Timestamp) -> String {
        let d = t.to_zoned_datetime(TimeZone::UTC).date();
        let month = self.text(&format!("month_{}", d.month()), &[]);
        format!("{} {month} {}", d.day(), d.year())
    }

    fn frequency(&self, limit: FrequencyLimit, prefix: &str) -> String {
        let key = format!("{prefix}_{}", limit.per.as_str());
        self.text(&key, &[("n", &limit.max.to_string())])
    }
}

fn public_base(state: &AppState) -> &str {
    state.settings().public_url.trim_end_matches('/')
}

fn now_minute() -> u64 {
    u64::try_from(Timestamp::now().as_second() / 60).unwrap_or(0)
}

/// `scheme://host[:port]`, lowercased, without a default port: how
/// browsers write `Origin` (RFC 6454 §6.1).
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let scheme = scheme.to_ascii_lowercase();
    let mut host = host.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => Some(":443"),
        "http" => Some(":80"),
        _ => None,
    };
    if let Some(port) = default_port.filter(|p| host.ends_with(p)) {
        host.truncate(host.len() - port.len());
    }
    format!("{scheme}://{host}")
}

fn same_origin(origin: &HeaderValue, public_url: &str) -> bool {
    origin
        .to_str()
        .is_ok_and(|o| o != "null" && origin_of(o) == origin_of(public_url))
}

/// Whether the browser says a form was sent from veto's own pages: an
/// `Origin`, when there is one, is veto's, and a `Sec-Fetch-Site`, when
/// there is one, is `same-origin`.
///
/// veto's pages carry `Referrer-Policy: same-origin`, but under a stricter
/// policy (one a proxy may set) browsers send `Origin: null` even for a form
/// on the same origin (Fetch, "append a request `Origin` header"). Such a
/// `null` counts only when
/// `Sec-Fetch-Site: same-origin` vouches for it (every browser that sends
/// the one sends the other).
pub(crate) fn from_own_page(headers: &HeaderMap, public_url: &str) -> bool {
    let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if site.is_some_and(|s| s != b"same-origin") {
        return false;
    }
    match headers.get(header::ORIGIN) {
        None => true,
        Some(o) if o.as_bytes() == b"null" => site.is_some(),
        Some(o) => same_origin(o, public_url),
    }
}

/// The fields of a posted form, in order (a key may repeat).
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The address behind a token's contact; `None` once erased.
async fn address(state: &AppState, contact: u64) -> Result<Option<EmailAddress>, WebError> {
    let Ok(id) = i64::try_from(contact) else {
        return Ok(None);
    };
    let contact = state.store().contact(ContactId(id)).await?;
    Ok(contact
        .and_then(|c| c.email)
        .and_then(|e| EmailAddress::parse(&e).ok()))
}

/// Whether the person currently gets `topic`: what the guard would say
/// about a marketing email on it now, setting aside a pause or frequency
/// limit (those are shown, and changed, on their own; a paused topic is
/// still one the person chose).
fn gets(state: &ConsentState, topic: &Topic, now: Timestamp, policy: &PolicySettings) -> bool {
    let mut chosen = state.clone();
    chosen
        .facts
        .retain(|f| !matches!(f, Fact::Pause { .. } | Fact::Frequency { .. }));
    let message = Message {
        class: MessageClass::Marketing(topic),
        channel: Channel::Email,
    };
    // The same `[policy]` as the guard that sends.
    matches!(decide(&chosen, &message, policy, now), Decision::Allowed(_))
}

/// The pause over all marketing that is running now, if any.
fn paused_until(state: &ConsentState, now: Timestamp) -> Option<Timestamp> {
    state.facts.iter().find_map(|f| match f {
        Fact::Pause {
            scope: Scope::All,
            until,
            ..
        } if *until > now => Some(*until),
        _ => None,
    })
}

fn frequency_limit(state: &ConsentState) -> Option<FrequencyLimit> {
    state.facts.iter().find_map(|f| match f {
        Fact::Frequency { limit, .. } => Some(*limit),
        _ => None,
    })
}

/// `none`, or `{max}w` / `{max}m` (1 to 99).
fn parse_frequency(s: &str) -> Option<Option<FrequencyLimit>> {
    if s == "none" {
        return Some(None);
    }
    let per = match s.chars().last()? {
        'w' => Period::Week,
        'm' => Period::Month,
        _ => return None,
    };
    let max: u32 = s[..s.len() - 1].parse().ok()?;
    (1..=99)
        .contains(&max)
        .then_some(Some(FrequencyLimit { max, per }))
}

fn frequency_value(limit: Option<FrequencyLimit>) -> String {
    match limit {
        None => "none".into(),
        Some(l) => format!("{}{}", l.max, &l.per.as_str()[..1]),
    }
}

// ---- the page ---------------------------------------------------------------------

pub async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let v = Visit::new(&state, peer, &headers, &q);
    let Some(claims) = v.verify(&token, Purpose::Preferences)? else {
        return Ok(v.not_found());
    };
    let Some(email) = address(&state, claims.contact).await? else {
        return v.gone();
    };
    let now = Timestamp::now();
    let topics = state.store().topics().await?;
    let (_, consent) = state.store().load_state(&email, now).await?;

    let topics_ctx: Vec<Value> = topics
        .iter()
        .map(|t| {
            json!({
                "id": t.id.0,
                "name": t.name,
                "description": t.description,
                "checked": gets(&consent, t, now, &state.policy()),
            })
        })
        .collect();

    let current = frequency_limit(&consent);
    let mut offered: Vec<Option<FrequencyLimit>> = vec![None];
    offered.extend(FREQUENCIES.iter().copied().map(Some));
    if !offered.contains(&current) {
        offered.push(current);
    }
    let frequencies: Vec<Value> = offered
        .into_iter()
        .map(|l| {
            json!({
                "value": frequency_value(l),
                "text": l.map_or_else(|| v.text("pref_frequency_none", &[]), |l| v.frequency(l, "pref_frequency")),
                "selected": l == current,
            })
        })
        .collect();

    let paused = paused_until(&consent, now);
    let mut pauses = vec![];
    match paused {
        Some(until) => {
            let date = v.date(until);
            pauses.push(json!({"value": "keep", "text": v.text("pref_pause_keep", &[("date", &date)]), "checked": true}));
            pauses.push(
                json!({"value": "end", "text": v.text("pref_pause_end", &[]), "checked": false}),
            );
        }
        None => pauses.push(
            json!({"value": "none", "text": v.text("pref_pause_none", &[]), "checked": true}),
        ),
    }
    for m in PAUSE_MONTHS {
        pauses.push(json!({"value": m.to_string(), "text": v.text(&format!("pref_pause_{m}"), &[]), "checked": false}));
    }

    let form = mint_form(&state, claims.contact)?;
    let l = v.lang.code();
    let masked = email.masked();
    let service: Vec<&str> = state
        .settings()
        .service_types
        .iter()
        .map(|s| s.description.as_str())
        .collect();
    let ctx = json!({
        "for_address": v.text("pref_for", &[("address", &masked)]),
        "explain": explain(&v),
        "no_topics": v.text("pref_no_topics", &[("org", v.org())]),
        "topics": topics_ctx,
        "frequencies": frequencies,
        "pauses": pauses,
        "paused": paused.map(|u| v.text("pref_paused_until", &[("date", &v.date(u))])),
        "stop_explain": stop_explain(&v),
        "service_types": service,
        "data_explain": v.text("pref_data_explain", &[("address", &masked)]),
        "form": form,
        "action": format!("/p/{token}?lang={l}"),
        "download_action": format!("/p/{token}/download?lang={l}"),
        "erase_action": format!("/p/{token}/erase?lang={l}"),
    });
    v.render(StatusCode::OK, "preferences.html", "pref_title", ctx)
}

/// The page's explanation: the consent text behind every choice saved
/// from it (stored as a wording when a choice is saved).
fn explain(v: &Visit) -> String {
    v.text("pref_explain", &[("org", v.org())])
}

/// The text beside "Stop all marketing": the wording of an objection.
fn stop_explain(v: &Visit) -> String {
    v.text("pref_stop_explain", &[("org", v.org())])
}

/// Whether `field` is a form token veto minted for `contact` less than
/// [`FORM_MINUTES`] ago. Contact 0 (never a contact id) is for forms that
/// belong to nobody yet, such as "email me a link".
pub(crate) fn form_is_fresh(state: &AppState, field: Option<&str>, contact: u64) -> bool {
    let claims = field.and_then(|f| state.keys().verify(f, Purpose::Form).ok());
    claims.is_some_and(|c| {
        c.contact == contact
            && c.scope == TokenScope::AllMarketing
            && c.message.is_some_and(|at| {
                let now = now_minute();
                // A minute of slack for nodes whose clocks differ a little.
                at <= now + 1 && now.saturating_sub(at) <= FORM_MINUTES
            })
    })
}

pub(crate) fn mint_form(state: &AppState, contact: u64) -> Result<String, WebError> {
    let claims = Claims {
        contact,
        scope: TokenScope::AllMarketing,
        message: Some(now_minute()),
    };
    state
        .keys()
        .mint(&claims, Purpose::Form)
        .map(|t| t.to_string())
        .map_err(|e| WebError::Internal(e.to_string()))
}

// ---- saving -------------------------------------------------------------------------

/// One change, as the person reads it afterwards.
enum Change {
    Grant(String),
    Withdraw(String),
    Frequency(Option<FrequencyLimit>),
    Pause(Timestamp),
    Unpause,
    Object,
}

pub async fn save(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, WebError> {
    let v = Visit::new(&state, peer, &headers, &q);
    let Some(claims) = v.verify(&token, Purpose::Preferences)? else {
        return Ok(v.not_found());
    };
    let back = format!("/p/{token}?lang={}", v.lang.code());
    let fields = match v.unforged(form, claims.contact) {
        Ok(f) => f,
        Err(why) => return v.forbidden(why, back.clone()),
    };
    let Some(email) = address(&state, claims.contact).await? else {
        return v.gone();
    };
    let now = Timestamp::now();
    let stop_all = fields.get("action") == Some("stop_all");
    let planned = if stop_all {
        vec![(EventKind::Object, Scope::All, None, Change::Object)]
    } else {
        plan(&v, &fields, &email, now).await?
    };
    if planned.is_empty() {
        return saved(&v, vec![], false, back);
    }

    // The exact text shown beside what was pressed, in the language shown.
    let text = if stop_all {
        stop_explain(&v)
    } else {
        explain(&v)
    };
    let wording = state.store().add_wording(&text).await?.id.0;
    let mut done = vec![];
    for (kind, scope, channel, change) in planned {
        let item = Append {
            contact: ContactInput::new(email.clone()),
            event: NewEvent {
                kind,
                scope,
                channel,
                source: Source::PreferenceCentre,
                at: now,
            },
            evidence: v.evidence(wording),
            actor: "person".into(),
        };
        // Durable on return: what the next page says has happened.
        match state.append(item).await? {
            AppendOutcome::Recorded { .. } => done.push(change),
            AppendOutcome::Refused(refusal) => {
                tracing::info!(
                    reason = refusal.reason.code(),
                    "a preference-centre change was refused"
                );
                let mut paragraphs = vec![v.text("pref_refused_explain", &[])];
                if !done.is_empty() {
                    paragraphs.push(v.text("pref_saved_list", &[]));
                    paragraphs.extend(describe(&v, &done, &[]));
                }
                return v.message(
                    StatusCode::CONFLICT,
                    "pref_refused_heading",
                    paragraphs,
                    None,
                );
            }
        }
    }

    // A grant the guard still cannot act on (the address bounced, say) is
    // recorded, but the page does not pretend mail will come.
    let mut blocked = vec![];
    if done.iter().any(|c| matches!(c, Change::Grant(_))) {
        let (_, consent) = state.store().load_state(&email, Timestamp::now()).await?;
        for t in state.store().topics().await? {
            if !gets(&consent, &t, Timestamp::now(), &state.policy()) {
                blocked.push(t.name);
            }
        }
    }
    let changes = describe(&v, &done, &blocked);
    saved(&v, changes, stop_all, back)
}

/// The events that the submitted choices make, compared with the state now:
/// nothing for what did not change.
async fn plan(
    v: &Visit<'_>,
    fields: &Fields,
    email: &EmailAddress,
    now: Timestamp,
) -> Result<Vec<(EventKind, Scope, Option<Channel>, Change)>, WebError> {
    let store = v.state.store();
    let (_, consent) = store.load_state(email, now).await?;
    let ids = |name| -> BTreeSet<u16> { fields.all(name).filter_map(|s| s.parse().ok()).collect() };
    let (shown, ticked) = (ids("shown"), ids("topic"));
    let mut planned = vec![];
    // Only topics that were on the page: one added since is left alone.
    for t in store
        .topics()
        .await?
        .into_iter()
        .filter(|t| shown.contains(&t.id.0))
    {
        let (wants, gets) = (
            ticked.contains(&t.id.0),
            gets(&consent, &t, now, &v.state.policy()),
        );
        let scope = Scope::Topic(t.id);
        if wants && !gets {
            planned.push((
                EventKind::Grant,
                scope,
                Some(Channel::Email),
                Change::Grant(t.name),
            ));
        } else if !wants && gets {
            planned.push((
                EventKind::Withdraw,
                scope,
                Some(Channel::Email),
                Change::Withdraw(t.name),
            ));
        }
    }
    if let Some(f) = fields.get("frequency") {
        let wanted = parse_frequency(f).ok_or_else(|| {
            WebError::BadRequest(format!(
                "frequency: {f:?} is not one of the choices (none, or e.g. 1w, 2m)"
            ))
        })?;
        if wanted != frequency_limit(&consent) {
            planned.push((
                EventKind::Frequency(wanted),
                Scope::All,
                Some(Channel::Email),
                Change::Frequency(wanted),
            ));
        }
    }
    let paused = paused_until(&consent, now);
    match fields.get("pause") {
        None | Some("none" | "keep") => {}
        Some("end") => {
            if paused.is_some() {
                // A pause that ends now: the guard pauses only while `until` is ahead.
                planned.push((
                    EventKind::Pause { until: now },
                    Scope::All,
                    Some(Channel::Email),
                    Change::Unpause,
                ));
            }
        }
        Some(m) => {
            let months = m
                .parse::<i64>()
                .ok()
                .filter(|m| PAUSE_MONTHS.contains(m))
                .ok_or_else(|| {
                    WebError::BadRequest(format!("pause: {m:?} is not one of the choices"))
                })?;
            let until = now
                .to_zoned_datetime(TimeZone::UTC)
                .checked_add(months.months())
                .map_err(|e| WebError::Internal(format!("pause end: {e}")))?
                .timestamp();
            planned.push((
                EventKind::Pause { until },
                Scope::All,
                Some(Channel::Email),
                Change::Pause(until),
            ));
        }
    }
    Ok(planned)
}

/// What changed, in the person's words.
fn describe(v: &Visit, done: &[Change], blocked: &[String]) -> Vec<String> {
    done.iter()
        .map(|c| match c {
            Change::Grant(t) if blocked.contains(t) => {
                v.text("pref_change_grant_blocked", &[("topic", t)])
            }
            Change::Grant(t) => v.text("pref_change_grant", &[("topic", t)]),
            Change::Withdraw(t) => v.text("pref_change_withdraw", &[("topic", t)]),
            Change::Frequency(Some(l)) => v.frequency(*l, "pref_change_frequency"),
            Change::Frequency(None) => v.text("pref_change_frequency_none", &[]),
            Change::Pause(until) => v.text("pref_change_pause", &[("date", &v.date(*until))]),
            Change::Unpause => v.text("pref_change_unpause", &[]),
            Change::Object => v.text("pref_change_object", &[("org", v.org())]),
        })
        .collect()
}

fn saved(
    v: &Visit,
    changes: Vec<String>,
    stopped_all: bool,
    back: String,
) -> Result<Response, WebError> {
    let service: Vec<&str> = v
        .state
        .settings()
        .service_types
        .iter()
        .map(|s| s.description.as_str())
        .collect();
    let ctx = json!({
        "changes": changes,
        "show_service": stopped_all,
        "service_types": service,
        "back": back,
    });
    v.render(
        StatusCode::OK,
        "preferences_saved.html",
        "pref_saved_heading",
        ctx,
    )
}

// ---- download and erase: a link to the address itself --------------------------------

pub async fn request_download(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, WebError> {
    let v = Visit::new(&state, peer, &headers, &q);
    request_link(&v, &token, form, Purpose::ConfirmDownload).await
}

pub async fn request_erase(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, WebError> {
    let v = Visit::new(&state, peer, &headers, &q);
    request_link(&v, &token, form, Purpose::ConfirmErase).await
}

async fn request_link(
    v: &Visit<'_>,
    token: &str,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
    purpose: Purpose,
) -> Result<Response, WebError> {
    let state = v.state;
    let Some(claims) = v.verify(token, Purpose::Preferences)? else {
        return Ok(v.not_found());
    };
    let back = format!("/p/{token}?lang={}", v.lang.code());
    if let Err(why) = v.unforged(form, claims.contact) {
        return v.forbidden(why, back.clone());
    }
    let Some(email) = address(state, claims.contact).await? else {
        return v.gone();
    };
    let masked = email.masked();
    let back = Some((back, "pref_back"));
    if !state
        .inner
        .limiter
        .allow(&format!("confirm-link-ip:{}", v.ip), LINK_REQUESTS_PER_IP)
    {
        return Err(WebError::TooManyRequests);
    }
    // Counted from the receipts of the links already sent: durable, and
    // the same on every node.
    let now = Timestamp::now();
    let hour_ago = now.as_microsecond() - 3_600_000_000;
    let labels = [DOWNLOAD.label(), ERASE.label()];
    let contact = ContactId(i64::try_from(claims.contact).unwrap_or(i64::MAX));
    let mut recent: Vec<i64> = state
        .store()
        .receipts_for_contact(contact)
        .await?
        .into_iter()
        .filter(|r| labels.contains(&r.receipt.class) && r.receipt.checked_at > hour_ago)
        .map(|r| r.receipt.checked_at)
        .collect();
    if recent.len() >= LINKS_PER_HOUR {
        recent.sort_unstable();
        let free_at = recent[recent.len() - LINKS_PER_HOUR] + 3_600_000_000;
        let wait = ((free_at - now.as_microsecond()) / 1_000_000).clamp(1, 3600);
        let mut res = v.message(
            StatusCode::TOO_MANY_REQUESTS,
            "pref_too_many_heading",
            vec![v.text("pref_too_many_explain", &[("address", &masked)])],
            back,
        )?;
        if let Ok(h) = HeaderValue::from_str(&wait.to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, h);
        }
        return Ok(res);
    }

    let not_sent = |status| {
        v.message(
            status,
            "pref_not_sent_heading",
            vec![v.text("pref_not_sent_explain", &[("address", &masked)])],
            back.clone(),
        )
    };
    let Ok(mailer) = state.mailer() else {
        tracing::error!("no mailer: the preference centre cannot send download or erase links");
        return not_sent(StatusCode::SERVICE_UNAVAILABLE);
    };
    let (class, path, keys) = match purpose {
        Purpose::ConfirmErase => (ERASE, "erase", ("mail_erase_subject", "mail_erase_body")),
        _ => (
            DOWNLOAD,
            "download",
            ("mail_download_subject", "mail_download_body"),
        ),
    };
    let claims = Claims {
        contact: claims.contact,
        scope: TokenScope::AllMarketing,
        message: Some(now_minute() + CONFIRM_MINUTES),
    };
    let confirm = state
        .keys()
        .mint(&claims, purpose)
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let link = format!(
        "{}/p/confirm/{path}/{confirm}?lang={}",
        public_base(state),
        v.lang.code()
    );
    let subject = v.text(keys.0, &[("org", v.org())]);
    let body = v.text(keys.1, &[("org", v.org()), ("link", &link)]);
    match mailer.send_text(&email, class, &subject, &body).await {
        Ok(Sent::Delivered { .. }) => v.message(
            StatusCode::OK,
            "pref_sent_heading",
            vec![
                v.text("pref_sent_explain", &[("address", &masked)]),
                v.text("pref_sent_why", &[]),
            ],
            back,
        ),
        Ok(Sent::Refused(refusal)) => {
            tracing::info!(
                reason = refusal.reason.code(),
                "a download or erase link was not sent"
            );
            not_sent(StatusCode::CONFLICT)
        }
        Err(SendError::Store(e)) => Err(WebError::Store(e)),
        Err(e) => {
            tracing::error!(error = %e, "a download or erase link could not be sent");
            not_sent(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// Records the person's own download or erasure as a data-subject request
/// that the DPO's list shows: received when they asked for the link (its
/// expiry less its lifetime), identity checked by that link, answered now.
/// What the person asked for is done either way: a failure is logged.
async fn record_request(
    state: &AppState,
    kind: RequestKind,
    claims: &Claims,
    email: Option<&EmailAddress>,
) {
    let now = Timestamp::now();
    let asked = claims
        .message
        .and_then(|m| m.checked_sub(CONFIRM_MINUTES))
        .and_then(|m| i64::try_from(m.saturating_mul(60)).ok())
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(now);
    let contact = ContactId(i64::try_from(claims.contact).unwrap_or(i64::MAX));
    if let Err(e) = state
        .store()
        .record_self_service_request(kind, contact, email, asked, now)
        .await
    {
        tracing::error!(error = %e, kind = kind.as_str(), contact = contact.0, "the person's own request could not be recorded for the DPO");
    }
}

/// `GET /p/{token}/download` and `/erase` (the language switch on their
/// result pages): back to the preference centre.
pub async fn back_to_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let v = Visit::new(&state, peer, &headers, &q);
    // Verified first: the token goes into a header.
    if v.verify(&token, Purpose::Preferences)?.is_none() {
        return Ok(v.not_found());
    }
    Ok(Redirect::to(&format!("/p/{token}?lang={}", v.lang.code())).into_response())
}

/// `GET /p/confirm/download/{token}`: the person's data, as a JSON file.
pub async fn download(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let v = Visit::new(&state, peer, &headers, &q);
    let Some(claims) = v.verify(&token, Purpose::ConfirmDownload)? else {
        return Ok(v.not_found());
    };
    let Some(email) = address(&state, claims.contact).await? else {
        return v.gone();
    };
    let Some(data) = veto_store::export::person(state.store(), &email, v.org()).await? else {
        return v.gone();
    };
    record_request(&state, RequestKind::Access, &claims, Some(&email)).await;
    let body =
        serde_json::to_string_pretty(&data).map_err(|e| WebError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"my-data.json\"",
            ),
        ],
        body + "\n",
    )
        .into_response())
}

/// `GET /p/confirm/erase/{token}`: what erasure means, and one button.
pub async fn erase_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let v = Visit::new(&state, peer, &headers, &q);
    let Some(claims) = v.verify(&token, Purpose::ConfirmErase)? else {
        return Ok(v.not_found());
    };
    let Some(email) = address(&state, claims.contact).await? else {
        return v.gone();
    };
    let ctx = json!({
        "for_address": v.text("erase_for", &[("address", &email.masked())]),
        "after": v.text("erase_after", &[("org", v.org())]),
        "form": mint_form(&state, claims.contact)?,
        "action": format!("/p/confirm/erase/{token}?lang={}", v.lang.code()),
    });
    v.render(
        StatusCode::OK,
        "preferences_erase.html",
        "erase_heading",
        ctx,
    )
}

/// `POST /p/confirm/erase/{token}`: erases, keeping the "no" as a keyed hash.
pub async fn erase(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, WebError> {
    let v = Visit::new(&state, peer, &headers, &q);
    let Some(claims) = v.verify(&token, Purpose::ConfirmErase)? else {
        return Ok(v.not_found());
    };
    let again = format!("/p/confirm/erase/{token}?lang={}", v.lang.code());
    if let Err(why) = v.unforged(form, claims.contact) {
        return v.forbidden(why, again);
    }
    let Some(email) = address(&state, claims.contact).await? else {
        return v.gone();
    };
    // GDPR Art 17; the suppression entry keeps the "no" (DESIGN.md, "Erasure").
    state
        .store()
        .erase(&email, "person", Timestamp::now())
        .await?;
    // After the erasure: the request keeps no address.
    record_request(&state, RequestKind::Erasure, &claims, None).await;
    v.message(
        StatusCode::OK,
        "erase_done_heading",
        vec![v.text("erase_done_explain", &[])],
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_as_browsers_write_them() {
        assert_eq!(
            origin_of("https://Veto.Example.org/"),
            "https://veto.example.org"
        );
        assert_eq!(
            origin_of("https://veto.example.org:443/x"),
            "https://veto.example.org"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        let public = "https://veto.example.org";
        let ok = |o: &'static str| same_origin(&HeaderValue::from_static(o), public);
        assert!(ok("https://veto.example.org"));
        assert!(!ok("https://evil.example"));
        assert!(!ok("http://veto.example.org"));
        assert!(!ok("https://veto.example.org.evil.example"));
        assert!(!ok("null"));

        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let own = |pairs| from_own_page(&headers(pairs), public);
        assert!(own(&[]), "no Origin at all: the form token decides");
        assert!(own(&[("origin", "https://veto.example.org")]));
        assert!(
            own(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            "Chrome under no-referrer"
        );
        assert!(own(&[
            ("origin", "https://veto.example.org"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(!own(&[("origin", "null")]));
        assert!(!own(&[
            ("origin", "null"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(!own(&[("origin", "https://evil.example")]));
        assert!(!own(&[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(!own(&[("sec-fetch-site", "cross-site")]));
        assert!(!own(&[("sec-fetch-site", "same-site")]));
    }

    #[test]
    fn frequency_values_round_trip() {
        for l in FREQUENCIES {
            assert_eq!(parse_frequency(&frequency_value(Some(l))), Some(Some(l)));
        }
        assert_eq!(parse_frequency("none"), Some(None));
        for bad in ["", "w", "0w", "100m", "1x", "-1w", "1 w"] {
            assert_eq!(parse_frequency(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_page_text_is_in_both_languages() {
        let pages = crate::pages::Pages::new().expect("templates and catalogues load");
        for lang in [Lang::En, Lang::Cy] {
            let texts = pages.catalogues.texts(lang);
            for key in [
                "pref_explain",
                "pref_stop_explain",
                "month_12",
                "erase_done_explain",
            ] {
                assert!(texts.contains_key(key), "{key} in {}", lang.code());
            }
        }
    }
}
