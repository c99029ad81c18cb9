//! `veto campaign …`: write, preview, test, send and watch campaigns from
//! the command line. `veto serve` does the sending; these commands change
//! what it sends and show how far it got.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use veto_sender::campaign::{CampaignError, CampaignSpec, CampaignStatus, Campaigns};
use veto_store::CampaignState;

use crate::app::{self, App};

#[derive(Subcommand)]
pub enum CampaignCmd {
    /// Write a new campaign (a draft); prints its id.
    Create(CreateArgs),
    /// Every campaign, newest first.
    List,
    /// One campaign: its state, progress, and what came back.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// The message one contact would get, and whether the guard would let it go now.
    Preview {
        id: i64,
        email: String,
    },
    /// Send it to a few addresses, marked as a test (each still needs the guard's yes).
    Test {
        id: i64,
        #[arg(required = true)]
        to: Vec<String>,
    },
    /// Start it (`veto serve` sends it) and watch it go.
    Send {
        id: i64,
        /// Start it and return at once.
        #[arg(long)]
        no_watch: bool,
    },
    /// Watch a campaign's progress until it is done or cancelled.
    Watch {
        id: i64,
    },
    Pause {
        id: i64,
    },
    Resume {
        id: i64,
    },
    Cancel {
        id: i64,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(long)]
    name: String,
    /// The topic it markets: only people who may get this topic get it.
    #[arg(long)]
    topic: String,
    /// The sender's address.
    #[arg(long)]
    from: String,
    #[arg(long)]
    from_name: Option<String>,
    /// The subject (a template: `Hello {{ name }}`).
    #[arg(long)]
    subject: String,
    /// The plain-text template file.
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// The HTML template file (autoescaped).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Send at this time (RFC 3339, e.g. 2026-12-24T09:00:00Z) once started.
    #[arg(long, value_name = "TIME")]
    schedule: Option<String>,
    /// Messages per second in all.
    #[arg(long)]
    rate: Option<f64>,
    /// Messages per second to any one domain.
    #[arg(long)]
    domain_rate: Option<f64>,
    /// Hand-offs in progress at once (default 4).
    #[arg(long)]
    concurrency: Option<u32>,
}

pub async fn run(app: &App, cmd: CampaignCmd) -> Result<ExitCode> {
    let campaigns = Campaigns::new(app::outbound(app)?, app::campaign_settings(app));
    let by = app::cli_actor();
    match cmd {
        CampaignCmd::Create(a) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let spec = CampaignSpec {
                name: a.name,
                topic: a.topic,
                from_name: a.from_name,
                from_address: a.from,
                subject: a.subject,
                text: read(&a.text)?,
                html: a.html.as_ref().map(read).transpose()?,
                scheduled_at: a
                    .schedule
                    .as_deref()
                    .map(|s| {
                        s.parse().map_err(|e| {
                            anyhow!("--schedule {s:?} is not an RFC 3339 time such as 2026-12-24T09:00:00Z: {e}")
                        })
                    })
                    .transpose()?,
                rate: a.rate,
                domain_rate: a.domain_rate,
                concurrency: a.concurrency,
                created_by: by,
            };
            let c = campaigns.create(spec).await.map_err(cli_error)?;
            app.audit(
                "campaigns.create",
                Some(format!("campaign:{}", c.id)),
                serde_json::json!({"name": c.name, "topic": c.topic}),
            )
            .await?;
            println!("{}", c.id);
            eprintln!(
                "campaign {} ({}) is a draft: preview it with `veto campaign preview {} EMAIL`, send it with `veto campaign send {}`",
                c.id, c.name, c.id, c.id
            );
        }
        CampaignCmd::List => {
            for c in app.store.campaigns().await? {
                let p = app.store.campaign_progress(c.id).await?;
                println!(
                    "{:>5}  {:<10} {:<12} sent {:>8}  refused {:>8}  remaining {:>8}  {}",
                    c.id,
                    c.state.as_str(),
                    c.topic,
                    p.sent,
                    p.refused_total(),
                    p.remaining(),
                    c.name
                );
            }
        }
        CampaignCmd::Show { id, json } => {
            let s = campaigns.status(id).await.map_err(cli_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
        }
        CampaignCmd::Preview { id, email } => {
            let p = campaigns.preview(id, &email).await.map_err(cli_error)?;
            match &p.reason {
                None => eprintln!("the guard would send this to {email} now ({})", p.rule),
                Some(r) => eprintln!(
                    "the guard would NOT send this to {email} now: {r} ({})",
                    p.rule
                ),
            }
            println!("{}", p.message);
        }
        CampaignCmd::Test { id, to } => {
            let mut all_sent = true;
            let results = campaigns.test_send(id, &to).await.map_err(cli_error)?;
            app.audit(
                "campaigns.test",
                Some(format!("campaign:{id}")),
                serde_json::json!({"to": to.len()}),
            )
            .await?;
            for r in results {
                all_sent &= r.sent;
                println!(
                    "{}: {} — {}",
                    r.to,
                    if r.sent { "sent" } else { "not sent" },
                    r.detail
                );
            }
            if !all_sent {
                return Ok(ExitCode::from(3));
            }
        }
        CampaignCmd::Send { id, no_watch } => {
            let c = campaigns.start(id).await.map_err(cli_error)?;
            app.audit(
                "campaigns.start",
                Some(format!("campaign:{id}")),
                serde_json::json!({"state": c.state}),
            )
            .await?;
            match c.state {
                CampaignState::Scheduled => eprintln!(
                    "campaign {id} is scheduled for {}; `veto serve` sends it then",
                    c.scheduled_at.map(|t| t.to_string()).unwrap_or_default()
                ),
                _ => eprintln!("campaign {id} started; `veto serve` is sending it"),
            }
            if !no_watch {
                return watch(&campaigns, id).await;
            }
        }
        CampaignCmd::Watch { id } => return watch(&campaigns, id).await,
        CampaignCmd::Pause { id } => {
            let c = campaigns.pause(id, &by).await.map_err(cli_error)?;
            app.audit(
                "campaigns.pause",
                Some(format!("campaign:{id}")),
                serde_json::json!({"state": c.state}),
            )
            .await?;
            eprintln!(
                "campaign {id} is {}: nothing more goes out until you resume it",
                c.state
            );
        }
        CampaignCmd::Resume { id } => {
            let c = campaigns.resume(id).await.map_err(cli_error)?;
            app.audit(
                "campaigns.resume",
                Some(format!("campaign:{id}")),
                serde_json::json!({"state": c.state}),
            )
            .await?;
            eprintln!("campaign {id} is {} again", c.state);
        }
        CampaignCmd::Cancel { id } => {
            let c = campaigns.cancel(id, &by).await.map_err(cli_error)?;
            app.audit(
                "campaigns.cancel",
                Some(format!("campaign:{id}")),
                serde_json::json!({"state": c.state}),
            )
            .await?;
            eprintln!("campaign {id} is {}: nothing more of it goes out", c.state);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cli_error(e: CampaignError) -> anyhow::Error {
    match e {
        CampaignError::Invalid { field, message } => {
            anyhow!("--{}: {message}", field.replace('_', "-"))
        }
        e => anyhow!("{e}"),
    }
}

fn summary(s: &CampaignStatus) -> String {
    let p = &s.progress;
    let refused = if p.refused.is_empty() {
        "0".to_owned()
    } else {
        let by: Vec<String> = p.refused.iter().map(|(r, n)| format!("{r} {n}")).collect();
        format!("{} ({})", p.refused_total(), by.join(", "))
    };
    format!(
        "{}: sent {} · refused {} · failed {} · remaining {}",
        s.campaign.state,
        p.sent,
        refused,
        p.failed,
        p.remaining()
    )
}

fn print_status(s: &CampaignStatus) {
    let c = &s.campaign;
    println!("campaign {} — {}", c.id, c.name);
    println!(
        "  topic {}, from {}, subject {:?}",
        c.topic, c.from_address, c.subject
    );
    if let Some(r) = &c.state_reason {
        println!("  {}: {r}", c.state);
    }
    println!("  {}", summary(s));
    let f = &s.feedback;
    let pct = |x: f64| format!("{:.3}%", 100.0 * x);
    println!(
        "  came back: {} unsubscribes, {} hard bounces ({} — brake at {}), {} complaints ({} — brake at {}; providers' limit 0.3%)",
        f.unsubscribes,
        f.hard_bounces,
        pct(s.rates.hard_bounce_rate),
        pct(s.rates.hard_bounce_limit),
        f.complaints,
        pct(s.rates.complaint_rate),
        pct(s.rates.complaint_limit)
    );
}

/// A live progress bar until the campaign is done or cancelled.
async fn watch(campaigns: &Campaigns, id: i64) -> Result<ExitCode> {
    let first = campaigns.status(id).await.map_err(cli_error)?;
    let bar = indicatif::ProgressBar::new(first.progress.total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last_done = -1i64;
    let mut still_since = Instant::now();
    let mut warned = false;
    loop {
        let s = campaigns.status(id).await.map_err(cli_error)?;
        let p = &s.progress;
        let done = p.sent + p.failed + p.refused_total();
        bar.set_length(p.total.max(0) as u64);
        bar.set_position(done.max(0) as u64);
        let mut msg = summary(&s);
        if let Some(r) = s
            .campaign
            .state_reason
            .as_deref()
            .filter(|_| s.campaign.state == CampaignState::Paused)
        {
            msg.push_str(&format!(" — {r}"));
        }
        bar.set_message(msg);
        if done != last_done {
            last_done = done;
            still_since = Instant::now();
        } else if s.campaign.state == CampaignState::Sending
            && !warned
            && still_since.elapsed() > Duration::from_secs(15)
        {
            warned = true;
            bar.suspend(|| {
                eprintln!("nothing has moved for 15 s: is `veto serve` running on this store?")
            });
        }
        match s.campaign.state {
            CampaignState::Done | CampaignState::Cancelled => {
                bar.finish();
                if bar.is_hidden() {
                    eprintln!("{}", summary(&s));
                }
                return Ok(ExitCode::SUCCESS);
            }
            CampaignState::Draft => {
                bail!("campaign {id} is a draft: start it with `veto campaign send {id}`")
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
