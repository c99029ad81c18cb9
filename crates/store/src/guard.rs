//! The guard: the one place that decides, immediately before hand-off.
//!
//! It reads the recipient's consent from the store (never a cache: several
//! nodes share the store) and asks the policy. Only it can build an
//! [`Admitted`], and transports take only that: "nothing reaches a person
//! who said no" is checked by the compiler, not by review.

use veto_core::{
    Allowance, Channel, ContactId, Decision, EmailAddress, Message, MessageClass, PolicySettings,
    Refusal, Timestamp, Topic, decide,
};

use crate::{Result, Store};

/// What a message is, for the guard.
#[derive(Debug, Clone, Copy)]
pub enum GuardClass<'a> {
    Marketing(&'a Topic),
    /// A declared service type.
    Service(&'a str),
    /// Something the person asked for just now on veto's pages.
    Requested(&'a str),
}

impl GuardClass<'_> {
    /// How receipts name the class: a topic key, `service:<type>`, `requested:<what>`.
    pub fn label(&self) -> String {
        match self {
            GuardClass::Marketing(t) => t.key.to_string(),
            GuardClass::Service(s) => format!("service:{s}"),
            GuardClass::Requested(r) => format!("requested:{r}"),
        }
    }
}

#[derive(Clone)]
pub struct Guard {
    store: Store,
    settings: PolicySettings,
}

/// A recipient the guard admitted for one message, at one moment.
/// There is no other constructor than [`Guard::admit`].
#[derive(Debug)]
pub struct Admitted {
    to: EmailAddress,
    contact: Option<ContactId>,
    allowance: Allowance,
    class: String,
    channel: Channel,
    checked_at: Timestamp,
}

impl Admitted {
    pub fn to(&self) -> &EmailAddress {
        &self.to
    }
    pub fn contact(&self) -> Option<ContactId> {
        self.contact
    }
    pub fn allowance(&self) -> Allowance {
        self.allowance
    }
    pub fn class(&self) -> &str {
        &self.class
    }
    pub fn channel(&self) -> Channel {
        self.channel
    }
    /// The time of the final guard check.
    pub fn checked_at(&self) -> Timestamp {
        self.checked_at
    }
}

impl Guard {
    pub fn new(store: Store, settings: PolicySettings) -> Guard {
        Guard { store, settings }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The `[policy]` this guard decides by.
    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// Asks whether `to` may be sent this message now. A store error is an
    /// error, never an admission (fail closed: the caller retries later).
    pub async fn admit(
        &self,
        to: &EmailAddress,
        class: GuardClass<'_>,
        channel: Channel,
    ) -> Result<std::result::Result<Admitted, (Option<ContactId>, Refusal)>> {
        let now = Timestamp::now();
        let (contact, state) = self.store.load_state(to, now).await?;
        Ok(self.decide(to, contact, &state, class, channel, now))
    }

    /// [`Guard::admit`] for `to`, together with the recipients of
    /// `message_key` that upstream accepted since `since` (the copies an
    /// earlier attempt of the same message delivered), read at the same
    /// moment: one read of the store for the gateway's first copy.
    pub async fn admit_with_relayed(
        &self,
        message_key: &str,
        since: Timestamp,
        to: &EmailAddress,
        class: GuardClass<'_>,
        channel: Channel,
    ) -> Result<(
        Vec<String>,
        std::result::Result<Admitted, (Option<ContactId>, Refusal)>,
    )> {
        let now = Timestamp::now();
        let (relayed, (contact, state)) = self
            .store
            .relayed_and_state(message_key, since, to, now)
            .await?;
        Ok((
            relayed,
            self.decide(to, contact, &state, class, channel, now),
        ))
    }

    /// [`Guard::admit`] for several recipients of one message, with one read
    /// of the store (the campaign sender checks a handful at once,
    /// immediately before handing them off). The answers are in order.
    pub async fn admit_many(
        &self,
        tos: &[EmailAddress],
        class: GuardClass<'_>,
        channel: Channel,
    ) -> Result<Vec<std::result::Result<Admitted, (Option<ContactId>, Refusal)>>> {
        let now = Timestamp::now();
        let states = self.store.load_states(tos, now).await?;
        Ok(tos
            .iter()
            .zip(states)
            .map(|(to, (contact, state))| self.decide(to, contact, &state, class, channel, now))
            .collect())
    }

    fn decide(
        &self,
        to: &EmailAddress,
        contact: Option<ContactId>,
        state: &veto_core::ConsentState,
        class: GuardClass<'_>,
        channel: Channel,
        now: Timestamp,
    ) -> std::result::Result<Admitted, (Option<ContactId>, Refusal)> {
        let message_class = match class {
            GuardClass::Marketing(t) => MessageClass::Marketing(t),
            GuardClass::Service(_) => MessageClass::Service,
            GuardClass::Requested(_) => MessageClass::Requested,
        };
        match decide(
            state,
            &Message {
                class: message_class,
                channel,
            },
            &self.settings,
            now,
        ) {
            Decision::Allowed(allowance) => Ok(Admitted {
                to: to.clone(),
                contact,
                allowance,
                class: class.label(),
                channel,
                checked_at: now,
            }),
            Decision::Denied(refusal) => Err((contact, refusal)),
        }
    }
}
