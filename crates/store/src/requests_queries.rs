// Data-subject requests (see requests.rs). Included once per backend next
// to queries.rs (same module, same imports).

use crate::requests::{
    Answer, Extension, IdentityCheck, NewSubjectRequest, Outcome, RequestCounts, RequestFilter, RequestKind, RequestRefused,
    RequestResult, RequestVia, SubjectRequest,
};

fn request_from_row(r: &DbRow) -> Result<SubjectRequest> {
    let kind: String = r.try_get("kind")?;
    let via: String = r.try_get("via")?;
    let opt_ts = |name: &str| -> Result<Option<Timestamp>> { r.try_get::<Option<i64>, _>(name)?.map(ts).transpose() };
    let extension = match opt_ts("extended_due_at")? {
        Some(due_at) => Some(Extension {
            due_at,
            reason: r.try_get::<Option<String>, _>("extension_reason")?.unwrap_or_default(),
            at: opt_ts("extended_at")?.unwrap_or(due_at),
            by: r.try_get::<Option<String>, _>("extended_by")?.unwrap_or_default(),
        }),
        None => None,
    };
    let identity = match opt_ts("identity_checked_at")? {
        Some(at) => Some(IdentityCheck {
            at,
            by: r.try_get::<Option<String>, _>("identity_checked_by")?.unwrap_or_default(),
            how: r.try_get::<Option<String>, _>("identity_how")?.unwrap_or_default(),
        }),
        None => None,
    };
    let answer = match opt_ts("answered_at")? {
        Some(at) => {
            let outcome: Option<String> = r.try_get("outcome")?;
            let outcome = match outcome.as_deref() {
                Some("done") => Outcome::Done,
                Some("refused") => {
                    Outcome::Refused { reason: r.try_get::<Option<String>, _>("refusal_reason")?.unwrap_or_default() }
                }
                other => return Err(StoreError::Corrupt(format!("request outcome {other:?}"))),
            };
            Some(Answer { at, by: r.try_get::<Option<String>, _>("answered_by")?.unwrap_or_default(), outcome })
        }
        None => None,
    };
    Ok(SubjectRequest {
        id: r.try_get("id")?,
        kind: RequestKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("request kind {kind:?}")))?,
        contact: r.try_get::<Option<i64>, _>("contact_id")?.map(ContactId),
        email: r.try_get("email")?,
        via: RequestVia::parse(&via).ok_or_else(|| StoreError::Corrupt(format!("request source {via:?}")))?,
        note: r.try_get("note")?,
        received_at: ts(r.try_get("received_at")?)?,
        due_at: ts(r.try_get("due_at")?)?,
        extension,
        identity,
        answer,
        created_by: r.try_get("created_by")?,
        created_at: ts(r.try_get("created_at")?)?,
    })
}

/// Inserts a request; with `self_service`, already checked by the link
/// mailed to the address and answered (done) at that time, unless the same
/// one (contact, kind, receipt) is there already.
pub(crate) async fn create_request(
    b: &Backend,
    new: &NewSubjectRequest,
    due: Timestamp,
    self_service: Option<Timestamp>,
) -> Result<SubjectRequest> {
    let mut tx = begin(b).await?;
    if self_service.is_some() {
        let existing = sqlx::query(
            "SELECT * FROM subject_requests WHERE contact_id = $1 AND kind = $2 AND via = $3 AND received_at = $4",
        )
        .bind(new.contact.map(|c| c.0))
        .bind(new.kind.as_str())
        .bind(new.via.as_str())
        .bind(new.received_at.as_microsecond())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            return request_from_row(&row);
        }
    }
    let now = now_us();
    let done_at = self_service.map(|t| t.as_microsecond());
    let how = self_service.map(|_| "the person opened the link mailed to their address");
    // An answered erasure keeps no address.
    let email = if done_at.is_some() && new.kind == RequestKind::Erasure {
        None
    } else {
        new.email.as_ref().map(|e| e.as_str().to_owned())
    };
    let row = sqlx::query(
        "INSERT INTO subject_requests (kind, contact_id, email, via, note, received_at, due_at, \
         identity_checked_at, identity_checked_by, identity_how, answered_at, answered_by, outcome, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING *",
    )
    .bind(new.kind.as_str())
    .bind(new.contact.map(|c| c.0))
    .bind(email)
    .bind(new.via.as_str())
    .bind(new.note.as_deref())
    .bind(new.received_at.as_microsecond())
    .bind(due.as_microsecond())
    .bind(done_at)
    .bind(done_at.map(|_| new.actor.as_str()))
    .bind(how)
    .bind(done_at)
    .bind(done_at.map(|_| new.actor.as_str()))
    .bind(done_at.map(|_| "done"))
    .bind(&new.actor)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let request = request_from_row(&row)?;
    tx.commit().await?;
    Ok(request)
}

pub(crate) async fn request(b: &Backend, id: i64) -> Result<Option<SubjectRequest>> {
    let row = sqlx::query("SELECT * FROM subject_requests WHERE id = $1").bind(id).fetch_optional(&b.read).await?;
    row.as_ref().map(request_from_row).transpose()
}

pub(crate) async fn requests(
    b: &Backend,
    filter: RequestFilter,
    cut: Option<i64>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<SubjectRequest>> {
    const DEADLINE: &str = "COALESCE(extended_due_at, due_at)";
    let (condition, cut) = match (filter, cut) {
        (RequestFilter::Open, _) => ("answered_at IS NULL".to_owned(), None),
        (RequestFilter::Overdue, Some(cut)) => (format!("answered_at IS NULL AND {DEADLINE} < $2"), Some(cut)),
        (RequestFilter::DueWithin(_), Some(cut)) => (format!("answered_at IS NULL AND {DEADLINE} <= $2"), Some(cut)),
        (RequestFilter::Answered, _) => ("answered_at IS NOT NULL".to_owned(), None),
        (RequestFilter::All, _) => ("1 = 1".to_owned(), None),
        (_, None) => return Err(StoreError::Invalid("a deadline filter needs its time".into())),
    };
    let limit_param = if cut.is_some() { "$3" } else { "$2" };
    let sql = format!("SELECT * FROM subject_requests WHERE id > $1 AND {condition} ORDER BY id LIMIT {limit_param}");
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(after.unwrap_or(0));
    if let Some(cut) = cut {
        q = q.bind(cut);
    }
    let rows = q.bind(limit).fetch_all(&b.read).await?;
    rows.iter().map(request_from_row).collect()
}

pub(crate) async fn request_counts(b: &Backend, now: i64, week: i64) -> Result<RequestCounts> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS open, \
         COALESCE(SUM(CASE WHEN COALESCE(extended_due_at, due_at) < $1 THEN 1 ELSE 0 END), 0) AS overdue, \
         COALESCE(SUM(CASE WHEN COALESCE(extended_due_at, due_at) >= $1 AND COALESCE(extended_due_at, due_at) <= $2 THEN 1 ELSE 0 END), 0) AS soon \
         FROM subject_requests WHERE answered_at IS NULL",
    )
    .bind(now)
    .bind(week)
    .fetch_one(&b.read)
    .await?;
    Ok(RequestCounts { open: row.try_get("open")?, due_within_7_days: row.try_get("soon")?, overdue: row.try_get("overdue")? })
}

/// The request, locked for the change (PostgreSQL; SQLite holds the write lock).
async fn request_for_update(tx: &mut Tx, id: i64) -> Result<Option<SubjectRequest>> {
    let lock = if IS_PG { " FOR UPDATE" } else { "" };
    let row = sqlx::query(AssertSqlSafe(format!("SELECT * FROM subject_requests WHERE id = $1{lock}")))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(request_from_row).transpose()
}

fn unanswered(r: &SubjectRequest) -> std::result::Result<(), RequestRefused> {
    match r.answer {
        Some(_) => Err(RequestRefused::AlreadyAnswered { id: r.id, status: r.status().as_str() }),
        None => Ok(()),
    }
}

pub(crate) async fn check_request_identity(b: &Backend, id: i64, by: &str, how: &str, now: Timestamp) -> RequestResult {
    let mut tx = begin(b).await?;
    let Some(r) = request_for_update(&mut tx, id).await? else { return Ok(Err(RequestRefused::NotFound(id))) };
    if let Err(e) = unanswered(&r) {
        return Ok(Err(e));
    }
    if r.identity.is_some() {
        return Ok(Err(RequestRefused::IdentityAlreadyChecked(id)));
    }
    let row = sqlx::query(
        "UPDATE subject_requests SET identity_checked_at = $1, identity_checked_by = $2, identity_how = $3 \
         WHERE id = $4 RETURNING *",
    )
    .bind(now.as_microsecond())
    .bind(by)
    .bind(how)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let r = request_from_row(&row)?;
    tx.commit().await?;
    Ok(Ok(r))
}

pub(crate) async fn extend_request(
    b: &Backend,
    id: i64,
    by: &str,
    reason: &str,
    until: Option<jiff::civil::Date>,
    now: Timestamp,
) -> RequestResult {
    let mut tx = begin(b).await?;
    let Some(r) = request_for_update(&mut tx, id).await? else { return Ok(Err(RequestRefused::NotFound(id))) };
    if let Err(e) = unanswered(&r) {
        return Ok(Err(e));
    }
    if r.extension.is_some() {
        return Ok(Err(RequestRefused::AlreadyExtended(id)));
    }
    if now > r.due_at {
        return Ok(Err(RequestRefused::DeadlinePassed { id, due: r.due_at }));
    }
    let latest = crate::requests::latest_extension(r.received_at)?;
    let due = match until {
        None => latest,
        Some(date) => {
            let due = crate::requests::end_of_day(date)?;
            if due <= r.due_at || due > latest {
                return Err(StoreError::Invalid(format!(
                    "until must be a date after the first deadline ({}) and no later than three months after receipt ({})",
                    crate::requests::utc_date(r.due_at),
                    crate::requests::utc_date(latest)
                )));
            }
            due
        }
    };
    let row = sqlx::query(
        "UPDATE subject_requests SET extended_due_at = $1, extension_reason = $2, extended_at = $3, extended_by = $4 \
         WHERE id = $5 RETURNING *",
    )
    .bind(due.as_microsecond())
    .bind(reason)
    .bind(now.as_microsecond())
    .bind(by)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let r = request_from_row(&row)?;
    tx.commit().await?;
    Ok(Ok(r))
}

pub(crate) async fn answer_request(b: &Backend, id: i64, by: &str, outcome: &Outcome, now: Timestamp) -> RequestResult {
    let mut tx = begin(b).await?;
    let Some(r) = request_for_update(&mut tx, id).await? else { return Ok(Err(RequestRefused::NotFound(id))) };
    if let Err(e) = unanswered(&r) {
        return Ok(Err(e));
    }
    let erasure_done = r.kind == RequestKind::Erasure && *outcome == Outcome::Done;
    if *outcome == Outcome::Done {
        if r.identity.is_none() {
            return Ok(Err(RequestRefused::IdentityNotChecked(id)));
        }
        if erasure_done {
            // The contact it names, or one holding the address now (it may
            // have been added after the request came in).
            let contact = match r.contact {
                Some(c) => Some(c.0),
                None => match r.email.as_deref().and_then(|e| EmailAddress::parse(e).ok()) {
                    Some(email) => sqlx::query_scalar("SELECT id FROM contacts WHERE email_key = $1")
                        .bind(email.key())
                        .fetch_optional(&mut *tx)
                        .await?,
                    None => None,
                },
            };
            if let Some(contact) = contact {
                let erased: Option<Option<i64>> = sqlx::query_scalar("SELECT erased_at FROM contacts WHERE id = $1")
                    .bind(contact)
                    .fetch_optional(&mut *tx)
                    .await?;
                if matches!(erased, Some(None)) {
                    return Ok(Err(RequestRefused::ContactNotErased { contact }));
                }
            }
        }
    }
    let (name, reason) = match outcome {
        Outcome::Done => ("done", None),
        Outcome::Refused { reason } => ("refused", Some(reason.as_str())),
    };
    let blank = if erasure_done { ", email = NULL" } else { "" };
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE subject_requests SET answered_at = $1, answered_by = $2, outcome = $3, refusal_reason = $4{blank} \
         WHERE id = $5 RETURNING *"
    )))
    .bind(now.as_microsecond())
    .bind(by)
    .bind(name)
    .bind(reason)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let r = request_from_row(&row)?;
    tx.commit().await?;
    Ok(Ok(r))
}

/// On erasure: the requests about the contact, or giving the address, keep
/// no address (the request itself stays: it is the record of the answer).
pub(crate) async fn blank_request_addresses(tx: &mut Tx, contact: i64, email: &EmailAddress) -> Result<()> {
    sqlx::query(
        "UPDATE subject_requests SET email = NULL, contact_id = COALESCE(contact_id, $1) \
         WHERE contact_id = $1 OR LOWER(email) = LOWER($2)",
    )
    .bind(contact)
    .bind(email.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The retention purge: answered requests older than `before` keep no address.
pub(crate) async fn purge_request_addresses(b: &Backend, before: i64, dry_run: bool) -> Result<u64> {
    const WHERE: &str = "FROM subject_requests WHERE answered_at IS NOT NULL AND answered_at < $1 AND email IS NOT NULL";
    if dry_run {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) {WHERE}"))).bind(before).fetch_one(&b.read).await?;
        return Ok(u64::try_from(n).unwrap_or(0));
    }
    let sql = format!("UPDATE subject_requests SET email = NULL WHERE id IN (SELECT id {WHERE})");
    Ok(sqlx::query(AssertSqlSafe(sql)).bind(before).execute(&b.write).await?.rows_affected())
}
