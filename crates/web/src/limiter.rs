//! Fixed-window rate limits, in memory, per key (an IP, a token).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Limiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    /// Counts one hit for `key`; false when it is over `limit` this minute.
    pub fn allow(&self, key: &str, limit: u32) -> bool {
        self.allow_in(key, limit, WINDOW)
    }

    /// Counts one hit for `key`; false when it is over `limit` in the
    /// current `window` (a fixed window that starts at the first hit).
    pub fn allow_in(&self, key: &str, limit: u32, window: Duration) -> bool {
        let now = Instant::now();
        let Ok(mut map) = self.windows.lock() else {
            // A poisoned lock only means another request panicked; refuse
            // nothing on that account (limits protect, they do not decide).
            return true;
        };
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now.duration_since(*start) < window.max(WINDOW));
        }
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= limit
    }
}
