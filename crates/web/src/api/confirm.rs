//! `GET /confirm/{token}`: what confirming will do, and one button. Changes
//! nothing (mail scanners fetch links).
//! `POST /confirm/{token}`: the person confirms their signup: the grant is
//! recorded with source double opt-in and this request's IP and user agent.
//! Confirming again shows the same page and records nothing more.

use std::net::{IpAddr, SocketAddr};

use std::collections::HashMap;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use veto_core::{Timestamp, Topic};
use veto_mail::{Purpose, TokenScope};
use veto_store::{Signup, SignupConfirmed};

use crate::client::client_ip;
use crate::i18n::Lang;
use crate::pages::not_found_page_in;
use crate::{AppState, WebError};

/// Invalid tokens one address may try in a minute before it gets 429.
const INVALID_PER_IP: u32 = 30;

/// Evidence is kept as sent, up to this length.
const MAX_USER_AGENT: usize = 512;

fn lang(q: &HashMap<String, String>, headers: &HeaderMap) -> Lang {
    Lang::of_request(q.get("lang").map(String::as_str), headers)
}

pub(crate) async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let lang = lang(&q, &headers);
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    let Some((signup, topic)) = lookup(&state, &token, ip).await? else {
        return Ok(not_found_page_in(
            &state,
            &headers,
            q.get("lang").map(String::as_str),
        ));
    };
    if signup.confirmed.is_some() {
        return done(&state, lang, topic.as_ref());
    }
    let org = state.settings().organisation.name.as_str();
    let c = &state.inner.pages.catalogues;
    let explain = match &topic {
        Some(t) => c.fill(lang, "confirm_explain", &[("topic", &t.name), ("org", org)]),
        None => c.fill(lang, "confirm_all_explain", &[("org", org)]),
    };
    let ctx = json!({
        "heading": c.fill(lang, "confirm_heading", &[]),
        "explain": explain,
        "for_address": c.fill(lang, "confirm_for", &[("address", &signup.request.email.masked())]),
        "action": format!("/confirm/{token}?lang={}", lang.code()),
        "button": c.fill(lang, "confirm_button", &[]),
        "nothing_yet": c.fill(lang, "confirm_nothing_yet", &[]),
    });
    Ok(state
        .inner
        .pages
        .render(&state, "confirm.html", lang, "confirm_heading", ctx)?
        .into_response())
}

pub(crate) async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let lang = lang(&q, &headers);
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    let Some((signup, topic)) = lookup(&state, &token, ip).await? else {
        return Ok(not_found_page_in(
            &state,
            &headers,
            q.get("lang").map(String::as_str),
        ));
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(MAX_USER_AGENT).collect());
    let outcome = state
        .store()
        .confirm_signup(
            signup.id,
            Some(ip.to_string()),
            user_agent,
            Timestamp::now(),
        )
        .await?;
    match outcome {
        SignupConfirmed::Recorded { .. } | SignupConfirmed::AlreadyConfirmed { .. } => {
            done(&state, lang, topic.as_ref())
        }
        SignupConfirmed::NotFound => Ok(not_found_page_in(
            &state,
            &headers,
            q.get("lang").map(String::as_str),
        )),
        // Only an erasure racing the confirmation can do this.
        SignupConfirmed::Refused(r) => {
            Err(WebError::BadRequest(state.inner.pages.catalogues.fill(
                lang,
                "confirm_refused",
                &[("reason", &r.reason.to_string())],
            )))
        }
    }
}

fn done(state: &AppState, lang: Lang, topic: Option<&Topic>) -> Result<Response, WebError> {
    let org = state.settings().organisation.name.as_str();
    let c = &state.inner.pages.catalogues;
    let heading = match topic {
        Some(t) => c.fill(lang, "confirm_done_heading", &[("topic", &t.name)]),
        None => c.fill(lang, "confirm_done_all_heading", &[("org", org)]),
    };
    let ctx = json!({
        "title": heading,
        "heading": heading,
        "explain": c.fill(lang, "confirm_done_explain", &[]),
    });
    Ok(state
        .inner
        .pages
        .render(
            state,
            "confirm_done.html",
            lang,
            "confirm_done_heading",
            ctx,
        )?
        .into_response())
}

/// The signup a confirmation token names, with its topic; `None` for a
/// forged, altered or unknown token.
async fn lookup(
    state: &AppState,
    token: &str,
    ip: IpAddr,
) -> Result<Option<(Signup, Option<Topic>)>, WebError> {
    let claims = match state.keys().verify(token, Purpose::Confirm) {
        Ok(c) => c,
        Err(_) => {
            if !state
                .inner
                .limiter
                .allow(&format!("confirm-invalid:{ip}"), INVALID_PER_IP)
            {
                return Err(WebError::TooManyRequests);
            }
            return Ok(None);
        }
    };
    let Ok(id) = i64::try_from(claims.contact) else {
        return Ok(None);
    };
    let Some(signup) = state.store().signup(id).await? else {
        return Ok(None);
    };
    let scope = signup
        .request
        .topic
        .map_or(TokenScope::AllMarketing, |t| TokenScope::Topic(t.0));
    if scope != claims.scope {
        return Ok(None);
    }
    let topic = state.topic(claims.scope).await?;
    Ok(Some((signup, topic)))
}
