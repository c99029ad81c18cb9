//! The consent-capture API and double opt-in, from the outside: what the
//! organisation's forms get back over HTTP, what the person gets in their
//! inbox and on the confirmation page, and what the ledger then holds.
//! Every test runs on SQLite, and on PostgreSQL too when
//! `VETO_TEST_POSTGRES_URL` is set.

mod api_support;

use api_support::{
    CONFIRM_UA, FORM_IP, FORM_UA, FORM_URL, apps, apps_with_mail, email, error_of, reason_code,
};
use serde_json::json;
use veto_core::{EventKind, Role, Rule, Scope, Source, WordingId};

const JO: &str = "jo@example.com";

// ---- consents -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_is_201_and_the_ledger_holds_its_evidence() {
    for app in apps().await {
        let db = app.name();
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "no_record",
            "{db}"
        );

        let body = app.grant(JO, "news").await;

        assert_eq!(body["created"], true, "{db}: {body}");
        let events = app.events(JO).await;
        assert_eq!(events.len(), 1, "{db}");
        let e = &events[0];
        assert_eq!(body["event_id"], e.event.id.0, "{db}");
        assert_eq!(body["contact_id"], e.contact.0, "{db}");
        assert_eq!(e.event.kind, EventKind::Grant, "{db}");
        assert_eq!(
            e.event.scope,
            Scope::Topic(app.topic("news").await.id),
            "{db}"
        );
        assert_eq!(e.event.source, Source::Form, "{db}");
        assert_eq!(e.wording, Some(WordingId(app.wording)), "{db}");
        assert_eq!(e.form_url.as_deref(), Some(FORM_URL), "{db}");
        assert!(e.actor.starts_with("api-key:veto_"), "{db}: {}", e.actor);
        let personal = e.personal.as_ref().expect("personal data");
        assert_eq!(personal.ip.as_deref(), Some(FORM_IP), "{db}");
        assert_eq!(personal.user_agent.as_deref(), Some(FORM_UA), "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );

        // A second grant is recorded too, for an existing contact.
        let again = app.grant(JO, "offers").await;
        assert_eq!(again["created"], false, "{db}");
        assert_eq!(again["contact_id"], body["contact_id"], "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_defaults_to_api_and_topic_to_all_marketing() {
    for app in apps().await {
        let db = app.name();
        let (status, body) = app
            .consents(&json!({"email": JO, "action": "grant", "wording": app.wording}))
            .await;
        assert_eq!(status, 201, "{db}: {body}");
        let e = &app.events(JO).await[0];
        assert_eq!(e.event.source, Source::Api, "{db}");
        assert_eq!(e.event.scope, Scope::All, "{db}");
        assert_eq!(e.event.channel, Some(veto_core::Channel::Email), "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "offers").await),
            "allowed",
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdraw_is_201_and_the_guard_then_stops_that_topic() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        app.grant(JO, "offers").await;

        let body = app.withdraw(JO, "news").await;

        assert_eq!(body["created"], false, "{db}");
        let last = app.events(JO).await.pop().expect("event");
        assert_eq!(last.event.kind, EventKind::Withdraw, "{db}");
        assert_eq!(last.event.source, Source::Api, "{db}");
        assert_eq!(body["event_id"], last.event.id.0, "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "withdrawn",
            "{db}"
        );
        assert_eq!(
            reason_code(&app.decision(JO, "offers").await),
            "allowed",
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_after_a_withdrawal_is_409_only_the_person_can_regrant() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        app.withdraw(JO, "news").await;
        let before = app.count_events().await;

        let (status, body) = app
            .consents(
                &json!({"email": JO, "topic": "news", "action": "grant", "wording": app.wording}),
            )
            .await;

        assert_eq!(status, 409, "{db}: {body}");
        assert_eq!(
            error_of(&body),
            ("only_the_person_can_regrant".into(), Some("action".into())),
            "{db}"
        );
        let message = body["error"]["message"].as_str().expect("message");
        let today = veto_core::Timestamp::now().strftime("%Y-%m-%d").to_string();
        assert!(
            message.starts_with(&format!("j\u{2022}\u{2022}\u{2022}@example.com withdrew from Product news on {today} (GDPR-7)")),
            "{db}: {message}"
        );
        assert!(
            message.ends_with(
                "only the person can re-grant, on the preference centre or by confirming a signup"
            ),
            "{db}: {message}"
        );
        assert!(
            !message.contains(JO),
            "{db}: the address is masked: {message}"
        );
        assert_eq!(app.count_events().await, before, "{db}: nothing recorded");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "withdrawn",
            "{db}"
        );

        // An all-marketing grant would override the withdrawal too.
        let (status, body) = app
            .consents(&json!({"email": JO, "action": "grant", "wording": app.wording}))
            .await;
        assert_eq!(status, 409, "{db}: {body}");
        assert_eq!(error_of(&body).0, "only_the_person_can_regrant", "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_after_an_erasure_is_409_and_so_is_a_purchase() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        app.store
            .erase(&email(JO), "admin:dpo", veto_core::Timestamp::now())
            .await
            .expect("erase");
        let before = app.count_events().await;

        let (status, body) = app
            .consents(
                &json!({"email": JO, "topic": "news", "action": "grant", "wording": app.wording}),
            )
            .await;

        assert_eq!(status, 409, "{db}: {body}");
        assert_eq!(
            error_of(&body),
            ("only_the_person_can_regrant".into(), Some("action".into())),
            "{db}"
        );
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("was erased on ") && message.contains("(ICO-SUPP)"),
            "{db}: {message}"
        );

        let (status, body) = app
            .purchases(&json!({"email": JO, "opt_out_offered": true, "product_group": "shoes"}))
            .await;
        assert_eq!(status, 409, "{db}: {body}");
        assert_eq!(
            error_of(&body),
            ("address_erased".into(), Some("email".into())),
            "{db}"
        );
        assert_eq!(app.count_events().await, before, "{db}: nothing recorded");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "suppressed",
            "{db}"
        );
        app.close().await;
    }
}

// ---- authentication and roles ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_key_or_a_bad_key_is_401_with_a_bearer_challenge() {
    for app in apps().await {
        let db = app.name();
        let body = json!({"email": JO, "topic": "news", "action": "grant", "wording": app.wording});
        for (auth, error) in [
            (None, None),
            (Some("Bearer veto_notakey"), Some("invalid_token")),
            (Some("Basic dXNlcjpwYXNz"), Some("invalid_request")),
            (
                Some(format!("Bearer {}x", app.marketer).as_str()),
                Some("invalid_token"),
            ),
        ] {
            let mut req = app.client.post(app.url("/api/v1/consents")).json(&body);
            if let Some(a) = auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let res = req.send().await.expect("POST");
            assert_eq!(res.status(), 401, "{db}: {auth:?}");
            let challenge = res
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .expect("WWW-Authenticate")
                .to_str()
                .expect("text")
                .to_owned();
            assert!(challenge.starts_with("Bearer"), "{db}: {challenge}");
            if let Some(e) = error {
                assert!(
                    challenge.contains(&format!("error=\"{e}\"")),
                    "{db}: {challenge}"
                );
            }
            let json: serde_json::Value = res.json().await.expect("JSON");
            assert_eq!(error_of(&json).0, "unauthorized", "{db}");
        }
        assert_eq!(app.count_events().await, 0, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewer_and_service_sender_keys_are_403_marketer_dpo_and_admin_may_record() {
    for app in apps().await {
        let db = app.name();
        let sender = app
            .store
            .create_api_key(Role::ServiceSender, None)
            .await
            .expect("key")
            .key;
        for (path, body) in [
            (
                "/api/v1/consents",
                json!({"email": JO, "topic": "news", "action": "grant", "wording": app.wording}),
            ),
            (
                "/api/v1/purchases",
                json!({"email": JO, "opt_out_offered": true}),
            ),
            (
                "/api/v1/signups",
                json!({"email": JO, "wording": app.wording}),
            ),
        ] {
            for key in [&app.viewer, &sender] {
                let (status, res) = app.post(path, Some(key), &body).await;
                assert_eq!(status, 403, "{db}: {path}: {res}");
                assert_eq!(error_of(&res).0, "forbidden", "{db}");
            }
        }
        // The role is checked before the body is read.
        let (status, res) = app
            .post_raw("/api/v1/consents", &app.viewer, "application/json", "{oops")
            .await;
        assert_eq!(status, 403, "{db}: {res}");
        assert_eq!(app.count_events().await, 0, "{db}");
        assert!(app.outbox().is_empty(), "{db}");

        for role in [Role::Dpo, Role::Admin] {
            let key = app.store.create_api_key(role, None).await.expect("key").key;
            let (status, res) = app
                .post(
                    "/api/v1/consents",
                    Some(&key),
                    &json!({"email": format!("{role}@example.com"), "topic": "news", "action": "grant", "wording": app.wording}),
                )
                .await;
            assert_eq!(status, 201, "{db}: {role}: {res}");
        }
        app.close().await;
    }
}

// ---- bad input ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_4xx_naming_the_field_never_a_500() {
    for app in apps().await {
        let db = app.name();
        let future = veto_core::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24))
            .expect("time")
            .to_string();
        let w = app.wording;
        let cases = [
            (
                json!({"email": "jo at example.com", "topic": "news", "action": "grant", "wording": w}),
                "invalid_email",
                "email",
            ),
            (
                json!({"email": "jo@", "action": "withdraw"}),
                "invalid_email",
                "email",
            ),
            (
                json!({"topic": "news", "action": "grant", "wording": w}),
                "missing_field",
                "email",
            ),
            (
                json!({"email": JO, "topic": "nope", "action": "grant", "wording": w}),
                "unknown_topic",
                "topic",
            ),
            (
                json!({"email": JO, "topic": "News!", "action": "grant", "wording": w}),
                "unknown_topic",
                "topic",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant"}),
                "missing_field",
                "wording",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": 99999}),
                "unknown_wording",
                "wording",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": "one"}),
                "invalid_type",
                "wording",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": w, "at": future}),
                "in_the_future",
                "at",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": w, "at": "yesterday"}),
                "invalid_time",
                "at",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "subscribe", "wording": w}),
                "invalid_value",
                "action",
            ),
            (
                json!({"email": JO, "topic": "news", "wording": w}),
                "missing_field",
                "action",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": w, "source": "import"}),
                "invalid_value",
                "source",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": w, "channel": "fax"}),
                "invalid_value",
                "channel",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": w, "ip": "not-an-ip"}),
                "invalid_ip",
                "ip",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": w, "form_url": "javascript:x"}),
                "invalid_url",
                "form_url",
            ),
            (
                json!({"email": JO, "topic": 7, "action": "grant", "wording": w}),
                "invalid_type",
                "topic",
            ),
            (
                json!({"email": JO, "topic": "news", "action": "grant", "wording": w, "wordng": 1}),
                "unknown_field",
                "wordng",
            ),
        ];
        for (body, code, field) in cases {
            let (status, res) = app.consents(&body).await;
            assert_eq!(status, 422, "{db}: {body}: {res}");
            assert_eq!(
                error_of(&res),
                (code.to_owned(), Some(field.to_owned())),
                "{db}: {body}"
            );
        }
        // The address parser's own reason is passed on.
        let (_, res) = app
            .consents(&json!({"email": "jo@", "action": "withdraw"}))
            .await;
        let message = res["error"]["message"].as_str().expect("message");
        assert!(message.contains("nothing after the @"), "{db}: {message}");
        // The unknown topic's answer lists the topics there are.
        let (_, res) = app
            .consents(&json!({"email": JO, "topic": "nope", "action": "grant", "wording": w}))
            .await;
        let message = res["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("news, offers, shoe-offers"),
            "{db}: {message}"
        );
        assert_eq!(app.count_events().await, 0, "{db}: nothing recorded");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_json_is_400_a_non_object_422_and_other_content_types_415() {
    for app in apps().await {
        let db = app.name();
        let key = app.marketer.clone();
        for path in ["/api/v1/consents", "/api/v1/purchases", "/api/v1/signups"] {
            let (status, res) = app
                .post_raw(
                    path,
                    &key,
                    "application/json",
                    "{\"email\": \"jo@example.com\",",
                )
                .await;
            assert_eq!(status, 400, "{db}: {path}: {res}");
            assert_eq!(error_of(&res), ("malformed_json".into(), None), "{db}");

            let (status, res) = app.post_raw(path, &key, "application/json", "[1, 2]").await;
            assert_eq!(status, 422, "{db}: {path}: {res}");
            assert_eq!(error_of(&res).0, "invalid_body", "{db}");

            let (status, res) = app
                .post_raw(path, &key, "text/plain", "{\"email\": \"jo@example.com\"}")
                .await;
            assert_eq!(status, 415, "{db}: {path}: {res}");
            assert_eq!(error_of(&res).0, "unsupported_media_type", "{db}");
        }
        assert_eq!(app.count_events().await, 0, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_endpoints_and_methods_answer_json_too() {
    for app in apps().await {
        let db = app.name();
        let (status, res) = app
            .post("/api/v1/nothing-here", Some(&app.marketer), &json!({}))
            .await;
        assert_eq!(status, 404, "{db}: {res}");
        assert_eq!(error_of(&res).0, "not_found", "{db}");

        let res = app
            .client
            .get(app.url("/api/v1/consents"))
            .bearer_auth(&app.marketer)
            .send()
            .await
            .expect("GET");
        assert_eq!(res.status(), 405, "{db}");
        assert!(
            res.headers().get(reqwest::header::ALLOW).is_some(),
            "{db}: Allow kept"
        );
        let json: serde_json::Value = res.json().await.expect("JSON");
        assert_eq!(error_of(&json).0, "method_not_allowed", "{db}");
        app.close().await;
    }
}

// ---- purchases ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purchase_is_201_and_gives_a_uk_soft_opt_in_for_topics_in_its_group() {
    for app in apps().await {
        let db = app.name();
        assert_eq!(
            reason_code(&app.decision(JO, "shoe-offers").await),
            "no_record",
            "{db}"
        );

        let (status, body) = app
            .purchases(&json!({
                "email": JO, "order_ref": "ORD-1001", "product_group": "shoes",
                "opt_out_offered": true, "jurisdiction": "UK", "subscriber_type": "individual",
                "source": "form", "at": "2026-01-15T10:00:00Z",
            }))
            .await;

        assert_eq!(status, 201, "{db}: {body}");
        assert_eq!(body["created"], true, "{db}");
        let e = &app.events(JO).await[0];
        assert_eq!(body["event_id"], e.event.id.0, "{db}");
        assert_eq!(e.event.source, Source::Form, "{db}");
        assert_eq!(e.order_ref.as_deref(), Some("ORD-1001"), "{db}");
        match &e.event.kind {
            EventKind::Relationship(r) => {
                assert_eq!(r.kind, veto_core::RelationshipKind::Purchase, "{db}");
                assert_eq!(r.product_group.as_deref(), Some("shoes"), "{db}");
                assert!(r.opt_out_offered, "{db}");
            }
            other => panic!("{db}: a purchase, not {other:?}"),
        }
        assert_eq!(e.event.at.to_string(), "2026-01-15T10:00:00Z", "{db}");
        let contact = app
            .store
            .find_contact(&email(JO))
            .await
            .expect("find")
            .expect("contact");
        assert_eq!(contact.jurisdictions, "UK", "{db}");

        match app.decision(JO, "shoe-offers").await {
            veto_core::Decision::Allowed(a) => {
                assert_eq!(a.rule, Rule::Pecr22_3, "{db}");
                assert_eq!(a.event, Some(e.event.id), "{db}");
            }
            d => panic!("{db}: soft opt-in expected, got {d:?}"),
        }
        // Not for a topic outside the group.
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "no_consent",
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purchase_needs_opt_out_offered_and_valid_jurisdictions() {
    for app in apps().await {
        let db = app.name();
        for (body, code, field) in [
            (
                json!({"email": JO, "product_group": "shoes"}),
                "missing_field",
                "opt_out_offered",
            ),
            (
                json!({"email": JO, "opt_out_offered": "yes"}),
                "invalid_type",
                "opt_out_offered",
            ),
            (
                json!({"email": JO, "opt_out_offered": true, "jurisdiction": "FR"}),
                "invalid_value",
                "jurisdiction",
            ),
            (
                json!({"email": JO, "opt_out_offered": true, "jurisdiction": ["UK", 3]}),
                "invalid_type",
                "jurisdiction",
            ),
            (
                json!({"email": JO, "opt_out_offered": true, "subscriber_type": "robot"}),
                "invalid_value",
                "subscriber_type",
            ),
        ] {
            let (status, res) = app.purchases(&body).await;
            assert_eq!(status, 422, "{db}: {body}: {res}");
            assert_eq!(
                error_of(&res),
                (code.to_owned(), Some(field.to_owned())),
                "{db}: {body}"
            );
        }
        // A list of jurisdictions is fine.
        let (status, res) = app
            .purchases(
                &json!({"email": JO, "opt_out_offered": false, "jurisdiction": ["UK", "EU"]}),
            )
            .await;
        assert_eq!(status, 201, "{db}: {res}");
        let contact = app
            .store
            .find_contact(&email(JO))
            .await
            .expect("find")
            .expect("contact");
        assert_eq!(contact.jurisdictions, "UK|EU", "{db}");
        // Without the opt-out offered there is no soft opt-in (PECR reg 22(3)(c)).
        assert_eq!(
            reason_code(&app.decision(JO, "shoe-offers").await),
            "no_consent",
            "{db}"
        );
        app.close().await;
    }
}

// ---- double opt-in ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signup_mails_one_confirmation_link_and_only_one_a_day() {
    for app in apps().await {
        let db = app.name();
        let (status, body) = app.signup(JO, Some("news")).await;
        assert_eq!(status, 202, "{db}: {body}");
        assert_eq!(body, json!({"status": "confirmation_sent"}), "{db}");

        let mail = app.outbox();
        assert_eq!(mail.len(), 1, "{db}: exactly one message");
        assert!(mail[0].contains(&format!("Delivered-To: {JO}")), "{db}");
        assert!(mail[0].contains("Product news"), "{db}: {}", mail[0]);
        let link = app.confirm_link(&mail[0]);
        // Nothing is recorded until the person confirms.
        assert_eq!(app.count_events().await, 0, "{db}");
        let signup = app
            .store
            .signup(app.signup_id(&link))
            .await
            .expect("signup")
            .expect("stored");
        assert_eq!(signup.request.ip.as_deref(), Some(FORM_IP), "{db}");
        assert_eq!(signup.request.user_agent.as_deref(), Some(FORM_UA), "{db}");
        assert_eq!(signup.request.form_url.as_deref(), Some(FORM_URL), "{db}");
        assert!(signup.confirmed.is_none(), "{db}");
        // The receipt says why veto mailed someone with no consent.
        let receipts = app
            .store
            .receipts_for_message(&receipt_id(&mail[0]))
            .await
            .expect("receipts");
        assert_eq!(receipts.len(), 1, "{db}");
        assert_eq!(
            receipts[0].receipt.class, "requested:signup-confirmation",
            "{db}"
        );
        assert_eq!(receipts[0].receipt.rule, "VETO-REQUESTED", "{db}");

        // Within 24 hours: accepted, but no second mail, for any topic.
        for topic in [Some("news"), Some("offers"), None] {
            let (status, body) = app.signup(JO, topic).await;
            assert_eq!(status, 202, "{db}: {body}");
            assert_eq!(body, json!({"status": "confirmation_already_sent"}), "{db}");
        }
        assert_eq!(app.outbox().len(), 1, "{db}: still one message");
        // Another address has its own allowance.
        let (status, _) = app.signup("sam@example.com", Some("news")).await;
        assert_eq!(status, 202, "{db}");
        assert_eq!(app.outbox().len(), 2, "{db}");
        app.close().await;
    }
}

fn receipt_id(mail: &str) -> String {
    let line = mail
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .expect("Message-ID");
    line["message-id:".len()..].trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_confirmation_page_changes_nothing_and_pressing_its_button_records_the_grant_once() {
    for app in apps().await {
        let db = app.name();
        app.signup(JO, Some("news")).await;
        let link = app.confirm_link(&app.outbox()[0]);

        // What a mail scanner and the person's browser fetch first.
        for _ in 0..3 {
            let (status, page) = app.get_page(&link).await;
            assert_eq!(status, 200, "{db}");
            assert!(page.contains("<form method=\"post\""), "{db}: {page}");
            assert!(page.contains("Product news"), "{db}");
            assert!(
                page.contains("j\u{2022}\u{2022}\u{2022}@example.com"),
                "{db}: masked"
            );
        }
        assert_eq!(app.count_events().await, 0, "{db}: GET changed nothing");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "no_record",
            "{db}"
        );

        let (status, page) = app.press_confirm(&link).await;
        assert_eq!(status, 200, "{db}");
        assert!(page.contains("subscribed to Product news"), "{db}: {page}");

        let events = app.events(JO).await;
        assert_eq!(events.len(), 1, "{db}");
        let e = &events[0];
        assert_eq!(e.event.kind, EventKind::Grant, "{db}");
        assert_eq!(e.event.source, Source::DoubleOptIn, "{db}");
        assert_eq!(e.event.source.as_str(), "double_opt_in", "{db}");
        assert_eq!(
            e.event.scope,
            Scope::Topic(app.topic("news").await.id),
            "{db}"
        );
        assert_eq!(e.wording, Some(WordingId(app.wording)), "{db}");
        assert_eq!(e.actor, "person", "{db}");
        let personal = e.personal.as_ref().expect("personal data");
        assert_eq!(
            personal.ip.as_deref(),
            Some("127.0.0.1"),
            "{db}: the confirmation's IP"
        );
        assert_eq!(personal.user_agent.as_deref(), Some(CONFIRM_UA), "{db}");
        // The signup keeps the form's evidence, and notes the confirmation.
        let signup = app
            .store
            .signup(app.signup_id(&link))
            .await
            .expect("signup")
            .expect("stored");
        assert_eq!(signup.request.ip.as_deref(), Some(FORM_IP), "{db}");
        let confirmed = signup.confirmed.expect("confirmed");
        assert_eq!(confirmed.ip.as_deref(), Some("127.0.0.1"), "{db}");
        assert_eq!(confirmed.event, Some(e.event.id), "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );

        // Pressing again (or a double click): the same page, no second event.
        let (status, again) = app.press_confirm(&link).await;
        assert_eq!(status, 200, "{db}");
        assert!(again.contains("subscribed to Product news"), "{db}");
        let (status, page) = app.get_page(&link).await;
        assert_eq!(status, 200, "{db}");
        assert!(page.contains("subscribed to Product news"), "{db}");
        assert_eq!(app.events(JO).await.len(), 1, "{db}: still one event");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_confirmations_record_one_grant() {
    for app in apps().await {
        let db = app.name();
        app.signup(JO, None).await;
        let link = app.confirm_link(&app.outbox()[0]);
        // A double click, or several tabs: separate requests at once.
        let mut presses = vec![];
        for _ in 0..8 {
            let (client, url) = (app.client.clone(), link.clone());
            presses.push(tokio::spawn(async move {
                client
                    .post(url)
                    .header(reqwest::header::USER_AGENT, CONFIRM_UA)
                    .send()
                    .await
                    .expect("POST")
                    .status()
                    .as_u16()
            }));
        }
        for press in presses {
            assert_eq!(press.await.expect("task"), 200, "{db}");
        }
        let events = app.events(JO).await;
        assert_eq!(events.len(), 1, "{db}: one grant");
        assert_eq!(events[0].event.scope, Scope::All, "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "offers").await),
            "allowed",
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_or_unknown_confirm_tokens_get_the_not_found_page() {
    for app in apps().await {
        let db = app.name();
        app.signup(JO, Some("news")).await;
        let link = app.confirm_link(&app.outbox()[0]);
        let token = link.rsplit('/').next().expect("token").to_owned();
        let mut forged: Vec<char> = token.chars().collect();
        forged[20] = if forged[20] == 'a' { 'b' } else { 'a' };
        let forged: String = forged.into_iter().collect();
        // A valid token of another purpose (the unsubscribe link of contact 1) is not a confirm token.
        let unsubscribe = veto_web::links(app.state.keys(), &app.base, 1, None)
            .expect("links")
            .unsubscribe;
        let other_purpose = unsubscribe.rsplit('/').next().expect("token").to_owned();
        for bad in [forged.as_str(), other_purpose.as_str(), "short"] {
            let url = app.url(&format!("/confirm/{bad}"));
            let (status, page) = app.get_page(&url).await;
            assert_eq!(status, 404, "{db}: GET {bad}");
            assert!(
                page.contains("This link doesn"),
                "{db}: the not-found page: {page}"
            );
            let (status, _) = app.press_confirm(&url).await;
            assert_eq!(status, 404, "{db}: POST {bad}");
        }
        assert_eq!(app.count_events().await, 0, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signup_after_an_erasure_still_mails_and_confirming_brings_the_person_back() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        app.store
            .erase(&email(JO), "admin:dpo", veto_core::Timestamp::now())
            .await
            .expect("erase");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "suppressed",
            "{db}"
        );

        let (status, body) = app.signup(JO, Some("news")).await;
        assert_eq!(status, 202, "{db}: {body}");
        assert_eq!(body["status"], "confirmation_sent", "{db}");
        let mail = app.outbox();
        assert_eq!(mail.len(), 1, "{db}: the person asked, so the mail goes");
        let link = app.confirm_link(&mail[0]);
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "suppressed",
            "{db}: not before confirming"
        );

        let (status, page) = app.press_confirm(&link).await;
        assert_eq!(status, 200, "{db}: {page}");
        let events = app.events(JO).await;
        assert_eq!(
            events.len(),
            1,
            "{db}: a new contact, with the person's own grant"
        );
        assert_eq!(events[0].event.source, Source::DoubleOptIn, "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );
        // Only that topic: the rest stays suppressed.
        assert_eq!(
            reason_code(&app.decision(JO, "offers").await),
            "suppressed",
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signup_after_a_withdrawal_mails_and_confirming_regrants() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        app.withdraw(JO, "news").await;

        let (status, body) = app.signup(JO, Some("news")).await;
        assert_eq!(status, 202, "{db}: {body}");
        assert_eq!(app.outbox().len(), 1, "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "withdrawn",
            "{db}"
        );

        let link = app.confirm_link(&app.outbox()[0]);
        let (status, _) = app.press_confirm(&link).await;
        assert_eq!(status, 200, "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signup_when_already_subscribed_is_200_and_changes_nothing() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        let events = app.events(JO).await;

        let (status, body) = app.signup(JO, Some("news")).await;

        assert_eq!(status, 200, "{db}: {body}");
        assert_eq!(body, json!({"status": "already_subscribed"}), "{db}");
        assert!(app.outbox().is_empty(), "{db}: no mail");
        let after = app.events(JO).await;
        assert_eq!(after.len(), events.len(), "{db}: nothing recorded");
        assert_eq!(after[0].hash, events[0].hash, "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );

        // A signup for all marketing is not covered by one topic's grant.
        let (status, body) = app.signup(JO, None).await;
        assert_eq!(status, 202, "{db}: {body}");
        assert_eq!(app.outbox().len(), 1, "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signup_validates_like_the_other_endpoints() {
    for app in apps().await {
        let db = app.name();
        for (body, code, field) in [
            (
                json!({"email": JO, "topic": "news"}),
                "missing_field",
                "wording",
            ),
            (
                json!({"email": JO, "topic": "nope", "wording": app.wording}),
                "unknown_topic",
                "topic",
            ),
            (
                json!({"email": "nobody", "wording": app.wording}),
                "invalid_email",
                "email",
            ),
            (
                json!({"email": JO, "wording": app.wording, "action": "grant"}),
                "unknown_field",
                "action",
            ),
        ] {
            let (status, res) = app.signups(&body).await;
            assert_eq!(status, 422, "{db}: {body}: {res}");
            assert_eq!(
                error_of(&res),
                (code.to_owned(), Some(field.to_owned())),
                "{db}"
            );
        }
        assert!(app.outbox().is_empty(), "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_mail_delivery_a_signup_is_503_with_a_generic_message() {
    for app in apps_with_mail(false).await {
        let db = app.name();
        let (status, res) = app.signup(JO, Some("news")).await;
        assert_eq!(status, 503, "{db}: {res}");
        assert_eq!(error_of(&res), ("unavailable".into(), None), "{db}");
        let message = res["error"]["message"].as_str().expect("message");
        assert!(
            !message.contains("delivery"),
            "{db}: no internals: {message}"
        );
        // Nothing was claimed: with mail back, the address is not blocked for a day.
        assert_eq!(app.count_events().await, 0, "{db}");
        app.close().await;
    }
}

// ---- approvals of held service sends ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_another_dpo_approves_a_held_service_send() {
    use veto_store::{HoldRequest, KeySpec};
    for app in apps().await {
        let key = |role, owner: Option<&str>| {
            let store = app.store.clone();
            let owner = owner.map(str::to_owned);
            async move {
                store
                    .create_api_key_with(KeySpec {
                        role,
                        default_topic: None,
                        default_service: None,
                        owner,
                    })
                    .await
                    .unwrap()
            }
        };
        let sender = key(Role::ServiceSender, Some("sam")).await;
        let sams_dpo = key(Role::Dpo, Some("sam")).await;
        let dana = key(Role::Dpo, Some("dana")).await;
        let nameless = key(Role::Dpo, None).await;
        let held = app
            .store
            .hold_for_approval(HoldRequest {
                actor: format!("api-key:{}", sender.prefix),
                owner: Some("sam".into()),
                class: "service:billing".into(),
                recipients: 500,
                window_count: 90,
                at: veto_core::Timestamp::now(),
            })
            .await
            .unwrap();
        let path = format!("/api/v1/approvals/{}", held.id);

        // Who may not: the requester's own key, the requester as DPO, a
        // DPO key naming nobody, a marketer.
        for (who, k) in [
            ("requester", &sender.key),
            ("requester's dpo key", &sams_dpo.key),
            ("nameless dpo", &nameless.key),
            ("marketer", &app.marketer),
        ] {
            let (status, body) = app.post(&path, Some(k), &json!({})).await;
            assert_eq!(status, 403, "{} {who}: {body}", app.name());
        }
        assert!(app.store.approvals(true).await.unwrap().len() == 1);

        let (status, body) = app
            .post("/api/v1/approvals/x1", Some(&dana.key), &json!({}))
            .await;
        assert_eq!(
            (status, error_of(&body).1.as_deref()),
            (404, Some("id")),
            "{body}"
        );
        let (status, _) = app
            .post("/api/v1/approvals/99999", Some(&dana.key), &json!({}))
            .await;
        assert_eq!(status, 404);

        let (status, body) = app.post(&path, Some(&dana.key), &json!({})).await;
        assert_eq!(status, 200, "{} {body}", app.name());
        assert_eq!(body["approval"]["approver_owner"], "dana");
        assert_eq!(body["approval"]["owner"], "sam");
        assert!(app.store.approvals(true).await.unwrap().is_empty());

        // The list: DPO and admin keys only.
        let res = app
            .client
            .get(app.url("/api/v1/approvals"))
            .bearer_auth(&dana.key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let list: serde_json::Value = res.json().await.unwrap();
        assert_eq!(list["approvals"][0]["id"], held.id);
        let res = app
            .client
            .get(app.url("/api/v1/approvals"))
            .bearer_auth(&app.viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 403);
        app.close().await;
    }
}
