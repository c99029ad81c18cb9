//! The admin UI's GDPR requests page over HTTP: the list with deadlines in
//! words and colour, recording a request, the identity check, an extension
//! and the answer, and who may do what. Every test runs on SQLite, and on
//! PostgreSQL too when `VETO_TEST_POSTGRES_URL` is set.

mod admin_support;
mod api_support;

use std::time::Duration;

use admin_support::sign_in;
use api_support::apps;
use veto_core::{Role, Timestamp};
use veto_store::{NewSubjectRequest, RequestFilter, RequestKind, RequestStatus, RequestVia};

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpo_records_checks_extends_and_answers_a_request_and_sees_the_deadlines() {
    for app in apps().await {
        let db = app.name();
        let dana = sign_in(&app, "dana", Role::Dpo).await;

        // One overdue and one due soon, recorded elsewhere.
        let now = Timestamp::now();
        for (email, ago) in [("late@example.com", 40), ("soon@example.com", 27)] {
            app.store
                .create_request(NewSubjectRequest {
                    kind: RequestKind::Access,
                    contact: None,
                    email: Some(api_support::email(email)),
                    via: RequestVia::Letter,
                    note: None,
                    received_at: now - ago * DAY,
                    actor: "cli".into(),
                })
                .await
                .expect("request");
        }
        let page = dana.get("/admin/requests").await;
        assert_eq!(page.status, 200, "{db}: {}", page.body);
        assert!(page.body.contains("GDPR requests"), "{db}");
        assert!(
            page.body.contains("badge bad\">overdue by"),
            "{db}: overdue in words and colour: {}",
            page.body
        );
        assert!(page.body.contains("badge warn\">due soon:"), "{db}");
        assert!(page.body.contains("late@example.com"), "{db}");

        // Record one through the form; bad input says what was wrong.
        let res = dana
            .post(
                "/admin/requests",
                &[
                    ("kind", "erasure"),
                    ("email", "not an address"),
                    ("via", "email"),
                ],
            )
            .await;
        let back = dana.follow(&res).await;
        assert!(
            back.body.contains("flash-error") && back.body.contains("Address"),
            "{db}: {}",
            back.body
        );
        let res = dana
            .post(
                "/admin/requests",
                &[
                    ("kind", "erasure"),
                    ("email", "jo@example.com"),
                    ("via", "phone"),
                    ("received_on", ""),
                    ("note", "called the shop"),
                ],
            )
            .await;
        assert_eq!(res.status, 303, "{db}: {}", res.body);
        let path = res.location().to_owned();
        let page = dana.follow(&res).await;
        assert!(
            page.body.contains("Recorded request"),
            "{db}: {}",
            page.body
        );
        assert!(page.body.contains("Record the identity check"), "{db}");
        assert!(page.body.contains("days left"), "{db}");
        let id: i64 = path.rsplit('/').next().unwrap().parse().unwrap();

        // Done before the check: refused, with the reason on the page.
        let res = dana
            .post(
                &format!("{path}/answer"),
                &[("outcome", "done"), ("reason", "")],
            )
            .await;
        let page = dana.follow(&res).await;
        assert!(
            page.body.contains("flash-error") && page.body.contains("identity"),
            "{db}: {}",
            page.body
        );
        let res = dana
            .post(&format!("{path}/identity-checked"), &[("how", "")])
            .await;
        assert!(dana.follow(&res).await.body.contains("flash-error"), "{db}");
        let res = dana
            .post(
                &format!("{path}/identity-checked"),
                &[("how", "called back on the number on file")],
            )
            .await;
        let page = dana.follow(&res).await;
        assert!(page.body.contains("was checked"), "{db}: {}", page.body);
        assert!(!page.body.contains("Record the identity check"), "{db}");

        let res = dana
            .post(
                &format!("{path}/extend"),
                &[("reason", "three systems to search"), ("until", "")],
            )
            .await;
        let page = dana.follow(&res).await;
        assert!(
            page.body.contains("Extended request"),
            "{db}: {}",
            page.body
        );
        assert!(
            !page.body.contains("Extend the deadline</button>"),
            "{db}: once only"
        );

        // An erasure is done only after the erasure.
        let res = dana
            .post(
                &format!("{path}/answer"),
                &[("outcome", "refused"), ("reason", "")],
            )
            .await;
        assert!(dana.follow(&res).await.body.contains("flash-error"), "{db}");
        app.grant("jo@example.com", "news").await;
        let r = app.store.request(id).await.unwrap().unwrap();
        assert_eq!(r.contact, None, "{db}: not a contact when it came in");
        let dpo_key = app.key_for(Role::Dpo, "dana-key").await;
        let (status, _) = app
            .post(
                "/api/v1/erasures",
                Some(&dpo_key),
                &serde_json::json!({"email": "jo@example.com"}),
            )
            .await;
        assert_eq!(status, 201, "{db}");
        let res = dana
            .post(
                &format!("{path}/answer"),
                &[("outcome", "done"), ("reason", "")],
            )
            .await;
        let page = dana.follow(&res).await;
        assert!(
            page.body.contains("is answered (done)"),
            "{db}: {}",
            page.body
        );
        assert!(page.body.contains("answered in time"), "{db}");
        let r = app.store.request(id).await.unwrap().unwrap();
        assert_eq!(r.status(), RequestStatus::Answered, "{db}");
        assert_eq!(r.email, None, "{db}");
        assert_eq!(r.answer.unwrap().by, "user:dana", "{db}");

        let actions: Vec<String> = app
            .store
            .staff_actions(None, 500)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.action.starts_with("requests.") && a.actor == "user:dana")
            .map(|a| a.action)
            .collect();
        assert_eq!(
            actions,
            [
                "requests.create",
                "requests.identity_checked",
                "requests.extend",
                "requests.answer"
            ],
            "{db}"
        );
        let open = app
            .store
            .requests(RequestFilter::Overdue, Timestamp::now(), None, 10)
            .await
            .unwrap();
        assert_eq!(open.len(), 1, "{db}");
        let page = dana.get("/admin/requests?status=answered").await;
        assert!(
            page.body.contains(&format!("Request {id}: erasure")),
            "{db}"
        );
        assert_eq!(
            dana.get("/admin/requests?status=bogus").await.status,
            400,
            "{db}"
        );
        assert_eq!(dana.get("/admin/requests/999999").await.status, 404, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_may_read_but_not_act_and_a_marketer_sees_nothing() {
    for app in apps().await {
        let db = app.name();
        let r = app
            .store
            .create_request(NewSubjectRequest {
                kind: RequestKind::Access,
                contact: None,
                email: Some(api_support::email("al@example.com")),
                via: RequestVia::Email,
                note: None,
                received_at: Timestamp::now(),
                actor: "cli".into(),
            })
            .await
            .unwrap();
        let ada = sign_in(&app, "ada", Role::Admin).await;
        let page = ada.get("/admin/requests").await;
        assert_eq!(page.status, 200, "{db}");
        assert!(page.body.contains("al@example.com"), "{db}");
        assert!(!page.body.contains("Record the request"), "{db}: no form");
        let page = ada.get(&format!("/admin/requests/{}", r.id)).await;
        assert_eq!(page.status, 200, "{db}");
        assert!(
            !page.body.contains("action=\"/admin/requests/"),
            "{db}: no forms"
        );
        let res = ada
            .post(
                &format!("/admin/requests/{}/identity-checked", r.id),
                &[("how", "x")],
            )
            .await;
        assert_eq!(res.status, 403, "{db}");

        let mo = sign_in(&app, "mo", Role::Marketer).await;
        assert_eq!(mo.get("/admin/requests").await.status, 403, "{db}");
        assert!(
            !mo.get("/admin").await.body.contains("/admin/requests"),
            "{db}: not in the menu"
        );

        // A form without this session's CSRF token does nothing.
        let dana = sign_in(&app, "dana", Role::Dpo).await;
        let res = dana
            .post_exactly(
                &format!("/admin/requests/{}/identity-checked", r.id),
                &[("how", "x"), ("_csrf", "forged")],
            )
            .await;
        assert_eq!(res.status, 403, "{db}");
        assert!(
            app.store
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .identity
                .is_none(),
            "{db}"
        );
        app.close().await;
    }
}
