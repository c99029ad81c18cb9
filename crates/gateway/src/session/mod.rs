//! One SMTP session: a state machine over a byte stream.
//!
//! The wire parser is `smtp-proto`; each command has its `handle_<verb>`
//! in a file of its own. Replies are buffered and flushed only when the
//! session is about to wait for input, so pipelined commands (RFC 2920)
//! are answered in one write.

mod auth;
mod class;
mod data;
mod ehlo;
mod inbound;
mod mail;
mod rcpt;
mod starttls;

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use veto_core::{EmailAddress, Role, TopicKey};
use veto_store::NewReceipt;

use crate::tls::Stream;
use crate::{Gateway, Reply};
use inbound::Mode;

/// Where the session is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected; waiting for EHLO or HELO.
    Greeting,
    /// Greeted; no transaction open.
    Ehlo,
    /// MAIL FROM accepted; waiting for recipients.
    Mail,
    /// At least one recipient accepted.
    Rcpt,
    /// Reading message data.
    Data,
    /// The session is over.
    Quit,
}

/// Who may relay in this session, and what their mail is by default.
#[derive(Debug, Clone)]
struct Sender {
    /// `api-key:<prefix>` or `trusted-network:<cidr>`.
    actor: String,
    /// `None` for a trusted network.
    role: Option<Role>,
    /// Who holds the key (a DPO may not approve their own held sends).
    owner: Option<String>,
    default_topic: Option<String>,
    default_service: Option<String>,
}

impl Sender {
    /// The sender a client from a trusted network is before any AUTH.
    fn trusted(gateway: &Gateway, peer: IpAddr) -> Option<Sender> {
        gateway.config.trusted_network(peer).map(|n| Sender {
            actor: format!("trusted-network:{}", n.network),
            role: None,
            owner: None,
            default_topic: n.default_topic.as_ref().map(|t| t.as_str().to_owned()),
            default_service: None,
        })
    }
}

/// One mail transaction (MAIL FROM to the end of DATA).
#[derive(Debug, Default)]
struct Transaction {
    from: String,
    recipients: Vec<EmailAddress>,
    /// The classification known at RCPT time (the sender's default).
    class: Option<class::Class>,
    /// Recipients refused (or discarded) at RCPT, receipted when the
    /// message is known.
    refused: Vec<NewReceipt>,
    /// The inbound listener's recipients: veto's own addresses.
    inbound: Vec<inbound::Recipient>,
}

/// The least room a read from the client is given.
const READ_SIZE: usize = 8192;

/// What reading one line gave.
enum Line {
    /// The line, LF included, is `input[range]` until the next read.
    Complete(Range<usize>),
    /// Longer than the limit; the rest up to LF was discarded.
    TooLong,
    Eof,
    Timeout,
}

pub struct Session<S> {
    /// Plain until STARTTLS.
    stream: Stream<S>,
    peer: IpAddr,
    gateway: Arc<Gateway>,
    mode: Mode,
    state: State,
    /// Shared, not copied, by each RCPT and DATA that needs it.
    sender: Option<Arc<Sender>>,
    /// Set once AUTH succeeded (a second AUTH is refused).
    authenticated: bool,
    tx: Transaction,
    /// What the client sent; its first `consumed` octets were handed out
    /// as lines already (dropped before the next read, not line by line).
    input: Vec<u8>,
    consumed: usize,
    output: Vec<u8>,
    errors: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(stream: S, peer: IpAddr, gateway: Arc<Gateway>) -> Session<S> {
        let sender = Sender::trusted(&gateway, peer).map(Arc::new);
        Session {
            stream: Stream::Plain(stream),
            peer,
            gateway,
            mode: Mode::Submission,
            state: State::Greeting,
            sender,
            authenticated: false,
            tx: Transaction::default(),
            input: Vec::with_capacity(2 * READ_SIZE),
            consumed: 0,
            output: Vec::with_capacity(1024),
            errors: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Runs the session until QUIT, EOF, a timeout or too many errors.
    pub async fn run(mut self) -> std::io::Result<()> {
        let greeting = format!("{} ESMTP veto", self.gateway.config.hostname);
        self.reply(Reply::new(220, "", greeting));
        while self.state != State::Quit {
            let limit = self.gateway.config.max_command_line;
            let timeout = self.gateway.config.command_timeout;
            match self.read_line(limit, timeout).await? {
                Line::Eof => break,
                Line::Timeout => {
                    self.timed_out();
                    break;
                }
                Line::TooLong => self.error(Reply::new(500, "5.5.2", "Line too long")),
                Line::Complete(at) => {
                    let line = self.input[at].to_vec();
                    self.handle_line(&line).await?
                }
            }
        }
        self.flush().await?;
        // TLS ends with a close_notify. Plain TCP needs nothing more: the
        // socket's close, when the session is dropped, sends the FIN (a
        // shutdown first would be one more system call for every session).
        if self.stream.is_tls() {
            let _ = self.stream.shutdown().await;
        }
        Ok(())
    }

    async fn handle_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(e) => {
                let reply = proto_error_reply(&e);
                self.error(reply);
                return Ok(());
            }
        };
        tracing::trace!(peer = %self.peer, command = request.name(), "smtp command");
        let inbound = self.mode == Mode::Inbound;
        match request {
            Request::Ehlo { host } => self.handle_ehlo(&host, true),
            Request::Helo { host } => self.handle_ehlo(&host, false),
            Request::Auth { .. } if inbound => self.error(Reply::new(
                502,
                "5.5.1",
                "AUTH is not offered here: this server takes mail for veto's own addresses only",
            )),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.handle_auth(mechanism, &initial_response).await?,
            Request::Mail { .. } if self.gateway.is_draining() => {
                // Shutting down: the transaction in flight has finished; the
                // client retries the next one elsewhere or after the restart.
                self.reply(Reply::new(
                    421,
                    "4.3.2",
                    "veto is shutting down; try again later",
                ));
                self.state = State::Quit;
            }
            Request::Mail { from } => self.handle_mail(&from),
            Request::Rcpt { to } if inbound => self.inbound_rcpt(&to.address).await,
            Request::Rcpt { to } => self.handle_rcpt(&to.address).await,
            Request::Data => self.handle_data().await?,
            Request::Rset => self.handle_rset(),
            Request::Noop { .. } => self.reply(Reply::new(250, "2.0.0", "OK")),
            Request::Quit => self.handle_quit(),
            Request::StartTls => self.handle_starttls().await?,
            Request::Lhlo { .. }
            | Request::Bdat { .. }
            | Request::Vrfy { .. }
            | Request::Expn { .. }
            | Request::Help { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.error(Reply::new(502, "5.5.1", "Command not implemented"));
            }
        }
        Ok(())
    }

    fn handle_rset(&mut self) {
        self.reset_transaction();
        self.reply(Reply::new(250, "2.0.0", "OK"));
    }

    fn handle_quit(&mut self) {
        self.reply(Reply::new(221, "2.0.0", "Bye"));
        self.state = State::Quit;
    }

    /// Ends the transaction; the session stays greeted.
    fn reset_transaction(&mut self) {
        self.tx = Transaction::default();
        if self.state != State::Greeting {
            self.state = State::Ehlo;
        }
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    /// A client error: replied, counted; too many close the session.
    fn error(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.gateway.config.max_errors {
            self.reply(Reply::new(
                421,
                "4.7.0",
                "Too many errors, closing connection",
            ));
            self.state = State::Quit;
        }
    }

    fn timed_out(&mut self) {
        let text = format!(
            "{} timeout, closing connection",
            self.gateway.config.hostname
        );
        self.reply(Reply::new(421, "4.4.2", text));
        self.state = State::Quit;
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Reads one line, LF included, of at most `limit` octets, within
    /// `timeout` for the whole line (a byte a minute does not keep the
    /// session open). Pending replies are flushed before the session waits
    /// for the client.
    async fn read_line(&mut self, limit: usize, timeout: Duration) -> std::io::Result<Line> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut discarding = false;
        let mut scanned = 0;
        loop {
            let start = self.consumed;
            if let Some(pos) = memchr::memchr(b'\n', &self.input[start + scanned..]) {
                let end = start + scanned + pos + 1;
                self.consumed = end;
                if discarding || end - start > limit {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(start..end));
            }
            // No whole line buffered: drop the lines handed out (one move of
            // the partial line, not one of the whole rest for every line).
            self.input.drain(..start);
            self.consumed = 0;
            if self.input.len() > limit {
                // Keep memory bounded: drop what was read of the long line.
                discarding = true;
                self.input.clear();
            }
            scanned = self.input.len();
            self.flush().await?;
            // Straight into the buffer's spare room: no scratch buffer to
            // zero and copy from on every read.
            self.input.reserve(READ_SIZE);
            let read = self.stream.read_buf(&mut self.input);
            let n = match tokio::time::timeout_at(deadline, read).await {
                Err(_) => return Ok(Line::Timeout),
                Ok(read) => read?,
            };
            if n == 0 {
                return Ok(Line::Eof);
            }
        }
    }
}

fn proto_error_reply(e: &ProtoError) -> Reply {
    match e {
        ProtoError::UnknownCommand => Reply::new(500, "5.5.1", "Unrecognized command"),
        ProtoError::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        ProtoError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "Bad recipient address syntax")
        }
        ProtoError::SyntaxError { syntax } => {
            Reply::new(501, "5.5.4", format!("Syntax error, expected: {syntax}"))
        }
        ProtoError::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("Invalid parameter {param:?}"))
        }
        ProtoError::UnsupportedParameter { param } => {
            Reply::new(555, "5.5.4", format!("Unsupported parameter {param:?}"))
        }
        ProtoError::NeedsMoreData { .. }
        | ProtoError::ResponseTooLong
        | ProtoError::InvalidResponse { .. } => Reply::new(500, "5.5.2", "Syntax error"),
    }
}

/// A topic key, as the store spells it.
fn topic_key(s: &str) -> Option<TopicKey> {
    TopicKey::parse(s).ok()
}
