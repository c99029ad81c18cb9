//! `GET /confirm/{token}`: what confirming will do, and one button. Changes
//! nothing (mail scanners fetch links).
//! `POST /confirm/{token}`: the person confirms their signup: the grant is
//! recorded with source double opt-in and this request's IP and user agent.
//! Confirming again shows the same page and records nothing more.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use veto_core::{Timestamp, Topic};
use veto_mail::{Purpose, TokenScope};
use veto_store::{Signup, SignupConfirmed};

use crate::client::client_ip;
use crate::i18n::Lang;
use crate::pages::not_found_page;
use crate::{AppState, WebError};

/// Invalid tokens one address may try in a minute before it gets 429.
const INVALID_PER_IP: u32 = 30;

/// Evidence is kept as sent, up to this length.
const MAX_USER_AGENT: usize = 512;

pub(crate) async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    let Some((signup, topic)) = lookup(&state, &token, ip).await? else {
        return Ok(not_found_page(&state, &headers));
    };
    if signup.confirmed.is_some() {
        return done(&state, topic.as_ref());
    }
    let org = &state.settings().organisation.name;
    let explain = match &topic {
        Some(t) => format!("Press the button to get {} emails from {org}.", t.name),
        None => format!("Press the button to get marketing emails from {org}."),
    };
    let heading = "Confirm your subscription";
    let ctx = json!({
        "title": heading,
        "heading": heading,
        "explain": explain,
        "for_address": format!("This is for {}.", signup.request.email.masked()),
        "action": format!("/confirm/{token}"),
        "button": "Yes, subscribe me",
        "nothing_yet": "Nothing has changed yet: it only happens when you press the button. If you didn't ask for this, just close this page.",
    });
    Ok(state
        .inner
        .pages
        .render(&state, "confirm.html", Lang::En, "", ctx)?
        .into_response())
}

pub(crate) async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    let Some((signup, topic)) = lookup(&state, &token, ip).await? else {
        return Ok(not_found_page(&state, &headers));
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
            done(&state, topic.as_ref())
        }
        SignupConfirmed::NotFound => Ok(not_found_page(&state, &headers)),
        // Only an erasure racing the confirmation can do this.
        SignupConfirmed::Refused(r) => Err(WebError::BadRequest(format!(
            "Sorry, this could not be recorded: {}.",
            r.reason
        ))),
    }
}

fn done(state: &AppState, topic: Option<&Topic>) -> Result<Response, WebError> {
    let org = &state.settings().organisation.name;
    let heading = match topic {
        Some(t) => format!("You're subscribed to {}", t.name),
        None => format!("You're subscribed to marketing emails from {org}"),
    };
    let ctx = json!({
        "title": heading,
        "heading": heading,
        "explain": "Thank you. You can change your mind at any time: every email we send has a link to unsubscribe or to change your choices.",
    });
    Ok(state
        .inner
        .pages
        .render(state, "confirm_done.html", Lang::En, "", ctx)?
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
