//! veto's configuration: typed, layered, and checked all at once.
//!
//! Layers, later wins: built-in defaults → one TOML file → environment
//! variables `VETO_SECTION__KEY` (`VETO_WEB__LISTEN=0.0.0.0:8080`,
//! `VETO_SERVICE__TYPES__BILLING="Bills"`). An environment value is read as a
//! TOML value when it parses as one (`100`, `true`, `["UK"]`, `"quoted"`) and
//! as a plain string otherwise.
//!
//! Every key is read on its own, so one bad value never hides another: all
//! problems come back together in [`ConfigErrors`], each with where it came
//! from (`veto.toml:12:10` or the variable's name) and its key. Unknown keys
//! and unknown `VETO_` variables are warnings. Secret values are [`Secret`]s,
//! which never print, and no message quotes them.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IntoDeserializer as _};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The file read when no path is given, if it exists (relative to the
/// current directory).
pub const DEFAULT_FILE: &str = "veto.toml";

const ENV_PREFIX: &str = "VETO_";

/// `VETO_` variables that are not configuration keys, so they are neither
/// read nor warned about. Test suites use `VETO_TEST_*`
/// (e.g. `VETO_TEST_POSTGRES_URL`).
const ENV_NOT_CONFIG_PREFIXES: &[&str] = &["VETO_TEST_"];

const SECTIONS: &[&str] = &[
    "store",
    "web",
    "gateway",
    "dkim",
    "delivery",
    "organisation",
    "policy",
    "service",
    "campaigns",
    "retention",
    "metrics",
    "feedback",
    "webhooks",
    "log",
];

// ---------------------------------------------------------------------------
// The configuration
// ---------------------------------------------------------------------------

/// The whole configuration, checked. Build it with [`load`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub store: StoreConfig,
    pub web: WebConfig,
    pub gateway: GatewayConfig,
    pub dkim: DkimConfig,
    pub delivery: DeliveryConfig,
    pub organisation: OrganisationConfig,
    pub policy: PolicyConfig,
    pub service: ServiceConfig,
    pub campaigns: CampaignsConfig,
    pub retention: RetentionConfig,
    pub metrics: MetricsConfig,
    pub feedback: FeedbackConfig,
    pub webhooks: WebhooksConfig,
    pub log: LogConfig,
    /// The file that was read, if any.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Empty: SQLite in `data_dir`. Otherwise a `postgres://` URL, which may
    /// hold a password.
    pub url: Secret,
    /// Absolute after [`load`]: a relative path in the file is taken from
    /// the file's directory, one from the environment or the default (with
    /// no file) from the current directory.
    pub data_dir: PathBuf,
}

impl StoreConfig {
    /// The SQLite database file, or `None` when `url` names PostgreSQL.
    pub fn database_path(&self) -> Option<PathBuf> {
        self.url.is_empty().then(|| self.data_dir.join("veto.db"))
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: Secret::default(),
            data_dir: PathBuf::from("veto-data"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// An absolute http(s) URL without query or fragment, and without a
    /// trailing slash, so links are `format!("{public_url}/u/{token}")`.
    pub public_url: String,
    /// Reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpCidr>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            public_url: "http://127.0.0.1:8080".to_owned(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// SMTP submission for the organisation's own tools.
    pub listen: SocketAddr,
    /// SMTP from anyone, for veto's own addresses only; `None` = off.
    pub inbound_listen: Option<SocketAddr>,
    /// Clients that may submit without AUTH (the guard still decides).
    pub trusted_networks: Vec<IpCidr>,
    /// The topic of mail from those networks; `None`: each message must
    /// name its topic with a `Veto-Topic` header.
    pub trusted_default_topic: Option<veto_core::TopicKey>,
    /// `false` (default): a refused recipient gets `550 5.7.1` at RCPT;
    /// `true`: `250`, and nothing is sent to them (for tools that give up
    /// on a whole send at the first 5xx). Receipted either way.
    pub discard_refused: bool,
    /// Soft bounces (delays, 4.x.x failures) of one address within
    /// `soft_bounce_window` that make a hard bounce; at least 1.
    pub soft_bounce_threshold: u64,
    /// Longer than zero.
    pub soft_bounce_window: Duration,
    /// STARTTLS certificate chain and key (PEM), both or neither; neither:
    /// `veto serve` makes a self-signed pair in `data_dir/tls/`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Sessions at once, in all and from one IP address.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// Recipients per transaction.
    pub max_recipients: usize,
}

/// DKIM signatures on the gateway's copies (RFC 6376; RFC 8463 for Ed25519).
/// Checked for completeness here; the keys are read at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DkimConfig {
    /// `d=`; `None`: `[organisation] domain`.
    pub domain: Option<String>,
    /// The first signature (RSA or Ed25519); `None`: copies go unsigned.
    pub selector: Option<String>,
    pub private_key_file: Option<PathBuf>,
    /// An optional second signature with an Ed25519 key.
    pub ed25519_selector: Option<String>,
    pub ed25519_private_key_file: Option<PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 2525)),
            inbound_listen: None,
            trusted_networks: vec![IpCidr {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                prefix_len: 32,
            }],
            trusted_default_topic: None,
            discard_refused: false,
            soft_bounce_threshold: 5,
            soft_bounce_window: Duration::from_secs(30 * 24 * 60 * 60),
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: 1000,
            max_connections_per_client: 50,
            max_message_size: veto_mail::rewrite::MAX_MESSAGE_SIZE,
            max_recipients: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    pub upstream: Upstream,
    /// How the connection to an SMTP upstream is protected.
    pub tls: DeliveryTls,
    /// PEM certificate authorities trusted besides the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// AUTH with the upstream: both or neither of `username` and `password`.
    pub username: Option<String>,
    pub password: Secret,
    /// Most connections to upstream open at once (1 or more).
    pub pool_size: u64,
    /// For connecting to upstream.
    pub connect_timeout: Duration,
    /// For each of upstream's replies.
    pub timeout: Duration,
    /// A connection unused this long is closed.
    pub idle_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            upstream: Upstream::default(),
            tls: DeliveryTls::default(),
            ca_file: None,
            username: None,
            password: Secret::default(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// TLS towards an SMTP upstream. There is no setting that skips verifying
/// its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryTls {
    /// STARTTLS, required: an upstream that does not offer it gets no mail.
    #[default]
    Starttls,
    /// Plain text: an MTA on this host or a private network.
    None,
}

/// Where admitted mail is handed off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Upstream {
    /// Written to a local Maildir (for trying veto out).
    #[default]
    Maildir,
    /// Relayed to an MTA (`smtp://host:port`, port 25 when left out).
    Smtp { host: String, port: u16 },
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Maildir => f.write_str("maildir"),
            Upstream::Smtp { host, port } => write!(f, "smtp://{host}:{port}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationConfig {
    pub name: String,
    /// Empty is allowed with a warning; CAN-SPAM needs one in every
    /// commercial message.
    pub postal_address: String,
    pub privacy_url: Option<String>,
    /// Lower-case; veto's own addresses (`unsubscribe+…@`, `bounces+…@`) and
    /// `List-Id` live under it.
    pub domain: String,
}

impl Default for OrganisationConfig {
    fn default() -> Self {
        Self {
            name: "Example Organisation".to_owned(),
            postal_address: String::new(),
            privacy_url: None,
            domain: "example.org".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Upper-case, each one of UK, EU, US, CA, not empty, no duplicates.
    pub default_jurisdictions: Vec<String>,
    pub purchase_after_opt_out: PurchaseAfterOptOut,
    /// PECR reg 22(3A): a charity may use the soft opt-in for supporters.
    pub charity: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            default_jurisdictions: vec!["UK".to_owned(), "EU".to_owned()],
            purchase_after_opt_out: PurchaseAfterOptOut::default(),
            charity: false,
        }
    }
}

/// What a purchase after an opt-out means for marketing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseAfterOptOut {
    /// The opt-out stands.
    #[default]
    StaysOptedOut,
    /// The purchase is a new basis for the soft opt-in.
    NewBasis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// A service send to more recipients than this within `bulk_window` is
    /// held for approval by a DPO.
    pub bulk_threshold: u64,
    /// Longer than zero.
    pub bulk_window: Duration,
    /// Declared service message types: key → one-line description shown to
    /// customers.
    pub types: BTreeMap<String, String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            bulk_threshold: 100,
            bulk_window: Duration::from_secs(24 * 60 * 60),
            types: BTreeMap::new(),
        }
    }
}

/// How `veto serve` sends campaigns, and when a campaign stops itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignsConfig {
    /// Recipients checked by the guard together, immediately before their
    /// hand-offs (1 to 256).
    pub chunk: usize,
    /// Recipients a node claims from the queue at once.
    pub claim: usize,
    /// A claim older than this is taken over by another node (PostgreSQL).
    pub lease: Duration,
    /// Pause a campaign at this complaint rate, in parts per million
    /// (written as a percentage: `"0.1%"`).
    pub complaint_brake_ppm: u32,
    /// … and at this hard-bounce rate (`"5%"`).
    pub bounce_brake_ppm: u32,
    /// Messages sent before the brakes judge a rate.
    pub brake_min_sample: u64,
    /// Campaign messages per topic per day (UTC); 0: no cap.
    pub daily_cap_per_topic: u64,
    /// Campaign messages per API key per day (UTC); 0: no cap.
    pub daily_cap_per_key: u64,
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        Self {
            chunk: 16,
            claim: 256,
            lease: Duration::from_secs(120),
            complaint_brake_ppm: 1_000,
            bounce_brake_ppm: 50_000,
            brake_min_sample: 1_000,
            daily_cap_per_topic: 0,
            daily_cap_per_key: 0,
        }
    }
}

/// How long records are kept (`veto purge`, and daily in `veto serve`).
/// Suppression entries and ledger events are kept for ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Receipts (`None`: for ever); at least 31 days, which frequency limits look back.
    pub receipts: Option<Duration>,
    /// IP addresses and user agents kept as evidence (`None`: for ever).
    pub evidence: Option<Duration>,
    /// Which copies the MTA took, against duplicates on a tool's retry
    /// (1 to 7 days; the gateway looks back 7).
    pub relay_records: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            receipts: None,
            evidence: None,
            relay_records: veto_store::receipt_log::RELAY_MEMORY,
        }
    }
}

/// `[feedback.ses]`, `[feedback.sendgrid]`, `[feedback.postmark]`: provider
/// feedback receivers, each off until enabled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedbackConfig {
    pub ses: SesHookConfig,
    pub sendgrid: SendGridHookConfig,
    pub postmark: PostmarkHookConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SesHookConfig {
    pub enabled: bool,
    /// The SNS topics whose notifications are taken; at least one when enabled.
    pub topic_arns: Vec<String>,
    /// Hosts signing certificates and subscription confirmations may come
    /// from (over https): `*` is one DNS label, `:port` optional (else 443).
    pub certificate_hosts: Vec<String>,
    /// PEM certificates to trust instead of the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// For each certificate fetch and subscription confirmation.
    pub timeout: Duration,
}

impl Default for SesHookConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            topic_arns: Vec::new(),
            certificate_hosts: vec!["sns.*.amazonaws.com".to_owned()],
            ca_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Consent changes pushed to the organisation's other systems
/// (`[[webhooks.endpoints]]`), and how their delivery is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    pub endpoints: Vec<WebhookEndpointConfig>,
    /// For one request, connecting included.
    pub timeout: Duration,
    /// The wait after the first failed attempt, doubled after each further one …
    pub backoff_base: Duration,
    /// … up to this.
    pub backoff_max: Duration,
    /// Retries stop this long after the change (or a staff retry); the
    /// delivery is then marked failed, visible until retried.
    pub give_up_after: Duration,
    /// Delivered rows are deleted this long after delivery.
    pub retention: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            endpoints: Vec::new(),
            timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(60 * 60),
            give_up_after: Duration::from_secs(7 * DAY),
            retention: Duration::from_secs(7 * DAY),
        }
    }
}

/// Who may read `GET /metrics` on the web listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Client networks that may; empty: none by address.
    pub allowed_networks: Vec<IpCidr>,
    /// Empty: no token; otherwise `Authorization: Bearer <token>` may, from anywhere.
    pub bearer_token: Secret,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            allowed_networks: vec![
                IpCidr {
                    addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                    prefix_len: 8,
                },
                IpCidr {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    prefix_len: 128,
                },
            ],
            bearer_token: Secret::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendGridHookConfig {
    pub enabled: bool,
    /// The verification key SendGrid shows for its signed event webhook
    /// (base64 of the DER public key, ECDSA P-256).
    pub public_key: String,
    /// How far the signed timestamp may be from now.
    pub max_age: Duration,
}

impl Default for SendGridHookConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            public_key: String::new(),
            max_age: Duration::from_secs(10 * 60),
        }
    }
}

/// Postmark's documented protection: HTTP Basic credentials in the URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostmarkHookConfig {
    pub enabled: bool,
    pub username: String,
    pub password: Secret,
}

/// One receiver: `[[webhooks.endpoints]]` with name, url, secret and
/// optionally events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpointConfig {
    /// Lower-case letters, digits, `_` and `-`; unique.
    pub name: String,
    pub url: String,
    /// The HMAC-SHA256 key of `Veto-Signature`, at least 16 characters.
    pub secret: Secret,
    /// Event kinds to send; the default is [`veto_store::DEFAULT_WEBHOOK_EVENTS`].
    pub events: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` string, checked to parse.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A value that must never be printed: `Debug` and `Display` show
/// `[redacted]`. Read it with [`Secret::expose`] where it is used.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An IP network: `10.0.0.0/8`, or one address (`127.0.0.1`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpCidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an IP address or network like 10.0.0.0/8 or ::1");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(bad()),
            },
        };
        Ok(Self { addr, prefix_len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, as a dual-stack socket reports) counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                (u32::from(net) ^ u32::from(ip)) & mask == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                (u128::from(net) ^ u128::from(ip)) & mask == 0
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// A checked configuration and what was odd about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Unknown keys and variables, and allowed-but-risky values. Print them
    /// at start.
    pub warnings: Vec<String>,
}

/// What a valid configuration still lacks for sending marketing (told by
/// `veto check` and `veto serve`, not by every command).
pub fn advice(config: &Config) -> Vec<String> {
    let mut advice = vec![];
    if config.organisation.postal_address.trim().is_empty() {
        advice.push(
            "[organisation] postal_address is empty: CAN-SPAM requires a postal address in every \
             marketing message, so the gateway refuses marketing mail until it is set"
                .to_owned(),
        );
    }
    advice
}

/// Every problem found, each with where it came from and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the configuration has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Loads the configuration from `explicit` (which must exist) or else
/// `./veto.toml` if it exists, and the process environment.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    // `std::env::vars` panics on a variable that is not UTF-8.
    let mut env = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => env.push((name, value)),
            (Ok(name), Err(_)) if is_config_env(&name) => {
                problems.push(format!("{name}: the value is not valid UTF-8"));
            }
            (Err(name), _) if is_config_env(&name.to_string_lossy()) => {
                problems.push(format!(
                    "{}: the variable's name is not valid UTF-8",
                    name.to_string_lossy()
                ));
            }
            _ => {}
        }
    }
    load_inner(explicit, Path::new(DEFAULT_FILE), env, problems)
}

/// [`load`] with the environment given as (name, value) pairs.
pub fn load_from(
    explicit: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigErrors> {
    load_inner(
        explicit,
        Path::new(DEFAULT_FILE),
        env.into_iter().collect(),
        Vec::new(),
    )
}

fn is_config_env(name: &str) -> bool {
    name.starts_with(ENV_PREFIX)
        && !ENV_NOT_CONFIG_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

fn load_inner(
    explicit: Option<&Path>,
    default_file: &Path,
    mut env: Vec<(String, String)>,
    mut problems: Vec<String>,
) -> Result<Loaded, ConfigErrors> {
    let path = match explicit {
        Some(path) => Some(path),
        None => match default_file.try_exists() {
            Ok(true) => Some(default_file),
            Ok(false) => None,
            Err(e) => {
                problems.push(format!(
                    "{}: cannot be checked: {e}",
                    default_file.display()
                ));
                None
            }
        },
    };
    let file = path.and_then(|path| match std::fs::read_to_string(path) {
        Ok(text) => Some((path.to_path_buf(), text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            problems.push(format!("{}: config file not found", path.display()));
            None
        }
        Err(e) => {
            problems.push(format!("{}: cannot read config file: {e}", path.display()));
            None
        }
    });

    let mut ctx = Ctx {
        file: file
            .as_ref()
            .map(|(path, text)| (path.as_path(), text.as_str())),
        sections: BTreeMap::new(),
        problems,
        warnings: Vec::new(),
    };
    if let Some((path, text)) = &file {
        let (table, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            // What follows a syntax error is guesswork: report only these.
            for error in errors {
                let at = error.span().map_or(0, |span| span.start);
                let (line, column) = line_column(text, at);
                ctx.problems.push(format!(
                    "{}:{line}:{column}: TOML syntax error: {}",
                    path.display(),
                    error.message()
                ));
            }
            return Err(ConfigErrors(ctx.problems));
        }
        ctx.add_file(table.into_inner());
    }
    env.sort();
    ctx.add_env(&env);

    let config = ctx.read_config(file.as_ref().map(|(path, _)| path.clone()));
    if ctx.problems.is_empty() {
        Ok(Loaded {
            config,
            warnings: ctx.warnings,
        })
    } else {
        Err(ConfigErrors(ctx.problems))
    }
}

/// One value as given, with where it came from.
#[derive(Clone)]
struct Item<'i> {
    value: Spanned<DeValue<'i>>,
    /// Where the key is in the file (the value's span for a variable).
    key_span: Range<usize>,
    origin: Origin<'i>,
}

#[derive(Clone, Copy)]
enum Origin<'i> {
    /// The span of `value` is in the file.
    File,
    /// `raw` is the variable's text, used as a string when the TOML reading
    /// of it is not what the key takes (`VETO_ORGANISATION__NAME=2024`).
    Env { var: &'i str, raw: Option<&'i str> },
}

#[derive(Default)]
struct RawSection<'i> {
    /// Where the file opened the section, if it did.
    header: Option<Range<usize>>,
    items: BTreeMap<String, Item<'i>>,
    /// `VETO_SECTION__KEY__SUBKEY`, for keys that are tables.
    nested: BTreeMap<(String, String), Item<'i>>,
}

struct Ctx<'i> {
    file: Option<(&'i Path, &'i str)>,
    sections: BTreeMap<String, RawSection<'i>>,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl<'i> Ctx<'i> {
    fn add_file(&mut self, table: DeTable<'i>) {
        for (name, value) in table {
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            match value.into_inner() {
                DeValue::Table(entries) => {
                    let section = self.sections.entry(name).or_default();
                    section.header = Some(name_span);
                    for (key, value) in entries {
                        let item = Item {
                            value,
                            key_span: key.span(),
                            origin: Origin::File,
                        };
                        section.items.insert(key.into_inner().into_owned(), item);
                    }
                }
                _ if SECTIONS.contains(&name.as_str()) => {
                    let at = self.location(Origin::File, name_span);
                    self.problems
                        .push(format!("{at}: [{name}] must be a table (a section)"));
                }
                _ => {
                    let at = self.location(Origin::File, name_span);
                    self.warnings.push(format!(
                        "{at}: unknown top-level key {name:?} ignored (keys belong in a section such as [web])"
                    ));
                }
            }
        }
    }

    fn add_env(&mut self, env: &'i [(String, String)]) {
        for (var, raw) in env {
            let Some(name) = var.strip_prefix(ENV_PREFIX).filter(|_| is_config_env(var)) else {
                continue;
            };
            let parts: Vec<String> = name.split("__").map(str::to_ascii_lowercase).collect();
            // A TOML value if it is one, else the text as a string.
            let (value, raw) = match DeValue::parse(raw) {
                Ok(value) if matches!(value.get_ref(), DeValue::String(_)) => (value, None),
                Ok(value) => (value, Some(raw.as_str())),
                Err(_) => (
                    Spanned::new(0..raw.len(), DeValue::String(Cow::Borrowed(raw.as_str()))),
                    None,
                ),
            };
            let item = Item {
                key_span: value.span(),
                value,
                origin: Origin::Env { var, raw },
            };
            match <[String; 2]>::try_from(parts) {
                Ok([section, key]) => {
                    self.sections
                        .entry(section)
                        .or_default()
                        .items
                        .insert(key, item);
                }
                Err(parts) => match <[String; 3]>::try_from(parts) {
                    Ok([section, key, sub]) => {
                        self.sections
                            .entry(section)
                            .or_default()
                            .nested
                            .insert((key, sub), item);
                    }
                    Err(_) => self.warnings.push(format!(
                        "{var}: not a configuration key (variables are VETO_SECTION__KEY, such as VETO_WEB__LISTEN); ignored"
                    )),
                },
            }
        }
    }

    /// `veto.toml:3:10` for the file, the variable's name for the
    /// environment.
    fn location(&self, origin: Origin<'_>, span: Range<usize>) -> String {
        match (origin, self.file) {
            (Origin::Env { var, .. }, _) => var.to_owned(),
            (Origin::File, Some((path, text))) => {
                let (line, column) = line_column(text, span.start);
                format!("{}:{line}:{column}", path.display())
            }
            (Origin::File, None) => "(file)".to_owned(),
        }
    }

    fn section<'c>(&'c mut self, name: &'static str) -> SectionReader<'c, 'i> {
        let raw = self.sections.remove(name).unwrap_or_default();
        SectionReader {
            ctx: self,
            name,
            raw,
        }
    }

    fn read_config(&mut self, source: Option<PathBuf>) -> Config {
        // `Path::new("veto.toml").parent()` is `""`: the current directory.
        let file_dir = source.as_deref().and_then(Path::parent);
        let config = Config {
            store: read_store(&mut self.section("store"), file_dir),
            web: read_web(&mut self.section("web")),
            gateway: read_gateway(&mut self.section("gateway")),
            dkim: read_dkim(&mut self.section("dkim")),
            delivery: read_delivery(&mut self.section("delivery"), file_dir),
            organisation: read_organisation(&mut self.section("organisation")),
            policy: read_policy(&mut self.section("policy")),
            service: read_service(&mut self.section("service")),
            campaigns: read_campaigns(&mut self.section("campaigns")),
            retention: read_retention(&mut self.section("retention")),
            metrics: read_metrics(&mut self.section("metrics")),
            feedback: read_feedback(&mut self.section("feedback"), file_dir),
            webhooks: read_webhooks(&mut self.section("webhooks")),
            log: read_log(&mut self.section("log")),
            source,
        };
        self.warn_unknown_sections();
        self.check_across_sections(&config);
        config
    }

    fn warn_unknown_sections(&mut self) {
        for (name, section) in std::mem::take(&mut self.sections) {
            if let Some(header) = section.header {
                let at = self.location(Origin::File, header);
                self.warnings
                    .push(format!("{at}: unknown section [{name}] ignored"));
            }
            // The file's keys are covered by the section's warning.
            let items = section
                .items
                .into_values()
                .chain(section.nested.into_values());
            for item in items {
                if let Origin::Env { var, .. } = item.origin {
                    self.warnings
                        .push(format!("{var}: unknown section [{name}] ignored"));
                }
            }
        }
    }

    fn check_across_sections(&mut self, config: &Config) {
        if !self.problems.is_empty() {
            // A bad address was replaced by its default: no clash to report.
            return;
        }
        let listeners = [
            ("[web] listen", Some(config.web.listen)),
            ("[gateway] listen", Some(config.gateway.listen)),
            ("[gateway] inbound_listen", config.gateway.inbound_listen),
        ];
        for (i, (key, addr)) in listeners.iter().enumerate() {
            for (other_key, other) in &listeners[..i] {
                if let (Some(addr), Some(other)) = (addr, other)
                    && same_port(*addr, *other)
                {
                    self.problems.push(format!(
                        "{key}: {addr} clashes with {other_key} {other}; each listener needs its own port"
                    ));
                }
            }
        }
    }
}

/// Two listeners that cannot both bind (port 0 picks a free port).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
        + 1;
    (line, column)
}

/// Reads one section key by key; what is left over is unknown.
struct SectionReader<'c, 'i> {
    ctx: &'c mut Ctx<'i>,
    name: &'static str,
    raw: RawSection<'i>,
}

impl<'i> SectionReader<'_, 'i> {
    fn take(&mut self, key: &str) -> Option<Item<'i>> {
        self.raw.items.remove(key)
    }

    fn problem(&mut self, item: &Item<'_>, span: Option<Range<usize>>, path: &str, message: &str) {
        let at = self
            .ctx
            .location(item.origin, span.unwrap_or_else(|| item.value.span()));
        self.ctx.problems.push(format!("{at}: {path}: {message}"));
    }

    fn path(&self, key: &str) -> String {
        format!("[{}] {key}", self.name)
    }

    /// A string: a TOML string, or any environment value as its text.
    fn string_of(item: &Item<'_>) -> Result<String, String> {
        match (item.value.get_ref(), item.origin) {
            (DeValue::String(s), _) => Ok(s.to_string()),
            (_, Origin::Env { raw: Some(raw), .. }) => Ok(raw.to_owned()),
            (value, _) => Err(format!("expected a string, found {}", describe(value))),
        }
    }

    fn string(&mut self, key: &str, default: String) -> String {
        self.parsed(key, default, |s| Ok(s.to_owned()))
    }

    /// A string turned into `T` by `parse`, whose error message names the
    /// value and what was expected.
    fn parsed<T>(
        &mut self,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let Some(item) = self.take(key) else {
            return default;
        };
        match Self::string_of(&item).and_then(|s| parse(&s)) {
            Ok(value) => value,
            Err(message) => {
                self.problem(&item, None, &self.path(key), &message);
                default
            }
        }
    }

    /// Like [`Self::parsed`] for a [`Secret`]: no message quotes the value.
    fn secret(&mut self, key: &str, check: impl FnOnce(&str) -> Result<(), String>) -> Secret {
        let Some(item) = self.take(key) else {
            return Secret::default();
        };
        let value = match (item.value.get_ref(), item.origin) {
            (DeValue::String(s), _) => Ok(s.to_string()),
            (_, Origin::Env { raw: Some(raw), .. }) => Ok(raw.to_owned()),
            _ => Err("expected a string".to_owned()),
        };
        match value.and_then(|value| check(&value).map(|()| value)) {
            Ok(value) => Secret(value),
            Err(message) => {
                self.problem(&item, None, &self.path(key), &message);
                Secret::default()
            }
        }
    }

    /// A relative path is taken from the file's directory when it comes from
    /// the file (or is the default and there is a file), else from the
    /// current directory.
    fn dir(&mut self, key: &str, default: &str, file_dir: Option<&Path>) -> PathBuf {
        let (text, base) = match self.take(key) {
            None => (default.to_owned(), file_dir),
            Some(item) => {
                let base = match item.origin {
                    Origin::File => file_dir,
                    Origin::Env { .. } => None,
                };
                match Self::string_of(&item) {
                    Ok(text) if !text.is_empty() => (text, base),
                    Ok(_) => {
                        self.problem(&item, None, &self.path(key), "must not be empty");
                        (default.to_owned(), base)
                    }
                    Err(message) => {
                        self.problem(&item, None, &self.path(key), &message);
                        (default.to_owned(), base)
                    }
                }
            }
        };
        let path = match base {
            Some(base) => base.join(text),
            None => PathBuf::from(text),
        };
        std::path::absolute(&path).unwrap_or(path)
    }

    /// A file that must exist, or `""` for none; relative paths as in
    /// [`Self::dir`].
    fn optional_file(&mut self, key: &str, file_dir: Option<&Path>) -> Option<PathBuf> {
        let item = self.take(key)?;
        let text = match Self::string_of(&item) {
            Ok(text) => text,
            Err(message) => {
                self.problem(&item, None, &self.path(key), &message);
                return None;
            }
        };
        if text.is_empty() {
            return None;
        }
        let base = match item.origin {
            Origin::File => file_dir,
            Origin::Env { .. } => None,
        };
        let path = match base {
            Some(base) => base.join(&text),
            None => PathBuf::from(&text),
        };
        let path = std::path::absolute(&path).unwrap_or(path);
        if !path.is_file() {
            let message = format!("{} is not a file", path.display());
            self.problem(&item, None, &self.path(key), &message);
            return None;
        }
        Some(path)
    }

    /// A whole number checked by `check`, whose message says what is allowed.
    fn parsed_count(
        &mut self,
        key: &str,
        default: u64,
        check: impl FnOnce(u64) -> Result<u64, String>,
    ) -> u64 {
        let Some(item) = self.take(key) else {
            return default;
        };
        let value = match item.value.get_ref() {
            DeValue::Integer(_) => u64::deserialize(item.value.clone().into_deserializer()).ok(),
            _ => None,
        };
        let checked = match value {
            Some(n) => check(n),
            None => Err(format!(
                "expected a whole number, found {}",
                describe(item.value.get_ref())
            )),
        };
        match checked {
            Ok(n) => n,
            Err(message) => {
                self.problem(&item, None, &self.path(key), &message);
                default
            }
        }
    }

    fn boolean(&mut self, key: &str, default: bool) -> bool {
        let Some(item) = self.take(key) else {
            return default;
        };
        match item.value.get_ref() {
            DeValue::Boolean(b) => *b,
            value => {
                let message = format!("expected true or false, found {}", describe(value));
                self.problem(&item, None, &self.path(key), &message);
                default
            }
        }
    }

    fn count(&mut self, key: &str, default: u64) -> u64 {
        self.count_at_least(key, default, 0)
    }

    /// A whole number of `min` or more.
    fn count_at_least(&mut self, key: &str, default: u64, min: u64) -> u64 {
        let Some(item) = self.take(key) else {
            return default;
        };
        let value = match item.value.get_ref() {
            DeValue::Integer(_) => u64::deserialize(item.value.clone().into_deserializer()).ok(),
            _ => None,
        };
        value.filter(|n| *n >= min).unwrap_or_else(|| {
            let message = format!(
                "expected a whole number of {min} or more, found {}",
                describe(item.value.get_ref())
            );
            self.problem(&item, None, &self.path(key), &message);
            default
        })
    }

    /// An enum named by a string, read with serde.
    fn choice<T: DeserializeOwned>(&mut self, key: &str, default: T) -> T {
        let Some(item) = self.take(key) else {
            return default;
        };
        let mut result = T::deserialize(item.value.clone().into_deserializer());
        if let (Err(_), Origin::Env { raw: Some(raw), .. }) = (&result, item.origin) {
            result = T::deserialize(raw.into_deserializer());
        }
        match result {
            Ok(value) => value,
            Err(e) => {
                self.problem(&item, None, &self.path(key), e.message());
                default
            }
        }
    }

    /// An array of strings, each turned into `T` by `parse`. From the
    /// environment, `a,b` is accepted as well as `["a", "b"]`.
    fn list<T>(
        &mut self,
        key: &str,
        default: Vec<T>,
        if_empty: Option<&str>,
        mut parse: impl FnMut(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let Some(item) = self.take(key) else {
            return default;
        };
        let path = self.path(key);
        let mut out = Vec::new();
        let problems_before = self.ctx.problems.len();
        match (item.value.get_ref(), item.origin) {
            (DeValue::Array(elements), _) => {
                for element in elements.iter() {
                    let parsed = match element.get_ref() {
                        DeValue::String(s) => parse(s),
                        value => Err(format!("expected a string, found {}", describe(value))),
                    };
                    match parsed {
                        Ok(value) => out.push(value),
                        Err(message) => self.problem(&item, Some(element.span()), &path, &message),
                    }
                }
            }
            (DeValue::String(s), Origin::Env { .. }) => {
                for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match parse(part) {
                        Ok(value) => out.push(value),
                        Err(message) => self.problem(&item, None, &path, &message),
                    }
                }
            }
            (value, _) => {
                let message = format!(
                    "expected an array of strings like [\"a\", \"b\"], found {}",
                    describe(value)
                );
                self.problem(&item, None, &path, &message);
            }
        }
        if out.is_empty()
            && self.ctx.problems.len() == problems_before
            && let Some(message) = if_empty
        {
            self.problem(&item, None, &path, message);
        }
        out
    }

    /// A table of strings, e.g. `[service.types]`, each entry checked by
    /// `check(key, value)`. `VETO_SECTION__KEY__ENTRY` sets one entry.
    fn string_table(
        &mut self,
        key: &str,
        mut check: impl FnMut(&str, &str) -> Result<String, String>,
    ) -> BTreeMap<String, String> {
        let mut entries: BTreeMap<String, Item<'i>> = BTreeMap::new();
        if let Some(item) = self.take(key) {
            match item.value.get_ref() {
                DeValue::Table(table) => {
                    let origin = match item.origin {
                        Origin::Env { var, .. } => Origin::Env { var, raw: None },
                        Origin::File => Origin::File,
                    };
                    for (name, value) in table.iter() {
                        let entry = Item {
                            value: value.clone(),
                            key_span: name.span(),
                            origin,
                        };
                        entries.insert(name.get_ref().to_string(), entry);
                    }
                }
                value => {
                    let message = format!(
                        "expected a table like [{}.{key}] with entries name = \"description\", found {}",
                        self.name,
                        describe(value)
                    );
                    self.problem(&item, None, &self.path(key), &message);
                }
            }
        }
        for ((k, sub), item) in std::mem::take(&mut self.raw.nested) {
            if k == key {
                entries.insert(sub, item);
            } else {
                self.raw.nested.insert((k, sub), item);
            }
        }

        let mut out = BTreeMap::new();
        for (name, item) in entries {
            let path = format!("[{}.{key}] {name}", self.name);
            match Self::string_of(&item).and_then(|value| check(&name, &value)) {
                Ok(value) => {
                    out.insert(name, value);
                }
                Err(message) => self.problem(&item, None, &path, &message),
            }
        }
        out
    }

    /// A file's path; empty or absent is `None`. A relative path is taken
    /// from the configuration file's directory when it is written there,
    /// else from the current directory.
    fn file_path(&mut self, key: &str) -> Option<PathBuf> {
        let item = self.take(key)?;
        let text = match Self::string_of(&item) {
            Ok(text) => text,
            Err(message) => {
                self.problem(&item, None, &self.path(key), &message);
                return None;
            }
        };
        if text.trim().is_empty() {
            return None;
        }
        let base = match (item.origin, self.ctx.file) {
            (Origin::File, Some((file, _))) => file.parent(),
            _ => None,
        };
        let path = match base {
            Some(base) => base.join(&text),
            None => PathBuf::from(&text),
        };
        Some(std::path::absolute(&path).unwrap_or(path))
    }

    /// A whole number in `min..=max`.
    fn count_between(&mut self, key: &str, default: usize, min: usize, max: usize) -> usize {
        let Some(item) = self.take(key) else {
            return default;
        };
        let value = match item.value.get_ref() {
            DeValue::Integer(_) => usize::deserialize(item.value.clone().into_deserializer()).ok(),
            _ => None,
        };
        match value {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                let message = format!(
                    "expected a whole number from {min} to {max}, found {}",
                    describe(item.value.get_ref())
                );
                self.problem(&item, None, &self.path(key), &message);
                default
            }
        }
    }

    /// A table inside this section read as a section of its own, e.g.
    /// `[feedback.ses]` (from the file, or `VETO_FEEDBACK__SES__KEY`).
    fn subsection(&mut self, key: &str, name: &'static str) -> SectionReader<'_, 'i> {
        let mut raw = RawSection::default();
        if let Some(item) = self.take(key) {
            match item.value.get_ref() {
                DeValue::Table(table) => {
                    raw.header = Some(item.key_span.clone());
                    let origin = match item.origin {
                        Origin::Env { var, .. } => Origin::Env { var, raw: None },
                        Origin::File => Origin::File,
                    };
                    for (k, value) in table.iter() {
                        let entry = Item {
                            value: value.clone(),
                            key_span: k.span(),
                            origin,
                        };
                        raw.items.insert(k.get_ref().to_string(), entry);
                    }
                }
                value => {
                    let message = format!("expected a table [{name}], found {}", describe(value));
                    self.problem(&item, None, &format!("[{name}]"), &message);
                }
            }
        }
        for ((k, sub), item) in std::mem::take(&mut self.raw.nested) {
            if k == key {
                raw.items.insert(sub, item);
            } else {
                self.raw.nested.insert((k, sub), item);
            }
        }
        SectionReader {
            ctx: &mut *self.ctx,
            name,
            raw,
        }
    }

    /// A problem of the section as a whole (keys that go together).
    fn section_problem(&mut self, message: String) {
        self.ctx.problems.push(message);
    }

    /// Warns about every key nobody asked for.
    fn finish(&mut self) {
        let name = self.name;
        for (key, item) in std::mem::take(&mut self.raw.items) {
            let at = self.ctx.location(item.origin, item.key_span);
            self.ctx
                .warnings
                .push(format!("{at}: unknown key [{name}] {key} ignored"));
        }
        for ((key, sub), item) in std::mem::take(&mut self.raw.nested) {
            let at = self.ctx.location(item.origin, item.key_span);
            self.ctx
                .warnings
                .push(format!("{at}: unknown key [{name}] {key}.{sub} ignored"));
        }
    }
}

/// How a value is named in messages.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the number {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------

fn read_store(s: &mut SectionReader<'_, '_>, file_dir: Option<&Path>) -> StoreConfig {
    let config = StoreConfig {
        url: s.secret("url", check_store_url),
        data_dir: s.dir("data_dir", "veto-data", file_dir),
    };
    s.finish();
    config
}

fn read_web(s: &mut SectionReader<'_, '_>) -> WebConfig {
    let d = WebConfig::default();
    let config = WebConfig {
        listen: s.parsed("listen", d.listen, parse_socket_addr),
        public_url: s.parsed("public_url", d.public_url, |v| {
            parse_http_url(v, false).map(|url| url.trim_end_matches('/').to_owned())
        }),
        trusted_proxies: s.list("trusted_proxies", d.trusted_proxies, None, IpCidr::parse),
    };
    s.finish();
    config
}

fn read_gateway(s: &mut SectionReader<'_, '_>) -> GatewayConfig {
    let d = GatewayConfig::default();
    let config = GatewayConfig {
        listen: s.parsed("listen", d.listen, parse_socket_addr),
        inbound_listen: s.parsed("inbound_listen", d.inbound_listen, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                parse_socket_addr(v).map(Some)
            }
        }),
        trusted_networks: s.list("trusted_networks", d.trusted_networks, None, IpCidr::parse),
        trusted_default_topic: s.parsed("trusted_default_topic", d.trusted_default_topic, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                veto_core::TopicKey::parse(v)
                    .map(Some)
                    .map_err(|e| format!("topic {e}"))
            }
        }),
        discard_refused: s.parsed("refused_recipients", d.discard_refused, |v| match v {
            "reject" => Ok(false),
            "discard" => Ok(true),
            other => Err(format!(
                "{other:?} is not a choice: \"reject\" (550 at RCPT, the default) or \"discard\" (250, and nothing is sent)"
            )),
        }),
        soft_bounce_threshold: s.count_at_least(
            "soft_bounce_threshold",
            d.soft_bounce_threshold,
            1,
        ),
        soft_bounce_window: s.parsed("soft_bounce_window", d.soft_bounce_window, parse_window),
        tls_cert_file: s.file_path("tls_cert_file"),
        tls_key_file: s.file_path("tls_key_file"),
        max_connections: s.count_between("max_connections", d.max_connections, 1, 1_000_000),
        max_connections_per_client: s.count_between(
            "max_connections_per_client",
            d.max_connections_per_client,
            1,
            1_000_000,
        ),
        max_message_size: s.count_between(
            "max_message_size",
            d.max_message_size,
            MIN_MESSAGE_SIZE,
            veto_mail::rewrite::MAX_MESSAGE_SIZE,
        ),
        // RFC 5321 §4.5.3.1.8 asks for at least 100; fewer is the
        // administrator's choice (the client is told 452 and retries).
        max_recipients: s.count_between("max_recipients", d.max_recipients, 1, 100_000),
    };
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(_), None) => s.section_problem(
            "[gateway] tls_key_file: must be set when [gateway] tls_cert_file is (or leave both empty for a self-signed certificate)".to_owned(),
        ),
        (None, Some(_)) => s.section_problem(
            "[gateway] tls_cert_file: must be set when [gateway] tls_key_file is (or leave both empty for a self-signed certificate)".to_owned(),
        ),
        _ => {}
    }
    s.finish();
    config
}

/// The smallest `[gateway] max_message_size`: room for the headers and
/// footer of a short message.
const MIN_MESSAGE_SIZE: usize = 10 * 1024;

fn read_dkim(s: &mut SectionReader<'_, '_>) -> DkimConfig {
    let optional = |v: &str, parse: fn(&str) -> Result<String, String>| {
        if v.is_empty() {
            Ok(None)
        } else {
            parse(v).map(Some)
        }
    };
    let problems_before = s.ctx.problems.len();
    let config = DkimConfig {
        domain: s.parsed("domain", None, |v| optional(v, parse_domain)),
        selector: s.parsed("selector", None, |v| optional(v, parse_selector)),
        private_key_file: s.file_path("private_key_file"),
        ed25519_selector: s.parsed("ed25519_selector", None, |v| optional(v, parse_selector)),
        ed25519_private_key_file: s.file_path("ed25519_private_key_file"),
    };
    if s.ctx.problems.len() > problems_before {
        // A bad value was dropped: what it lacks would only repeat it.
        s.finish();
        return config;
    }
    let pairs = [
        (
            "selector",
            config.selector.is_some(),
            "private_key_file",
            config.private_key_file.is_some(),
        ),
        (
            "ed25519_selector",
            config.ed25519_selector.is_some(),
            "ed25519_private_key_file",
            config.ed25519_private_key_file.is_some(),
        ),
    ];
    for (a, a_set, b, b_set) in pairs {
        if a_set != b_set {
            let (missing, given) = if a_set { (b, a) } else { (a, b) };
            s.section_problem(format!(
                "[dkim] {missing}: must be set when [dkim] {given} is"
            ));
        }
    }
    if config.ed25519_selector.is_some() && config.selector.is_none() {
        s.section_problem(
            "[dkim] ed25519_selector: an Ed25519 signature is the second one; not every receiver checks \
             Ed25519, so set [dkim] selector and private_key_file (an RSA key) too"
                .to_owned(),
        );
    }
    if let (Some(a), Some(b)) = (&config.selector, &config.ed25519_selector)
        && a == b
    {
        s.section_problem(format!(
            "[dkim] ed25519_selector: {b:?} is also [dkim] selector; each key needs its own selector (its own DNS record)"
        ));
    }
    s.finish();
    config
}

fn read_delivery(s: &mut SectionReader<'_, '_>, file_dir: Option<&Path>) -> DeliveryConfig {
    let d = DeliveryConfig::default();
    let config = DeliveryConfig {
        upstream: s.parsed("upstream", d.upstream, parse_upstream),
        tls: s.choice("tls", d.tls),
        ca_file: s.optional_file("ca_file", file_dir),
        username: s.parsed("username", d.username, |v| {
            if v.is_empty() {
                Ok(None)
            } else if v.chars().any(char::is_control) {
                Err("must not hold control characters".to_owned())
            } else {
                Ok(Some(v.to_owned()))
            }
        }),
        password: s.secret("password", |_| Ok(())),
        pool_size: s.parsed_count("pool_size", d.pool_size, |n| {
            if (1..=1000).contains(&n) {
                Ok(n)
            } else {
                Err(format!("must be from 1 to 1000 connections, not {n}"))
            }
        }),
        connect_timeout: s.parsed("connect_timeout", d.connect_timeout, parse_window),
        timeout: s.parsed("timeout", d.timeout, parse_window),
        idle_timeout: s.parsed("idle_timeout", d.idle_timeout, parse_window),
    };
    match (&config.username, config.password.is_empty()) {
        (Some(_), true) => s.ctx.problems.push(
            "[delivery] password: is empty, but [delivery] username is set; AUTH needs both"
                .to_owned(),
        ),
        (None, false) => s.ctx.problems.push(
            "[delivery] username: is empty, but [delivery] password is set; AUTH needs both"
                .to_owned(),
        ),
        (Some(_), false) if config.tls == DeliveryTls::None => s.ctx.problems.push(
            "[delivery] tls: is \"none\", which would send [delivery] password in clear text; use \"starttls\"".to_owned(),
        ),
        _ => {}
    }
    s.finish();
    config
}

fn read_organisation(s: &mut SectionReader<'_, '_>) -> OrganisationConfig {
    let d = OrganisationConfig::default();
    let config = OrganisationConfig {
        name: s.parsed("name", d.name, |v| non_empty(v.trim())),
        postal_address: s.string("postal_address", d.postal_address),
        privacy_url: s.parsed("privacy_url", d.privacy_url, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                parse_http_url(v, true).map(|url| Some(url.to_owned()))
            }
        }),
        domain: s.parsed("domain", d.domain, parse_domain),
    };
    s.finish();
    config
}

fn read_policy(s: &mut SectionReader<'_, '_>) -> PolicyConfig {
    let d = PolicyConfig::default();
    let mut jurisdictions = Vec::new();
    let listed = s.list(
        "default_jurisdictions",
        d.default_jurisdictions.clone(),
        Some("must name at least one of UK, EU, US, CA"),
        parse_jurisdiction,
    );
    for j in listed {
        if !jurisdictions.contains(&j) {
            jurisdictions.push(j);
        }
    }
    let config = PolicyConfig {
        default_jurisdictions: jurisdictions,
        purchase_after_opt_out: s.choice("purchase_after_opt_out", d.purchase_after_opt_out),
        charity: s.boolean("charity", d.charity),
    };
    s.finish();
    config
}

fn read_service(s: &mut SectionReader<'_, '_>) -> ServiceConfig {
    let d = ServiceConfig::default();
    let config = ServiceConfig {
        bulk_threshold: s.count("bulk_threshold", d.bulk_threshold),
        bulk_window: s.parsed("bulk_window", d.bulk_window, parse_window),
        types: s.string_table("types", check_service_type),
    };
    s.finish();
    config
}

fn read_campaigns(s: &mut SectionReader<'_, '_>) -> CampaignsConfig {
    let d = CampaignsConfig::default();
    let config = CampaignsConfig {
        chunk: s.count_between("chunk", d.chunk, 1, 256),
        claim: s.count_between("claim", d.claim, 1, 10_000),
        lease: s.parsed("lease", d.lease, parse_window),
        complaint_brake_ppm: s.parsed("complaint_brake", d.complaint_brake_ppm, parse_percent),
        bounce_brake_ppm: s.parsed("bounce_brake", d.bounce_brake_ppm, parse_percent),
        brake_min_sample: s.count_at_least("brake_min_sample", d.brake_min_sample, 1),
        daily_cap_per_topic: s.count("daily_cap_per_topic", d.daily_cap_per_topic),
        daily_cap_per_key: s.count("daily_cap_per_key", d.daily_cap_per_key),
    };
    s.finish();
    config
}

fn read_feedback(s: &mut SectionReader<'_, '_>, file_dir: Option<&Path>) -> FeedbackConfig {
    let config = FeedbackConfig {
        ses: read_ses_hook(&mut s.subsection("ses", "feedback.ses"), file_dir),
        sendgrid: read_sendgrid_hook(&mut s.subsection("sendgrid", "feedback.sendgrid")),
        postmark: read_postmark_hook(&mut s.subsection("postmark", "feedback.postmark")),
    };
    s.finish();
    config
}

fn read_ses_hook(s: &mut SectionReader<'_, '_>, file_dir: Option<&Path>) -> SesHookConfig {
    let d = SesHookConfig::default();
    let config = SesHookConfig {
        enabled: s.boolean("enabled", d.enabled),
        topic_arns: s.list("topic_arns", d.topic_arns, None, parse_topic_arn),
        certificate_hosts: s.list(
            "certificate_hosts",
            d.certificate_hosts,
            Some("must name at least one host (the default is [\"sns.*.amazonaws.com\"])"),
            |v| veto_web::webhooks::CertificateHost::parse(v).map(|_| v.trim().to_owned()),
        ),
        ca_file: s.optional_file("ca_file", file_dir),
        timeout: s.parsed("timeout", d.timeout, parse_window),
    };
    if config.enabled && config.topic_arns.is_empty() {
        s.section_problem(
            "[feedback.ses] topic_arns: must name your SNS topic(s) when enabled (anyone can publish through SNS; only your topics are taken)".to_owned(),
        );
    }
    s.finish();
    config
}

/// `arn:aws:sns:REGION:ACCOUNT:NAME` (any partition).
fn parse_topic_arn(v: &str) -> Result<String, String> {
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sns"
        && parts[3..].iter().all(|p| !p.is_empty())
    {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{v:?} is not an SNS topic ARN like \"arn:aws:sns:eu-west-1:123456789012:ses-feedback\""
        ))
    }
}

fn read_sendgrid_hook(s: &mut SectionReader<'_, '_>) -> SendGridHookConfig {
    let d = SendGridHookConfig::default();
    let config = SendGridHookConfig {
        enabled: s.boolean("enabled", d.enabled),
        public_key: s.parsed("public_key", d.public_key, |v| {
            if v.trim().is_empty() {
                return Ok(String::new());
            }
            veto_web::webhooks::SendGridSettings::new(v, Duration::from_secs(1))
                .map(|_| v.trim().to_owned())
                .map_err(|e| e.to_string())
        }),
        max_age: s.parsed("max_age", d.max_age, parse_window),
    };
    if config.enabled && config.public_key.is_empty() {
        s.section_problem(
            "[feedback.sendgrid] public_key: must be set when enabled (the verification key of SendGrid's signed event webhook)".to_owned(),
        );
    }
    s.finish();
    config
}

fn read_postmark_hook(s: &mut SectionReader<'_, '_>) -> PostmarkHookConfig {
    let d = PostmarkHookConfig::default();
    let config = PostmarkHookConfig {
        enabled: s.boolean("enabled", d.enabled),
        username: s.parsed("username", d.username, |v| {
            if v.contains(':') || v.chars().any(char::is_control) {
                Err("must not contain ':' or control characters (HTTP Basic)".to_owned())
            } else {
                Ok(v.to_owned())
            }
        }),
        password: s.secret("password", |_| Ok(())),
    };
    if config.enabled && (config.username.is_empty() || config.password.is_empty()) {
        s.section_problem(
            "[feedback.postmark] username, password: both must be set when enabled (Postmark sends them as HTTP Basic credentials; set the password with VETO_FEEDBACK__POSTMARK__PASSWORD)".to_owned(),
        );
    }
    s.finish();
    config
}

/// `"0.1%"` as parts per million (more than 0, at most 100%).
fn parse_percent(v: &str) -> Result<u32, String> {
    let bad = || format!("{v:?} is not a percentage like \"0.1%\" (more than 0, at most 100%)");
    let n: f64 = v
        .trim()
        .strip_suffix('%')
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if !(n > 0.0 && n <= 100.0) {
        return Err(bad());
    }
    Ok((n * 10_000.0).round() as u32)
}

fn read_retention(s: &mut SectionReader<'_, '_>) -> RetentionConfig {
    const DAY: u64 = 86_400;
    let d = RetentionConfig::default();
    let config = RetentionConfig {
        receipts: s.parsed("receipts", d.receipts, |v| {
            let keep = parse_keep(v)?;
            if keep.is_some_and(|k| k < Duration::from_secs(31 * DAY)) {
                return Err(format!(
                    "{v:?} is too short: frequency limits count the sends of the last 31 days from receipts; use \"31 days\" or more, or \"forever\""
                ));
            }
            Ok(keep)
        }),
        evidence: s.parsed("evidence", d.evidence, parse_keep),
        relay_records: s.parsed("relay_records", d.relay_records, |v| {
            let keep = parse_window(v)?;
            if keep < Duration::from_secs(DAY) || keep > veto_store::receipt_log::RELAY_MEMORY {
                return Err(format!(
                    "{v:?} is out of range: between \"1 day\" and \"7 days\" (the gateway looks back 7 days when a tool retries)"
                ));
            }
            Ok(keep)
        }),
    };
    s.finish();
    config
}

/// `"forever"` (`None`), or a duration like `"400 days"` or `"104 weeks"`.
fn parse_keep(v: &str) -> Result<Option<Duration>, String> {
    if v.trim().eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    parse_window(v)
        .map(Some)
        .map_err(|e| format!("{e}, or \"forever\""))
}

fn read_metrics(s: &mut SectionReader<'_, '_>) -> MetricsConfig {
    let d = MetricsConfig::default();
    let config = MetricsConfig {
        allowed_networks: s.list("allowed_networks", d.allowed_networks, None, IpCidr::parse),
        bearer_token: s.secret("bearer_token", |v| {
            if !v.is_empty() && v.chars().count() < 16 {
                Err("must be empty (no token) or at least 16 characters long".to_owned())
            } else if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err("must not contain spaces or control characters".to_owned())
            } else {
                Ok(())
            }
        }),
    };
    s.finish();
    config
}

fn read_webhooks(s: &mut SectionReader<'_, '_>) -> WebhooksConfig {
    let d = WebhooksConfig::default();
    let config = WebhooksConfig {
        endpoints: read_webhook_endpoints(s),
        timeout: s.parsed("timeout", d.timeout, parse_window),
        backoff_base: s.parsed("backoff_base", d.backoff_base, parse_window),
        backoff_max: s.parsed("backoff_max", d.backoff_max, parse_window),
        give_up_after: s.parsed("give_up_after", d.give_up_after, parse_window),
        retention: s.parsed("retention", d.retention, parse_window),
    };
    if config.backoff_max < config.backoff_base {
        s.section_problem(
            "[webhooks] backoff_max: must be at least [webhooks] backoff_base".to_owned(),
        );
    }
    s.finish();
    config
}

/// Shortest `[[webhooks.endpoints]] secret`: 16 characters.
const MIN_WEBHOOK_SECRET: usize = 16;

/// `[[webhooks.endpoints]]`: an array of tables, each with name, url and
/// secret, and optionally events. From the environment,
/// `VETO_WEBHOOKS__ENDPOINTS='[{name = "crm", url = "…", secret = "…"}]'`.
fn read_webhook_endpoints(s: &mut SectionReader<'_, '_>) -> Vec<WebhookEndpointConfig> {
    let Some(item) = s.take("endpoints") else {
        return Vec::new();
    };
    let DeValue::Array(elements) = item.value.get_ref() else {
        let message = format!(
            "expected [[webhooks.endpoints]] tables with name, url and secret, found {}",
            describe(item.value.get_ref())
        );
        s.problem(&item, None, "[webhooks] endpoints", &message);
        return Vec::new();
    };
    let mut out: Vec<WebhookEndpointConfig> = Vec::new();
    for (i, element) in elements.iter().enumerate() {
        let path = format!("[[webhooks.endpoints]] #{}", i + 1);
        let DeValue::Table(table) = element.get_ref() else {
            let message = format!(
                "expected a table with name, url and secret, found {}",
                describe(element.get_ref())
            );
            s.problem(&item, Some(element.span()), &path, &message);
            continue;
        };
        let (mut name, mut url, mut secret, mut events) = (None, None, None, None);
        let mut bad = false;
        // In the order written, so that problems read top to bottom.
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for (key, value) in entries {
            let key_name = key.get_ref().as_ref();
            let at = Some(value.span());
            let text = match value.get_ref() {
                DeValue::String(v) => Ok(v.to_string()),
                other => Err(format!("expected a string, found {}", describe(other))),
            };
            let checked: Result<(), String> = match key_name {
                "name" => text.and_then(|v| check_endpoint_name(&v).map(|()| name = Some(v))),
                "url" => {
                    text.and_then(|v| parse_http_url(&v, true).map(|_| ()).map(|()| url = Some(v)))
                }
                // No message quotes a secret.
                "secret" => match text {
                    Ok(v) if v.chars().count() >= MIN_WEBHOOK_SECRET => {
                        secret = Some(Secret(v));
                        Ok(())
                    }
                    Ok(_) => Err(format!(
                        "must be at least {MIN_WEBHOOK_SECRET} characters (the receiver's shared HMAC key; e.g. `openssl rand -hex 32`)"
                    )),
                    Err(_) => Err("expected a string".to_owned()),
                },
                "events" => parse_webhook_events(value.get_ref()).map(|list| events = Some(list)),
                other => {
                    let location = s.ctx.location(item.origin, key.span());
                    s.ctx.warnings.push(format!(
                        "{location}: unknown key {other:?} in {path} ignored (it takes name, url, secret and events)"
                    ));
                    Ok(())
                }
            };
            if let Err(message) = checked {
                bad = true;
                s.problem(&item, at, &format!("{path} {key_name}"), &message);
            }
        }
        if bad {
            continue;
        }
        let missing: Vec<&str> = [
            ("name", name.is_none()),
            ("url", url.is_none()),
            ("secret", secret.is_none()),
        ]
        .into_iter()
        .filter_map(|(k, absent)| absent.then_some(k))
        .collect();
        let (Some(name), Some(url), Some(secret)) = (name, url, secret) else {
            let message = format!("{} must be set", missing.join(", "));
            s.problem(&item, Some(element.span()), &path, &message);
            continue;
        };
        if out.iter().any(|e| e.name == name) {
            let message =
                format!("the name {name:?} is used by an earlier endpoint; each needs its own");
            s.problem(
                &item,
                Some(element.span()),
                &format!("{path} name"),
                &message,
            );
            continue;
        }
        out.push(WebhookEndpointConfig {
            name,
            url,
            secret,
            events: events.unwrap_or_else(|| {
                veto_store::DEFAULT_WEBHOOK_EVENTS
                    .iter()
                    .map(|e| (*e).to_owned())
                    .collect()
            }),
        });
    }
    out
}

fn check_endpoint_name(v: &str) -> Result<(), String> {
    let mut bytes = v.bytes();
    let ok = v.len() <= 40
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not an endpoint name: lower-case letters, digits, _ and -, starting with a letter or digit, at most 40"
        ))
    }
}

fn parse_webhook_events(value: &DeValue<'_>) -> Result<Vec<String>, String> {
    let known = veto_store::WEBHOOK_EVENT_KINDS.join(", ");
    let DeValue::Array(elements) = value else {
        return Err(format!(
            "expected an array of event kinds like [\"withdraw\", \"erasure\"], found {}",
            describe(value)
        ));
    };
    let mut out: Vec<String> = Vec::new();
    for element in elements.iter() {
        match element.get_ref() {
            DeValue::String(kind) if veto_store::WEBHOOK_EVENT_KINDS.contains(&kind.as_ref()) => {
                if !out.iter().any(|k| k == kind.as_ref()) {
                    out.push(kind.to_string());
                }
            }
            DeValue::String(kind) => {
                return Err(format!("{kind:?} is not an event kind; use {known}"));
            }
            other => return Err(format!("expected a string, found {}", describe(other))),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "must name at least one event kind ({known}); leave it out for the default"
        ));
    }
    Ok(out)
}

fn read_log(s: &mut SectionReader<'_, '_>) -> LogConfig {
    let d = LogConfig::default();
    let config = LogConfig {
        format: s.choice("format", d.format),
        level: s.parsed("level", d.level, parse_log_level),
    };
    s.finish();
    config
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

fn non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(v.to_owned())
    }
}

fn parse_socket_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not a socket address like 127.0.0.1:8080 or [::1]:8080"))
}

/// Checks without quoting: the URL may hold a password.
fn check_store_url(v: &str) -> Result<(), String> {
    let scheme = v
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        _ if v.is_empty() => Ok(()),
        Some("postgres" | "postgresql") if v.len() > "postgres://".len() => Ok(()),
        _ => Err(
            "must be empty (SQLite in data_dir) or a PostgreSQL URL like postgres://user:password@host/database"
                .to_owned(),
        ),
    }
}

/// An absolute http(s) URL; without query or fragment unless `allow_query`.
fn parse_http_url(v: &str, allow_query: bool) -> Result<&str, String> {
    let shown = quote_url(v);
    let bad =
        |why: &str| format!("{shown} is not an absolute http(s) URL like https://example.org{why}");
    let Some((scheme, rest)) = v.split_once("://") else {
        return Err(bad(""));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad(""));
    }
    if !v.is_ascii()
        || v.chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(bad(
            " (ASCII without spaces: use the xn-- form of the domain and %-escapes)",
        ));
    }
    if !allow_query && (v.contains('?') || v.contains('#')) {
        return Err(bad(" (without ?query or #fragment)"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad(" (without user@)"));
    }
    parse_host_port(authority).map_err(|_| bad(""))?;
    Ok(v)
}

/// `host` or `host:port`, host being a domain name, IPv4 or `[IPv6]`.
fn parse_host_port(authority: &str) -> Result<(String, Option<u16>), ()> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(())?;
        v6.parse::<Ipv6Addr>().map_err(|_| ())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(())?),
        };
        (format!("[{v6}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.parse::<Ipv4Addr>().is_err() && !is_domain(host) {
            return Err(());
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| ())?)
        }
        Some(_) => return Err(()),
    };
    Ok((host, port))
}

/// A DNS name in ASCII (A-label) form: `example.org`, `mail.example.org`.
fn is_domain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(crate) fn parse_domain(v: &str) -> Result<String, String> {
    if is_domain(v) && v.parse::<Ipv4Addr>().is_err() {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(format!(
            "{v:?} is not a domain name like example.org (for non-ASCII names use the xn-- form)"
        ))
    }
}

/// A DKIM selector: one or more DNS labels (RFC 6376 §3.1), lower-cased.
pub(crate) fn parse_selector(v: &str) -> Result<String, String> {
    if is_domain(v) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(format!(
            "{v:?} is not a DKIM selector: letters, digits and hyphens, like veto or s2025 (dots may separate labels)"
        ))
    }
}

fn parse_upstream(v: &str) -> Result<Upstream, String> {
    if v == "maildir" {
        return Ok(Upstream::Maildir);
    }
    let shown = quote_url(v);
    let scheme_len = "smtp://".len();
    let rest = match v.get(..scheme_len) {
        Some(scheme) if scheme.eq_ignore_ascii_case("smtp://") => &v[scheme_len..],
        _ => {
            return Err(format!(
                "{shown} is neither \"maildir\" nor an SMTP relay like smtp://mail.example.org:25"
            ));
        }
    };
    if rest.contains('@') {
        // Do not quote: this may be a password.
        return Err("user names and passwords in the relay URL are not supported".to_owned());
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    match parse_host_port(authority) {
        Ok((host, Some(port))) if port != 0 => Ok(Upstream::Smtp { host, port }),
        Ok((host, None)) => Ok(Upstream::Smtp { host, port: 25 }),
        _ => Err(format!(
            "{shown} is not an SMTP relay like smtp://mail.example.org:25 (host and port only)"
        )),
    }
}

/// A URL for a message, unless it may carry `user:password@`.
fn quote_url(v: &str) -> String {
    if v.contains('@') {
        "the value (not shown: it may hold a password)".to_owned()
    } else {
        format!("{v:?}")
    }
}

fn parse_jurisdiction(v: &str) -> Result<String, String> {
    let upper = v.trim().to_ascii_uppercase();
    match upper.as_str() {
        "UK" | "EU" | "US" | "CA" => Ok(upper),
        _ => Err(format!(
            "{v:?} is not a jurisdiction veto knows; use UK, EU, US or CA"
        )),
    }
}

/// "24h", "1 day", "PT24H": any span without months or years, longer than
/// zero.
fn parse_window(v: &str) -> Result<Duration, String> {
    let span: jiff::Span = v
        .parse()
        .map_err(|_| format!("{v:?} is not a duration like \"24h\", \"1 day\" or \"PT24H\""))?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| {
            format!(
                "{v:?} counts months or years, which vary in length; use weeks or smaller units"
            )
        })?;
    if !duration.is_positive() {
        return Err(format!("must be longer than zero, not {v:?}"));
    }
    Duration::try_from(duration).map_err(|_| format!("{v:?} is out of range"))
}

fn check_service_type(key: &str, description: &str) -> Result<String, String> {
    let mut bytes = key.bytes();
    let key_ok = key.len() <= 40
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !key_ok {
        return Err(format!(
            "{key:?} is not a service type name: lower-case letters, digits, _ and -, starting with a letter or digit, at most 40"
        ));
    }
    let description = description.trim();
    if description.is_empty() {
        return Err("needs a one-line description, shown to customers".to_owned());
    }
    if description.contains(['\n', '\r']) {
        return Err("the description must be one line".to_owned());
    }
    Ok(description.to_owned())
}

/// A level, or `tracing_subscriber::EnvFilter` directives such as
/// "info,veto=debug". A bare word must be a level: EnvFilter would take
/// "verbose" as a target name and log nothing useful.
fn parse_log_level(v: &str) -> Result<String, String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let bad = || {
        format!(
            "{v:?} is not a log level (off, error, warn, info, debug, trace) or filter like \"info,veto=debug\""
        )
    };
    let v = v.trim();
    if v.is_empty() {
        return Err(bad());
    }
    for directive in v.split(',') {
        let bare = !directive.contains(['=', '[']);
        if bare
            && !LEVELS
                .iter()
                .any(|l| l.eq_ignore_ascii_case(directive.trim()))
        {
            return Err(bad());
        }
    }
    tracing_subscriber::EnvFilter::try_new(v).map_err(|_| bad())?;
    Ok(v.to_owned())
}

// ---------------------------------------------------------------------------
// `veto init`
// ---------------------------------------------------------------------------

/// The configuration file `veto init` writes: every key with its default
/// and what it does.
pub fn commented_default_toml() -> String {
    COMMENTED_DEFAULT.to_owned()
}

const COMMENTED_DEFAULT: &str = r#"# veto configuration. Every key is shown with its default value.
# Any key can also be set by an environment variable VETO_SECTION__KEY, which
# wins over this file: VETO_WEB__LISTEN=0.0.0.0:8080,
# VETO_POLICY__DEFAULT_JURISDICTIONS='["UK"]', VETO_SERVICE__TYPES__BILLING="Bills".

[store]
# Database: empty = SQLite (veto.db in data_dir); postgres://user:password@host/db to share one between nodes.
url = ""
# Directory for veto's data; a relative path is taken from this file's directory.
data_dir = "veto-data"

[web]
# Address the web server (preference centre, unsubscribe, admin API) listens on.
listen = "127.0.0.1:8080"
# How customers reach the web server: the base of unsubscribe and preference links in mail.
public_url = "http://127.0.0.1:8080"
# Reverse proxies (IP addresses or networks like "10.0.0.0/8") whose forwarded client address is believed.
trusted_proxies = []

[gateway]
# Address of the SMTP submission server that your existing mail tools send through.
listen = "127.0.0.1:2525"
# Address of the SMTP listener for mail to veto's own addresses (unsubscribe+…@, bounces+…@); empty = off.
# It takes mail from anyone, for [organisation] domain only, and never relays; e.g. "127.0.0.1:2526" behind your MX.
inbound_listen = ""
# Soft bounces (delays, temporary failures) of one address within soft_bounce_window that count as a hard bounce.
soft_bounce_threshold = 5
# The window for soft_bounce_threshold, like "30 days" or "720h".
soft_bounce_window = "30 days"
# Networks whose tools may submit without SMTP AUTH (consent is still checked for every recipient).
trusted_networks = ["127.0.0.1/32"]
# Topic key of mail from those networks; empty = none, so each message needs AUTH or a Veto-Topic header.
trusted_default_topic = ""
# What a recipient who has not agreed is told at RCPT: "reject" (550 5.7.1 with the reason) or
# "discard" (250, and nothing is sent: for tools that abandon a whole send at the first 5xx). Receipted either way.
refused_recipients = "reject"
# STARTTLS certificate (PEM, the chain with the server's certificate first) and its private key (PEM).
# Both empty = a self-signed certificate for [organisation] domain, made once in data_dir/tls/.
# Clients other than on this machine may send AUTH only after STARTTLS.
tls_cert_file = ""
tls_key_file = ""
# SMTP sessions at once, in all and from one IP address; more are told "421 4.7.0 Too many connections".
max_connections = 1000
max_connections_per_client = 50
# Largest message accepted, in bytes (at most 33554432).
max_message_size = 33554432
# Recipients per message (RFC 5321 asks servers to take at least 100).
max_recipients = 100

[dkim]
# DKIM signature on every copy the gateway relays. Make a key and its DNS record with
# `veto dkim keygen --selector veto --domain example.org`. All empty = copies go out unsigned.
# The signing domain (d=); empty = [organisation] domain. Use the domain of your From addresses (DMARC alignment).
domain = ""
# The selector and private key (PEM, RSA of at least 2048 bits, or Ed25519).
selector = ""
private_key_file = ""
# An optional second signature with an Ed25519 key (RFC 8463), next to the RSA one.
ed25519_selector = ""
ed25519_private_key_file = ""

[delivery]
# Where admitted mail goes: "maildir" (a local Maildir, for trying veto out) or your MTA as smtp://host:port.
upstream = "maildir"
# The keys below apply to an smtp:// upstream.
# "starttls" (required: an MTA that does not offer it gets no mail) or "none" (an MTA on this host or a private network).
tls = "starttls"
# PEM file of certificate authorities to trust besides the system's (a private CA); empty = the system's only.
ca_file = ""
# SMTP AUTH (PLAIN or LOGIN) with the MTA; empty = none. The password is never printed; set it with VETO_DELIVERY__PASSWORD.
username = ""
password = ""
# Most connections to the MTA open at once, reused for many messages: the
# gateway has this many of its own, and veto's own mail as many again.
pool_size = 8
# How long to wait for a connection to the MTA, and for each of its replies.
connect_timeout = "10s"
timeout = "60s"
# A connection unused this long is closed.
idle_timeout = "60s"

[organisation]
# Your organisation's name, shown to customers.
name = "Example Organisation"
# Postal address printed in every marketing footer (CAN-SPAM requires one for US recipients).
postal_address = ""
# Link to your privacy notice, shown on customer pages; empty = none.
privacy_url = ""
# Domain of veto's own addresses (unsubscribe+…@, bounces+…@) and of List-Id headers.
domain = "example.org"

[policy]
# Rules applied to contacts whose jurisdiction is unknown: any of "UK", "EU", "US", "CA"; the strictest wins.
default_jurisdictions = ["UK", "EU"]
# After an opt-out, a later purchase: "stays_opted_out", or "new_basis" (a fresh basis for the soft opt-in).
purchase_after_opt_out = "stays_opted_out"
# true if the organisation is a charity, which may use the soft opt-in for supporters (PECR reg 22(3A)).
charity = false

[campaigns]
# A campaign pauses itself, and says why, at this complaint rate (mailbox providers: under 0.1%, never 0.3%)…
complaint_brake = "0.1%"
# … or at this hard-bounce rate (5xx replies at RCPT and bounces that came back)…
bounce_brake = "5%"
# … once this many of its messages have been handed off.
brake_min_sample = 1000
# Campaign messages per topic, and per API key that created the campaign, per day (UTC); 0 = no cap.
daily_cap_per_topic = 0
daily_cap_per_key = 0
# Recipients a node claims from the queue at once (1 to 10000).
claim = 256
# Recipients checked by the guard together, immediately before their hand-offs (1 to 256).
chunk = 16
# A claim older than this is taken over by another node (several nodes on one PostgreSQL).
lease = "120s"

[service]
# A service send to more recipients than this within bulk_window waits for a DPO's approval.
bulk_threshold = 100
# The window for bulk_threshold, like "24h", "1 day" or "PT24H".
bulk_window = "24h"

# Service message types that may be sent without marketing consent: name = one-line description shown to customers.
[service.types]
# billing = "Bills and receipts for things you bought"
# security = "Security alerts about your account"

[retention]
# How long records are kept; "forever", or a span like "400 days" or "104 weeks". `veto serve` purges
# older ones once a day, `veto purge` now. Suppression entries and the ledger's events are always kept.
# Receipts (why each person got, or did not get, each message): at least "31 days".
receipts = "forever"
# IP addresses and user agents recorded as evidence with consent events, signups and mail to veto:
# blanked after this; the event, its wording, time and source stay, and the hash chain still verifies.
evidence = "forever"
# Which copies the MTA took, so that a tool's retry is not delivered twice: "1 day" to "7 days".
relay_records = "7 days"

[metrics]
# Who may read GET /metrics (Prometheus text) on [web] listen: these client networks, ...
allowed_networks = ["127.0.0.0/8", "::1/128"]
# ... or anyone sending "Authorization: Bearer <token>"; empty = no token. Set it with VETO_METRICS__BEARER_TOKEN.
bearer_token = ""
# Feedback from mail providers: their bounces and spam complaints become hard-bounce and
# complaint events in the ledger, like a DSN or ARF report to the gateway. Each receiver
# is off (404) until enabled. Provider soft bounces count towards [gateway] soft_bounce_threshold.
[feedback.ses]
# POST /webhooks/ses: Amazon SES notifications through an SNS HTTPS subscription.
enabled = false
# Your SNS topic ARN(s); messages from other topics are refused.
topic_arns = []
# Hosts (https) signing certificates and subscription confirmations may come from; * is one DNS label.
certificate_hosts = ["sns.*.amazonaws.com"]
# PEM certificates to trust for those certificates instead of the platform's roots; empty = the platform's.
ca_file = ""
# Time allowed for each certificate download and subscription confirmation.
timeout = "10s"

[feedback.sendgrid]
# POST /webhooks/sendgrid: SendGrid's signed event webhook.
enabled = false
# The verification key SendGrid shows when you turn on signature verification (base64).
public_key = ""
# How far the signed timestamp may be from now.
max_age = "10m"

[feedback.postmark]
# POST /webhooks/postmark: Postmark's Bounce and Spam Complaint webhooks, with HTTP Basic
# credentials in the webhook URL (https://USER:PASSWORD@your-veto/webhooks/postmark).
enabled = false
username = ""
# Never printed; set it with VETO_FEEDBACK__POSTMARK__PASSWORD.
password = ""

[webhooks]
# Consent changes are POSTed, signed, to each [[webhooks.endpoints]] (the CRM, a call-centre system, another
# email provider) so that their copies stop too. Failed deliveries are retried: backoff_base, doubled each
# time up to backoff_max, until give_up_after; then they are marked failed (see `veto webhooks status`).
timeout = "10s"
backoff_base = "30s"
backoff_max = "1h"
give_up_after = "7 days"
# Delivered rows are deleted this long after delivery.
retention = "7 days"

# One table per receiving system. events is optional (default: grant, withdraw, object, refused, hard_bounce,
# bounce_cleared, complaint, pause, frequency, erasure). The secret signs each request (Veto-Signature).
# [[webhooks.endpoints]]
# name = "crm"
# url = "https://crm.example.org/hooks/veto"
# secret = "at least 16 characters, e.g. from openssl rand -hex 32"
# events = ["withdraw", "object", "erasure", "hard_bounce", "complaint"]

[log]
# Log format: "text" for people, "json" for log collectors.
format = "text"
# What to log: a level (error, warn, info, debug, trace) or filter directives like "info,veto=debug".
level = "info"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A directory with `veto.toml` holding `text`.
    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("veto.toml");
        std::fs::write(&path, text).expect("write config");
        (dir, path)
    }

    fn load_file(
        text: &str,
        vars: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Loaded, ConfigErrors>) {
        let (dir, path) = file(text);
        let result = load_from(Some(&path), env(vars));
        (dir, result)
    }

    fn ok(result: Result<Loaded, ConfigErrors>) -> Loaded {
        match result {
            Ok(loaded) => loaded,
            Err(errors) => panic!("expected a config, got:\n{errors}"),
        }
    }

    fn errors(result: Result<Loaded, ConfigErrors>) -> Vec<String> {
        match result {
            Ok(loaded) => panic!("expected problems, got {loaded:?}"),
            Err(ConfigErrors(problems)) => problems,
        }
    }

    fn postal_warning_only(loaded: &Loaded) {
        assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
        let advice = advice(&loaded.config);
        assert_eq!(advice.len(), 1, "{advice:#?}");
        assert!(advice[0].contains("postal_address"), "{advice:#?}");
    }

    fn defaults_in(dir: &Path) -> Config {
        let mut config = Config::default();
        config.store.data_dir = dir.join("veto-data");
        config
    }

    #[test]
    fn defaults_when_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("veto.toml");
        let loaded = ok(load_inner(
            None,
            &missing,
            env(&[("HOME", "/root")]),
            vec![],
        ));
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(loaded.config, defaults_in(&cwd));
        assert_eq!(loaded.config.source, None);
        assert_eq!(
            loaded.config.store.database_path(),
            Some(cwd.join("veto-data").join("veto.db"))
        );
        postal_warning_only(&loaded);
    }

    #[test]
    fn default_file_is_read_when_present() {
        let (_dir, path) = file("[web]\nlisten = \"127.0.0.1:9000\"\n");
        let loaded = ok(load_inner(None, &path, vec![], vec![]));
        assert_eq!(
            loaded.config.web.listen,
            "127.0.0.1:9000".parse().expect("addr")
        );
        assert_eq!(loaded.config.source, Some(path));
    }

    #[test]
    fn file_overrides_defaults() {
        let (dir, result) = load_file(
            r#"
[store]
url = "postgres://veto@db/veto"
[web]
listen = "0.0.0.0:80"
public_url = "https://veto.example.com/"
trusted_proxies = ["10.0.0.0/8", "127.0.0.1", "::1"]
[gateway]
inbound_listen = "0.0.0.0:25"
trusted_networks = ["10.1.0.0/16", "::1"]
trusted_default_topic = "news"
[delivery]
upstream = "smtp://mta.internal:2525"
[organisation]
name = "Acme"
postal_address = "1 High St, London"
privacy_url = "https://acme.example/privacy?lang=en"
domain = "Acme.Example"
[policy]
default_jurisdictions = ["us", "CA", "US"]
purchase_after_opt_out = "new_basis"
charity = true
[service]
bulk_threshold = 5
bulk_window = "1 day"
[service.types]
billing = "Bills and receipts"
security-alerts = " Sign-ins from new devices "
[log]
format = "json"
level = "info,veto=debug"
"#,
            &[],
        );
        let loaded = ok(result);
        let c = &loaded.config;
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(c.store.url.expose(), "postgres://veto@db/veto");
        assert_eq!(c.store.database_path(), None);
        assert_eq!(c.store.data_dir, dir.path().join("veto-data"));
        assert_eq!(c.web.listen, "0.0.0.0:80".parse().expect("addr"));
        assert_eq!(c.web.public_url, "https://veto.example.com");
        let proxies: Vec<String> = c
            .web
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
        assert_eq!(c.gateway.listen, GatewayConfig::default().listen);
        assert_eq!(
            c.gateway.inbound_listen,
            Some("0.0.0.0:25".parse().expect("addr"))
        );
        let trusted: Vec<String> = c
            .gateway
            .trusted_networks
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(trusted, ["10.1.0.0/16", "::1/128"]);
        assert_eq!(
            c.gateway.trusted_default_topic.as_ref().map(|t| t.as_str()),
            Some("news")
        );
        assert_eq!(
            c.delivery.upstream,
            Upstream::Smtp {
                host: "mta.internal".into(),
                port: 2525
            }
        );
        assert_eq!(c.organisation.name, "Acme");
        assert_eq!(
            c.organisation.privacy_url.as_deref(),
            Some("https://acme.example/privacy?lang=en")
        );
        assert_eq!(c.organisation.domain, "acme.example");
        assert_eq!(c.policy.default_jurisdictions, ["US", "CA"]);
        assert_eq!(
            c.policy.purchase_after_opt_out,
            PurchaseAfterOptOut::NewBasis
        );
        assert!(c.policy.charity);
        assert_eq!(c.service.bulk_threshold, 5);
        assert_eq!(c.service.bulk_window, Duration::from_secs(86_400));
        assert_eq!(c.service.types["billing"], "Bills and receipts");
        assert_eq!(
            c.service.types["security-alerts"],
            "Sign-ins from new devices"
        );
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info,veto=debug");
    }

    #[test]
    fn env_overrides_file() {
        let (_dir, result) = load_file(
            "[web]\nlisten = \"127.0.0.1:9000\"\n[service.types]\nbilling = \"Bills\"\nsecurity = \"Alerts\"\n",
            &[
                ("VETO_WEB__LISTEN", "127.0.0.1:9100"),
                ("VETO_POLICY__DEFAULT_JURISDICTIONS", r#"["UK"]"#),
                ("VETO_POLICY__CHARITY", "true"),
                ("VETO_SERVICE__BULK_THRESHOLD", "7"),
                ("VETO_SERVICE__BULK_WINDOW", "PT2H"),
                ("VETO_SERVICE__TYPES__BILLING", "Invoices"),
                ("VETO_SERVICE__TYPES__OUTAGE", "\"Service outages\""),
                ("VETO_ORGANISATION__NAME", "2024"),
                (
                    "VETO_ORGANISATION__POSTAL_ADDRESS",
                    "1 Main St, Springfield",
                ),
                ("VETO_LOG__FORMAT", "json"),
                ("VETO_WEB__TRUSTED_PROXIES", "10.0.0.0/8, 192.168.0.1"),
            ],
        );
        let loaded = ok(result);
        let c = &loaded.config;
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(c.web.listen, "127.0.0.1:9100".parse().expect("addr"));
        assert_eq!(c.policy.default_jurisdictions, ["UK"]);
        assert!(c.policy.charity);
        assert_eq!(c.service.bulk_threshold, 7);
        assert_eq!(c.service.bulk_window, Duration::from_secs(7200));
        assert_eq!(
            c.service.types,
            BTreeMap::from([
                ("billing".to_owned(), "Invoices".to_owned()),
                ("outage".to_owned(), "Service outages".to_owned()),
                ("security".to_owned(), "Alerts".to_owned()),
            ])
        );
        // "2024" parses as a TOML number, but a name is a string.
        assert_eq!(c.organisation.name, "2024");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.web.trusted_proxies.len(), 2);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (_dir, result) = load_file(
            r#"
[web]
listen = "abc"
[policy]
default_jurisdictions = ["UK", "XX"]
purchase_after_opt_out = "maybe"
[service]
bulk_threshold = "lots"
bulk_window = "0s"
[service.types]
"Bad Name" = "x"
empty = ""
"#,
            &[
                ("VETO_GATEWAY__LISTEN", "nowhere"),
                ("VETO_DELIVERY__UPSTREAM", "smtp://"),
            ],
        );
        let problems = errors(result);
        let expect = [
            (
                "veto.toml:3:10: [web] listen",
                "\"abc\" is not a socket address like 127.0.0.1:8080",
            ),
            ("veto.toml:5:32: [policy] default_jurisdictions", "\"XX\""),
            (
                "veto.toml:6:26: [policy] purchase_after_opt_out",
                "stays_opted_out",
            ),
            ("veto.toml:8:18: [service] bulk_threshold", "whole number"),
            ("veto.toml:9:15: [service] bulk_window", "longer than zero"),
            ("[service.types] Bad Name", "not a service type name"),
            ("[service.types] empty", "description"),
            ("VETO_GATEWAY__LISTEN: [gateway] listen", "\"nowhere\""),
            ("VETO_DELIVERY__UPSTREAM: [delivery] upstream", "smtp://"),
        ];
        for (prefix, text) in expect {
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(prefix) && p.contains(text)),
                "no problem {prefix:?} … {text:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
        let shown = ConfigErrors(problems).to_string();
        assert!(
            shown.starts_with("the configuration has 9 problems:\n  "),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 10);
    }

    #[test]
    fn unknown_keys_and_variables_are_warnings() {
        let (_dir, result) = load_file(
            "stray = 1\n[web]\nlisen = \"x\"\n[nonsense]\na = 1\n[service.types]\nbilling = \"Bills\"\n",
            &[
                ("VETO_WEB__LISTN", "x"),
                ("VETO_NOPE__KEY", "x"),
                ("VETO_JUNK", "x"),
                ("VETO_POLICY__CHARITY__DEEP", "x"),
                ("VETO_TEST_POSTGRES_URL", "postgres://x"),
                ("PATH", "/bin"),
                ("VETO_ORGANISATION__POSTAL_ADDRESS", "1 Main St"),
            ],
        );
        let warnings = ok(result).warnings;
        let expect = [
            "veto.toml:1:1: unknown top-level key \"stray\"",
            "veto.toml:3:1: unknown key [web] lisen",
            "veto.toml:4:2: unknown section [nonsense]",
            "VETO_WEB__LISTN: unknown key [web] listn",
            "VETO_NOPE__KEY: unknown section [nope]",
            "VETO_JUNK: not a configuration key",
            "VETO_POLICY__CHARITY__DEEP: unknown key [policy] charity.deep",
        ];
        for text in expect {
            assert!(
                warnings.iter().any(|w| w.contains(text)),
                "no warning {text:?} in {warnings:#?}"
            );
        }
        assert_eq!(warnings.len(), expect.len(), "{warnings:#?}");
    }

    #[test]
    fn secrets_never_print() {
        let password = "hunter2-s3cret";
        let (_dir, result) = load_file(
            &format!("[store]\nurl = \"postgres://veto:{password}@db/veto\"\n"),
            &[],
        );
        let loaded = ok(result);
        assert!(loaded.config.store.url.expose().contains(password));
        for shown in [
            format!("{:?}", loaded.config),
            format!("{loaded:?}"),
            format!("{}", loaded.config.store.url),
        ] {
            assert!(!shown.contains(password), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }

        // Nor in problems or warnings about it, even with a wrong scheme.
        let (_dir, result) = load_file(
            &format!(
                "[store]\nurl = \"mysql://root:{password}@db\"\nulr = \"{password}\"\n[delivery]\nupstream = \"smtps://u:{password}@mta:25\"\n[web]\npublic_url = \"htp://u:{password}@x\"\n"
            ),
            &[],
        );
        let problems = errors(result);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems.iter().all(|p| !p.contains(password)),
            "{problems:#?}"
        );
        let (_dir, result) = load_file(&format!("[store]\nulr = \"{password}\"\n"), &[]);
        let warnings = ok(result).warnings;
        assert!(
            warnings.iter().any(|w| w.contains("[store] ulr")),
            "{warnings:#?}"
        );
        assert!(
            warnings.iter().all(|w| !w.contains(password)),
            "{warnings:#?}"
        );
    }

    #[test]
    fn relative_data_dir_is_taken_from_the_file_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = dir.path().join("etc");
        std::fs::create_dir(&sub).expect("mkdir");
        let path = sub.join("veto.toml");

        std::fs::write(&path, "[store]\ndata_dir = \"data\"\n").expect("write");
        let loaded = ok(load_from(Some(&path), vec![]));
        assert_eq!(loaded.config.store.data_dir, sub.join("data"));
        assert_eq!(
            loaded.config.store.database_path(),
            Some(sub.join("data").join("veto.db"))
        );

        std::fs::write(&path, "[store]\n").expect("write");
        let loaded = ok(load_from(Some(&path), vec![]));
        assert_eq!(loaded.config.store.data_dir, sub.join("veto-data"));

        let absolute = dir.path().join("elsewhere");
        let text = format!("[store]\ndata_dir = {:?}\n", absolute.display().to_string());
        std::fs::write(&path, text).expect("write");
        let loaded = ok(load_from(Some(&path), vec![]));
        assert_eq!(loaded.config.store.data_dir, absolute);

        // From the environment: the current directory.
        let loaded = ok(load_from(
            Some(&path),
            env(&[("VETO_STORE__DATA_DIR", "from-env")]),
        ));
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(loaded.config.store.data_dir, cwd.join("from-env"));
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let (_dir, result) = load_file(
            "[web]\nlisten = \"127.0.0.1:8080\"\npublic_url = https://x\n",
            &[],
        );
        let problems = errors(result);
        assert!(!problems.is_empty());
        assert!(
            problems
                .iter()
                .all(|p| p.contains("veto.toml:3:") && p.contains("TOML syntax error")),
            "{problems:#?}"
        );
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nope.toml");
        let problems = errors(load_from(Some(&path), vec![]));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains(&path.display().to_string()),
            "{problems:#?}"
        );
        assert!(problems[0].contains("not found"), "{problems:#?}");
    }

    #[test]
    fn commented_default_parses_back_to_the_defaults() {
        let (dir, path) = file(&commented_default_toml());
        let loaded = ok(load_from(Some(&path), vec![]));
        let mut expected = defaults_in(dir.path());
        expected.source = Some(path);
        assert_eq!(loaded.config, expected);
        // The same warning as having no file at all, and no unknown keys.
        postal_warning_only(&loaded);

        // Every key is in it.
        let text = commented_default_toml();
        for key in [
            "url",
            "data_dir",
            "listen",
            "public_url",
            "trusted_proxies",
            "inbound_listen",
            "trusted_networks",
            "trusted_default_topic",
            "refused_recipients",
            "soft_bounce_threshold",
            "soft_bounce_window",
            "upstream",
            "tls",
            "ca_file",
            "username",
            "password",
            "pool_size",
            "connect_timeout",
            "timeout",
            "idle_timeout",
            "name",
            "postal_address",
            "privacy_url",
            "domain",
            "default_jurisdictions",
            "purchase_after_opt_out",
            "charity",
            "bulk_threshold",
            "bulk_window",
            "format",
            "level",
            "enabled",
            "topic_arns",
            "certificate_hosts",
            "public_key",
            "max_age",
            "# billing",
            "# security",
        ] {
            assert!(text.contains(&format!("\n{key} = ")), "{key} missing");
        }
        for section in [
            "[feedback.ses]",
            "[feedback.sendgrid]",
            "[feedback.postmark]",
        ] {
            assert!(
                text.contains(&format!("\n{section}\n")),
                "{section} missing"
            );
        }
    }

    #[test]
    fn gateway_tls_files_and_limits_are_read_and_checked() {
        let text = commented_default_toml();
        for key in [
            "tls_cert_file",
            "tls_key_file",
            "max_connections",
            "max_connections_per_client",
            "max_message_size",
            "max_recipients",
            "selector",
            "private_key_file",
            "ed25519_selector",
            "ed25519_private_key_file",
        ] {
            assert!(text.contains(&format!("\n{key} = ")), "{key} missing");
        }

        let (dir, result) = load_file(
            "[gateway]\ntls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"/etc/veto/key.pem\"\n\
             max_connections = 20\nmax_connections_per_client = 2\nmax_message_size = 1048576\n\
             max_recipients = 500\n",
            &[("VETO_GATEWAY__MAX_RECIPIENTS", "50")],
        );
        let loaded = ok(result);
        let g = &loaded.config.gateway;
        assert_eq!(g.tls_cert_file, Some(dir.path().join("tls/cert.pem")));
        assert_eq!(g.tls_key_file, Some(PathBuf::from("/etc/veto/key.pem")));
        assert_eq!((g.max_connections, g.max_connections_per_client), (20, 2));
        assert_eq!((g.max_message_size, g.max_recipients), (1_048_576, 50));

        let (_dir, result) = load_file(
            "[gateway]\ntls_cert_file = \"cert.pem\"\nmax_connections = 0\n\
             max_message_size = 99999999999\nmax_recipients = \"lots\"\n",
            &[],
        );
        let problems = errors(result);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("[gateway] max_connections: expected a whole number from 1"));
        assert!(problems[1].contains("[gateway] max_message_size: expected a whole number"));
        assert!(problems[1].contains("33554432"), "{}", problems[1]);
        assert!(
            problems[2].contains("[gateway] max_recipients"),
            "{}",
            problems[2]
        );
        assert!(
            problems[3]
                .starts_with("[gateway] tls_key_file: must be set when [gateway] tls_cert_file is"),
            "{}",
            problems[3]
        );
    }

    #[test]
    fn dkim_keys_come_in_pairs_and_ed25519_only_second() {
        let (dir, result) = load_file(
            "[dkim]\ndomain = \"Shop.Example\"\nselector = \"S2025\"\nprivate_key_file = \"dkim/rsa.pem\"\n\
             ed25519_selector = \"ed\"\ned25519_private_key_file = \"dkim/ed.pem\"\n",
            &[],
        );
        let loaded = ok(result);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let d = &loaded.config.dkim;
        assert_eq!(d.domain.as_deref(), Some("shop.example"));
        assert_eq!(d.selector.as_deref(), Some("s2025"));
        assert_eq!(d.private_key_file, Some(dir.path().join("dkim/rsa.pem")));
        assert_eq!(d.ed25519_selector.as_deref(), Some("ed"));
        assert_eq!(
            d.ed25519_private_key_file,
            Some(dir.path().join("dkim/ed.pem"))
        );

        let (_dir, result) = load_file("[dkim]\nselector = \"veto\"\n", &[]);
        let problems = errors(result);
        assert_eq!(
            problems,
            ["[dkim] private_key_file: must be set when [dkim] selector is"]
        );

        let (_dir, result) = load_file(
            "[dkim]\ned25519_selector = \"ed\"\ned25519_private_key_file = \"ed.pem\"\n",
            &[],
        );
        let problems = errors(result);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("set [dkim] selector and private_key_file"));

        let (_dir, result) = load_file(
            "[dkim]\nselector = \"a_b\"\nprivate_key_file = \"k.pem\"\n",
            &[],
        );
        let problems = errors(result);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("[dkim] selector: \"a_b\" is not a DKIM selector"));

        let (_dir, result) = load_file(
            "[dkim]\nselector = \"a\"\nprivate_key_file = \"k.pem\"\n",
            &[
                ("VETO_DKIM__ED25519_SELECTOR", "A"),
                ("VETO_DKIM__ED25519_PRIVATE_KEY_FILE", "e.pem"),
            ],
        );
        let problems = errors(result);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("each key needs its own selector"));
    }

    #[test]
    fn delivery_smtp_keys_are_read() {
        let (dir, path) = file(
            r#"
[delivery]
upstream = "smtp://mta.internal:587"
tls = "starttls"
ca_file = "ca.pem"
username = "veto"
password = "hunter2-s3cret"
pool_size = 4
connect_timeout = "5s"
timeout = "2m"
idle_timeout = "30s"
"#,
        );
        std::fs::write(dir.path().join("ca.pem"), "x").expect("write CA");
        let loaded = ok(load_from(
            Some(&path),
            env(&[("VETO_DELIVERY__POOL_SIZE", "16")]),
        ));
        let d = &loaded.config.delivery;
        assert_eq!(d.tls, DeliveryTls::Starttls);
        assert_eq!(
            d.ca_file.as_deref(),
            Some(dir.path().join("ca.pem").as_path())
        );
        assert_eq!(d.username.as_deref(), Some("veto"));
        assert_eq!(d.password.expose(), "hunter2-s3cret");
        assert_eq!(d.pool_size, 16, "the environment wins");
        assert_eq!(d.connect_timeout, Duration::from_secs(5));
        assert_eq!(d.timeout, Duration::from_secs(120));
        assert_eq!(d.idle_timeout, Duration::from_secs(30));
        assert!(!format!("{loaded:?}").contains("hunter2"));

        let (_dir, result) = load_file("[delivery]\ntls = \"none\"\n", &[]);
        assert_eq!(ok(result).config.delivery.tls, DeliveryTls::None);
    }

    #[test]
    fn delivery_smtp_problems_name_the_key() {
        let (_dir, result) = load_file(
            r#"
[delivery]
tls = "off"
ca_file = "missing.pem"
pool_size = 0
timeout = "0s"
connect_timeout = "soon"
idle_timeout = 5
"#,
            &[],
        );
        let problems = errors(result);
        let expect = [
            ("veto.toml:3:7: [delivery] tls", "starttls"),
            (
                "veto.toml:4:11: [delivery] ca_file",
                "missing.pem is not a file",
            ),
            ("veto.toml:5:13: [delivery] pool_size", "from 1 to 1000"),
            ("veto.toml:6:11: [delivery] timeout", "longer than zero"),
            (
                "veto.toml:7:19: [delivery] connect_timeout",
                "\"soon\" is not a duration",
            ),
            (
                "veto.toml:8:16: [delivery] idle_timeout",
                "expected a string",
            ),
        ];
        for (prefix, text) in expect {
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(prefix) && p.contains(text)),
                "no problem {prefix:?} … {text:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");

        // AUTH needs both halves, and never in clear text.
        for (text, problem) in [
            ("username = \"veto\"", "[delivery] password: is empty"),
            (
                "password = \"hunter2-s3cret\"",
                "[delivery] username: is empty",
            ),
            (
                "tls = \"none\"\nusername = \"veto\"\npassword = \"hunter2-s3cret\"",
                "[delivery] tls: is \"none\"",
            ),
        ] {
            let (_dir, result) = load_file(&format!("[delivery]\n{text}\n"), &[]);
            let problems = errors(result);
            assert_eq!(problems.len(), 1, "{problems:#?}");
            assert!(problems[0].contains(problem), "{problems:#?}");
            assert!(!problems[0].contains("hunter2"), "{problems:#?}");
        }
    }

    #[test]
    fn load_reads_the_process_environment_safely() {
        // Whatever the environment holds, `load` must not panic; a missing
        // explicit file is reported.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing.toml");
        let problems = errors(load(Some(&path)));
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&path.display().to_string())),
            "{problems:#?}"
        );
    }

    #[test]
    fn wrong_shapes_are_problems() {
        let (_dir, result) = load_file(
            "web = 5\n[service]\ntypes = \"billing\"\n[policy]\ndefault_jurisdictions = \"UK\"\ncharity = \"yes\"\n",
            &[],
        );
        let problems = errors(result);
        for text in [
            "veto.toml:1:1: [web] must be a table",
            "[service] types: expected a table",
            "[policy] default_jurisdictions: expected an array of strings",
            "[policy] charity: expected true or false, found the string \"yes\"",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(text)),
                "no {text:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }

    #[test]
    fn env_can_set_a_whole_table() {
        let (_dir, result) = load_file(
            "[service.types]\nbilling = \"Bills\"\n",
            &[(
                "VETO_SERVICE__TYPES",
                r#"{ security = "Alerts", outage = "Outages" }"#,
            )],
        );
        let types = ok(result).config.service.types;
        assert_eq!(types.keys().collect::<Vec<_>>(), ["outage", "security"]);
    }

    #[test]
    fn gateway_trusted_networks_and_topic_are_checked() {
        let (_dir, result) = load_file(
            "[gateway]\ntrusted_networks = [\"10.0.0.0/33\"]\ntrusted_default_topic = \"Big News\"\n",
            &[],
        );
        let problems = errors(result);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("[gateway] trusted_networks"),
            "{problems:#?}"
        );
        assert!(problems[0].contains("10.0.0.0/33"), "{problems:#?}");
        assert!(
            problems[1].contains("[gateway] trusted_default_topic"),
            "{problems:#?}"
        );
        assert!(problems[1].contains("not a valid key"), "{problems:#?}");

        let (_dir, result) = load_file("[gateway]\ntrusted_networks = []\n", &[]);
        assert!(ok(result).config.gateway.trusted_networks.is_empty());
    }

    #[test]
    fn soft_bounce_settings_are_checked() {
        let (_dir, result) = load_file(
            "[gateway]\nsoft_bounce_threshold = 3\nsoft_bounce_window = \"7 days\"\n",
            &[],
        );
        let gateway = ok(result).config.gateway;
        assert_eq!(gateway.soft_bounce_threshold, 3);
        assert_eq!(gateway.soft_bounce_window, Duration::from_secs(7 * 86_400));

        let (_dir, result) = load_file(
            "[gateway]\nsoft_bounce_threshold = 0\nsoft_bounce_window = \"1 month\"\n",
            &[("VETO_GATEWAY__SOFT_BOUNCE_WINDOW", "soon")],
        );
        let problems = errors(result);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("veto.toml:2:")
                && problems[0].contains("[gateway] soft_bounce_threshold: expected a whole number of 1 or more, found the number 0"),
            "{problems:#?}"
        );
        assert!(
            problems[1]
                .starts_with("VETO_GATEWAY__SOFT_BOUNCE_WINDOW: [gateway] soft_bounce_window:")
                && problems[1].contains("\"soon\" is not a duration"),
            "{problems:#?}"
        );
    }

    #[test]
    fn listeners_must_not_clash() {
        let (_dir, result) = load_file(
            "[web]\nlisten = \"0.0.0.0:2525\"\n",
            &[("VETO_GATEWAY__INBOUND_LISTEN", "127.0.0.1:0")],
        );
        let problems = errors(result);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("[gateway] listen: 127.0.0.1:2525 clashes with [web] listen")
        );
    }

    #[test]
    fn empty_jurisdictions_are_refused() {
        let (_dir, result) = load_file("[policy]\ndefault_jurisdictions = []\n", &[]);
        let problems = errors(result);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("at least one"));

        // An unknown one is reported as that, not also as "empty".
        let (_dir, result) = load_file("[policy]\ndefault_jurisdictions = [\"XX\"]\n", &[]);
        let problems = errors(result);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("\"XX\""), "{problems:#?}");
    }

    #[test]
    fn values_are_parsed() {
        assert!(parse_socket_addr("[::1]:8080").is_ok());
        assert!(parse_socket_addr("localhost:8080").is_err());

        assert_eq!(parse_window("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_window("1 week"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_window("90m"), Ok(Duration::from_secs(5400)));
        assert!(parse_window("1 month").is_err());
        assert!(parse_window("-1h").is_err());
        assert!(parse_window("soon").is_err());

        assert_eq!(
            parse_upstream("smtp://[::1]:25"),
            Ok(Upstream::Smtp {
                host: "[::1]".into(),
                port: 25
            })
        );
        assert_eq!(
            parse_upstream("SMTP://Mail.Example.org"),
            Ok(Upstream::Smtp {
                host: "mail.example.org".into(),
                port: 25
            })
        );
        for bad in [
            "smtp://host:0",
            "smtp://host:99999",
            "smtp://host/path",
            "lmtp://x",
            "Maildir",
            "smtp://a b",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }

        assert!(parse_http_url("https://example.org/veto", false).is_ok());
        assert!(parse_http_url("http://[::1]:8080", false).is_ok());
        for bad in [
            "example.org",
            "ftp://example.org",
            "https://",
            "https://x.org/?a=1",
            "https://u@x.org",
            "https://x.org:port",
            "https://bad_host",
        ] {
            assert!(parse_http_url(bad, false).is_err(), "{bad}");
        }

        assert!(check_service_type("a", "x").is_ok());
        assert!(check_service_type(&"a".repeat(40), "x").is_ok());
        assert!(check_service_type(&"a".repeat(41), "x").is_err());
        assert!(check_service_type("_a", "x").is_err());
        assert!(check_service_type("a", "two\nlines").is_err());

        assert!(parse_log_level("DEBUG").is_ok());
        assert!(parse_log_level("warn,veto::gateway=trace").is_ok());
        assert!(parse_log_level("verbose").is_err());
        assert!(parse_log_level("").is_err());

        assert!(parse_domain("example.org").is_ok());
        assert!(parse_domain("-x.org").is_err());
        assert!(parse_domain("1.2.3.4").is_err());
    }

    #[test]
    fn cidr_contains() {
        let net = IpCidr::parse("10.0.0.0/8").expect("cidr");
        assert!(net.contains("10.255.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        let one = IpCidr::parse("::1").expect("cidr");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(!one.contains("::2".parse().expect("ip")));
        let all = IpCidr::parse("0.0.0.0/0").expect("cidr");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "::1/129",
            "host",
            "10.0.0.0/+8",
        ] {
            assert!(IpCidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhooks_are_off_by_default_and_read_from_subsections() {
        let (_dir, result) = load_file("", &[]);
        let config = ok(result).config;
        assert!(!config.feedback.ses.enabled);
        assert_eq!(
            config.feedback.ses.certificate_hosts,
            ["sns.*.amazonaws.com"]
        );

        let key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
        let text = format!(
            "[feedback.ses]\nenabled = true\ntopic_arns = [\"arn:aws:sns:eu-west-1:123456789012:ses-feedback\"]\n\
             [feedback.sendgrid]\nenabled = true\npublic_key = \"{key}\"\nmax_age = \"5m\"\n\
             [feedback.postmark]\nenabled = true\nusername = \"postmark\"\n"
        );
        let (_dir, result) = load_file(
            &text,
            &[
                ("VETO_FEEDBACK__POSTMARK__PASSWORD", "s3cret"),
                ("VETO_FEEDBACK__SES__TIMEOUT", "3s"),
            ],
        );
        let loaded = ok(result);
        let w = &loaded.config.feedback;
        assert!(w.ses.enabled && w.sendgrid.enabled && w.postmark.enabled);
        assert_eq!(w.ses.timeout, Duration::from_secs(3));
        assert_eq!(w.sendgrid.max_age, Duration::from_secs(300));
        assert_eq!(w.postmark.password.expose(), "s3cret");
        assert!(!format!("{loaded:?}").contains("s3cret"));
        assert!(
            loaded.warnings.iter().all(|w| !w.contains("feedback")),
            "{:#?}",
            loaded.warnings
        );
    }

    #[test]
    fn webhook_problems_name_their_key() {
        let text = "[feedback.ses]\nenabled = true\ncertificate_hosts = [\"*.com\"]\ncolour = 1\n\
                    [feedback.sendgrid]\nenabled = true\npublic_key = \"bm90IGEga2V5\"\n\
                    [feedback.postmark]\nenabled = true\n";
        let (_dir, result) = load_file(text, &[]);
        let problems = errors(result).join("\n");
        for expected in [
            "[feedback.ses] certificate_hosts",
            "[feedback.ses] topic_arns: must name",
            "[feedback.sendgrid] public_key",
            "[feedback.postmark] username, password",
        ] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
        let (_dir, result) = load_file("[feedback.ses]\ncolour = 1\n", &[]);
        let loaded = ok(result);
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("unknown key [feedback.ses] colour")),
            "{:#?}",
            loaded.warnings
        );
    }

    #[test]
    fn webhook_endpoints_are_read_and_checked() {
        let (_dir, result) = load_file(
            r#"
[webhooks]
backoff_base = "1s"
give_up_after = "3 days"

[[webhooks.endpoints]]
name = "crm"
url = "https://crm.example.org/hooks/veto?source=veto"
secret = "0123456789abcdef"

[[webhooks.endpoints]]
name = "call-centre"
url = "http://10.0.0.5:8080/veto"
secret = "fedcba9876543210fedcba"
events = ["withdraw", "erasure", "withdraw"]
"#,
            &[],
        );
        let loaded = ok(result);
        assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
        let w = &loaded.config.webhooks;
        assert_eq!(w.backoff_base, Duration::from_secs(1));
        assert_eq!(w.backoff_max, Duration::from_secs(3600));
        assert_eq!(w.give_up_after, Duration::from_secs(3 * 86_400));
        assert_eq!(w.endpoints.len(), 2);
        assert_eq!(w.endpoints[0].name, "crm");
        assert_eq!(w.endpoints[0].secret.expose(), "0123456789abcdef");
        assert_eq!(
            w.endpoints[0].events,
            veto_store::DEFAULT_WEBHOOK_EVENTS
                .iter()
                .map(|e| (*e).to_owned())
                .collect::<Vec<_>>()
        );
        assert_eq!(w.endpoints[1].events, vec!["withdraw", "erasure"]);
        // Secrets never print.
        assert!(!format!("{w:?}").contains("0123456789abcdef"));

        // From the environment, as one TOML value.
        let loaded = ok(load_from(
            None,
            env(&[(
                "VETO_WEBHOOKS__ENDPOINTS",
                r#"[{name = "crm", url = "https://crm.example.org/h", secret = "0123456789abcdef"}]"#,
            )]),
        ));
        assert_eq!(loaded.config.webhooks.endpoints.len(), 1);

        let (_dir, result) = load_file(
            r#"
[webhooks]
backoff_base = "2h"

[[webhooks.endpoints]]
name = "Bad Name"
url = "ftp://crm.example.org/"
secret = "short-secret"
events = ["unsubscribe"]
colour = "blue"

[[webhooks.endpoints]]
url = "https://crm.example.org/"

[[webhooks.endpoints]]
name = "crm"
url = "https://crm.example.org/"
secret = "0123456789abcdef"

[[webhooks.endpoints]]
name = "crm"
url = "https://other.example.org/"
secret = "0123456789abcdef"
"#,
            &[],
        );
        let problems = errors(result);
        let all = problems.join("\n");
        assert_eq!(problems.len(), 7, "{all}");
        assert!(
            all.contains("#1 name: \"Bad Name\" is not an endpoint name"),
            "{all}"
        );
        assert!(
            all.contains("#1 url: \"ftp://crm.example.org/\" is not an absolute http(s) URL"),
            "{all}"
        );
        assert!(
            all.contains("#1 secret: must be at least 16 characters"),
            "{all}"
        );
        assert!(
            all.contains("#1 events: \"unsubscribe\" is not an event kind"),
            "{all}"
        );
        assert!(all.contains("#2: name, secret must be set"), "{all}");
        assert!(
            all.contains("#4 name: the name \"crm\" is used by an earlier endpoint"),
            "{all}"
        );
        assert!(
            all.contains("[webhooks] backoff_max: must be at least [webhooks] backoff_base"),
            "{all}"
        );
        assert!(!all.contains("short-secret"), "a secret was quoted: {all}");
        // Each names its line.
        assert!(problems[0].contains("veto.toml:6:"), "{all}");
    }
}
