//! Group commit for receipts and relayed copies: the deliveries of many
//! sessions share one transaction (and one fsync). Each caller waits for
//! the commit that holds its records, so a reply that follows is never
//! ahead of the disk.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use veto_core::Timestamp;

use crate::{Delivery, Result, Store, StoreError};

/// Most deliveries in one transaction.
const MAX_GROUP: usize = 512;

/// How long relayed copies are remembered: longer than any tool keeps
/// retrying a message (RFC 5321 §4.5.4.1 suggests giving up after 4–5 days).
pub const RELAY_MEMORY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How often old relay records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

type Done = oneshot::Sender<Result<(), String>>;

/// A handle on the committer task; cheap to clone.
#[derive(Clone)]
pub struct ReceiptLog {
    tx: mpsc::Sender<(Delivery, Done)>,
}

impl ReceiptLog {
    /// Starts the committer on the current runtime. It stops when the last
    /// handle is dropped, after committing what it was given.
    pub fn start(store: Store) -> ReceiptLog {
        let (tx, mut rx) = mpsc::channel::<(Delivery, Done)>(4 * MAX_GROUP);
        tokio::spawn(async move {
            let mut pruned_at = tokio::time::Instant::now();
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let (deliveries, done): (Vec<Delivery>, Vec<Done>) = jobs.into_iter().unzip();
                let result = store
                    .record_deliveries(deliveries)
                    .await
                    .map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "receipts and relay records not committed");
                }
                for d in done {
                    let _ = d.send(result.clone());
                }
                if pruned_at.elapsed() > PRUNE_EVERY {
                    pruned_at = tokio::time::Instant::now();
                    let before = Timestamp::now() - RELAY_MEMORY;
                    if let Err(e) = store.prune_relayed(before).await {
                        tracing::warn!(error = %e, "old relay records not pruned");
                    }
                }
            }
        });
        ReceiptLog { tx }
    }

    /// Records one message's delivery; returns once it is committed.
    pub async fn record(&self, delivery: Delivery) -> Result<()> {
        self.submit(delivery).await?.committed().await
    }

    /// Hands `delivery` to the committer and returns at once: the caller
    /// goes on (e.g. relays the next copy) while it is written, and waits
    /// with [`Pending::committed`] before it tells anyone it is done.
    pub async fn submit(&self, delivery: Delivery) -> Result<Pending> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((delivery, done))
            .await
            .map_err(|_| StoreError::Invalid("the receipt committer stopped".into()))?;
        Ok(Pending(wait))
    }
}

/// A delivery handed to the committer, not yet known to be on disk.
pub struct Pending(oneshot::Receiver<Result<(), String>>);

impl Pending {
    pub async fn committed(self) -> Result<()> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Invalid(format!("receipts not committed: {e}"))),
            Err(_) => Err(StoreError::Invalid(
                "the receipt committer dropped a delivery".into(),
            )),
        }
    }
}
