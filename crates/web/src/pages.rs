//! Server-rendered pages: minijinja with autoescape (names end in `.html`).

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde_json::{Value, json};

use crate::i18n::{Catalogues, Lang};
use crate::{AppState, WebError};

/// Message catalogues beside the common `locales/{en,cy}.toml`: (name,
/// `locales/en/{name}.toml`, `locales/cy/{name}.toml`).
const CATALOGUE_PARTS: &[(&str, &str, &str)] = &[
    (
        "preferences",
        include_str!("../locales/en/preferences.toml"),
        include_str!("../locales/cy/preferences.toml"),
    ),
    (
        "confirm",
        include_str!("../locales/en/confirm.toml"),
        include_str!("../locales/cy/confirm.toml"),
    ),
    (
        "request_link",
        include_str!("../locales/en/request_link.toml"),
        include_str!("../locales/cy/request_link.toml"),
    ),
];

pub struct Pages {
    env: Environment<'static>,
    pub catalogues: Catalogues,
}

impl Pages {
    pub fn new() -> Result<Pages, WebError> {
        let mut env = Environment::new();
        for (name, src) in [
            ("base.html", include_str!("../templates/base.html")),
            (
                "unsubscribe.html",
                include_str!("../templates/unsubscribe.html"),
            ),
            ("done.html", include_str!("../templates/done.html")),
            (
                "not_found.html",
                include_str!("../templates/not_found.html"),
            ),
            ("confirm.html", include_str!("../templates/confirm.html")),
            (
                "confirm_done.html",
                include_str!("../templates/confirm_done.html"),
            ),
            (
                "request_link.html",
                include_str!("../templates/request_link.html"),
            ),
            (
                "request_link_sent.html",
                include_str!("../templates/request_link_sent.html"),
            ),
            (
                "preferences.html",
                include_str!("../templates/preferences.html"),
            ),
            (
                "preferences_saved.html",
                include_str!("../templates/preferences_saved.html"),
            ),
            (
                "preferences_message.html",
                include_str!("../templates/preferences_message.html"),
            ),
            (
                "preferences_erase.html",
                include_str!("../templates/preferences_erase.html"),
            ),
        ] {
            env.add_template(name, src)
                .map_err(|e| WebError::Internal(format!("template {name}: {e}")))?;
        }
        Ok(Pages {
            env,
            catalogues: Catalogues::load_with(CATALOGUE_PARTS)?,
        })
    }

    /// Renders a page; `ctx` is merged over what every page has.
    pub fn render(
        &self,
        state: &AppState,
        name: &str,
        lang: Lang,
        title_key: &str,
        ctx: Value,
    ) -> Result<Html<String>, WebError> {
        let org = &state.settings().organisation;
        let texts = self.catalogues.texts(lang);
        let mut base = json!({
            "lang": lang.code(),
            "other_lang": lang.other().code(),
            "t": texts,
            "title": texts.get(title_key).cloned().unwrap_or_default(),
            "org": {"name": org.name, "postal_address": org.postal_address, "privacy_url": org.privacy_url},
        });
        if let (Some(b), Value::Object(extra)) = (base.as_object_mut(), ctx) {
            b.extend(extra);
        }
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| WebError::Internal(e.to_string()))?;
        tmpl.render(base)
            .map(Html)
            .map_err(|e| WebError::Internal(format!("rendering {name}: {e}")))
    }
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/veto.css"),
    )
        .into_response()
}

pub async fn not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    not_found_page_in(&state, &headers, q.get("lang").map(String::as_str))
}

/// The 404 page, honouring `?lang=` (its own language switch).
pub fn not_found_page_in(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    query_lang: Option<&str>,
) -> Response {
    let lang = Lang::choose(
        query_lang,
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    match state.inner.pages.render(
        state,
        "not_found.html",
        lang,
        "not_found_heading",
        json!({}),
    ) {
        Ok(page) => (StatusCode::NOT_FOUND, page).into_response(),
        Err(e) => e.into_response(),
    }
}
