//! The TCP listener: one session per connection, and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

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
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match gateway.connections.admit(peer.ip()) {
                        Ok(permit) => {
                            let session = gateway.session(stream, peer.ip());
                            sessions.spawn(async move {
                                // Held until the session ends.
                                let _permit = permit;
                                if let Err(e) = session.run().await {
                                    tracing::debug!(%peer, error = %e, "SMTP session ended with an error");
                                }
                            });
                        }
                        Err(reply) => {
                            tracing::warn!(%peer, reply = %reply, "SMTP connection refused");
                            sessions.spawn(crate::limits::refuse(stream, reply));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "cannot accept an SMTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    if sessions.is_empty() {
        return;
    }
    tracing::info!(
        sessions = sessions.len(),
        "SMTP: waiting for sessions in flight"
    );
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "SMTP: sessions still running after the grace period are cut off"
        );
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
}
