//! What the gateway reads from the store for every message but that changes
//! rarely: the token keys and topic definitions. Never consent: the guard
//! reads each recipient's state afresh, every time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veto_core::{Topic, TopicKey};
use veto_mail::{TokenKey, TokenKeys};
use veto_store::Store;

use crate::Fail;

/// How long a cached value is used before it is read again. A key rotated
/// meanwhile starts signing this late (links signed with the old one keep
/// working); a renamed topic shows its new name this late.
const FRESH_FOR: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(crate) struct Cache {
    keys: Mutex<Option<(Instant, Arc<TokenKeys>)>>,
    topics: Mutex<HashMap<String, (Instant, Arc<Topic>)>>,
}

impl Cache {
    /// The token keys for minting. `fresh`: read them from the store now
    /// (for verifying, where a key made a moment ago on another node counts).
    pub(crate) async fn token_keys(
        &self,
        store: &Store,
        fresh: bool,
    ) -> Result<Arc<TokenKeys>, Fail> {
        if !fresh
            && let Some((at, keys)) = &*self.keys.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < FRESH_FOR
        {
            return Ok(Arc::clone(keys));
        }
        let mut keys = store
            .token_keys()
            .await?
            .into_iter()
            .map(|(id, secret)| TokenKey::new(id, secret));
        let current = keys
            .next()
            .ok_or_else(|| Fail::Token("the store holds no token key".into()))?;
        let keys = Arc::new(
            TokenKeys::new(current, keys.collect()).map_err(|e| Fail::Token(e.to_string()))?,
        );
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), Arc::clone(&keys)));
        Ok(keys)
    }

    /// A topic by key; `None` when the store has none (not cached, so a
    /// topic added a moment ago is found).
    pub(crate) async fn topic(
        &self,
        store: &Store,
        key: &TopicKey,
    ) -> Result<Option<Arc<Topic>>, Fail> {
        if let Some((at, topic)) = self
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key.as_str())
            && at.elapsed() < FRESH_FOR
        {
            return Ok(Some(Arc::clone(topic)));
        }
        let topic = store.topic(key).await?.map(Arc::new);
        if let Some(t) = &topic {
            self.topics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.as_str().to_owned(), (Instant::now(), Arc::clone(t)));
        }
        Ok(topic)
    }
}
