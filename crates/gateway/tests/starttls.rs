//! STARTTLS (RFC 3207) and AUTH over TLS (RFC 4954 §4), over an in-memory
//! duplex stream with a rustls client that trusts the test certificate.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::{World, config, message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use veto_gateway::TlsConfig;

const HOST: &str = "gateway.test";

/// A world whose gateway has a fresh self-signed certificate for `HOST`;
/// the certificate's PEM, for the client to trust.
async fn tls_world() -> (World, String) {
    let pair = veto_gateway::self_signed(HOST).expect("a self-signed certificate");
    let mut config = config();
    config.tls = Some(
        TlsConfig::from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())
            .expect("the pair loads"),
    );
    (World::with_config(config).await, pair.cert_pem)
}

/// The connection as the client sees it: plain, then TLS.
enum Io {
    Plain(DuplexStream),
    Tls(Box<TlsStream<DuplexStream>>),
    Upgrading,
}

struct Client {
    io: Io,
    buf: Vec<u8>,
}

async fn connect(w: &World, peer: &str) -> Client {
    connect_to(w, peer, false).await
}

/// A client of the submission listener, or of the inbound one.
async fn connect_to(w: &World, peer: &str, inbound: bool) -> Client {
    let (client, server) = tokio::io::duplex(1 << 16);
    let peer: IpAddr = peer.parse().unwrap();
    if inbound {
        tokio::spawn(w.gateway.inbound_session(server, peer).run());
    } else {
        tokio::spawn(w.gateway.session(server, peer).run());
    }
    let mut c = Client {
        io: Io::Plain(client),
        buf: Vec::new(),
    };
    let greeting = c.read_reply().await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    c
}

async fn write(io: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    io.write_all(bytes).await.unwrap();
    io.flush().await.unwrap();
}

async fn read(io: &mut (impl AsyncRead + Unpin), chunk: &mut [u8]) -> usize {
    tokio::time::timeout(Duration::from_secs(10), io.read(chunk))
        .await
        .expect("the gateway answered within 10 s")
        .unwrap_or(0)
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        match &mut self.io {
            Io::Plain(io) => write(io, bytes).await,
            Io::Tls(io) => write(io.as_mut(), bytes).await,
            Io::Upgrading => unreachable!(),
        }
    }

    /// One whole reply (all its lines), or "EOF".
    async fn read_reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let line = loop {
                if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=pos).collect();
                    break Some(String::from_utf8(line).unwrap());
                }
                let mut chunk = [0u8; 4096];
                let n = match &mut self.io {
                    Io::Plain(io) => read(io, &mut chunk).await,
                    Io::Tls(io) => read(io.as_mut(), &mut chunk).await,
                    Io::Upgrading => unreachable!(),
                };
                if n == 0 {
                    break None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            };
            let Some(line) = line else {
                return if reply.is_empty() {
                    "EOF".into()
                } else {
                    reply
                };
            };
            reply.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return reply;
            }
        }
    }

    async fn cmd(&mut self, line: &str, expected: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let reply = self.read_reply().await;
        assert!(
            reply.starts_with(expected),
            "{line:?}: expected {expected}, got {reply:?}"
        );
        reply
    }

    async fn ehlo(&mut self) -> String {
        self.cmd("EHLO tool.example", "250").await
    }

    /// The TLS handshake, trusting `cert_pem` for `HOST`.
    async fn handshake(&mut self, cert_pem: &str) {
        assert!(self.buf.is_empty(), "unread plaintext: {:?}", self.buf);
        let Io::Plain(plain) = std::mem::replace(&mut self.io, Io::Upgrading) else {
            panic!("TLS is already on");
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
            roots.add(cert.expect("test certificate")).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from(HOST).unwrap(), plain),
        )
        .await
        .expect("the handshake finished within 10 s")
        .expect("the handshake succeeds");
        self.io = Io::Tls(Box::new(tls));
    }

    async fn starttls(&mut self, cert_pem: &str) {
        self.cmd("STARTTLS", "220 2.0.0").await;
        self.handshake(cert_pem).await;
    }
}

fn plain_auth(key: &str) -> String {
    let response = data_encoding::BASE64.encode(format!("\0tool\0{key}").as_bytes());
    format!("AUTH PLAIN {response}")
}

/// The extension keywords of an EHLO reply (without the greeting line).
fn extensions(ehlo: &str) -> Vec<String> {
    ehlo.lines()
        .skip(1)
        .map(|l| l.get(4..).unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn after_starttls_the_session_starts_over_inside_tls() {
    let (w, cert) = tls_world().await;
    w.grant("ann@example.com", &w.news).await;
    // Loopback: AUTH is allowed in plaintext too.
    let mut c = connect(&w, "127.0.0.1").await;
    let ehlo = extensions(&c.ehlo().await);
    assert!(ehlo.contains(&"STARTTLS".to_owned()), "{ehlo:?}");
    assert!(ehlo.contains(&"AUTH PLAIN LOGIN".to_owned()), "{ehlo:?}");
    c.cmd(&plain_auth(&w.news_key), "235").await;
    c.starttls(&cert).await;

    // RFC 3207 §4.2: EHLO and AUTH are forgotten.
    c.cmd("MAIL FROM:<news@shop.example>", "503 5.5.1").await;
    let ehlo = extensions(&c.ehlo().await);
    assert!(!ehlo.contains(&"STARTTLS".to_owned()), "{ehlo:?}");
    assert!(ehlo.contains(&"AUTH PLAIN LOGIN".to_owned()), "{ehlo:?}");
    c.cmd("MAIL FROM:<news@shop.example>", "250").await;
    c.cmd("RCPT TO:<ann@example.com>", "530 5.7.0").await;
    c.cmd("RSET", "250").await;

    c.cmd("STARTTLS", "503 5.5.1").await;
    c.cmd(&plain_auth(&w.news_key), "235").await;
    c.cmd("MAIL FROM:<news@shop.example>", "250").await;
    c.cmd("RCPT TO:<ann@example.com>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(&message("")).await;
    let done = c.cmd(".", "250 2.0.0").await;
    assert!(done.contains("1 delivered"), "{done}");
    c.cmd("QUIT", "221").await;
    let relayed = w.relayed();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].to, "ann@example.com");
}

#[tokio::test]
async fn starttls_needs_ehlo_first_and_no_open_transaction() {
    let (w, cert) = tls_world().await;
    let mut c = connect(&w, "10.0.0.7").await;
    c.cmd("STARTTLS", "503 5.5.1").await;
    c.ehlo().await;
    c.cmd("MAIL FROM:<news@shop.example>", "250").await;
    c.cmd("STARTTLS", "503 5.5.1").await;
    c.cmd("RSET", "250").await;
    c.starttls(&cert).await;
    c.ehlo().await;
    c.cmd("QUIT", "221").await;
}

/// The STARTTLS command injection (CVE-2011-0411): commands sent in the
/// same packet as STARTTLS came in plaintext and must not be executed as
/// if they had come over TLS.
#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let (w, cert) = tls_world().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = connect(&w, "192.0.2.1").await;
    c.ehlo().await;
    let injected = format!(
        "STARTTLS\r\nEHLO injected.example\r\n{}\r\nMAIL FROM:<evil@attacker.example>\r\n",
        plain_auth(&w.news_key)
    );
    c.send(injected.as_bytes()).await;
    let reply = c.read_reply().await;
    assert!(reply.starts_with("220 2.0.0"), "{reply}");
    c.handshake(&cert).await;

    // The first reply inside TLS answers the client's own EHLO.
    let ehlo = c.ehlo().await;
    assert!(
        ehlo.starts_with("250-gateway.test greets tool.example"),
        "{ehlo}"
    );
    // The injected MAIL FROM opened no transaction, the injected AUTH
    // authenticated nobody.
    c.cmd("RCPT TO:<ann@example.com>", "503 5.5.1").await;
    c.cmd("MAIL FROM:<news@shop.example>", "250").await;
    c.cmd("RCPT TO:<ann@example.com>", "530 5.7.0").await;
    c.cmd("QUIT", "221").await;
    assert!(w.relayed().is_empty());
}

#[tokio::test]
async fn a_remote_client_authenticates_only_over_tls() {
    let (w, cert) = tls_world().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = connect(&w, "192.0.2.1").await;
    let ehlo = extensions(&c.ehlo().await);
    assert!(ehlo.contains(&"STARTTLS".to_owned()), "{ehlo:?}");
    assert!(
        !ehlo.iter().any(|e| e.starts_with("AUTH")),
        "AUTH offered in plaintext: {ehlo:?}"
    );
    c.cmd(&plain_auth(&w.news_key), "538 5.7.11 Encryption required")
        .await;
    // No challenge either: the password would follow in plaintext.
    c.cmd("AUTH LOGIN", "538 5.7.11").await;
    c.cmd("AUTH PLAIN", "538 5.7.11").await;
    c.cmd("MAIL FROM:<news@shop.example>", "250").await;
    c.cmd("RCPT TO:<ann@example.com>", "530 5.7.0").await;
    c.cmd("RSET", "250").await;

    c.starttls(&cert).await;
    let ehlo = extensions(&c.ehlo().await);
    assert!(ehlo.contains(&"AUTH PLAIN LOGIN".to_owned()), "{ehlo:?}");
    c.cmd(&plain_auth(&w.news_key), "235 2.7.0").await;
    c.cmd("MAIL FROM:<news@shop.example>", "250").await;
    c.cmd("RCPT TO:<ann@example.com>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(&message("")).await;
    c.cmd(".", "250 2.0.0").await;
    let relayed = w.relayed();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].to, "ann@example.com");
}

#[tokio::test]
async fn a_failed_handshake_ends_the_session_and_delivers_nothing() {
    let (w, _cert) = tls_world().await;
    let mut c = connect(&w, "10.0.0.7").await;
    c.ehlo().await;
    c.cmd("STARTTLS", "220").await;
    // Not a TLS ClientHello.
    c.send(b"MAIL FROM:<news@shop.example>\r\nRCPT TO:<ann@example.com>\r\n")
        .await;
    assert_eq!(c.read_reply().await, "EOF");
    assert!(w.relayed().is_empty());
}

#[tokio::test]
async fn without_a_certificate_there_is_no_starttls_and_auth_stays_plain() {
    let w = World::new().await;
    let mut c = connect(&w, "192.0.2.1").await;
    let ehlo = extensions(&c.ehlo().await);
    assert!(!ehlo.contains(&"STARTTLS".to_owned()), "{ehlo:?}");
    assert!(ehlo.contains(&"AUTH PLAIN LOGIN".to_owned()), "{ehlo:?}");
    c.cmd("STARTTLS", "502 5.5.1").await;
    c.cmd(&plain_auth(&w.news_key), "235").await;
}

#[tokio::test]
async fn the_inbound_listener_offers_starttls_but_never_auth() {
    let (w, cert) = tls_world().await;
    let mut c = connect_to(&w, "192.0.2.25", true).await;
    let ehlo = extensions(&c.ehlo().await);
    assert!(ehlo.contains(&"STARTTLS".to_owned()), "{ehlo:?}");
    assert!(!ehlo.iter().any(|e| e.starts_with("AUTH")), "{ehlo:?}");
    c.starttls(&cert).await;
    let ehlo = extensions(&c.ehlo().await);
    assert!(
        !ehlo
            .iter()
            .any(|e| e.starts_with("AUTH") || e == "STARTTLS"),
        "{ehlo:?}"
    );
    // Still only veto's own addresses, inside TLS too.
    c.cmd("MAIL FROM:<>", "250").await;
    c.cmd("RCPT TO:<someone@elsewhere.example>", "550 5.7.1")
        .await;
    c.cmd(&plain_auth(&w.news_key), "502").await;
}
