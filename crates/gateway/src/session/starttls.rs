//! STARTTLS (RFC 3207), and when AUTH may be offered (RFC 4954 §4).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Sender, Session, State, Transaction};
use crate::Reply;
use crate::tls::Stream;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn handle_starttls(&mut self) -> std::io::Result<()> {
        let Some(tls) = self.gateway.config.tls.clone() else {
            self.error(Reply::new(502, "5.5.1", "STARTTLS is not available"));
            return Ok(());
        };
        if self.stream.is_tls() {
            self.error(Reply::new(503, "5.5.1", "TLS is already active"));
            return Ok(());
        }
        match self.state {
            State::Greeting => {
                self.error(Reply::new(503, "5.5.1", "Send EHLO first"));
                return Ok(());
            }
            State::Mail | State::Rcpt | State::Data | State::Quit => {
                self.error(Reply::new(
                    503,
                    "5.5.1",
                    "STARTTLS not allowed in a transaction",
                ));
                return Ok(());
            }
            State::Ehlo => {}
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.flush().await?;
        // Whatever the client pipelined after STARTTLS came in plaintext,
        // where anyone on the path could have put it: it must not be read
        // as if it came over TLS (the STARTTLS command injection of
        // CVE-2011-0411).
        let pending = self.input.len() - self.consumed;
        if pending > 0 {
            tracing::info!(
                peer = %self.peer,
                bytes = pending,
                "discarded plaintext sent after STARTTLS"
            );
        }
        self.input.clear();
        self.consumed = 0;
        let plain = match std::mem::replace(&mut self.stream, Stream::Closed) {
            Stream::Plain(plain) => plain,
            other => {
                self.stream = other;
                return Ok(());
            }
        };
        let timeout = self.gateway.config.command_timeout;
        match tokio::time::timeout(timeout, tls.acceptor().accept(plain)).await {
            Ok(Ok(stream)) => {
                let (_, connection) = stream.get_ref();
                tracing::debug!(
                    peer = %self.peer,
                    version = ?connection.protocol_version(),
                    cipher = ?connection.negotiated_cipher_suite().map(|c| c.suite()),
                    "TLS started"
                );
                self.stream = Stream::Tls(Box::new(stream));
                self.forget_the_client();
            }
            // The connection went with the failed handshake; nothing can be
            // said to the client any more.
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                self.state = State::Quit;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                self.state = State::Quit;
            }
        }
        Ok(())
    }

    /// RFC 3207 §4.2: after the handshake the server discards what it knew
    /// from the client (its EHLO, its AUTH) and waits for EHLO again. Only
    /// what the network says (a trusted network) stays.
    fn forget_the_client(&mut self) {
        self.state = State::Greeting;
        self.tx = Transaction::default();
        self.authenticated = false;
        self.sender = Sender::trusted(&self.gateway, self.peer).map(Arc::new);
    }

    /// EHLO offers STARTTLS when there is a certificate and TLS is not on yet.
    pub(super) fn starttls_offered(&self) -> bool {
        self.gateway.config.tls.is_some() && !self.stream.is_tls()
    }

    /// RFC 4954 §4: credentials travel only over TLS when TLS can be had,
    /// except from the same machine (loopback never leaves it).
    pub(super) fn auth_allowed(&self) -> bool {
        self.gateway.config.tls.is_none()
            || self.stream.is_tls()
            || self.peer.to_canonical().is_loopback()
    }
}
