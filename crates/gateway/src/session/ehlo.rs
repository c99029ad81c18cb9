//! EHLO and HELO.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Mode, Session, State};
use crate::Reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// RFC 5321 §4.1.4: EHLO resets any transaction.
    pub(super) fn handle_ehlo(&mut self, host: &str, extended: bool) {
        self.tx = Default::default();
        self.state = State::Ehlo;
        let config = &self.gateway.config;
        let reply = if extended {
            let mut text = format!(
                "{} greets {host}\nPIPELINING\n8BITMIME\nSMTPUTF8\nSIZE {}\nENHANCEDSTATUSCODES",
                config.hostname, config.max_message_size
            );
            if self.starttls_offered() {
                text.push_str("\nSTARTTLS");
            }
            // RFC 4954 §4: not in plaintext when TLS could protect it. The
            // inbound listener has nothing to authenticate for.
            if self.mode == Mode::Submission && self.auth_allowed() {
                text.push_str("\nAUTH PLAIN LOGIN");
            }
            Reply::new(250, "", text)
        } else {
            Reply::new(250, "", format!("{} greets {host}", config.hostname))
        };
        self.reply(reply);
    }
}
