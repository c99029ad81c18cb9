// The webhook outbox. Included once per backend next to queries.rs (same
// module, same imports).

use crate::webhook::{AttemptOutcome, RetryOutcome, WebhookCounts, WebhookDelivery, WebhookStatus};

/// The JSON body a receiver gets. Field order is fixed; the body is stored
/// as sent, so its signature covers exactly these bytes.
#[derive(serde::Serialize)]
struct WebhookPayload<'a> {
    /// The ledger event: the same id for every endpoint and every retry.
    event_id: i64,
    kind: &'a str,
    /// When it happened, and when veto recorded it (RFC 3339, UTC).
    at: String,
    recorded_at: String,
    contact_id: i64,
    /// `null` once the person is erased.
    email: Option<&'a str>,
    /// Erasure only: the keyed hash on veto's suppression list.
    #[serde(skip_serializing_if = "Option::is_none")]
    address_hash: Option<String>,
    /// `null`: all marketing.
    topic: Option<&'a str>,
    /// `null`: every channel.
    channel: Option<&'a str>,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency: Option<WebhookFrequency<'a>>,
}

#[derive(serde::Serialize)]
struct WebhookFrequency<'a> {
    max: i64,
    per: &'a str,
}

/// One delivery row per recorded event per endpoint that wants its kind.
async fn insert_webhook_rows(
    b: &Backend,
    tx: &mut Tx,
    skey: &[u8; 32],
    events: &[(EventRecord, Vec<u8>)],
    told: &[(String, String)],
    now: i64,
) -> Result<()> {
    let endpoints = b.webhook_endpoints();
    if endpoints.is_empty() || events.is_empty() {
        return Ok(());
    }
    let mut topics: HashMap<i64, String> = HashMap::new();
    if events.iter().any(|(r, _)| r.scope_topic.is_some()) {
        for row in sqlx::query("SELECT id, key FROM topics").fetch_all(&mut **tx).await? {
            topics.insert(row.try_get("id")?, row.try_get("key")?);
        }
    }
    let mut rows: Vec<(i64, i64, &str, &str, String)> = vec![];
    for ((r, _), (key, email)) in events.iter().zip(told) {
        let wanted: Vec<&str> = endpoints.iter().filter(|e| e.wants(&r.kind)).map(|e| e.name.as_str()).collect();
        if wanted.is_empty() {
            continue;
        }
        let erasure = r.kind == "erasure";
        let payload = WebhookPayload {
            event_id: r.id,
            kind: &r.kind,
            at: ts(r.at)?.to_string(),
            recorded_at: ts(r.recorded_at)?.to_string(),
            contact_id: r.contact_id,
            // GDPR Art 17: the erasure itself is told without the address.
            email: (!erasure).then_some(email.as_str()),
            address_hash: erasure.then(|| hex(&addr_hash(skey, key))),
            topic: r.scope_topic.and_then(|t| topics.get(&t)).map(String::as_str),
            channel: r.channel.as_deref(),
            source: &r.source,
            until: r.until_at.map(ts).transpose()?.map(|t| t.to_string()),
            frequency: match (r.freq_max, r.freq_per.as_deref()) {
                (Some(max), Some(per)) => Some(WebhookFrequency { max, per }),
                _ => None,
            },
        };
        let body = serde_json::to_string(&payload).map_err(|e| StoreError::Invalid(e.to_string()))?;
        for name in wanted {
            rows.push((r.id, r.contact_id, name, &r.kind, body.clone()));
        }
    }
    for chunk in rows.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO webhook_deliveries (event_id, contact_id, endpoint, kind, payload, status, attempts, created_at, \
             pending_since, next_attempt_at) ",
        );
        qb.push_values(chunk, |mut row, (event, contact, endpoint, kind, body)| {
            row.push_bind(*event)
                .push_bind(*contact)
                .push_bind(endpoint.to_string())
                .push_bind(kind.to_string())
                .push_bind(body.clone())
                .push_bind("pending")
                .push_bind(0i64)
                .push_bind(now)
                .push_bind(now)
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Takes the address out of every webhook payload about `contact`, sent or
/// not (part of an erasure's transaction).
async fn redact_webhook_payloads(tx: &mut Tx, contact: i64) -> Result<()> {
    let rows = sqlx::query("SELECT id, payload FROM webhook_deliveries WHERE contact_id = $1")
        .bind(contact)
        .fetch_all(&mut **tx)
        .await?;
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let payload: String = row.try_get("payload")?;
        let mut value: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("webhook delivery {id} holds a payload that is not JSON: {e}")))?;
        let Some(fields) = value.as_object_mut() else {
            return Err(StoreError::Corrupt(format!("webhook delivery {id} holds a payload that is not a JSON object")));
        };
        if fields.get("email").is_none_or(serde_json::Value::is_null) {
            continue;
        }
        fields.insert("email".into(), serde_json::Value::Null);
        let redacted = serde_json::to_string(&value).map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query("UPDATE webhook_deliveries SET payload = $1 WHERE id = $2").bind(redacted).bind(id).execute(&mut **tx).await?;
    }
    Ok(())
}

fn webhook_delivery_from_row(r: &DbRow) -> Result<WebhookDelivery> {
    let status: String = r.try_get("status")?;
    let opt_ts = |col: &str| -> Result<Option<Timestamp>> { r.try_get::<Option<i64>, _>(col)?.map(ts).transpose() };
    Ok(WebhookDelivery {
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        contact_id: r.try_get("contact_id")?,
        endpoint: r.try_get("endpoint")?,
        kind: r.try_get("kind")?,
        payload: r.try_get("payload")?,
        status: WebhookStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("webhook delivery status {status:?}")))?,
        attempts: r.try_get("attempts")?,
        created_at: ts(r.try_get("created_at")?)?,
        pending_since: ts(r.try_get("pending_since")?)?,
        next_attempt_at: ts(r.try_get("next_attempt_at")?)?,
        last_attempt_at: opt_ts("last_attempt_at")?,
        last_status: r.try_get::<Option<i64>, _>("last_status")?.and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get("last_error")?,
        delivered_at: opt_ts("delivered_at")?,
    })
}

pub(crate) async fn claim_webhook_deliveries(
    b: &Backend,
    node: &str,
    n: usize,
    now: Timestamp,
    until: Timestamp,
) -> Result<Vec<WebhookDelivery>> {
    // PostgreSQL: nodes claiming at once skip each other's rows instead of
    // waiting; SQLite holds the write lock for the statement.
    let lock = if IS_PG { " FOR UPDATE SKIP LOCKED" } else { "" };
    let mut tx = begin(b).await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2 WHERE id IN \
         (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
         AND (claimed_until IS NULL OR claimed_until <= $3) ORDER BY next_attempt_at, id LIMIT $4{lock}) RETURNING *"
    )))
    .bind(node)
    .bind(until.as_microsecond())
    .bind(now.as_microsecond())
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut out: Vec<WebhookDelivery> = rows.iter().map(webhook_delivery_from_row).collect::<Result<_>>()?;
    out.sort_by_key(|d| d.id);
    Ok(out)
}

pub(crate) async fn finish_webhook_attempt(
    b: &Backend,
    id: i64,
    node: &str,
    outcome: AttemptOutcome,
    now: Timestamp,
) -> Result<bool> {
    let now = now.as_microsecond();
    let (status, code, error, next_at, delivered_at) = match outcome {
        AttemptOutcome::Delivered { status } => ("delivered", Some(status), None, None, Some(now)),
        AttemptOutcome::Gone { status } => (
            "gone",
            Some(status),
            Some(format!("the receiver answered {status} Gone: not tried again unless retried")),
            None,
            None,
        ),
        AttemptOutcome::Retry { status, error, next_at } => ("pending", status, Some(error), Some(next_at.as_microsecond()), None),
        AttemptOutcome::GaveUp { status, error } => ("failed", status, Some(error), None, None),
    };
    let mut tx = begin(b).await?;
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, last_attempt_at = $2, last_status = $3, \
         last_error = $4, next_attempt_at = COALESCE($5, next_attempt_at), delivered_at = $6, claimed_by = NULL, \
         claimed_until = NULL WHERE id = $7 AND claimed_by = $8 AND status = 'pending'",
    )
    .bind(status)
    .bind(now)
    .bind(code.map(i64::from))
    .bind(error)
    .bind(next_at)
    .bind(delivered_at)
    .bind(id)
    .bind(node)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(done == 1)
}

pub(crate) async fn webhook_deliveries(
    b: &Backend,
    status: Option<WebhookStatus>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<WebhookDelivery>> {
    let mut qb = QueryBuilder::<Db>::new("SELECT * FROM webhook_deliveries WHERE id > ");
    qb.push_bind(after.unwrap_or(0));
    if let Some(status) = status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(&b.read).await?;
    rows.iter().map(webhook_delivery_from_row).collect()
}

pub(crate) async fn webhook_delivery(b: &Backend, id: i64) -> Result<Option<WebhookDelivery>> {
    let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE id = $1").bind(id).fetch_optional(&b.write).await?;
    row.as_ref().map(webhook_delivery_from_row).transpose()
}

pub(crate) async fn retry_webhook_delivery(b: &Backend, id: i64, now: Timestamp) -> Result<RetryOutcome> {
    let mut tx = begin(b).await?;
    let row = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, pending_since = $1, claimed_by = NULL, \
         claimed_until = NULL WHERE id = $2 AND status <> 'delivered' RETURNING *",
    )
    .bind(now.as_microsecond())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match row {
        Some(row) => RetryOutcome::Queued(webhook_delivery_from_row(&row)?),
        None => match sqlx::query("SELECT * FROM webhook_deliveries WHERE id = $1").bind(id).fetch_optional(&mut *tx).await? {
            Some(row) => RetryOutcome::AlreadyDelivered(webhook_delivery_from_row(&row)?),
            None => RetryOutcome::NotFound,
        },
    };
    tx.commit().await?;
    Ok(outcome)
}

pub(crate) async fn purge_webhook_deliveries(b: &Backend, before: Timestamp) -> Result<u64> {
    let mut tx = begin(b).await?;
    let n = sqlx::query("DELETE FROM webhook_deliveries WHERE status = 'delivered' AND delivered_at < $1")
        .bind(before.as_microsecond())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

pub(crate) async fn webhook_counts(b: &Backend) -> Result<Vec<WebhookCounts>> {
    let rows = sqlx::query(
        "SELECT endpoint, status, COUNT(*) AS n, MIN(created_at) AS oldest, \
         SUM(CASE WHEN last_error IS NULL THEN 0 ELSE 1 END) AS with_error \
         FROM webhook_deliveries GROUP BY endpoint, status ORDER BY endpoint, status",
    )
    .fetch_all(&b.read)
    .await?;
    let mut out: BTreeMap<String, WebhookCounts> = BTreeMap::new();
    for row in rows {
        let endpoint: String = row.try_get("endpoint")?;
        let status: String = row.try_get("status")?;
        let n: i64 = row.try_get("n")?;
        let c = out.entry(endpoint.clone()).or_insert_with(|| WebhookCounts { endpoint, ..WebhookCounts::default() });
        match WebhookStatus::parse(&status) {
            Some(WebhookStatus::Pending) => {
                c.pending = n;
                c.retrying = row.try_get::<Option<i64>, _>("with_error")?.unwrap_or(0);
                c.oldest_pending = row.try_get::<Option<i64>, _>("oldest")?.map(ts).transpose()?;
            }
            Some(WebhookStatus::Delivered) => c.delivered = n,
            Some(WebhookStatus::Failed) => c.failed = n,
            Some(WebhookStatus::Gone) => c.gone = n,
            None => return Err(StoreError::Corrupt(format!("webhook delivery status {status:?}"))),
        }
    }
    Ok(out.into_values().collect())
}
