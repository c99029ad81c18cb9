//! One function per command.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use veto_core::{
    Channel, Decision, EmailAddress, Message, MessageClass, Role, Timestamp, Topic, TopicKey,
    decide,
};
use veto_store::describe::event_line;
use veto_store::export::event_json;
use veto_store::{Append, AppendOutcome, ContactInput, Evidence, NewTopic, Store};

use crate::app::{self, App};
use crate::import::{self, Format, Known, Options};
use crate::smtp_thread::SmtpThread;
use crate::{
    AuditCmd, Cli, Command, ImportArgs, ImportCmd, KeysCmd, TopicsCmd, UsersCmd, WhyArgs,
    WordingsCmd, config,
};

/// Exit status of an import in which some rows were refused.
const EXIT_SOME_REFUSED: u8 = 3;
/// Exit status when an input could not be used at all (nothing was done).
const EXIT_UNUSABLE: u8 = 2;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let cfg = cli.config.as_deref();
    match cli.command {
        Command::Init { dir } => init(dir.unwrap_or_else(|| PathBuf::from("."))).await,
        Command::Check => check(cfg).await,
        Command::Serve => serve(cfg).await,
        Command::Demo { dir } => {
            if cfg.is_some() {
                bail!("veto demo uses the veto.toml in its --dir; leave out --config");
            }
            crate::demo::run(dir).await
        }
        Command::Link { email, topic } => {
            link(&App::open(cfg).await?, &email, topic.as_deref()).await
        }
        Command::Topics(cmd) => topics(&App::open(cfg).await?, cmd).await,
        Command::Wordings(WordingsCmd::Add { text }) => {
            let app = App::open(cfg).await?;
            if text.trim().is_empty() {
                bail!("--text is empty: a wording is the exact consent text people are shown");
            }
            let w = app.store.add_wording(&text).await?;
            app.audit(
                "wordings.create",
                Some(format!("wording:{}", w.id.0)),
                json!({"sha256": w.hash}),
            )
            .await?;
            println!("{}", w.id.0);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(cmd) => keys(&App::open(cfg).await?, cmd).await,
        Command::Users(cmd) => users(&App::open(cfg).await?, cmd).await,
        Command::Import(ImportCmd::Contacts(args)) => {
            import_contacts(&App::open(cfg).await?, args).await
        }
        Command::Why(args) => why(&App::open(cfg).await?, args).await,
        Command::Export { email } => export(&App::open(cfg).await?, &email).await,
        Command::Erase { email } => erase(&App::open(cfg).await?, &email).await,
        Command::Requests(cmd) => crate::requests_cmd::run(&App::open(cfg).await?, cmd).await,
        Command::Audit(AuditCmd::Verify { json }) => {
            audit_verify(&App::open(cfg).await?, json).await
        }
        Command::Dkim(cmd) => crate::dkim::run(cfg, cmd),
        Command::Campaign(cmd) => crate::campaign_cmd::run(&App::open(cfg).await?, cmd).await,
        Command::Tps(cmd) => crate::tps_cmd::run(&App::open(cfg).await?, cmd).await,
        Command::Backup { file } => crate::ops::backup(cfg, &file).await,
        Command::Restore { file, replace } => crate::ops::restore(cfg, &file, replace).await,
        Command::Purge { dry_run, json } => {
            crate::ops::purge(&App::open(cfg).await?, dry_run, json).await
        }
        Command::Webhooks(cmd) => crate::webhook_cmd::run(&App::open(cfg).await?, cmd).await,
    }
}

fn parse_email(s: &str) -> Result<EmailAddress> {
    EmailAddress::parse(s).map_err(|e| anyhow!("{s:?} is not a usable email address: {e}"))
}

/// Times as the command line writes them (and the ledger's timeline).
use veto_store::describe::iso_when as when;

// ---- init and check ---------------------------------------------------------------

async fn init(dir: PathBuf) -> Result<ExitCode> {
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(config::DEFAULT_FILE);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .with_context(|| {
            format!(
                "cannot write {} (an existing file is never overwritten)",
                file.display()
            )
        })?;
    f.write_all(config::commented_default_toml().as_bytes())?;
    f.sync_all()?;
    // If the configuration (with the environment) or the store cannot be
    // used, take the new file away again, so that `veto init` can be re-run.
    let opened = async {
        let config = app::load_config(Some(&file))?;
        let store = app::open_store(&config).await?;
        store.close().await;
        anyhow::Ok(config)
    };
    let config = match opened.await {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&file);
            return Err(e.context(format!(
                "veto init did not complete; {} was removed",
                file.display()
            )));
        }
    };
    println!("wrote {}", file.display());
    println!("created the store in {}", config.store.data_dir.display());
    println!();
    println!("The store now holds veto's suppression secret. It never changes: back up the");
    println!("data directory (or the database), because without the secret erased addresses");
    println!("could no longer be recognised if they came back. See the README, \"Backups\".");
    println!();
    println!("Next: veto topics add news --name \"Product news\" --description \"…\"");
    Ok(ExitCode::SUCCESS)
}

async fn check(cfg: Option<&Path>) -> Result<ExitCode> {
    let loaded = match config::load(cfg) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in loaded
        .warnings
        .iter()
        .chain(&config::advice(&loaded.config))
    {
        eprintln!("warning: {w}");
    }
    let c = &loaded.config;
    match &c.source {
        Some(p) => println!("configuration: {}", p.display()),
        None => println!("configuration: built-in defaults (no veto.toml here)"),
    }
    let store = app::open_store(c).await?;
    println!(
        "store: {} ({})",
        store.backend_name(),
        match c.store.database_path() {
            Some(p) => p.display().to_string(),
            None => "[store] url".into(),
        }
    );
    println!("topics: {}", store.topics().await?.len());
    println!("contacts: {}", store.count_contacts().await?);
    println!(
        "policy: default jurisdictions {}",
        c.policy.default_jurisdictions.join(", ")
    );
    store.close().await;
    if !check_gateway(c) {
        return Ok(ExitCode::FAILURE);
    }
    println!("ok");
    Ok(ExitCode::SUCCESS)
}

/// The gateway's certificate and DKIM keys, read as `veto serve` would
/// (nothing is made); false when one cannot be used.
fn check_gateway(c: &config::Config) -> bool {
    let mut usable = true;
    match crate::tls::describe(c) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("error: {e:#}");
            usable = false;
        }
    }
    match crate::dkim::signers(c) {
        Ok(signers) if signers.is_empty() => {
            println!("dkim: not set up (copies go out unsigned)");
            eprintln!(
                "warning: [dkim] is not set: the gateway's copies carry no DKIM signature, which Gmail and Yahoo \
                 require of bulk senders; make a key with `veto dkim keygen --selector veto --domain {}`",
                c.dkim.domain.as_deref().unwrap_or(&c.organisation.domain)
            );
        }
        Ok(signers) => {
            for signer in &signers {
                for line in crate::dkim::describe(signer) {
                    println!("{line}");
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            usable = false;
        }
    }
    usable
}

// ---- serve and link -------------------------------------------------------------------

async fn serve(cfg: Option<&Path>) -> Result<ExitCode> {
    Serving::start(app::load_config(cfg)?).await?.run().await
}

/// What `veto serve` runs, bound and ready: the web server, the SMTP
/// gateway (and inbound listener), the campaign sender, the webhook worker
/// and the daily purge. `veto serve` and `veto demo` both start it.
pub struct Serving {
    pub app: App,
    _lock: Option<crate::ops::DataLock>,
    state: veto_web::AppState,
    gateway: std::sync::Arc<veto_gateway::Gateway>,
    campaigns: std::sync::Arc<veto_sender::campaign::Campaigns>,
    webhooks: veto_sender::WebhookSender,
    listener: tokio::net::TcpListener,
    smtp: tokio::net::TcpListener,
    inbound: Option<tokio::net::TcpListener>,
    /// Where the SMTP gateway listens (the port chosen, when `[gateway] listen` says 0).
    pub smtp_addr: std::net::SocketAddr,
}

impl Serving {
    /// Takes the data directory's lock (SQLite), opens the store, checks
    /// the configuration's references and binds every listener; nothing is
    /// served until [`Serving::run`].
    pub async fn start(config: config::Config) -> Result<Serving> {
        // One `veto serve` per SQLite store, and no `veto restore` under it.
        let lock = match config.store.database_path() {
            Some(_) => Some(crate::ops::DataLock::take(
                &config.store.data_dir,
                "veto serve",
            )?),
            None => None,
        };
        let app = App::open_with(config).await?;
        app::init_logging(&app.config);
        let mailer = app::mailer(&app)?;
        let gateway = app::gateway(&app)?;
        if let Some(topic) = &app.config.gateway.trusted_default_topic
            && app.store.topic(topic).await?.is_none()
        {
            bail!(
                "[gateway] trusted_default_topic = {topic:?} is not a topic; add it with `veto topics add` or leave it empty"
            );
        }
        let outbound = app::outbound(&app)?;
        let feedback = app::webhooks(&app.config)?;
        let webhooks =
            veto_sender::WebhookSender::new(app.store.clone(), app::webhook_settings(&app.config))?;
        let campaigns =
            veto_sender::campaign::Campaigns::new(outbound.clone(), app::campaign_settings(&app));
        let state = veto_web::AppState::with_mailer(
            app.store.clone(),
            app::web_settings(&app.config),
            Some(mailer),
        )
        .await?
        .with_sending(
            std::sync::Arc::clone(&campaigns),
            outbound,
            app::service_settings(&app.config),
        )
        .with_metrics_access(crate::ops::metrics_access(&app.config))
        .with_webhooks(feedback);
        let state = match app::outbox_dir(&app.config) {
            Some(dir) => state.with_outbox(dir),
            None => state,
        };
        let listener = tokio::net::TcpListener::bind(app.config.web.listen)
            .await
            .with_context(|| {
                format!("cannot listen on [web] listen = {}", app.config.web.listen)
            })?;
        let smtp = tokio::net::TcpListener::bind(app.config.gateway.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on [gateway] listen = {}",
                    app.config.gateway.listen
                )
            })?;
        let inbound =
            match app.config.gateway.inbound_listen {
                None => None,
                Some(at) => Some(tokio::net::TcpListener::bind(at).await.with_context(|| {
                    format!("cannot listen on [gateway] inbound_listen = {at}")
                })?),
            };
        let addr = listener.local_addr()?;
        let smtp_addr = smtp.local_addr()?;
        let inbound_addr = inbound.as_ref().map(|l| l.local_addr()).transpose()?;
        tracing::info!(%addr, %smtp_addr, inbound_addr = ?inbound_addr, public_url = %app.config.web.public_url, store = app.store.backend_name(), "veto is serving");
        let inbound_text = inbound_addr
            .map(|a| {
                format!(
                    ", and mail for unsubscribe+…@{d} and bounces+…@{d} on {a}",
                    d = app.config.organisation.domain
                )
            })
            .unwrap_or_default();
        eprintln!(
            "veto: serving http://{addr} (links use {}) and SMTP on {smtp_addr}{inbound_text}",
            app.config.web.public_url
        );
        for a in config::advice(&app.config) {
            eprintln!("warning: {a}");
        }
        Ok(Serving {
            app,
            _lock: lock,
            state,
            gateway,
            campaigns,
            webhooks,
            listener,
            smtp,
            inbound,
            smtp_addr,
        })
    }

    /// Serves until SIGTERM or Ctrl-C (or the web server or the SMTP
    /// listeners failing), then lets the work in flight finish and closes
    /// the store.
    pub async fn run(self) -> Result<ExitCode> {
        let Serving {
            app,
            _lock,
            state,
            gateway,
            campaigns,
            webhooks,
            listener,
            smtp,
            inbound,
            ..
        } = self;
        // One stop for all servers: SIGTERM / Ctrl-C, or a server failing.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let signal = {
            let stop_tx = std::sync::Arc::clone(&stop_tx);
            tokio::spawn(async move {
                app::shutdown_signal().await;
                let _ = stop_tx.send(true);
            })
        };
        let web = {
            let stop_tx = std::sync::Arc::clone(&stop_tx);
            let until = stopped(stop_rx.clone());
            async move {
                let result = veto_web::serve(listener, state, until).await;
                let _ = stop_tx.send(true);
                result
            }
        };
        // Campaigns: the chunk in hand finishes, then the sender stops.
        let sending = std::sync::Arc::clone(&campaigns).run(stop_rx.clone());
        let purging = crate::ops::purge_daily(
            app.store.clone(),
            crate::ops::retention(&app.config),
            stop_rx.clone(),
        );
        // Webhooks: the requests in flight finish (or time out), then it stops.
        let telling = webhooks.run(stop_rx.clone());
        // The SMTP listeners run on a thread of their own; the gateway
        // failing stops everything, as the web server failing does.
        let mut smtp_thread = SmtpThread::start(smtp, inbound, gateway, stop_rx)?;
        let smtp = {
            let stop_tx = std::sync::Arc::clone(&stop_tx);
            async move {
                let result = smtp_thread.stopped().await;
                let _ = stop_tx.send(true);
                (smtp_thread, result)
            }
        };
        // The web server runs as a task on the runtime's workers: polled on
        // this thread (block_on), every request would cost a wake-up of this
        // thread and a hand-over to a worker.
        let web = tokio::spawn(web);
        let (web, (smtp_thread, smtp), (), (), ()) =
            tokio::join!(web, smtp, sending, purging, telling);
        signal.abort();
        app.store.close().await;
        // Only now: connections opened on the SMTP thread's runtime may have
        // been in use until the store closed.
        smtp_thread.finish().await?;
        smtp?;
        web.context("the web server failed")?
            .context("the web server failed")?;
        eprintln!("veto: stopped");
        Ok(ExitCode::SUCCESS)
    }
}

async fn link(app: &App, email: &str, topic: Option<&str>) -> Result<ExitCode> {
    let email = parse_email(email)?;
    let Some(contact) = app.store.find_contact(&email).await? else {
        if let Some(at) = app.store.is_suppressed(&email).await? {
            bail!(
                "{email} was erased on {}: veto will not send them marketing at all",
                when(at)
            );
        }
        bail!("veto holds nothing about {email}, so it sends them no marketing");
    };
    let topic = match topic {
        Some(t) => Some(find_topic(&app.store, t).await?),
        None => None,
    };
    let keys = veto_web::token_keys(&app.store).await?;
    let links = veto_web::links(
        &keys,
        &app.config.web.public_url,
        contact.id,
        topic.as_ref().map(|t| t.id.0),
    )?;
    match &topic {
        Some(t) => println!("one-click unsubscribe from {} for {email}:", t.name),
        None => println!("one-click unsubscribe from all marketing for {email}:"),
    }
    println!("{}", links.unsubscribe);
    println!("preference centre for {email} (every topic, pause, stop all, their data):");
    println!("{}", links.preferences);
    Ok(ExitCode::SUCCESS)
}

// ---- topics and keys ---------------------------------------------------------------

async fn topics(app: &App, cmd: TopicsCmd) -> Result<ExitCode> {
    match cmd {
        TopicsCmd::Add {
            key,
            name,
            description,
            group,
        } => {
            let key = TopicKey::parse(&key).map_err(|e| anyhow!("topic {e}"))?;
            if name.trim().is_empty() || description.trim().is_empty() {
                bail!(
                    "--name and --description must not be empty: people read them on their preference page"
                );
            }
            let group = group.map(|g| g.trim().to_owned()).filter(|g| !g.is_empty());
            let t = app
                .store
                .add_topic(NewTopic {
                    key,
                    name: name.trim().into(),
                    description: description.trim().into(),
                    group,
                })
                .await?;
            app.audit(
                "topics.create",
                Some(format!("topic:{}", t.key)),
                json!({"name": t.name, "group": t.group}),
            )
            .await?;
            println!("added topic {} ({})", t.key, t.name);
        }
        TopicsCmd::List { json } => {
            let topics = app.store.topics().await?;
            if json {
                let v: Vec<_> = topics
                    .iter()
                    .map(|t| json!({"key": t.key.as_str(), "name": t.name, "description": t.description, "group": t.group}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if topics.is_empty() {
                println!("no topics yet: add one with `veto topics add`");
            } else {
                for t in topics {
                    let group = t.group.map(|g| format!(" [group {g}]")).unwrap_or_default();
                    println!(
                        "{:<24} {}{group}\n{:<24} {}",
                        t.key.as_str(),
                        t.name,
                        "",
                        t.description
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(app: &App, cmd: KeysCmd) -> Result<ExitCode> {
    match cmd {
        KeysCmd::Create {
            role,
            default_topic,
            service_type,
            owner,
        } => {
            let role: Role = role.parse().map_err(|e| anyhow!("--role: {e}"))?;
            let topic = default_topic
                .map(|t| TopicKey::parse(&t).map_err(|e| anyhow!("--default-topic: {e}")))
                .transpose()?;
            if let Some(kind) = &service_type {
                let declared = &app.config.service.types;
                if !declared.contains_key(kind) {
                    let known: Vec<&str> = declared.keys().map(String::as_str).collect();
                    bail!(
                        "--service-type: {kind:?} is not declared under [service.types] (declared: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    );
                }
            }
            let owner = owner.map(|o| o.trim().to_owned());
            if owner.as_deref() == Some("") {
                bail!("--owner: give the name of the person who holds the key");
            }
            let k = app
                .store
                .create_api_key_with(veto_store::KeySpec {
                    role,
                    default_topic: topic,
                    default_service: service_type,
                    owner,
                })
                .await?;
            let info = app.store.api_key_info(k.id).await?;
            app.audit(
                "keys.create",
                Some(format!("key:{}", k.id)),
                json!({
                    "role": k.role.as_str(),
                    "prefix": k.prefix,
                    "owner": info.as_ref().and_then(|i| i.owner.clone()),
                    "default_topic": info.as_ref().and_then(|i| i.default_topic.clone()),
                    "service_type": info.as_ref().and_then(|i| i.default_service.clone()),
                }),
            )
            .await?;
            eprintln!(
                "created a {} key (id {}, {}…); it is shown once, keep it safe:",
                k.role, k.id, k.prefix
            );
            println!("{}", k.key);
        }
        KeysCmd::RotateTokenKey => {
            let id = app.store.rotate_token_key().await?;
            app.audit(
                "keys.rotate_token_key",
                Some(format!("token-key:{id}")),
                json!({}),
            )
            .await?;
            println!(
                "new links are signed with token key {id}; links signed with older keys keep working"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---- users ----------------------------------------------------------------------------

async fn users(app: &App, cmd: UsersCmd) -> Result<ExitCode> {
    match cmd {
        UsersCmd::Add {
            name,
            role,
            password_file,
        } => {
            let role: Role = role.parse().map_err(|e| anyhow!("--role: {e}"))?;
            let password = read_password(password_file.as_deref())?;
            let user = app.store.add_user(&name, role, &password).await?;
            app.audit(
                "users.add",
                Some(format!("user:{}", user.name)),
                json!({"id": user.id, "role": user.role.as_str()}),
            )
            .await?;
            println!("added {} user {} (id {})", user.role, user.name, user.id);
        }
        UsersCmd::List { json } => {
            let mut all = vec![];
            let mut after = None;
            loop {
                let page = app.store.users(after, 500).await?;
                let done = page.len() < 500;
                after = page.last().map(|u| u.id);
                all.extend(page);
                if done {
                    break;
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!(
                    "no users yet: add the first admin with `veto users add NAME --role admin`"
                );
            } else {
                for u in all {
                    println!(
                        "{:>4}  {:<24} {:<15} {}",
                        u.id,
                        u.name,
                        u.role.as_str(),
                        if u.disabled { "disabled" } else { "active" }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The new user's password: from `--password-file` (its first line), asked
/// for twice without echo on a terminal, or the first line of standard input.
fn read_password(file: Option<&Path>) -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    let password = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --password-file {}", f.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        None if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password("password (at least 12 characters): ")
                .context("cannot read the password from the terminal")?;
            let again = rpassword::prompt_password("the same password again: ")
                .context("cannot read the password from the terminal")?;
            if first != again {
                bail!("the two passwords differ; nothing was added");
            }
            first
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        bail!("no password was given (type it when asked, pipe it in, or use --password-file)");
    }
    Ok(password)
}

// ---- import ---------------------------------------------------------------------------

/// Rows per transaction in a normal import: one durable commit each.
const IMPORT_BATCH: usize = 5_000;

async fn import_contacts(app: &App, args: ImportArgs) -> Result<ExitCode> {
    let format: Format = match args.format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --format: {e}");
            return Ok(ExitCode::from(EXIT_UNUSABLE));
        }
    };
    let topic = match args.topic.as_deref().map(TopicKey::parse).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --topic: {e}");
            return Ok(ExitCode::from(EXIT_UNUSABLE));
        }
    };
    let file = match File::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            return Ok(ExitCode::from(EXIT_UNUSABLE));
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let topics = app.store.topics().await?;
    let known = Known {
        topics: topics
            .iter()
            .map(|t| (t.key.as_str().to_owned(), t.id))
            .collect(),
        wordings: app
            .store
            .wording_ids()
            .await?
            .into_iter()
            .collect::<HashSet<i64>>(),
    };
    let opts = Options {
        format,
        topic,
        now: Timestamp::now(),
    };
    let mut rows = match import::read_rows(BufReader::with_capacity(1 << 16, file), &opts, &known) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            eprintln!("nothing was imported");
            return Ok(ExitCode::from(EXIT_UNUSABLE));
        }
    };
    let actor = format!(
        "import:{}",
        args.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    // One transaction for all of it when nothing may be left half done.
    let single = args.strict || args.dry_run;
    let mut batch = if single {
        Some(app.store.batch().await?)
    } else {
        None
    };
    let mut summary = Summary::default();
    let mut pending: Vec<(u64, Append)> = Vec::with_capacity(IMPORT_BATCH);
    loop {
        let next = rows.next();
        let done = next.is_none();
        match next {
            Some(Ok(row)) => pending.push((row.line, append_of(row, &actor))),
            Some(Err(e)) => {
                bar.suspend(|| eprintln!("{e}"));
                summary.invalid += 1;
            }
            None => {}
        }
        if pending.len() >= IMPORT_BATCH || (done && !pending.is_empty()) {
            let (lines, items): (Vec<u64>, Vec<Append>) = pending.drain(..).unzip();
            let outcomes = match batch.as_mut() {
                Some(b) => b.append(items).await?,
                None => app.store.append(items, false).await?,
            };
            for (line, outcome) in lines.into_iter().zip(outcomes) {
                match outcome {
                    AppendOutcome::Recorded { created, .. } => {
                        summary.imported += 1;
                        summary.created += usize::from(created);
                    }
                    AppendOutcome::Refused(r) => {
                        bar.suspend(|| match r.reason {
                            veto_core::Reason::Suppressed | veto_core::Reason::Erased => eprintln!(
                                "line {line}: not imported: {} ({}); veto keeps only a keyed hash of this address",
                                r.reason,
                                r.rule.id()
                            ),
                            _ => eprintln!(
                                "line {line}: refused: {} ({}); only the person can change that",
                                r.reason,
                                r.rule.id()
                            ),
                        });
                        *summary.refused.entry(r.reason.to_string()).or_default() += 1;
                    }
                }
            }
            bar.set_position(rows.bytes_read());
            bar.set_message(format!("{} rows", summary.imported));
        }
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    let refused: usize = summary.refused.values().sum::<usize>() + summary.invalid;
    if rows.stopped_early() {
        eprintln!("reading stopped early (see above): the rest of the file was not imported");
    }
    let committed = match batch {
        Some(b) if args.dry_run || refused > 0 || rows.stopped_early() => {
            b.rollback().await?;
            false
        }
        Some(b) => {
            b.commit().await?;
            true
        }
        None => true,
    };
    if committed && summary.imported > 0 {
        app.audit(
            "contacts.import",
            Some(actor.clone()),
            json!({
                "format": args.format,
                "imported": summary.imported,
                "created": summary.created,
                "refused": refused,
            }),
        )
        .await?;
    }
    let verb = if committed {
        "imported"
    } else if args.dry_run {
        "would import"
    } else {
        "would have imported"
    };
    println!(
        "{verb} {} rows ({} new contacts); refused {refused}",
        summary.imported, summary.created
    );
    if summary.invalid > 0 {
        println!(
            "  {} rows with errors (line numbers above)",
            summary.invalid
        );
    }
    for (reason, n) in &summary.refused {
        println!("  {n} refused: {reason}");
    }
    if !committed && !args.dry_run {
        println!("nothing was imported (--strict): fix the rows above and run it again");
    }
    Ok(if refused > 0 || rows.stopped_early() {
        ExitCode::from(EXIT_SOME_REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Default)]
struct Summary {
    imported: usize,
    created: usize,
    invalid: usize,
    refused: BTreeMap<String, usize>,
}

fn append_of(row: import::ImportRow, actor: &str) -> Append {
    let mut contact = ContactInput::new(row.email);
    contact.name = row.name;
    contact.phone = row.phone;
    contact.attributes = row.attributes;
    contact.jurisdictions = row.jurisdictions;
    contact.subscriber_type = row.subscriber_type;
    Append {
        contact,
        event: row.event,
        evidence: Evidence {
            wording: row.wording.map(|w| w.0),
            ip: row.ip,
            user_agent: None,
            form_url: None,
        },
        actor: actor.to_owned(),
    }
}

// ---- why, export, erase ------------------------------------------------------------

async fn find_topic(store: &Store, key: &str) -> Result<Topic> {
    let k = TopicKey::parse(key).map_err(|e| anyhow!("--topic: {e}"))?;
    match store.topic(&k).await? {
        Some(t) => Ok(t),
        None => {
            let known: Vec<String> = store
                .topics()
                .await?
                .into_iter()
                .map(|t| t.key.to_string())
                .collect();
            bail!(
                "unknown topic {key:?}; known topics: {}",
                if known.is_empty() {
                    "none yet".into()
                } else {
                    known.join(", ")
                }
            )
        }
    }
}

async fn why(app: &App, args: WhyArgs) -> Result<ExitCode> {
    if let Some(message) = &args.message {
        return why_message(app, message, args.email.as_deref(), args.json).await;
    }
    let email = parse_email(
        args.email
            .as_deref()
            .ok_or_else(|| anyhow!("give the address to explain"))?,
    )?;
    let topic = find_topic(&app.store, args.topic.as_deref().unwrap_or_default()).await?;
    let channel: Channel = args
        .channel
        .parse()
        .map_err(|e| anyhow!("--channel: {e}"))?;
    let now = Timestamp::now();
    let settings = app.policy();
    let (contact, mut state) = app.store.load_state(&email, now).await?;
    // A call is screened against the telephone preference lists (PECR reg 21).
    let mut screening = None;
    if channel == Channel::Phone
        && let Some(c) = contact
        && let Some(phone) = app.store.contact(c).await?.and_then(|c| c.phone)
        && let Ok(phone) = veto_core::PhoneNumber::parse(&phone)
    {
        let s = app.store.phone_screening(&phone, state.subscriber).await?;
        if let Some(f) = s.fact() {
            state.upsert(f);
        }
        screening = Some((phone, s));
    }
    let decision = decide(
        &state,
        &Message {
            class: MessageClass::Marketing(&topic),
            channel,
        },
        &settings,
        now,
    );
    let events = match contact {
        Some(c) => app.store.events_of(c).await?,
        None => vec![],
    };
    let names = veto_store::export::topic_keys(&app.store).await?;
    let suppressed = app.store.is_suppressed(&email).await?;
    let deciding = decision
        .event()
        .and_then(|id| events.iter().find(|e| e.event.id == id));
    let jurisdictions = if state.jurisdictions.is_empty() {
        format!(
            "{} (the defaults)",
            settings.default_jurisdictions.to_pipe_list()
        )
    } else {
        state.jurisdictions.to_pipe_list()
    };
    let wording = match deciding.and_then(|e| e.wording) {
        Some(w) => app.store.wording(w).await?,
        None => None,
    };
    if args.json {
        let (verdict, rule, reason, jurisdiction) = match decision {
            Decision::Allowed(a) => ("allowed", a.rule.id(), None, a.jurisdiction),
            Decision::Denied(r) => ("denied", r.rule.id(), Some(r.reason), r.jurisdiction),
        };
        let v = json!({
            "email": email.as_str(),
            "topic": topic.key.as_str(),
            "channel": channel.as_str(),
            "at": now.to_string(),
            "decision": verdict,
            "rule": rule,
            "reason": reason.map(|r| r.code()),
            "reason_text": reason.map(|r| r.to_string()),
            "jurisdiction": jurisdiction.map(|j| j.as_str()),
            "jurisdictions": jurisdictions,
            "known": contact.is_some(),
            "suppressed_since": suppressed.map(|t| t.to_string()),
            "event": deciding.map(|e| event_json(e, &names)),
            "wording": wording.map(|w| json!({"id": w.id.0, "text": w.text, "sha256": w.hash})),
            "screening": screening.as_ref().map(|(n, s)| json!({
                "number": n.as_str(),
                "list": s.list.as_str(),
                "screened_at": s.screened_at.map(|t| t.to_string()),
                "listed_since": s.listed_since.map(|t| t.to_string()),
            })),
            "history": events.iter().map(|e| event_json(e, &names)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} · {} ({}) by {} · {}",
        email,
        topic.name,
        topic.key,
        channel,
        when(now)
    );
    match decision {
        Decision::Allowed(a) => println!(
            "ALLOWED under {}{}",
            a.rule.id(),
            a.jurisdiction
                .map(|j| format!(" ({j})"))
                .unwrap_or_default()
        ),
        Decision::Denied(r) => println!(
            "NOT ALLOWED: {} — {}{}",
            r.reason,
            r.rule.id(),
            r.jurisdiction
                .map(|j| format!(" ({j})"))
                .unwrap_or_default()
        ),
    }
    match deciding {
        Some(e) => println!("because: {}", event_line(e, &names)),
        None if contact.is_none() => match suppressed {
            Some(at) => println!(
                "because: the address was erased on {}; a keyed hash of it keeps it suppressed",
                when(at)
            ),
            None => println!("because: veto has no record of this address"),
        },
        None => {}
    }
    if let Some(w) = wording {
        println!(
            "they were shown (wording #{}, sha256 {}):\n  {:?}",
            w.id.0,
            &w.hash[..16],
            w.text
        );
    }
    if let Some((n, s)) = &screening {
        match (s.screened_at, s.listed_since) {
            (None, _) => println!("screening: {n} — the {} list has never been loaded", s.list),
            (Some(at), None) => println!(
                "screening: {n} is not on the preference lists (data of {})",
                when(at)
            ),
            (Some(at), Some(since)) => println!(
                "screening: {n} is on the preference lists since {} (data of {})",
                when(since),
                when(at)
            ),
        }
    }
    println!("jurisdictions: {jurisdictions}");
    if !events.is_empty() {
        println!("history:");
        for e in &events {
            println!("  {}", event_line(e, &names));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn why_message(
    app: &App,
    message: &str,
    email: Option<&str>,
    json_out: bool,
) -> Result<ExitCode> {
    let mut receipts = app.store.receipts_for_message(message).await?;
    if let Some(e) = email {
        let e = parse_email(e)?;
        receipts.retain(|r| r.receipt.recipient.eq_ignore_ascii_case(e.as_str()));
    }
    if receipts.is_empty() {
        bail!(
            "no receipts for message {message:?}{}",
            email.map(|e| format!(" to {e}")).unwrap_or_default()
        );
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&receipts)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in receipts {
        let r = r.receipt;
        let checked = Timestamp::from_microsecond(r.checked_at)
            .map(when)
            .unwrap_or_default();
        let verdict = if r.allowed { "sent" } else { "not sent" };
        println!(
            "{}: {verdict} under {}{} (checked {checked}{}){}",
            r.recipient,
            r.rule,
            r.reason.map(|x| format!(": {x}")).unwrap_or_default(),
            r.event.map(|e| format!(", event #{e}")).unwrap_or_default(),
            r.outcome
                .map(|o| format!("; upstream said {o}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(app: &App, email: &str) -> Result<ExitCode> {
    let email = parse_email(email)?;
    let Some(v) =
        veto_store::export::person(&app.store, &email, &app.config.organisation.name).await?
    else {
        if let Some(at) = app.store.is_suppressed(&email).await? {
            bail!(
                "{email} was erased on {}: veto holds nothing about them but a keyed hash that keeps them from being marketed to",
                when(at)
            );
        }
        bail!("veto holds nothing about {email}");
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(ExitCode::SUCCESS)
}

async fn erase(app: &App, email: &str) -> Result<ExitCode> {
    let email = parse_email(email)?;
    if app.store.find_contact(&email).await?.is_none() {
        if let Some(at) = app.store.is_suppressed(&email).await? {
            println!("{email} was already erased on {}", when(at));
            return Ok(ExitCode::SUCCESS);
        }
        bail!("veto holds nothing about {email}");
    }
    let contact = app.store.find_contact(&email).await?.map(|c| c.id);
    let event = app
        .store
        .erase(&email, &app::cli_actor(), Timestamp::now())
        .await?;
    // The address is not kept in the trail: it is what was erased.
    app.audit(
        "contacts.erase",
        contact.map(|c| format!("contact:{c}")),
        json!({"event": event.0}),
    )
    .await?;
    println!("erased {email} (event #{}):", event.0);
    println!("  their name, address, phone, attributes, IPs and user agents are deleted;");
    println!(
        "  the consent history is kept without personal data, and the audit chain still verifies;"
    );
    println!(
        "  a keyed hash of the address stays on the suppression list, so it is never marketed to again"
    );
    println!("  unless the person signs up again themselves.");
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(app: &App, json_out: bool) -> Result<ExitCode> {
    let report = app.store.verify().await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.ok() {
        println!(
            "ok: {} events in {} chains verified, {} personal-data rows checked; {} staff actions verified",
            report.events, report.partitions, report.personal_rows_checked, report.staff_actions
        );
    } else {
        println!("THE LEDGER OR THE STAFF AUDIT TRAIL HAS BEEN TAMPERED WITH:");
        for p in &report.problems {
            println!("  chain {}: {}", p.partition, p.problem);
        }
        if let Some(p) = &report.staff_problem {
            println!("  staff audit trail: {}", p.problem);
        }
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
