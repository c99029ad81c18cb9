//! The upstream SMTP transport: admitted messages relayed to the
//! organisation's MTA over a pool of long-lived connections.
//!
//! - Connections are opened with mail-send (EHLO, STARTTLS with rustls on
//!   aws-lc-rs, AUTH PLAIN/LOGIN) and reused across messages and gateway
//!   sessions: no connection and no TLS handshake per message.
//! - Transactions are pipelined (RFC 2920) when upstream offers PIPELINING:
//!   `MAIL`, `RCPT` and `DATA` in one write, the message in a second; with
//!   CHUNKING as well (RFC 3030) envelope and message go in a single write.
//! - A pooled connection that upstream closed meanwhile is replaced by a
//!   fresh one, once, before the message is reported as deferred.
//! - Idle connections are closed (with QUIT) after `idle_timeout`.
//!
//! Outcomes: 2xx after the message is [`Outcome::Accepted`] with upstream's
//! reply; a 5xx at MAIL, RCPT, DATA or after the message is
//! [`Outcome::Rejected`]; a 4xx, no connection, a timeout or a TLS failure
//! is a [`TransportError`] (the gateway answers its client 451).

mod conn;
mod wire;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use veto_store::Admitted;

use crate::transport::{Outcome, Transport, TransportError, TransportFuture};
use conn::{Connection, Sent};

/// How the connection to upstream is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// STARTTLS (RFC 3207), required: a server that does not offer it gets
    /// no mail. The certificate is verified, always.
    #[default]
    StartTls,
    /// Plain text (an MTA on the same host or a trusted private network).
    None,
}

/// The user name and password for AUTH PLAIN / LOGIN.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpCredentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Where and how to reach upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// PEM file of certificate authorities trusted besides the platform's
    /// roots (a private CA).
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<SmtpCredentials>,
    /// The name veto gives in EHLO.
    pub helo_name: String,
    /// Most connections open at once; more messages wait for one.
    pub pool_size: usize,
    /// For the TCP connection.
    pub connect_timeout: Duration,
    /// For each reply (and each write) once connected.
    pub reply_timeout: Duration,
    /// A connection unused this long is closed.
    pub idle_timeout: Duration,
}

impl SmtpSettings {
    pub const DEFAULT_POOL_SIZE: usize = 8;
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    /// STARTTLS, no AUTH, the default pool and timeouts.
    pub fn new(host: &str, port: u16, helo_name: &str) -> SmtpSettings {
        SmtpSettings {
            host: host.to_owned(),
            port,
            tls: TlsMode::StartTls,
            ca_file: None,
            credentials: None,
            helo_name: helo_name.to_owned(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            reply_timeout: Self::DEFAULT_REPLY_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Why the transport cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("no certificate authorities to verify upstream with: {0}")]
    Trust(String),
    #[error("{0}")]
    Settings(String),
}

/// What a connection needs, settled once.
struct Settings {
    host: String,
    port: u16,
    tls: TlsMode,
    tls_connector: Option<TlsConnector>,
    credentials: Option<mail_send::Credentials<String>>,
    helo_name: String,
    connect_timeout: Duration,
    reply_timeout: Duration,
}

struct Pool {
    settings: Settings,
    idle_timeout: Duration,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be open.
    slots: Semaphore,
    reaper_started: AtomicBool,
}

/// The upstream SMTP transport. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct SmtpTransport {
    pool: Arc<Pool>,
}

impl fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("host", &self.pool.settings.host)
            .field("port", &self.pool.settings.port)
            .finish_non_exhaustive()
    }
}

impl SmtpTransport {
    /// Checks the settings and loads the trusted roots; connects only when
    /// the first message comes.
    pub fn new(settings: SmtpSettings) -> Result<SmtpTransport, SmtpSetupError> {
        if settings.pool_size == 0 {
            return Err(SmtpSetupError::Settings(
                "the pool needs at least one connection".to_owned(),
            ));
        }
        if wire::path(&settings.helo_name).is_none_or(str::is_empty) {
            return Err(SmtpSetupError::Settings(format!(
                "{:?} is not a name to give in EHLO",
                settings.helo_name
            )));
        }
        if settings.credentials.is_some() && settings.tls == TlsMode::None {
            return Err(SmtpSetupError::Settings(
                "AUTH without TLS would send the password in clear text".to_owned(),
            ));
        }
        let tls_connector = match settings.tls {
            TlsMode::StartTls => Some(tls_connector(settings.ca_file.as_deref())?),
            TlsMode::None => None,
        };
        let credentials = settings
            .credentials
            .map(|c| mail_send::Credentials::new(c.username, c.password));
        Ok(SmtpTransport {
            pool: Arc::new(Pool {
                settings: Settings {
                    host: settings.host,
                    port: settings.port,
                    tls: settings.tls,
                    tls_connector,
                    credentials,
                    helo_name: settings.helo_name,
                    connect_timeout: settings.connect_timeout,
                    reply_timeout: settings.reply_timeout,
                },
                idle_timeout: settings.idle_timeout,
                idle: Mutex::new(Vec::new()),
                slots: Semaphore::new(settings.pool_size),
                reaper_started: AtomicBool::new(false),
            }),
        })
    }

    /// Closes the idle connections (with QUIT), e.g. at shutdown.
    pub async fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.pool.lock_idle());
        for connection in idle {
            connection.quit().await;
        }
    }

    async fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<Outcome, TransportError> {
        let Some(from) = wire::path(from) else {
            // veto makes its return paths; this one would break the command.
            return Err(TransportError(format!(
                "the return path {from:?} cannot be sent in MAIL FROM"
            )));
        };
        let to = match wire::path(to) {
            Some(to) if !to.is_empty() => to,
            _ => {
                return Err(TransportError(format!(
                    "the recipient {to:?} cannot be sent in RCPT TO"
                )));
            }
        };
        let pool = &self.pool;
        let _slot = pool
            .slots
            .acquire()
            .await
            .map_err(|_| TransportError("the SMTP transport is shut down".to_owned()))?;
        let (mut connection, mut pooled) = match pool.take_idle() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        loop {
            match connection.send(from, to, message).await {
                Ok(sent) => {
                    if connection.reusable() {
                        pool.put_back(connection);
                    }
                    return match sent {
                        Sent::Accepted(reply) => Ok(Outcome::Accepted { reply: reply.text }),
                        Sent::Rejected(reply) => Ok(Outcome::Rejected { reply: reply.text }),
                        Sent::Deferred(text) => Err(TransportError(text)),
                    };
                }
                Err(broken) if pooled && broken.retry_safe => {
                    tracing::debug!(reason = %broken.reason, "pooled upstream connection was dead; trying a fresh one");
                    connection = self.connect().await?;
                    pooled = false;
                }
                Err(broken) => {
                    tracing::warn!(reason = %broken.reason, "upstream connection failed");
                    return Err(TransportError(broken.reason));
                }
            }
        }
    }

    async fn connect(&self) -> Result<Connection, TransportError> {
        let pool = &self.pool;
        let connection = Connection::open(&pool.settings).await.map_err(|reason| {
            tracing::warn!(%reason, "cannot open a connection to upstream");
            TransportError(reason)
        })?;
        if !pool.reaper_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(pool), pool.idle_timeout));
        }
        Ok(connection)
    }
}

impl Pool {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding the lock leaves a list of connections that
        // is still a list of connections.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that has not idled too long.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.lock_idle();
        while let Some(c) = idle.pop() {
            if c.last_used.elapsed() < self.idle_timeout {
                return Some(c);
            }
        }
        None
    }

    fn put_back(&self, connection: Connection) {
        self.lock_idle().push(connection);
    }
}

/// Closes connections idle for longer than `idle_timeout`, until the pool
/// is dropped.
async fn reap(pool: Weak<Pool>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let expired: Vec<Connection> = {
            let mut idle = pool.lock_idle();
            let (old, fresh) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|c: &Connection| c.last_used.elapsed() >= idle_timeout);
            *idle = fresh;
            old
        };
        drop(pool);
        for connection in expired {
            connection.quit().await;
        }
    }
}

impl Transport for SmtpTransport {
    fn relay<'a>(
        &'a self,
        envelope_from: &'a str,
        admitted: &'a Admitted,
        message: &'a [u8],
    ) -> TransportFuture<'a> {
        Box::pin(self.send(envelope_from, admitted.to().as_str(), message))
    }
}

/// The platform's roots plus those in `ca_file`, on aws-lc-rs. There is no
/// way to switch verification off.
fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, SmtpSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let extra = match ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    let config = client_tls_config(provider, extra).map_err(SmtpSetupError::Trust)?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A TLS client that checks certificates with the platform verifier (the
/// system's roots plus `extra`), on aws-lc-rs. Also used for webhooks.
pub(crate) fn client_tls_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    extra: Vec<CertificateDer<'static>>,
) -> Result<ClientConfig, String> {
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| e.to_string())?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        // The only way rustls takes a verifier other than its own: the
        // platform verifier, which checks the chain and the name.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, SmtpSetupError> {
    let fail = |reason: String| SmtpSetupError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}
