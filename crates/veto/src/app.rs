//! What every command needs: the configuration, the store, the policy settings.

use anyhow::{Context, Result};
use veto_core::{JurisdictionSet, PolicySettings, PurchaseAfterOptOut};
use veto_store::Store;

use crate::config::{self, Config};

pub struct App {
    pub config: Config,
    pub store: Store,
    /// The `[delivery]` transport, made on first use and shared (one
    /// upstream connection pool for the gateway and veto's own mail).
    transport: std::sync::OnceLock<std::sync::Arc<dyn veto_sender::Transport>>,
}

impl App {
    /// Loads the configuration (every problem at once) and opens the store.
    pub async fn open(explicit: Option<&std::path::Path>) -> Result<App> {
        App::open_with(load_config(explicit)?).await
    }

    /// Opens the store of a configuration already loaded.
    pub async fn open_with(config: Config) -> Result<App> {
        let store = open_store(&config).await?;
        Ok(App {
            config,
            store,
            transport: std::sync::OnceLock::new(),
        })
    }

    pub fn policy(&self) -> PolicySettings {
        policy_settings(&self.config)
    }

    /// Records a staff action done from the command line in the audit
    /// trail, as `cli:<login name>`. The change is already made: a failure
    /// here says so, and the command exits non-zero.
    pub async fn audit(
        &self,
        action: &str,
        target: Option<String>,
        detail: serde_json::Value,
    ) -> Result<()> {
        let mut a = veto_store::NewStaffAction::new(cli_actor(), action).detail(detail);
        a.target = target;
        self.store
            .record_staff_action(a)
            .await
            .map(|_| ())
            .context("the change was made, but it could not be recorded in the staff audit trail")
    }
}

/// Who runs a command: `cli:<login name>`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

pub fn load_config(explicit: Option<&std::path::Path>) -> Result<Config> {
    let loaded = config::load(explicit)?;
    // Unknown keys may be typos that change what veto does: say so every time.
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded.config)
}

pub async fn open_store(config: &Config) -> Result<Store> {
    let store = match config.store.database_path() {
        Some(path) => Store::open_sqlite(&path)
            .await
            .with_context(|| format!("cannot open the SQLite store {}", path.display()))?,
        None => Store::open(config.store.url.expose(), &config.store.data_dir)
            .await
            .context("cannot open the PostgreSQL store named by [store] url")?,
    };
    // Every command that records consent also tells the other systems.
    store.set_webhook_endpoints(
        config
            .webhooks
            .endpoints
            .iter()
            .map(|e| veto_store::WebhookEndpoint {
                name: e.name.clone(),
                events: e.events.clone(),
            })
            .collect(),
    );
    Ok(store)
}

/// The webhook worker's settings from `[webhooks]`.
pub fn webhook_settings(config: &Config) -> veto_sender::WebhookSettings {
    let w = &config.webhooks;
    veto_sender::WebhookSettings {
        endpoints: w
            .endpoints
            .iter()
            .map(|e| veto_sender::WebhookTarget {
                name: e.name.clone(),
                url: e.url.clone(),
                secret: e.secret.expose().to_owned(),
            })
            .collect(),
        node: format!("{}-{}", hostname(), std::process::id()),
        timeout: w.timeout,
        backoff_base: w.backoff_base,
        backoff_max: w.backoff_max,
        give_up_after: w.give_up_after,
        retention: w.retention,
        ..Default::default()
    }
}

pub fn policy_settings(config: &Config) -> PolicySettings {
    // The configuration has validated each name already.
    let default_jurisdictions =
        JurisdictionSet::parse_list(&config.policy.default_jurisdictions.join("|"))
            .unwrap_or_default();
    PolicySettings {
        default_jurisdictions,
        purchase_after_opt_out: match config.policy.purchase_after_opt_out {
            config::PurchaseAfterOptOut::StaysOptedOut => PurchaseAfterOptOut::StaysOptedOut,
            config::PurchaseAfterOptOut::NewBasis => PurchaseAfterOptOut::NewBasis,
        },
        charity: config.policy.charity,
    }
}

/// The provider feedback receivers `[webhooks.*]` turns on; provider soft
/// bounces count with the gateway's (`[gateway] soft_bounce_threshold`).
pub fn webhooks(config: &Config) -> Result<veto_web::Webhooks> {
    use veto_web::webhooks::{
        CertificateHost, PostmarkSettings, SendGridSettings, SesSettings, Trust,
    };
    let w = &config.feedback;
    let mut hooks = veto_web::Webhooks::new(veto_store::SoftBounceLimit {
        // The configuration has checked it is at least 1.
        threshold: u32::try_from(config.gateway.soft_bounce_threshold).unwrap_or(u32::MAX),
        window: config.gateway.soft_bounce_window,
    });
    if w.ses.enabled {
        let trust = match &w.ses.ca_file {
            Some(path) => Trust::Pem(std::fs::read(path).with_context(|| {
                format!("[feedback.ses] ca_file: cannot read {}", path.display())
            })?),
            None => Trust::Platform,
        };
        let certificate_hosts = w
            .ses
            .certificate_hosts
            .iter()
            .map(|h| CertificateHost::parse(h).map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()
            .context("[feedback.ses] certificate_hosts")?;
        hooks = hooks.with_ses(SesSettings {
            topic_arns: w.ses.topic_arns.clone(),
            certificate_hosts,
            trust,
            timeout: w.ses.timeout,
        })?;
    }
    if w.sendgrid.enabled {
        let settings = SendGridSettings::new(&w.sendgrid.public_key, w.sendgrid.max_age)
            .context("[feedback.sendgrid] public_key")?;
        hooks = hooks.with_sendgrid(settings);
    }
    if w.postmark.enabled {
        let settings = PostmarkSettings::new(&w.postmark.username, w.postmark.password.expose())
            .map_err(anyhow::Error::msg)
            .context("[feedback.postmark]")?;
        hooks = hooks.with_postmark(settings);
    }
    Ok(hooks)
}

/// What the web side needs from the configuration.
pub fn web_settings(config: &Config) -> veto_web::WebSettings {
    let o = &config.organisation;
    veto_web::WebSettings {
        public_url: config.web.public_url.clone(),
        organisation: veto_web::Organisation {
            name: o.name.clone(),
            postal_address: o.postal_address.clone(),
            privacy_url: o.privacy_url.clone(),
        },
        trusted_proxies: veto_web::TrustedProxies(
            config
                .web
                .trusted_proxies
                .iter()
                .map(|c| (c.addr(), c.prefix_len()))
                .collect(),
        ),
        service_types: config
            .service
            .types
            .iter()
            .map(|(key, description)| veto_core::ServiceType {
                key: key.clone(),
                description: description.clone(),
            })
            .collect(),
    }
}

/// Structured logs to stderr, as `[log]` says (`RUST_LOG` wins when set).
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text => builder.try_init(),
    };
}

/// Resolves on Ctrl-C or SIGTERM: stop taking new work, finish what is in flight.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The gateway's settings from veto's: its name and links from
/// `[organisation]` and `[web]`, who may submit without AUTH from `[gateway]`.
pub fn gateway_config(config: &Config) -> Result<veto_gateway::Config> {
    let o = &config.organisation;
    let copies = copy_maker(config)?;
    let mut gateway = veto_gateway::Config::new(&o.domain, copies.links, copies.footer);
    gateway.trusted_networks = config
        .gateway
        .trusted_networks
        .iter()
        .map(|n| {
            Ok(veto_gateway::TrustedNetwork {
                network: veto_gateway::IpNetwork::parse(&n.to_string())?,
                default_topic: config.gateway.trusted_default_topic.clone(),
            })
        })
        .collect::<Result<_, veto_gateway::NetworkError>>()
        .context("[gateway] trusted_networks")?;
    gateway.refused_recipients = if config.gateway.discard_refused {
        veto_gateway::RefusedRecipients::Discard
    } else {
        veto_gateway::RefusedRecipients::Reject
    };
    gateway.service_types = config.service.types.keys().cloned().collect();
    gateway.bulk_threshold = config.service.bulk_threshold;
    gateway.bulk_window = config.service.bulk_window;
    gateway.soft_bounces = veto_store::SoftBounceLimit {
        // The configuration has checked it is at least 1.
        threshold: u32::try_from(config.gateway.soft_bounce_threshold).unwrap_or(u32::MAX),
        window: config.gateway.soft_bounce_window,
    };
    let g = &config.gateway;
    gateway.max_message_size = g.max_message_size;
    gateway.max_recipients = g.max_recipients;
    gateway.max_connections = g.max_connections;
    gateway.max_connections_per_client = g.max_connections_per_client;
    gateway.tls = Some(crate::tls::gateway_tls(config)?);
    gateway.dkim = copies.dkim;
    if gateway.dkim.is_empty() {
        tracing::warn!(
            "[dkim] is not set: the gateway's copies carry no DKIM signature (make a key with `veto dkim keygen`)"
        );
    }
    Ok(gateway)
}

/// Links and footer from `[organisation]` and `[web]`, signatures from
/// `[dkim]`: what every personal copy carries, whichever way it leaves.
pub fn copy_maker(config: &Config) -> Result<veto_sender::CopyMaker> {
    let o = &config.organisation;
    let links = veto_sender::copy::Links {
        public_url: config.web.public_url.clone(),
        mail_domain: o.domain.clone(),
        list_domain: o.domain.clone(),
        feedback_sender: "veto".to_owned(),
    };
    let footer = veto_sender::copy::FooterText {
        organisation: o.name.clone(),
        postal_address: o.postal_address.clone(),
        unsubscribe_text: "Unsubscribe".to_owned(),
        preferences_text: "Choose what you get".to_owned(),
    };
    Ok(veto_sender::CopyMaker {
        links,
        footer,
        dkim: crate::dkim::signers(config)?,
    })
}

/// The guard, transport and copies that campaigns and service messages use.
pub fn outbound(app: &App) -> Result<veto_sender::outbound::Outbound> {
    Ok(veto_sender::outbound::Outbound {
        guard: veto_store::Guard::new(app.store.clone(), app.policy()),
        transport: transport(app)?,
        copies: copy_maker(&app.config)?,
    })
}

/// The declared service types and the bulk brake, from `[service]`.
pub fn service_settings(config: &Config) -> veto_sender::service::ServiceSettings {
    veto_sender::service::ServiceSettings {
        types: config.service.types.keys().cloned().collect(),
        bulk_threshold: config.service.bulk_threshold,
        bulk_window: config.service.bulk_window,
    }
}

/// The campaign sender's settings from `[campaigns]`.
pub fn campaign_settings(app: &App) -> veto_sender::campaign::CampaignSettings {
    let c = &app.config.campaigns;
    let cap = |n: u64| (n > 0).then_some(n);
    veto_sender::campaign::CampaignSettings {
        // Several nodes on PostgreSQL: each its own name in the claims,
        // and a claim is taken over only when its lease runs out.
        node: format!("{}-{}", hostname(), std::process::id()),
        claim: c.claim,
        chunk: c.chunk,
        lease: c.lease,
        complaint_brake: f64::from(c.complaint_brake_ppm) / 1e6,
        bounce_brake: f64::from(c.bounce_brake_ppm) / 1e6,
        brake_min_sample: c.brake_min_sample,
        daily_cap_per_topic: cap(c.daily_cap_per_topic),
        daily_cap_per_key: cap(c.daily_cap_per_key),
        // SQLite: one process sends, so claims left by a crash are its own.
        release_on_start: matches!(app.store, veto_store::Store::Sqlite(_)),
        ..Default::default()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "veto".to_owned())
}

/// The SMTP gateway over this app's store and policy, delivering to the
/// configured upstream (`[delivery]`).
pub fn gateway(app: &App) -> Result<std::sync::Arc<veto_gateway::Gateway>> {
    let guard = veto_store::Guard::new(app.store.clone(), app.policy());
    Ok(veto_gateway::Gateway::new(
        gateway_config(&app.config)?,
        guard,
        // A pool of its own: its connections live on the SMTP thread's
        // runtime (`smtp_thread.rs`), the shared one's on the main runtime.
        make_transport(&app.config)?,
    ))
}

/// The `[delivery]` transport: the maildir `outbox` in the data directory,
/// or the upstream MTA over a pool of SMTP connections.
pub fn transport(app: &App) -> Result<std::sync::Arc<dyn veto_sender::Transport>> {
    if let Some(transport) = app.transport.get() {
        return Ok(transport.clone());
    }
    let made = make_transport(&app.config)?;
    Ok(app.transport.get_or_init(|| made).clone())
}

/// The maildir copies go to, when delivery is to a maildir.
pub fn outbox_dir(config: &Config) -> Option<std::path::PathBuf> {
    match config.delivery.upstream {
        config::Upstream::Maildir => Some(outbox_path(config)),
        config::Upstream::Smtp { .. } => None,
    }
}

/// Where the maildir delivery writes: `outbox` in the data directory.
pub fn outbox_path(config: &Config) -> std::path::PathBuf {
    config.store.data_dir.join("outbox")
}

fn make_transport(config: &Config) -> Result<std::sync::Arc<dyn veto_sender::Transport>> {
    let d = &config.delivery;
    match &d.upstream {
        config::Upstream::Maildir => {
            let outbox = outbox_path(config);
            let maildir = veto_sender::Maildir::open(&outbox)
                .with_context(|| format!("cannot create the outbox {}", outbox.display()))?;
            Ok(std::sync::Arc::new(veto_sender::MaildirTransport::new(
                maildir,
            )))
        }
        config::Upstream::Smtp { host, port } => {
            let mut settings =
                veto_sender::SmtpSettings::new(host, *port, &config.organisation.domain);
            settings.tls = match d.tls {
                config::DeliveryTls::Starttls => veto_sender::TlsMode::StartTls,
                config::DeliveryTls::None => veto_sender::TlsMode::None,
            };
            settings.ca_file = d.ca_file.clone();
            settings.credentials =
                d.username
                    .as_ref()
                    .map(|username| veto_sender::SmtpCredentials {
                        username: username.clone(),
                        password: d.password.expose().to_owned(),
                    });
            // The configuration allows 1 to 1000.
            settings.pool_size = usize::try_from(d.pool_size).unwrap_or(8);
            settings.connect_timeout = d.connect_timeout;
            settings.reply_timeout = d.timeout;
            settings.idle_timeout = d.idle_timeout;
            let transport = veto_sender::SmtpTransport::new(settings).map_err(|e| {
                let key = match e {
                    veto_sender::SmtpSetupError::CaFile { .. } => "ca_file",
                    _ => "upstream",
                };
                anyhow::anyhow!("[delivery] {key}: {e}")
            })?;
            Ok(std::sync::Arc::new(transport))
        }
    }
}

/// veto's own messages (confirmation links) go through the guard to the
/// configured delivery, the same transport as the gateway's.
pub fn mailer(app: &App) -> Result<veto_sender::Mailer> {
    let guard = veto_store::Guard::new(app.store.clone(), app.policy());
    Ok(veto_sender::Mailer::with_transport(
        guard,
        transport(app)?,
        &app.config.organisation.name,
        &app.config.organisation.domain,
    ))
}
