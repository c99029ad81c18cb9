//! Data-subject requests through `/api/v1/requests`: deadlines, the order
//! of the steps, field errors, roles and the audit trail. Every test runs on
//! SQLite, and on PostgreSQL too when `VETO_TEST_POSTGRES_URL` is set.

mod api_support;

use api_support::{TestApp, apps, error_of};
use serde_json::{Value, json};
use veto_core::Role;

const JO: &str = "jo@example.com";

async fn dpo(app: &TestApp) -> String {
    app.key_for(Role::Dpo, "dana").await
}

async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, r) = app.post("/api/v1/requests", Some(key), &body).await;
    assert_eq!(status, 201, "{}: {r}", app.name());
    r
}

fn path(r: &Value, step: &str) -> String {
    format!("/api/v1/requests/{}{step}", r["id"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_checked_extended_and_answered_in_order_with_its_deadline() {
    for app in apps().await {
        let db = app.name();
        let key = dpo(&app).await;
        let contact = app.grant(JO, "news").await;
        let r = create(
            &app,
            &key,
            json!({"kind": "access", "email": JO, "via": "letter", "note": "letter dated 1 May",
                   "received_at": "2026-01-31T10:00:00Z"}),
        )
        .await;
        assert_eq!(r["status"], "open", "{db}: {r}");
        assert_eq!(r["article"], "Art 15", "{db}");
        assert_eq!(
            r["contact_id"], contact["contact_id"],
            "{db}: found by address"
        );
        assert_eq!(r["first_due_at"], "2026-02-28T23:59:59Z", "{db}: {r}");
        assert_eq!(r["due_on"], "2026-02-28", "{db}");
        assert!(r["days_left"].is_i64() && r["overdue"].is_boolean(), "{db}");

        let (status, got) = app.get_json(&path(&r, ""), &key).await;
        assert_eq!((status, &got["id"]), (200, &r["id"]), "{db}");

        // Done before the identity check: refused, naming the step.
        let (status, e) = app
            .post(
                &path(&r, "/answer"),
                Some(&key),
                &json!({"outcome": "done"}),
            )
            .await;
        assert_eq!(status, 409, "{db}: {e}");
        assert_eq!(
            error_of(&e),
            ("identity_not_checked".into(), Some("outcome".into())),
            "{db}"
        );

        let (status, e) = app
            .post(&path(&r, "/identity-checked"), Some(&key), &json!({}))
            .await;
        assert_eq!((status, error_of(&e).1), (422, Some("how".into())), "{db}");
        let (status, c) = app
            .post(
                &path(&r, "/identity-checked"),
                Some(&key),
                &json!({"how": "a reply from the address on file"}),
            )
            .await;
        assert_eq!(status, 200, "{db}: {c}");
        assert_eq!(c["status"], "identity_checked", "{db}");
        assert!(
            c["identity_checked_by"]
                .as_str()
                .unwrap()
                .starts_with("api-key:"),
            "{db}"
        );
        let (status, e) = app
            .post(
                &path(&r, "/identity-checked"),
                Some(&key),
                &json!({"how": "again"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&e).0),
            (409, "identity_already_checked".into()),
            "{db}"
        );

        // Received in January 2026: the first month is long gone.
        let (status, e) = app
            .post(
                &path(&r, "/extend"),
                Some(&key),
                &json!({"reason": "paper archive"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&e).0),
            (409, "deadline_passed".into()),
            "{db}: {e}"
        );

        let (status, e) = app
            .post(
                &path(&r, "/answer"),
                Some(&key),
                &json!({"outcome": "refused"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&e).1),
            (422, Some("reason".into())),
            "{db}"
        );
        let (status, e) = app
            .post(
                &path(&r, "/answer"),
                Some(&key),
                &json!({"outcome": "maybe"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&e).1),
            (422, Some("outcome".into())),
            "{db}"
        );
        let (status, a) = app
            .post(
                &path(&r, "/answer"),
                Some(&key),
                &json!({"outcome": "done"}),
            )
            .await;
        assert_eq!(status, 200, "{db}: {a}");
        assert_eq!(
            (&a["status"], &a["outcome"]),
            (&json!("answered"), &json!("done")),
            "{db}"
        );
        let (status, e) = app
            .post(
                &path(&r, "/answer"),
                Some(&key),
                &json!({"outcome": "done"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&e).0),
            (409, "already_answered".into()),
            "{db}"
        );

        // A fresh one can be extended, once.
        let fresh = create(
            &app,
            &key,
            json!({"kind": "portability", "email": "new@example.com", "via": "email"}),
        )
        .await;
        assert_eq!(fresh["contact_id"], Value::Null, "{db}");
        let (status, e) = app
            .post(&path(&fresh, "/extend"), Some(&key), &json!({}))
            .await;
        assert_eq!(
            (status, error_of(&e).1),
            (422, Some("reason".into())),
            "{db}"
        );
        let (status, e) = app
            .post(
                &path(&fresh, "/extend"),
                Some(&key),
                &json!({"reason": "x", "until": "soon"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&e).1),
            (422, Some("until".into())),
            "{db}"
        );
        let (status, x) = app
            .post(
                &path(&fresh, "/extend"),
                Some(&key),
                &json!({"reason": "many systems to search"}),
            )
            .await;
        assert_eq!(status, 200, "{db}: {x}");
        assert_eq!(x["due_at"], x["extended_due_at"], "{db}");
        assert!(x["days_left"].as_i64().unwrap() > 80, "{db}: {x}");
        let (status, e) = app
            .post(
                &path(&fresh, "/extend"),
                Some(&key),
                &json!({"reason": "more"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&e).0),
            (409, "already_extended".into()),
            "{db}"
        );

        // Lists: overdue, open, answered, due soon.
        let ids = |v: &Value| -> Vec<i64> {
            v["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect()
        };
        let late = create(
            &app,
            &key,
            json!({"kind": "objection", "email": "late@example.com", "via": "phone",
                                            "received_at": "2026-01-05T09:00:00Z"}),
        )
        .await;
        assert_eq!(late["overdue"], true, "{db}");
        assert!(late["days_left"].as_i64().unwrap() < 0, "{db}");
        let (_, v) = app.get_json("/api/v1/requests?status=overdue", &key).await;
        assert_eq!(ids(&v), [late["id"].as_i64().unwrap()], "{db}: {v}");
        let (_, v) = app.get_json("/api/v1/requests?status=open", &key).await;
        assert_eq!(
            ids(&v),
            [fresh["id"].as_i64().unwrap(), late["id"].as_i64().unwrap()],
            "{db}"
        );
        let (_, v) = app.get_json("/api/v1/requests?status=answered", &key).await;
        assert_eq!(ids(&v), [r["id"].as_i64().unwrap()], "{db}");
        let (_, v) = app
            .get_json("/api/v1/requests?due_within_days=7", &key)
            .await;
        assert_eq!(ids(&v), [late["id"].as_i64().unwrap()], "{db}");
        let (_, v) = app.get_json("/api/v1/requests?limit=2", &key).await;
        assert_eq!(ids(&v).len(), 2, "{db}");
        let cursor = v["next_cursor"].as_str().expect("more").to_owned();
        let (_, v) = app
            .get_json(&format!("/api/v1/requests?limit=2&cursor={cursor}"), &key)
            .await;
        assert_eq!(ids(&v), [late["id"].as_i64().unwrap()], "{db}");

        // Each change is in the staff audit trail, without the address.
        let admin = app.key_for(Role::Admin, "ada").await;
        let (_, audit) = app.get_json("/api/v1/audit?limit=500", &admin).await;
        let actions: Vec<&str> = audit["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["action"].as_str())
            .filter(|a| a.starts_with("requests."))
            .collect();
        assert_eq!(
            actions,
            [
                "requests.create",
                "requests.identity_checked",
                "requests.answer",
                "requests.create",
                "requests.extend",
                "requests.create"
            ],
            "{db}"
        );
        for a in audit["actions"].as_array().unwrap() {
            if a["action"].as_str().unwrap().starts_with("requests.") {
                assert!(
                    !a.to_string().contains(JO),
                    "{db}: no address in the trail: {a}"
                );
            }
        }
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_request_is_done_only_after_the_erasure() {
    for app in apps().await {
        let db = app.name();
        let key = dpo(&app).await;
        app.grant(JO, "news").await;
        let r = create(
            &app,
            &key,
            json!({"kind": "erasure", "email": JO, "via": "email"}),
        )
        .await;
        let (status, checked) = app
            .post(
                &path(&r, "/identity-checked"),
                Some(&key),
                &json!({"how": "replied"}),
            )
            .await;
        assert_eq!(status, 200, "{db}: {checked}");
        let (status, e) = app
            .post(
                &path(&r, "/answer"),
                Some(&key),
                &json!({"outcome": "done"}),
            )
            .await;
        assert_eq!(status, 409, "{db}: {e}");
        assert_eq!(
            error_of(&e),
            ("contact_not_erased".into(), Some("outcome".into())),
            "{db}"
        );
        let (status, _) = app
            .post("/api/v1/erasures", Some(&key), &json!({"email": JO}))
            .await;
        assert_eq!(status, 201, "{db}");
        let (_, got) = app.get_json(&path(&r, ""), &key).await;
        assert_eq!(
            got["email"],
            Value::Null,
            "{db}: the erasure blanked the address"
        );
        let (status, a) = app
            .post(
                &path(&r, "/answer"),
                Some(&key),
                &json!({"outcome": "done"}),
            )
            .await;
        assert_eq!(
            (status, &a["status"]),
            (200, &json!("answered")),
            "{db}: {a}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_names_its_field_and_roles_are_enforced() {
    for app in apps().await {
        let db = app.name();
        let key = dpo(&app).await;
        for (body, field) in [
            (json!({"email": JO, "via": "email"}), "kind"),
            (
                json!({"kind": "complaint", "email": JO, "via": "email"}),
                "kind",
            ),
            (json!({"kind": "access", "email": JO}), "via"),
            (
                json!({"kind": "access", "email": JO, "via": "pigeon"}),
                "via",
            ),
            (
                json!({"kind": "access", "email": "not an address", "via": "email"}),
                "email",
            ),
            (json!({"kind": "access", "via": "email"}), "email"),
            (
                json!({"kind": "access", "contact_id": 999999, "via": "email"}),
                "contact_id",
            ),
            (
                json!({"kind": "access", "email": JO, "via": "email", "received_at": "2999-01-01T00:00:00Z"}),
                "received_at",
            ),
            (
                json!({"kind": "access", "email": JO, "via": "email", "received_at": "yesterday"}),
                "received_at",
            ),
            (
                json!({"kind": "access", "email": JO, "via": "email", "nite": "x"}),
                "nite",
            ),
        ] {
            let (status, e) = app.post("/api/v1/requests", Some(&key), &body).await;
            assert_eq!(
                (status, error_of(&e).1),
                (422, Some(field.to_owned())),
                "{db}: {body} {e}"
            );
        }
        for (query, field) in [
            ("status=bogus", "status"),
            ("status=", "status"),
            ("due_within_days=", "due_within_days"),
            ("due_within_days=-1", "due_within_days"),
            ("due_within_days=400", "due_within_days"),
            ("due_within_days=3&status=answered", "due_within_days"),
            ("limit=0", "limit"),
        ] {
            let (status, e) = app
                .get_json(&format!("/api/v1/requests?{query}"), &key)
                .await;
            assert_eq!(
                (status, error_of(&e).1),
                (422, Some(field.to_owned())),
                "{db}: {query} {e}"
            );
        }
        for p in ["/api/v1/requests/999999", "/api/v1/requests/abc"] {
            let (status, _) = app.get_json(p, &key).await;
            assert_eq!(status, 404, "{db}: {p}");
        }
        let (status, _) = app
            .post(
                "/api/v1/requests/999999/answer",
                Some(&key),
                &json!({"outcome": "done"}),
            )
            .await;
        assert_eq!(status, 404, "{db}");

        // Admin may read, not act; a marketer may neither.
        let admin = app.key_for(Role::Admin, "ada").await;
        let marketer = app.key_for(Role::Marketer, "mo").await;
        let (status, _) = app.get_json("/api/v1/requests", &admin).await;
        assert_eq!(status, 200, "{db}");
        let body = json!({"kind": "access", "email": JO, "via": "email"});
        for k in [&admin, &marketer] {
            let (status, _) = app.post("/api/v1/requests", Some(k), &body).await;
            assert_eq!(status, 403, "{db}");
        }
        let (status, _) = app.get_json("/api/v1/requests", &marketer).await;
        assert_eq!(status, 403, "{db}");

        // Idempotency-Key: the same request once.
        let mut ids = vec![];
        for _ in 0..2 {
            let (status, r, _) = app
                .call(
                    "POST",
                    "/api/v1/requests",
                    Some(&key),
                    Some(&body),
                    &[("Idempotency-Key", "req-1")],
                )
                .await;
            assert_eq!(status, 201, "{db}: {r}");
            ids.push(r["id"].clone());
        }
        assert_eq!(ids[0], ids[1], "{db}");
        let (_, v) = app.get_json("/api/v1/requests", &key).await;
        assert_eq!(v["requests"].as_array().unwrap().len(), 1, "{db}");
        app.close().await;
    }
}
