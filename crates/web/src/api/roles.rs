//! Which role may call which endpoint: one table, enforced here (before a
//! handler runs or a body is read), printed in docs/ROLES.md and checked
//! against it by a test, so that the two cannot drift.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use veto_core::Role;

use super::{ApiError, Caller};
use crate::AppState;

/// One endpoint and the roles that may call it.
#[derive(Debug, Clone, Copy)]
pub struct EndpointRoles {
    pub method: &'static str,
    /// Under `/api/v1`, with axum's `{param}` placeholders.
    pub path: &'static str,
    pub roles: &'static [Role],
}

const ALL: &[Role] = &[
    Role::Viewer,
    Role::Marketer,
    Role::ServiceSender,
    Role::Dpo,
    Role::Admin,
];
/// Personal data: everyone but the machines that send service mail.
const READERS: &[Role] = &[Role::Viewer, Role::Marketer, Role::Dpo, Role::Admin];
/// Recording what people said on the organisation's forms, and marketing work.
const RECORDERS: &[Role] = &[Role::Marketer, Role::Dpo, Role::Admin];
const MARKETING: &[Role] = &[Role::Marketer, Role::Admin];
const DPO: &[Role] = &[Role::Dpo];
const DPO_ADMIN: &[Role] = &[Role::Dpo, Role::Admin];
const AUDITORS: &[Role] = &[Role::Viewer, Role::Dpo, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];
const SERVICE: &[Role] = &[Role::ServiceSender];

macro_rules! e {
    ($m:literal $p:literal $r:expr) => {
        EndpointRoles {
            method: $m,
            path: $p,
            roles: $r,
        }
    };
}

/// Every `/api/v1` endpoint that needs a key (all but `GET /openapi.json`).
pub const TABLE: &[EndpointRoles] = &[
    e!("POST" "/consents" RECORDERS),
    e!("POST" "/purchases" RECORDERS),
    e!("POST" "/signups" RECORDERS),
    e!("GET" "/topics" ALL),
    e!("POST" "/topics" MARKETING),
    e!("GET" "/topics/{key}" ALL),
    e!("PATCH" "/topics/{key}" MARKETING),
    e!("GET" "/service-types" ALL),
    e!("GET" "/wordings" ALL),
    e!("POST" "/wordings" RECORDERS),
    e!("GET" "/wordings/{id}" ALL),
    e!("GET" "/contacts" READERS),
    e!("POST" "/contacts" RECORDERS),
    e!("GET" "/contacts/{id}" READERS),
    e!("GET" "/contacts/{id}/timeline" READERS),
    e!("GET" "/contacts/{id}/export" DPO),
    e!("GET" "/events" READERS),
    e!("POST" "/events" RECORDERS),
    e!("GET" "/suppressions" READERS),
    e!("POST" "/suppressions" RECORDERS),
    e!("DELETE" "/suppressions/{id}" DPO),
    e!("GET" "/receipts" READERS),
    e!("POST" "/erasures" DPO),
    e!("GET" "/requests" DPO_ADMIN),
    e!("POST" "/requests" DPO),
    e!("GET" "/requests/{id}" DPO_ADMIN),
    e!("POST" "/requests/{id}/identity-checked" DPO),
    e!("POST" "/requests/{id}/extend" DPO),
    e!("POST" "/requests/{id}/answer" DPO),
    e!("GET" "/approvals" DPO_ADMIN),
    e!("POST" "/approvals/{id}" DPO),
    e!("GET" "/campaigns" ALL),
    e!("POST" "/campaigns" RECORDERS),
    e!("GET" "/campaigns/{id}" ALL),
    e!("POST" "/campaigns/{id}/preview" RECORDERS),
    e!("POST" "/campaigns/{id}/test" RECORDERS),
    e!("POST" "/campaigns/{id}/{action}" RECORDERS),
    e!("POST" "/messages" SERVICE),
    e!("POST" "/decisions" READERS),
    e!("GET" "/keys" ADMIN),
    e!("POST" "/keys" ADMIN),
    e!("DELETE" "/keys/{id}" ADMIN),
    e!("GET" "/users" ADMIN),
    e!("POST" "/users" ADMIN),
    e!("PATCH" "/users/{id}" ADMIN),
    e!("GET" "/audit" AUDITORS),
    e!("POST" "/audit/verify" AUDITORS),
    e!("GET" "/webhooks/deliveries" AUDITORS),
    e!("POST" "/webhooks/deliveries/{id}/retry" ADMIN),
];

/// The rule for a request, by method and matched route.
pub fn rule(method: &str, path: &str) -> Option<&'static EndpointRoles> {
    let method = if method == "HEAD" { "GET" } else { method };
    TABLE.iter().find(|r| r.method == method && r.path == path)
}

/// The table as docs/ROLES.md prints it.
pub fn markdown_table() -> String {
    let mut out = String::from("| endpoint |");
    for r in Role::ALL {
        out.push_str(&format!(" {r} |"));
    }
    out.push_str("\n|---|");
    for _ in Role::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for e in TABLE {
        out.push_str(&format!("| `{} /api/v1{}` |", e.method, e.path));
        for r in Role::ALL {
            out.push_str(if e.roles.contains(r) {
                " yes |"
            } else {
                " no |"
            });
        }
        out.push('\n');
    }
    out
}

/// Authenticates the key, then applies the table: 401 without a valid
/// key, 403 when its role is not in the endpoint's row. A route that is in
/// no row at all is refused (fail closed); a method the route does not
/// take goes on to axum's 405.
pub(crate) async fn authorize(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match Caller::authenticate(req.headers(), &state).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().trim_start_matches("/api/v1").to_owned())
        .unwrap_or_default();
    let method = req.method().clone();
    match rule(method.as_str(), &path) {
        Some(rule) if !rule.roles.contains(&caller.0.role) => {
            let allowed: Vec<&str> = rule.roles.iter().map(|r| r.as_str()).collect();
            return ApiError::forbidden(format!(
                "a {} key may not {method} /api/v1{path}; this needs a {} key (see docs/ROLES.md)",
                caller.0.role,
                allowed.join(" or ")
            ))
            .into_response();
        }
        Some(_) => {}
        None if TABLE.iter().any(|r| r.path == path) || method == Method::OPTIONS => {}
        None => {
            tracing::error!(%path, %method, "an API route is missing from the role table");
            return ApiError::forbidden("this endpoint is in no role's table".into())
                .into_response();
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}
