//! Rendering admin pages: one template environment (autoescaped: every
//! name ends in `.html`), the layout every page shares (who is signed in,
//! the menu their role may use, the CSRF token, a one-time notice), and the
//! error pages.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::Environment;
use serde_json::{Value, json};

use super::session::Staff;
use crate::AppState;

/// Every admin template. Add a page's template here.
pub(super) const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin/base.html",
        include_str!("../../templates/admin/base.html"),
    ),
    (
        "admin/login.html",
        include_str!("../../templates/admin/login.html"),
    ),
    (
        "admin/error.html",
        include_str!("../../templates/admin/error.html"),
    ),
    (
        "admin/dashboard.html",
        include_str!("../../templates/admin/dashboard.html"),
    ),
    (
        "admin/campaigns.html",
        include_str!("../../templates/admin/campaigns.html"),
    ),
    (
        "admin/campaign_new.html",
        include_str!("../../templates/admin/campaign_new.html"),
    ),
    (
        "admin/campaign.html",
        include_str!("../../templates/admin/campaign.html"),
    ),
    (
        "admin/campaign_cancel.html",
        include_str!("../../templates/admin/campaign_cancel.html"),
    ),
    (
        "admin/approvals.html",
        include_str!("../../templates/admin/approvals.html"),
    ),
    (
        "admin/outbox.html",
        include_str!("../../templates/admin/outbox.html"),
    ),
    (
        "admin/outbox_message.html",
        include_str!("../../templates/admin/outbox_message.html"),
    ),
    (
        "admin/requests.html",
        include_str!("../../templates/admin/requests.html"),
    ),
    (
        "admin/request.html",
        include_str!("../../templates/admin/request.html"),
    ),
    (
        "admin/topics.html",
        include_str!("../../templates/admin/topics.html"),
    ),
    (
        "admin/wordings.html",
        include_str!("../../templates/admin/wordings.html"),
    ),
    (
        "admin/keys.html",
        include_str!("../../templates/admin/keys.html"),
    ),
    (
        "admin/key_created.html",
        include_str!("../../templates/admin/key_created.html"),
    ),
    (
        "admin/key_revoke.html",
        include_str!("../../templates/admin/key_revoke.html"),
    ),
    (
        "admin/users.html",
        include_str!("../../templates/admin/users.html"),
    ),
    (
        "admin/webhooks.html",
        include_str!("../../templates/admin/webhooks.html"),
    ),
    (
        "admin/contacts.html",
        include_str!("../../templates/admin/contacts.html"),
    ),
    (
        "admin/contact.html",
        include_str!("../../templates/admin/contact.html"),
    ),
    (
        "admin/erase.html",
        include_str!("../../templates/admin/erase.html"),
    ),
    (
        "admin/suppressions.html",
        include_str!("../../templates/admin/suppressions.html"),
    ),
    (
        "admin/suppression_remove.html",
        include_str!("../../templates/admin/suppression_remove.html"),
    ),
    (
        "admin/audit.html",
        include_str!("../../templates/admin/audit.html"),
    ),
];

/// The menu: (label, link, the API endpoint whose roles may see it).
const MENU: &[(&str, &str, &str, &str)] = &[
    ("Dashboard", "/admin", "GET", "/topics"),
    ("Contacts", "/admin/contacts", "GET", "/contacts"),
    ("Campaigns", "/admin/campaigns", "GET", "/campaigns"),
    ("Approvals", "/admin/approvals", "GET", "/approvals"),
    ("GDPR requests", "/admin/requests", "GET", "/requests"),
    (
        "Suppressions",
        "/admin/suppressions",
        "GET",
        "/suppressions",
    ),
    ("Topics", "/admin/topics", "GET", "/topics"),
    ("Wordings", "/admin/wordings", "GET", "/wordings"),
    ("Outbox", "/admin/outbox", "GET", "/receipts"),
    ("Webhooks", "/admin/webhooks", "GET", "/webhooks/deliveries"),
    ("API keys", "/admin/keys", "GET", "/keys"),
    ("Staff users", "/admin/users", "GET", "/users"),
    ("Audit trail", "/admin/audit", "GET", "/audit"),
];

pub(super) const FLASH_COOKIE: &str = "veto_flash";

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            if let Err(e) = env.add_template(name, src) {
                // A template that does not parse is a bug caught by the
                // tests; rendering it then says so.
                tracing::error!(template = name, error = %e, "admin template does not parse");
            }
        }
        env
    })
}

/// A notice shown once on the next page: what was done, or what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Flash {
    pub error: bool,
    pub text: String,
}

impl Flash {
    fn encode(&self) -> String {
        let text: String = self.text.chars().take(600).collect();
        let raw = format!("{}{text}", if self.error { 'e' } else { 'o' });
        data_encoding::BASE64URL_NOPAD.encode(raw.as_bytes())
    }

    pub(super) fn decode(v: &str) -> Option<Flash> {
        let raw = data_encoding::BASE64URL_NOPAD.decode(v.as_bytes()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let mut chars = raw.chars();
        let error = match chars.next()? {
            'e' => true,
            'o' => false,
            _ => return None,
        };
        Some(Flash {
            error,
            text: chars.as_str().to_owned(),
        })
    }
}

fn flash_cookie(flash: &Flash) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{FLASH_COOKIE}={}; Path=/admin; HttpOnly; SameSite=Lax; Max-Age=60",
        flash.encode()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("veto_flash=; Path=/admin; Max-Age=0"))
}

/// After a change: 303 to `to`, which shows `text` once.
pub(crate) fn done(to: &str, text: impl Into<String>) -> Response {
    redirect_with(
        to,
        Flash {
            error: false,
            text: text.into(),
        },
    )
}

/// After a refused change (bad input): 303 back to `to`, which shows why.
pub(crate) fn done_with_error(to: &str, text: impl Into<String>) -> Response {
    redirect_with(
        to,
        Flash {
            error: true,
            text: text.into(),
        },
    )
}

fn redirect_with(to: &str, flash: Flash) -> Response {
    let mut res = Redirect::to(to).into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, flash_cookie(&flash));
    res
}

fn render_page(name: &str, ctx: Value) -> Result<Html<String>, AdminError> {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| AdminError::Internal(format!("rendering {name}: {e}")))
}

/// Renders a page for `staff`: `ctx` is merged over what every page has
/// (`user`, `role`, `menu`, `csrf`, `flash`, `title`, `org`).
pub(crate) fn render(
    state: &AppState,
    staff: &Staff,
    name: &str,
    title: &str,
    ctx: Value,
) -> Result<Response, AdminError> {
    let menu: Vec<Value> = MENU
        .iter()
        .filter(|(_, _, method, path)| staff.may(method, path))
        .map(|(label, href, _, _)| json!({"label": label, "href": href}))
        .collect();
    let mut base = json!({
        "title": title,
        "user": staff.user.name,
        "role": staff.user.role.as_str(),
        "menu": menu,
        "csrf": staff.csrf,
        "flash": staff.flash.as_ref().map(|f| json!({"error": f.error, "text": f.text})),
        "org": state.settings().organisation.name,
    });
    if let (Some(b), Value::Object(extra)) = (base.as_object_mut(), ctx) {
        b.extend(extra);
    }
    let mut res = render_page(name, base)?.into_response();
    if staff.flash.is_some() {
        res.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static("veto_flash=; Path=/admin; HttpOnly; SameSite=Lax; Max-Age=0"),
        );
    }
    Ok(res)
}

/// A page for someone not signed in (the sign-in page, errors).
pub(super) fn page_without_staff(
    name: &str,
    title: &str,
    ctx: Value,
) -> Result<Html<String>, AdminError> {
    let mut base = json!({"title": title, "menu": []});
    if let (Some(b), Value::Object(extra)) = (base.as_object_mut(), ctx) {
        b.extend(extra);
    }
    render_page(name, base)
}

/// What can go wrong on an admin page. Each becomes a page that says what
/// was wrong; store failures and bugs are logged and shown generically.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// Not signed in (or the session ended): go to the sign-in page.
    #[error("sign in first")]
    SignIn { next: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the store is unavailable")]
    Store(#[from] veto_store::StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::WebError> for AdminError {
    fn from(e: crate::WebError) -> Self {
        match e {
            crate::WebError::NotFound => AdminError::NotFound("Not found.".into()),
            crate::WebError::BadRequest(m) => AdminError::BadRequest(m),
            crate::WebError::Forbidden(m) => AdminError::Forbidden(m),
            crate::WebError::TooManyRequests => {
                AdminError::BadRequest("Too many requests; try again in a minute.".into())
            }
            crate::WebError::Store(e) => AdminError::Store(e),
            crate::WebError::Internal(m) => AdminError::Internal(m),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, heading, text) = match &self {
            AdminError::SignIn { next } => {
                let to = format!("/admin/login?next={}", urlencode(next));
                return Redirect::to(&to).into_response();
            }
            AdminError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.clone()),
            AdminError::BadRequest(m) => (StatusCode::BAD_REQUEST, "That did not work", m.clone()),
            AdminError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.clone()),
            AdminError::Store(e) => {
                tracing::error!(error = ?e, "store error on an admin page");
                let text = match e {
                    veto_store::StoreError::Invalid(m) => {
                        return (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            error_page("That did not work", m),
                        )
                            .into_response();
                    }
                    _ => "The store could not be reached. Nothing was changed; try again in a minute.".to_owned(),
                };
                (StatusCode::SERVICE_UNAVAILABLE, "Try again", text)
            }
            AdminError::Internal(e) => {
                tracing::error!(error = %e, "internal error on an admin page");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Something went wrong on our side. Nothing was changed.".to_owned(),
                )
            }
        };
        (status, error_page(heading, &text)).into_response()
    }
}

fn error_page(heading: &str, text: &str) -> Response {
    match page_without_staff(
        "admin/error.html",
        heading,
        json!({"heading": heading, "text": text}),
    ) {
        Ok(page) => page.into_response(),
        Err(_) => format!("{heading}: {text}\n").into_response(),
    }
}

/// A time as the admin pages show it: "12 Mar 2026 14:05 UTC".
pub(crate) use veto_store::describe::when as show_time;

/// A count with thousands separated: "1,234".
pub(crate) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Percent-encodes a query value.
pub(crate) fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .map(|q| q[2..].to_owned())
        .unwrap_or_default()
}

pub(super) async fn not_found(_staff: Staff) -> AdminError {
    AdminError::NotFound("There is no such page in the admin UI.".into())
}

pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/admin.css"),
    )
        .into_response()
}

pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/admin.js"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn times_and_counts_read_well() {
        let t: veto_core::Timestamp = "2026-03-12T14:05:59Z".parse().unwrap();
        assert_eq!(show_time(t), "12 Mar 2026 14:05 UTC");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(5_000_000), "5,000,000");
    }

    #[test]
    fn flashes_survive_the_cookie() {
        for f in [
            Flash {
                error: true,
                text: "Topic \"news\" — ünïcode; x=1".into(),
            },
            Flash {
                error: false,
                text: String::new(),
            },
        ] {
            assert_eq!(Flash::decode(&f.encode()), Some(f));
        }
        assert_eq!(Flash::decode("not base64!"), None);
    }
}
