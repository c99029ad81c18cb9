//! The preference centre from the outside: what a person sees and presses
//! over HTTP, what the ledger then holds, and what the guard then decides.
//! Every test runs on SQLite, and on PostgreSQL too when
//! `VETO_TEST_POSTGRES_URL` is set.

mod pref_support;

use jiff::ToSpan;
use jiff::tz::TimeZone;
use pref_support::{
    TOPICS, USER_AGENT, apps, by_id, email, forge, form_with, forms, link_in, mail_body,
    reason_code, spawn_app, spawn_app_on, sqlite, text, token_of,
};
use reqwest::StatusCode;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, RETRY_AFTER,
};
use serde_json::Value;
use veto_core::{Channel, EventKind, FrequencyLimit, Period, Scope, Source, Timestamp};
use veto_mail::{Claims, Purpose, TokenScope};
use veto_store::{RequestFilter, RequestKind, RequestStatus, RequestVia, StoredEvent};

const JO: &str = "jo@example.com";
const MASKED: &str = "j\u{2022}\u{2022}\u{2022}@example.com";

fn now_minute() -> u64 {
    (Timestamp::now().as_second() / 60) as u64
}

/// "28 February 2027": how the English page writes a date (UTC).
fn english_date(t: Timestamp) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let d = t.to_zoned_datetime(TimeZone::UTC).date();
    format!(
        "{} {} {}",
        d.day(),
        MONTHS[d.month() as usize - 1],
        d.year()
    )
}

fn only_new(before: &[StoredEvent], after: Vec<StoredEvent>) -> Vec<StoredEvent> {
    after
        .into_iter()
        .filter(|e| !before.iter().any(|b| b.event.id == e.event.id))
        .collect()
}

// 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_every_topic_its_state_and_only_the_masked_address() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        app.grant(JO, "offers").await;
        let events = app.count_events().await;
        let url = app.prefs_url(JO).await;

        let res = app.get(&url).await;
        assert_eq!(res.status(), StatusCode::OK, "{db}");
        assert!(res.headers().get(CONTENT_SECURITY_POLICY).is_some(), "{db}");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store", "{db}");
        let html = res.text().await.expect("body");
        let page = text(&html);

        assert!(page.contains(MASKED), "{db}: the masked address is shown");
        assert!(!page.contains(JO), "{db}: never the full address");
        for (_, name, description) in TOPICS {
            assert!(page.contains(name), "{db}: {name}");
            assert!(page.contains(description), "{db}: {description}");
        }
        let save = form_with(&html, "save");
        assert!(
            save.is_ticked(app.topic("news").await.id.0),
            "{db}: news is on"
        );
        assert!(
            save.is_ticked(app.topic("offers").await.id.0),
            "{db}: offers is on"
        );
        assert!(
            !save.is_ticked(app.topic("boots").await.id.0),
            "{db}: boots is off"
        );
        assert_eq!(save.get("frequency"), Some("none"), "{db}");
        assert_eq!(save.get("pause"), Some("none"), "{db}");
        // Every input has its label; groups have their legends.
        for t in ["news", "offers", "boots"] {
            let id = app.topic(t).await.id.0;
            assert!(
                html.contains(&format!("<label for=\"topic-{id}\">")),
                "{db}: label for {t}"
            );
        }
        assert!(html.contains("<label for=\"frequency\">"), "{db}");
        assert_eq!(html.matches("<legend>").count(), 2, "{db}");
        for pause in ["none", "1", "3", "6"] {
            assert!(
                html.contains(&format!("<label for=\"pause-{pause}\">")),
                "{db}: pause {pause}"
            );
        }

        assert!(page.contains("Stop all marketing"), "{db}");
        assert!(
            page.contains("You'll still get these messages, because they are about things you have with us, not marketing:"),
            "{db}"
        );
        assert!(
            page.contains("Bills and receipts for things you bought"),
            "{db}"
        );
        assert!(
            page.contains("Download my data") && page.contains("Erase my data"),
            "{db}"
        );
        assert!(
            page.contains("Example Shop · 1 High Street, Cardiff"),
            "{db}: who we are"
        );
        assert!(
            page.contains("https://shop.example/privacy"),
            "{db}: privacy link"
        );
        assert_eq!(
            forms(&html).len(),
            4,
            "{db}: save, stop all, download, erase"
        );

        assert_eq!(
            app.count_events().await,
            events,
            "{db}: looking changes nothing"
        );
        app.close().await;
    }
}

// 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saving_records_exactly_the_changes_with_their_evidence() {
    for app in apps().await {
        let db = app.name();
        let contact = app.grant(JO, "news").await;
        app.grant(JO, "offers").await;
        let (news, offers, boots) = (
            app.topic("news").await,
            app.topic("offers").await,
            app.topic("boots").await,
        );
        let before = app.events_of(contact).await;
        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let shown_explain = by_id(&html, "explain");

        let mut form = form_with(&html, "save");
        form.tick(news.id.0, false)
            .tick(boots.id.0, true)
            .set("pause", "3")
            .set("frequency", "1w");
        let sent_at = Timestamp::now();
        let (status, done) = app
            .submit(&format!("{}{}", app.base, form.action), &form.fields)
            .await;
        assert_eq!(status, StatusCode::OK, "{db}: {done}");

        let new = only_new(&before, app.events_of(contact).await);
        assert_eq!(new.len(), 4, "{db}: four changes, four events: {new:#?}");
        let mut kinds: Vec<&str> = new.iter().map(|e| e.event.kind.name()).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["frequency", "grant", "pause", "withdraw"], "{db}");
        let of = |kind: &str| {
            new.iter()
                .find(|e| e.event.kind.name() == kind)
                .expect("event")
        };
        assert_eq!(of("withdraw").event.scope, Scope::Topic(news.id), "{db}");
        assert_eq!(of("grant").event.scope, Scope::Topic(boots.id), "{db}");
        assert_eq!(of("withdraw").event.channel, Some(Channel::Email), "{db}");
        assert_eq!(of("grant").event.channel, Some(Channel::Email), "{db}");
        assert_eq!(
            of("frequency").event.kind,
            EventKind::Frequency(Some(FrequencyLimit {
                max: 1,
                per: Period::Week
            })),
            "{db}"
        );
        let EventKind::Pause { until } = of("pause").event.kind else {
            panic!("{db}: not a pause")
        };
        let expected = sent_at
            .to_zoned_datetime(TimeZone::UTC)
            .checked_add(3.months())
            .expect("date")
            .timestamp();
        assert!(
            (until.as_second() - expected.as_second()).abs() < 120,
            "{db}: {until} vs {expected}"
        );
        assert!(
            !new.iter().any(|e| e.event.scope == Scope::Topic(offers.id)),
            "{db}: offers unchanged"
        );

        for e in &new {
            assert_eq!(e.event.source, Source::PreferenceCentre, "{db}");
            assert_eq!(e.event.source.as_str(), "preference_centre", "{db}");
            assert_eq!(e.actor, "person", "{db}");
            let wording = app
                .store
                .wording(e.wording.expect("a wording"))
                .await
                .expect("wording")
                .expect("stored");
            assert_eq!(
                wording.text, shown_explain,
                "{db}: the wording is the page's text"
            );
            let personal = e.personal.as_ref().expect("personal data");
            assert_eq!(personal.ip.as_deref(), Some("127.0.0.1"), "{db}");
            assert_eq!(personal.user_agent.as_deref(), Some(USER_AGENT), "{db}");
        }

        let page = text(&done);
        for line in [
            "You won't get Product news any more.".to_owned(),
            "You'll now get Boot offers.".to_owned(),
            "Marketing emails: at most 1 a week.".to_owned(),
            format!("Marketing emails are paused until {}.", english_date(until)),
        ] {
            assert!(page.contains(&line), "{db}: {line:?} in\n{page}");
        }
        assert!(
            !page.contains("Offers."),
            "{db}: unchanged topics are not listed"
        );
        assert_eq!(done.matches("<li>").count(), 4, "{db}: exactly the changes");
        assert!(
            text(&done).contains(&format!("href=\"/p/{}?lang=en\"", token_of(&url))),
            "{db}: a link back"
        );

        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "withdrawn",
            "{db}"
        );
        assert_eq!(
            reason_code(&app.decision(JO, "boots").await),
            "paused",
            "{db}"
        );
        assert_eq!(
            reason_code(&app.decision(JO, "offers").await),
            "paused",
            "{db}"
        );

        // The page now shows the new state, the pause and the limit.
        let (_, html) = app.page(&url).await;
        let form = form_with(&html, "save");
        assert!(
            !form.is_ticked(news.id.0) && form.is_ticked(boots.id.0) && form.is_ticked(offers.id.0),
            "{db}"
        );
        assert_eq!(form.get("frequency"), Some("1w"), "{db}");
        assert_eq!(form.get("pause"), Some("keep"), "{db}");
        assert!(
            text(&html).contains(&format!("paused until {}", english_date(until))),
            "{db}"
        );
        app.close().await;
    }
}

// 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saving_unchanged_choices_records_nothing() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let events = app.count_events().await;
        let form = form_with(&html, "save");
        let (status, done) = app
            .submit(&format!("{}{}", app.base, form.action), &form.fields)
            .await;
        assert_eq!(status, StatusCode::OK, "{db}");
        assert!(
            text(&done).contains("Nothing needed changing"),
            "{db}: {done}"
        );
        assert_eq!(
            app.count_events().await,
            events,
            "{db}: no event for what did not change"
        );
        app.close().await;
    }
}

// 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_all_marketing_records_an_objection_and_the_guard_denies_every_topic() {
    for app in apps().await {
        let db = app.name();
        let contact = app.grant(JO, "news").await;
        app.grant(JO, "offers").await;
        let before = app.events_of(contact).await;
        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let stop = form_with(&html, "stop_all");

        let (status, done) = app
            .submit(&format!("{}{}", app.base, stop.action), &stop.fields)
            .await;
        assert_eq!(status, StatusCode::OK, "{db}");
        let page = text(&done);
        assert!(
            page.contains("You won't get any marketing from Example Shop any more"),
            "{db}: {page}"
        );
        assert!(
            page.contains("Bills and receipts for things you bought"),
            "{db}: what still arrives"
        );

        let new = only_new(&before, app.events_of(contact).await);
        assert_eq!(new.len(), 1, "{db}");
        let e = &new[0];
        assert_eq!(e.event.kind, EventKind::Object, "{db}");
        assert_eq!(e.event.scope, Scope::All, "{db}");
        assert_eq!(e.event.channel, None, "{db}: GDPR Art 21, every channel");
        assert_eq!(e.event.source, Source::PreferenceCentre, "{db}");
        let wording = app
            .store
            .wording(e.wording.expect("wording"))
            .await
            .expect("wording")
            .expect("stored");
        assert_eq!(wording.text, by_id(&html, "stop-explain"), "{db}");

        for (topic, _, _) in TOPICS {
            assert_eq!(
                reason_code(&app.decision(JO, topic).await),
                "objected",
                "{db}: {topic}"
            );
        }
        let (_, html) = app.page(&url).await;
        let form = form_with(&html, "save");
        assert!(
            form.checkboxes.iter().all(|(_, on)| !on),
            "{db}: nothing ticked now"
        );

        // The person can come back for one topic; the rest stay stopped.
        let mut form = form;
        form.tick(app.topic("offers").await.id.0, true);
        let (status, done) = app
            .submit(&format!("{}{}", app.base, form.action), &form.fields)
            .await;
        assert_eq!(status, StatusCode::OK, "{db}");
        assert!(text(&done).contains("You'll now get Offers."), "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "offers").await),
            "allowed",
            "{db}"
        );
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "objected",
            "{db}"
        );
        app.close().await;
    }
}

// 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_person_can_re_grant_here_after_a_one_click_withdrawal() {
    for app in apps().await {
        let db = app.name();
        let contact = app.grant(JO, "news").await;
        let news = app.topic("news").await;
        let unsub = app.unsubscribe_url_for(contact, Some(news.id.0));
        let res = app
            .client
            .post(&unsub)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .expect("one-click");
        assert_eq!(res.status(), StatusCode::OK, "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "withdrawn",
            "{db}"
        );

        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let mut form = form_with(&html, "save");
        assert!(
            !form.is_ticked(news.id.0),
            "{db}: shown as off after the withdrawal"
        );
        form.tick(news.id.0, true);
        let (status, done) = app
            .submit(&format!("{}{}", app.base, form.action), &form.fields)
            .await;
        assert_eq!(status, StatusCode::OK, "{db}: {done}");
        assert!(text(&done).contains("You'll now get Product news."), "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );
        let last = app.events_of(contact).await.pop().expect("an event");
        assert_eq!(
            (last.event.kind, last.event.source),
            (EventKind::Grant, Source::PreferenceCentre),
            "{db}"
        );
        app.close().await;
    }
}

// 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_from_another_site_is_refused_and_changes_nothing() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let events = app.count_events().await;
        for f in forms(&html) {
            let target = format!("{}{}", app.base, f.action);
            for headers in [
                &[("Origin", "https://evil.example")][..],
                &[("Origin", "https://127.0.0.1")],
                &[("Origin", "null")],
                &[("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
                &[("Sec-Fetch-Site", "cross-site")],
                &[
                    ("Origin", "https://evil.example"),
                    ("Sec-Fetch-Site", "same-origin"),
                ],
            ] {
                let res = app.post(&target, &f.fields, headers).await;
                assert_eq!(
                    res.status(),
                    StatusCode::FORBIDDEN,
                    "{db}: {headers:?} to {}",
                    f.action
                );
                let body = text(&res.text().await.expect("body"));
                assert!(
                    body.contains("another website") && body.contains("Nothing was changed"),
                    "{db}: {body}"
                );
            }
        }
        assert_eq!(app.count_events().await, events, "{db}: nothing recorded");
        assert!(app.outbox_messages().is_empty(), "{db}: nothing sent");

        // The same form from veto's own origin goes through; so does the
        // `Origin: null` that browsers send under `Referrer-Policy:
        // no-referrer`, when `Sec-Fetch-Site` says it is the same origin.
        let stop = form_with(&html, "stop_all");
        let target = format!("{}{}", app.base, stop.action);
        let res = app
            .post(&target, &stop.fields, &[("Origin", app.base.as_str())])
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{db}");
        assert_eq!(app.count_events().await, events + 1, "{db}");
        let same = [("Origin", "null"), ("Sec-Fetch-Site", "same-origin")];
        let res = app.post(&target, &stop.fields, &same).await;
        assert_eq!(res.status(), StatusCode::OK, "{db}");
        assert_eq!(app.count_events().await, events + 2, "{db}");
        app.close().await;
    }
}

// 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_forged_expired_or_borrowed_form_field_is_refused() {
    for app in apps().await {
        let db = app.name();
        let jo = app.grant(JO, "news").await;
        let al = app.grant("al@example.com", "news").await;
        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let stop = form_with(&html, "stop_all");
        let target = format!("{}{}", app.base, stop.action);
        let token = stop.get("form").expect("form field").to_owned();
        let mint = |contact: i64, minute: u64, purpose| {
            app.state
                .keys()
                .mint(
                    &Claims {
                        contact: contact as u64,
                        scope: TokenScope::AllMarketing,
                        message: Some(minute),
                    },
                    purpose,
                )
                .expect("mint")
                .to_string()
        };
        let events = app.count_events().await;
        let cases = [
            ("missing", None),
            ("forged", Some(forge(&token, 7))),
            (
                "expired",
                Some(mint(jo.0, now_minute() - 121, Purpose::Form)),
            ),
            (
                "from the future",
                Some(mint(jo.0, now_minute() + 30, Purpose::Form)),
            ),
            (
                "another contact's",
                Some(mint(al.0, now_minute(), Purpose::Form)),
            ),
            ("another purpose", Some(token_of(&url).to_owned())),
        ];
        for (what, field) in cases {
            let mut fields: Vec<(String, String)> = stop
                .fields
                .iter()
                .filter(|(k, _)| k != "form")
                .cloned()
                .collect();
            if let Some(f) = field {
                fields.push(("form".into(), f));
            }
            let res = app.post(&target, &fields, &[]).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{db}: {what}");
            assert!(
                text(&res.text().await.expect("body")).contains("too old"),
                "{db}: {what}"
            );
        }
        assert_eq!(app.count_events().await, events, "{db}: nothing recorded");

        // A form rendered nearly two hours ago still works.
        let mut fields: Vec<(String, String)> = stop
            .fields
            .iter()
            .filter(|(k, _)| k != "form")
            .cloned()
            .collect();
        fields.push(("form".into(), mint(jo.0, now_minute() - 110, Purpose::Form)));
        assert_eq!(
            app.post(&target, &fields, &[]).await.status(),
            StatusCode::OK,
            "{db}"
        );
        assert_eq!(app.count_events().await, events + 1, "{db}");
        app.close().await;
    }
}

// 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn download_sends_a_link_to_the_address_and_the_link_gives_the_data() {
    for app in apps().await {
        let db = app.name();
        let contact = app.grant(JO, "news").await;
        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let download = form_with(&html, "/download");
        let events = app.count_events().await;

        let (status, sent) = app
            .submit(
                &format!("{}{}", app.base, download.action),
                &download.fields,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{db}: {sent}");
        assert!(
            text(&sent).contains(&format!(
                "We've sent a link to {MASKED}; it works for an hour."
            )),
            "{db}: {sent}"
        );
        assert!(!text(&sent).contains(JO), "{db}");
        assert_eq!(
            app.count_events().await,
            events,
            "{db}: asking is not a consent event"
        );

        let mail = app.outbox_messages();
        assert_eq!(mail.len(), 1, "{db}: exactly one message");
        assert!(mail[0].contains(&format!("Delivered-To: {JO}")), "{db}");
        let body = mail_body(&mail[0]);
        let link = link_in(&body, &format!("{}/p/confirm/download/", app.base));
        assert!(body.contains("one hour"), "{db}: {body}");

        let res = app.get(&link).await;
        assert_eq!(res.status(), StatusCode::OK, "{db}");
        assert!(
            res.headers()[CONTENT_TYPE]
                .to_str()
                .expect("type")
                .starts_with("application/json"),
            "{db}"
        );
        assert_eq!(
            res.headers()[CONTENT_DISPOSITION],
            "attachment; filename=\"my-data.json\"",
            "{db}"
        );
        let v: Value = res.json().await.expect("json");
        assert_eq!(v["contact"]["email"], JO, "{v:#}");
        assert_eq!(v["organisation"], "Example Shop", "{v:#}");
        let evs = v["consent_events"].as_array().expect("consent_events");
        assert_eq!(evs.len(), 1, "{v:#}");
        assert_eq!(evs[0]["kind"], "grant");
        assert_eq!(evs[0]["topic"], "news");
        assert_eq!(evs[0]["personal_data"]["ip"], "192.0.2.10");
        assert_eq!(
            v["wordings_shown"][0]["text"],
            "Yes, email me about new products and offers."
        );
        let classes: Vec<&str> = v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["class"].as_str())
            .collect();
        assert_eq!(classes, ["requested:download-data"], "{v:#}");
        // The DPO's list shows it: asked, checked by the link, answered.
        let res = app.get(&link).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{db}: a second click works too"
        );
        let requests = app
            .store
            .requests(RequestFilter::All, Timestamp::now(), None, 10)
            .await
            .expect("requests");
        assert_eq!(
            requests.len(),
            1,
            "{db}: one request, however often the link is opened"
        );
        let r = &requests[0];
        assert_eq!(
            (r.kind, r.via, r.status(), r.contact, r.email.as_deref()),
            (
                RequestKind::Access,
                RequestVia::PreferenceCentre,
                RequestStatus::Answered,
                Some(contact),
                Some(JO)
            ),
            "{db}"
        );
        assert!(
            r.identity.is_some() && r.received_at <= r.answer.as_ref().expect("answer").at,
            "{db}"
        );

        // Only that link: altered, expired, or made for erasure, it is not found.
        let token = token_of(&link);
        let expired = app
            .state
            .keys()
            .mint(
                &Claims {
                    contact: contact.0 as u64,
                    scope: TokenScope::AllMarketing,
                    message: Some(now_minute() - 1),
                },
                Purpose::ConfirmDownload,
            )
            .expect("mint");
        let erase = app
            .state
            .keys()
            .mint(
                &Claims {
                    contact: contact.0 as u64,
                    scope: TokenScope::AllMarketing,
                    message: Some(now_minute() + 30),
                },
                Purpose::ConfirmErase,
            )
            .expect("mint");
        for bad in [
            forge(token, 3),
            expired.to_string(),
            erase.to_string(),
            token_of(&url).to_owned(),
        ] {
            let res = app
                .get(&format!("{}/p/confirm/download/{bad}", app.base))
                .await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{db}: {bad}");
            assert!(!res.text().await.expect("body").contains(JO), "{db}");
        }
        app.close().await;
    }
}

// 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erase_takes_a_link_a_page_and_a_press_and_keeps_the_no() {
    for app in apps().await {
        let db = app.name();
        let contact = app.grant(JO, "news").await;
        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let erase = form_with(&html, "/erase");
        let (status, sent) = app
            .submit(&format!("{}{}", app.base, erase.action), &erase.fields)
            .await;
        assert_eq!(status, StatusCode::OK, "{db}");
        assert!(
            text(&sent).contains(&format!("We've sent a link to {MASKED}")),
            "{db}"
        );
        let mail = app.outbox_messages();
        assert_eq!(mail.len(), 1, "{db}");
        let link = link_in(
            &mail_body(&mail[0]),
            &format!("{}/p/confirm/erase/", app.base),
        );

        // Following the link explains, and changes nothing yet.
        let (status, page) = app.page(&link).await;
        assert_eq!(status, StatusCode::OK, "{db}");
        let words = text(&page);
        assert!(
            words.contains("keyed hash") && words.contains(MASKED),
            "{db}: {words}"
        );
        assert!(words.contains("Nothing has been erased yet"), "{db}");
        assert!(
            app.store
                .find_contact(&email(JO))
                .await
                .expect("find")
                .is_some(),
            "{db}"
        );
        let confirm = forms(&page).remove(0);
        let target = format!("{}{}", app.base, confirm.action);

        // From another site: refused, nothing erased.
        let res = app
            .post(
                &target,
                &confirm.fields,
                &[("Origin", "https://evil.example")],
            )
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{db}");
        assert!(
            app.store
                .find_contact(&email(JO))
                .await
                .expect("find")
                .is_some(),
            "{db}"
        );

        let (status, done) = app.submit(&target, &confirm.fields).await;
        assert_eq!(status, StatusCode::OK, "{db}: {done}");
        let done = text(&done);
        assert!(
            done.contains("Your data is erased") && done.contains("keyed hash"),
            "{db}: {done}"
        );
        assert!(
            app.store
                .find_contact(&email(JO))
                .await
                .expect("find")
                .is_none(),
            "{db}: gone"
        );
        assert!(
            app.store
                .is_suppressed(&email(JO))
                .await
                .expect("suppressed")
                .is_some(),
            "{db}: the no is kept"
        );
        let last = app.events_of(contact).await.pop().expect("event");
        assert_eq!(last.event.kind, EventKind::Erasure, "{db}");
        let requests = app
            .store
            .requests(RequestFilter::All, Timestamp::now(), None, 10)
            .await
            .expect("requests");
        assert_eq!(requests.len(), 1, "{db}");
        let r = &requests[0];
        assert_eq!(
            (r.kind, r.via, r.status(), r.contact, r.email.as_deref()),
            (
                RequestKind::Erasure,
                RequestVia::PreferenceCentre,
                RequestStatus::Answered,
                Some(contact),
                None
            ),
            "{db}: recorded for the DPO, without the address"
        );
        assert_eq!(last.actor, "person", "{db}");
        assert_ne!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );

        // The links still answer, honestly, without any personal data.
        let (status, page) = app.page(&url).await;
        assert_eq!(status, StatusCode::OK, "{db}");
        assert!(
            text(&page).contains("We don't hold your details any more"),
            "{db}"
        );
        assert!(!page.contains(MASKED) && !page.contains(JO), "{db}");
        app.close().await;
    }
}

// 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn welsh_readers_get_the_page_and_its_wording_in_welsh() {
    let app = spawn_app().await;
    let contact = app.grant(JO, "news").await;
    let url = app.prefs_url(JO).await;
    let res = app
        .get_with(&url, &[("Accept-Language", "cy-GB,cy;q=0.9,en;q=0.5")])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.expect("body");
    assert!(html.contains("<html lang=\"cy\">"));
    let page = text(&html);
    for welsh in [
        "Eich dewisiadau e-bost",
        "Cadw fy newisiadau",
        "Atal pob marchnata",
        "Lawrlwytho fy nata",
        "Dileu fy nata",
    ] {
        assert!(page.contains(welsh), "{welsh} in\n{page}");
    }
    assert!(!page.contains("Save my choices"));

    let mut form = form_with(&html, "save");
    assert!(form.action.ends_with("?lang=cy"));
    form.tick(app.topic("news").await.id.0, false);
    let (status, done) = app
        .submit(&format!("{}{}", app.base, form.action), &form.fields)
        .await;
    assert_eq!(status, StatusCode::OK);
    let done = text(&done);
    assert!(done.contains("Mae eich dewisiadau wedi'u cadw"), "{done}");
    assert!(
        done.contains("Fyddwch chi ddim yn cael Product news mwyach."),
        "{done}"
    );
    let last = app.events_of(contact).await.pop().expect("event");
    let wording = app
        .store
        .wording(last.wording.expect("wording"))
        .await
        .expect("wording")
        .expect("stored");
    assert_eq!(wording.text, by_id(&html, "explain"));
    assert!(wording.text.starts_with("Ticiwch"), "{}", wording.text);

    // ?lang= wins over the browser's preference.
    let (_, english) = app.page(&format!("{url}?lang=en")).await;
    assert!(english.contains("<html lang=\"en\">") && text(&english).contains("Save my choices"));
    app.close().await;
}

// 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_string_that_others_wrote_is_escaped() {
    let topics = [(
        "sneaky",
        "<script>alert('name')</script>",
        "<img src=x onerror=alert(1)> & <script>alert('desc')</script>",
    )];
    let app = spawn_app_on(sqlite().await, &topics).await;
    app.grant(JO, "sneaky").await;
    let url = app.prefs_url(JO).await;
    let (status, html) = app.page(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(
        text(&html).contains("<script>alert('name')</script>"),
        "shown as text"
    );

    let mut form = form_with(&html, "save");
    form.tick(app.topic("sneaky").await.id.0, false);
    let (_, done) = app
        .submit(&format!("{}{}", app.base, form.action), &form.fields)
        .await;
    assert!(!done.contains("<script"), "{done}");
    assert!(
        text(&done).contains("You won't get <script>alert('name')</script> any more."),
        "{done}"
    );
    app.close().await;
}

// 12.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_link_gets_the_not_found_page_and_many_get_429() {
    let app = spawn_app().await;
    let contact = app.grant(JO, "news").await;
    let url = app.prefs_url(JO).await;
    let token = token_of(&url).to_owned();
    let unsubscribe = app.unsubscribe_url_for(contact, None);
    for bad in [
        forge(&token, 0),
        forge(&token, 39),
        token_of(&unsubscribe).to_owned(),
        "nonsense".into(),
    ] {
        let res = app.get(&format!("{}/p/{bad}", app.base)).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{bad}");
        let body = res.text().await.expect("body");
        assert!(text(&body).contains("This link doesn't work"), "{body}");
        let res = app
            .post(
                &format!("{}/p/{bad}", app.base),
                &[("action".into(), "stop_all".into())],
                &[],
            )
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{bad}");
    }
    for path in ["/p/confirm/erase/", "/p/confirm/download/"] {
        let res = app.get(&format!("{}{path}{token}", app.base)).await;
        assert_eq!(
            res.status(),
            StatusCode::NOT_FOUND,
            "{path}: a preference token is not a confirmation"
        );
    }
    // Guessing is limited per address (the budget the unsubscribe pages share).
    let mut limited = false;
    for i in 0..40 {
        let res = app
            .get(&format!("{}/p/{}", app.base, forge(&token, i % 40)))
            .await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "guessing tokens is rate limited");
    assert_eq!(app.count_events().await, 1);
    app.close().await;
}

// 13.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_three_links_an_hour_go_to_one_address() {
    let app = spawn_app().await;
    app.grant(JO, "news").await;
    let url = app.prefs_url(JO).await;
    let (_, html) = app.page(&url).await;
    let download = form_with(&html, "/download");
    let erase = form_with(&html, "/erase");
    for form in [&download, &erase, &download] {
        let (status, _) = app
            .submit(&format!("{}{}", app.base, form.action), &form.fields)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let res = app
        .post(&format!("{}{}", app.base, erase.action), &erase.fields, &[])
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()[RETRY_AFTER]
        .to_str()
        .expect("retry")
        .parse()
        .expect("seconds");
    assert!((3000..=3600).contains(&wait), "{wait}");
    let body = text(&res.text().await.expect("body"));
    assert!(body.contains("at most 3 of these links an hour"), "{body}");
    assert_eq!(app.outbox_messages().len(), 3, "the fourth was not sent");
    app.close().await;
}

// 14.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_pause_can_be_ended_and_a_limit_lifted() {
    for app in apps().await {
        let db = app.name();
        let contact = app.grant(JO, "news").await;
        let url = app.prefs_url(JO).await;
        let (_, html) = app.page(&url).await;
        let mut form = form_with(&html, "save");
        form.set("pause", "1").set("frequency", "2m");
        let (_, done) = app
            .submit(&format!("{}{}", app.base, form.action), &form.fields)
            .await;
        assert!(
            text(&done).contains("Marketing emails: at most 2 a month."),
            "{db}: {done}"
        );
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "paused",
            "{db}"
        );

        let (_, html) = app.page(&url).await;
        assert!(
            html.contains("<label for=\"pause-end\">"),
            "{db}: a way to end the pause"
        );
        let mut form = form_with(&html, "save");
        assert!(
            form.is_ticked(app.topic("news").await.id.0),
            "{db}: a paused topic is still chosen"
        );
        let before = app.events_of(contact).await;
        form.set("pause", "end").set("frequency", "none");
        let (_, done) = app
            .submit(&format!("{}{}", app.base, form.action), &form.fields)
            .await;
        let done = text(&done);
        assert!(done.contains("Your pause has ended"), "{db}: {done}");
        assert!(
            done.contains("There's no limit on how many marketing emails you get."),
            "{db}"
        );
        let new = only_new(&before, app.events_of(contact).await);
        let kinds: Vec<&str> = new.iter().map(|e| e.event.kind.name()).collect();
        assert_eq!(kinds, ["frequency", "pause"], "{db}");
        assert_eq!(new[0].event.kind, EventKind::Frequency(None), "{db}");
        assert_eq!(
            reason_code(&app.decision(JO, "news").await),
            "allowed",
            "{db}"
        );
        app.close().await;
    }
}

// 15.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forms_sent_after_an_erasure_get_an_honest_page() {
    let app = spawn_app().await;
    app.grant(JO, "news").await;
    let url = app.prefs_url(JO).await;
    let (_, html) = app.page(&url).await;
    app.store
        .erase(&email(JO), "cli", Timestamp::now())
        .await
        .expect("erase");
    let events = app.count_events().await;
    for f in forms(&html) {
        let (status, page) = app
            .submit(&format!("{}{}", app.base, f.action), &f.fields)
            .await;
        assert_eq!(status, StatusCode::OK, "{}", f.action);
        assert!(
            text(&page).contains("We don't hold your details any more"),
            "{page}"
        );
    }
    assert_eq!(app.count_events().await, events);
    assert!(app.outbox_messages().is_empty());
    app.close().await;
}
