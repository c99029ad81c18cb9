//! Campaigns: a topic, a sender, templates, a schedule and limits; sent by
//! `veto serve` to everyone the guard admits *at hand-off*.
//!
//! The recipient queue lives in the store. A sender claims a batch of
//! recipients (on PostgreSQL several nodes claim side by side with `FOR
//! UPDATE SKIP LOCKED`), and works through it a few recipients at a time:
//! it enters them into the hand-off fence, asks the guard about all of them
//! in one read, and hands each admitted one's personal copy to the
//! transport at once. An unsubscribe that lands mid-campaign stops that
//! person's message, and the fence holds its acknowledgement until any
//! hand-off admitted a moment before it has finished. Each chunk's outcomes
//! and receipts are committed together with other chunks' (one fsync for
//! many); a crash re-sends only what was handed off and not yet committed,
//! under the same Message-ID, so the upstream can drop the second copy.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use veto_core::{Channel, EmailAddress, Rule, Timestamp, Topic, TopicKey};
use veto_mail::TokenKeys;
use veto_store::{
    Campaign, CampaignFeedback, CampaignProgress, CampaignState, ClaimedRecipient, GuardClass,
    NewCampaign, NewReceipt, RecipientOutcome, RecipientState, StoreError,
};

use crate::copy::{CopyClass, Stream};
use crate::outbound::{
    From, HandOff, Outbound, admitted_receipt, content_hash, receipt_base, refused_receipt,
};
use crate::template::{Recipient, Templates};

/// How the campaign sender works and when its brakes act.
#[derive(Debug, Clone)]
pub struct CampaignSettings {
    /// This node's name in the queue's claims.
    pub node: String,
    /// Recipients claimed at once.
    pub claim: usize,
    /// Recipients checked by the guard together, immediately before their
    /// hand-offs (the window a racing unsubscribe is waited for).
    pub chunk: usize,
    /// A claim older than this is taken over by another node.
    pub lease: Duration,
    /// How often the sender looks for work.
    pub poll: Duration,
    /// A campaign pauses itself at this complaint rate (mailbox providers:
    /// keep under 0.1%, never 0.3%).
    pub complaint_brake: f64,
    /// … and at this hard-bounce rate.
    pub bounce_brake: f64,
    /// Messages sent before the brakes judge a rate.
    pub brake_min_sample: u64,
    /// Campaign messages per topic per day (UTC); `None`: no cap.
    pub daily_cap_per_topic: Option<u64>,
    /// Campaign messages per creating API key per day (UTC).
    pub daily_cap_per_key: Option<u64>,
    /// Put every claimed recipient back in the queue at start (one process
    /// on SQLite: claims left by a crash are this node's own).
    pub release_on_start: bool,
    /// Longest wait before trying an unavailable upstream again.
    pub max_backoff: Duration,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        CampaignSettings {
            node: "veto".into(),
            claim: 256,
            chunk: 16,
            lease: Duration::from_secs(120),
            poll: Duration::from_secs(1),
            complaint_brake: 0.001,
            bounce_brake: 0.05,
            brake_min_sample: 1000,
            daily_cap_per_topic: None,
            daily_cap_per_key: None,
            release_on_start: true,
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// A campaign as a marketer writes it.
#[derive(Debug, Clone, Default)]
pub struct CampaignSpec {
    pub name: String,
    pub topic: String,
    pub from_name: Option<String>,
    pub from_address: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub scheduled_at: Option<Timestamp>,
    /// Messages per second; `None`: as fast as the transport takes them.
    pub rate: Option<f64>,
    /// Messages per second to any one domain.
    pub domain_rate: Option<f64>,
    /// Hand-offs in progress at once (default 4).
    pub concurrency: Option<u32>,
    /// `api-key:<prefix>` or `cli`.
    pub created_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// Bad input: which field, and what is wrong with it.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("there is no campaign {0}")]
    NotFound(i64),
    /// Not possible in the campaign's present state.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl std::convert::From<StoreError> for CampaignError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => CampaignError::Conflict(m),
            e => CampaignError::Store(e),
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> CampaignError {
    CampaignError::Invalid {
        field,
        message: message.into(),
    }
}

/// A campaign with where it is and what came back.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignStatus {
    #[serde(flatten)]
    pub campaign: Campaign,
    pub progress: CampaignProgress,
    pub feedback: CampaignFeedback,
    pub rates: Rates,
    /// The longest time, in microseconds, between a recipient's guard
    /// check and the start of their hand-off, in this sender since it
    /// started (the window in which a racing unsubscribe is held back by
    /// the hand-off fence).
    pub longest_check_to_handoff_us: u64,
}

/// Feedback rates against the mailbox providers' limits.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rates {
    /// Complaints per message sent (Gmail and Yahoo: under 0.001, never 0.003).
    pub complaint_rate: f64,
    pub complaint_limit: f64,
    pub hard_bounce_rate: f64,
    pub hard_bounce_limit: f64,
    pub unsubscribe_rate: f64,
}

/// What a preview shows: the guard's answer now and the message itself.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Whether the guard would admit this recipient now, and why.
    pub allowed: bool,
    pub rule: String,
    pub reason: Option<String>,
    /// The recipient's whole message, as it would be handed off.
    pub message: String,
}

/// One address of a test send.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    pub to: String,
    pub sent: bool,
    /// The MTA's reply, or why it was not sent.
    pub detail: String,
}

/// Test sends go to at most this many addresses.
pub const MAX_TEST_RECIPIENTS: usize = 10;

/// Creates, controls and sends campaigns.
pub struct Campaigns {
    out: Outbound,
    settings: CampaignSettings,
    commits: Committer,
    /// The longest time seen between a recipient's guard check and the
    /// start of their hand-off, in microseconds.
    longest_window_us: AtomicU64,
}

impl Campaigns {
    pub fn new(out: Outbound, settings: CampaignSettings) -> Arc<Campaigns> {
        let commits = Committer::start(out.store().clone());
        Arc::new(Campaigns {
            out,
            settings,
            commits,
            longest_window_us: AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &CampaignSettings {
        &self.settings
    }

    /// The longest time between a recipient's guard check and the start of
    /// their hand-off, since this sender started.
    pub fn longest_window(&self) -> Duration {
        Duration::from_micros(self.longest_window_us.load(Ordering::Relaxed))
    }

    /// Checks a campaign and stores it as a draft.
    pub async fn create(&self, spec: CampaignSpec) -> Result<Campaign, CampaignError> {
        let name = spec.name.trim();
        if name.is_empty() {
            return Err(invalid("name", "give the campaign a name"));
        }
        let key = TopicKey::parse(&spec.topic).map_err(|e| invalid("topic", e.to_string()))?;
        let topic = self.out.store().topic(&key).await?.ok_or_else(|| {
            invalid(
                "topic",
                format!("there is no topic {key}; add it with `veto topics add`"),
            )
        })?;
        let from = EmailAddress::parse(&spec.from_address).map_err(|e| {
            invalid(
                "from",
                format!("{:?} is not an address: {e}", spec.from_address),
            )
        })?;
        if let Some(n) = &spec.from_name
            && n.contains(['\r', '\n'])
        {
            return Err(invalid("from_name", "a name may not contain a line break"));
        }
        let templates = Templates::compile(&spec.subject, &spec.text, spec.html.as_deref())
            .map_err(|e| {
                let field = match &e {
                    crate::template::TemplateError::Syntax { part, .. }
                    | crate::template::TemplateError::Render { part, .. }
                    | crate::template::TemplateError::TooLarge { part } => part,
                    crate::template::TemplateError::Empty("subject")
                    | crate::template::TemplateError::HeaderInjection => &"subject",
                    crate::template::TemplateError::Empty(_) => &"text",
                };
                invalid(field, e.to_string())
            })?;
        for (field, rate) in [("rate", spec.rate), ("domain_rate", spec.domain_rate)] {
            if let Some(r) = rate
                && !(r.is_finite() && r > 0.0 && r <= 1_000_000.0)
            {
                return Err(invalid(
                    field,
                    format!("{r} is not a rate: give messages per second, more than 0"),
                ));
            }
        }
        let concurrency = spec.concurrency.unwrap_or(4);
        if !(1..=256).contains(&concurrency) {
            return Err(invalid(
                "concurrency",
                format!("{concurrency} is out of range: 1 to 256"),
            ));
        }
        Ok(self
            .out
            .store()
            .create_campaign(NewCampaign {
                name: name.to_owned(),
                topic,
                from_name: spec.from_name.filter(|n| !n.trim().is_empty()),
                from_address: from.as_str().to_owned(),
                subject: spec.subject,
                html: spec.html,
                text: spec.text,
                template_version: templates.version().to_owned(),
                scheduled_at: spec.scheduled_at,
                rate: spec.rate,
                domain_rate: spec.domain_rate,
                concurrency,
                created_by: spec.created_by,
            })
            .await?)
    }

    pub async fn get(&self, id: i64) -> Result<Campaign, CampaignError> {
        self.out
            .store()
            .campaign(id)
            .await?
            .ok_or(CampaignError::NotFound(id))
    }

    pub async fn status(&self, id: i64) -> Result<CampaignStatus, CampaignError> {
        let campaign = self.get(id).await?;
        let store = self.out.store();
        let progress = store.campaign_progress(id).await?;
        let feedback = store.campaign_feedback(id).await?;
        let per = |n: i64, of: i64| {
            if of == 0 { 0.0 } else { n as f64 / of as f64 }
        };
        // Bounces are counted against every message handed to the next
        // hop, refused there or not; complaints and unsubscribes against
        // those it took.
        let attempted = progress.sent + progress.failed;
        let per_sent = |n: i64| per(n, progress.sent);
        let rates = Rates {
            complaint_rate: per_sent(feedback.complaints),
            complaint_limit: self.settings.complaint_brake,
            hard_bounce_rate: per(feedback.hard_bounces, attempted),
            hard_bounce_limit: self.settings.bounce_brake,
            unsubscribe_rate: per_sent(feedback.unsubscribes),
        };
        Ok(CampaignStatus {
            campaign,
            progress,
            feedback,
            rates,
            longest_check_to_handoff_us: self.longest_window_us.load(Ordering::Relaxed),
        })
    }

    /// Starts a draft (now, or at its scheduled time).
    pub async fn start(&self, id: i64) -> Result<Campaign, CampaignError> {
        self.get(id).await?;
        Ok(self
            .out
            .store()
            .start_campaign(id, Timestamp::now())
            .await?)
    }

    /// Pauses a sending or scheduled campaign; `by` says who, for the record.
    pub async fn pause(&self, id: i64, by: &str) -> Result<Campaign, CampaignError> {
        self.get(id).await?;
        Ok(self
            .out
            .store()
            .set_campaign_state(
                id,
                &[CampaignState::Sending, CampaignState::Scheduled],
                CampaignState::Paused,
                Some(&format!("paused by {by}")),
            )
            .await?)
    }

    pub async fn resume(&self, id: i64) -> Result<Campaign, CampaignError> {
        let c = self.get(id).await?;
        // A campaign paused before its time goes back to waiting for it.
        let to = if c.started_at.is_none() {
            CampaignState::Scheduled
        } else {
            CampaignState::Sending
        };
        Ok(self
            .out
            .store()
            .set_campaign_state(id, &[CampaignState::Paused], to, None)
            .await?)
    }

    pub async fn cancel(&self, id: i64, by: &str) -> Result<Campaign, CampaignError> {
        self.get(id).await?;
        Ok(self
            .out
            .store()
            .set_campaign_state(
                id,
                &[
                    CampaignState::Draft,
                    CampaignState::Scheduled,
                    CampaignState::Sending,
                    CampaignState::Paused,
                ],
                CampaignState::Cancelled,
                Some(&format!("cancelled by {by}")),
            )
            .await?)
    }

    /// The message `email` would get, and whether the guard would let it go
    /// now. Nothing is sent or recorded.
    pub async fn preview(&self, id: i64, email: &str) -> Result<Preview, CampaignError> {
        let c = self.get(id).await?;
        let to = EmailAddress::parse(email)
            .map_err(|e| invalid("contact", format!("{email:?} is not an address: {e}")))?;
        let store = self.out.store();
        let contact = store
            .find_contact(&to)
            .await?
            .ok_or_else(|| invalid("contact", format!("veto holds no contact {}", to.as_str())))?;
        let topic = self.topic_of(&c).await?;
        let templates = compile(&c)?;
        let keys = self.out.token_keys().await?;
        let (allowed, rule, reason) = match self
            .out
            .guard
            .admit(&to, GuardClass::Marketing(&topic), Channel::Email)
            .await?
        {
            Ok(a) => (true, a.allowance().rule.id().to_owned(), None),
            Err((_, r)) => (false, r.rule.id().to_owned(), Some(r.reason.to_string())),
        };
        let rendered = templates
            .render(&Recipient {
                email: to.as_str(),
                name: contact.name.as_deref(),
                attributes: &contact.attributes,
            })
            .map_err(|e| invalid("contact", e.to_string()))?;
        let copy = self
            .out
            .compose(
                &rendered,
                &from_of(&c),
                to.as_str(),
                &message_id(&c, veto_core::ContactId(contact.id), self.out.mail_domain()),
                CopyClass::Marketing(&topic),
                &keys,
                veto_core::ContactId(contact.id),
                stream(&feedback_name(&c)),
                &[],
            )
            .map_err(|e| invalid("contact", e.to_string()))?;
        Ok(Preview {
            allowed,
            rule,
            reason,
            message: String::from_utf8_lossy(&copy.bytes).into_owned(),
        })
    }

    /// Sends the campaign to a few listed addresses, marked as a test
    /// (`[TEST]` in the subject). Each still needs the guard's yes for the
    /// campaign's topic: a test send is not a way around anyone's "no".
    pub async fn test_send(
        &self,
        id: i64,
        addresses: &[String],
    ) -> Result<Vec<TestOutcome>, CampaignError> {
        if addresses.is_empty() {
            return Err(invalid(
                "to",
                "name at least one address to send the test to",
            ));
        }
        if addresses.len() > MAX_TEST_RECIPIENTS {
            return Err(invalid(
                "to",
                format!("a test goes to at most {MAX_TEST_RECIPIENTS} addresses"),
            ));
        }
        let tos = addresses
            .iter()
            .map(|a| {
                EmailAddress::parse(a)
                    .map_err(|e| invalid("to", format!("{a:?} is not an address: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let c = self.get(id).await?;
        let topic = self.topic_of(&c).await?;
        let templates = compile(&c)?;
        let keys = self.out.token_keys().await?;
        let mut results = Vec::new();
        for to in tos {
            let contact = self.out.store().find_contact(&to).await?;
            let message_id = format!(
                "<test.{}.{}@{}>",
                c.id,
                crate::random_id(),
                self.out.mail_domain()
            );
            let base = receipt_base(
                &message_id,
                to.as_str(),
                topic.key.as_str().to_owned(),
                None,
                Some(c.template_version.clone()),
            );
            let mut handoffs = self
                .out
                .store()
                .fence()
                .enter(contact.as_ref().map(|c| veto_core::ContactId(c.id)));
            let checked = self
                .out
                .guard
                .admit(&to, GuardClass::Marketing(&topic), Channel::Email)
                .await?;
            let a = match checked {
                Err((contact, refusal)) => {
                    let receipt = NewReceipt {
                        outcome: Some("test send: not sent".into()),
                        ..refused_receipt(base, contact, &refusal, Timestamp::now())
                    };
                    self.out.store().record_receipts(vec![receipt]).await?;
                    results.push(TestOutcome {
                        to: to.as_str().to_owned(),
                        sent: false,
                        detail: format!(
                            "the guard said no: {} ({})",
                            refusal.reason,
                            refusal.rule.id()
                        ),
                    });
                    continue;
                }
                Ok(a) => a,
            };
            let Some(contact_id) = a.contact() else {
                continue;
            };
            let empty = Default::default();
            let recipient = Recipient {
                email: to.as_str(),
                name: contact.as_ref().and_then(|c| c.name.as_deref()),
                attributes: contact.as_ref().map_or(&empty, |c| &c.attributes),
            };
            let made = templates
                .render(&recipient)
                .map_err(|e| e.to_string())
                .and_then(|mut r| {
                    r.subject = format!("[TEST] {}", r.subject);
                    self.out
                        .compose(
                            &r,
                            &from_of(&c),
                            to.as_str(),
                            &message_id,
                            CopyClass::Marketing(&topic),
                            &keys,
                            contact_id,
                            Stream {
                                campaign: &format!("test-{}", c.id),
                                name: "campaign",
                            },
                            &[("X-Veto-Test", "this is a test send of a campaign")],
                        )
                        .map(|copy| (r.subject, copy))
                        .map_err(|e| e.to_string())
                });
            let (subject, outcome) = match made {
                Err(e) => (None, HandOff::Unmakeable(e)),
                Ok((subject, copy)) => (Some(subject), self.out.hand_off(&a, &copy).await),
            };
            handoffs.release(contact_id);
            let (sent, detail) = match outcome {
                HandOff::Accepted(reply) => (true, reply),
                HandOff::Rejected(reply) => (false, format!("rejected upstream: {reply}")),
                HandOff::Unavailable(e) => (false, format!("not relayed: {e}")),
                HandOff::Unmakeable(e) => (false, format!("not made: {e}")),
            };
            let receipt = NewReceipt {
                subject,
                ..admitted_receipt(base, &a, format!("test send: {detail}"))
            };
            self.out.store().record_receipts(vec![receipt]).await?;
            results.push(TestOutcome {
                to: to.as_str().to_owned(),
                sent,
                detail,
            });
        }
        Ok(results)
    }

    async fn topic_of(&self, c: &Campaign) -> Result<Topic, CampaignError> {
        let key = TopicKey::parse(&c.topic).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(self.out.store().topic(&key).await?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "campaign {} names topic {key}, which is gone",
                c.id
            ))
        })?)
    }

    /// Sends whatever campaigns are due, until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.settings.release_on_start {
            match self.out.store().release_claims(None).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    recipients = n,
                    "campaign recipients claimed before a restart are queued again"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "claims left from before a restart not released")
                }
            }
        }
        let mut backoff = Duration::ZERO;
        loop {
            if *stop.borrow() {
                return;
            }
            let mut wait = self.settings.poll;
            match self.out.store().campaigns_to_send(Timestamp::now()).await {
                Ok(due) => {
                    for c in due {
                        match Arc::clone(&self).send_campaign(c.id, &stop).await {
                            Ok(()) => backoff = Duration::ZERO,
                            Err(Pause::Upstream(e)) => {
                                backoff = (backoff * 2)
                                    .clamp(Duration::from_secs(1), self.settings.max_backoff);
                                tracing::warn!(campaign = c.id, error = %e, retry_in = ?backoff, "upstream unavailable; the campaign waits");
                                wait = backoff;
                            }
                            Err(Pause::Store(e)) => {
                                tracing::error!(campaign = c.id, error = %e, "campaign sending stopped by a store error; retrying");
                                wait = self.settings.poll.max(Duration::from_secs(1));
                            }
                        }
                        if *stop.borrow() {
                            return;
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the campaigns to send"),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Works through one campaign until it is done, paused, cancelled,
    /// capped for the day, or `stop` turns true.
    async fn send_campaign(
        self: Arc<Self>,
        id: i64,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Pause> {
        let store = self.out.store().clone();
        let Some(c) = store.campaign(id).await? else {
            return Ok(());
        };
        let topic = match self.topic_of(&c).await {
            Ok(t) => t,
            Err(e) => {
                store
                    .set_campaign_state(
                        id,
                        &[CampaignState::Sending],
                        CampaignState::Paused,
                        Some(&e.to_string()),
                    )
                    .await?;
                return Ok(());
            }
        };
        let templates = match compile(&c) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                store
                    .set_campaign_state(
                        id,
                        &[CampaignState::Sending],
                        CampaignState::Paused,
                        Some(&e.to_string()),
                    )
                    .await?;
                return Ok(());
            }
        };
        let keys = Arc::new(self.out.token_keys().await?);
        let limiter = Arc::new(Limiter::new(c.rate, c.domain_rate));
        let chunk = match c.rate {
            // A throttled campaign checks fewer recipients at once, so the
            // time between check and hand-off stays short.
            Some(rate) => ((rate / 100.0) as usize).clamp(1, self.settings.chunk),
            None => self.settings.chunk,
        }
        .max(1);
        let job = Arc::new(Job {
            feedback: feedback_name(&c),
            campaign: c.clone(),
            topic,
            templates,
            keys,
            limiter,
        });
        // Messages handed to the next hop (taken or refused there): what
        // the brakes' rates are counted against.
        let mut sent = {
            let p = store.campaign_progress(id).await?;
            (p.sent + p.failed) as u64
        };
        let mut caps = Caps::new(&self.settings, &c);
        // The brakes judge once `brake_min_sample` messages are out, and
        // after a resume (or a restart) once another `brake_min_sample`
        // went out: a campaign resumed by a person goes on until the rate
        // is still over the brake on fresh evidence.
        let judged_from = sent;
        let mut brakes_checked = Instant::now() - Duration::from_secs(10);
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            // A pause or cancel stops the next claim; what is in hand finishes.
            match store.campaign(id).await? {
                Some(now) if now.state == CampaignState::Sending => {}
                _ => return Ok(()),
            }
            if brakes_checked.elapsed() >= Duration::from_secs(1) {
                brakes_checked = Instant::now();
                if self.brakes(id, sent, judged_from).await? {
                    return Ok(());
                }
            }
            let allowance = match caps.allowance(&store).await? {
                Allowance::Unlimited => self.settings.claim,
                Allowance::Left(0) => {
                    caps.note_reached(&store, id).await?;
                    return Ok(());
                }
                Allowance::Left(n) => self.settings.claim.min(n as usize),
            };
            let now = Timestamp::now();
            let lease_expired = now - self.settings.lease;
            let claimed = store
                .claim_recipients(id, &self.settings.node, allowance, now, lease_expired)
                .await?;
            if claimed.is_empty() {
                if store.finish_campaign_if_done(id).await? {
                    tracing::info!(
                        campaign = id,
                        longest_window = ?self.longest_window(),
                        "campaign done"
                    );
                }
                return Ok(());
            }
            let round = self.send_round(&job, claimed, chunk).await;
            sent += round.sent + round.bounced;
            caps.count(round.sent);
            if let Some(e) = round.unavailable {
                return Err(Pause::Upstream(e));
            }
            if let Some(e) = round.store_error {
                return Err(Pause::Store(e));
            }
        }
    }

    /// Pauses the campaign if a brake's rate is reached; true if it did.
    async fn brakes(&self, id: i64, sent: u64, judged_from: u64) -> Result<bool, StoreError> {
        let sample = self.settings.brake_min_sample.max(1);
        if sent < sample || (judged_from > 0 && sent - judged_from < sample) {
            return Ok(false);
        }
        let f = self.out.store().campaign_feedback(id).await?;
        let rate = |n: i64| n as f64 / sent as f64;
        let reason = if rate(f.complaints) >= self.settings.complaint_brake {
            Some(format!(
                "complaint rate {:.3}% ({} of {sent}) reached the brake at {:.3}%: mailbox providers block senders above 0.3%",
                100.0 * rate(f.complaints),
                f.complaints,
                100.0 * self.settings.complaint_brake
            ))
        } else if rate(f.hard_bounces) >= self.settings.bounce_brake {
            Some(format!(
                "hard-bounce rate {:.2}% ({} of {sent}) reached the brake at {:.2}%: check where this list came from",
                100.0 * rate(f.hard_bounces),
                f.hard_bounces,
                100.0 * self.settings.bounce_brake
            ))
        } else {
            None
        };
        let Some(reason) = reason else {
            return Ok(false);
        };
        tracing::warn!(campaign = id, %reason, "campaign paused by its brake");
        match self
            .out
            .store()
            .set_campaign_state(
                id,
                &[CampaignState::Sending],
                CampaignState::Paused,
                Some(&reason),
            )
            .await
        {
            Ok(_) | Err(StoreError::Invalid(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Sends one claimed batch with the campaign's concurrency.
    async fn send_round(
        self: &Arc<Self>,
        job: &Arc<Job>,
        claimed: Vec<ClaimedRecipient>,
        chunk: usize,
    ) -> Round {
        let mut queue: VecDeque<Vec<ClaimedRecipient>> = VecDeque::new();
        let mut claimed = claimed.into_iter().peekable();
        while claimed.peek().is_some() {
            queue.push_back(claimed.by_ref().take(chunk).collect());
        }
        let queue = Arc::new(Mutex::new(queue));
        let workers = (job.campaign.concurrency as usize).max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (me, job, queue) = (Arc::clone(self), Arc::clone(job), Arc::clone(&queue));
            tasks.spawn(async move {
                let mut round = Round::default();
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(recipients) = next else { break };
                    // After an upstream or store failure, the rest go back
                    // to the queue unsent.
                    if round.unavailable.is_some() || round.store_error.is_some() {
                        round.requeue.extend(recipients.iter().map(|r| r.contact));
                        continue;
                    }
                    me.send_chunk(&job, recipients, &mut round).await;
                }
                round
            });
        }
        let mut total = Round::default();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(r) => total.merge(r),
                Err(e) => tracing::error!(error = %e, "a campaign worker failed"),
            }
        }
        if !total.requeue.is_empty() {
            let outcomes = std::mem::take(&mut total.requeue)
                .into_iter()
                .map(|contact| {
                    (
                        job.campaign.id,
                        RecipientOutcome {
                            contact,
                            state: RecipientState::Queued,
                            reason: None,
                        },
                    )
                })
                .collect();
            if let Err(e) = self.commits.record(outcomes, Vec::new()).await {
                // Their claims run out after the lease and they are sent then.
                tracing::error!(error = %e, "unsent recipients not put back in the queue");
            }
        }
        total
    }

    /// Checks a few recipients with the guard, immediately before their
    /// hand-offs, and hands off the admitted ones.
    async fn send_chunk(&self, job: &Job, recipients: Vec<ClaimedRecipient>, round: &mut Round) {
        let c = &job.campaign;
        let class = topic_label(&job.topic);
        let mut outcomes = Vec::with_capacity(recipients.len());
        let mut receipts = Vec::with_capacity(recipients.len());
        let mut rejected = Vec::new();
        // Erased since the campaign started: no address left to ask about.
        let mut live = Vec::with_capacity(recipients.len());
        let mut tos = Vec::with_capacity(recipients.len());
        for r in recipients {
            match r.email.as_deref().map(EmailAddress::parse) {
                Some(Ok(to)) => {
                    tos.push(to);
                    live.push(r);
                }
                _ => {
                    outcomes.push((
                        c.id,
                        RecipientOutcome {
                            contact: r.contact,
                            state: RecipientState::Refused,
                            reason: Some("erased".into()),
                        },
                    ));
                    receipts.push(NewReceipt {
                        contact: Some(r.contact.0),
                        rule: Rule::Gdpr17.id().to_owned(),
                        reason: Some("erased".into()),
                        checked_at: Timestamp::now().as_microsecond(),
                        outcome: Some("not sent".into()),
                        ..receipt_base(
                            &message_id(c, r.contact, self.out.mail_domain()),
                            "",
                            class.clone(),
                            None,
                            Some(c.template_version.clone()),
                        )
                    });
                }
            }
        }
        if !tos.is_empty() {
            job.limiter.wait(&tos).await;
            // Entered before the check: a withdrawal committed after it is
            // acknowledged only once these hand-offs are over.
            let mut handoffs = self
                .out
                .store()
                .fence()
                .enter(live.iter().map(|r| r.contact));
            let decisions = match self
                .out
                .guard
                .admit_many(&tos, GuardClass::Marketing(&job.topic), Channel::Email)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    // Fail closed: nothing goes; they wait in the queue.
                    round.requeue.extend(live.iter().map(|r| r.contact));
                    round.store_error = Some(e);
                    drop(handoffs);
                    self.commit(outcomes, receipts, round).await;
                    return;
                }
            };
            for ((r, to), decision) in live.iter().zip(&tos).zip(decisions) {
                let mid = message_id(c, r.contact, self.out.mail_domain());
                let base = receipt_base(
                    &mid,
                    to.as_str(),
                    class.clone(),
                    None,
                    Some(c.template_version.clone()),
                );
                let a = match decision {
                    Err((contact, refusal)) => {
                        handoffs.release(r.contact);
                        outcomes.push((
                            c.id,
                            RecipientOutcome {
                                contact: r.contact,
                                state: RecipientState::Refused,
                                reason: Some(refusal.reason.code().to_owned()),
                            },
                        ));
                        receipts.push(refused_receipt(base, contact, &refusal, Timestamp::now()));
                        continue;
                    }
                    Ok(a) => a,
                };
                if round.unavailable.is_some() {
                    handoffs.release(r.contact);
                    round.requeue.push(r.contact);
                    continue;
                }
                let made = job
                    .templates
                    .render(&Recipient {
                        email: to.as_str(),
                        name: r.name.as_deref(),
                        attributes: &r.attributes,
                    })
                    .map_err(|e| e.to_string())
                    .and_then(|rendered| {
                        self.out
                            .compose(
                                &rendered,
                                &from_of(c),
                                to.as_str(),
                                &mid,
                                CopyClass::Marketing(&job.topic),
                                &job.keys,
                                r.contact,
                                stream(&job.feedback),
                                &[],
                            )
                            .map(|copy| (rendered.subject, copy))
                            .map_err(|e| e.to_string())
                    });
                let (subject, hash, outcome) = match made {
                    Err(e) => (None, None, HandOff::Unmakeable(e)),
                    Ok((subject, copy)) => {
                        let window = a.checked_at().duration_until(Timestamp::now());
                        let window_us = u64::try_from(window.as_micros()).unwrap_or(0);
                        self.longest_window_us
                            .fetch_max(window_us, Ordering::Relaxed);
                        let outcome = self.out.hand_off(&a, &copy).await;
                        (Some(subject), Some(content_hash(&copy.bytes)), outcome)
                    }
                };
                handoffs.release(r.contact);
                let base = NewReceipt {
                    subject,
                    content_hash: hash,
                    ..base
                };
                let (state, reason, text) = match outcome {
                    HandOff::Accepted(reply) => {
                        round.sent += 1;
                        (RecipientState::Sent, None, reply)
                    }
                    HandOff::Rejected(reply) => {
                        round.bounced += 1;
                        rejected.push((to.clone(), reply.clone()));
                        (
                            RecipientState::Failed,
                            Some("rejected_upstream".to_owned()),
                            format!("rejected upstream: {reply}"),
                        )
                    }
                    HandOff::Unmakeable(e) => {
                        tracing::warn!(campaign = c.id, contact = r.contact.0, error = %e, "campaign message not made for this recipient");
                        (
                            RecipientState::Failed,
                            Some("not_made".to_owned()),
                            format!("not sent: {e}"),
                        )
                    }
                    HandOff::Unavailable(e) => {
                        // Not handed off: no receipt now; it goes back to
                        // the queue and is checked again when it is sent.
                        round.requeue.push(r.contact);
                        round.unavailable = Some(e);
                        continue;
                    }
                };
                outcomes.push((
                    c.id,
                    RecipientOutcome {
                        contact: r.contact,
                        state,
                        reason,
                    },
                ));
                receipts.push(admitted_receipt(base, &a, text));
            }
            drop(handoffs);
        }
        self.commit(outcomes, receipts, round).await;
        // After the fence is released: recording a bounce waits on it.
        self.out.record_hard_bounces(&rejected).await;
    }

    async fn commit(
        &self,
        outcomes: Vec<(i64, RecipientOutcome)>,
        receipts: Vec<NewReceipt>,
        round: &mut Round,
    ) {
        if outcomes.is_empty() && receipts.is_empty() {
            return;
        }
        if let Err(e) = self.commits.record(outcomes, receipts.clone()).await {
            // Messages may already be upstream: the evidence goes to the
            // log, and their claims run out and are retried after the lease.
            tracing::error!(error = %e, receipts = ?receipts, "campaign receipts not recorded");
            round.store_error = Some(e);
        }
    }
}

/// Why a campaign stopped sending for now.
enum Pause {
    Upstream(crate::TransportError),
    Store(StoreError),
}

impl std::convert::From<StoreError> for Pause {
    fn from(e: StoreError) -> Self {
        Pause::Store(e)
    }
}

/// What one campaign's workers share.
struct Job {
    campaign: Campaign,
    /// The campaign's part of `Feedback-ID`.
    feedback: String,
    topic: Topic,
    templates: Arc<Templates>,
    keys: Arc<TokenKeys>,
    limiter: Arc<Limiter>,
}

#[derive(Default)]
struct Round {
    sent: u64,
    /// Refused for good by the next hop (hard bounces at once).
    bounced: u64,
    requeue: Vec<veto_core::ContactId>,
    unavailable: Option<crate::TransportError>,
    store_error: Option<StoreError>,
}

impl Round {
    fn merge(&mut self, other: Round) {
        self.sent += other.sent;
        self.bounced += other.bounced;
        self.requeue.extend(other.requeue);
        if self.unavailable.is_none() {
            self.unavailable = other.unavailable;
        }
        if self.store_error.is_none() {
            self.store_error = other.store_error;
        }
    }
}

fn compile(c: &Campaign) -> Result<Templates, CampaignError> {
    Templates::compile(&c.subject, &c.text, c.html.as_deref())
        .map_err(|e| invalid("templates", e.to_string()))
}

fn from_of(c: &Campaign) -> From {
    From {
        name: c.from_name.clone(),
        address: c.from_address.clone(),
    }
}

/// The campaign's part of `Feedback-ID` (`c<id>`: visible ASCII, no spaces).
fn feedback_name(c: &Campaign) -> String {
    format!("c{}", c.id)
}

fn stream(feedback: &str) -> Stream<'_> {
    Stream {
        campaign: feedback,
        name: "campaign",
    }
}

fn topic_label(t: &Topic) -> String {
    GuardClass::Marketing(t).label()
}

/// One Message-ID per campaign and recipient: a copy sent again after a
/// crash is the same message to the upstream.
pub fn message_id(c: &Campaign, contact: veto_core::ContactId, domain: &str) -> String {
    veto_store::campaign_message_id(c.id, contact, domain)
}

// ---- daily caps ------------------------------------------------------------------

enum Allowance {
    Unlimited,
    Left(u64),
}

struct Caps {
    topic_cap: Option<u64>,
    key_cap: Option<u64>,
    topic_id: i64,
    created_by: String,
    /// The UTC day the counts are for, and the counts.
    day: Option<(i64, u64, u64)>,
}

impl Caps {
    fn new(s: &CampaignSettings, c: &Campaign) -> Caps {
        Caps {
            topic_cap: s.daily_cap_per_topic,
            key_cap: s
                .daily_cap_per_key
                .filter(|_| c.created_by.starts_with("api-key:")),
            topic_id: c.topic_id,
            created_by: c.created_by.clone(),
            day: None,
        }
    }

    fn today() -> (i64, Timestamp) {
        let now = Timestamp::now().as_second();
        let day = now.div_euclid(86_400);
        (
            day,
            Timestamp::from_second(day * 86_400).unwrap_or(Timestamp::UNIX_EPOCH),
        )
    }

    async fn allowance(&mut self, store: &veto_store::Store) -> Result<Allowance, StoreError> {
        if self.topic_cap.is_none() && self.key_cap.is_none() {
            return Ok(Allowance::Unlimited);
        }
        let (day, start) = Caps::today();
        if self.day.map(|d| d.0) != Some(day) {
            let topic = match self.topic_cap {
                Some(_) => {
                    store
                        .campaign_sends_since(Some(self.topic_id), None, start)
                        .await? as u64
                }
                None => 0,
            };
            let key = match self.key_cap {
                Some(_) => {
                    store
                        .campaign_sends_since(None, Some(&self.created_by), start)
                        .await? as u64
                }
                None => 0,
            };
            self.day = Some((day, topic, key));
        }
        let (_, topic, key) = self.day.unwrap_or_default();
        let left = [
            self.topic_cap.map(|cap| cap.saturating_sub(topic)),
            self.key_cap.map(|cap| cap.saturating_sub(key)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX);
        Ok(Allowance::Left(left))
    }

    fn count(&mut self, sent: u64) {
        if let Some((_, topic, key)) = &mut self.day {
            *topic += sent;
            *key += sent;
        }
    }

    async fn note_reached(&self, store: &veto_store::Store, id: i64) -> Result<(), StoreError> {
        let reason = "waiting: the daily cap for this topic or API key is reached; sending goes on after midnight UTC";
        match store
            .set_campaign_state(
                id,
                &[CampaignState::Sending],
                CampaignState::Sending,
                Some(reason),
            )
            .await
        {
            Ok(_) | Err(StoreError::Invalid(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

// ---- rate limits -------------------------------------------------------------------

/// Messages per second in all and per domain: each recipient gets the next
/// free slot of both, and a chunk waits for the last of its slots.
struct Limiter {
    every: Option<Duration>,
    every_per_domain: Option<Duration>,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: Option<Instant>,
    domains: HashMap<String, Instant>,
}

impl Limiter {
    fn new(rate: Option<f64>, domain_rate: Option<f64>) -> Limiter {
        let every = |r: Option<f64>| r.map(|r| Duration::from_secs_f64(1.0 / r));
        Limiter {
            every: every(rate),
            every_per_domain: every(domain_rate),
            slots: Mutex::default(),
        }
    }

    async fn wait(&self, tos: &[EmailAddress]) {
        if self.every.is_none() && self.every_per_domain.is_none() {
            return;
        }
        let now = Instant::now();
        let last = {
            let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if s.domains.len() > 100_000 {
                s.domains.retain(|_, at| *at > now);
            }
            let mut last = now;
            for to in tos {
                let mut at = now;
                if let Some(every) = self.every {
                    at = at.max(s.next.unwrap_or(now));
                    s.next = Some(at + every);
                }
                if let Some(every) = self.every_per_domain {
                    let domain = to.as_str().rsplit('@').next().unwrap_or("").to_owned();
                    let slot = s.domains.entry(domain).or_insert(now);
                    at = at.max(*slot);
                    *slot = at + every;
                }
                last = last.max(at);
            }
            last
        };
        tokio::time::sleep_until(last.into()).await;
    }
}

// ---- group commit ------------------------------------------------------------------

type Commit = (
    Vec<(i64, RecipientOutcome)>,
    Vec<NewReceipt>,
    oneshot::Sender<Result<(), StoreError>>,
);

/// Chunks' outcomes and receipts, committed together: many chunks share
/// one transaction and one fsync.
struct Committer {
    tx: mpsc::UnboundedSender<Commit>,
}

impl Committer {
    fn start(store: veto_store::Store) -> Committer {
        let (tx, mut rx) = mpsc::unbounded_channel::<Commit>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while group.len() < 256 {
                    match rx.try_recv() {
                        Ok(more) => group.push(more),
                        Err(_) => break,
                    }
                }
                let mut outcomes = Vec::new();
                let mut receipts = Vec::new();
                let mut waiting = Vec::with_capacity(group.len());
                for (o, r, done) in group {
                    outcomes.extend(o);
                    receipts.extend(r);
                    waiting.push(done);
                }
                let result = store.record_recipients(outcomes, receipts).await;
                for done in waiting {
                    let _ = done.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(StoreError::Invalid(format!(
                            "campaign records not committed: {e}"
                        ))),
                    });
                }
            }
        });
        Committer { tx }
    }

    async fn record(
        &self,
        outcomes: Vec<(i64, RecipientOutcome)>,
        receipts: Vec<NewReceipt>,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((outcomes, receipts, done))
            .map_err(|_| StoreError::Invalid("the campaign committer stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Invalid("the campaign committer stopped".into()))?
    }
}
