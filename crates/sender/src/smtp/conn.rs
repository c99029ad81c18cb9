//! One connection to upstream: opened with mail-send (greeting, EHLO,
//! STARTTLS, EHLO again, AUTH), then transactions written by veto itself —
//! mail-send sends MAIL, RCPT and DATA one by one, waiting for each reply,
//! which costs three round trips a message that RFC 2920 lets us save.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mail_send::SmtpClient;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_CHUNKING, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS,
    EhloResponse,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::wire::{self, Extensions, Reply};
use super::{Settings, TlsMode};

/// The socket under a connection: plain, or TLS after STARTTLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What upstream said to one transaction, on a connection still usable.
#[derive(Debug)]
pub enum Sent {
    /// 2xx after the message.
    Accepted(Reply),
    /// A 5xx at MAIL, RCPT, DATA or after the message.
    Rejected(Reply),
    /// A 4xx anywhere, or a reply SMTP does not allow there.
    Deferred(String),
}

/// The connection cannot be used any more.
#[derive(Debug)]
pub struct Broken {
    pub reason: String,
    /// Nothing of this transaction can have been delivered, so it may be
    /// tried again on another connection (a pooled connection that upstream
    /// had closed meanwhile: no reply at all, or a 421 first).
    pub retry_safe: bool,
}

pub struct Connection {
    stream: Stream,
    ext: Extensions,
    /// Bytes read but not yet parsed as replies.
    read_buf: Vec<u8>,
    read_at: usize,
    write_buf: Vec<u8>,
    /// A failed transaction may have left a MAIL open: RSET before the next.
    needs_rset: bool,
    /// Upstream said 421: it is closing this connection.
    closing: bool,
    pub last_used: Instant,
    reply_timeout: Duration,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO, upgrades with STARTTLS when
    /// `tls` asks for it (and fails if upstream does not offer it), and
    /// authenticates when there are credentials.
    pub async fn open(settings: &Settings) -> Result<Connection, String> {
        let (host, port) = (settings.host.as_str(), settings.port);
        let connect =
            tokio::time::timeout(settings.connect_timeout, TcpStream::connect((host, port)));
        let tcp = match connect.await {
            Err(_) => {
                return Err(format!(
                    "no connection to {host}:{port} within {:?}",
                    settings.connect_timeout
                ));
            }
            Ok(Err(e)) => return Err(format!("cannot connect to {host}:{port}: {e}")),
            Ok(Ok(tcp)) => tcp,
        };
        // Commands and replies are small and written whole: never wait
        // for Nagle.
        let _ = tcp.set_nodelay(true);
        let timeout = settings.reply_timeout;
        let mut client = SmtpClient {
            stream: tcp,
            timeout,
        };
        let greeting = tokio::time::timeout(timeout, client.read())
            .await
            .map_err(|_| format!("{host}:{port} sent no greeting within {timeout:?}"))?
            .map_err(|e| format!("{host}:{port} greeting: {}", describe(e)))?;
        if !(200..300).contains(&greeting.code()) {
            return Err(format!("{host}:{port} greeted with {greeting}"));
        }
        let helo = settings.helo_name.as_str();
        let ehlo = client
            .ehlo(helo)
            .await
            .map_err(|e| format!("{host}:{port} EHLO: {}", describe(e)))?;
        let (mut client, ehlo) = match (&settings.tls, settings.tls_connector.as_ref()) {
            (TlsMode::StartTls, Some(connector)) => {
                if !ehlo.has_capability(EXT_START_TLS) {
                    return Err(format!(
                        "{host}:{port} does not offer STARTTLS, which tls = \"starttls\" requires"
                    ));
                }
                let client = client
                    .start_tls(connector, host)
                    .await
                    .map_err(|e| format!("{host}:{port} STARTTLS: {}", describe(e)))?;
                let mut client = SmtpClient {
                    stream: Stream::Tls(Box::new(client.stream)),
                    timeout,
                };
                // RFC 3207 §4.2: forget what was said before TLS.
                let ehlo = client
                    .ehlo(helo)
                    .await
                    .map_err(|e| format!("{host}:{port} EHLO after STARTTLS: {}", describe(e)))?;
                (client, ehlo)
            }
            _ => (
                SmtpClient {
                    stream: Stream::Plain(client.stream),
                    timeout,
                },
                ehlo,
            ),
        };
        if let Some(credentials) = &settings.credentials {
            client
                .authenticate(credentials, &ehlo)
                .await
                .map_err(|e| format!("{host}:{port} AUTH: {}", describe(e)))?;
        }
        Ok(Connection {
            stream: client.stream,
            ext: extensions(&ehlo),
            read_buf: Vec::with_capacity(1024),
            read_at: 0,
            write_buf: Vec::with_capacity(4096),
            needs_rset: false,
            closing: false,
            last_used: Instant::now(),
            reply_timeout: timeout,
        })
    }

    /// Whether the connection may go back to the pool.
    pub fn reusable(&self) -> bool {
        !self.closing
    }

    /// One transaction: `from` (already a valid path, `""` for the null
    /// sender), one recipient, the message.
    pub async fn send(&mut self, from: &str, to: &str, message: &[u8]) -> Result<Sent, Broken> {
        let mut tx = Tx {
            replies_read: 0,
            body_sent: false,
            timed_out: false,
        };
        let result = if self.ext.pipelining {
            self.send_pipelined(&mut tx, from, to, message).await
        } else {
            self.send_in_steps(&mut tx, from, to, message).await
        };
        self.last_used = Instant::now();
        result.map_err(|reason| Broken {
            reason,
            // A silent upstream may be slow rather than gone: once the
            // message went out, only a connection that answered nothing
            // and was seen to close is safe to try again.
            retry_safe: !tx.body_sent || (tx.replies_read == 0 && !tx.timed_out),
        })
    }

    /// RFC 2920: `[RSET] MAIL RCPT DATA` in one write, then the message;
    /// with CHUNKING, `[RSET] MAIL RCPT BDAT n LAST` and the message all in
    /// one write.
    async fn send_pipelined(
        &mut self,
        tx: &mut Tx,
        from: &str,
        to: &str,
        message: &[u8],
    ) -> Result<Sent, String> {
        let rset = std::mem::take(&mut self.needs_rset);
        let bdat = self.ext.chunking;
        let mut out = std::mem::take(&mut self.write_buf);
        out.clear();
        if rset {
            out.extend_from_slice(b"RSET\r\n");
        }
        wire::push_mail_from(&mut out, from, to, message, self.ext);
        wire::push_rcpt_to(&mut out, to);
        if bdat {
            wire::push_bdat(&mut out, message);
        } else {
            out.extend_from_slice(b"DATA\r\n");
        }
        let written = self.write(&out).await;
        self.write_buf = out;
        written?;
        tx.body_sent = bdat;

        if rset {
            let reply = self.reply(tx).await?;
            if !reply.is_positive() {
                return Err(format!("upstream refused RSET: {}", reply.text));
            }
        }
        let mail = self.reply(tx).await?;
        let rcpt = self.reply(tx).await?;
        let last = self.reply(tx).await?;
        if bdat {
            let refused = [&mail, &rcpt].into_iter().find(|r| !r.is_positive());
            return Ok(match refused {
                Some(r) => {
                    self.needs_rset = true;
                    refusal(r)
                }
                None => {
                    if !last.is_positive() {
                        self.needs_rset = true;
                    }
                    final_outcome(&last)
                }
            });
        }
        let refused = [&mail, &rcpt].into_iter().find(|r| !r.is_positive());
        if last.code != 354 {
            // DATA refused: no message follows; MAIL may still be open.
            self.needs_rset = true;
            return Ok(refusal(refused.unwrap_or(&last)));
        }
        if let Some(refused) = refused {
            // RFC 2920 §3.1: DATA accepted although the envelope failed;
            // end it with an empty message, which upstream must not deliver.
            let refused = refused.clone();
            self.write(b".\r\n").await?;
            self.reply(tx).await?;
            self.needs_rset = true;
            return Ok(refusal(&refused));
        }
        self.data(tx, message).await
    }

    /// Without PIPELINING: one command, one reply.
    async fn send_in_steps(
        &mut self,
        tx: &mut Tx,
        from: &str,
        to: &str,
        message: &[u8],
    ) -> Result<Sent, String> {
        let mut out = std::mem::take(&mut self.write_buf);
        let result = async {
            if std::mem::take(&mut self.needs_rset) {
                let reply = self.command(tx, b"RSET\r\n").await?;
                if !reply.is_positive() {
                    return Err(format!("upstream refused RSET: {}", reply.text));
                }
            }
            out.clear();
            wire::push_mail_from(&mut out, from, to, message, self.ext);
            let reply = self.command(tx, &out).await?;
            if !reply.is_positive() {
                self.needs_rset = true;
                return Ok(Err(refusal(&reply)));
            }
            out.clear();
            wire::push_rcpt_to(&mut out, to);
            let reply = self.command(tx, &out).await?;
            if !reply.is_positive() {
                self.needs_rset = true;
                return Ok(Err(refusal(&reply)));
            }
            let reply = self.command(tx, b"DATA\r\n").await?;
            if reply.code != 354 {
                self.needs_rset = true;
                return Ok(Err(refusal(&reply)));
            }
            Ok(Ok(()))
        }
        .await;
        self.write_buf = out;
        match result? {
            Ok(()) => self.data(tx, message).await,
            Err(sent) => Ok(sent),
        }
    }

    /// After `354`: the message, dot-stuffed, and its final reply.
    async fn data(&mut self, tx: &mut Tx, message: &[u8]) -> Result<Sent, String> {
        let mut out = std::mem::take(&mut self.write_buf);
        out.clear();
        wire::push_data(&mut out, message);
        tx.body_sent = true;
        let written = self.write(&out).await;
        self.write_buf = out;
        written?;
        let reply = self.reply(tx).await?;
        Ok(final_outcome(&reply))
    }

    async fn command(&mut self, tx: &mut Tx, command: &[u8]) -> Result<Reply, String> {
        self.write(command).await?;
        self.reply(tx).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let timeout = self.reply_timeout;
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("connection to upstream lost: {e}")),
            Err(_) => Err(format!("upstream took no data for {timeout:?}")),
        }
    }

    /// The next reply. A 421 (upstream is closing) ends the connection: it
    /// is an error when it answers the first command of a transaction
    /// (nothing was taken: another connection may try), else the
    /// transaction's outcome, deferred.
    async fn reply(&mut self, tx: &mut Tx) -> Result<Reply, String> {
        let timeout = self.reply_timeout;
        let reply = match tokio::time::timeout(timeout, self.read_reply()).await {
            Ok(reply) => reply?,
            Err(_) => {
                tx.timed_out = true;
                return Err(format!("upstream sent no reply within {timeout:?}"));
            }
        };
        let first = tx.replies_read == 0;
        tx.replies_read += 1;
        if reply.code == 421 {
            self.closing = true;
            if first {
                tx.replies_read = 0;
                return Err(format!(
                    "upstream is closing the connection: {}",
                    reply.text
                ));
            }
        }
        Ok(reply)
    }

    async fn read_reply(&mut self) -> Result<Reply, String> {
        loop {
            match wire::parse_reply(&self.read_buf[self.read_at..]) {
                Ok(Some((reply, used))) => {
                    self.read_at += used;
                    if self.read_at == self.read_buf.len() {
                        self.read_buf.clear();
                        self.read_at = 0;
                    }
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => {
                    self.closing = true;
                    return Err(format!("upstream sent {}", e.0));
                }
            }
            if self.read_at > 0 {
                self.read_buf.drain(..self.read_at);
                self.read_at = 0;
            }
            self.read_buf.reserve(1024);
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) => return Err("upstream closed the connection".to_owned()),
                Ok(_) => {}
                Err(e) => return Err(format!("connection to upstream lost: {e}")),
            }
        }
    }

    /// Says goodbye (RFC 5321 §4.1.1.10) without waiting long for the answer.
    pub async fn quit(mut self) {
        let goodbye = async {
            self.stream.write_all(b"QUIT\r\n").await?;
            self.stream.flush().await?;
            let mut sink = [0u8; 256];
            let _ = self.stream.read(&mut sink).await?;
            self.stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
    }
}

struct Tx {
    /// Replies read for this transaction (a 421 as the first counts none).
    replies_read: usize,
    /// The message went out, whole or in part.
    body_sent: bool,
    /// A reply did not come in time.
    timed_out: bool,
}

/// A refusal of MAIL, RCPT or DATA.
fn refusal(reply: &Reply) -> Sent {
    if reply.is_permanent() {
        Sent::Rejected(reply.clone())
    } else if reply.is_transient() {
        Sent::Deferred(reply.text.clone())
    } else {
        Sent::Deferred(format!("unexpected reply {}", reply.text))
    }
}

/// The reply after the message.
fn final_outcome(reply: &Reply) -> Sent {
    if reply.is_positive() {
        Sent::Accepted(reply.clone())
    } else {
        refusal(reply)
    }
}

fn extensions(ehlo: &EhloResponse<String>) -> Extensions {
    Extensions {
        pipelining: ehlo.has_capability(EXT_PIPELINING),
        chunking: ehlo.has_capability(EXT_CHUNKING),
        eight_bit_mime: ehlo.has_capability(EXT_8BIT_MIME),
        smtputf8: ehlo.has_capability(EXT_SMTP_UTF8),
        size: ehlo.has_capability(EXT_SIZE),
    }
}

/// mail-send's errors in words for a receipt or a log line.
fn describe(e: mail_send::Error) -> String {
    match e {
        mail_send::Error::Timeout => "no reply in time".to_owned(),
        mail_send::Error::Tls(e) => format!("TLS failed: {e}"),
        mail_send::Error::MissingStartTls => "STARTTLS not offered".to_owned(),
        mail_send::Error::UnexpectedReply(r) => format!("upstream replied {}", one_line(&r)),
        mail_send::Error::AuthenticationFailed(r) => {
            format!("authentication failed: {}", one_line(&r))
        }
        mail_send::Error::UnsupportedAuthMechanism => {
            "upstream offers neither AUTH PLAIN nor AUTH LOGIN".to_owned()
        }
        other => other.to_string(),
    }
}

fn one_line(r: &smtp_proto::Response<String>) -> String {
    r.to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}
