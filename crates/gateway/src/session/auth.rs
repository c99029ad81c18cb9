//! AUTH PLAIN and AUTH LOGIN (RFC 4954): the password is a veto API key;
//! any user name is accepted.

use std::sync::Arc;

use data_encoding::BASE64;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Line, Sender, Session, State};
use crate::Reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn handle_auth(
        &mut self,
        mechanism: u64,
        initial_response: &str,
    ) -> std::io::Result<()> {
        match self.state {
            State::Greeting => {
                self.error(Reply::new(503, "5.5.1", "Send EHLO first"));
                return Ok(());
            }
            // RFC 4954 §4: not during a transaction, and only once.
            State::Mail | State::Rcpt | State::Data | State::Quit => {
                self.error(Reply::new(
                    503,
                    "5.5.1",
                    "AUTH not allowed in a transaction",
                ));
                return Ok(());
            }
            State::Ehlo if self.authenticated => {
                self.error(Reply::new(503, "5.5.1", "Already authenticated"));
                return Ok(());
            }
            State::Ehlo => {}
        }
        if !self.auth_allowed() {
            self.error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism; use STARTTLS first",
            ));
            return Ok(());
        }
        let password = if mechanism == AUTH_PLAIN {
            let response = match initial_response {
                "" => match self.challenge("").await? {
                    Some(r) => r,
                    None => return Ok(()),
                },
                "=" => Vec::new(),
                r => match decode(r) {
                    Some(r) => r,
                    None => {
                        self.malformed_auth();
                        return Ok(());
                    }
                },
            };
            // authzid NUL authcid NUL passwd (RFC 4616 §2).
            let mut fields = response.split(|&b| b == 0);
            match (fields.next(), fields.next(), fields.next(), fields.next()) {
                (Some(_), Some(_), Some(password), None) => password.to_vec(),
                _ => {
                    self.malformed_auth();
                    return Ok(());
                }
            }
        } else if mechanism == AUTH_LOGIN {
            if initial_response.is_empty() {
                // "Username:"; the answer is not used.
                if self.challenge("VXNlcm5hbWU6").await?.is_none() {
                    return Ok(());
                }
            } else if decode(initial_response).is_none() {
                {
                    self.malformed_auth();
                    return Ok(());
                };
            }
            // "Password:"
            match self.challenge("UGFzc3dvcmQ6").await? {
                Some(password) => password,
                None => return Ok(()),
            }
        } else {
            self.error(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
            return Ok(());
        };
        let Ok(password) = String::from_utf8(password) else {
            self.error(Reply::new(
                535,
                "5.7.8",
                "Authentication credentials invalid",
            ));
            return Ok(());
        };
        match self.gateway.guard.store().api_key(password.trim()).await {
            Ok(Some(key)) => {
                self.sender = Some(Arc::new(Sender {
                    actor: format!("api-key:{}", key.prefix),
                    role: Some(key.role),
                    owner: key.owner,
                    default_topic: key.default_topic,
                    default_service: key.default_service,
                }));
                self.authenticated = true;
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
            }
            Ok(None) => {
                self.error(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "api key lookup failed");
                self.reply(Reply::new(454, "4.7.0", "Temporary authentication failure"));
            }
        }
        Ok(())
    }

    /// Sends `334 <challenge>` and reads the answer, decoded. `None` when
    /// the exchange ended (cancelled, malformed, too long, EOF): the reply
    /// is already written.
    async fn challenge(&mut self, challenge: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.reply(Reply::new(334, "", challenge));
        let limit = self.gateway.config.max_command_line;
        let timeout = self.gateway.config.command_timeout;
        match self.read_line(limit, timeout).await? {
            Line::Eof => {
                self.state = State::Quit;
                Ok(None)
            }
            Line::Timeout => {
                self.timed_out();
                Ok(None)
            }
            Line::TooLong => {
                self.error(Reply::new(
                    500,
                    "5.5.6",
                    "Authentication exchange line is too long",
                ));
                Ok(None)
            }
            Line::Complete(at) => {
                let line = String::from_utf8_lossy(&self.input[at]).into_owned();
                let line = line.trim_end_matches(['\r', '\n']);
                if line == "*" {
                    self.error(Reply::new(501, "5.0.0", "Authentication cancelled"));
                    return Ok(None);
                }
                match decode(line) {
                    Some(decoded) => Ok(Some(decoded)),
                    None => {
                        self.malformed_auth();
                        Ok(None)
                    }
                }
            }
        }
    }

    fn malformed_auth(&mut self) {
        self.error(Reply::new(
            501,
            "5.5.2",
            "Cannot decode the authentication response",
        ));
    }
}

fn decode(s: &str) -> Option<Vec<u8>> {
    BASE64.decode(s.trim().as_bytes()).ok()
}
