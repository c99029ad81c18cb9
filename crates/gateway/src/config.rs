//! The gateway's settings.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use veto_core::TopicKey;
use veto_mail::dkim::Signer;
use veto_store::SoftBounceLimit;

use crate::TlsConfig;

/// Session limits, who may relay, and what goes into each personal copy.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message accepted (advertised as `SIZE`).
    pub max_message_size: usize,
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4 says 512;
    /// extensions and AUTH initial responses need more).
    pub max_command_line: usize,
    /// Longest line of message data, CRLF included (RFC 5321 §4.5.3.1.6).
    pub max_data_line: usize,
    /// Recipients per transaction (RFC 5321 §4.5.3.1.8: at least 100).
    pub max_recipients: usize,
    /// How long the client may take to send a command (RFC 5321 §4.5.3.2.7: 5 minutes).
    pub command_timeout: Duration,
    /// How long the client may pause inside DATA (RFC 5321 §4.5.3.2.6: 10 minutes).
    pub data_timeout: Duration,
    /// Bad commands after which the session is closed.
    pub max_errors: u32,
    /// Clients that may relay without AUTH, each with its default topic.
    pub trusted_networks: Vec<TrustedNetwork>,
    pub links: Links,
    pub footer: FooterText,
    /// What a refused recipient is told at RCPT.
    pub refused_recipients: RefusedRecipients,
    /// Declared service message types (`Veto-Class: service; type=...`).
    pub service_types: BTreeSet<String>,
    /// Service mail to more recipients than this from one sender within
    /// `bulk_window` is held (`450 4.7.1`) until a DPO approves it.
    pub bulk_threshold: u64,
    pub bulk_window: Duration,
    /// DKIM signatures put on every copy, in this order (e.g. RSA, then
    /// Ed25519). Empty: copies go unsigned.
    pub dkim: Vec<Arc<Signer>>,
    /// The certificate STARTTLS presents; `None`: no STARTTLS, and AUTH is
    /// offered in plaintext.
    pub tls: Option<TlsConfig>,
    /// Sessions at once; the listener answers more with `421 4.7.0`.
    pub max_connections: usize,
    /// Sessions at once from one IP address.
    pub max_connections_per_client: usize,
    /// Inbound listener: how many soft bounces within how long make a hard
    /// bounce.
    pub soft_bounces: SoftBounceLimit,
}

/// What the gateway says at RCPT to a recipient the guard refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedRecipients {
    /// `550 5.7.1 <addr> has not agreed to receive <topic> (reason)`.
    Reject,
    /// `250`, and the recipient gets nothing (receipted as discarded): for
    /// tools that stop a whole send at the first 5xx.
    Discard,
}

pub use veto_sender::copy::{FooterText, Links};

impl Config {
    /// Sensible limits; links and footer must still be set.
    pub fn new(hostname: &str, links: Links, footer: FooterText) -> Config {
        Config {
            hostname: hostname.to_owned(),
            max_message_size: veto_mail::rewrite::MAX_MESSAGE_SIZE,
            max_command_line: 2048,
            max_data_line: 1000,
            max_recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_errors: 10,
            trusted_networks: Vec::new(),
            links,
            footer,
            refused_recipients: RefusedRecipients::Reject,
            service_types: BTreeSet::new(),
            bulk_threshold: 100,
            bulk_window: Duration::from_secs(24 * 60 * 60),
            dkim: Vec::new(),
            soft_bounces: SoftBounceLimit::default(),
            tls: None,
            max_connections: 1000,
            max_connections_per_client: 50,
        }
    }

    /// The trusted network `ip` is in, if any (the first that matches).
    pub fn trusted_network(&self, ip: IpAddr) -> Option<&TrustedNetwork> {
        self.trusted_networks
            .iter()
            .find(|n| n.network.contains(ip))
    }
}

/// A network whose clients may relay without AUTH.
#[derive(Debug, Clone)]
pub struct TrustedNetwork {
    pub network: IpNetwork,
    /// The classification of its mail at RCPT time; `None`: each message
    /// must say with `Veto-Topic`.
    pub default_topic: Option<TopicKey>,
}

/// An address prefix such as `127.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network: write an address with a prefix length, e.g. 10.0.0.0/8")]
pub struct NetworkError(pub String);

impl IpNetwork {
    pub fn parse(s: &str) -> Result<IpNetwork, NetworkError> {
        let bad = || NetworkError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                let prefix: u8 = p.parse().map_err(|_| bad())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = s.trim().parse().map_err(|_| bad())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(IpNetwork { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let n = IpNetwork::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all = IpNetwork::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let one = IpNetwork::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        assert!(IpNetwork::parse("10.0.0.0/33").is_err());
        assert!(IpNetwork::parse("nonsense").is_err());
    }
}
