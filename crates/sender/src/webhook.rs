//! Delivers the webhook outbox: consent changes POSTed to the
//! organisation's other systems (`[[webhooks.endpoints]]`), so that their
//! copies of a "no" stop too.
//!
//! At least once: a row leaves the outbox only when the receiver answered
//! 2xx (or 410 Gone, which stops that row visibly). Anything else is tried
//! again with exponential backoff, capped, for `give_up_after` (days by
//! default), then marked failed, where staff see it and can retry it.
//! Each request carries `Veto-Event-Id` (the ledger event, the same on every
//! retry: receivers deduplicate on it) and `Veto-Signature: t=<unix>,v1=<hex>`,
//! an HMAC-SHA256 with the endpoint's secret over `<t>.<body>`, so a
//! receiver can refuse forgeries and, by checking `t`, replays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;
use veto_core::Timestamp;
use veto_store::{AttemptOutcome, Store, StoreError, WebhookDelivery};

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Veto-Signature";
/// The ledger event's id: the same for every retry and every endpoint.
pub const EVENT_ID_HEADER: &str = "Veto-Event-Id";
/// This delivery row's id (what `veto webhooks retry` takes).
pub const DELIVERY_ID_HEADER: &str = "Veto-Delivery-Id";
/// The event kind (`withdraw`, `erasure`, …), also in the body.
pub const EVENT_KIND_HEADER: &str = "Veto-Event-Kind";

/// One receiver.
#[derive(Clone)]
pub struct WebhookTarget {
    pub name: String,
    pub url: String,
    /// The HMAC key shared with the receiver.
    pub secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub endpoints: Vec<WebhookTarget>,
    /// This node's name in claims.
    pub node: String,
    /// Deliveries claimed (and sent side by side) at once.
    pub batch: usize,
    /// For a whole request, connecting included.
    pub timeout: Duration,
    /// The wait after the first failure; doubled after each further one …
    pub backoff_base: Duration,
    /// … up to this.
    pub backoff_max: Duration,
    /// Retries stop this long after the row was written (or last retried by
    /// staff); it is then marked failed.
    pub give_up_after: Duration,
    /// Delivered rows are deleted this long after delivery.
    pub retention: Duration,
    /// How often an idle worker looks for due rows.
    pub poll_interval: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            endpoints: Vec::new(),
            node: "veto".to_owned(),
            batch: 16,
            timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(7 * 24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("cannot set up TLS for webhooks: {0}")]
    Tls(String),
    #[error("[[webhooks.endpoints]] {name}: the url cannot be used: {reason}")]
    Url { name: String, reason: String },
}

/// The delivery worker. Cheap to clone.
#[derive(Clone)]
pub struct WebhookSender {
    store: Store,
    settings: Arc<WebhookSettings>,
    targets: Arc<HashMap<String, Target>>,
    tls: tokio_rustls::TlsConnector,
}

/// A receiver's URL taken apart once.
struct Target {
    https: bool,
    /// The host to connect to and to name in TLS (IPv6 without brackets).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    path_and_query: String,
    secret: String,
}

impl Target {
    fn parse(t: &WebhookTarget) -> Result<Target, WebhookSetupError> {
        let bad = |why: &str| WebhookSetupError::Url {
            name: t.name.clone(),
            reason: why.to_owned(),
        };
        let uri: hyper::Uri = t
            .url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return Err(bad("it must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad("it names no host"))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(bad("it must not carry a user@"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target {
            https,
            host,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
            secret: t.secret.clone(),
        })
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub attempted: usize,
    pub delivered: usize,
    pub retrying: usize,
    pub failed: usize,
    pub gone: usize,
}

impl WebhookSender {
    pub fn new(
        store: Store,
        settings: WebhookSettings,
    ) -> Result<WebhookSender, WebhookSetupError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls =
            crate::smtp::client_tls_config(provider, Vec::new()).map_err(WebhookSetupError::Tls)?;
        let targets = settings
            .endpoints
            .iter()
            .map(|t| Ok((t.name.clone(), Target::parse(t)?)))
            .collect::<Result<_, WebhookSetupError>>()?;
        Ok(WebhookSender {
            store,
            settings: Arc::new(settings),
            targets: Arc::new(targets),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    /// Delivers until `stop` turns true: due rows as they come, delivered
    /// rows purged after `retention`. A store error is logged and tried
    /// again on the next poll.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        const PURGE_EVERY: Duration = Duration::from_secs(600);
        let mut last_purge: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                last_purge = Some(tokio::time::Instant::now());
                if let Err(e) = self.purge().await {
                    tracing::warn!(error = %e, "could not purge delivered webhooks");
                }
            }
            let busy = match self.deliver_due().await {
                Ok(report) => report.attempted >= self.settings.batch,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim webhook deliveries; trying again");
                    false
                }
            };
            if !busy {
                tokio::select! {
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }

    /// Deletes rows delivered longer ago than `retention`.
    pub async fn purge(&self) -> Result<u64, StoreError> {
        let before = Timestamp::now()
            .checked_sub(self.settings.retention)
            .unwrap_or(Timestamp::MIN);
        let n = self.store.purge_webhook_deliveries(before).await?;
        if n > 0 {
            tracing::info!(
                purged = n,
                "deleted delivered webhooks past their retention"
            );
        }
        Ok(n)
    }

    /// One pass: claims the due rows (up to `batch`), sends them side by
    /// side, and records each outcome.
    pub async fn deliver_due(&self) -> Result<PassReport, StoreError> {
        let s = &self.settings;
        // Long enough for every request of the batch to end on its own.
        let lease = s.timeout.saturating_mul(2) + Duration::from_secs(30);
        let claimed = self
            .store
            .claim_webhook_deliveries(&s.node, s.batch, Timestamp::now(), lease)
            .await?;
        let mut report = PassReport {
            attempted: claimed.len(),
            ..PassReport::default()
        };
        let mut set = tokio::task::JoinSet::new();
        for d in claimed {
            let me = self.clone();
            set.spawn(async move {
                let outcome = me.attempt(&d).await;
                let recorded = me
                    .store
                    .finish_webhook_attempt(
                        d.id,
                        &me.settings.node,
                        outcome.clone(),
                        Timestamp::now(),
                    )
                    .await;
                (d, outcome, recorded)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((d, outcome, recorded)) = joined else {
                // A panicked attempt leaves its claim to run out.
                continue;
            };
            if let Err(e) = recorded {
                // Its claim runs out and it is sent again: at least once.
                tracing::warn!(delivery = d.id, error = %e, "could not record a webhook attempt");
            }
            match outcome {
                AttemptOutcome::Delivered { status } => {
                    report.delivered += 1;
                    tracing::debug!(delivery = d.id, event = d.event_id, endpoint = %d.endpoint, status, "webhook delivered");
                }
                AttemptOutcome::Gone { status } => {
                    report.gone += 1;
                    tracing::warn!(delivery = d.id, event = d.event_id, endpoint = %d.endpoint, status, "webhook receiver answered 410 Gone; this delivery stops (retry it with `veto webhooks retry`)");
                }
                AttemptOutcome::Retry {
                    status,
                    error,
                    next_at,
                } => {
                    report.retrying += 1;
                    tracing::info!(delivery = d.id, event = d.event_id, endpoint = %d.endpoint, ?status, %error, %next_at, "webhook not delivered; will retry");
                }
                AttemptOutcome::GaveUp { status, error } => {
                    report.failed += 1;
                    tracing::error!(delivery = d.id, event = d.event_id, endpoint = %d.endpoint, ?status, %error, "webhook retries ran out; marked failed (see `veto webhooks status`)");
                }
            }
        }
        Ok(report)
    }

    async fn attempt(&self, d: &WebhookDelivery) -> AttemptOutcome {
        let Some(target) = self.targets.get(&d.endpoint) else {
            return self.failure(
                d,
                None,
                None,
                format!(
                    "the endpoint {:?} is not in [[webhooks.endpoints]] any more",
                    d.endpoint
                ),
            );
        };
        let t = Timestamp::now().as_second();
        let signature = signature_header(target.secret.as_bytes(), t, d.payload.as_bytes());
        let exchange = self.post(target, d, signature);
        match tokio::time::timeout(self.settings.timeout, exchange).await {
            Err(_) => self.failure(
                d,
                None,
                None,
                format!("no answer within {:?}", self.settings.timeout),
            ),
            Ok(Err(why)) => self.failure(d, None, None, why),
            Ok(Ok((status, _))) if (200..300).contains(&status) => {
                AttemptOutcome::Delivered { status }
            }
            Ok(Ok((410, _))) => AttemptOutcome::Gone { status: 410 },
            // A redirect is not followed: a signed POST is not re-sent
            // elsewhere, so a moved endpoint shows as a failure.
            Ok(Ok((status, retry_after))) => self.failure(
                d,
                Some(status),
                retry_after,
                format!("the receiver answered {status}"),
            ),
        }
    }

    /// One HTTP/1.1 exchange on a connection of its own: the status and any
    /// `Retry-After` (in seconds).
    async fn post(
        &self,
        target: &Target,
        d: &WebhookDelivery,
        signature: String,
    ) -> Result<(u16, Option<Duration>), String> {
        use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
        let _ = tcp.set_nodelay(true);
        let request = hyper::Request::post(target.path_and_query.as_str())
            .header(HOST, target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("veto/", env!("CARGO_PKG_VERSION"), " (webhooks)"),
            )
            .header(EVENT_ID_HEADER, d.event_id.to_string())
            .header(DELIVERY_ID_HEADER, d.id.to_string())
            .header(EVENT_KIND_HEADER, d.kind.as_str())
            .header(SIGNATURE_HEADER, signature)
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                d.payload.clone(),
            )))
            .map_err(|e| format!("cannot make the request: {e}"))?;
        let response = if target.https {
            let name = rustls_pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("{:?} is not a name TLS can check: {e}", target.host))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {} failed: {e}", target.authority))?;
            exchange(tls, request).await?
        } else {
            exchange(tcp, request).await?
        };
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Ok((response.status().as_u16(), retry_after))
    }

    /// Another try later, or failed once the retry window has run out.
    fn failure(
        &self,
        d: &WebhookDelivery,
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    ) -> AttemptOutcome {
        let s = &self.settings;
        let now = Timestamp::now();
        let deadline = d
            .pending_since
            .checked_add(s.give_up_after)
            .unwrap_or(Timestamp::MAX);
        let wait = backoff(
            u32::try_from(d.attempts + 1).unwrap_or(u32::MAX),
            s.backoff_base,
            s.backoff_max,
        );
        let wait = retry_after.map_or(wait, |r| r.clamp(wait, s.backoff_max.max(wait)));
        let next_at = now.checked_add(wait).unwrap_or(Timestamp::MAX);
        if next_at > deadline {
            let days = s.give_up_after.as_secs_f64() / 86_400.0;
            AttemptOutcome::GaveUp {
                status,
                error: format!("{error}; retries stopped after {days:.1} days"),
            }
        } else {
            AttemptOutcome::Retry {
                status,
                error,
                next_at,
            }
        }
    }
}

/// Sends `request` on `io` and returns the response head; the body is not
/// read, and the connection closes when it is dropped.
async fn exchange<IO>(
    io: IO,
    request: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP failed: {}", error_chain(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP failed: {}", error_chain(&e)))
}

/// The wait after the `attempt`th failed attempt (1-based): `base`,
/// doubled each time, at most `max`, plus up to a tenth more at random so
/// that many nodes do not all come back at the same moment.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let doubled = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(40)));
    let wait = doubled.min(max);
    let jitter = wait.mul_f64(rand::random::<f64>() / 10.0);
    wait + jitter
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn hmac_of(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature_header(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = hmac_of(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", data_encoding::HEXLOWER.encode(&tag))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not t=<unix seconds>,v1=<hex>")]
    Malformed,
    #[error(
        "the signature was made {age} seconds from now, more than the {tolerance} allowed (a replay, or a clock off)"
    )]
    Stale { age: i64, tolerance: i64 },
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// What a receiver does: checks that the header's `t` is within
/// `tolerance` seconds of `now` and that one of its `v1` values is the
/// HMAC of `<t>.<body>` (in constant time).
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => tags.push(
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode(v.as_bytes())
                    .map_err(|_| SignatureError::Malformed)?,
            ),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = now.saturating_sub(t);
    if age.abs() > tolerance {
        return Err(SignatureError::Stale { age, tolerance });
    }
    if tags
        .iter()
        .any(|tag| hmac_of(secret, t, body).verify_slice(tag).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering_and_replays() {
        let body = br#"{"event_id":1}"#;
        let h = signature_header(b"secret", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="), "{h}");
        assert_eq!(
            verify_signature(b"secret", &h, body, 1_700_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"secret", &h, br#"{"event_id":2}"#, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"other", &h, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_signature(b"secret", &h, body, 1_700_001_000, 300),
            Err(SignatureError::Stale { .. })
        ));
        // A new timestamp on an old signature does not verify.
        let moved = h.replace("t=1700000000", "t=1700000900");
        assert_eq!(
            verify_signature(b"secret", &moved, body, 1_700_000_900, 300),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz"] {
            assert_eq!(
                verify_signature(b"secret", bad, body, 1, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(3600);
        let within = |got: Duration, want: u64| {
            let want = Duration::from_secs(want);
            assert!(
                got >= want && got <= want.mul_f64(1.1),
                "{got:?} vs {want:?}"
            );
        };
        within(backoff(1, base, max), 30);
        within(backoff(2, base, max), 60);
        within(backoff(5, base, max), 480);
        within(backoff(8, base, max), 3600);
        within(backoff(1000, base, max), 3600);
    }
}
