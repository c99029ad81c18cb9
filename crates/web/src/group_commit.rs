//! Group commit: appends from many requests share one transaction (and one
//! fsync). Each request waits for the commit that holds its event, so
//! nothing is acknowledged before it is durable.

use tokio::sync::{mpsc, oneshot};
use veto_store::{Append, AppendOutcome, Store};

use crate::WebError;

/// Most events in one transaction.
const MAX_GROUP: usize = 1024;

type Reply = oneshot::Sender<Result<AppendOutcome, String>>;

#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<(Append, Reply)>,
}

impl GroupCommit {
    /// Starts the committer on the current runtime.
    pub fn start(store: Store) -> GroupCommit {
        let (tx, mut rx) = mpsc::channel::<(Append, Reply)>(8 * MAX_GROUP);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let (items, replies): (Vec<Append>, Vec<Reply>) = jobs.into_iter().unzip();
                match store.append(items, false).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = ?e, "group commit failed");
                        for reply in replies {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        GroupCommit { tx }
    }

    /// Appends one event; returns once it is committed (or refused).
    pub async fn append(&self, item: Append) -> Result<AppendOutcome, WebError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| WebError::Internal("the group committer stopped".into()))?;
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(WebError::Store(veto_store::StoreError::Invalid(e))),
            Err(_) => Err(WebError::Internal(
                "the group committer dropped a request".into(),
            )),
        }
    }
}
