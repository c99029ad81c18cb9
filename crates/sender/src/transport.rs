//! Where admitted messages go: the [`Transport`] trait that the gateway,
//! campaigns and veto's own mail share, its outcomes, and the maildir
//! transport (the default for a fresh install).

use std::future::Future;
use std::pin::Pin;

use veto_store::Admitted;

use crate::Maildir;

/// What the next hop said about one message for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop took responsibility for the message (its reply, e.g.
    /// `250 2.0.0 Ok: queued as 4XyZ`; it goes into the receipt).
    Accepted { reply: String },
    /// The next hop refused the message for good (a 5xx reply).
    Rejected { reply: String },
}

/// The next hop could not take the message now (a 4xx reply, no connection,
/// a timeout, a TLS failure); the sender should try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream is temporarily unavailable: {0}")]
pub struct TransportError(pub String);

/// A boxed future, so that [`Transport`] can be a trait object.
pub type TransportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Outcome, TransportError>> + Send + 'a>>;

/// Hands one message for one recipient to the next hop. It takes an
/// [`Admitted`], which only the guard can build: nothing reaches the wire
/// without the guard's say.
pub trait Transport: Send + Sync {
    /// Relays `message` (a complete RFC 5322 message, CRLF line ends) to
    /// `admitted.to()`, with `envelope_from` as the return path (`""` or
    /// `"<>"` for the null sender of a DSN).
    fn relay<'a>(
        &'a self,
        envelope_from: &'a str,
        admitted: &'a Admitted,
        message: &'a [u8],
    ) -> TransportFuture<'a>;
}

/// A [`Transport`] that writes each message to a [`Maildir`] (synced before
/// it counts as accepted), so a newcomer sees exactly what would have gone
/// out.
#[derive(Debug, Clone)]
pub struct MaildirTransport {
    maildir: Maildir,
}

impl MaildirTransport {
    pub fn new(maildir: Maildir) -> MaildirTransport {
        MaildirTransport { maildir }
    }

    pub fn maildir(&self) -> &Maildir {
        &self.maildir
    }
}

impl Transport for MaildirTransport {
    fn relay<'a>(
        &'a self,
        _envelope_from: &'a str,
        admitted: &'a Admitted,
        message: &'a [u8],
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            // `Admitted` cannot be cloned (only the guard makes one), so the
            // write happens here; on a multi-thread runtime the worker is
            // handed over while it waits for the disk.
            let write = || self.maildir.deliver(admitted, message);
            let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
            let written = match flavor {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(write)
                }
                _ => write(),
            };
            match written {
                Ok(path) => Ok(Outcome::Accepted {
                    reply: format!("250 2.0.0 maildir {}", path.display()),
                }),
                Err(e) => Err(TransportError(format!("cannot write to the outbox: {e}"))),
            }
        })
    }
}
