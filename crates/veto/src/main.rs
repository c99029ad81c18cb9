//! `veto`: the command line. Reads the configuration, opens the store and
//! runs one command; the work itself lives in the library crates.

mod app;
mod campaign_cmd;
mod commands;
mod config;
mod demo;
mod dkim;
mod import;
mod ops;
mod requests_cmd;
mod smtp_thread;
mod tls;
mod tps_cmd;
mod webhook_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "veto",
    version,
    about = "Consent-first marketing mail: nothing reaches a person who said no."
)]
struct Cli {
    /// The configuration file (default: ./veto.toml if it exists, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented configuration and create the data directory.
    Init {
        /// Where to put veto.toml and veto-data/ (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// Check the configuration and the store; report every problem at once.
    Check,
    /// Serve the customer pages and one-click unsubscribe (`[web] listen`), the SMTP
    /// gateway (`[gateway] listen`) and, when set, the inbound listener for
    /// bounces, complaints and mailto unsubscribes (`[gateway] inbound_listen`).
    Serve,
    /// Try veto: a demo shop with a few hundred contacts and varied consent
    /// histories, seeded once in DIR, then served as `veto serve` serves it
    /// (SQLite, copies to a maildir outbox). Prints the URLs, the staff
    /// users' passwords and a swaks command to try.
    Demo {
        /// The demo's directory (its veto.toml, veto-data/ and credentials).
        #[arg(long, value_name = "DIR", default_value = "veto-demo")]
        dir: PathBuf,
    },
    /// Print a person's one-click unsubscribe link (for support staff).
    Link {
        email: String,
        /// Unsubscribe from this topic only (default: all marketing).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Topics: the kinds of marketing a person can agree to, each on its own.
    #[command(subcommand)]
    Topics(TopicsCmd),
    /// Wordings: the exact consent texts people are shown.
    #[command(subcommand)]
    Wordings(WordingsCmd),
    /// API keys for sending tools and the organisation's systems.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Staff users who sign in to the admin UI.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Import contacts and their consent history from CSV.
    #[command(subcommand)]
    Import(ImportCmd),
    /// Why may (or may not) this person be sent this message?
    Why(WhyArgs),
    /// Everything veto holds about a person, as JSON (GDPR Art 15 and 20).
    Export { email: String },
    /// Erase a person's data, keeping only a keyed-hash suppression entry (GDPR Art 17).
    Erase { email: String },
    /// Data-subject requests (GDPR Arts 15 to 21) and their one-month deadlines (Art 12(3)).
    #[command(subcommand)]
    Requests(requests_cmd::RequestsCmd),
    /// The tamper-evident audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// DKIM keys for the signatures on the gateway's copies.
    #[command(subcommand)]
    Dkim(dkim::DkimCmd),
    /// Campaigns: written here or through the API, sent by `veto serve`.
    #[command(subcommand)]
    Campaign(campaign_cmd::CampaignCmd),
    /// Telephone preference lists (TPS, CTPS) that marketing calls are screened against.
    #[command(subcommand)]
    Tps(tps_cmd::TpsCmd),
    /// Copy the SQLite store to FILE while veto runs, and check the copy
    /// (PostgreSQL: use pg_dump, see the README).
    Backup {
        /// A new file (never overwritten).
        file: PathBuf,
    },
    /// Put a backup in place of the SQLite store, after checking it: SQLite's
    /// integrity check, its schema version, and every hash chain. Refused
    /// while `veto serve` runs.
    Restore {
        /// A file written by `veto backup`.
        file: PathBuf,
        /// Replace the store that is there now (it is kept beside it, renamed).
        #[arg(long)]
        replace: bool,
    },
    /// Delete receipts and relay records, and blank evidence, older than
    /// `[retention]` allows (`veto serve` does this daily). Suppression
    /// entries and ledger events are kept for ever.
    Purge {
        /// Count what would go, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Consent changes told to the organisation's other systems: status and retries.
    #[command(subcommand)]
    Webhooks(webhook_cmd::WebhooksCmd),
}

#[derive(Subcommand)]
enum TopicsCmd {
    /// Add a topic.
    Add {
        /// Lower-case letters, digits and hyphens, e.g. product-news.
        key: String,
        /// What people see, e.g. "Product news".
        #[arg(long)]
        name: String,
        /// One plain sentence about what it is and how often.
        #[arg(long)]
        description: String,
        /// The similar-products group (a purchase in it gives a soft opt-in).
        #[arg(long)]
        group: Option<String>,
    },
    /// List the topics.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum WordingsCmd {
    /// Store a consent text; prints its id (the same text gives the same id).
    Add {
        #[arg(long)]
        text: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create an API key; it is printed once and only its hash is kept.
    Create {
        /// viewer, marketer, service-sender, dpo or admin.
        #[arg(long)]
        role: String,
        /// The topic this key's mail is classified as by default.
        #[arg(long)]
        default_topic: Option<String>,
        /// The service type ([service.types]) this key's mail is by default.
        #[arg(long, conflicts_with = "default_topic")]
        service_type: Option<String>,
        /// Who holds the key; a DPO cannot approve a send held for their own key.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Start signing unsubscribe links with a new key; old links keep working.
    RotateTokenKey,
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Add a staff user (the first admin, for one). The password is asked
    /// for on a terminal, or read from --password-file or standard input.
    Add {
        /// The name they sign in with.
        name: String,
        /// viewer, marketer, service-sender, dpo or admin.
        #[arg(long)]
        role: String,
        /// Read the password from this file (its first line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List the staff users.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// Import contacts with consent events from a CSV file.
    Contacts(ImportArgs),
}

#[derive(Args)]
struct ImportArgs {
    file: PathBuf,
    /// veto (default), listmonk or mailchimp.
    #[arg(long, default_value = "veto")]
    format: String,
    /// For listmonk and mailchimp files: the topic their subscription status means.
    #[arg(long)]
    topic: Option<String>,
    /// Check everything and report, but import nothing.
    #[arg(long)]
    dry_run: bool,
    /// Import nothing unless every row can be imported.
    #[arg(long)]
    strict: bool,
}

#[derive(Args)]
struct WhyArgs {
    email: Option<String>,
    /// The topic of the message.
    #[arg(long, required_unless_present = "message")]
    topic: Option<String>,
    /// email (default), sms, phone or post.
    #[arg(long, default_value = "email")]
    channel: String,
    /// A past message (its Message-ID): why did it go, or not, to each recipient?
    #[arg(long, conflicts_with = "topic")]
    message: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute every hash chain and name the first bad event.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

/// mimalloc rather than glibc's malloc: fewer cycles per allocation on the
/// gateway's hot path (each session allocates its lines, copy and receipt).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
