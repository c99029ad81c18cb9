//! The TCP listeners (submission, and inbound for veto's own addresses):
//! one session per connection, and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use veto_store::metrics;

use crate::Gateway;

/// How long sessions still running at shutdown may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Accepts connections on `listener`, running a session for each, until
/// `shutdown` completes; then stops accepting and lets the sessions in
/// flight finish, for at most [`SHUTDOWN_GRACE`] (the rest are cut off:
/// a client whose DATA was not answered retries, nothing was confirmed).
pub async fn listen(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    listen_with_grace(listener, gateway, shutdown, SHUTDOWN_GRACE).await;
}

/// [`listen`] with a chosen bound on the wait for sessions in flight.
pub async fn listen_with_grace(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    serve(listener, gateway, shutdown, grace, Kind::Submission).await;
}

/// The inbound listener (`[gateway] inbound_listen`): like [`listen`], but
/// each connection gets an inbound session, which takes mail from anyone
/// for veto's own addresses only and never relays.
pub async fn listen_inbound(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    listen_inbound_with_grace(listener, gateway, shutdown, SHUTDOWN_GRACE).await;
}

/// [`listen_inbound`] with a chosen bound on the wait for sessions in flight.
pub async fn listen_inbound_with_grace(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    serve(listener, gateway, shutdown, grace, Kind::Inbound).await;
}

/// Which listener: what its sessions are, and what logs call it.
#[derive(Clone, Copy)]
enum Kind {
    Submission,
    Inbound,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Submission => "SMTP",
            Kind::Inbound => "inbound SMTP",
        }
    }

    fn metrics(self) -> metrics::Listener {
        match self {
            Kind::Submission => metrics::Listener::Submission,
            Kind::Inbound => metrics::Listener::Inbound,
        }
    }
}

async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    kind: Kind,
) {
    let name = kind.name();
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Sessions that ended are collected here rather than
                    // awaited: a wake-up of this loop per ended session
                    // costs more than the bookkeeping.
                    while sessions.try_join_next().is_some() {}
                    let _ = stream.set_nodelay(true);
                    match gateway.connections.admit(peer.ip()) {
                        Ok(permit) => {
                            let session = match kind {
                                Kind::Submission => gateway.session(stream, peer.ip()),
                                Kind::Inbound => gateway.inbound_session(stream, peer.ip()),
                            };
                            let active = metrics::session_started(kind.metrics());
                            sessions.spawn(async move {
                                // Held until the session ends.
                                let _permit = permit;
                                let _active = active;
                                if let Err(e) = session.run().await {
                                    tracing::debug!(%peer, error = %e, "{name} session ended with an error");
                                }
                            });
                        }
                        Err(reply) => {
                            tracing::warn!(%peer, reply = %reply, "{name} connection refused");
                            metrics::connection_refused(kind.metrics());
                            sessions.spawn(crate::limits::refuse(stream, reply));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "cannot accept an {name} connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    gateway.drain();
    if sessions.is_empty() {
        return;
    }
    tracing::info!(
        sessions = sessions.len(),
        "{name}: waiting for sessions in flight"
    );
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "{name}: sessions still running after the grace period are cut off"
        );
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
}
