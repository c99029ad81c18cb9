//! The default delivery: each admitted copy a file in a maildir, so a
//! newcomer sees exactly what would have gone out.

use veto_sender::Maildir;
use veto_store::Admitted;

use crate::{Relay, RelayError, RelayFuture, RelayOutcome};

/// A [`Relay`] that writes each copy to a [`Maildir`] (synced before it
/// counts as accepted).
#[derive(Debug, Clone)]
pub struct MaildirRelay {
    maildir: Maildir,
}

impl MaildirRelay {
    pub fn new(maildir: Maildir) -> MaildirRelay {
        MaildirRelay { maildir }
    }

    pub fn maildir(&self) -> &Maildir {
        &self.maildir
    }
}

impl Relay for MaildirRelay {
    fn relay<'a>(
        &'a self,
        _envelope_from: &'a str,
        admitted: &'a Admitted,
        message: &'a [u8],
    ) -> RelayFuture<'a> {
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
                Ok(path) => Ok(RelayOutcome::Accepted {
                    reply: format!("250 2.0.0 maildir {}", path.display()),
                }),
                Err(e) => Err(RelayError(format!("cannot write to the outbox: {e}"))),
            }
        })
    }
}
