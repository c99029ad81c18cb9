//! Campaigns and service messages through the admin API, as a marketer, a
//! developer and a DPO use it: the status codes, the bodies, the messages
//! that went out (a maildir the tests read) and the audit trail.

mod api_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api_support::{TestApp, error_of, sending_apps};
use serde_json::{Value, json};
use veto_core::{Channel, EventKind, NewEvent, Role, Scope, Source, Timestamp};
use veto_sender::service::ServiceSettings;
use veto_store::{Append, ContactInput, Evidence};

fn service() -> ServiceSettings {
    ServiceSettings {
        types: BTreeSet::from(["billing".to_owned()]),
        bulk_threshold: 5,
        bulk_window: Duration::from_secs(3600),
    }
}

fn header<'a>(m: &'a str, name: &str) -> Option<&'a str> {
    let head = m.split("\r\n\r\n").next().unwrap_or("");
    let lower = format!("{}:", name.to_ascii_lowercase());
    head.lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&lower))
        .map(|l| l[name.len() + 1..].trim())
}

fn to_of(m: &str) -> String {
    header(m, "To")
        .unwrap_or("")
        .trim_matches(['<', '>'])
        .to_owned()
}

async fn audit(app: &TestApp, admin: &str) -> Vec<Value> {
    let (status, body) = app.get_json("/api/v1/audit?limit=500", admin).await;
    assert_eq!(status, 200, "{body}");
    body["actions"].as_array().cloned().unwrap_or_default()
}

async fn wait_state(app: &TestApp, key: &str, id: i64, state: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = app.get_json(&format!("/api/v1/campaigns/{id}"), key).await;
        assert_eq!(status, 200, "{body}");
        if body["campaign"]["state"] == state {
            return body["campaign"].clone();
        }
        assert!(Instant::now() < until, "not {state}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_marketer_creates_previews_tests_sends_pauses_resumes_and_cancels_through_the_api() {
    for app in sending_apps(service()).await {
        let db = app.name();
        let admin = app.key_for(Role::Admin, "alex").await;
        for a in ["ann@example.com", "bob@example.com", "carl@example.com"] {
            app.grant(a, "news").await;
        }
        app.withdraw("carl@example.com", "news").await;
        let m = app.marketer.clone();
        let create = json!({
            "name": "Winter news", "topic": "news", "from": "news@shop.example", "from_name": "Shop",
            "subject": "Winter news for {{ email }}",
            "text": "Hello {{ name or email }},\nWhat we made this winter.\n",
            "html": "<p>Hello {{ name or email }}</p>",
            "rate": 50, "domain_rate": 10, "concurrency": 2,
        });

        // Mistakes are 422s that name the field; a viewer may not.
        for (field, bad) in [
            ("topic", json!({"topic": "nope"})),
            ("subject", json!({"subject": "Hi {{ name "})),
            ("from", json!({"from": "not an address"})),
            ("rate", json!({"rate": -1})),
            ("concurrency", json!({"concurrency": 0})),
        ] {
            let mut body = create.clone();
            for (k, v) in bad.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (status, out) = app.post("/api/v1/campaigns", Some(&m), &body).await;
            assert_eq!(status, 422, "{db} {field}: {out}");
            assert_eq!(error_of(&out).1.as_deref(), Some(field), "{db}: {out}");
        }
        let (status, _) = app
            .post("/api/v1/campaigns", Some(&app.viewer), &create)
            .await;
        assert_eq!(status, 403, "{db}");

        let (status, out) = app.post("/api/v1/campaigns", Some(&m), &create).await;
        assert_eq!(status, 201, "{db}: {out}");
        let id = out["campaign"]["id"].as_i64().unwrap();
        assert_eq!(out["campaign"]["state"], "draft");
        assert_eq!(
            out["campaign"]["template_version"].as_str().map(str::len),
            Some(16)
        );

        // Preview: the message and the guard's answer; nothing sent.
        let path = |verb: &str| format!("/api/v1/campaigns/{id}/{verb}");
        let (status, out) = app
            .post(
                &path("preview"),
                Some(&m),
                &json!({"contact": "ann@example.com"}),
            )
            .await;
        assert_eq!(status, 200, "{db}: {out}");
        assert_eq!(out["preview"]["allowed"], true);
        let msg = out["preview"]["message"].as_str().unwrap();
        assert!(msg.contains("Winter news for ann@example.com"), "{msg}");
        let (_, out) = app
            .post(
                &path("preview"),
                Some(&m),
                &json!({"contact": "carl@example.com"}),
            )
            .await;
        assert_eq!(out["preview"]["allowed"], false, "{out}");
        assert_eq!(
            out["preview"]["reason"].as_str().map(|r| !r.is_empty()),
            Some(true)
        );

        // A test send: marked, and still under the guard.
        let (status, out) = app
            .post(
                &path("test"),
                Some(&m),
                &json!({"to": ["bob@example.com", "carl@example.com"]}),
            )
            .await;
        assert_eq!(status, 200, "{db}: {out}");
        assert_eq!(out["results"][0]["sent"], true, "{out}");
        assert_eq!(out["results"][1]["sent"], false, "{out}");
        let sent = app.sent();
        assert_eq!(sent.len(), 1, "{db}");
        assert_eq!(
            header(&sent[0], "Subject"),
            Some("[TEST] Winter news for bob@example.com")
        );

        // Start, and watch it to the end.
        let (status, out) = app.post(&path("start"), Some(&m), &json!({})).await;
        assert_eq!(status, 200, "{db}: {out}");
        assert_eq!(out["campaign"]["state"], "sending");
        let done = wait_state(&app, &m, id, "done").await;
        let p = &done["progress"];
        assert_eq!(p["sent"], 2, "{done}");
        assert_eq!(p["refused"]["withdrawn"], 1, "{done}");
        assert_eq!(p["queued"], 0);
        for k in ["unsubscribes", "hard_bounces", "complaints"] {
            assert_eq!(done["feedback"][k], 0, "{done}");
        }
        assert_eq!(done["rates"]["complaint_limit"], 0.001, "{done}");
        assert_eq!(done["rates"]["hard_bounce_limit"], 0.05, "{done}");
        // Maildir names need not sort in sending order: leave out the test by its subject.
        let copies: Vec<String> = app
            .sent()
            .iter()
            .filter(|s| !header(s, "Subject").is_some_and(|v| v.starts_with("[TEST]")))
            .map(|s| to_of(s))
            .collect();
        assert_eq!(copies.len(), 2, "one copy each, no more: {copies:?}");
        let got: BTreeSet<String> = copies.into_iter().collect();
        assert_eq!(
            got,
            BTreeSet::from(["ann@example.com".to_owned(), "bob@example.com".to_owned()])
        );

        // A finished campaign cannot be paused: 409 with the reason.
        let (status, out) = app.post(&path("pause"), Some(&m), &json!({})).await;
        assert_eq!(status, 409, "{db}: {out}");

        // Pause, resume and cancel on a scheduled one.
        let mut later = create.clone();
        later["scheduled_at"] = json!("2099-01-01T09:00:00Z");
        let (_, out) = app.post("/api/v1/campaigns", Some(&m), &later).await;
        let id2 = out["campaign"]["id"].as_i64().unwrap();
        let p2 = |verb: &str| format!("/api/v1/campaigns/{id2}/{verb}");
        let (status, out) = app.post(&p2("start"), Some(&m), &json!({})).await;
        assert_eq!(
            (status, out["campaign"]["state"].as_str()),
            (200, Some("scheduled")),
            "{out}"
        );
        let (_, out) = app.post(&p2("pause"), Some(&m), &json!({})).await;
        assert_eq!(out["campaign"]["state"], "paused", "{out}");
        let (_, out) = app.post(&p2("resume"), Some(&m), &json!({})).await;
        assert_eq!(out["campaign"]["state"], "scheduled", "{out}");
        let (_, out) = app.post(&p2("cancel"), Some(&m), &json!({})).await;
        assert_eq!(out["campaign"]["state"], "cancelled", "{out}");
        let (status, _) = app.post(&p2("bogus"), Some(&m), &json!({})).await;
        assert_eq!(status, 404, "{db}");

        // Each change is in the audit trail, with who did it.
        let actions: Vec<String> = audit(&app, &admin)
            .await
            .iter()
            .map(|a| a["action"].as_str().unwrap_or("").to_owned())
            .collect();
        for want in [
            "campaigns.create",
            "campaigns.test",
            "campaigns.start",
            "campaigns.pause",
            "campaigns.resume",
            "campaigns.cancel",
        ] {
            assert!(
                actions.iter().any(|a| a == want),
                "{db}: no {want} in {actions:?}"
            );
        }
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_messages_reach_all_but_erased_and_bounced_and_a_bulk_send_waits_for_another_dpo() {
    for app in sending_apps(service()).await {
        let db = app.name();
        let admin = app.key_for(Role::Admin, "alex").await;
        let sam = app
            .store
            .create_api_key_with(veto_store::KeySpec {
                role: Role::ServiceSender,
                default_topic: None,
                default_service: None,
                owner: Some("sam".into()),
            })
            .await
            .unwrap();
        let sams_dpo = app.key_for(Role::Dpo, "sam").await;
        let dana = app.key_for(Role::Dpo, "dana").await;

        app.grant("ann@example.com", "news").await;
        app.grant("carl@example.com", "news").await;
        app.withdraw("carl@example.com", "news").await;
        app.grant("erased@example.com", "news").await;
        app.store
            .erase(
                &api_support::email("erased@example.com"),
                "admin:test",
                Timestamp::now(),
            )
            .await
            .unwrap();
        app.store
            .append(
                vec![Append {
                    contact: ContactInput::new(api_support::email("bounced@example.com")),
                    event: NewEvent {
                        kind: EventKind::HardBounce,
                        scope: Scope::All,
                        channel: Some(Channel::Email),
                        source: Source::Feedback,
                        at: Timestamp::now(),
                    },
                    evidence: Evidence::default(),
                    actor: "feedback".into(),
                }],
                false,
            )
            .await
            .unwrap();

        let bill = |to: &[&str]| {
            json!({
                "type": "billing", "to": to, "from": "billing@shop.example",
                "subject": "Your bill, {{ name or email }}", "text": "You owe us nothing.\n",
            })
        };
        // Only service-sender keys; only declared types.
        let (status, _) = app
            .post(
                "/api/v1/messages",
                Some(&app.marketer),
                &bill(&["ann@example.com"]),
            )
            .await;
        assert_eq!(status, 403, "{db}");
        let mut undeclared = bill(&["ann@example.com"]);
        undeclared["type"] = json!("newsletter");
        let (status, out) = app
            .post("/api/v1/messages", Some(&sam.key), &undeclared)
            .await;
        assert_eq!(
            (status, error_of(&out).1.as_deref()),
            (422, Some("type")),
            "{out}"
        );
        let mut injected = bill(&["ann@example.com"]);
        injected["subject"] = json!("Bill\r\nBcc: everyone@example.com");
        let (status, _) = app
            .post("/api/v1/messages", Some(&sam.key), &injected)
            .await;
        // The subject template itself has a line break: refused before anything goes.
        assert!(
            status == 400 || app.sent().iter().all(|m| !m.contains("Bcc: everyone")),
            "{db}"
        );
        let before = app.sent().len();

        let (status, out) = app
            .post(
                "/api/v1/messages",
                Some(&sam.key),
                &bill(&[
                    "ann@example.com",
                    "carl@example.com",
                    "erased@example.com",
                    "bounced@example.com",
                ]),
            )
            .await;
        assert_eq!(status, 200, "{db}: {out}");
        let status_of = |to: &str| {
            out["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["to"] == to)
                .map(|r| r["status"].as_str().unwrap_or("").to_owned())
        };
        assert_eq!(
            status_of("ann@example.com").as_deref(),
            Some("sent"),
            "{out}"
        );
        // Opting out of marketing does not stop a bill.
        assert_eq!(
            status_of("carl@example.com").as_deref(),
            Some("sent"),
            "{out}"
        );
        assert_eq!(
            status_of("erased@example.com").as_deref(),
            Some("refused"),
            "{out}"
        );
        assert_eq!(
            status_of("bounced@example.com").as_deref(),
            Some("refused"),
            "{out}"
        );
        let sent = app.sent();
        assert_eq!(sent.len() - before, 2, "{db}");
        let bill_to_carl = sent
            .iter()
            .find(|m| to_of(m) == "carl@example.com")
            .unwrap();
        assert!(
            header(bill_to_carl, "List-Unsubscribe").is_none(),
            "a bill offers no unsubscribe from bills"
        );
        // Each recipient has a receipt, sent or refused.
        for r in out["results"].as_array().unwrap() {
            let rs = app
                .store
                .receipts_for_message(r["message_id"].as_str().unwrap())
                .await
                .unwrap();
            assert_eq!(rs.len(), 1, "{db}: {r}");
            assert_eq!(rs[0].receipt.allowed, r["status"] == "sent", "{r}");
        }

        // Two sent this window; four more is six, over the threshold of five: held.
        let many = [
            "a1@example.com",
            "a2@example.com",
            "a3@example.com",
            "a4@example.com",
        ];
        let (status, out) = app
            .post("/api/v1/messages", Some(&sam.key), &bill(&many))
            .await;
        assert_eq!(status, 202, "{db}: {out}");
        assert_eq!(out["outcome"], "held");
        let approval = out["approval"]["id"].as_i64().unwrap();
        assert_eq!(app.sent().len() - before, 2, "nothing went while held");

        // The requester cannot approve their own send; another DPO can.
        let path = format!("/api/v1/approvals/{approval}");
        let (status, _) = app.post(&path, Some(&sams_dpo), &json!({})).await;
        assert_eq!(status, 403, "{db}");
        let (status, _) = app.post(&path, Some(&sam.key), &json!({})).await;
        assert_eq!(status, 403, "{db}");
        let (status, out) = app.post(&path, Some(&dana), &json!({})).await;
        assert_eq!(status, 200, "{db}: {out}");
        let (status, out) = app
            .post("/api/v1/messages", Some(&sam.key), &bill(&many))
            .await;
        assert_eq!(status, 200, "{db}: {out}");
        assert_eq!(app.sent().len() - before, 6);

        // The request and the approval, in the audit trail.
        let trail = audit(&app, &admin).await;
        let held = trail
            .iter()
            .find(|a| a["action"] == "messages.held")
            .unwrap_or_else(|| panic!("{db}: no held request in {trail:?}"));
        assert_eq!(held["target"], format!("approval:{approval}"));
        assert_eq!(held["actor"], format!("api-key:{}", sam.prefix));
        let approved = trail
            .iter()
            .find(|a| a["action"] == "approvals.approve")
            .unwrap_or_else(|| panic!("{db}: no approval in {trail:?}"));
        assert_eq!(approved["target"], format!("approval:{approval}"));
        assert!(
            trail.iter().any(|a| a["action"] == "messages.send"),
            "{trail:?}"
        );
        app.close().await;
    }
}
