//! The dashboard: at a glance, whether the organisation keeps its promises.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::{AdminError, Posted, Staff, done, done_with_error, render};
use crate::AppState;

pub(super) async fn page(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    render(
        &state,
        &staff,
        "admin/dashboard.html",
        "Dashboard",
        json!({
            "current": "/admin",
            "may_verify": staff.may("POST", "/audit/verify"),
        }),
    )
}

/// Recomputes every hash chain (the ledger's and the staff audit trail's)
/// and says whether anything was edited, deleted or reordered.
pub(super) async fn verify(
    State(state): State<AppState>,
    Posted { staff, .. }: Posted<Value>,
) -> Result<Response, AdminError> {
    staff.require("POST", "/audit/verify")?;
    let report = state.store().verify().await?;
    staff
        .record(
            &state,
            "audit.verify",
            None,
            json!({"ok": report.ok(), "events": report.events, "staff_actions": report.staff_actions}),
        )
        .await?;
    if report.ok() {
        Ok(done(
            "/admin",
            format!(
                "Verified: {} consent events in {} chains and {} staff actions; nothing was edited, deleted or reordered.",
                report.events, report.partitions, report.staff_actions
            ),
        ))
    } else {
        let mut text = String::from("The audit trail does NOT verify: ");
        let problems: Vec<String> = report
            .problems
            .iter()
            .map(|p| {
                format!(
                    "ledger chain {}{}: {}",
                    p.partition,
                    p.event
                        .map(|e| format!(" at event {e}"))
                        .unwrap_or_default(),
                    p.problem
                )
            })
            .chain(report.staff_problem.iter().map(|p| {
                format!(
                    "staff audit trail{}: {}",
                    p.seq.map(|s| format!(" at entry {s}")).unwrap_or_default(),
                    p.problem
                )
            }))
            .collect();
        text.push_str(&problems.join("; "));
        Ok(done_with_error("/admin", text))
    }
}
