//! Signing in and out, who is signed in ([`Staff`]), and forms that are
//! checked against forgery ([`Posted`]).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use veto_store::{NewStaffAction, StaffUser};

use super::render::{AdminError, Flash, page_without_staff};
use crate::AppState;
use crate::api::roles;
use crate::preferences::from_own_page;

/// The session cookie. Scoped to `/admin`, never readable by scripts.
pub(crate) const COOKIE: &str = "veto_admin";

/// Sign-in attempts per minute, per client address and per user name.
const LOGIN_LIMIT: u32 = 10;

/// A signed-in member of staff.
#[derive(Debug, Clone)]
pub(crate) struct Staff {
    pub user: StaffUser,
    /// The token this session's forms carry.
    pub csrf: String,
    /// A notice left by the last action (shown once).
    pub(super) flash: Option<Flash>,
}

impl Staff {
    /// How the audit trail and the ledger name this person.
    pub(crate) fn actor(&self) -> String {
        format!("user:{}", self.user.name)
    }

    /// May this person do what `method` on the API's `path` (under
    /// `/api/v1`, e.g. `"/campaigns/{id}/{action}"`) does? The API's role
    /// table decides; a path it does not list is allowed to no one.
    pub(crate) fn may(&self, method: &str, path: &str) -> bool {
        roles::rule(method, path).is_some_and(|r| r.roles.contains(&self.user.role))
    }

    /// As [`Staff::may`], or a 403 page saying which roles may.
    pub(crate) fn require(&self, method: &str, path: &str) -> Result<(), AdminError> {
        if self.may(method, path) {
            return Ok(());
        }
        let roles = roles::rule(method, path)
            .map(|r| {
                r.roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        Err(AdminError::Forbidden(format!(
            "Your role ({}) may not do this. Roles that may: {}.",
            self.user.role,
            if roles.is_empty() { "none" } else { &roles }
        )))
    }

    /// Records a change this person made in the staff audit trail.
    pub(crate) async fn record(
        &self,
        state: &AppState,
        action: &str,
        target: Option<String>,
        detail: Value,
    ) -> Result<(), AdminError> {
        let mut a = NewStaffAction::new(self.actor(), action).detail(detail);
        a.target = target;
        state.store().record_staff_action(a).await?;
        Ok(())
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Where to go after signing in: a page of the admin UI, never elsewhere.
fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/admin" || n.starts_with("/admin/") || n.starts_with("/admin?"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.starts_with("/admin/login") =>
        {
            n
        }
        _ => "/admin",
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AdminError> {
        // Inside `/admin`, the request's URI has lost its prefix.
        let next = match parts.uri.path_and_query().map(|p| p.as_str()) {
            None | Some("/") => "/admin".to_owned(),
            Some(p) => format!("/admin{p}"),
        };
        let login = || AdminError::SignIn { next: next.clone() };
        let token = cookie(&parts.headers, COOKIE).ok_or_else(login)?;
        let session = state.store().session(token).await?.ok_or_else(login)?;
        Ok(Staff {
            user: session.user,
            csrf: session.csrf,
            flash: cookie(&parts.headers, super::render::FLASH_COOKIE).and_then(Flash::decode),
        })
    }
}

/// A posted form from a signed-in member of staff, checked against
/// forgery: the browser says it came from veto's own origin, and it carries
/// this session's CSRF token (field `_csrf`). The rest of the fields are
/// `T` (urlencoded; unknown fields are ignored unless `T` says otherwise).
pub(crate) struct Posted<T> {
    pub staff: Staff,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AdminError> {
        let (mut parts, body) = req.into_parts();
        let staff = Staff::from_request_parts(&mut parts, state).await?;
        if !from_own_page(&parts.headers, &state.settings().public_url) {
            return Err(AdminError::Forbidden(
                "This form did not come from veto's own pages, so nothing was done.".into(),
            ));
        }
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| AdminError::BadRequest(format!("the form could not be read: {e}")))?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| AdminError::BadRequest(format!("the form could not be read: {e}")))?;
        let sent = fields
            .iter()
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(sent.ct_eq(staff.csrf.as_bytes())) {
            return Err(AdminError::Forbidden(
                "This form has expired or was not sent from your session; nothing was done. Open the page again and retry.".into(),
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| AdminError::BadRequest(format!("the form is not right: {e}")))?;
        Ok(Posted { staff, form })
    }
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

pub(super) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Result<Response, AdminError> {
    if let Some(token) = cookie(&headers, COOKIE)
        && state.store().session(token).await?.is_some()
    {
        return Ok(Redirect::to(local_next(q.next.as_deref())).into_response());
    }
    login_form(StatusCode::OK, q.next.as_deref(), "", None)
}

fn login_form(
    status: StatusCode,
    next: Option<&str>,
    name: &str,
    error: Option<&str>,
) -> Result<Response, AdminError> {
    let page = page_without_staff(
        "admin/login.html",
        "Sign in",
        json!({"next": local_next(next), "name": name, "error": error}),
    )?;
    Ok((status, page).into_response())
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

pub(super) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    // No session yet, so no CSRF token: the origin check and the
    // SameSite cookie keep other sites from signing someone in.
    if !from_own_page(&headers, &state.settings().public_url) {
        return Err(AdminError::Forbidden(
            "This sign-in form did not come from veto's own pages.".into(),
        ));
    }
    let form: LoginForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| AdminError::BadRequest(format!("the sign-in form could not be read: {e}")))?;
    let next = form.next.as_deref();
    let name = form.name.trim();
    if name.is_empty() || form.password.is_empty() {
        return login_form(
            StatusCode::UNPROCESSABLE_ENTITY,
            next,
            name,
            Some("Enter your user name and your password."),
        );
    }
    let client = crate::client::client_ip(peer, &headers, &state.settings().trusted_proxies);
    let limiter = &state.inner.limiter;
    if !limiter.allow(&format!("admin-login-ip:{client}"), LOGIN_LIMIT)
        || !limiter.allow(&format!("admin-login-name:{name}"), LOGIN_LIMIT)
    {
        return login_form(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            name,
            Some("Too many attempts. Wait a minute, then try again."),
        );
    }
    let Some(user) = state
        .store()
        .verify_user_password(name, &form.password)
        .await?
    else {
        tracing::warn!(name, client = %client, "admin sign-in refused");
        return login_form(
            StatusCode::UNAUTHORIZED,
            next,
            name,
            Some("That user name and password do not match an active account."),
        );
    };
    let session = state.store().start_session(user.id).await?;
    state
        .store()
        .record_staff_action(
            NewStaffAction::new(format!("user:{}", user.name), "session.sign_in")
                .detail(json!({"client": client.to_string()})),
        )
        .await?;
    let secure = if state.settings().public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let set = format!(
        "{COOKIE}={}; Path=/admin; HttpOnly; SameSite=Lax{secure}",
        session.token
    );
    let mut res = Redirect::to(local_next(next)).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&set).map_err(|e| AdminError::Internal(e.to_string()))?,
    );
    Ok(res)
}

pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    posted: Posted<Value>,
) -> Result<Response, AdminError> {
    if let Some(token) = cookie(&headers, COOKIE) {
        state.store().end_session(token).await?;
    }
    posted
        .staff
        .record(&state, "session.sign_out", None, json!({}))
        .await?;
    let mut res = Redirect::to("/admin/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("veto_admin=; Path=/admin; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_admin_ui() {
        assert_eq!(
            local_next(Some("/admin/contacts?q=jo")),
            "/admin/contacts?q=jo"
        );
        assert_eq!(local_next(Some("https://evil.example/")), "/admin");
        assert_eq!(local_next(Some("/admin//evil.example")), "/admin");
        assert_eq!(local_next(Some("/administrator")), "/admin");
        assert_eq!(local_next(Some("/admin/login?next=/x")), "/admin");
        assert_eq!(local_next(None), "/admin");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; veto_admin=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
