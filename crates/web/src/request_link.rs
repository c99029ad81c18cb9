//! `GET /p` and `POST /p`: "email me a link to manage my preferences".
//!
//! The answer is the same whether or not the address is known, so the page
//! cannot be used to find out who is a customer. The email is a service
//! message, sent only to a known, unerased, unbounced contact.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use veto_core::EmailAddress;
use veto_store::GuardClass;

use crate::client::client_ip;
use crate::i18n::Lang;
use crate::{AppState, WebError};

/// Requests one IP address may make in a minute.
const PER_IP: u32 = 10;
/// Links one email address may be sent in an hour.
const PER_ADDRESS: u32 = 3;
const ADDRESS_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
fn lang(q: &HashMap<String, String>, headers: &HeaderMap) -> Lang {
    Lang::of_request(q.get("lang").map(String::as_str), headers)
}

/// The form belongs to nobody yet: its anti-forgery token is for contact 0.
fn form_is_genuine(state: &AppState, headers: &HeaderMap, field: Option<&String>) -> bool {
    crate::preferences::from_own_page(headers, &state.settings().public_url)
        && crate::preferences::form_is_fresh(state, field.map(String::as_str), 0)
}

fn render(
    state: &AppState,
    lang: Lang,
    problem: Option<String>,
    email: &str,
) -> Result<Response, WebError> {
    let ctx = json!({ "problem": problem, "email": email, "form_token": crate::preferences::mint_form(state, 0)? });
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        state
            .inner
            .pages
            .render(state, "request_link.html", lang, "request_heading", ctx)?,
    )
        .into_response())
}

pub async fn page(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    render(&state, lang(&q, &headers), None, "")
}

pub async fn request(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let lang = lang(&q, &headers);
    if !form_is_genuine(&state, &headers, form.get("form")) {
        return Err(WebError::Forbidden("this form was not sent from our page, or it is too old; please reload the page and try again".into()));
    }
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    if !state
        .inner
        .limiter
        .allow(&format!("request-link-ip:{ip}"), PER_IP)
    {
        return Err(WebError::TooManyRequests);
    }
    let typed = form.get("email").map(|s| s.trim()).unwrap_or_default();
    let email = match EmailAddress::parse(typed) {
        Ok(e) => e,
        Err(e) => {
            let problem = state.inner.pages.catalogues.fill(
                lang,
                "request_bad_address",
                &[("reason", &e.to_string())],
            );
            return render(&state, lang, Some(problem), typed);
        }
    };
    // Limited per address too, but silently: the page must look the same.
    if state.inner.limiter.allow_in(
        &format!("request-link-address:{}", email.key()),
        PER_ADDRESS,
        ADDRESS_WINDOW,
    ) {
        send_link(&state, lang, &email).await?;
    }
    let explain = state.inner.pages.catalogues.fill(
        lang,
        "request_sent_explain",
        &[("address", &email.masked())],
    );
    Ok(state
        .inner
        .pages
        .render(
            &state,
            "request_link_sent.html",
            lang,
            "request_sent_heading",
            json!({ "explain": explain }),
        )?
        .into_response())
}

async fn send_link(state: &AppState, lang: Lang, email: &EmailAddress) -> Result<(), WebError> {
    let Some(contact) = state.store().find_contact(email).await? else {
        return Ok(());
    };
    let links = crate::links(state.keys(), &state.settings().public_url, contact.id, None)?;
    let org = &state.settings().organisation;
    let c = &state.inner.pages.catalogues;
    let subject = c.fill(lang, "request_mail_subject", &[("org", &org.name)]);
    let link = format!("{}?lang={}", links.preferences, lang.code());
    let body = c.fill(
        lang,
        "request_mail_body",
        &[
            ("org", &org.name),
            ("link", &link),
            ("postal", &org.postal_address),
        ],
    );
    // A service message: the guard still refuses erased and bounced addresses.
    state
        .mailer()?
        .send_text(
            email,
            GuardClass::Service("preference-link"),
            &subject,
            &body,
        )
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(())
}
