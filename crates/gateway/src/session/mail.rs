//! MAIL FROM.

use smtp_proto::MailFrom;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Session, State, Transaction};
use crate::{Fail, Reply};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn handle_mail(&mut self, from: &MailFrom<String>) {
        match self.state {
            State::Greeting => {
                return self.error(Reply::new(503, "5.5.1", "Send EHLO or HELO first"));
            }
            State::Mail | State::Rcpt => {
                return self.error(Reply::new(503, "5.5.1", "Nested MAIL command"));
            }
            State::Ehlo | State::Data | State::Quit => {}
        }
        let limit = self.gateway.config.max_message_size;
        // RFC 1870 §6.2: a declared size above the limit is refused at once.
        if from.size > limit {
            return self.reply(Fail::TooLarge(limit).reply());
        }
        self.tx = Transaction {
            from: from.address.clone(),
            ..Default::default()
        };
        self.state = State::Mail;
        self.reply(Reply::new(250, "2.1.0", "OK"));
    }
}
