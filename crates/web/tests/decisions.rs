//! `POST /api/v1/decisions` from the outside: may these people be contacted
//! on this topic and channel, with telephone preference screening for
//! calls (PECR reg 21). Every test runs on SQLite, and on PostgreSQL too
//! when `VETO_TEST_POSTGRES_URL` is set.

mod api_support;

use api_support::{TestApp, apps, error_of};
use serde_json::{Value, json};
use veto_core::{PhoneNumber, Role, Timestamp};
use veto_store::{TpsList, TpsListing};

const DAY: i64 = 86_400;

fn days_ago(d: i64) -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second() - d * DAY).unwrap()
}

fn phone(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s).unwrap()
}

/// A UK customer with a phone number and a purchase (the evidence a call
/// to a customer rests on).
async fn customer(app: &TestApp, email: &str, number: &str) {
    let (status, body) = app
        .post(
            "/api/v1/contacts",
            Some(&app.marketer),
            &json!({"email": email, "phone": number, "jurisdiction": "UK"}),
        )
        .await;
    assert!(status == 200 || status == 201, "{}: {body}", app.name());
    let (status, body) = app
        .purchases(&json!({"email": email, "opt_out_offered": true, "jurisdiction": "UK", "channel": "phone"}))
        .await;
    assert_eq!(status, 201, "{}: {body}", app.name());
}

async fn decide(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.post("/api/v1/decisions", Some(key), &body).await
}

fn one(res: &Value) -> &Value {
    &res["decisions"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_are_screened_against_the_tps_with_its_28_days() {
    for app in apps().await {
        let db = app.name();
        let viewer = app.key_for(Role::Viewer, "dialler").await;
        customer(&app, "fresh@example.com", "+447700900001").await;
        customer(&app, "listed@example.com", "+447700900002").await;
        customer(&app, "new-listing@example.com", "+447700900003").await;
        customer(&app, "agreed@example.com", "+447700900004").await;
        let (status, body) = app
            .consents(
                &json!({"email": "agreed@example.com", "topic": "news", "action": "grant",
                "channel": "phone", "wording": app.wording, "source": "api"}),
            )
            .await;
        assert_eq!(status, 201, "{db}: {body}");

        // Nothing screened yet: a call that needs screening is refused.
        let ask =
            json!({"topic": "news", "channel": "phone", "people": [{"phone": "+447700900001"}]});
        let (status, res) = decide(&app, &viewer, ask.clone()).await;
        assert_eq!(status, 200, "{db}: {res}");
        let d = one(&res);
        assert_eq!(d["allowed"], false, "{db}: {res}");
        assert_eq!(d["rule"], "PECR-21-SCREEN", "{db}: {res}");
        assert_eq!(d["reason"], "tps_not_screened", "{db}: {res}");
        assert_eq!(d["screening"]["stale"], true, "{db}: {res}");

        // A TPS list of today: one number listed 60 days ago, one 27 days ago.
        app.store
            .import_tps(
                TpsList::Tps,
                days_ago(0),
                "test",
                &[
                    TpsListing {
                        number: phone("+447700900002"),
                        listed_on: days_ago(60),
                    },
                    TpsListing {
                        number: phone("+447700900003"),
                        listed_on: days_ago(27),
                    },
                    TpsListing {
                        number: phone("+447700900004"),
                        listed_on: days_ago(400),
                    },
                ],
            )
            .await
            .unwrap();
        let (status, res) = decide(
            &app,
            &viewer,
            json!({"topic": "news", "channel": "phone", "people": [
                {"phone": "+44 7700 900001"}, {"phone": "+447700900002"}, {"email": "new-listing@example.com"},
                {"phone": "+447700900004"}, {"phone": "+447700900999"}
            ]}),
        )
        .await;
        assert_eq!(status, 200, "{db}: {res}");
        let d = res["decisions"].as_array().unwrap();
        assert_eq!(d.len(), 5, "{db}: {res}");
        // Not listed, fresh data, a customer: may be called.
        assert_eq!(
            (&d[0]["allowed"], &d[0]["rule"]),
            (&json!(true), &json!("PECR-21")),
            "{db}: {res}"
        );
        assert_eq!(d[0]["screening"]["stale"], false, "{db}: {res}");
        assert_eq!(d[0]["contacts"].as_array().unwrap().len(), 1, "{db}");
        // Listed 60 days ago: not.
        assert_eq!(
            (&d[1]["allowed"], &d[1]["reason"]),
            (&json!(false), &json!("tps_listed")),
            "{db}: {res}"
        );
        assert_eq!(d[1]["screening"]["listed_on"], json!(["tps"]), "{db}");
        // Listed 27 days ago: the 28 days of grace have not run out.
        assert_eq!(d[2]["allowed"], true, "{db}: {res}");
        // Asked about by address: screened against the number veto holds for them.
        assert_eq!(
            d[2]["screening"]["listed_on"],
            json!(["tps"]),
            "{db}: {res}"
        );
        assert_eq!(
            d[2]["contacts"].as_array().map(Vec::len),
            Some(1),
            "{db}: {res}"
        );
        // Listed, but told the organisation they agree to calls.
        assert_eq!(
            (&d[3]["allowed"], &d[3]["rule"]),
            (&json!(true), &json!("PECR-21")),
            "{db}: {res}"
        );
        assert!(d[3]["event"].as_i64().is_some(), "{db}: {res}");
        // A number veto has never heard of.
        assert_eq!(
            (&d[4]["allowed"], &d[4]["reason"]),
            (&json!(false), &json!("no_record")),
            "{db}: {res}"
        );

        // The list data gets old: 29 days on, screening is stale.
        app.store
            .import_tps(TpsList::Tps, days_ago(29), "old", &[])
            .await
            .unwrap();
        let (_, res) = decide(&app, &viewer, ask.clone()).await;
        let d = one(&res);
        assert_eq!(
            (&d["allowed"], &d["rule"], &d["reason"]),
            (
                &json!(false),
                &json!("PECR-21-SCREEN"),
                &json!("tps_screening_stale")
            ),
            "{db}: {res}"
        );
        assert!(
            d["explanation"]
                .as_str()
                .unwrap()
                .contains("more than 28 days ago"),
            "{db}: {res}"
        );
        assert_eq!(d["screening"]["stale"], true, "{db}: {res}");

        // Re-importing replaces the list: +447700900002 is no longer on it.
        app.store
            .import_tps(
                TpsList::Tps,
                days_ago(1),
                "new",
                &[TpsListing {
                    number: phone("+447700900003"),
                    listed_on: days_ago(27),
                }],
            )
            .await
            .unwrap();
        let (_, res) = decide(
            &app,
            &viewer,
            json!({"topic": "news", "channel": "phone", "people": [{"phone": "+447700900002"}]}),
        )
        .await;
        assert_eq!(one(&res)["allowed"], true, "{db}: {res}");
        assert_eq!(one(&res)["screening"]["listed_on"], json!([]), "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_withdrawal_or_erasure_is_a_no_whatever_the_channel() {
    for app in apps().await {
        let db = app.name();
        let viewer = app.key_for(Role::Viewer, "sms-tool").await;
        app.grant("jo@example.com", "news").await;
        app.grant("al@example.com", "news").await;
        app.withdraw("al@example.com", "news").await;
        let (status, res) = decide(
            &app,
            &viewer,
            json!({"topic": "news", "people": [{"email": "jo@example.com"}, {"email": "al@example.com"}, {"email": "nobody@example.com"}]}),
        )
        .await;
        assert_eq!(status, 200, "{db}: {res}");
        let d = res["decisions"].as_array().unwrap();
        assert_eq!(res["channel"], "email", "{db}");
        assert_eq!(d[0]["allowed"], true, "{db}: {res}");
        assert_eq!(
            (&d[1]["allowed"], &d[1]["reason"]),
            (&json!(false), &json!("withdrawn")),
            "{db}: {res}"
        );
        assert!(d[1]["event"].as_i64().is_some(), "{db}: {res}");
        assert_eq!(d[2]["reason"], "no_record", "{db}: {res}");
        assert!(d[0]["screening"].is_null(), "{db}: {res}");

        // Erased: by contact id it is gone; by address the suppression list answers.
        let id = d[0]["contacts"][0].as_i64().unwrap();
        let dpo = app.key_for(Role::Dpo, "dana").await;
        let (status, body) = app
            .post(
                "/api/v1/erasures",
                Some(&dpo),
                &json!({"email": "jo@example.com"}),
            )
            .await;
        assert!(status < 300, "{db}: {body}");
        let (_, res) = decide(
            &app,
            &viewer,
            json!({"topic": "news", "people": [{"contact": id}, {"email": "jo@example.com"}]}),
        )
        .await;
        let d = res["decisions"].as_array().unwrap();
        assert_eq!(d[0]["allowed"], false, "{db}: {res}");
        assert_eq!(d[1]["allowed"], false, "{db}: {res}");
        assert_eq!(d[1]["reason"], "suppressed", "{db}: {res}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_name_what_was_wrong() {
    for app in apps().await {
        let db = app.name();
        let viewer = app.key_for(Role::Viewer, "dialler").await;
        for (body, field, code) in [
            (
                json!({"channel": "phone", "people": [{"phone": "+447700900001"}]}),
                "topic",
                "missing_field",
            ),
            (
                json!({"topic": "nope", "people": [{"phone": "+447700900001"}]}),
                "topic",
                "unknown_topic",
            ),
            (
                json!({"topic": "news", "channel": "fax", "people": [{"phone": "+447700900001"}]}),
                "channel",
                "invalid_value",
            ),
            (json!({"topic": "news"}), "people", "missing_field"),
            (
                json!({"topic": "news", "people": []}),
                "people",
                "invalid_length",
            ),
            (
                json!({"topic": "news", "people": [{"phone": "07700 900001"}]}),
                "people[0].phone",
                "invalid_phone",
            ),
            (
                json!({"topic": "news", "people": [{"email": "jo@example.com", "phone": "+447700900001"}]}),
                "people[0]",
                "invalid_person",
            ),
            (
                json!({"topic": "news", "people": [{"contact": -3}]}),
                "people[0].contact",
                "invalid_type",
            ),
            (
                json!({"topic": "news", "people": [{"fax": "1"}]}),
                "people[0].fax",
                "unknown_field",
            ),
            (
                json!({"topic": "news", "people": [{"email": "x"}], "force": true}),
                "force",
                "unknown_field",
            ),
        ] {
            let (status, res) = decide(&app, &viewer, body.clone()).await;
            assert_eq!(status, 422, "{db}: {body} → {res}");
            let (got_code, got_field) = error_of(&res);
            assert_eq!(
                (got_code.as_str(), got_field.as_deref()),
                (code, Some(field)),
                "{db}: {body} → {res}"
            );
        }
        let many: Vec<Value> = (0..1001)
            .map(|i| json!({"email": format!("p{i}@example.com")}))
            .collect();
        let (status, res) = decide(&app, &viewer, json!({"topic": "news", "people": many})).await;
        assert_eq!(status, 422, "{db}: {res}");
        app.close().await;
    }
}
