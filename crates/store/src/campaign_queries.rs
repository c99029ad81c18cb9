// Campaigns and their recipient queue. Included once per backend next to
// queries.rs (same module, same imports).

const CAMPAIGN_COLS: &str = "c.id, c.name, c.topic_id, t.key AS topic_key, c.from_name, c.from_address, c.subject, c.html, c.text, \
     c.template_version, c.state, c.state_reason, c.scheduled_at, c.rate, c.domain_rate, c.concurrency, c.created_by, \
     c.created_at, c.started_at, c.finished_at";

fn campaign_from_row(r: &DbRow) -> Result<Campaign> {
    let state: String = r.try_get("state")?;
    let opt_ts = |col: &str| -> Result<Option<Timestamp>> { r.try_get::<Option<i64>, _>(col)?.map(ts).transpose() };
    let concurrency: i64 = r.try_get("concurrency")?;
    Ok(Campaign {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        topic_id: r.try_get("topic_id")?,
        topic: r.try_get("topic_key")?,
        from_name: r.try_get("from_name")?,
        from_address: r.try_get("from_address")?,
        subject: r.try_get("subject")?,
        html: r.try_get("html")?,
        text: r.try_get("text")?,
        template_version: r.try_get("template_version")?,
        state: CampaignState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("campaign state {state:?}")))?,
        state_reason: r.try_get("state_reason")?,
        scheduled_at: opt_ts("scheduled_at")?,
        rate: r.try_get("rate")?,
        domain_rate: r.try_get("domain_rate")?,
        concurrency: u32::try_from(concurrency).unwrap_or(1),
        created_by: r.try_get("created_by")?,
        created_at: ts(r.try_get("created_at")?)?,
        started_at: opt_ts("started_at")?,
        finished_at: opt_ts("finished_at")?,
    })
}

async fn campaign_in<'e, E>(exec: E, id: i64) -> Result<Option<Campaign>>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CAMPAIGN_COLS} FROM campaigns c JOIN topics t ON t.id = c.topic_id WHERE c.id = $1"
    )))
    .bind(id)
    .fetch_optional(exec)
    .await?;
    row.as_ref().map(campaign_from_row).transpose()
}

pub(crate) async fn create_campaign(b: &Backend, c: NewCampaign) -> Result<Campaign> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO campaigns (name, topic_id, from_name, from_address, subject, html, text, template_version, state, \
         scheduled_at, rate, domain_rate, concurrency, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'draft', $9, $10, $11, $12, $13, $14) RETURNING id",
    )
    .bind(&c.name)
    .bind(i64::from(c.topic.id.0))
    .bind(&c.from_name)
    .bind(&c.from_address)
    .bind(&c.subject)
    .bind(&c.html)
    .bind(&c.text)
    .bind(&c.template_version)
    .bind(c.scheduled_at.map(|t| t.as_microsecond()))
    .bind(c.rate)
    .bind(c.domain_rate)
    .bind(i64::from(c.concurrency))
    .bind(&c.created_by)
    .bind(now_us())
    .fetch_one(&b.write)
    .await?;
    campaign_in(&b.read, id).await?.ok_or_else(|| crate::campaign::not_found(id))
}

pub(crate) async fn campaign(b: &Backend, id: i64) -> Result<Option<Campaign>> {
    campaign_in(&b.read, id).await
}

pub(crate) async fn campaigns(b: &Backend) -> Result<Vec<Campaign>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CAMPAIGN_COLS} FROM campaigns c JOIN topics t ON t.id = c.topic_id ORDER BY c.id DESC"
    )))
    .fetch_all(&b.read)
    .await?;
    rows.iter().map(campaign_from_row).collect()
}

pub(crate) async fn set_campaign_state(
    b: &Backend,
    id: i64,
    from: &[CampaignState],
    to: CampaignState,
    reason: Option<&str>,
) -> Result<Campaign> {
    let mut tx = begin(b).await?;
    let Some(current) = campaign_in(&mut *tx, id).await? else {
        return Err(crate::campaign::not_found(id));
    };
    if !from.contains(&current.state) {
        let allowed: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        return Err(StoreError::Invalid(format!(
            "campaign {id} is {}; it can become {to} only when {}",
            current.state,
            allowed.join(" or ")
        )));
    }
    let finished = matches!(to, CampaignState::Cancelled | CampaignState::Done).then(now_us);
    sqlx::query("UPDATE campaigns SET state = $1, state_reason = $2, finished_at = COALESCE($3, finished_at) WHERE id = $4")
        .bind(to.as_str())
        .bind(reason)
        .bind(finished)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if to == CampaignState::Cancelled {
        // Nothing more goes out; what was queued stays visible as such.
        sqlx::query("UPDATE campaign_recipients SET claimed_by = NULL WHERE campaign_id = $1 AND state = 'claimed'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let updated = campaign_in(&mut *tx, id).await?.ok_or_else(|| crate::campaign::not_found(id))?;
    tx.commit().await?;
    Ok(updated)
}

/// Queues the audience: every contact with an address (erased ones have none).
async fn enqueue_audience(tx: &mut Tx, id: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO campaign_recipients (campaign_id, contact_id, state) \
         SELECT $1, id, 'queued' FROM contacts WHERE email_key IS NOT NULL \
         ON CONFLICT (campaign_id, contact_id) DO NOTHING",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn start_campaign(b: &Backend, id: i64, now: Timestamp) -> Result<Campaign> {
    let mut tx = begin(b).await?;
    let Some(c) = campaign_in(&mut *tx, id).await? else {
        return Err(crate::campaign::not_found(id));
    };
    if c.state != CampaignState::Draft {
        return Err(StoreError::Invalid(format!(
            "campaign {id} is {}; only a draft can be started (resume a paused one)",
            c.state
        )));
    }
    if c.scheduled_at.is_some_and(|at| at > now) {
        sqlx::query("UPDATE campaigns SET state = 'scheduled' WHERE id = $1").bind(id).execute(&mut *tx).await?;
    } else {
        enqueue_audience(&mut tx, id).await?;
        sqlx::query("UPDATE campaigns SET state = 'sending', started_at = $1 WHERE id = $2")
            .bind(now.as_microsecond())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let started = campaign_in(&mut *tx, id).await?.ok_or_else(|| crate::campaign::not_found(id))?;
    tx.commit().await?;
    Ok(started)
}

pub(crate) async fn campaigns_to_send(b: &Backend, now: Timestamp) -> Result<Vec<Campaign>> {
    let due: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM campaigns WHERE state = 'scheduled' AND scheduled_at <= $1")
            .bind(now.as_microsecond())
            .fetch_all(&b.read)
            .await?;
    for id in due {
        let mut tx = begin(b).await?;
        // One node moves it (and queues its audience) once.
        let moved = sqlx::query("UPDATE campaigns SET state = 'sending', started_at = $1 WHERE id = $2 AND state = 'scheduled'")
            .bind(now.as_microsecond())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 1 {
            enqueue_audience(&mut tx, id).await?;
        }
        tx.commit().await?;
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CAMPAIGN_COLS} FROM campaigns c JOIN topics t ON t.id = c.topic_id WHERE c.state = 'sending' ORDER BY c.id"
    )))
    .fetch_all(&b.read)
    .await?;
    rows.iter().map(campaign_from_row).collect()
}

pub(crate) async fn claim_recipients(
    b: &Backend,
    campaign: i64,
    node: &str,
    n: usize,
    now: Timestamp,
    lease_expired: Timestamp,
) -> Result<Vec<ClaimedRecipient>> {
    let lock = if IS_PG { " FOR UPDATE SKIP LOCKED" } else { "" };
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut tx = begin(b).await?;
    // Claims whose sender went away (its lease ran out) first, then the queue.
    let mut ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "UPDATE campaign_recipients SET claimed_by = $2, claimed_at = $3 \
         WHERE campaign_id = $1 AND contact_id IN (SELECT contact_id FROM campaign_recipients \
         WHERE campaign_id = $1 AND state = 'claimed' AND reason IS NULL AND claimed_at < $4 ORDER BY contact_id LIMIT $5{lock}) \
         RETURNING contact_id"
    )))
    .bind(campaign)
    .bind(node)
    .bind(now.as_microsecond())
    .bind(lease_expired.as_microsecond())
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if ids.len() < n {
        let queued: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "UPDATE campaign_recipients SET state = 'claimed', claimed_by = $2, claimed_at = $3 \
             WHERE campaign_id = $1 AND contact_id IN (SELECT contact_id FROM campaign_recipients \
             WHERE campaign_id = $1 AND state = 'queued' AND reason IS NULL ORDER BY contact_id LIMIT $4{lock}) \
             RETURNING contact_id"
        )))
        .bind(campaign)
        .bind(node)
        .bind(now.as_microsecond())
        .bind(limit - ids.len() as i64)
        .fetch_all(&mut *tx)
        .await?;
        ids.extend(queued);
    }
    tx.commit().await?;
    ids.sort_unstable();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new("SELECT id, email, name, attributes FROM contacts WHERE id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        sep.push_unseparated(")");
        let mut found: HashMap<i64, ClaimedRecipient> = HashMap::new();
        for row in qb.build().fetch_all(&b.read).await? {
            let id: i64 = row.try_get("id")?;
            let attributes: String = row.try_get("attributes")?;
            found.insert(
                id,
                ClaimedRecipient {
                    contact: ContactId(id),
                    email: row.try_get("email")?,
                    name: row.try_get("name")?,
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                },
            );
        }
        // A contact row that is gone entirely counts as erased.
        out.extend(chunk.iter().map(|id| {
            found.remove(id).unwrap_or(ClaimedRecipient {
                contact: ContactId(*id),
                email: None,
                name: None,
                attributes: BTreeMap::new(),
            })
        }));
    }
    Ok(out)
}

pub(crate) async fn release_claims(b: &Backend, node: Option<&str>) -> Result<u64> {
    let done = match node {
        Some(node) => sqlx::query(
            "UPDATE campaign_recipients SET state = 'queued', claimed_by = NULL, claimed_at = NULL \
             WHERE state = 'claimed' AND claimed_by = $1",
        )
        .bind(node)
        .execute(&b.write)
        .await?,
        None => sqlx::query(
            "UPDATE campaign_recipients SET state = 'queued', claimed_by = NULL, claimed_at = NULL WHERE state = 'claimed'",
        )
        .execute(&b.write)
        .await?,
    };
    Ok(done.rows_affected())
}

pub(crate) async fn record_recipients(
    b: &Backend,
    outcomes: Vec<(i64, RecipientOutcome)>,
    receipts: Vec<NewReceipt>,
) -> Result<()> {
    let now = now_us();
    let mut groups: BTreeMap<(i64, &'static str, Option<String>), Vec<i64>> = BTreeMap::new();
    for (campaign, o) in &outcomes {
        groups.entry((*campaign, o.state.as_str(), o.reason.clone())).or_default().push(o.contact.0);
    }
    let mut tx = begin(b).await?;
    for ((campaign, state, reason), ids) in &groups {
        for chunk in ids.chunks(CHUNK) {
            let mut qb = QueryBuilder::<Db>::new("UPDATE campaign_recipients SET state = ");
            qb.push_bind(*state)
                .push(", reason = ")
                .push_bind(reason.clone())
                .push(", done_at = ")
                .push_bind((*state != "queued").then_some(now))
                .push(", claimed_by = NULL, claimed_at = NULL WHERE campaign_id = ")
                .push_bind(*campaign)
                .push(" AND contact_id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            sep.push_unseparated(")");
            qb.build().execute(&mut *tx).await?;
        }
    }
    let receipts: Vec<&NewReceipt> = receipts.iter().collect();
    insert_receipts(&mut tx, &receipts).await?;
    tx.commit().await?;
    count_receipts(&receipts);
    Ok(())
}

pub(crate) async fn finish_campaign_if_done(b: &Backend, id: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE campaigns SET state = 'done', finished_at = $1 WHERE id = $2 AND state = 'sending' \
         AND NOT EXISTS (SELECT 1 FROM campaign_recipients WHERE campaign_id = $2 AND state IN ('queued', 'claimed'))",
    )
    .bind(now_us())
    .bind(id)
    .execute(&b.write)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn campaign_progress(b: &Backend, id: i64) -> Result<CampaignProgress> {
    let rows = sqlx::query(
        "SELECT state, reason, COUNT(*) AS n FROM campaign_recipients WHERE campaign_id = $1 GROUP BY state, reason",
    )
    .bind(id)
    .fetch_all(&b.read)
    .await?;
    let mut p = CampaignProgress::default();
    for row in rows {
        let state: String = row.try_get("state")?;
        let reason: Option<String> = row.try_get("reason")?;
        let n: i64 = row.try_get("n")?;
        p.total += n;
        match state.as_str() {
            "queued" => p.queued += n,
            "claimed" => p.in_flight += n,
            "sent" => p.sent += n,
            "failed" => p.failed += n,
            "refused" => *p.refused.entry(reason.unwrap_or_else(|| "unknown".into())).or_default() += n,
            other => return Err(StoreError::Corrupt(format!("campaign recipient state {other:?}"))),
        }
    }
    Ok(p)
}

pub(crate) async fn campaign_feedback(b: &Backend, id: i64) -> Result<CampaignFeedback> {
    let Some(c) = campaign_in(&b.read, id).await? else {
        return Err(crate::campaign::not_found(id));
    };
    let Some(started) = c.started_at else {
        return Ok(CampaignFeedback::default());
    };
    // Driven from the (few) feedback events since the start, each checked
    // against the queue: cheap on a million-recipient campaign. A hard
    // bounce counts for a message sent (a DSN came back) and for one the
    // next hop refused at once (a 5xx at RCPT).
    let rows = sqlx::query(
        "SELECT e.kind, COUNT(DISTINCT e.contact_id) AS n FROM events e \
         WHERE e.kind IN ('withdraw', 'object', 'hard_bounce', 'complaint') AND e.recorded_at >= $2 \
         AND EXISTS (SELECT 1 FROM campaign_recipients r WHERE r.campaign_id = $1 AND r.contact_id = e.contact_id \
         AND (r.state = 'sent' OR (e.kind = 'hard_bounce' AND r.state = 'failed' AND r.reason = 'rejected_upstream'))) \
         GROUP BY e.kind",
    )
    .bind(id)
    .bind(started.as_microsecond())
    .fetch_all(&b.read)
    .await?;
    let mut f = CampaignFeedback::default();
    for row in rows {
        let kind: String = row.try_get("kind")?;
        let n: i64 = row.try_get("n")?;
        match kind.as_str() {
            "withdraw" | "object" => f.unsubscribes += n,
            "hard_bounce" => f.hard_bounces += n,
            _ => f.complaints += n,
        }
    }
    Ok(f)
}

pub(crate) async fn campaign_sends_since(
    b: &Backend,
    topic_id: Option<i64>,
    created_by: Option<&str>,
    since: Timestamp,
) -> Result<i64> {
    let mut qb = QueryBuilder::<Db>::new(
        "SELECT COUNT(*) FROM campaign_recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE r.state = 'sent' AND r.done_at >= ",
    );
    qb.push_bind(since.as_microsecond());
    if let Some(t) = topic_id {
        qb.push(" AND c.topic_id = ").push_bind(t);
    }
    if let Some(by) = created_by {
        qb.push(" AND c.created_by = ").push_bind(by.to_owned());
    }
    Ok(qb.build_query_scalar().fetch_one(&b.read).await?)
}
