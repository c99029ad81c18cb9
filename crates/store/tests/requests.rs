//! Data-subject requests and their Art 12(3) deadlines, on every backend.

mod helpers;
#[path = "../../core/tests/law_cases/mod.rs"]
mod law_cases;

use std::time::Duration;

use veto_core::{ContactId, EmailAddress, Timestamp};
use veto_store::{
    ContactInput, NewSubjectRequest, Outcome, RequestFilter, RequestKind, RequestRefused,
    RequestStatus, RequestVia, Retention, Store, StoreError,
};

const DAY: Duration = Duration::from_secs(86_400);

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("test address")
}

fn new(kind: RequestKind, email: &str, received_at: Timestamp) -> NewSubjectRequest {
    NewSubjectRequest {
        kind,
        contact: None,
        email: Some(addr(email)),
        via: RequestVia::Letter,
        note: Some("letter dated 3 May".into()),
        received_at,
        actor: "cli".into(),
    }
}

async fn contact(store: &Store, email: &str) -> ContactId {
    store
        .upsert_contact(ContactInput::new(addr(email)))
        .await
        .unwrap()
        .unwrap()
}

async fn ids(store: &Store, filter: RequestFilter, now: Timestamp) -> Vec<i64> {
    store
        .requests(filter, now, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_goes_from_open_to_checked_to_answered_in_order() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        let jo = contact(s, "jo@example.com").await;
        let now = Timestamp::now();
        let r = s
            .create_request(new(RequestKind::Access, "Jo@example.com", now))
            .await
            .unwrap();
        assert_eq!(r.contact, Some(jo), "{db}: found by address");
        assert_eq!(r.status(), RequestStatus::Open, "{db}");
        assert_eq!(
            r.due_at,
            veto_store::first_deadline(r.received_at).unwrap(),
            "{db}"
        );
        assert!((28..=31).contains(&r.days_left(now)), "{db}");
        assert_eq!(s.request(r.id).await.unwrap(), Some(r.clone()), "{db}");

        assert_eq!(
            s.answer_request(r.id, "cli", Outcome::Done, now)
                .await
                .unwrap(),
            Err(RequestRefused::IdentityNotChecked(r.id)),
            "{db}"
        );
        assert!(
            matches!(
                s.check_request_identity(r.id, "cli", "  ", now).await,
                Err(StoreError::Invalid(_))
            ),
            "{db}: how is required"
        );
        let checked = s
            .check_request_identity(r.id, "user:dpo", "replied from the address on file", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(checked.status(), RequestStatus::IdentityChecked, "{db}");
        assert_eq!(checked.identity.as_ref().unwrap().by, "user:dpo", "{db}");
        assert_eq!(
            s.check_request_identity(r.id, "cli", "again", now)
                .await
                .unwrap(),
            Err(RequestRefused::IdentityAlreadyChecked(r.id)),
            "{db}"
        );

        let extended = s
            .extend_request(r.id, "cli", "the archive is on paper", None, now)
            .await
            .unwrap()
            .unwrap();
        let ext = extended.extension.clone().unwrap();
        assert_eq!(
            ext.due_at,
            veto_store::latest_extension(r.received_at).unwrap(),
            "{db}: three months from receipt"
        );
        assert_eq!(extended.deadline(), ext.due_at, "{db}");
        assert_eq!(
            s.extend_request(r.id, "cli", "more", None, now)
                .await
                .unwrap(),
            Err(RequestRefused::AlreadyExtended(r.id)),
            "{db}"
        );

        let answered = s
            .answer_request(r.id, "cli", Outcome::Done, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answered.status(), RequestStatus::Answered, "{db}");
        assert_eq!(
            answered.email.as_deref(),
            Some("Jo@example.com"),
            "{db}: an answered access request keeps the address until the purge"
        );
        for refused in [
            s.answer_request(r.id, "cli", Outcome::Done, now).await,
            s.check_request_identity(r.id, "cli", "x", now).await,
        ] {
            assert!(
                matches!(
                    refused.unwrap(),
                    Err(RequestRefused::AlreadyAnswered { .. })
                ),
                "{db}"
            );
        }
        assert_eq!(
            s.answer_request(999_999, "cli", Outcome::Done, now)
                .await
                .unwrap(),
            Err(RequestRefused::NotFound(999_999)),
            "{db}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_filter_count_and_cannot_be_extended_late() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        let now = Timestamp::now();
        let late = s
            .create_request(new(
                RequestKind::Objection,
                "late@example.com",
                now - 40 * DAY,
            ))
            .await
            .unwrap();
        let soon = s
            .create_request(new(RequestKind::Access, "soon@example.com", now - 27 * DAY))
            .await
            .unwrap();
        let fresh = s
            .create_request(new(RequestKind::Portability, "new@example.com", now))
            .await
            .unwrap();
        let done = s
            .create_request(new(
                RequestKind::Rectification,
                "done@example.com",
                now - 2 * DAY,
            ))
            .await
            .unwrap();
        s.answer_request(
            done.id,
            "cli",
            Outcome::Refused {
                reason: "we could not identify the writer".into(),
            },
            now,
        )
        .await
        .unwrap()
        .unwrap();
        assert!(late.is_overdue(now) && late.days_left(now) < 0, "{db}");
        assert_eq!(late.contact, None, "{db}: not a contact");

        assert_eq!(
            ids(s, RequestFilter::Open, now).await,
            vec![late.id, soon.id, fresh.id],
            "{db}"
        );
        assert_eq!(
            ids(s, RequestFilter::Overdue, now).await,
            vec![late.id],
            "{db}"
        );
        assert_eq!(
            ids(s, RequestFilter::DueWithin(7), now).await,
            vec![late.id, soon.id],
            "{db}"
        );
        assert_eq!(
            ids(s, RequestFilter::Answered, now).await,
            vec![done.id],
            "{db}"
        );
        assert_eq!(ids(s, RequestFilter::All, now).await.len(), 4, "{db}");
        let page = s
            .requests(RequestFilter::All, now, Some(soon.id), 1)
            .await
            .unwrap();
        assert_eq!(page.len(), 1, "{db}");
        assert_eq!(page[0].id, fresh.id, "{db}");

        let counts = s.request_counts(now).await.unwrap();
        assert_eq!(
            (counts.open, counts.due_within_7_days, counts.overdue),
            (3, 1, 1),
            "{db}"
        );

        assert!(
            matches!(
                s.extend_request(late.id, "cli", "too late", None, now)
                    .await
                    .unwrap(),
                Err(RequestRefused::DeadlinePassed { .. })
            ),
            "{db}"
        );
        // An extension to a chosen date: after the first deadline, within three months.
        let first = veto_store::months_after(fresh.received_at, 1).unwrap();
        for bad in [
            first,
            veto_store::months_after(fresh.received_at, 4).unwrap(),
        ] {
            assert!(
                matches!(
                    s.extend_request(fresh.id, "cli", "why", Some(bad), now)
                        .await,
                    Err(StoreError::Invalid(_))
                ),
                "{db}: {bad}"
            );
        }
        let two = veto_store::months_after(fresh.received_at, 2).unwrap();
        let ext = s
            .extend_request(fresh.id, "cli", "many systems to search", Some(two), now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ext.deadline(), veto_store::end_of_day(two).unwrap(), "{db}");
        assert!(
            matches!(
                s.answer_request(soon.id, "cli", Outcome::Refused { reason: " ".into() }, now)
                    .await,
                Err(StoreError::Invalid(_))
            ),
            "{db}: a refusal needs its reason"
        );
        assert!(
            matches!(
                s.create_request(new(RequestKind::Access, "x@example.com", now + 2 * DAY))
                    .await,
                Err(StoreError::Invalid(_))
            ),
            "{db}: received in the future"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_is_answered_only_once_the_contact_is_erased_and_keeps_no_address() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        let sam = contact(s, "sam@example.com").await;
        let now = Timestamp::now();
        let mut req = new(RequestKind::Erasure, "sam@example.com", now);
        req.via = RequestVia::Email;
        let r = s.create_request(req).await.unwrap();
        let other = s
            .create_request(new(RequestKind::Access, "sam@example.com", now))
            .await
            .unwrap();
        s.check_request_identity(r.id, "cli", "replied from the address", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            s.answer_request(r.id, "cli", Outcome::Done, now)
                .await
                .unwrap(),
            Err(RequestRefused::ContactNotErased { contact: sam.0 }),
            "{db}"
        );
        s.erase(&addr("sam@example.com"), "cli", now).await.unwrap();
        for id in [r.id, other.id] {
            let after = s.request(id).await.unwrap().unwrap();
            assert_eq!(after.email, None, "{db}: erase blanks the address");
            assert_eq!(after.contact, Some(sam), "{db}");
        }
        let done = s
            .answer_request(r.id, "cli", Outcome::Done, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.status(), RequestStatus::Answered, "{db}");

        // An erasure request about someone veto never held: done at once.
        let mut none = new(RequestKind::Erasure, "nobody@example.com", now);
        none.note = None;
        let none = s.create_request(none).await.unwrap();
        s.check_request_identity(none.id, "cli", "letter signed", now)
            .await
            .unwrap()
            .unwrap();
        let none = s
            .answer_request(none.id, "cli", Outcome::Done, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            none.email, None,
            "{db}: an answered erasure keeps no address"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_requests_are_recorded_once_and_purged_addresses_go() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        let al = contact(s, "al@example.com").await;
        let now = Timestamp::now();
        let asked = now - Duration::from_secs(600);
        let a = s
            .record_self_service_request(
                RequestKind::Access,
                al,
                Some(&addr("al@example.com")),
                asked,
                now,
            )
            .await
            .unwrap();
        assert_eq!(a.status(), RequestStatus::Answered, "{db}");
        assert_eq!(a.via, RequestVia::PreferenceCentre, "{db}");
        assert_eq!(
            a.received_at.as_microsecond(),
            asked.as_microsecond(),
            "{db}"
        );
        assert!(a.identity.is_some(), "{db}");
        let again = s
            .record_self_service_request(
                RequestKind::Access,
                al,
                Some(&addr("al@example.com")),
                asked,
                now,
            )
            .await
            .unwrap();
        assert_eq!(again.id, a.id, "{db}: a second click records nothing new");

        let retention = Retention {
            receipts: None,
            evidence: Some(30 * DAY),
            relay_records: 7 * DAY,
        };
        let dry = s.purge(&retention, now + 60 * DAY, true).await.unwrap();
        assert_eq!(dry.evidence.requests, 1, "{db}");
        let report = s.purge(&retention, now + 60 * DAY, false).await.unwrap();
        assert_eq!(report.evidence.requests, 1, "{db}");
        assert_eq!(s.request(a.id).await.unwrap().unwrap().email, None, "{db}");
    }
}
