//! Data-subject requests (GDPR Arts 15 to 21) as a DPO tracks them: when
//! each came in, whether the person's identity was checked, when and how it
//! was answered, and its deadline.
//!
//! GDPR Art 12(3): the answer is due "without undue delay and in any event
//! within one month of receipt", extendable "by two further months where
//! necessary", the person told of the extension, with the reasons, within
//! the first month. Periods follow Regulation 1182/71 Art 3 as the ICO
//! reads it: the day of receipt does not count, and the month ends at the
//! end of the same date in the next month, or of that month's last day
//! when it has no such date (31 January → 28 or 29 February). Dates are
//! UTC calendar dates.

use jiff::ToSpan;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;
use veto_core::{ContactId, EmailAddress, Timestamp};

use crate::{Result, Store, StoreError, postgres, sqlite};

/// What the person asked for, by the article that gives them the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Art 15.
    Access,
    /// Art 20.
    Portability,
    /// Art 17.
    Erasure,
    /// Art 16.
    Rectification,
    /// Art 21.
    Objection,
    /// Art 18.
    Restriction,
}

impl RequestKind {
    pub const ALL: [RequestKind; 6] = [
        RequestKind::Access,
        RequestKind::Portability,
        RequestKind::Erasure,
        RequestKind::Rectification,
        RequestKind::Objection,
        RequestKind::Restriction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Access => "access",
            RequestKind::Portability => "portability",
            RequestKind::Erasure => "erasure",
            RequestKind::Rectification => "rectification",
            RequestKind::Objection => "objection",
            RequestKind::Restriction => "restriction",
        }
    }

    pub fn parse(s: &str) -> Option<RequestKind> {
        RequestKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The GDPR article that gives the right.
    pub fn article(self) -> &'static str {
        match self {
            RequestKind::Access => "Art 15",
            RequestKind::Portability => "Art 20",
            RequestKind::Erasure => "Art 17",
            RequestKind::Rectification => "Art 16",
            RequestKind::Objection => "Art 21",
            RequestKind::Restriction => "Art 18",
        }
    }
}

/// How the request reached the organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestVia {
    Email,
    Letter,
    Phone,
    WebForm,
    /// The person's own download or erasure on the preference centre.
    PreferenceCentre,
}

impl RequestVia {
    pub const ALL: [RequestVia; 5] = [
        RequestVia::Email,
        RequestVia::Letter,
        RequestVia::Phone,
        RequestVia::WebForm,
        RequestVia::PreferenceCentre,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestVia::Email => "email",
            RequestVia::Letter => "letter",
            RequestVia::Phone => "phone",
            RequestVia::WebForm => "web_form",
            RequestVia::PreferenceCentre => "preference_centre",
        }
    }

    pub fn parse(s: &str) -> Option<RequestVia> {
        RequestVia::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Where a request stands, derived from what was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Open,
    IdentityChecked,
    Answered,
    Refused,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Open => "open",
            RequestStatus::IdentityChecked => "identity_checked",
            RequestStatus::Answered => "answered",
            RequestStatus::Refused => "refused",
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// What the person asked for was done.
    Done,
    /// Refused (Art 12(4): the person is told why and of their right to
    /// complain to a supervisory authority).
    Refused { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub due_at: Timestamp,
    pub reason: String,
    pub at: Timestamp,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityCheck {
    pub at: Timestamp,
    pub by: String,
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub at: Timestamp,
    pub by: String,
    pub outcome: Outcome,
}

/// One data-subject request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRequest {
    pub id: i64,
    pub kind: RequestKind,
    pub contact: Option<ContactId>,
    /// The address the person gave; `None` once blanked (an answered
    /// erasure, an erased contact, the retention purge) or when none was given.
    pub email: Option<String>,
    pub via: RequestVia,
    pub note: Option<String>,
    pub received_at: Timestamp,
    /// One calendar month after receipt (the end of that day, UTC).
    pub due_at: Timestamp,
    pub extension: Option<Extension>,
    pub identity: Option<IdentityCheck>,
    pub answer: Option<Answer>,
    pub created_by: String,
    pub created_at: Timestamp,
}

impl SubjectRequest {
    pub fn status(&self) -> RequestStatus {
        match (&self.answer, &self.identity) {
            (
                Some(Answer {
                    outcome: Outcome::Done,
                    ..
                }),
                _,
            ) => RequestStatus::Answered,
            (
                Some(Answer {
                    outcome: Outcome::Refused { .. },
                    ..
                }),
                _,
            ) => RequestStatus::Refused,
            (None, Some(_)) => RequestStatus::IdentityChecked,
            (None, None) => RequestStatus::Open,
        }
    }

    /// The deadline that applies: the extended one, if extended.
    pub fn deadline(&self) -> Timestamp {
        self.extension.as_ref().map_or(self.due_at, |e| e.due_at)
    }

    /// Whole days from `now`'s date to the deadline's date (UTC): 0 on the
    /// last day, negative once it has passed.
    pub fn days_left(&self, now: Timestamp) -> i64 {
        days_between(utc_date(now), utc_date(self.deadline()))
    }

    /// Not answered, and the deadline has passed.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.answer.is_none() && now > self.deadline()
    }
}

/// A request as staff (or the preference centre) record it.
#[derive(Debug, Clone)]
pub struct NewSubjectRequest {
    pub kind: RequestKind,
    /// The contact it is about; found by `email` when `None`.
    pub contact: Option<ContactId>,
    pub email: Option<EmailAddress>,
    pub via: RequestVia,
    pub note: Option<String>,
    pub received_at: Timestamp,
    /// `api-key:…`, `user:…`, `cli` or `person`.
    pub actor: String,
}

/// Which requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFilter {
    /// Not answered yet.
    Open,
    /// Not answered, and past the deadline.
    Overdue,
    /// Not answered, with at most this many days left (overdue ones too).
    DueWithin(i64),
    /// Answered or refused.
    Answered,
    All,
}

/// The numbers a dashboard shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    /// Not answered.
    pub open: i64,
    /// Not answered, not overdue, and due within the next 7 days.
    pub due_within_7_days: i64,
    /// Not answered, past the deadline.
    pub overdue: i64,
}

/// Why a change to a request was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefused {
    #[error("there is no request {0}")]
    NotFound(i64),
    #[error("request {id} was answered already ({status}); it cannot change any more")]
    AlreadyAnswered { id: i64, status: &'static str },
    #[error("the identity behind request {0} was checked already")]
    IdentityAlreadyChecked(i64),
    #[error(
        "request {0} cannot be answered as done before the person's identity is checked (GDPR Art 12(6)); record the check first"
    )]
    IdentityNotChecked(i64),
    #[error("request {0} was extended already; Art 12(3) allows one extension of two months")]
    AlreadyExtended(i64),
    #[error(
        "request {id}'s first deadline ({due}) has passed: Art 12(3) lets the deadline be extended only within the first month"
    )]
    DeadlinePassed { id: i64, due: Timestamp },
    #[error(
        "contact {contact} has not been erased: erase them first (POST /api/v1/erasures or `veto erase`), then answer the erasure request as done"
    )]
    ContactNotErased { contact: i64 },
}

impl RequestRefused {
    /// A short code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            RequestRefused::NotFound(_) => "not_found",
            RequestRefused::AlreadyAnswered { .. } => "already_answered",
            RequestRefused::IdentityAlreadyChecked(_) => "identity_already_checked",
            RequestRefused::IdentityNotChecked(_) => "identity_not_checked",
            RequestRefused::AlreadyExtended(_) => "already_extended",
            RequestRefused::DeadlinePassed { .. } => "deadline_passed",
            RequestRefused::ContactNotErased { .. } => "contact_not_erased",
        }
    }
}

/// Requests, or what refused the change.
pub type RequestResult = Result<Result<SubjectRequest, RequestRefused>>;

/// The longest free texts (note, how, reason) veto keeps.
pub const MAX_REQUEST_TEXT: usize = 2000;

// ---- the deadline arithmetic ----

/// The calendar day (UTC) of `t`: deadlines are counted in whole UTC days.
pub fn utc_date(t: Timestamp) -> Date {
    t.to_zoned_datetime(TimeZone::UTC).date()
}

fn days_between(from: Date, to: Date) -> i64 {
    // Calendar dates: the span in days is exact.
    from.until(to).map(|s| i64::from(s.get_days())).unwrap_or(0)
}

/// The last second of `date`, UTC.
pub fn end_of_day(date: Date) -> Result<Timestamp> {
    date.at(23, 59, 59, 0)
        .to_zoned_datetime(TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|e| StoreError::Invalid(format!("date {date} out of range: {e}")))
}

/// The date `months` calendar months after `received`'s date (UTC), the
/// last day of the month when it has no such date.
pub fn months_after(received: Timestamp, months: i64) -> Result<Date> {
    utc_date(received)
        .checked_add(months.months())
        .map_err(|e| StoreError::Invalid(format!("date out of range: {e}")))
}

/// Art 12(3): the end of the day one calendar month after receipt.
pub fn first_deadline(received: Timestamp) -> Result<Timestamp> {
    end_of_day(months_after(received, 1)?)
}

/// Art 12(3): the latest an extended deadline may be, three calendar
/// months after receipt.
pub fn latest_extension(received: Timestamp) -> Result<Timestamp> {
    end_of_day(months_after(received, 3)?)
}

fn check_text(what: &str, text: &str) -> Result<String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    if t.chars().count() > MAX_REQUEST_TEXT {
        return Err(StoreError::Invalid(format!(
            "{what} is longer than {MAX_REQUEST_TEXT} characters"
        )));
    }
    Ok(t.to_owned())
}

impl Store {
    /// Records a request received at `received_at` (not in the future), its
    /// deadline one calendar month later. Without a contact, the contact
    /// with the given address (if any) is the one it is about.
    pub async fn create_request(&self, mut new: NewSubjectRequest) -> Result<SubjectRequest> {
        if new.contact.is_none() && new.email.is_none() {
            return Err(StoreError::Invalid(
                "a request needs the person's address or contact id".into(),
            ));
        }
        // A minute of clock difference between the caller and veto.
        if new.received_at > Timestamp::now() + jiff::SignedDuration::from_secs(60) {
            return Err(StoreError::Invalid(
                "received_at is in the future: when did the request arrive?".into(),
            ));
        }
        new.note = match new.note.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(n) => Some(check_text("note", n)?),
        };
        match new.contact {
            Some(c) => {
                if self.contact(c).await?.is_none() {
                    return Err(StoreError::NotFound(format!("contact {}", c.0)));
                }
            }
            None => {
                if let Some(email) = &new.email {
                    new.contact = self.find_contact(email).await?.map(|c| c.id).map(ContactId);
                }
            }
        }
        let due = first_deadline(new.received_at)?;
        dispatch!(self, create_request(&new, due, None))
    }

    /// Records a request the person made and confirmed themselves on the
    /// preference centre: received when they asked, their identity checked
    /// by the link mailed to their address, answered (done) now. Recording
    /// the same one again (a second click on the link) returns the first.
    pub async fn record_self_service_request(
        &self,
        kind: RequestKind,
        contact: ContactId,
        email: Option<&EmailAddress>,
        received_at: Timestamp,
        now: Timestamp,
    ) -> Result<SubjectRequest> {
        let new = NewSubjectRequest {
            kind,
            contact: Some(contact),
            email: email.cloned(),
            via: RequestVia::PreferenceCentre,
            note: None,
            received_at: received_at.min(now),
            actor: "person".into(),
        };
        let due = first_deadline(new.received_at)?;
        dispatch!(self, create_request(&new, due, Some(now)))
    }

    pub async fn request(&self, id: i64) -> Result<Option<SubjectRequest>> {
        dispatch!(self, request(id))
    }

    /// Requests by id, after `after`.
    pub async fn requests(
        &self,
        filter: RequestFilter,
        now: Timestamp,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SubjectRequest>> {
        let cut = match filter {
            RequestFilter::Overdue => Some(now.as_microsecond()),
            RequestFilter::DueWithin(days) => {
                let date = utc_date(now)
                    .checked_add(days.clamp(0, 3650).days())
                    .map_err(|e| StoreError::Invalid(format!("date out of range: {e}")))?;
                Some(end_of_day(date)?.as_microsecond())
            }
            _ => None,
        };
        dispatch!(self, requests(filter, cut, after, limit))
    }

    /// Open, due within 7 days, and overdue requests.
    pub async fn request_counts(&self, now: Timestamp) -> Result<RequestCounts> {
        let week = end_of_day(
            utc_date(now)
                .checked_add(7.days())
                .map_err(|e| StoreError::Invalid(format!("date out of range: {e}")))?,
        )?;
        dispatch!(
            self,
            request_counts(now.as_microsecond(), week.as_microsecond())
        )
    }

    /// Records that the person's identity was checked, by whom and how.
    pub async fn check_request_identity(
        &self,
        id: i64,
        by: &str,
        how: &str,
        now: Timestamp,
    ) -> RequestResult {
        let how = check_text("how", how)?;
        dispatch!(self, check_request_identity(id, by, &how, now))
    }

    /// Extends the deadline once, within the first month, to `until` (the
    /// end of that day; at most three months after receipt, which is also
    /// the default), for `reason` — which the person must be told.
    pub async fn extend_request(
        &self,
        id: i64,
        by: &str,
        reason: &str,
        until: Option<Date>,
        now: Timestamp,
    ) -> RequestResult {
        let reason = check_text("reason", reason)?;
        dispatch!(self, extend_request(id, by, &reason, until, now))
    }

    /// Answers a request. `Done` needs the identity checked first, and for
    /// an erasure, the contact erased (through [`Store::erase`]); a refusal
    /// needs a reason and may come before the check (a person who cannot
    /// be identified, Art 11(2), 12(2)). An answered erasure's address is
    /// blanked.
    pub async fn answer_request(
        &self,
        id: i64,
        by: &str,
        outcome: Outcome,
        now: Timestamp,
    ) -> RequestResult {
        let outcome = match outcome {
            Outcome::Done => Outcome::Done,
            Outcome::Refused { reason } => Outcome::Refused {
                reason: check_text("reason", &reason)?,
            },
        };
        dispatch!(self, answer_request(id, by, &outcome, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn due(received: &str) -> String {
        first_deadline(t(received)).unwrap().to_string()
    }

    #[test]
    fn one_calendar_month_ends_on_the_same_date() {
        assert_eq!(due("2027-01-03T10:00:00Z"), "2027-02-03T23:59:59Z");
        assert_eq!(due("2027-09-03T00:00:00Z"), "2027-10-03T23:59:59Z");
        assert_eq!(due("2027-12-15T23:59:59Z"), "2028-01-15T23:59:59Z");
    }

    #[test]
    fn a_month_without_the_date_ends_on_its_last_day() {
        assert_eq!(due("2027-01-31T12:00:00Z"), "2027-02-28T23:59:59Z");
        assert_eq!(due("2027-01-29T12:00:00Z"), "2027-02-28T23:59:59Z");
        assert_eq!(due("2027-03-31T12:00:00Z"), "2027-04-30T23:59:59Z");
        assert_eq!(due("2027-08-31T12:00:00Z"), "2027-09-30T23:59:59Z");
    }

    #[test]
    fn leap_years_have_a_29th_of_february() {
        assert_eq!(due("2028-01-31T12:00:00Z"), "2028-02-29T23:59:59Z");
        assert_eq!(due("2028-01-29T12:00:00Z"), "2028-02-29T23:59:59Z");
        assert_eq!(due("2028-02-29T12:00:00Z"), "2028-03-29T23:59:59Z");
        // 2100 is not a leap year.
        assert_eq!(due("2100-01-30T12:00:00Z"), "2100-02-28T23:59:59Z");
        assert_eq!(
            latest_extension(t("2027-11-30T08:00:00Z"))
                .unwrap()
                .to_string(),
            "2028-02-29T23:59:59Z"
        );
    }

    #[test]
    fn the_extension_counts_three_months_from_receipt() {
        // Not 28 Feb + 2 months (28 April).
        assert_eq!(
            latest_extension(t("2027-01-31T12:00:00Z"))
                .unwrap()
                .to_string(),
            "2027-04-30T23:59:59Z"
        );
        assert_eq!(
            latest_extension(t("2027-10-31T12:00:00Z"))
                .unwrap()
                .to_string(),
            "2028-01-31T23:59:59Z"
        );
    }

    #[test]
    fn days_left_count_calendar_days_and_go_negative() {
        let r = SubjectRequest {
            id: 1,
            kind: RequestKind::Access,
            contact: None,
            email: None,
            via: RequestVia::Email,
            note: None,
            received_at: t("2027-01-31T12:00:00Z"),
            due_at: first_deadline(t("2027-01-31T12:00:00Z")).unwrap(),
            extension: None,
            identity: None,
            answer: None,
            created_by: "cli".into(),
            created_at: t("2027-01-31T12:00:00Z"),
        };
        assert_eq!(r.days_left(t("2027-01-31T12:00:00Z")), 28);
        assert_eq!(r.days_left(t("2027-02-28T23:00:00Z")), 0);
        assert!(!r.is_overdue(t("2027-02-28T23:59:59Z")));
        assert!(r.is_overdue(t("2027-03-01T00:00:00Z")));
        assert_eq!(r.days_left(t("2027-03-03T09:00:00Z")), -3);
        assert_eq!(r.status(), RequestStatus::Open);
    }

    #[test]
    fn kinds_and_sources_round_trip() {
        for k in RequestKind::ALL {
            assert_eq!(RequestKind::parse(k.as_str()), Some(k));
        }
        for v in RequestVia::ALL {
            assert_eq!(RequestVia::parse(v.as_str()), Some(v));
        }
        assert_eq!(RequestKind::parse("Access"), None);
    }
}
