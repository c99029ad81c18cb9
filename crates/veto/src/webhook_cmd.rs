//! `veto webhooks …`: what veto has told, or is still trying to tell, the
//! organisation's other systems (`[[webhooks.endpoints]]`), and a retry for
//! a delivery that failed. `veto serve` does the delivering.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;
use veto_core::Timestamp;
use veto_store::{RetryOutcome, WebhookDelivery, WebhookStatus};

use crate::app::App;

#[derive(Subcommand)]
pub enum WebhooksCmd {
    /// Deliveries per endpoint, and every one that is failing, failed or gone.
    Status {
        /// Also list the deliveries in this status: pending, delivered, failed or gone.
        #[arg(long)]
        list: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a failed (or gone, or pending) delivery again now, with a fresh retry window.
    Retry { id: i64 },
}

pub async fn run(app: &App, cmd: WebhooksCmd) -> Result<ExitCode> {
    match cmd {
        WebhooksCmd::Status { list, json } => status(app, list.as_deref(), json).await,
        WebhooksCmd::Retry { id } => retry(app, id).await,
    }
}

/// Every delivery in `status`, by id.
async fn all_in(app: &App, status: WebhookStatus) -> Result<Vec<WebhookDelivery>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = app
            .store
            .webhook_deliveries(Some(status), after, 500)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let full = page.len() == 500;
        out.extend(page);
        if !full {
            break;
        }
    }
    Ok(out)
}

async fn status(app: &App, list: Option<&str>, json_out: bool) -> Result<ExitCode> {
    let list = match list {
        None => None,
        Some(s) => match WebhookStatus::parse(s) {
            Some(s) => Some(s),
            None => bail!("--list must be pending, delivered, failed or gone, not {s:?}"),
        },
    };
    let counts = app.store.webhook_counts().await?;
    // What needs a person: failed and gone ones, and pending ones that failed.
    let mut attention = all_in(app, WebhookStatus::Failed).await?;
    attention.extend(all_in(app, WebhookStatus::Gone).await?);
    attention.extend(
        all_in(app, WebhookStatus::Pending)
            .await?
            .into_iter()
            .filter(|d| d.last_error.is_some()),
    );
    attention.sort_by_key(|d| d.id);
    let listed = match list {
        Some(s) => all_in(app, s).await?,
        None => Vec::new(),
    };
    let configured: Vec<&str> = app
        .config
        .webhooks
        .endpoints
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    if json_out {
        let row = |d: &WebhookDelivery| {
            json!({
                "id": d.id, "event_id": d.event_id, "endpoint": d.endpoint, "kind": d.kind,
                "status": d.status, "attempts": d.attempts, "last_status": d.last_status,
                "last_error": d.last_error, "next_attempt_at": (d.status == WebhookStatus::Pending).then(|| d.next_attempt_at.to_string()),
                "created_at": d.created_at.to_string(),
            })
        };
        let out = json!({
            "configured": configured,
            "endpoints": counts,
            "attention": attention.iter().map(row).collect::<Vec<_>>(),
            "listed": listed.iter().map(row).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if configured.is_empty() {
            println!("no [[webhooks.endpoints]] are configured");
        } else {
            println!("configured endpoints: {}", configured.join(", "));
        }
        if counts.is_empty() {
            println!("no webhook deliveries are stored");
        }
        for c in &counts {
            let oldest = c
                .oldest_pending
                .map(|t| format!(", oldest pending since {}", when(t)))
                .unwrap_or_default();
            println!(
                "{}: {} pending ({} retrying after a failure){oldest}, {} delivered (kept for [webhooks] retention), {} failed, {} gone",
                c.endpoint, c.pending, c.retrying, c.delivered, c.failed, c.gone
            );
        }
        if !attention.is_empty() {
            println!("\nneeds attention (retry one with `veto webhooks retry ID`):");
            for d in &attention {
                println!("  {}", line(d));
            }
        }
        if let Some(s) = list {
            println!("\n{s}:");
            for d in &listed {
                println!("  {}", line(d));
            }
        }
    }
    let failing = counts.iter().any(|c| c.failed > 0 || c.gone > 0);
    Ok(if failing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn line(d: &WebhookDelivery) -> String {
    let mut s = format!(
        "#{} {} event #{} ({}) to {}, {} attempt{}",
        d.id,
        d.status,
        d.event_id,
        d.kind,
        d.endpoint,
        d.attempts,
        if d.attempts == 1 { "" } else { "s" }
    );
    if let Some(e) = &d.last_error {
        s.push_str(&format!(": {e}"));
    }
    if d.status == WebhookStatus::Pending {
        s.push_str(&format!("; next try {}", when(d.next_attempt_at)));
    }
    s
}

async fn retry(app: &App, id: i64) -> Result<ExitCode> {
    match app
        .store
        .retry_webhook_delivery(id, Timestamp::now())
        .await?
    {
        RetryOutcome::Queued(d) => {
            app.audit(
                "webhooks.retry",
                Some(format!("webhook-delivery:{id}")),
                json!({"endpoint": d.endpoint, "event": d.event_id}),
            )
            .await?;
            println!(
                "webhook delivery #{id} (event #{} to {}) is due now; `veto serve` sends it",
                d.event_id, d.endpoint
            );
            Ok(ExitCode::SUCCESS)
        }
        RetryOutcome::AlreadyDelivered(d) => {
            println!(
                "webhook delivery #{id} was delivered on {}; it is not sent again",
                d.delivered_at.map(when).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        RetryOutcome::NotFound => bail!(
            "there is no webhook delivery #{id} (delivered ones are deleted after [webhooks] retention)"
        ),
    }
}
