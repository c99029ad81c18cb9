//! How many sessions may run at once, in all and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Reply;

/// Counts the sessions running, per client IP address and in all.
#[derive(Debug)]
pub(crate) struct Connections {
    max_total: usize,
    max_per_client: usize,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One running session's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    client: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Connections {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Connections {
        Connections {
            max_total,
            max_per_client,
            counts: Arc::default(),
        }
    }

    /// A place for a session from `client`, or the reply that refuses it.
    pub(crate) fn admit(&self, client: IpAddr) -> Result<Permit, Reply> {
        // One client is one address, whether it comes as IPv4 or mapped IPv6.
        let client = client.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_total {
            return Err(Reply::new(
                421,
                "4.7.0",
                "Too many connections, try again later",
            ));
        }
        let mine = counts.per_client.entry(client).or_insert(0);
        if *mine >= self.max_per_client {
            return Err(Reply::new(
                421,
                "4.7.0",
                "Too many connections from your address, try again later",
            ));
        }
        *mine += 1;
        counts.total += 1;
        Ok(Permit {
            client,
            counts: Arc::clone(&self.counts),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

/// Answers a connection over the limits with `reply` instead of the
/// greeting (RFC 5321 §3.1 allows a 421 there) and closes it.
pub(crate) async fn refuse(mut stream: TcpStream, reply: Reply) {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_client_and_in_all_and_given_back() {
        let limits = Connections::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a_mapped).unwrap();
        let third = limits.admit(a).unwrap_err();
        assert!(third.text.contains("from your address"), "{third}");
        let _b1 = limits.admit(b).unwrap();
        let full = limits.admit(c).unwrap_err();
        assert_eq!((full.code, full.status), (421, "4.7.0"));
        drop(a1);
        let _c1 = limits.admit(c).unwrap();
        assert!(limits.admit(a).is_err());
    }
}
