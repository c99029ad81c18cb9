// Telephone preference lists (see tps.rs). Included once per backend next
// to queries.rs (same module, same imports).

use crate::tps::{PhoneScreening, TpsImport, TpsList, TpsListing};

fn tps_import_from_row(r: &DbRow) -> Result<TpsImport> {
    let list: String = r.try_get("list")?;
    Ok(TpsImport {
        list: list.parse().map_err(|e| StoreError::Corrupt(format!("tps_imports: {e}")))?,
        as_of: ts(r.try_get("as_of")?)?,
        imported_at: ts(r.try_get("imported_at")?)?,
        source: r.try_get("source")?,
        numbers: r.try_get("numbers")?,
    })
}

pub(crate) async fn import_tps(
    b: &Backend,
    list: TpsList,
    as_of: Timestamp,
    source: &str,
    listings: &[TpsListing],
) -> Result<TpsImport> {
    // Earliest listing date per number (a list may repeat a number).
    let mut earliest: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for l in listings {
        let at = l.listed_on.as_microsecond();
        earliest.entry(l.number.as_str()).and_modify(|t| *t = (*t).min(at)).or_insert(at);
    }
    let rows: Vec<(&str, i64)> = earliest.into_iter().collect();
    let mut tx = begin(b).await?;
    sqlx::query("DELETE FROM tps_numbers WHERE list = $1").bind(list.as_str()).execute(&mut *tx).await?;
    for chunk in rows.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new("INSERT INTO tps_numbers (list, number, listed_on) ");
        qb.push_values(chunk, |mut row, (number, at)| {
            row.push_bind(list.as_str()).push_bind(number.to_string()).push_bind(*at);
        });
        qb.build().execute(&mut *tx).await?;
    }
    let row = sqlx::query(
        "INSERT INTO tps_imports (list, as_of, imported_at, source, numbers) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (list) DO UPDATE SET as_of = excluded.as_of, imported_at = excluded.imported_at, \
         source = excluded.source, numbers = excluded.numbers RETURNING *",
    )
    .bind(list.as_str())
    .bind(as_of.as_microsecond())
    .bind(now_us())
    .bind(source)
    .bind(rows.len() as i64)
    .fetch_one(&mut *tx)
    .await?;
    let import = tps_import_from_row(&row)?;
    tx.commit().await?;
    Ok(import)
}

pub(crate) async fn tps_imports(b: &Backend) -> Result<Vec<TpsImport>> {
    let rows = sqlx::query("SELECT * FROM tps_imports ORDER BY list").fetch_all(&b.read).await?;
    rows.iter().map(tps_import_from_row).collect()
}

pub(crate) async fn phone_screening(b: &Backend, number: &veto_core::PhoneNumber, kind: veto_core::SubscriberKind) -> Result<PhoneScreening> {
    let list = TpsList::for_subscriber(kind);
    let as_of: Option<i64> = sqlx::query_scalar("SELECT as_of FROM tps_imports WHERE list = $1")
        .bind(list.as_str())
        .fetch_optional(&b.read)
        .await?;
    let rows = sqlx::query("SELECT list, listed_on FROM tps_numbers WHERE number = $1 ORDER BY list")
        .bind(number.as_str())
        .fetch_all(&b.read)
        .await?;
    let mut listed_since: Option<Timestamp> = None;
    let mut listed_on = Vec::new();
    for r in &rows {
        let l: String = r.try_get("list")?;
        listed_on.push(l.parse().map_err(|e| StoreError::Corrupt(format!("tps_numbers: {e}")))?);
        let at = ts(r.try_get("listed_on")?)?;
        listed_since = Some(listed_since.map_or(at, |t| t.min(at)));
    }
    Ok(PhoneScreening { list, screened_at: as_of.map(ts).transpose()?, listed_since, listed_on })
}

pub(crate) async fn contacts_with_phone(b: &Backend, number: &veto_core::PhoneNumber) -> Result<Vec<ContactId>> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM contacts WHERE phone = $1 AND erased_at IS NULL ORDER BY id")
        .bind(number.as_str())
        .fetch_all(&b.read)
        .await?;
    Ok(ids.into_iter().map(ContactId).collect())
}
