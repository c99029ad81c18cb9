//! `GET /u/{token}`: what will happen, and one button. Changes nothing
//! (mail scanners fetch links).
//! `POST /u/{token}`: RFC 8058 one-click unsubscribe. Durable before 200,
//! no redirect, no cookie or login, harmless to repeat.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use veto_core::{EmailAddress, Source, Timestamp};
use veto_mail::{Claims, Purpose, TokenScope};
use veto_store::{Append, Evidence};

use crate::client::client_ip;
use crate::i18n::Lang;
use crate::pages::not_found_page_in;
use crate::{AppState, WebError};

/// Invalid tokens one address may try in a minute before it gets 429.
/// Valid tokens are never limited: an unsubscribe must never be refused.
const INVALID_PER_IP: u32 = 30;
/// Page views per address, and per token, in a minute.
const PAGES_PER_IP: u32 = 600;
const PAGES_PER_TOKEN: u32 = 60;

#[derive(Deserialize)]
pub struct LangQuery {
    lang: Option<String>,
}

fn lang(q: &LangQuery, headers: &HeaderMap) -> Lang {
    Lang::of_request(q.lang.as_deref(), headers)
}

enum Checked {
    Valid(Claims),
    Invalid,
}

fn check(state: &AppState, token: &str, ip: std::net::IpAddr) -> Result<Checked, WebError> {
    match state.keys().verify(token, Purpose::Unsubscribe) {
        Ok(claims) => Ok(Checked::Valid(claims)),
        Err(_)
            if !state
                .inner
                .limiter
                .allow(&format!("invalid:{ip}"), INVALID_PER_IP) =>
        {
            Err(WebError::TooManyRequests)
        }
        Err(_) => Ok(Checked::Invalid),
    }
}

/// What the page says about the scope: "{topic} emails" or "marketing emails".
async fn wording(
    state: &AppState,
    lang: Lang,
    scope: TokenScope,
    keys: (&str, &str),
) -> Result<String, WebError> {
    let org = state.settings().organisation.name.as_str();
    let c = &state.inner.pages.catalogues;
    Ok(match state.topic(scope).await? {
        Some(t) => c.fill(lang, keys.0, &[("topic", &t.name), ("org", org)]),
        None => c.fill(lang, keys.1, &[("org", org)]),
    })
}

pub async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    let lang = lang(&q, &headers);
    let claims = match check(&state, &token, ip)? {
        Checked::Valid(c) => c,
        Checked::Invalid => return Ok(not_found_page_in(&state, &headers, q.lang.as_deref())),
    };
    let limiter = &state.inner.limiter;
    if !limiter.allow(&format!("page-ip:{ip}"), PAGES_PER_IP)
        || !limiter.allow(&format!("page-token:{token}"), PAGES_PER_TOKEN)
    {
        return Err(WebError::TooManyRequests);
    }
    let contact = state
        .store()
        .contact(veto_core::ContactId(claims.contact as i64))
        .await?;
    let address = contact
        .and_then(|c| c.email)
        .and_then(|e| EmailAddress::parse(&e).ok());
    let Some(address) = address else {
        // Erased: there is nobody left to mail.
        return done(&state, lang, claims.scope).await;
    };
    let c = &state.inner.pages.catalogues;
    let heading = wording(
        &state,
        lang,
        claims.scope,
        ("unsub_heading", "unsub_all_heading"),
    )
    .await?;
    let explain = wording(
        &state,
        lang,
        claims.scope,
        ("unsub_explain", "unsub_all_explain"),
    )
    .await?;
    let ctx = json!({
        "heading": heading,
        "explain": explain,
        "for_address": c.fill(lang, "unsub_for", &[("address", &address.masked())]),
        "action": format!("/u/{token}?lang={}", lang.code()),
        "preferences": crate::links(state.keys(), "", claims.contact as i64, None)
            .map(|l| format!("{}?lang={}", l.preferences, lang.code()))
            .ok(),
    });
    Ok(state
        .inner
        .pages
        .render(&state, "unsubscribe.html", lang, "unsub_button", ctx)?
        .into_response())
}

async fn done(state: &AppState, lang: Lang, scope: TokenScope) -> Result<Response, WebError> {
    let explain = wording(state, lang, scope, ("done_explain", "done_all_explain")).await?;
    let service: Vec<_> = state
        .settings()
        .service_types
        .iter()
        .map(|s| json!({"key": s.key, "description": s.description}))
        .collect();
    let ctx = json!({
        "heading": state.inner.pages.catalogues.fill(lang, "done_heading", &[]),
        "explain": explain,
        "service_types": service,
    });
    Ok(state
        .inner
        .pages
        .render(state, "done.html", lang, "done_heading", ctx)?
        .into_response())
}

/// The form fields of a one-click POST, urlencoded (what Gmail sends) or multipart.
async fn form_fields(req: Request) -> Result<HashMap<String, String>, WebError> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/form-data"));
    if multipart {
        let mut m = Multipart::from_request(req, &()).await.map_err(|e| {
            WebError::BadRequest(format!("the multipart body could not be read: {e}"))
        })?;
        let mut fields = HashMap::new();
        while let Some(field) = m.next_field().await.map_err(|e| {
            WebError::BadRequest(format!("the multipart body could not be read: {e}"))
        })? {
            let name = field.name().unwrap_or_default().to_owned();
            let value = field
                .text()
                .await
                .map_err(|e| WebError::BadRequest(format!("field {name}: {e}")))?;
            fields.insert(name, value);
        }
        Ok(fields)
    } else {
        let axum::Form(fields) = axum::Form::<HashMap<String, String>>::from_request(req, &())
            .await
            .map_err(|e| WebError::BadRequest(format!("the form body could not be read: {e}")))?;
        Ok(fields)
    }
}

pub async fn one_click(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, WebError> {
    let headers = req.headers().clone();
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    let claims = match check(&state, &token, ip)? {
        Checked::Valid(c) => c,
        Checked::Invalid => return Ok(not_found_page_in(&state, &headers, q.lang.as_deref())),
    };
    let fields = form_fields(req).await?;
    // RFC 8058 §3.1: the body carries exactly this key and value.
    if fields.get("List-Unsubscribe").map(String::as_str) != Some("One-Click") {
        return Err(WebError::BadRequest(
            "expected the form field List-Unsubscribe=One-Click (RFC 8058)".into(),
        ));
    }
    let from_page = fields.get("page").is_some_and(|v| v == "1");
    let lang = lang(&q, &headers);

    let contact = state
        .store()
        .contact(veto_core::ContactId(claims.contact as i64))
        .await?;
    if let Some(email) = contact
        .and_then(|c| c.email)
        .and_then(|e| EmailAddress::parse(&e).ok())
    {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        let item = Append::withdrawal_by_person(
            email,
            claims.scope.into(),
            Source::OneClick,
            Evidence {
                wording: None,
                ip: Some(ip.to_string()),
                user_agent,
                form_url: None,
            },
            Timestamp::now(),
        );
        // Waits for the commit: the 200 below means durable. (A refusal can
        // only mean the contact was erased meanwhile: nothing to stop.)
        state.inner.commits.append(item).await?;
    }
    if from_page {
        return done(&state, lang, claims.scope).await;
    }
    // RFC 8058: 200, no redirect.
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "You are unsubscribed.\n",
    )
        .into_response())
}
