//! The staff audit trail: every API call that changes something is
//! recorded (who, what, on what, when) in the store's hash chain, by one
//! middleware so that no endpoint can forget. A handler names its action
//! and adds a short detail with [`Audited`]; without one the method and
//! route are recorded. `GET /api/v1/audit` lists the trail;
//! `POST /api/v1/audit/verify` recomputes it and the consent ledger.

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use veto_store::NewStaffAction;

use super::page::{ApiQuery, Paging};
use super::schema::{ErrorBody, StaffActionOut, VerifyOut};
use super::{ApiError, Caller, idempotency};
use crate::AppState;

/// What a handler tells the audit trail about the change it made.
#[derive(Debug, Clone)]
pub(crate) struct AuditNote {
    pub action: &'static str,
    pub target: Option<String>,
    pub detail: Value,
}

/// A response with the audit note that the middleware records.
pub(crate) struct Audited<R>(pub AuditNote, pub R);

impl<R: IntoResponse> IntoResponse for Audited<R> {
    fn into_response(self) -> Response {
        let mut res = self.1.into_response();
        res.extensions_mut().insert(self.0);
        res
    }
}

/// `action` on `target`, with `detail` (never secrets).
pub(crate) fn note(
    action: &'static str,
    target: impl Into<Option<String>>,
    detail: Value,
) -> AuditNote {
    AuditNote {
        action,
        target: target.into(),
        detail,
    }
}

/// Records each successful request that changes something. Runs inside
/// the role check (the caller is known) and outside the idempotency
/// layer (a replayed answer changed nothing and is not recorded again).
pub(crate) async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let reads = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let caller = req.extensions().get::<Caller>().map(|c| c.actor());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    let note = res.extensions_mut().remove::<AuditNote>();
    let replayed = res.headers().contains_key(idempotency::REPLAYED);
    let Some(actor) = caller else { return res };
    if !res.status().is_success() || replayed || (reads && note.is_none()) {
        return res;
    }
    let action = match note {
        Some(n) => NewStaffAction {
            actor,
            action: n.action.to_owned(),
            target: n.target,
            detail: n.detail,
        },
        None => NewStaffAction::new(
            actor,
            format!("{method} {}", route.as_deref().unwrap_or(&path)),
        )
        .target(path)
        .detail(json!({"status": res.status().as_u16()})),
    };
    // Recorded after the change committed. Should the store fail in between,
    // the change stands (it was acknowledged); the log says what is missing.
    if let Err(e) = state.store().record_staff_action(action.clone()).await {
        tracing::error!(error = ?e, actor = %action.actor, action = %action.action, target = ?action.target, "could not record a staff action in the audit trail");
    }
    res
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// How many entries (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(serde::Serialize, ToSchema)]
pub(crate) struct AuditPage {
    actions: Vec<StaffActionOut>,
    next_cursor: Option<String>,
}

/// The staff audit trail, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let paging = Paging::new(q.limit.as_deref(), q.cursor.as_deref())?;
    let rows = state
        .store()
        .staff_actions(paging.after, paging.fetch())
        .await?;
    let (rows, next_cursor) = paging.finish(rows, |a| a.seq);
    Ok(Json(AuditPage {
        actions: rows.into_iter().map(StaffActionOut::from).collect(),
        next_cursor,
    }))
}

/// Recomputes every hash chain: the consent ledger's and the staff audit
/// trail's. `ok` is false, and each problem named, when anything was
/// edited, deleted or reordered.
#[utoipa::path(post, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = VerifyOut), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn verify(
    State(state): State<AppState>,
) -> Result<Audited<Json<VerifyOut>>, ApiError> {
    let report = VerifyOut::from(state.store().verify().await?);
    Ok(Audited(
        note(
            "audit.verify",
            None,
            json!({"ok": report.ok, "events": report.events, "staff_actions": report.staff_actions}),
        ),
        Json(report),
    ))
}
