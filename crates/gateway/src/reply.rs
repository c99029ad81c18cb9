//! SMTP replies, and the one function that maps failures to them.

use std::fmt;

use veto_core::Reason;
use veto_mail::dkim::DkimError;
use veto_mail::rewrite::RewriteError;
use veto_store::StoreError;

/// One SMTP reply: code, enhanced status code (RFC 3463), text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `5.7.1`; empty for replies that carry none (220, 221 before EHLO, 354, 334).
    pub status: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply on the wire: one line, or several for multi-line text.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self
            .text
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let line: String = line.chars().filter(|c| !c.is_control()).collect();
            let text = if self.status.is_empty() {
                line
            } else {
                format!("{} {line}", self.status)
            };
            out.extend_from_slice(format!("{}{sep}{text}\r\n", self.code).as_bytes());
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

/// Why the gateway refuses a command or a message.
#[derive(Debug, thiserror::Error)]
pub enum Fail {
    #[error("the store could not be reached")]
    Store(#[from] StoreError),
    #[error("authentication required")]
    AuthRequired,
    #[error("<{address}> has not agreed to receive {topic} ({reason})")]
    NotAgreed {
        address: String,
        topic: String,
        reason: Reason,
    },
    #[error("the API key's role ({role}) may not send {what}")]
    RoleMayNotSend { role: String, what: &'static str },
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("unknown service type {0:?}: declare it under [service.types]")]
    UnknownServiceType(String),
    #[error(
        "held: {sender} sent service mail to {count} recipients within the bulk window, more than the threshold of {threshold}; approval request {id} awaits a DPO (POST /api/v1/approvals/{id}), then retry"
    )]
    Held {
        id: i64,
        sender: String,
        count: u64,
        threshold: u64,
    },
    #[error("{header} contradicts this transaction's classification ({known})")]
    Contradiction { header: String, known: String },
    #[error(
        "message has no classification: give the API key or network a default topic, or add a Veto-Topic: or Veto-Class: header"
    )]
    NoClassification,
    #[error(
        "malformed {0} header: write Veto-Topic: <topic>, Veto-Class: marketing; topic=<topic>, or Veto-Class: service; type=<type>"
    )]
    MalformedClassHeader(String),
    #[error("message refused: {0}")]
    Rewrite(#[from] RewriteError),
    #[error("bare CR or LF in message data (SMTP smuggling protection); use CRLF line endings")]
    Smuggling,
    #[error("message exceeds the size limit of {0} bytes")]
    TooLarge(usize),
    #[error("message data has a line longer than {0} octets")]
    DataLineTooLong(usize),
    #[error("no token key: {0}")]
    Token(String),
    #[error("upstream did not take the message: {0}")]
    Upstream(String),
    #[error("DKIM: {0}")]
    Dkim(#[from] DkimError),
    /// The copy's signing did not finish (its task panicked or was cancelled).
    #[error("signing the copy did not finish: {0}")]
    Signing(String),
}

impl From<veto_sender::copy::CopyError> for Fail {
    fn from(e: veto_sender::copy::CopyError) -> Fail {
        use veto_sender::copy::CopyError;
        match e {
            CopyError::Rewrite(e) => Fail::Rewrite(e),
            CopyError::Dkim(e) => Fail::Dkim(e),
            CopyError::Token(e) => Fail::Token(e),
        }
    }
}

impl Fail {
    /// The reply for this failure (STYLE: one mapping, enhanced codes, a human reason).
    pub fn reply(&self) -> Reply {
        let text = self.to_string();
        match self {
            // Fail closed: the tool retries later, nothing is delivered now.
            Fail::Store(_) | Fail::Token(_) => Reply::new(
                451,
                "4.3.0",
                "temporary failure checking consent; try again later",
            ),
            Fail::AuthRequired => Reply::new(530, "5.7.0", "Authentication required"),
            Fail::NotAgreed { .. } => Reply::new(550, "5.7.1", text),
            Fail::RoleMayNotSend { .. }
            | Fail::UnknownTopic(_)
            | Fail::UnknownServiceType(_)
            | Fail::Contradiction { .. }
            | Fail::NoClassification
            | Fail::MalformedClassHeader(_) => Reply::new(550, "5.7.1", text),
            // RFC 3463: 4.7.1, delivery not authorised (yet); the tool retries.
            Fail::Held { .. } => Reply::new(450, "4.7.1", text),
            Fail::Rewrite(_) | Fail::DataLineTooLong(_) => Reply::new(554, "5.6.0", text),
            Fail::Smuggling => Reply::new(550, "5.5.2", text),
            Fail::TooLarge(_) => Reply::new(552, "5.3.4", text),
            Fail::Upstream(_) => Reply::new(451, "4.4.1", text),
            // The message itself cannot be signed (e.g. no single From).
            Fail::Dkim(DkimError::Message(_)) => Reply::new(554, "5.6.0", text),
            Fail::Dkim(_) | Fail::Signing(_) => {
                Reply::new(451, "4.3.0", "temporary failure signing the message")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_render_single_and_multi_line() {
        let mut out = Vec::new();
        Reply::new(250, "2.0.0", "ok").write_to(&mut out);
        Reply::new(250, "", "host\nPIPELINING").write_to(&mut out);
        assert_eq!(out, b"250 2.0.0 ok\r\n250-host\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn store_failures_fail_closed() {
        let r = Fail::Token("none".into()).reply();
        assert_eq!((r.code, r.status), (451, "4.3.0"));
    }
}
