//! The admin API from the outside: roles on every endpoint, topics,
//! wordings, contacts, events, suppressions, receipts, keys, users, the
//! staff audit trail, idempotency keys, pagination and errors. Every test
//! runs on SQLite, and on PostgreSQL too when `VETO_TEST_POSTGRES_URL` is set.

mod api_support;

use api_support::{TestApp, apps, email, error_of, reason_code};
use serde_json::{Value, json};
use veto_core::{Role, Timestamp};
use veto_store::NewReceipt;

const JO: &str = "jo@example.com";

/// One key of every role, each with its own holder.
async fn role_keys(app: &TestApp) -> Vec<(Role, String)> {
    let mut keys = vec![];
    for &role in Role::ALL {
        keys.push((role, app.key_for(role, &format!("{role}-holder")).await));
    }
    keys
}

async fn admin(app: &TestApp) -> String {
    app.key_for(Role::Admin, "ada").await
}

async fn dpo(app: &TestApp) -> String {
    app.key_for(Role::Dpo, "dana").await
}

// ---- roles ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_is_403_for_exactly_the_roles_the_table_leaves_out() {
    for app in apps().await {
        let db = app.name();
        let keys = role_keys(&app).await;
        for rule in veto_web::ROLE_TABLE {
            // Ids that name nothing: an allowed call changes nothing here.
            let path = format!(
                "/api/v1{}",
                rule.path
                    .replace("{id}", "999999")
                    .replace("{key}", "news")
                    .replace("{action}", "start")
            );
            let body = (rule.method != "GET" && rule.method != "DELETE").then(|| json!({}));
            for (role, key) in &keys {
                let (status, res, _) = app
                    .call(rule.method, &path, Some(key), body.as_ref(), &[])
                    .await;
                let allowed = rule.roles.contains(role);
                if allowed {
                    assert!(
                        status != 403 && status != 401,
                        "{db}: {} {path} with a {role} key: {status} {res}",
                        rule.method
                    );
                } else {
                    assert_eq!(
                        status, 403,
                        "{db}: {} {path} with a {role} key: {res}",
                        rule.method
                    );
                    assert_eq!(error_of(&res).0, "forbidden", "{db}");
                }
            }
            // Without a key: 401 everywhere.
            let (status, res, headers) =
                app.call(rule.method, &path, None, body.as_ref(), &[]).await;
            assert_eq!(
                status, 401,
                "{db}: {} {path} without a key: {res}",
                rule.method
            );
            assert!(headers.contains_key("www-authenticate"), "{db}");
        }
        app.close().await;
    }
}

#[test]
fn docs_roles_md_shows_the_table_the_server_enforces() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ROLES.md"))
        .expect("docs/ROLES.md");
    let table = veto_web::roles_markdown();
    assert!(
        doc.contains(&table),
        "docs/ROLES.md must contain the role table exactly as the server enforces it:\n{table}"
    );
    // And no other endpoint rows that the server does not know.
    let rows = doc.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(
        rows,
        veto_web::ROLE_TABLE.len(),
        "docs/ROLES.md has rows the table does not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_description_is_public_and_covers_exactly_the_role_table() {
    for app in apps().await {
        let db = app.name();
        let (status, doc, _) = app
            .call("GET", "/api/v1/openapi.json", None, None, &[])
            .await;
        assert_eq!(status, 200, "{db}");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
            "{db}"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer",
            "{db}"
        );
        let mut described = vec![];
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                if path != "/api/v1/openapi.json" {
                    described.push(format!("{} {path}", method.to_uppercase()));
                    assert!(
                        ops[method]["security"].is_array(),
                        "{db}: {method} {path} names its security"
                    );
                }
            }
        }
        let mut table: Vec<String> = veto_web::ROLE_TABLE
            .iter()
            .map(|r| format!("{} /api/v1{}", r.method, r.path))
            .collect();
        described.sort();
        table.sort();
        assert_eq!(
            described, table,
            "{db}: every endpoint described, and only those"
        );
        app.close().await;
    }
}

// ---- topics, wordings, service types ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_are_created_listed_in_pages_and_described_and_each_change_is_audited() {
    for app in apps().await {
        let db = app.name();
        let admin = admin(&app).await;
        let body =
            json!({"key": "boots", "name": "Boot offers", "description": "Boots, now and then."});
        let (status, res) = app.post("/api/v1/topics", Some(&app.marketer), &body).await;
        assert_eq!(status, 201, "{db}: {res}");
        assert_eq!(res["topic"]["key"], "boots", "{db}");
        let (status, res) = app.post("/api/v1/topics", Some(&app.marketer), &body).await;
        assert_eq!(
            (status, error_of(&res)),
            (409, ("already_exists".into(), Some("key".into()))),
            "{db}"
        );

        // Four topics, two a page.
        let (status, page1) = app.get_json("/api/v1/topics?limit=2", &app.viewer).await;
        assert_eq!(status, 200, "{db}: {page1}");
        assert_eq!(page1["topics"].as_array().map(Vec::len), Some(2), "{db}");
        let cursor = page1["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_owned();
        let (_, page2) = app
            .get_json(
                &format!("/api/v1/topics?limit=2&cursor={cursor}"),
                &app.viewer,
            )
            .await;
        assert_eq!(page2["topics"].as_array().map(Vec::len), Some(2), "{db}");
        assert!(page2["next_cursor"].is_null(), "{db}: {page2}");
        let keys: Vec<&str> = [&page1, &page2]
            .iter()
            .flat_map(|p| p["topics"].as_array().into_iter().flatten())
            .filter_map(|t| t["key"].as_str())
            .collect();
        assert_eq!(keys.len(), 4, "{db}: {keys:?}");
        assert!(keys.contains(&"boots"), "{db}");

        let (status, res, _) = app
            .call(
                "PATCH",
                "/api/v1/topics/boots",
                Some(&app.marketer),
                Some(&json!({"description": "Boots, monthly."})),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{db}: {res}");
        assert_eq!(
            app.topic("boots").await.description,
            "Boots, monthly.",
            "{db}"
        );

        let (status, res) = app.get_json("/api/v1/audit", &admin).await;
        assert_eq!(status, 200, "{db}: {res}");
        let actions: Vec<(String, String, Value)> = res["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| {
                (
                    a["action"].as_str().unwrap().to_owned(),
                    a["target"].as_str().unwrap_or("").to_owned(),
                    a["actor"].clone(),
                )
            })
            .collect();
        let marketer_prefix = &app.marketer[..13];
        assert_eq!(
            actions
                .iter()
                .map(|(a, t, _)| (a.as_str(), t.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("topics.create", "topic:boots"),
                ("topics.update", "topic:boots")
            ],
            "{db}: the refused duplicate and the reads are not actions"
        );
        assert!(
            actions
                .iter()
                .all(|(_, _, who)| who == &json!(format!("api-key:{marketer_prefix}"))),
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wordings_and_service_types_are_listed_and_the_same_text_keeps_its_id() {
    for app in apps().await {
        let db = app.name();
        let (status, res) = app
            .post(
                "/api/v1/wordings",
                Some(&app.marketer),
                &json!({"text": "Yes, send me boot offers."}),
            )
            .await;
        assert_eq!(status, 201, "{db}: {res}");
        let id = res["wording"]["id"].as_i64().expect("id");
        let (status, again) = app
            .post(
                "/api/v1/wordings",
                Some(&app.marketer),
                &json!({"text": "Yes, send me boot offers."}),
            )
            .await;
        assert_eq!(
            (status, again["wording"]["id"].as_i64()),
            (200, Some(id)),
            "{db}"
        );
        let (_, list) = app.get_json("/api/v1/wordings", &app.viewer).await;
        let ids: Vec<i64> = list["wordings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w["id"].as_i64())
            .collect();
        assert_eq!(ids, vec![app.wording, id], "{db}");
        let (status, one) = app
            .get_json(&format!("/api/v1/wordings/{id}"), &app.viewer)
            .await;
        assert_eq!(
            (status, one["wording"]["text"].as_str()),
            (200, Some("Yes, send me boot offers.")),
            "{db}"
        );
        let (_, types) = app.get_json("/api/v1/service-types", &app.viewer).await;
        assert_eq!(
            types,
            json!({"service_types": [{"key": "billing", "description": "Bills and receipts"}]}),
            "{db}"
        );
        app.close().await;
    }
}

// ---- contacts, events, receipts ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contacts_are_upserted_searched_and_shown_with_their_timeline() {
    for app in apps().await {
        let db = app.name();
        let (status, res) = app
            .post("/api/v1/contacts", Some(&app.marketer), &json!({"email": "Jo@Example.com", "name": "Jo", "jurisdiction": "UK", "attributes": {"city": "Cardiff"}}))
            .await;
        assert_eq!(
            (status, &res["created"]),
            (201, &json!(true)),
            "{db}: {res}"
        );
        let id = res["contact"]["id"].as_i64().expect("id");
        let (status, res) = app
            .post(
                "/api/v1/contacts",
                Some(&app.marketer),
                &json!({"email": JO, "name": "Joanna"}),
            )
            .await;
        assert_eq!(
            (status, &res["created"], &res["contact"]["name"]),
            (200, &json!(false), &json!("Joanna")),
            "{db}: {res}"
        );
        assert_eq!(
            res["contact"]["attributes"]["city"], "Cardiff",
            "{db}: kept"
        );
        assert_eq!(
            app.count_events().await,
            0,
            "{db}: an upsert records no consent"
        );

        app.grant("al@example.com", "news").await;
        let (_, found) = app.get_json("/api/v1/contacts?q=JO%40", &app.viewer).await;
        let emails: Vec<&str> = found["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["email"].as_str())
            .collect();
        assert_eq!(emails, vec!["Jo@example.com"], "{db}: {found}");
        let (_, none) = app.get_json("/api/v1/contacts?q=%25", &app.viewer).await;
        assert_eq!(
            none["contacts"],
            json!([]),
            "{db}: % is a character, not a wildcard"
        );

        app.grant(JO, "news").await;
        app.withdraw(JO, "news").await;
        app.store
            .record_receipts(vec![receipt("<m1@shop.example>", id, false)])
            .await
            .expect("receipt");
        let (status, tl) = app
            .get_json(&format!("/api/v1/contacts/{id}/timeline"), &app.viewer)
            .await;
        assert_eq!(status, 200, "{db}: {tl}");
        let kinds: Vec<&str> = tl["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert_eq!(kinds, vec!["grant", "withdraw"], "{db}");
        assert_eq!(tl["receipts"][0]["message_id"], "<m1@shop.example>", "{db}");
        assert_eq!(tl["receipts"][0]["allowed"], false, "{db}");

        let (status, r) = app
            .get_json(
                "/api/v1/receipts?message=%3Cm1%40shop.example%3E",
                &app.viewer,
            )
            .await;
        assert_eq!(
            (status, r["receipts"].as_array().map(Vec::len)),
            (200, Some(1)),
            "{db}: {r}"
        );
        let (status, r) = app
            .get_json(&format!("/api/v1/receipts?contact={id}"), &app.viewer)
            .await;
        assert_eq!(
            (status, &r["receipts"][0]["rule"]),
            (200, &json!("GDPR-7")),
            "{db}: {r}"
        );
        let (status, r) = app.get_json("/api/v1/receipts", &app.viewer).await;
        assert_eq!(
            (status, error_of(&r).0.as_str()),
            (422, "missing_field"),
            "{db}"
        );

        let (status, r) = app.get_json("/api/v1/contacts/424242", &app.viewer).await;
        assert_eq!(
            (status, error_of(&r).0.as_str()),
            (404, "not_found"),
            "{db}"
        );
        app.close().await;
    }
}

fn receipt(message: &str, contact: i64, allowed: bool) -> NewReceipt {
    NewReceipt {
        message_id: message.into(),
        contact: Some(contact),
        recipient: JO.into(),
        subject: Some("Spring sale".into()),
        content_hash: None,
        template_version: None,
        class: "news".into(),
        channel: "email".into(),
        allowed,
        rule: "GDPR-7".into(),
        reason: Some("withdrawn".into()),
        event: None,
        checked_at: Timestamp::now().as_microsecond(),
        outcome: None,
        relayed_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erased_address_is_not_brought_back_by_an_upsert() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        let (status, res) = app
            .post(
                "/api/v1/erasures",
                Some(&dpo(&app).await),
                &json!({"email": JO}),
            )
            .await;
        assert_eq!((status, &res["erased"]), (201, &json!(true)), "{db}: {res}");
        let (status, res) = app
            .post(
                "/api/v1/contacts",
                Some(&app.marketer),
                &json!({"email": JO, "name": "Jo"}),
            )
            .await;
        assert_eq!(status, 409, "{db}: {res}");
        assert_eq!(
            error_of(&res),
            ("address_erased".into(), Some("email".into())),
            "{db}"
        );
        assert!(
            app.store.find_contact(&email(JO)).await.unwrap().is_none(),
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_appended_by_staff_but_a_regrant_after_an_opt_out_is_refused_with_the_reason() {
    for app in apps().await {
        let db = app.name();
        let grant = json!({"email": JO, "kind": "grant", "topic": "news", "wording": app.wording});
        let (status, res) = app
            .post("/api/v1/events", Some(&app.marketer), &grant)
            .await;
        assert_eq!(status, 201, "{db}: {res}");
        let contact = res["contact_id"].as_i64().unwrap();
        let (status, res) = app
            .post(
                "/api/v1/events",
                Some(&app.marketer),
                &json!({"email": JO, "kind": "frequency", "max": 2, "per": "month"}),
            )
            .await;
        assert_eq!(status, 201, "{db}: {res}");
        app.withdraw(JO, "news").await;
        let before = app.count_events().await;

        for key in [&app.marketer, &admin(&app).await, &dpo(&app).await] {
            let (status, res) = app.post("/api/v1/events", Some(key), &grant).await;
            assert_eq!(status, 409, "{db}: {res}");
            assert_eq!(
                error_of(&res),
                ("only_the_person_can_regrant".into(), Some("action".into())),
                "{db}"
            );
            let message = res["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("withdrew from Product news") && message.contains("GDPR-7"),
                "{db}: {message}"
            );
        }
        assert_eq!(app.count_events().await, before, "{db}: nothing recorded");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "withdrawn",
            "{db}"
        );

        let (status, res) = app
            .get_json(
                &format!("/api/v1/events?contact={contact}&limit=2"),
                &app.viewer,
            )
            .await;
        assert_eq!(status, 200, "{db}: {res}");
        let kinds: Vec<&str> = res["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert_eq!(kinds, vec!["grant", "frequency"], "{db}");
        assert_eq!(res["events"][0]["source"], "admin", "{db}");
        assert!(res["next_cursor"].is_string(), "{db}");

        let (status, res) = app
            .post(
                "/api/v1/events",
                Some(&app.marketer),
                &json!({"email": JO, "kind": "grant", "topic": "news"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&res)),
            (422, ("missing_field".into(), Some("wording".into()))),
            "{db}"
        );
        let (status, res) = app
            .post(
                "/api/v1/events",
                Some(&app.marketer),
                &json!({"email": JO, "kind": "object", "until": "2030-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&res)),
            (422, ("not_applicable".into(), Some("until".into()))),
            "{db}"
        );
        app.close().await;
    }
}

// ---- suppressions -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_dpo_removes_only_a_hard_bounce_and_the_person_can_be_mailed_again() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        app.grant("al@example.com", "news").await;
        let dpo = dpo(&app).await;
        let admin = admin(&app).await;
        for (who, kind) in [(JO, "hard_bounce"), ("al@example.com", "complaint")] {
            let (status, res) = app
                .post(
                    "/api/v1/suppressions",
                    Some(&app.marketer),
                    &json!({"email": who, "kind": kind}),
                )
                .await;
            assert_eq!(status, 201, "{db}: {res}");
        }
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "hard_bounced",
            "{db}"
        );
        let (_, list) = app.get_json("/api/v1/suppressions", &app.viewer).await;
        let entries = list["suppressions"].as_array().expect("list").clone();
        let find = |kind: &str| {
            entries
                .iter()
                .find(|e| e["kind"] == kind)
                .cloned()
                .unwrap_or_else(|| panic!("{db}: no {kind}: {list}"))
        };
        let bounce = find("hard_bounce");
        let complaint = find("complaint");
        assert_eq!(
            (&bounce["removable"], &complaint["removable"]),
            (&json!(true), &json!(false)),
            "{db}"
        );

        // The complaint stays, for every key.
        for key in [&dpo, &admin] {
            let (status, res, _) = app
                .call(
                    "DELETE",
                    &format!("/api/v1/suppressions/{}", complaint["id"]),
                    Some(key),
                    None,
                    &[],
                )
                .await;
            assert!(status == 409 || status == 403, "{db}: {res}");
        }
        let (status, res, _) = app
            .call(
                "DELETE",
                &format!("/api/v1/suppressions/{}", complaint["id"]),
                Some(&dpo),
                None,
                &[],
            )
            .await;
        assert_eq!(
            (status, error_of(&res).0.as_str()),
            (409, "not_removable"),
            "{db}"
        );
        assert!(
            res["error"]["message"]
                .as_str()
                .unwrap()
                .contains("a spam complaint"),
            "{db}"
        );
        // An admin may not remove even a bounce.
        let (status, _, _) = app
            .call(
                "DELETE",
                &format!("/api/v1/suppressions/{}", bounce["id"]),
                Some(&admin),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 403, "{db}");
        let (status, res, _) = app
            .call(
                "DELETE",
                &format!("/api/v1/suppressions/{}", bounce["id"]),
                Some(&dpo),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 200, "{db}: {res}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}: the bounce no longer stops mail"
        );
        let last = app.events(JO).await.pop().unwrap();
        assert_eq!(last.event.kind, veto_core::EventKind::BounceCleared, "{db}");
        // Taken out once: a second time names nothing.
        let (status, _, _) = app
            .call(
                "DELETE",
                &format!("/api/v1/suppressions/{}", bounce["id"]),
                Some(&dpo),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 404, "{db}");
        app.close().await;
    }
}

// ---- keys, users, audit -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_is_shown_once_listed_without_its_secret_and_revoked_at_once() {
    for app in apps().await {
        let db = app.name();
        let admin = admin(&app).await;
        let (status, res) = app
            .post(
                "/api/v1/keys",
                Some(&admin),
                &json!({"role": "viewer", "owner": "Vic"}),
            )
            .await;
        assert_eq!(status, 201, "{db}: {res}");
        let secret = res["key"].as_str().expect("key").to_owned();
        let id = res["api_key"]["id"].as_i64().unwrap();
        let (status, _) = app.get_json("/api/v1/topics", &secret).await;
        assert_eq!(status, 200, "{db}: the new key works");

        let (status, list, _) = app
            .call("GET", "/api/v1/keys?limit=500", Some(&admin), None, &[])
            .await;
        assert_eq!(status, 200, "{db}");
        assert!(
            !list.to_string().contains(&secret[13..]),
            "{db}: no secret listed"
        );
        assert!(
            list["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["id"] == id && k["owner"] == "Vic"),
            "{db}"
        );

        let (status, res, _) = app
            .call(
                "DELETE",
                &format!("/api/v1/keys/{id}"),
                Some(&admin),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 200, "{db}: {res}");
        assert!(res["api_key"]["revoked_at"].is_string(), "{db}");
        let (status, res) = app.get_json("/api/v1/topics", &secret).await;
        assert_eq!(
            (status, error_of(&res).0.as_str()),
            (401, "unauthorized"),
            "{db}"
        );
        let own = app.store.api_key(&admin).await.unwrap().unwrap().id;
        let (status, _, _) = app
            .call(
                "DELETE",
                &format!("/api/v1/keys/{own}"),
                Some(&admin),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 409, "{db}: a key cannot revoke itself");

        let (status, res) = app
            .post("/api/v1/keys", Some(&admin), &json!({"role": "owner"}))
            .await;
        assert_eq!(
            (status, error_of(&res)),
            (422, ("invalid_value".into(), Some("role".into()))),
            "{db}"
        );
        let (_, audit) = app.get_json("/api/v1/audit", &admin).await;
        let text = audit.to_string();
        assert!(
            !text.contains(&secret[13..]),
            "{db}: the trail holds no secret"
        );
        assert!(
            text.contains("keys.create") && text.contains("keys.revoke"),
            "{db}: {text}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_are_added_with_a_hashed_password_listed_and_disabled() {
    for app in apps().await {
        let db = app.name();
        let admin = admin(&app).await;
        let (status, res) = app
            .post(
                "/api/v1/users",
                Some(&admin),
                &json!({"name": "dana", "role": "dpo", "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, 201, "{db}: {res}");
        assert!(!res.to_string().contains("correct horse"), "{db}");
        let id = res["user"]["id"].as_i64().unwrap();
        let (status, res) = app
            .post(
                "/api/v1/users",
                Some(&admin),
                &json!({"name": "dana", "role": "dpo", "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&res).0.as_str()),
            (409, "already_exists"),
            "{db}"
        );
        let (status, res) = app
            .post(
                "/api/v1/users",
                Some(&admin),
                &json!({"name": "eve", "role": "viewer", "password": "short"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&res)),
            (422, ("too_short".into(), Some("password".into()))),
            "{db}"
        );

        let ok = app
            .store
            .verify_user_password("dana", "correct horse battery")
            .await
            .unwrap();
        assert_eq!(ok.map(|u| u.role), Some(Role::Dpo), "{db}");
        let (status, res, _) = app
            .call(
                "PATCH",
                &format!("/api/v1/users/{id}"),
                Some(&admin),
                Some(&json!({"disabled": true})),
                &[],
            )
            .await;
        assert_eq!(
            (status, &res["user"]["disabled"]),
            (200, &json!(true)),
            "{db}: {res}"
        );
        assert!(
            app.store
                .verify_user_password("dana", "correct horse battery")
                .await
                .unwrap()
                .is_none(),
            "{db}"
        );
        let (_, list) = app.get_json("/api/v1/users", &admin).await;
        assert_eq!(list["users"][0]["name"], "dana", "{db}");
        assert!(list["users"][0].get("password_hash").is_none(), "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_trail_pages_and_verifies_and_names_an_edited_entry() {
    for app in apps().await {
        let db = app.name();
        let admin = admin(&app).await;
        for key in ["a", "b", "c"] {
            let (status, _) = app
                .post(
                    "/api/v1/topics",
                    Some(&admin),
                    &json!({"key": key, "name": key, "description": "x"}),
                )
                .await;
            assert_eq!(status, 201, "{db}");
        }
        let (_, page) = app.get_json("/api/v1/audit?limit=2", &admin).await;
        assert_eq!(page["actions"].as_array().map(Vec::len), Some(2), "{db}");
        let (_, rest) = app
            .get_json(
                &format!(
                    "/api/v1/audit?cursor={}",
                    page["next_cursor"].as_str().unwrap()
                ),
                &admin,
            )
            .await;
        assert_eq!(rest["actions"][0]["target"], "topic:c", "{db}: {rest}");
        let (status, v) = app
            .post("/api/v1/audit/verify", Some(&app.viewer), &json!({}))
            .await;
        assert_eq!(
            (status, &v["ok"], &v["staff_actions"]),
            (200, &json!(true), &json!(3)),
            "{db}: {v}"
        );
        app.close().await;
    }
}

// ---- idempotency, pagination, errors -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    for app in apps().await {
        let db = app.name();
        let body = json!({"key": "socks", "name": "Socks", "description": "Socks."});
        let key = [("Idempotency-Key", "7c1d-socks")];
        let (s1, r1, h1) = app
            .call(
                "POST",
                "/api/v1/topics",
                Some(&app.marketer),
                Some(&body),
                &key,
            )
            .await;
        let (s2, r2, h2) = app
            .call(
                "POST",
                "/api/v1/topics",
                Some(&app.marketer),
                Some(&body),
                &key,
            )
            .await;
        assert_eq!((s1, s2), (201, 201), "{db}: {r2}");
        assert_eq!(r1, r2, "{db}");
        assert!(
            !h1.contains_key("idempotent-replayed") && h2.contains_key("idempotent-replayed"),
            "{db}"
        );
        let (_, audit) = app.get_json("/api/v1/audit", &admin(&app).await).await;
        assert_eq!(
            audit["actions"].as_array().map(Vec::len),
            Some(1),
            "{db}: created and audited once"
        );

        let other = json!({"key": "hats", "name": "Hats", "description": "Hats."});
        let (status, res, _) = app
            .call(
                "POST",
                "/api/v1/topics",
                Some(&app.marketer),
                Some(&other),
                &key,
            )
            .await;
        assert_eq!(
            (status, error_of(&res)),
            (
                422,
                (
                    "idempotency_key_reused".into(),
                    Some("Idempotency-Key".into())
                )
            ),
            "{db}"
        );
        assert!(
            app.store
                .topic(&veto_core::TopicKey::parse("hats").unwrap())
                .await
                .unwrap()
                .is_none(),
            "{db}"
        );

        // Another key's same Idempotency-Key is its own.
        let (status, _, _) = app
            .call(
                "POST",
                "/api/v1/topics",
                Some(&admin(&app).await),
                Some(&other),
                &key,
            )
            .await;
        assert_eq!(status, 201, "{db}");

        // A refused request keeps nothing: the same key may be retried.
        let bad = json!({"key": "Bad Key!", "name": "x", "description": "x"});
        let retry = [("Idempotency-Key", "retry-me")];
        let (status, _, _) = app
            .call(
                "POST",
                "/api/v1/topics",
                Some(&app.marketer),
                Some(&bad),
                &retry,
            )
            .await;
        assert_eq!(status, 422, "{db}");
        let good = json!({"key": "gloves", "name": "Gloves", "description": "Gloves."});
        let (status, _, _) = app
            .call(
                "POST",
                "/api/v1/topics",
                Some(&app.marketer),
                Some(&good),
                &retry,
            )
            .await;
        assert_eq!(status, 201, "{db}");

        // Held in the store, not in this process: a restarted node replays too.
        let caller = format!(
            "key:{}",
            app.store.api_key(&app.marketer).await.unwrap().unwrap().id
        );
        let claim = app
            .store
            .claim_idempotency(&caller, "7c1d-socks", &[0u8; 32])
            .await
            .unwrap();
        assert_eq!(claim, veto_store::IdempotencyClaim::Mismatch, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_paging_bad_bodies_and_wrong_methods_get_the_one_error_shape() {
    for app in apps().await {
        let db = app.name();
        for (path, field) in [
            ("/api/v1/topics?limit=0", "limit"),
            ("/api/v1/topics?limit=501", "limit"),
            ("/api/v1/topics?limit=ten", "limit"),
            ("/api/v1/topics?cursor=nonsense", "cursor"),
        ] {
            let (status, res) = app.get_json(path, &app.viewer).await;
            assert_eq!(
                (status, error_of(&res).1.as_deref()),
                (422, Some(field)),
                "{db}: {path}: {res}"
            );
        }
        let (status, res, headers) = app
            .call("PUT", "/api/v1/topics", Some(&app.viewer), None, &[])
            .await;
        assert_eq!(
            (status, error_of(&res).0.as_str()),
            (405, "method_not_allowed"),
            "{db}"
        );
        assert!(headers.contains_key("allow"), "{db}");
        let (status, res) = app
            .post_raw("/api/v1/topics", &app.marketer, "text/plain", "{}")
            .await;
        assert_eq!(
            (status, error_of(&res).0.as_str()),
            (415, "unsupported_media_type"),
            "{db}"
        );
        let (status, res) = app
            .post_raw("/api/v1/topics", &app.marketer, "application/json", "{")
            .await;
        assert_eq!(
            (status, error_of(&res).0.as_str()),
            (400, "malformed_json"),
            "{db}"
        );
        let (status, res) = app
            .post(
                "/api/v1/topics",
                Some(&app.marketer),
                &json!({"key": "x", "nme": "x"}),
            )
            .await;
        assert_eq!(
            (status, error_of(&res)),
            (422, ("unknown_field".into(), Some("nme".into()))),
            "{db}"
        );
        let (status, res) = app.get_json("/api/v1/wordings/abc", &app.viewer).await;
        assert_eq!(
            (status, error_of(&res).0.as_str()),
            (404, "not_found"),
            "{db}"
        );
        app.close().await;
    }
}

// ---- GDPR ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpo_exports_as_veto_export_does_and_erases_as_veto_erase_does() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        let dpo = dpo(&app).await;
        let id = app
            .store
            .find_contact(&email(JO))
            .await
            .unwrap()
            .unwrap()
            .id;
        let (status, export) = app
            .get_json(&format!("/api/v1/contacts/{id}/export"), &dpo)
            .await;
        assert_eq!(status, 200, "{db}: {export}");
        let mut expected = veto_store::export::person(&app.store, &email(JO), "Example Shop")
            .await
            .unwrap()
            .unwrap();
        expected["exported_at"] = export["exported_at"].clone();
        assert_eq!(export, expected, "{db}");

        let (status, res) = app
            .post("/api/v1/erasures", Some(&dpo), &json!({"email": JO}))
            .await;
        assert_eq!((status, &res["erased"]), (201, &json!(true)), "{db}: {res}");
        assert!(
            app.store.find_contact(&email(JO)).await.unwrap().is_none(),
            "{db}"
        );
        assert!(
            app.store.is_suppressed(&email(JO)).await.unwrap().is_some(),
            "{db}"
        );
        let (status, res) = app
            .post("/api/v1/erasures", Some(&dpo), &json!({"email": JO}))
            .await;
        assert_eq!(
            (status, &res["erased"]),
            (200, &json!(false)),
            "{db}: again: {res}"
        );
        let (status, _) = app
            .get_json(&format!("/api/v1/contacts/{id}/export"), &dpo)
            .await;
        assert_eq!(status, 410, "{db}: nothing left to export");
        let (_, audit) = app.get_json("/api/v1/audit", &admin(&app).await).await;
        assert!(
            !audit.to_string().contains(JO),
            "{db}: the trail names no erased address"
        );
        app.close().await;
    }
}

// ---- webhooks ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_deliveries_are_listed_by_status_and_an_admin_retries_a_failed_one() {
    use veto_store::{AttemptOutcome, WebhookEndpoint};
    for app in apps().await {
        let db = app.name();
        app.store
            .set_webhook_endpoints(vec![WebhookEndpoint::new("crm")]);
        app.grant(JO, "news").await;
        app.withdraw(JO, "news").await;
        app.withdraw("kim@example.com", "news").await;

        let (status, page) = app
            .get_json(
                "/api/v1/webhooks/deliveries?status=pending&limit=2",
                &app.viewer,
            )
            .await;
        assert_eq!(status, 200, "{db}: {page}");
        let rows = page["deliveries"].as_array().expect("deliveries");
        assert_eq!(rows.len(), 2, "{db}: {page}");
        assert_eq!(rows[0]["kind"], "grant", "{db}");
        assert_eq!(rows[1]["kind"], "withdraw", "{db}");
        assert_eq!(rows[1]["endpoint"], "crm", "{db}");
        assert_eq!(rows[1]["payload"]["email"], JO, "{db}");
        assert_eq!(rows[1]["payload"]["topic"], "news", "{db}");
        assert_eq!(rows[1]["payload"]["event_id"], rows[1]["event_id"], "{db}");
        let cursor = page["next_cursor"].as_str().expect("a next page");
        let (_, rest) = app
            .get_json(
                &format!("/api/v1/webhooks/deliveries?status=pending&cursor={cursor}"),
                &app.viewer,
            )
            .await;
        assert_eq!(rest["deliveries"].as_array().map(Vec::len), Some(1), "{db}");
        assert!(rest["next_cursor"].is_null(), "{db}");

        // One runs out of retries (as the worker records it).
        let claimed = app
            .store
            .claim_webhook_deliveries("n", 1, Timestamp::now(), std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let id = claimed[0].id;
        app.store
            .finish_webhook_attempt(
                id,
                "n",
                AttemptOutcome::GaveUp {
                    status: Some(503),
                    error: "the receiver answered 503".into(),
                },
                Timestamp::now(),
            )
            .await
            .unwrap();
        let (_, failed) = app
            .get_json("/api/v1/webhooks/deliveries?status=failed", &app.viewer)
            .await;
        let failed = failed["deliveries"].as_array().expect("deliveries").clone();
        assert_eq!(failed.len(), 1, "{db}");
        assert_eq!(
            (
                &failed[0]["id"],
                &failed[0]["last_status"],
                &failed[0]["attempts"]
            ),
            (&json!(id), &json!(503), &json!(1)),
            "{db}"
        );
        assert!(failed[0]["next_attempt_at"].is_null(), "{db}");

        // Only an admin retries; it is pending again, due now, and audited.
        let retry = format!("/api/v1/webhooks/deliveries/{id}/retry");
        for key in [&app.viewer, &app.marketer, &dpo(&app).await] {
            let (status, body) = app.post(&retry, Some(key), &json!({})).await;
            assert_eq!(status, 403, "{db}: {body}");
        }
        let admin = admin(&app).await;
        let (status, body) = app.post(&retry, Some(&admin), &json!({})).await;
        assert_eq!(status, 200, "{db}: {body}");
        assert_eq!(body["delivery"]["status"], "pending", "{db}");
        let (_, trail) = app.get_json("/api/v1/audit", &admin).await;
        let last = trail["actions"]
            .as_array()
            .and_then(|a| a.last())
            .cloned()
            .unwrap_or_default();
        assert_eq!(last["action"], "webhooks.retry", "{db}: {trail}");
        assert_eq!(last["target"], format!("webhook-delivery:{id}"), "{db}");
        let (_, failed) = app
            .get_json("/api/v1/webhooks/deliveries?status=failed", &app.viewer)
            .await;
        assert_eq!(
            failed["deliveries"].as_array().map(Vec::len),
            Some(0),
            "{db}"
        );

        // A delivered one is not sent again; an unknown id and a bad status say so.
        let claimed = app
            .store
            .claim_webhook_deliveries("n", 1, Timestamp::now(), std::time::Duration::from_secs(60))
            .await
            .unwrap();
        app.store
            .finish_webhook_attempt(
                claimed[0].id,
                "n",
                AttemptOutcome::Delivered { status: 200 },
                Timestamp::now(),
            )
            .await
            .unwrap();
        let (status, body) = app
            .post(
                &format!("/api/v1/webhooks/deliveries/{}/retry", claimed[0].id),
                Some(&admin),
                &json!({}),
            )
            .await;
        assert_eq!(
            (status, error_of(&body).0.as_str()),
            (409, "already_delivered"),
            "{db}"
        );
        let (status, body) = app
            .post(
                "/api/v1/webhooks/deliveries/999999/retry",
                Some(&admin),
                &json!({}),
            )
            .await;
        assert_eq!(
            (status, error_of(&body).0.as_str()),
            (404, "not_found"),
            "{db}"
        );
        let (status, body) = app
            .get_json("/api/v1/webhooks/deliveries?status=lost", &app.viewer)
            .await;
        assert_eq!(status, 422, "{db}: {body}");
        assert_eq!(error_of(&body).1.as_deref(), Some("status"), "{db}");
        let (status, body) = app
            .get_json("/api/v1/webhooks/deliveries", &app.marketer)
            .await;
        assert_eq!(status, 403, "{db}: {body}");
        app.close().await;
    }
}
