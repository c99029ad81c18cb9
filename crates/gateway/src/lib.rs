//! veto-gateway: an SMTP submission server that any mailing tool can send
//! through, and that lets no marketing message reach a person who said no.
//!
//! This crate holds the session core: the protocol state machine
//! ([`Session`]), classification, the two guard checks (at RCPT, and the
//! authoritative one at the end of DATA), the personal copies and the
//! receipts; the TCP listener ([`listen`]) with its connection limits,
//! STARTTLS ([`TlsConfig`]), the default delivery ([`MaildirRelay`]) or the
//! upstream SMTP relay ([`SmtpTransport`]), both [`Relay`]s from
//! veto-sender; and the inbound listener ([`listen_inbound`]) for mailto
//! unsubscribes, bounces and complaints sent to veto's own addresses.

mod cache;
mod config;
mod dsn;
mod limits;
mod listen;
mod reply;
mod session;
mod tls;

pub use config::{
    Config, FooterText, IpNetwork, Links, NetworkError, RefusedRecipients, TrustedNetwork,
};
pub use listen::{
    SHUTDOWN_GRACE, listen, listen_inbound, listen_inbound_with_grace, listen_with_grace,
};
pub use reply::{Fail, Reply};
pub use session::{Session, State};
pub use tls::{SelfSigned, TlsConfig, TlsError, self_signed};

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use veto_store::{Guard, ReceiptLog};

// Where admitted copies go: veto-sender's transports (the maildir, the
// upstream SMTP relay), which campaigns use too. `Relay` takes an
// [`veto_store::Admitted`], which only the guard can build: nothing reaches
// the wire without the guard's say.
/// The default delivery: each copy a file in a maildir (synced before it
/// counts as accepted), so a newcomer sees exactly what would have gone out.
pub use veto_sender::MaildirTransport as MaildirRelay;
pub use veto_sender::transport::{
    Outcome as RelayOutcome, Transport as Relay, TransportError as RelayError,
    TransportFuture as RelayFuture,
};
pub use veto_sender::{SmtpSettings, SmtpTransport};

/// What every session of one listener shares.
pub struct Gateway {
    config: Config,
    guard: Guard,
    relay: Arc<dyn Relay>,
    /// Started on first use, inside the runtime.
    receipts: OnceLock<ReceiptLog>,
    /// Token keys and topics, read again every few seconds.
    cache: cache::Cache,
    /// Sessions running, against `max_connections` and `max_connections_per_client`.
    connections: limits::Connections,
    /// The personal copies: links, footer and DKIM from `config`.
    copies: veto_sender::CopyMaker,
    /// Set when the listeners stop: transactions in flight finish, no new
    /// one starts (`421 4.3.2` at MAIL).
    draining: std::sync::atomic::AtomicBool,
}

impl Gateway {
    pub fn new(config: Config, guard: Guard, relay: Arc<dyn Relay>) -> Arc<Gateway> {
        let connections =
            limits::Connections::new(config.max_connections, config.max_connections_per_client);
        let copies = veto_sender::CopyMaker {
            links: config.links.clone(),
            footer: config.footer.clone(),
            dkim: config.dkim.clone(),
        };
        Arc::new(Gateway {
            copies,
            config,
            guard,
            relay,
            receipts: OnceLock::new(),
            cache: cache::Cache::default(),
            connections,
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Stops new transactions in sessions still open (a listener stopping).
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
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
