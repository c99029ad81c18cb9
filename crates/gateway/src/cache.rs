//! Short-lived caches of what does not change per message: the token key
//! ring and topic definitions. Never consent state: the guard reads that
//! from the store for every recipient, at RCPT and again at the end of DATA.
//!
//! Each entry lives for [`TTL`]; a key rotation or a topic edit is seen by
//! new messages within that time. Staleness cannot let mail through that
//! the guard would refuse: a cached topic only names what a message is
//! about (the guard still decides per recipient), and a cached key ring only
//! mints tokens with a key that was current a moment ago, which verifiers
//! still accept (a rotation adds a key; the older ones keep verifying).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veto_core::Topic;
use veto_mail::TokenKeys;

/// How long a cached value is used before it is read again.
pub(crate) const TTL: Duration = Duration::from_secs(1);

/// One value with the time it was read.
struct Entry<V> {
    at: Instant,
    value: V,
}

impl<V: Clone> Entry<V> {
    fn fresh(&self, now: Instant) -> Option<V> {
        (now.duration_since(self.at) < TTL).then(|| self.value.clone())
    }
}

#[derive(Default)]
pub(crate) struct Caches {
    keys: Mutex<Option<Entry<Arc<TokenKeys>>>>,
    /// Topics by key; only topics that exist (a new topic is usable at once).
    topics: Mutex<HashMap<String, Entry<Topic>>>,
}

impl Caches {
    pub(crate) fn token_keys(&self) -> Option<Arc<TokenKeys>> {
        let now = Instant::now();
        lock(&self.keys).as_ref().and_then(|e| e.fresh(now))
    }

    pub(crate) fn put_token_keys(&self, keys: Arc<TokenKeys>) {
        *lock(&self.keys) = Some(Entry {
            at: Instant::now(),
            value: keys,
        });
    }

    pub(crate) fn topic(&self, key: &str) -> Option<Topic> {
        let now = Instant::now();
        lock(&self.topics).get(key).and_then(|e| e.fresh(now))
    }

    pub(crate) fn put_topic(&self, topic: Topic) {
        let mut topics = lock(&self.topics);
        let now = Instant::now();
        // Bounded: stale entries go whenever one is added.
        topics.retain(|_, e| now.duration_since(e.at) < TTL);
        topics.insert(
            topic.key.as_str().to_owned(),
            Entry {
                at: now,
                value: topic,
            },
        );
    }
}

/// A poisoned lock only means another session panicked while holding it;
/// the cached value is still whole (it is replaced in one assignment).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_value_expires_after_the_ttl() {
        let e = Entry {
            at: Instant::now() - TTL - Duration::from_millis(1),
            value: 7,
        };
        assert_eq!(e.fresh(Instant::now()), None);
        let e = Entry {
            at: Instant::now(),
            value: 7,
        };
        assert_eq!(e.fresh(Instant::now()), Some(7));
    }
}
