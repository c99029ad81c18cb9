//! `veto requests …`: data-subject requests (GDPR Arts 15 to 21) and their
//! Art 12(3) deadlines, as `/api/v1/requests` keeps them. Each change is
//! recorded in the staff audit trail as the CLI's.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;
use veto_core::{EmailAddress, Timestamp};
use veto_store::{
    NewSubjectRequest, Outcome, RequestFilter, RequestKind, RequestVia, SubjectRequest,
};

use crate::app::{self, App};

#[derive(Subcommand)]
pub enum RequestsCmd {
    /// Requests with their deadlines, days left and status.
    List {
        /// open (the default), overdue, answered or all.
        #[arg(long, default_value = "open")]
        status: String,
        /// Only open requests with at most this many days left (overdue ones too).
        #[arg(long)]
        due_within_days: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Record a request received from a person; its deadline is one calendar month later.
    Add {
        /// access, portability, erasure, rectification, objection or restriction.
        #[arg(long)]
        kind: String,
        /// The address the person gave.
        #[arg(long)]
        email: String,
        /// How it came in: email (the default), letter, phone, web_form or preference_centre.
        #[arg(long, default_value = "email")]
        via: String,
        /// A short note (no more personal data than needed).
        #[arg(long)]
        note: Option<String>,
        /// When it arrived, RFC 3339 (default: now).
        #[arg(long)]
        received_at: Option<String>,
    },
    /// Record that the person's identity was checked, and how.
    Check {
        id: i64,
        #[arg(long)]
        how: String,
    },
    /// Extend the deadline once, within the first month (to three months after receipt).
    Extend {
        id: i64,
        /// Why more time is necessary: the person must be told.
        #[arg(long)]
        reason: String,
        /// The new deadline's date, YYYY-MM-DD (default and latest: three months after receipt).
        #[arg(long)]
        until: Option<String>,
    },
    /// Answer a request: done (after the identity check; an erasure once
    /// `veto erase` has run), or refused with the reason given to the person.
    Answer {
        id: i64,
        #[arg(long, value_name = "REASON")]
        refuse: Option<String>,
    },
}

pub async fn run(app: &App, cmd: RequestsCmd) -> Result<ExitCode> {
    match cmd {
        RequestsCmd::List {
            status,
            due_within_days,
            json,
        } => list(app, &status, due_within_days, json).await,
        RequestsCmd::Add {
            kind,
            email,
            via,
            note,
            received_at,
        } => add(app, &kind, &email, &via, note, received_at.as_deref()).await,
        RequestsCmd::Check { id, how } => {
            let r = app
                .store
                .check_request_identity(id, &app::cli_actor(), &how, Timestamp::now())
                .await??;
            app.audit(
                "requests.identity_checked",
                Some(format!("request:{id}")),
                json!({}),
            )
            .await?;
            println!("{}", line(&r, Timestamp::now()));
            Ok(ExitCode::SUCCESS)
        }
        RequestsCmd::Extend { id, reason, until } => {
            let until = match until {
                None => None,
                Some(s) => match s.parse::<jiff::civil::Date>() {
                    Ok(d) => Some(d),
                    Err(_) => bail!("--until must be a date such as 2027-03-31, not {s:?}"),
                },
            };
            let r = app
                .store
                .extend_request(id, &app::cli_actor(), &reason, until, Timestamp::now())
                .await??;
            app.audit(
                "requests.extend",
                Some(format!("request:{id}")),
                json!({"due_at": r.deadline().to_string()}),
            )
            .await?;
            println!("{}", line(&r, Timestamp::now()));
            println!(
                "tell the person of the extension and its reason within the first month (GDPR Art 12(3))"
            );
            Ok(ExitCode::SUCCESS)
        }
        RequestsCmd::Answer { id, refuse } => {
            let outcome = match refuse {
                None => Outcome::Done,
                Some(reason) => Outcome::Refused { reason },
            };
            let name = if outcome == Outcome::Done {
                "done"
            } else {
                "refused"
            };
            let now = Timestamp::now();
            let r = app
                .store
                .answer_request(id, &app::cli_actor(), outcome, now)
                .await??;
            app.audit(
                "requests.answer",
                Some(format!("request:{id}")),
                json!({"outcome": name, "days_left": r.days_left(now)}),
            )
            .await?;
            println!("{}", line(&r, now));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(
    app: &App,
    status: &str,
    due_within_days: Option<i64>,
    json_out: bool,
) -> Result<ExitCode> {
    let status = match status {
        "open" => RequestFilter::Open,
        "overdue" => RequestFilter::Overdue,
        "answered" => RequestFilter::Answered,
        "all" => RequestFilter::All,
        s => bail!("--status must be open, overdue, answered or all, not {s:?}"),
    };
    let filter = match due_within_days {
        None => status,
        Some(d) if !(0..=366).contains(&d) => {
            bail!("--due-within-days must be from 0 to 366, not {d}")
        }
        Some(d) if matches!(status, RequestFilter::Open) => RequestFilter::DueWithin(d),
        Some(_) => bail!("--due-within-days lists open requests: leave --status out"),
    };
    let now = Timestamp::now();
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = app.store.requests(filter, now, after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let full = page.len() == 500;
        all.extend(page);
        if !full {
            break;
        }
    }
    if json_out {
        let rows: Vec<_> = all.iter().map(|r| to_json(r, now)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no requests");
    }
    for r in &all {
        println!("{}", line(r, now));
    }
    let counts = app.store.request_counts(now).await?;
    println!(
        "{} open, {} due within 7 days, {} overdue",
        counts.open, counts.due_within_7_days, counts.overdue
    );
    Ok(ExitCode::SUCCESS)
}

async fn add(
    app: &App,
    kind: &str,
    email: &str,
    via: &str,
    note: Option<String>,
    received_at: Option<&str>,
) -> Result<ExitCode> {
    let names = |all: &[&str]| all.join(", ");
    let Some(kind) = RequestKind::parse(kind) else {
        let all: Vec<&str> = RequestKind::ALL.iter().map(|k| k.as_str()).collect();
        bail!("--kind must be {}, not {kind:?}", names(&all));
    };
    let Some(via) = RequestVia::parse(via) else {
        let all: Vec<&str> = RequestVia::ALL.iter().map(|v| v.as_str()).collect();
        bail!("--via must be {}, not {via:?}", names(&all));
    };
    let email = match EmailAddress::parse(email) {
        Ok(e) => e,
        Err(e) => bail!("--email {email:?} is not an address: {e}"),
    };
    let received_at = match received_at {
        None => Timestamp::now(),
        Some(s) => match s.parse() {
            Ok(t) => t,
            Err(e) => {
                bail!("--received-at must be an RFC 3339 time such as 2027-01-31T09:00:00Z: {e}")
            }
        },
    };
    let r = app
        .store
        .create_request(NewSubjectRequest {
            kind,
            contact: None,
            email: Some(email),
            via,
            note,
            received_at,
            actor: app::cli_actor(),
        })
        .await?;
    app.audit(
        "requests.create",
        Some(format!("request:{}", r.id)),
        json!({"kind": kind.as_str(), "via": via.as_str(), "contact": r.contact.map(|c| c.0), "due_at": r.due_at.to_string()}),
    )
    .await?;
    println!("{}", line(&r, Timestamp::now()));
    Ok(ExitCode::SUCCESS)
}

fn date(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d").to_string()
}

/// `#7 access (Art 15) open, due 2027-02-28 (12 days left), received 2027-01-31 by letter`
fn line(r: &SubjectRequest, now: Timestamp) -> String {
    let days = r.days_left(now);
    let left = if r.answer.is_some() {
        String::new()
    } else if days < 0 {
        format!(
            ", OVERDUE by {} day{}",
            -days,
            if days == -1 { "" } else { "s" }
        )
    } else {
        format!(", {days} day{} left", if days == 1 { "" } else { "s" })
    };
    let mut s = format!(
        "#{} {} ({}) {}, due {}{left}, received {} by {}",
        r.id,
        r.kind.as_str(),
        r.kind.article(),
        r.status().as_str().replace('_', " "),
        date(r.deadline()),
        date(r.received_at),
        r.via.as_str().replace('_', " "),
    );
    if r.extension.is_some() {
        s.push_str(&format!(" (extended from {})", date(r.due_at)));
    }
    if let Some(c) = r.contact {
        s.push_str(&format!(", contact #{}", c.0));
    }
    if let Some(Outcome::Refused { reason }) = r.answer.as_ref().map(|a| &a.outcome) {
        s.push_str(&format!(", refused: {reason}"));
    }
    s
}

fn to_json(r: &SubjectRequest, now: Timestamp) -> serde_json::Value {
    let (outcome, reason) = match r.answer.as_ref().map(|a| &a.outcome) {
        None => (None, None),
        Some(Outcome::Done) => (Some("done"), None),
        Some(Outcome::Refused { reason }) => (Some("refused"), Some(reason.as_str())),
    };
    json!({
        "id": r.id,
        "kind": r.kind.as_str(),
        "status": r.status().as_str(),
        "contact_id": r.contact.map(|c| c.0),
        "email": r.email,
        "via": r.via.as_str(),
        "note": r.note,
        "received_at": r.received_at.to_string(),
        "due_at": r.deadline().to_string(),
        "first_due_at": r.due_at.to_string(),
        "days_left": r.days_left(now),
        "overdue": r.is_overdue(now),
        "extension_reason": r.extension.as_ref().map(|e| e.reason.as_str()),
        "identity_checked_at": r.identity.as_ref().map(|i| i.at.to_string()),
        "identity_how": r.identity.as_ref().map(|i| i.how.as_str()),
        "answered_at": r.answer.as_ref().map(|a| a.at.to_string()),
        "outcome": outcome,
        "refusal_reason": reason,
    })
}
