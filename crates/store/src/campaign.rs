//! Campaigns and their recipient queue: what the campaign sender claims,
//! sends and records, on either backend.

use std::collections::BTreeMap;

use serde::Serialize;
use veto_core::{ContactId, Timestamp, Topic};

use crate::{NewReceipt, Result, Store, StoreError, postgres, sqlite};

/// One Message-ID per campaign and recipient: a copy sent again after a
/// crash is the same message to the upstream.
pub fn campaign_message_id(campaign: i64, contact: ContactId, domain: &str) -> String {
    format!("<campaign-{campaign}.{}@{domain}>", contact.0)
}

/// The campaign a [`campaign_message_id`] names.
pub fn campaign_of_message_id(message_id: &str) -> Option<i64> {
    let rest = message_id.strip_prefix("<campaign-")?;
    let (id, rest) = rest.split_once('.')?;
    rest.contains('@').then_some(())?;
    id.parse().ok().filter(|n: &i64| *n > 0)
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Being written; preview and test sends only.
    Draft,
    /// Started, with a send time still to come.
    Scheduled,
    Sending,
    /// Stopped for now, by a person or a brake (`state_reason` says which).
    Paused,
    Cancelled,
    /// Every recipient sent, refused or failed.
    Done,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Scheduled => "scheduled",
            CampaignState::Sending => "sending",
            CampaignState::Paused => "paused",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<CampaignState> {
        [
            CampaignState::Draft,
            CampaignState::Scheduled,
            CampaignState::Sending,
            CampaignState::Paused,
            CampaignState::Cancelled,
            CampaignState::Done,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for CampaignState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A campaign as written by a marketer (checked by the sender before it
/// gets here: templates compile, the address parses, the topic exists).
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub topic: Topic,
    pub from_name: Option<String>,
    pub from_address: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: String,
    pub template_version: String,
    pub scheduled_at: Option<Timestamp>,
    pub rate: Option<f64>,
    pub domain_rate: Option<f64>,
    pub concurrency: u32,
    /// `api-key:<prefix>` or `cli:<user>`.
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub topic_id: i64,
    pub topic: String,
    pub from_name: Option<String>,
    pub from_address: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: String,
    pub template_version: String,
    pub state: CampaignState,
    pub state_reason: Option<String>,
    pub scheduled_at: Option<Timestamp>,
    pub rate: Option<f64>,
    pub domain_rate: Option<f64>,
    pub concurrency: u32,
    pub created_by: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// A recipient a sender has claimed: what the templates and the guard need.
#[derive(Debug, Clone)]
pub struct ClaimedRecipient {
    pub contact: ContactId,
    /// `None`: erased since the campaign started.
    pub email: Option<String>,
    pub name: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

/// How one recipient ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientState {
    /// Back in the queue, unsent (upstream could not take it now).
    Queued,
    Sent,
    /// The guard said no.
    Refused,
    /// The MTA refused it for good, or the copy could not be made.
    Failed,
}

impl RecipientState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Queued => "queued",
            RecipientState::Sent => "sent",
            RecipientState::Refused => "refused",
            RecipientState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecipientOutcome {
    pub contact: ContactId,
    pub state: RecipientState,
    /// The refusal's reason code, or why it failed.
    pub reason: Option<String>,
}

/// Where a campaign's recipients are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CampaignProgress {
    pub total: i64,
    pub queued: i64,
    /// Claimed by a sender and not yet recorded.
    pub in_flight: i64,
    pub sent: i64,
    pub failed: i64,
    /// Refused by the guard, by reason.
    pub refused: BTreeMap<String, i64>,
}

impl CampaignProgress {
    pub fn refused_total(&self) -> i64 {
        self.refused.values().sum()
    }

    /// Recipients not yet sent, refused or failed.
    pub fn remaining(&self) -> i64 {
        self.queued + self.in_flight
    }
}

/// What came back from the people a campaign was sent to, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CampaignFeedback {
    pub unsubscribes: i64,
    pub hard_bounces: i64,
    pub complaints: i64,
}

impl Store {
    pub async fn create_campaign(&self, c: NewCampaign) -> Result<Campaign> {
        dispatch!(self, create_campaign(c))
    }

    pub async fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        dispatch!(self, campaign(id))
    }

    /// Every campaign, newest first.
    pub async fn campaigns(&self) -> Result<Vec<Campaign>> {
        dispatch!(self, campaigns())
    }

    /// Moves a campaign from one of `from` to `to`, with a reason; an error
    /// names the state it was in when it was in none of them.
    pub async fn set_campaign_state(
        &self,
        id: i64,
        from: &[CampaignState],
        to: CampaignState,
        reason: Option<&str>,
    ) -> Result<Campaign> {
        dispatch!(self, set_campaign_state(id, from, to, reason))
    }

    /// Starts a draft: its audience (every contact veto holds an address
    /// for; the guard decides each one at hand-off) goes into the queue,
    /// and it is `sending`, or `scheduled` while its time is to come.
    pub async fn start_campaign(&self, id: i64, now: Timestamp) -> Result<Campaign> {
        dispatch!(self, start_campaign(id, now))
    }

    /// Campaigns that are sending, and scheduled ones whose time has come
    /// (those become `sending`).
    pub async fn campaigns_to_send(&self, now: Timestamp) -> Result<Vec<Campaign>> {
        dispatch!(self, campaigns_to_send(now))
    }

    /// Claims up to `n` queued recipients (and any whose claim is older
    /// than `lease_expired`) for `node`. On PostgreSQL, nodes claiming at
    /// once skip each other's rows (`FOR UPDATE SKIP LOCKED`).
    pub async fn claim_recipients(
        &self,
        campaign: i64,
        node: &str,
        n: usize,
        now: Timestamp,
        lease_expired: Timestamp,
    ) -> Result<Vec<ClaimedRecipient>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        dispatch!(
            self,
            claim_recipients(campaign, node, n, now, lease_expired)
        )
    }

    /// Puts every claimed recipient of `node` (all nodes: `None`) back in
    /// the queue; for a restart on SQLite, where one process sends.
    pub async fn release_claims(&self, node: Option<&str>) -> Result<u64> {
        dispatch!(self, release_claims(node))
    }

    /// Records how recipients ended (per campaign) and their receipts, in
    /// one transaction.
    pub async fn record_recipients(
        &self,
        outcomes: Vec<(i64, RecipientOutcome)>,
        receipts: Vec<NewReceipt>,
    ) -> Result<()> {
        dispatch!(self, record_recipients(outcomes, receipts))
    }

    /// A `sending` campaign with nothing queued or claimed becomes `done`.
    pub async fn finish_campaign_if_done(&self, id: i64) -> Result<bool> {
        dispatch!(self, finish_campaign_if_done(id))
    }

    pub async fn campaign_progress(&self, id: i64) -> Result<CampaignProgress> {
        dispatch!(self, campaign_progress(id))
    }

    /// Unsubscribes, hard bounces and complaints from the people this
    /// campaign was sent to, recorded since it started.
    pub async fn campaign_feedback(&self, id: i64) -> Result<CampaignFeedback> {
        dispatch!(self, campaign_feedback(id))
    }

    /// Campaign messages sent since `since`: all of them for one topic, or
    /// those of campaigns one actor created (daily caps).
    pub async fn campaign_sends_since(
        &self,
        topic_id: Option<i64>,
        created_by: Option<&str>,
        since: Timestamp,
    ) -> Result<i64> {
        dispatch!(self, campaign_sends_since(topic_id, created_by, since))
    }
}

pub(crate) fn not_found(id: i64) -> StoreError {
    StoreError::NotFound(format!("campaign {id}"))
}

#[cfg(test)]
mod message_id_tests {
    use super::*;

    #[test]
    fn campaign_copies_are_known_by_their_message_id() {
        let id = campaign_message_id(12, ContactId(345), "mail.example");
        assert_eq!(id, "<campaign-12.345@mail.example>");
        assert_eq!(campaign_of_message_id(&id), Some(12));
        assert_eq!(
            campaign_of_message_id("<campaign-12.345@mail.example>"),
            Some(12)
        );
        assert_eq!(
            campaign_of_message_id("<campaign-x.345@mail.example>"),
            None
        );
        assert_eq!(campaign_of_message_id("<campaign-12@mail.example>"), None);
        assert_eq!(campaign_of_message_id("<abc@mail.example>"), None);
    }
}
