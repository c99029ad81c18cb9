//! The dashboard: at a glance, whether the organisation keeps its promises.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use veto_core::Timestamp;
use veto_store::describe::{self, when};
use veto_store::{CampaignState, DAY_US, ReceiptDay, RequestCounts};

use super::{AdminError, Posted, Staff, done, done_with_error, render};
use crate::AppState;

pub(super) async fn page(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Response, AdminError> {
    let verify = state
        .store()
        .last_staff_action("audit.verify")
        .await?
        .map(|a| {
            json!({
                "who": a.actor,
                "when": when(a.at),
                "ok": a.detail.get("ok").and_then(|v| v.as_bool()).unwrap_or(false),
            })
        });
    let requests = if staff.may("GET", "/requests") {
        Some(request_counts(
            state.store().request_counts(Timestamp::now()).await?,
        ))
    } else {
        None
    };
    // The numbers come from receipts and the ledger: for those who may
    // read them (not the machines that send service mail).
    if !staff.may("GET", "/receipts") {
        return render(
            &state,
            &staff,
            "admin/dashboard.html",
            "Dashboard",
            json!({
                "current": "/admin",
                "may_verify": staff.may("POST", "/audit/verify"),
                "verify": verify,
                "requests": requests,
            }),
        );
    }
    let store = state.store();
    let now = Timestamp::now();
    let days_ago = |d: i64| Timestamp::from_microsecond(now.as_microsecond() - d * DAY_US);
    let since7 = days_ago(7).map_err(|e| AdminError::Internal(e.to_string()))?;
    let since30 = days_ago(30).map_err(|e| AdminError::Internal(e.to_string()))?;
    let today = now.as_microsecond().div_euclid(DAY_US);
    let first_day = today - (CHART_DAYS - 1);
    let since_chart = Timestamp::from_microsecond(first_day * DAY_US)
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    let rows = store.receipts_by_day(since_chart).await?;
    let chart = chart(&rows, first_day, CHART_DAYS);

    let last7 = store.ledger_counts_since(since7).await?;
    let last30 = store.ledger_counts_since(since30).await?;
    let sent7 = store.count_allowed_since(since7).await?;
    let (complaint_limit, bounce_limit, from_config) = match state.campaigns() {
        Some(c) => (
            c.settings().complaint_brake,
            c.settings().bounce_brake,
            true,
        ),
        None => (PROVIDER_COMPLAINT_AIM, DEFAULT_BOUNCE_LIMIT, false),
    };
    let complaint = rate_check(
        last7.complaints,
        sent7,
        complaint_limit.min(PROVIDER_COMPLAINT_AIM),
        PROVIDER_COMPLAINT_MAX,
    );
    let bounce = rate_check(last7.hard_bounces, sent7, bounce_limit / 2.0, bounce_limit);

    let topics = store.topics().await?.len();
    let running = store
        .campaigns()
        .await?
        .iter()
        .filter(|c| c.state == CampaignState::Sending)
        .count();
    let held = store.approvals(true).await?.len();
    render(
        &state,
        &staff,
        "admin/dashboard.html",
        "Dashboard",
        json!({
            "current": "/admin",
            "may_verify": staff.may("POST", "/audit/verify"),
            "chart": chart,
            "unsubscribes": {
                "d7": last7.withdrawals + last7.objections,
                "d30": last30.withdrawals + last30.objections,
                "withdrawals7": last7.withdrawals,
                "objections7": last7.objections,
                "withdrawals30": last30.withdrawals,
                "objections30": last30.objections,
            },
            "sent7": sent7,
            "complaint": complaint,
            "bounce": bounce,
            "limits": {
                "from_config": from_config,
                "complaint_brake": percent(complaint_limit),
                "bounce_brake": percent(bounce_limit),
                "bounce_warn": percent(bounce_limit / 2.0),
            },
            "verify": verify,
            "requests": requests,
            "counts": {
                "contacts": store.count_contacts().await?,
                "topics": topics,
                "running": running,
                "held": held,
            },
        }),
    )
}

/// The GDPR request numbers and one badge for them all: bad when any is
/// overdue, a warning when any is due within 7 days.
fn request_counts(c: RequestCounts) -> Value {
    let (badge, status) = if c.overdue > 0 {
        ("bad", "overdue")
    } else if c.due_within_7_days > 0 {
        ("warn", "due soon")
    } else {
        ("ok", "on time")
    };
    json!({
        "open": c.open,
        "soon": c.due_within_7_days,
        "overdue": c.overdue,
        "badge": badge,
        "status": status,
    })
}

/// The chart shows this many days, today included.
const CHART_DAYS: i64 = 30;
/// Gmail and Yahoo: keep spam complaints under 0.1%, never 0.3% or more.
const PROVIDER_COMPLAINT_AIM: f64 = 0.001;
const PROVIDER_COMPLAINT_MAX: f64 = 0.003;
/// Without the campaign sender's brake: the rate at which SES reviews an
/// account (5%).
const DEFAULT_BOUNCE_LIMIT: f64 = 0.05;

fn percent(r: f64) -> String {
    let p = r * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// A rate against its thresholds: ok below `warn`, warning below `over`.
fn rate_check(count: i64, sent: i64, warn: f64, over: f64) -> Value {
    if sent == 0 {
        return json!({"count": count, "rate": null, "badge": "ok", "status": "no data",
            "text": format!("{count} in the last 7 days, with no messages sent")});
    }
    let rate = count as f64 / sent as f64;
    let (badge, status) = if rate >= over {
        ("bad", "over")
    } else if rate >= warn {
        ("warn", "warning")
    } else {
        ("ok", "ok")
    };
    json!({"count": count, "rate": percent(rate), "badge": badge, "status": status,
        "text": format!("{count} of {sent} messages sent ({})", percent(rate))})
}

/// Bar colours: allowed first, then one per reason (each also named in
/// the legend and the table, never by colour alone).
const ALLOWED_COLOUR: &str = "#1b7f3b";
const REASON_COLOURS: &[&str] = &[
    "#b3261e", "#8a4b08", "#5b3fa8", "#0b5c8a", "#a3127f", "#5c5c00", "#444444",
];
const CHART_W: i64 = 640;
const CHART_H: i64 = 200;
const BAR_STEP: i64 = 20;

/// The stacked bars, legend and table for `rows`, from `first_day`.
fn chart(rows: &[ReceiptDay], first_day: i64, days: i64) -> Value {
    let mut reasons: Vec<String> = rows.iter().filter_map(|r| r.reason.clone()).collect();
    reasons.sort();
    reasons.dedup();
    // Series: allowed, then each reason.
    let mut series: Vec<(String, String, &str)> =
        vec![("allowed".into(), "Allowed (sent)".into(), ALLOWED_COLOUR)];
    for (i, r) in reasons.iter().enumerate() {
        series.push((
            r.clone(),
            format!("Refused: {}", describe::reason_text(r)),
            REASON_COLOURS[i % REASON_COLOURS.len()],
        ));
    }
    let index = |r: &ReceiptDay| -> usize {
        match &r.reason {
            None => 0,
            Some(code) => 1 + reasons.iter().position(|x| x == code).unwrap_or(0),
        }
    };
    let mut grid = vec![vec![0i64; series.len()]; days as usize];
    for r in rows {
        let d = r.day - first_day;
        if (0..days).contains(&d) {
            grid[d as usize][index(r)] += r.count;
        }
    }
    let max = grid
        .iter()
        .map(|d| d.iter().sum::<i64>())
        .max()
        .unwrap_or(0);
    let mut bars = Vec::new();
    let mut table = Vec::new();
    let mut total = 0;
    for (i, counts) in grid.iter().enumerate() {
        let date = Timestamp::from_microsecond((first_day + i as i64) * DAY_US)
            .map(describe::day)
            .unwrap_or_default();
        let day_total: i64 = counts.iter().sum();
        total += day_total;
        let mut y = CHART_H;
        for (s, n) in counts.iter().enumerate() {
            if *n == 0 || max == 0 {
                continue;
            }
            let h = ((*n as f64 / max as f64) * CHART_H as f64).round().max(1.0) as i64;
            y -= h;
            bars.push(json!({
                "x": 40 + i as i64 * BAR_STEP,
                "y": y + 10,
                "w": BAR_STEP - 4,
                "h": h,
                "fill": series[s].2,
                "label": format!("{date}: {} {}", n, series[s].1),
            }));
        }
        table.push(json!({"date": date, "counts": counts, "total": day_total}));
    }
    let summary = if total == 0 {
        format!("No messages were checked in the last {days} days.")
    } else {
        let allowed: i64 = grid.iter().map(|d| d[0]).sum();
        format!(
            "{total} messages checked in the last {days} days: {allowed} allowed, {} refused.",
            total - allowed
        )
    };
    json!({
        "width": CHART_W + 40,
        "height": CHART_H + 40,
        "base": CHART_H + 10,
        "axis_end": 40 + days * BAR_STEP,
        "max": max,
        "bars": bars,
        "series": series.iter().map(|(code, label, colour)| json!({"code": code, "label": label, "colour": colour})).collect::<Vec<_>>(),
        "table": table,
        "total": total,
        "summary": summary,
        "first": table.first().and_then(|t| t.get("date").cloned()),
        "last": table.last().and_then(|t| t.get("date").cloned()),
    })
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
