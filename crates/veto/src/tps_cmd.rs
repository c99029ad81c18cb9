//! `veto tps`: load the Telephone Preference Service lists that decisions
//! on the phone channel are screened against (PECR reg 21).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use jiff::civil::Date;
use serde_json::json;
use veto_core::{PhoneNumber, Timestamp};
use veto_store::{TpsList, TpsListing};

use crate::app::App;

/// Problems listed before an import is refused; the rest are counted.
const MAX_PROBLEMS: usize = 20;

#[derive(Subcommand)]
pub enum TpsCmd {
    /// Replace a list with the numbers in FILE: a CSV with the columns
    /// `number` (E.164, or a UK national number such as 01632 960000) and
    /// `listed_on` (YYYY-MM-DD). Nothing is loaded unless every row is good.
    Import {
        file: PathBuf,
        /// tps (individuals and sole traders) or ctps (companies).
        #[arg(long, default_value = "tps")]
        list: String,
        /// The date of the list data (default: today). Decisions made more
        /// than 28 days after it say the screening is stale, and refuse
        /// calls that need it.
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<String>,
    },
    /// The lists loaded, the date of their data, and whether it is stale.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(app: &App, cmd: TpsCmd) -> Result<ExitCode> {
    match cmd {
        TpsCmd::Import { file, list, as_of } => import(app, &file, &list, as_of.as_deref()).await,
        TpsCmd::Status { json } => status(app, json).await,
    }
}

fn day(s: &str) -> Result<Timestamp, String> {
    let d: Date = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a date like 2026-11-28"))?;
    format!("{d}T00:00:00Z")
        .parse()
        .map_err(|e| format!("{s:?}: {e}"))
}

/// E.164, or a UK national number (leading 0) taken as +44.
fn number(s: &str) -> Result<PhoneNumber, String> {
    let compact: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '(' | ')' | '.'))
        .collect();
    let e164 = if let Some(rest) = compact.strip_prefix("00") {
        format!("+{rest}")
    } else if let Some(rest) = compact.strip_prefix('0') {
        format!("+44{rest}")
    } else {
        compact
    };
    PhoneNumber::parse(&e164).map_err(|e| e.to_string())
}

async fn import(app: &App, file: &Path, list: &str, as_of: Option<&str>) -> Result<ExitCode> {
    let list: TpsList = list.parse().context("--list")?;
    let now = Timestamp::now();
    let as_of = match as_of {
        Some(s) => day(s).map_err(|e| anyhow::anyhow!("--as-of: {e}"))?,
        None => now,
    };
    if as_of > now {
        bail!("--as-of is in the future: give the date the list data was taken");
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_path(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header line", file.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(num_col), Some(date_col)) = (col("number"), col("listed_on")) else {
        bail!(
            "{}: the first line must name the columns `number` and `listed_on` (it is {:?})",
            file.display(),
            headers.iter().collect::<Vec<_>>().join(",")
        );
    };
    let mut listings = Vec::new();
    let mut problems = Vec::new();
    let mut bad = 0usize;
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let mut problem = |msg: String| {
            bad += 1;
            if problems.len() < MAX_PROBLEMS {
                problems.push(format!("line {line}: {msg}"));
            }
        };
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                problem(format!("{e}"));
                continue;
            }
        };
        let n = number(row.get(num_col).unwrap_or_default());
        let d = day(row.get(date_col).unwrap_or_default());
        match (n, d) {
            (Ok(number), Ok(listed_on)) if listed_on <= now => {
                listings.push(TpsListing { number, listed_on })
            }
            (Ok(_), Ok(_)) => problem("listed_on is in the future".into()),
            (Err(e), _) => problem(format!("number: {e}")),
            (_, Err(e)) => problem(format!("listed_on: {e}")),
        }
    }
    if bad > 0 {
        for p in &problems {
            eprintln!("{p}");
        }
        if bad > problems.len() {
            eprintln!("… and {} more", bad - problems.len());
        }
        bail!(
            "{}: {bad} bad row(s); nothing was loaded, the {list} list is as it was",
            file.display()
        );
    }
    let source = file.display().to_string();
    let done = app
        .store
        .import_tps(list, as_of, &source, &listings)
        .await?;
    app.audit(
        "tps.import",
        Some(format!("tps-list:{list}")),
        json!({"numbers": done.numbers, "as_of": done.as_of.to_string(), "source": source}),
    )
    .await?;
    println!(
        "loaded the {list} list: {} numbers, data of {} (from {})",
        done.numbers,
        done.as_of.strftime("%Y-%m-%d"),
        done.source
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(app: &App, json_out: bool) -> Result<ExitCode> {
    let imports = app.store.tps_imports().await?;
    let now = Timestamp::now();
    let stale = |t: Timestamp| veto_core::tps_days_passed(t, now);
    if json_out {
        let v: Vec<_> = imports
            .iter()
            .map(|i| {
                json!({
                    "list": i.list.as_str(),
                    "numbers": i.numbers,
                    "as_of": i.as_of.to_string(),
                    "imported_at": i.imported_at.to_string(),
                    "source": i.source,
                    "stale": stale(i.as_of),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if imports.is_empty() {
        println!(
            "no telephone preference list is loaded: UK marketing calls are refused unless the person agreed to calls (load one with `veto tps import`)"
        );
    }
    for i in &imports {
        println!(
            "{:<5} {:>9} numbers, data of {}{}",
            i.list.as_str(),
            i.numbers,
            i.as_of.strftime("%Y-%m-%d"),
            if stale(i.as_of) {
                " — STALE (over 28 days old): calls that need screening are refused"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_uk_national_and_international_forms() {
        assert_eq!(number("01632 960000").unwrap().as_str(), "+441632960000");
        assert_eq!(
            number("0044 1632 960000").unwrap().as_str(),
            "+441632960000"
        );
        assert!(number("+44 (0)20").is_err());
        assert_eq!(number("+1 202-555-0101").unwrap().as_str(), "+12025550101");
        assert!(number("hello").is_err());
    }

    #[test]
    fn days_are_midnight_utc() {
        assert_eq!(
            day("2026-11-01").unwrap().to_string(),
            "2026-11-01T00:00:00Z"
        );
        assert!(day("01/11/2026").is_err());
    }
}
