//! EHLO and HELO.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Session, State};
use crate::Reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// RFC 5321 §4.1.4: EHLO resets any transaction.
    pub(super) fn handle_ehlo(&mut self, host: &str, extended: bool) {
        self.tx = Default::default();
        self.state = State::Ehlo;
        let config = &self.gateway.config;
        let reply = if extended {
            // STARTTLS is added with TLS support.
            let text = format!(
                "{} greets {host}\nPIPELINING\n8BITMIME\nSMTPUTF8\nSIZE {}\nENHANCEDSTATUSCODES\nAUTH PLAIN LOGIN",
                config.hostname, config.max_message_size
            );
            Reply::new(250, "", text)
        } else {
            Reply::new(250, "", format!("{} greets {host}", config.hostname))
        };
        self.reply(reply);
    }
}
