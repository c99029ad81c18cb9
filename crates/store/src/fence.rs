//! The hand-off fence: a withdrawal is acknowledged only after every
//! hand-off to that person whose guard check came before it has finished.
//!
//! The guard reads consent, then the transport hands the message off; a
//! withdrawal committed between the two would otherwise be acknowledged
//! ("you are unsubscribed") while a message the guard admitted a moment
//! earlier is still going out. So a sender enters each recipient here
//! *before* the guard's check and leaves once the hand-off is over, and
//! every append of a consent event waits, after its commit and before it
//! returns, until none of its contacts is in a hand-off. A check that
//! starts after the commit sees the withdrawal; one that started before is
//! waited for. Either way the person's "no" takes effect before veto's next
//! hand-off to them (DESIGN.md, the invariant).
//!
//! The fence is per process (one `veto serve`); several nodes on one
//! PostgreSQL each fence their own hand-offs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veto_core::ContactId;

/// Contacts with a hand-off in progress.
#[derive(Debug, Default)]
pub struct HandoffFence {
    in_flight: Mutex<HashMap<i64, usize>>,
    /// Entries in `in_flight` (a lock-free "nothing in flight").
    count: AtomicUsize,
    released: tokio::sync::Notify,
}

/// A withdrawal waits at most this long for a hand-off (a transport's own
/// timeouts end every hand-off well before; this only stops a bug from
/// hanging acknowledgements for ever).
const MAX_WAIT: Duration = Duration::from_secs(300);

impl HandoffFence {
    /// Enters `contacts` into a hand-off; call before the guard's check.
    pub fn enter(self: &Arc<Self>, contacts: impl IntoIterator<Item = ContactId>) -> Handoffs {
        let contacts: Vec<i64> = contacts.into_iter().map(|c| c.0).collect();
        {
            let mut map = self.lock();
            for &c in &contacts {
                *map.entry(c).or_insert(0) += 1;
            }
            self.count.store(map.len(), Ordering::SeqCst);
        }
        Handoffs {
            fence: Arc::clone(self),
            contacts,
        }
    }

    /// Whether any hand-off is in progress.
    pub fn is_idle(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }

    /// Returns once none of `contacts` is in a hand-off.
    pub async fn wait_clear(&self, contacts: &[i64]) {
        if self.is_idle() || contacts.is_empty() {
            return;
        }
        let waited = tokio::time::timeout(MAX_WAIT, async {
            loop {
                let released = self.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if !contacts.iter().any(|c| self.lock().contains_key(c)) {
                    return;
                }
                released.await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::error!(
                ?contacts,
                "a hand-off has lasted more than {MAX_WAIT:?}; acknowledging the consent change anyway"
            );
        }
    }

    fn leave(&self, contact: i64) {
        let mut map = self.lock();
        if let Some(n) = map.get_mut(&contact) {
            *n -= 1;
            if *n == 0 {
                map.remove(&contact);
            }
        }
        self.count.store(map.len(), Ordering::SeqCst);
        drop(map);
        self.released.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, usize>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The contacts one sender has in a hand-off; each leaves when released,
/// and all that are left leave when this is dropped.
#[derive(Debug)]
pub struct Handoffs {
    fence: Arc<HandoffFence>,
    contacts: Vec<i64>,
}

impl Handoffs {
    /// `contact`'s hand-off is over (sent, refused or failed).
    pub fn release(&mut self, contact: ContactId) {
        if let Some(i) = self.contacts.iter().position(|&c| c == contact.0) {
            self.contacts.swap_remove(i);
            self.fence.leave(contact.0);
        }
    }
}

impl Drop for Handoffs {
    fn drop(&mut self) {
        for c in std::mem::take(&mut self.contacts) {
            self.fence.leave(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_withdrawal_waits_for_the_hand_off_in_progress() {
        let fence = Arc::new(HandoffFence::default());
        let mut h = fence.enter([ContactId(7), ContactId(8)]);
        assert!(!fence.is_idle());
        // Another contact is not held up.
        tokio::time::timeout(Duration::from_millis(100), fence.wait_clear(&[9]))
            .await
            .expect("contact 9 has no hand-off");
        let waiting = {
            let fence = Arc::clone(&fence);
            tokio::spawn(async move { fence.wait_clear(&[7]).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "returned while 7 was in a hand-off");
        h.release(ContactId(7));
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released")
            .unwrap();
        drop(h);
        assert!(fence.is_idle());
    }

    #[tokio::test]
    async fn two_hand_offs_to_one_contact_both_count() {
        let fence = Arc::new(HandoffFence::default());
        let a = fence.enter([ContactId(1)]);
        let b = fence.enter([ContactId(1)]);
        drop(a);
        assert!(!fence.is_idle());
        drop(b);
        assert!(fence.is_idle());
        fence.wait_clear(&[1]).await;
    }
}
