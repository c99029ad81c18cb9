//! Telephone preference screening (PECR reg 21): the TPS and CTPS lists as
//! `veto tps import` loads them, and the screening fact a decision on the
//! phone channel is made with.

use std::fmt;

use serde::Serialize;
use veto_core::{ContactId, Fact, PhoneNumber, SubscriberKind, Timestamp};

use crate::{Result, Store, StoreError, postgres, sqlite};

/// Which preference list: the Telephone Preference Service (individuals,
/// sole traders) or the Corporate TPS (companies and other bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TpsList {
    Tps,
    Ctps,
}

impl TpsList {
    pub fn as_str(self) -> &'static str {
        match self {
            TpsList::Tps => "tps",
            TpsList::Ctps => "ctps",
        }
    }

    /// The list that screens a subscriber of this kind.
    pub fn for_subscriber(kind: SubscriberKind) -> TpsList {
        match kind {
            SubscriberKind::Individual => TpsList::Tps,
            SubscriberKind::Corporate => TpsList::Ctps,
        }
    }
}

impl fmt::Display for TpsList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TpsList {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tps" => Ok(TpsList::Tps),
            "ctps" => Ok(TpsList::Ctps),
            other => Err(StoreError::Invalid(format!(
                "{other:?} is not a telephone preference list (tps or ctps)"
            ))),
        }
    }
}

/// One number on a list, and the day it was listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpsListing {
    pub number: PhoneNumber,
    pub listed_on: Timestamp,
}

/// A loaded list: the date of its data, when it was loaded, from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TpsImport {
    pub list: TpsList,
    /// When the list data was taken (the screening date).
    pub as_of: Timestamp,
    pub imported_at: Timestamp,
    pub source: String,
    pub numbers: i64,
}

/// A number's screening result, as a phone decision sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhoneScreening {
    /// The list that screens this subscriber, and the date of its data
    /// (`None`: that list has never been loaded).
    pub list: TpsList,
    pub screened_at: Option<Timestamp>,
    /// The earliest day the number appears on any loaded list.
    pub listed_since: Option<Timestamp>,
    /// The lists the number is on.
    pub listed_on: Vec<TpsList>,
}

impl PhoneScreening {
    /// The fact the policy decides with (none when never screened).
    pub fn fact(&self) -> Option<Fact> {
        self.screened_at.map(|screened_at| Fact::PhoneScreen {
            screened_at,
            listed_since: self.listed_since,
        })
    }
}

impl Store {
    /// Replaces `list` with `listings` (a full list, as TPS and CTPS files
    /// are), in one transaction: numbers no longer listed leave it. `as_of`
    /// is the date of the list data. Duplicate numbers keep their earliest
    /// listing date.
    pub async fn import_tps(
        &self,
        list: TpsList,
        as_of: Timestamp,
        source: &str,
        listings: &[TpsListing],
    ) -> Result<TpsImport> {
        dispatch!(self, import_tps(list, as_of, source, listings))
    }

    /// Every list loaded, with the date of its data.
    pub async fn tps_imports(&self) -> Result<Vec<TpsImport>> {
        dispatch!(self, tps_imports())
    }

    /// Screens `number` for a subscriber of kind `kind`.
    pub async fn phone_screening(
        &self,
        number: &PhoneNumber,
        kind: SubscriberKind,
    ) -> Result<PhoneScreening> {
        dispatch!(self, phone_screening(number, kind))
    }

    /// The contacts (not erased) that hold this phone number.
    pub async fn contacts_with_phone(&self, number: &PhoneNumber) -> Result<Vec<ContactId>> {
        dispatch!(self, contacts_with_phone(number))
    }
}
