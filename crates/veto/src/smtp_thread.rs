//! The SMTP listeners' own thread: the gateway and the inbound listener
//! run on a single-threaded tokio runtime of their own, beside the runtime
//! that serves the web pages, the campaign sender and the webhooks.
//!
//! Why: a gateway session is a short exchange of small lines, a few reads
//! of the store and a hand-off upstream. On the shared two-worker runtime
//! each of those steps could wake the other worker, move the session
//! between cores or have it stolen; on a thread of its own they run one
//! after another with no hand-over (`docs/BENCHMARKS.md`, gateway: a third
//! of the futex calls, about 40 % fewer context switches). It also keeps a
//! burst of mail and a busy admin page from delaying each other. The one
//! heavy step, the RSA signature of each copy, runs on the blocking pool
//! (see `veto_gateway`'s DATA), so DKIM still uses every core.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// The running thread. [`SmtpThread::stopped`] waits until the listeners
/// have stopped and their sessions in flight are done;
/// [`SmtpThread::finish`] then ends the runtime.
pub struct SmtpThread {
    stopped: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl SmtpThread {
    /// Moves the bound listeners to a new thread and serves them there
    /// until `stop` says true.
    pub fn start(
        smtp: TcpListener,
        inbound: Option<TcpListener>,
        gateway: Arc<veto_gateway::Gateway>,
        stop: watch::Receiver<bool>,
    ) -> Result<SmtpThread> {
        // Taken off this runtime's reactor, registered with the new one's.
        let smtp = smtp
            .into_std()
            .context("cannot move the SMTP listener to its thread")?;
        let inbound = inbound
            .map(TcpListener::into_std)
            .transpose()
            .context("cannot move the inbound SMTP listener to its thread")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("veto-smtp-blocking")
            .build()
            .context("cannot start the SMTP gateway's runtime")?;
        let (stopped_tx, stopped) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("veto-smtp".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let served = async {
                        let smtp = TcpListener::from_std(smtp)?;
                        let inbound = inbound.map(TcpListener::from_std).transpose()?;
                        let until = |mut rx: watch::Receiver<bool>| async move {
                            let _ = rx.wait_for(|stop| *stop).await;
                        };
                        let inbound = {
                            let gateway = Arc::clone(&gateway);
                            let until = until(stop.clone());
                            async move {
                                if let Some(listener) = inbound {
                                    veto_gateway::listen_inbound(listener, gateway, until).await;
                                }
                            }
                        };
                        let smtp = veto_gateway::listen(smtp, gateway, until(stop));
                        tokio::join!(smtp, inbound);
                        std::io::Result::Ok(())
                    };
                    match served.await {
                        Ok(()) => {
                            let _ = stopped_tx.send(());
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the SMTP listeners could not start on their thread");
                            drop(stopped_tx);
                        }
                    }
                    // This runtime drives the I/O of what was opened on it
                    // (PostgreSQL connections of the shared pool among
                    // them), so it runs until the store has been closed.
                    let _ = released.await;
                });
            })
            .context("cannot start the SMTP gateway's thread")?;
        Ok(SmtpThread {
            stopped,
            release,
            thread,
        })
    }

    /// Waits until the listeners have stopped and their sessions are done.
    /// An error: the thread failed (it is logged), and the listeners are gone.
    pub async fn stopped(&mut self) -> Result<()> {
        (&mut self.stopped)
            .await
            .map_err(|_| anyhow!("the SMTP listeners stopped unexpectedly (see the log)"))
    }

    /// Ends the thread's runtime: call after the store is closed.
    pub async fn finish(self) -> Result<()> {
        let _ = self.release.send(());
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("the SMTP gateway's thread")?
            .map_err(|_| anyhow!("the SMTP gateway's thread panicked"))
    }
}
