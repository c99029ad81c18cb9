//! veto-gateway: an SMTP submission server that any mailing tool can send
//! through, and that lets no marketing message reach a person who said no.
//!
//! This crate holds the session core: the protocol state machine
//! ([`Session`]), classification, the two guard checks (at RCPT, and the
//! authoritative one at the end of DATA), the personal copies and the
//! receipts; the TCP listener ([`listen`]) with its connection limits,
//! STARTTLS ([`TlsConfig`]) and the default delivery ([`MaildirRelay`]);
//! and the inbound listener ([`listen_inbound`]) for mailto unsubscribes,
//! bounces and complaints sent to veto's own addresses. The upstream SMTP
//! relay plugs in through the [`Relay`] trait.

mod config;
mod dsn;
mod limits;
mod listen;
mod maildir;
mod reply;
mod session;
mod tls;

pub use config::{
    Config, FooterText, IpNetwork, Links, NetworkError, RefusedRecipients, TrustedNetwork,
};
pub use listen::{
    SHUTDOWN_GRACE, listen, listen_inbound, listen_inbound_with_grace, listen_with_grace,
};
pub use maildir::MaildirRelay;
pub use reply::{Fail, Reply};
pub use session::{Session, State};
pub use tls::{SelfSigned, TlsConfig, TlsError, self_signed};

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use veto_store::{Admitted, Guard, ReceiptLog};

/// What upstream said about one personal copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayOutcome {
    /// Upstream took responsibility for the copy (its reply, e.g. `250 2.0.0 Ok`).
    Accepted { reply: String },
    /// Upstream refused the copy for good (a 5xx reply).
    Rejected { reply: String },
}

/// Upstream could not take the copy now; the tool should retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream is temporarily unavailable: {0}")]
pub struct RelayError(pub String);

/// A boxed future, so that [`Relay`] can be a trait object.
pub type RelayFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RelayOutcome, RelayError>> + Send + 'a>>;

/// Where admitted copies go. It takes an [`Admitted`], which only the guard
/// can build: nothing reaches the wire without the guard's say.
pub trait Relay: Send + Sync {
    fn relay<'a>(
        &'a self,
        envelope_from: &'a str,
        admitted: &'a Admitted,
        message: &'a [u8],
    ) -> RelayFuture<'a>;
}

/// What every session of one listener shares.
pub struct Gateway {
    config: Config,
    guard: Guard,
    relay: Arc<dyn Relay>,
    /// Started on first use, inside the runtime.
    receipts: OnceLock<ReceiptLog>,
    /// Sessions running, against `max_connections` and `max_connections_per_client`.
    connections: limits::Connections,
}

impl Gateway {
    pub fn new(config: Config, guard: Guard, relay: Arc<dyn Relay>) -> Arc<Gateway> {
        let connections =
            limits::Connections::new(config.max_connections, config.max_connections_per_client);
        Arc::new(Gateway {
            config,
            guard,
            relay,
            receipts: OnceLock::new(),
            connections,
        })
    }

    /// Where receipts and relayed copies are committed, in groups.
    fn receipt_log(&self) -> &ReceiptLog {
        self.receipts
            .get_or_init(|| ReceiptLog::start(self.guard.store().clone()))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// A session for one accepted connection from `peer`.
    pub fn session<S>(self: &Arc<Self>, stream: S, peer: IpAddr) -> Session<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        Session::new(stream, peer, Arc::clone(self))
    }

    /// A session of the inbound listener (mail from anyone, for veto's own
    /// `unsubscribe+…@` and `bounces+…@` addresses only; never relayed) for
    /// one accepted connection from `peer`.
    pub fn inbound_session<S>(self: &Arc<Self>, stream: S, peer: IpAddr) -> Session<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        Session::inbound(stream, peer, Arc::clone(self))
    }
}
