//! A small scripted SMTP server on 127.0.0.1 that records what it reads
//! (each read as it came off the socket, each command line, each message),
//! a test CA, and admitted recipients from a temp store.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use veto_core::{Channel, EmailAddress, PolicySettings};
use veto_sender::{SmtpSettings, TlsMode};
use veto_store::{Admitted, Guard, GuardClass, Store};

/// How the fake upstream behaves.
#[derive(Clone)]
pub struct Script {
    /// EHLO keywords after the host name, e.g. `PIPELINING`, `AUTH PLAIN`.
    /// `STARTTLS` is added when `tls` is set (before TLS only).
    pub extensions: Vec<&'static str>,
    pub tls: Option<Arc<ServerConfig>>,
    /// AUTH is required, with this user name and password.
    pub auth: Option<(&'static str, &'static str)>,
    /// Replies that replace the normal one for commands starting with the
    /// key (`"RCPT"`, `"MAIL"`, `"DATA"`); a `354…` for DATA still reads the
    /// message.
    pub replies: Vec<(&'static str, &'static str)>,
    /// The reply after a message.
    pub after_message: &'static str,
    /// Never answer after a message (to test the reply timeout).
    pub silent_after_message: bool,
    /// After this many messages on one connection, say `farewell` (if
    /// any) and close it, as a server closing an idle connection does.
    pub close_after: Option<usize>,
    pub farewell: Option<&'static str>,
    /// RCPT replies by address: the first whose key the address contains.
    pub rcpt_for: Vec<(&'static str, &'static str)>,
    /// The first this-many RCPT commands (over all connections) are
    /// answered `451 4.3.0` (upstream busy).
    pub rcpt_temp_failures: usize,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            extensions: vec!["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"],
            tls: None,
            auth: None,
            replies: Vec::new(),
            after_message: "250 2.0.0 Ok: queued as 4XyZ",
            silent_after_message: false,
            close_after: None,
            farewell: None,
            rcpt_for: Vec::new(),
            rcpt_temp_failures: 0,
        }
    }
}

/// One message as upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub connection: usize,
    pub from: String,
    pub to: Vec<String>,
    /// The content after removing the transparency dots (DATA) or as sent
    /// (BDAT).
    pub content: Vec<u8>,
    /// The bytes on the wire, with the terminating `.` line for DATA.
    pub wire: Vec<u8>,
    /// When upstream had it all.
    pub at: std::time::Instant,
}

#[derive(Debug, Default, Clone)]
pub struct Log {
    pub connections: usize,
    /// Every read in command mode: (connection, bytes).
    pub reads: Vec<(usize, String)>,
    /// Every command line: (connection, line without CRLF).
    pub commands: Vec<(usize, String)>,
    pub messages: Vec<Received>,
    /// Everything that came as message content (after DATA or BDAT),
    /// delivered or not, as on the wire.
    pub contents: Vec<Vec<u8>>,
    /// Connections that ended with QUIT.
    pub quits: usize,
    /// For each MAIL that opened a transaction: whether it came over TLS.
    pub tls_at_mail: Vec<bool>,
    /// RCPT commands seen, over all connections.
    pub rcpts_seen: usize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Upstream {
    pub async fn start(script: Script) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let script = Arc::new(script);
        let shared = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let id = {
                    let mut log = shared.lock().unwrap();
                    log.connections += 1;
                    log.connections
                };
                tokio::spawn(serve(stream, id, script.clone(), shared.clone()));
            }
        });
        Upstream { addr, log }
    }

    pub fn log(&self) -> Log {
        self.log.lock().unwrap().clone()
    }

    /// Settings for this upstream: plain text, short timeouts.
    pub fn settings(&self) -> SmtpSettings {
        let mut s = SmtpSettings::new("127.0.0.1", self.addr.port(), "veto.test");
        s.tls = TlsMode::None;
        s.connect_timeout = Duration::from_secs(2);
        s.reply_timeout = Duration::from_secs(2);
        s
    }

    /// The command lines of one connection.
    pub fn commands(&self, connection: usize) -> Vec<String> {
        self.log()
            .commands
            .into_iter()
            .filter(|(c, _)| *c == connection)
            .map(|(_, line)| line)
            .collect()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    id: usize,
    log: Arc<Mutex<Log>>,
}

impl Conn {
    async fn write(&mut self, text: &str) -> bool {
        self.io.write_all(text.as_bytes()).await.is_ok() && self.io.flush().await.is_ok()
    }

    async fn fill(&mut self, record: bool) -> bool {
        let mut chunk = [0u8; 65536];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                if record {
                    self.log
                        .lock()
                        .unwrap()
                        .reads
                        .push((self.id, String::from_utf8_lossy(&chunk[..n]).into_owned()));
                }
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Some(line);
            }
            if !self.fill(true).await {
                return None;
            }
        }
    }

    /// DATA content up to and with the `.` line.
    async fn data(&mut self) -> Option<Vec<u8>> {
        loop {
            let at_start = self.buf.starts_with(b".\r\n");
            let end = if at_start {
                Some(0)
            } else {
                self.buf
                    .windows(5)
                    .position(|w| w == b"\r\n.\r\n")
                    .map(|p| p + 2)
            };
            if let Some(end) = end {
                let wire: Vec<u8> = self.buf.drain(..end + 3).collect();
                return Some(wire);
            }
            if !self.fill(false).await {
                return None;
            }
        }
    }

    async fn exactly(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill(false).await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
}

fn unstuff(wire: &[u8]) -> Vec<u8> {
    let body = &wire[..wire.len() - 3];
    let mut out = Vec::with_capacity(body.len());
    let mut line_start = true;
    let mut i = 0;
    while i < body.len() {
        if line_start && body[i] == b'.' {
            i += 1;
        }
        if i < body.len() {
            out.push(body[i]);
            line_start = body[i] == b'\n';
        }
        i += 1;
    }
    out
}

async fn serve(stream: TcpStream, id: usize, script: Arc<Script>, log: Arc<Mutex<Log>>) {
    let mut c = Conn {
        io: Box::new(stream),
        buf: Vec::new(),
        id,
        log: log.clone(),
    };
    if !c.write("220 fake.test ESMTP\r\n").await {
        return;
    }
    let mut tls_on = false;
    let mut authed = false;
    let mut mail: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut delivered = 0;
    while let Some(line) = c.line().await {
        log.lock().unwrap().commands.push((id, line.clone()));
        let upper = line.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("").to_owned();
        let verb = if upper.starts_with("MAIL FROM:") {
            "MAIL".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            "RCPT".to_owned()
        } else {
            verb
        };
        let scripted = script
            .replies
            .iter()
            .find(|(k, _)| *k == verb)
            .map(|(_, r)| *r);
        let mut message: Option<(Vec<u8>, Vec<u8>)> = None;
        match verb.as_str() {
            "EHLO" => {
                let mut lines = vec!["fake.test".to_owned()];
                if script.tls.is_some() && !tls_on {
                    lines.push("STARTTLS".into());
                }
                lines.extend(script.extensions.iter().map(|e| e.to_string()));
                let mut reply = String::new();
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                    reply.push_str(&format!("250{sep}{l}\r\n"));
                }
                c.write(&reply).await;
            }
            "STARTTLS" => {
                let Some(config) = script.tls.clone() else {
                    c.write("502 5.5.1 no TLS here\r\n").await;
                    continue;
                };
                c.write("220 2.0.0 go ahead\r\n").await;
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let io = std::mem::replace(&mut c.io, Box::new(tokio::io::duplex(1).0));
                match acceptor.accept(io).await {
                    Ok(tls) => c.io = Box::new(tls),
                    Err(_) => return,
                }
                c.buf.clear();
                tls_on = true;
            }
            "AUTH" => {
                let Some((user, pass)) = script.auth else {
                    c.write("502 5.5.1 no AUTH here\r\n").await;
                    continue;
                };
                let words: Vec<&str> = line.split(' ').collect();
                let ok = match words.get(1).map(|m| m.to_ascii_uppercase()).as_deref() {
                    Some("PLAIN") => {
                        let response = match words.get(2) {
                            Some(r) => r.to_string(),
                            None => {
                                c.write("334 \r\n").await;
                                c.line().await.unwrap_or_default()
                            }
                        };
                        b64(&response) == format!("\0{user}\0{pass}").into_bytes()
                    }
                    Some("LOGIN") => {
                        c.write("334 VXNlcm5hbWU6\r\n").await;
                        let u = c.line().await.unwrap_or_default();
                        c.write("334 UGFzc3dvcmQ6\r\n").await;
                        let p = c.line().await.unwrap_or_default();
                        b64(&u) == user.as_bytes() && b64(&p) == pass.as_bytes()
                    }
                    _ => false,
                };
                authed = ok;
                c.write(if ok {
                    "235 2.7.0 Authentication successful\r\n"
                } else {
                    "535 5.7.8 Authentication credentials invalid\r\n"
                })
                .await;
            }
            "MAIL" => {
                if mail.is_none() {
                    log.lock().unwrap().tls_at_mail.push(tls_on);
                }
                let reply = if mail.is_some() {
                    "503 5.5.1 Error: nested MAIL command"
                } else if script.auth.is_some() && !authed {
                    "530 5.7.0 Authentication required"
                } else {
                    scripted.unwrap_or("250 2.1.0 Ok")
                };
                if reply.starts_with('2') {
                    mail = Some(path_of(&line));
                }
                c.write(&format!("{reply}\r\n")).await;
            }
            "RCPT" => {
                let seen = {
                    let mut log = log.lock().unwrap();
                    log.rcpts_seen += 1;
                    log.rcpts_seen
                };
                let by_address = script
                    .rcpt_for
                    .iter()
                    .find(|(k, _)| line.contains(k))
                    .map(|(_, r)| *r);
                let reply = if mail.is_none() {
                    "503 5.5.1 Error: need MAIL command"
                } else if seen <= script.rcpt_temp_failures {
                    "451 4.3.0 Try again later"
                } else {
                    by_address.or(scripted).unwrap_or("250 2.1.5 Ok")
                };
                if reply.starts_with('2') {
                    rcpts.push(path_of(&line));
                }
                c.write(&format!("{reply}\r\n")).await;
            }
            "DATA" => {
                let reply = match scripted {
                    Some(r) => r,
                    None if mail.is_none() => "503 5.5.1 Error: need RCPT command",
                    None if rcpts.is_empty() => "554 5.5.1 Error: no valid recipients",
                    None => "354 End data with <CR><LF>.<CR><LF>",
                };
                c.write(&format!("{reply}\r\n")).await;
                if reply.starts_with("354") {
                    let Some(wire) = c.data().await else { return };
                    message = Some((unstuff(&wire), wire));
                }
            }
            "BDAT" => {
                let n: usize = upper
                    .split(' ')
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let Some(chunk) = c.exactly(n).await else {
                    return;
                };
                if mail.is_none() {
                    c.write("503 5.5.1 Error: need MAIL command\r\n").await;
                } else if rcpts.is_empty() {
                    c.write("554 5.5.1 Error: no valid recipients\r\n").await;
                } else {
                    message = Some((chunk.clone(), chunk));
                }
            }
            "RSET" => {
                mail = None;
                rcpts.clear();
                c.write("250 2.0.0 Ok\r\n").await;
            }
            "NOOP" => {
                c.write("250 2.0.0 Ok\r\n").await;
            }
            "QUIT" => {
                log.lock().unwrap().quits += 1;
                c.write("221 2.0.0 Bye\r\n").await;
                return;
            }
            _ => {
                c.write("502 5.5.2 Error: command not recognized\r\n").await;
            }
        }
        if let Some((content, wire)) = message {
            log.lock().unwrap().contents.push(wire.clone());
            if script.silent_after_message {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            let accepted = script.after_message.starts_with('2');
            if accepted && !rcpts.is_empty() {
                log.lock().unwrap().messages.push(Received {
                    connection: id,
                    from: mail.clone().unwrap_or_default(),
                    to: rcpts.clone(),
                    content,
                    wire,
                    at: std::time::Instant::now(),
                });
            }
            c.write(&format!("{}\r\n", script.after_message)).await;
            mail = None;
            rcpts.clear();
            delivered += 1;
            if script.close_after == Some(delivered) {
                if let Some(farewell) = script.farewell {
                    c.write(&format!("{farewell}\r\n")).await;
                }
                return;
            }
        }
    }
}

fn path_of(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line.find('>').unwrap_or(line.len());
    line[start..end].to_owned()
}

fn b64(text: &str) -> Vec<u8> {
    data_encoding::BASE64
        .decode(text.trim().as_bytes())
        .unwrap_or_default()
}

/// A CA and a certificate for `localhost` / 127.0.0.1 that it signed.
pub struct TestPki {
    pub ca_pem: String,
    pub server: Arc<ServerConfig>,
    /// The server's certificate and key, for a server in another program.
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "veto test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");

        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).expect("certificate");

        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        TestPki {
            ca_pem: ca.pem(),
            server: Arc::new(server),
            cert_pem,
            key_pem,
        }
    }
}

/// One recipient admitted by a guard over a fresh temp store (a service
/// message, which needs no consent record).
pub async fn admitted(to: &str) -> (tempfile::TempDir, Admitted) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&dir.path().join("veto.db"))
        .await
        .expect("store");
    let guard = Guard::new(store, PolicySettings::default());
    let email = EmailAddress::parse(to).expect("address");
    let admitted = guard
        .admit(&email, GuardClass::Service("test"), Channel::Email)
        .await
        .expect("store read")
        .expect("admitted");
    (dir, admitted)
}
