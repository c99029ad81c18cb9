//! Service messages (bills, security alerts) sent through the API: a
//! declared service type, recipients, templates or a whole message. They
//! need no consent but pass the guard all the same (erased and bounced
//! addresses are refused), are receipted, and meet the bulk brake: more
//! than `threshold` recipients from one key within `window` wait for a DPO
//! other than the key's holder (the same brake the gateway applies).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use veto_core::{Channel, EmailAddress, Timestamp};
use veto_store::{
    Approval, ContactInput, Delivery, GuardClass, HoldRequest, NewReceipt, Store, StoreError,
};

use crate::copy::{CopyClass, Stream};
use crate::outbound::{
    From, HandOff, Outbound, admitted_receipt, content_hash, receipt_base, refused_receipt,
};
use crate::template::{Recipient, Templates};

/// Recipients of one service request at most.
pub const MAX_SERVICE_RECIPIENTS: usize = 1000;

/// The declared types and the brake.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub types: BTreeSet<String>,
    pub bulk_threshold: u64,
    pub bulk_window: Duration,
}

/// What a service request carries.
#[derive(Debug, Clone, Default)]
pub struct ServiceRequest {
    pub kind: String,
    pub to: Vec<String>,
    pub from_name: Option<String>,
    /// Default: `no-reply@` veto's mail domain.
    pub from_address: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// A whole RFC 5322 message instead of templates.
    pub raw: Option<String>,
    /// `api-key:<prefix>`.
    pub actor: String,
    /// Who holds the key (the approver must be someone else).
    pub owner: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field,
        message: message.into(),
    }
}

/// One recipient's result.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceResult {
    pub to: String,
    /// `sent`, `refused` (the guard said no), `failed` (the MTA refused it
    /// for good) or `deferred` (the MTA could not take it now: send again).
    pub status: &'static str,
    pub detail: String,
    pub message_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ServiceOutcome {
    /// Nothing sent: the brake holds it for a DPO's approval.
    Held {
        approval: Approval,
    },
    Sent {
        results: Vec<ServiceResult>,
    },
}

/// The brake on "the tool mailed everyone": service mail beyond the
/// threshold within the window waits for a DPO. An approval lifts the
/// brake on that sender for one window. `Some`: held, with the request.
pub async fn bulk_brake(
    store: &Store,
    settings: &ServiceSettings,
    actor: &str,
    owner: Option<&str>,
    class: &str,
    recipients: usize,
) -> Result<Option<(Approval, u64)>, StoreError> {
    let now = Timestamp::now();
    let since = now - settings.bulk_window;
    if store
        .latest_approval(actor)
        .await?
        .is_some_and(|at| at >= since)
    {
        return Ok(None);
    }
    let sent = u64::try_from(store.service_volume(actor, since).await?).unwrap_or(0);
    let count = sent + recipients as u64;
    if count <= settings.bulk_threshold {
        return Ok(None);
    }
    let hold = store
        .hold_for_approval(HoldRequest {
            actor: actor.to_owned(),
            owner: owner.map(str::to_owned),
            class: class.to_owned(),
            recipients: recipients as i64,
            window_count: sent as i64,
            at: now,
        })
        .await?;
    tracing::warn!(
        sender = %actor,
        approval = hold.id,
        count,
        threshold = settings.bulk_threshold,
        "service mail held for a DPO's approval"
    );
    Ok(Some((hold, count)))
}

/// Sends one service request.
pub async fn send(
    out: &Outbound,
    settings: &ServiceSettings,
    req: ServiceRequest,
) -> Result<ServiceOutcome, ServiceError> {
    if !settings.types.contains(&req.kind) {
        let known: Vec<&str> = settings.types.iter().map(String::as_str).collect();
        return Err(invalid(
            "type",
            format!(
                "{:?} is not a declared service type (declared: {}); declare it under [service.types]",
                req.kind,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    if req.to.is_empty() {
        return Err(invalid("to", "name at least one recipient"));
    }
    if req.to.len() > MAX_SERVICE_RECIPIENTS {
        return Err(invalid(
            "to",
            format!("at most {MAX_SERVICE_RECIPIENTS} recipients per request"),
        ));
    }
    let mut tos = Vec::with_capacity(req.to.len());
    for (i, a) in req.to.iter().enumerate() {
        let to = EmailAddress::parse(a).map_err(|e| ServiceError::Invalid {
            field: "to",
            message: format!("recipient {} ({a:?}) is not an address: {e}", i + 1),
        })?;
        if !tos.contains(&to) {
            tos.push(to);
        }
    }
    let from_address = match &req.from_address {
        Some(a) => EmailAddress::parse(a)
            .map_err(|e| invalid("from", format!("{a:?} is not an address: {e}")))?
            .as_str()
            .to_owned(),
        None => format!("no-reply@{}", out.mail_domain()),
    };
    if req
        .from_name
        .as_deref()
        .is_some_and(|n| n.contains(['\r', '\n']))
    {
        return Err(invalid("from_name", "a name may not contain a line break"));
    }
    enum Content {
        Templates(Box<Templates>),
        Raw(Vec<u8>),
    }
    let content = match (&req.raw, &req.subject, &req.text) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(invalid(
                "raw",
                "give either raw or subject and text, not both",
            ));
        }
        (Some(raw), None, None) => {
            // Checked now, so a broken message is a 400, not a failure per recipient.
            veto_mail::rewrite::Original::parse(raw.as_bytes())
                .map_err(|e| invalid("raw", e.to_string()))?;
            Content::Raw(raw.as_bytes().to_vec())
        }
        (None, Some(subject), Some(text)) => Content::Templates(Box::new(
            Templates::compile(subject, text, req.html.as_deref())
                .map_err(|e| invalid("templates", e.to_string()))?,
        )),
        (None, None, _) => return Err(invalid("subject", "give a subject and text (or raw)")),
        (None, _, None) => return Err(invalid("text", "give a text body (or raw)")),
    };
    let class_label = GuardClass::Service(&req.kind).label();
    let store = out.store();
    if let Some((approval, _)) = bulk_brake(
        store,
        settings,
        &req.actor,
        req.owner.as_deref(),
        &class_label,
        tos.len(),
    )
    .await?
    {
        return Ok(ServiceOutcome::Held { approval });
    }
    let keys = out.token_keys().await?;
    let from = From {
        name: req.from_name.clone(),
        address: from_address,
    };
    let mut results = Vec::with_capacity(tos.len());
    let mut receipts = Vec::with_capacity(tos.len());
    let mut rejected = Vec::new();
    let mut delivered = 0i64;
    for to in &tos {
        let message_id = format!("<{}@{}>", crate::random_id(), out.mail_domain());
        let template_version = match &content {
            Content::Templates(t) => Some(t.version().to_owned()),
            Content::Raw(bytes) => Some(content_hash(bytes)[..16].to_owned()),
        };
        let base = receipt_base(
            &message_id,
            to.as_str(),
            class_label.clone(),
            None,
            template_version,
        );
        let known = store.find_contact(to).await?;
        let mut handoffs = store
            .fence()
            .enter(known.as_ref().map(|c| veto_core::ContactId(c.id)));
        let checked = match out
            .guard
            .admit(to, GuardClass::Service(&req.kind), Channel::Email)
            .await?
        {
            // A first bill may go to an address veto has no record of; its
            // return path needs a contact for a bounce to be attributed.
            Ok(a) => match a.contact() {
                Some(id) => Ok((a, id)),
                None => store
                    .upsert_contact(ContactInput::new(a.to().clone()))
                    .await?
                    .map(|id| (a, id))
                    .map_err(|refusal| (None, refusal)),
            },
            Err(refused) => Err(refused),
        };
        let (a, contact) = match checked {
            Err((contact, refusal)) => {
                receipts.push(refused_receipt(base, contact, &refusal, Timestamp::now()));
                results.push(ServiceResult {
                    to: to.as_str().to_owned(),
                    status: "refused",
                    detail: format!("{} ({})", refusal.reason, refusal.rule.id()),
                    message_id,
                });
                continue;
            }
            Ok(x) => x,
        };
        let stream = Stream {
            campaign: &req.kind,
            name: "api",
        };
        let made = match &content {
            Content::Templates(t) => {
                let contact_row = known.as_ref();
                let empty = Default::default();
                t.render(&Recipient {
                    email: to.as_str(),
                    name: contact_row.and_then(|c| c.name.as_deref()),
                    attributes: contact_row.map_or(&empty, |c| &c.attributes),
                })
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    out.compose(
                        &r,
                        &from,
                        to.as_str(),
                        &message_id,
                        CopyClass::Service(&req.kind),
                        &keys,
                        contact,
                        stream,
                        &[],
                    )
                    .map(|copy| (Some(r.subject), copy))
                    .map_err(|e| e.to_string())
                })
            }
            Content::Raw(bytes) => out
                .copy_of(bytes, CopyClass::Service(&req.kind), &keys, contact, stream)
                .map(|copy| (None, copy))
                .map_err(|e| e.to_string()),
        };
        let (subject, hash, outcome) = match made {
            Err(e) => (None, None, HandOff::Unmakeable(e)),
            Ok((subject, copy)) => (
                subject,
                Some(content_hash(&copy.bytes)),
                out.hand_off(&a, &copy).await,
            ),
        };
        handoffs.release(contact);
        let (status, detail) = match outcome {
            HandOff::Accepted(reply) => {
                delivered += 1;
                ("sent", reply)
            }
            HandOff::Rejected(reply) => {
                rejected.push((to.clone(), reply.clone()));
                ("failed", format!("rejected upstream: {reply}"))
            }
            HandOff::Unavailable(e) => ("deferred", format!("not relayed: {e}; send it again")),
            HandOff::Unmakeable(e) => ("failed", format!("not sent: {e}")),
        };
        receipts.push(NewReceipt {
            subject,
            content_hash: hash,
            ..admitted_receipt(base, &a, detail.clone())
        });
        results.push(ServiceResult {
            to: to.as_str().to_owned(),
            status,
            detail,
            message_id,
        });
    }
    store
        .record_deliveries(vec![Delivery {
            receipts,
            service: Some((req.actor.clone(), delivered)),
        }])
        .await?;
    out.record_hard_bounces(&rejected).await;
    Ok(ServiceOutcome::Sent { results })
}
