//! A person's data as JSON (GDPR Art 15 access, Art 20 portability): their
//! contact record, every consent event with its evidence, the wordings they
//! were shown, a receipt for every message veto decided about, and the mail
//! to veto's own addresses (mailto unsubscribes, bounces, complaints) that
//! concerned them.
//!
//! One function for every way out (`veto export`, the preference centre's
//! "Download my data"), so that the two never disagree.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};
use veto_core::{ContactId, EmailAddress, EventKind, Scope, Timestamp};

use crate::{Result, Store, StoredEvent};

/// Everything veto holds about `email`, or `None` when it holds no contact
/// for it (never known, or erased: see [`Store::is_suppressed`]).
/// `organisation` names the controller the data comes from.
pub async fn person(
    store: &Store,
    email: &EmailAddress,
    organisation: &str,
) -> Result<Option<Value>> {
    let Some(contact) = store.find_contact(email).await? else {
        return Ok(None);
    };
    let id = ContactId(contact.id);
    let names = topic_keys(store).await?;
    let events = store.events_of(id).await?;
    let receipts = store.receipts_for_contact(id).await?;
    let inbound = store.inbound_reports_of(id).await?;
    let mut wordings = vec![];
    for w in events
        .iter()
        .filter_map(|e| e.wording)
        .collect::<BTreeSet<_>>()
    {
        if let Some(w) = store.wording(w).await? {
            wordings.push(json!({"id": w.id.0, "text": w.text, "sha256": w.hash}));
        }
    }
    Ok(Some(json!({
        "exported_at": Timestamp::now().to_string(),
        "organisation": organisation,
        "contact": contact,
        "consent_events": events.iter().map(|e| event_json(e, &names)).collect::<Vec<_>>(),
        "wordings_shown": wordings,
        "messages": receipts,
        "mail_to_veto": inbound,
    })))
}

/// Topic ids and their keys, which the JSON uses to name topics.
pub async fn topic_keys(store: &Store) -> Result<HashMap<u16, String>> {
    Ok(store
        .topics()
        .await?
        .into_iter()
        .map(|t| (t.id.0, t.key.to_string()))
        .collect())
}

/// One ledger event with its evidence, topics named by key (see [`topic_keys`]).
pub fn event_json(e: &StoredEvent, topics: &HashMap<u16, String>) -> Value {
    let topic = match e.event.scope {
        Scope::All => None,
        Scope::Topic(t) => topics.get(&t.0).cloned(),
    };
    let mut v = json!({
        "id": e.event.id.0,
        "at": e.event.at.to_string(),
        "recorded_at": e.recorded_at.to_string(),
        "kind": e.event.kind.name(),
        "topic": topic,
        "channel": e.event.channel.map(|c| c.as_str()),
        "source": e.event.source.as_str(),
        "actor": e.actor,
        "wording": e.wording.map(|w| w.0),
        "form_url": e.form_url,
        "order_ref": e.order_ref,
        "personal_data": e.personal,
        "chain": {"partition": e.partition, "seq": e.seq, "hash": e.hash},
    });
    match &e.event.kind {
        EventKind::Relationship(r) => {
            v["product_group"] = json!(r.product_group);
            v["opt_out_offered"] = json!(r.opt_out_offered);
        }
        EventKind::Pause { until } => v["until"] = json!(until.to_string()),
        EventKind::Frequency(l) => {
            v["limit"] = json!(l.map(|l| json!({"max": l.max, "per": l.per.as_str()})));
        }
        _ => {}
    }
    v
}
