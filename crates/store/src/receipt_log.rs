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

/// On SQLite, under concurrent load, commits start at most this often.
/// Each commit makes every reader connection drop its page cache (the log
/// changed), writes the tail pages of the receipts' tables and indexes once
/// more, and costs an fsync; when several sessions are delivering, a
/// delivery that waits a moment for the next group costs less than all
/// that. See [`pause_before_commit`].
const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(3);

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
    /// Starts the committer: on SQLite a thread with a connection of its
    /// own (no hop through sqlx's connection thread per statement), on
    /// PostgreSQL a task on the current runtime. It stops when the last
    /// handle is dropped, after committing what it was given.
    pub fn start(store: Store) -> ReceiptLog {
        let (tx, rx) = mpsc::channel::<(Delivery, Done)>(4 * MAX_GROUP);
        let rx = match store.direct_writer() {
            Some(Ok(conn)) => {
                let (hand, take) = std::sync::mpsc::sync_channel(1);
                let spawned = std::thread::Builder::new()
                    .name("veto-receipts".into())
                    .spawn(move || {
                        if let Ok(rx) = take.recv() {
                            commit_on_thread(conn, rx);
                        }
                    });
                match spawned {
                    Ok(_) => {
                        let _ = hand.send(rx);
                        return ReceiptLog { tx };
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no thread for the receipt committer; committing through the pool");
                        rx
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no connection of its own for the receipt committer; committing through the pool");
                rx
            }
            None => rx,
        };
        tokio::spawn(commit_on_runtime(store, rx));
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

async fn commit_on_runtime(store: Store, mut rx: mpsc::Receiver<(Delivery, Done)>) {
    let mut pruned_at = tokio::time::Instant::now();
    while let Some(first) = rx.recv().await {
        let (deliveries, done) = group(first, &mut rx);
        let result = store
            .record_deliveries(deliveries)
            .await
            .map_err(|e| e.to_string());
        answer(done, result);
        if pruned_at.elapsed() > PRUNE_EVERY {
            pruned_at = tokio::time::Instant::now();
            let before = Timestamp::now() - RELAY_MEMORY;
            if let Err(e) = store.prune_relayed(before).await {
                tracing::warn!(error = %e, "old relay records not pruned");
            }
        }
    }
}

/// The SQLite committer: blocking, on its own thread and connection.
fn commit_on_thread(mut conn: crate::direct::Conn, mut rx: mpsc::Receiver<(Delivery, Done)>) {
    let mut pruned_at = std::time::Instant::now();
    // When the last commit started, and how many deliveries it held.
    let mut last: Option<(std::time::Instant, usize)> = None;
    while let Some(first) = rx.blocking_recv() {
        if let Some(pause) = last.and_then(|(at, size)| pause_before_commit(at.elapsed(), size)) {
            std::thread::sleep(pause);
        }
        let started = std::time::Instant::now();
        let (deliveries, done) = group(first, &mut rx);
        last = Some((started, deliveries.len()));
        let now = Timestamp::now().as_microsecond();
        let result = crate::direct::record_deliveries(&mut conn, &deliveries, now)
            .map_err(|e| e.to_string());
        crate::metrics::observe(crate::metrics::Op::ReceiptCommit, started.elapsed());
        if result.is_ok() {
            for r in deliveries.iter().flat_map(|d| &d.receipts) {
                crate::metrics::count_receipt(r.allowed, &r.class, r.reason.as_deref());
            }
        }
        answer(done, result);
        if pruned_at.elapsed() > PRUNE_EVERY {
            pruned_at = std::time::Instant::now();
            let before = Timestamp::now() - RELAY_MEMORY;
            if let Err(e) = crate::direct::prune_relayed(&mut conn, before) {
                tracing::warn!(error = %e, "old relay records not pruned");
            }
        }
    }
}

/// How long the committer waits before the next commit, given how long ago
/// the last one started and how many deliveries it held. Only after a group
/// of several: a tool sending one message after another on one connection
/// has nobody to share a commit with, and a pause would only slow it (from
/// about 1,100 to 310 messages a second in the gateway benchmark with one
/// session).
fn pause_before_commit(since_last: Duration, last_group: usize) -> Option<Duration> {
    (last_group > 1)
        .then(|| MIN_COMMIT_INTERVAL.checked_sub(since_last))
        .flatten()
        .filter(|pause| !pause.is_zero())
}

/// `first` and whatever else is waiting, up to [`MAX_GROUP`].
fn group(
    first: (Delivery, Done),
    rx: &mut mpsc::Receiver<(Delivery, Done)>,
) -> (Vec<Delivery>, Vec<Done>) {
    let mut jobs = vec![first];
    while jobs.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    jobs.into_iter().unzip()
}

fn answer(done: Vec<Done>, result: Result<(), String>) {
    if let Err(e) = &result {
        tracing::error!(error = %e, "receipts and relay records not committed");
    }
    for d in done {
        let _ = d.send(result.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_sender_never_waits_for_a_group() {
        assert_eq!(pause_before_commit(Duration::ZERO, 1), None);
        assert_eq!(pause_before_commit(Duration::from_micros(500), 1), None);
    }

    #[test]
    fn under_concurrent_load_commits_are_spaced() {
        assert_eq!(
            pause_before_commit(Duration::from_millis(1), 2),
            Some(MIN_COMMIT_INTERVAL - Duration::from_millis(1))
        );
        assert_eq!(
            pause_before_commit(Duration::ZERO, MAX_GROUP),
            Some(MIN_COMMIT_INTERVAL)
        );
        // The last commit started long enough ago: no wait.
        assert_eq!(pause_before_commit(MIN_COMMIT_INTERVAL, 8), None);
        assert_eq!(pause_before_commit(Duration::from_secs(1), 8), None);
    }
}
