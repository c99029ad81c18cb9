//! The admin UI's sending pages over HTTP: campaigns (the form, the
//! controls, live progress), approvals of held service sends, and the
//! outbox viewer over the maildir the campaign sender writes to. Every test
//! runs on SQLite, and on PostgreSQL too when `VETO_TEST_POSTGRES_URL` is set.

mod admin_support;
mod api_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api_support::{TestApp, sending_apps};
use serde_json::{Value, json};
use veto_core::Role;
use veto_sender::service::ServiceSettings;

fn service() -> ServiceSettings {
    ServiceSettings {
        types: BTreeSet::from(["billing".to_owned()]),
        bulk_threshold: 5,
        bulk_window: Duration::from_secs(3600),
    }
}

const TEXT: &str = "Hello {{ name or email }},\nWhat we made this winter.\n";
const HTML: &str = "<p>Hello {{ name or email }}</p><script>alert(1)</script>";

fn campaign_form<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", "Winter news"),
        ("topic", "news"),
        ("from", "news@shop.example"),
        ("from_name", "Shop"),
        ("subject", "Winter news for {{ email }}"),
        ("text", TEXT),
        ("html", HTML),
        ("scheduled_at", ""),
        ("rate", "50"),
        ("domain_rate", ""),
        ("concurrency", "2"),
    ]
}

/// The campaign id at the end of a `/admin/campaigns/{id}` location.
fn id_in(location: &str) -> i64 {
    location
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no campaign id in {location:?}"))
}

async fn progress(staff: &admin_support::Staff<'_>, id: i64) -> Value {
    let page = staff.get(&format!("/admin/campaigns/{id}/progress")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    serde_json::from_str(&page.body).unwrap_or_else(|e| panic!("{e}: {}", page.body))
}

/// Every `href="/admin/outbox/…"` on a page.
fn outbox_links(body: &str) -> Vec<String> {
    body.split("href=\"/admin/outbox/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|s| format!("/admin/outbox/{}", s.replace("&amp;", "&")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_marketer_writes_a_campaign_starts_it_and_watches_it_reach_only_those_who_said_yes() {
    for app in sending_apps(service()).await {
        let db = app.name();
        for a in ["ann@example.com", "bob@example.com", "carl@example.com"] {
            app.grant(a, "news").await;
        }
        app.withdraw("carl@example.com", "news").await;
        let mia = admin_support::sign_in(&app, "mia", Role::Marketer).await;

        let list = mia.get("/admin/campaigns").await;
        assert_eq!(list.status, 200, "{db}: {}", list.body);
        assert!(list.body.contains("href=\"/admin/campaigns/new\""), "{db}");
        let form = mia.get("/admin/campaigns/new").await;
        assert_eq!(form.status, 200, "{db}: {}", form.body);
        assert!(form.body.contains("<label for=\"subject\">"), "{db}");

        // Mistakes come back with the form as typed and the field named.
        for (field, bad, says) in [
            ("from", "not an address", "from:"),
            ("topic", "nope", "topic:"),
            ("subject", "Hi {{ name ", "subject:"),
            ("rate", "fast", "rate:"),
            ("concurrency", "0", "concurrency:"),
        ] {
            let mut fields = campaign_form();
            for f in fields.iter_mut() {
                if f.0 == field {
                    f.1 = bad;
                }
            }
            let res = mia.post("/admin/campaigns", &fields).await;
            assert_eq!(res.status, 422, "{db} {field}: {}", res.body);
            assert!(res.body.contains(says), "{db} {field}: {}", res.body);
            assert!(res.body.contains("What we made this winter."), "{db}");
        }
        assert!(app.store.campaigns().await.unwrap().is_empty(), "{db}");

        let res = mia.post("/admin/campaigns", &campaign_form()).await;
        assert_eq!(res.status, 303, "{db}: {}", res.body);
        let id = id_in(res.location());
        let page = mia.follow(&res).await;
        assert!(
            page.body.contains("was created as a draft"),
            "{db}: {}",
            page.body
        );
        assert!(page.body.contains("Start sending"), "{db}");
        let stored = app.store.campaign(id).await.unwrap().expect("stored");
        assert_eq!(stored.state.as_str(), "draft");
        assert_eq!(stored.created_by, "user:mia");
        assert_eq!(stored.concurrency, 2);

        // The preview: rendered for one person, HTML as escaped source.
        let page = mia
            .get(&format!("/admin/campaigns/{id}?preview=ann%40example.com"))
            .await;
        assert_eq!(page.status, 200, "{db}: {}", page.body);
        assert!(
            page.body.contains("Winter news for ann@example.com"),
            "{db}"
        );
        assert!(page.body.contains("&lt;script&gt;alert(1)"), "{db}");
        assert!(!page.body.contains("<script>alert"), "{db}");
        let page = mia
            .get(&format!("/admin/campaigns/{id}?preview=carl%40example.com"))
            .await;
        assert!(page.body.contains("withhold"), "{db}: {}", page.body);

        // A test send, still under the guard.
        let res = mia
            .post(
                &format!("/admin/campaigns/{id}/test"),
                &[("to", "bob@example.com, carl@example.com")],
            )
            .await;
        let page = mia.follow(&res).await;
        assert!(
            page.body.contains("Test sent to bob@example.com"),
            "{db}: {}",
            page.body
        );
        assert!(page.body.contains("Not sent to carl@example.com"), "{db}");
        assert_eq!(app.sent().len(), 1, "{db}");

        let before = progress(&mia, id).await;
        assert_eq!(before["status"], "draft", "{db}: {before}");
        assert_eq!(before["running"], false, "{db}");

        let res = mia.post(&format!("/admin/campaigns/{id}/start"), &[]).await;
        assert_eq!(res.status, 303, "{db}: {}", res.body);
        let page = mia.follow(&res).await;
        assert!(page.body.contains("was started"), "{db}: {}", page.body);
        assert!(
            page.body.contains(&format!(
                "data-progress-url=\"/admin/campaigns/{id}/progress\""
            )),
            "{db}"
        );

        let until = Instant::now() + Duration::from_secs(20);
        let last = loop {
            let p = progress(&mia, id).await;
            if p["status"] == "done" {
                break p;
            }
            assert!(Instant::now() < until, "{db}: never done: {p}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(last["total"], 3, "{db}: {last}");
        assert_eq!(last["done"], last["total"], "{db}: {last}");
        assert_eq!(last["running"], false, "{db}");
        assert_eq!(last["text"], "2 of 3 sent, 1 withheld", "{db}");

        // The list shows it too, without scripts.
        let list = mia.get("/admin/campaigns").await;
        assert!(
            list.body.contains("2 of 3 sent, 1 withheld"),
            "{db}: {}",
            list.body
        );
        assert!(
            list.body.contains("<progress max=\"3\" value=\"3\""),
            "{db}"
        );
        // Nothing left to do with a finished campaign.
        let page = mia.get(&format!("/admin/campaigns/{id}")).await;
        assert!(!page.body.contains("Pause sending"), "{db}");
        assert!(!page.body.contains("Start sending"), "{db}");

        // The outbox: the test and one copy per consenting contact.
        let outbox = mia.get("/admin/outbox").await;
        assert_eq!(outbox.status, 200, "{db}: {}", outbox.body);
        assert!(
            outbox.body.contains("3 messages in all"),
            "{db}: {}",
            outbox.body
        );
        assert!(!outbox.body.contains("carl@example.com"), "{db}: withdrew");
        let links = outbox_links(&outbox.body);
        assert_eq!(links.len(), 3, "{db}: {links:?}");
        let mut to = BTreeSet::new();
        for link in &links {
            let m = mia.get(link).await;
            assert_eq!(m.status, 200, "{db} {link}: {}", m.body);
            if m.body.contains("[TEST]") {
                continue;
            }
            for h in ["List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"] {
                assert!(
                    m.body.contains(&format!("<td>{h}</td>")),
                    "{db}: no {h} in {}",
                    m.body
                );
            }
            assert!(m.body.contains("List-Unsubscribe=One-Click"), "{db}");
            assert!(m.body.contains("&lt;script&gt;"), "{db}: HTML as source");
            assert!(!m.body.contains("<script>alert"), "{db}");
            // And rendered, in a sandbox: the frame's page runs no script
            // and loads nothing from elsewhere.
            let frame = format!("{link}/html/1");
            assert!(
                m.body.contains(&format!(
                    "<iframe class=\"mail-html\" sandbox src=\"{frame}\""
                )),
                "{db}: {}",
                m.body
            );
            let html = mia.get(&frame).await;
            assert_eq!(html.status, 200, "{db}: {}", html.body);
            let csp = html.headers["content-security-policy"]
                .to_str()
                .unwrap_or_default();
            assert!(
                csp.starts_with("sandbox;") && csp.contains("default-src 'none'"),
                "{db}: {csp}"
            );
            assert_eq!(html.headers["x-frame-options"], "SAMEORIGIN", "{db}");
            assert!(html.body.contains("<p>Hello"), "{db}: {}", html.body);
            assert_eq!(mia.get(&format!("{link}/html/2")).await.status, 404, "{db}");
            assert_eq!(mia.get(&format!("{link}/html/0")).await.status, 404, "{db}");
            for a in ["ann@example.com", "bob@example.com", "carl@example.com"] {
                if m.body.contains(&format!("Winter news for {a}")) {
                    to.insert(a);
                }
            }
        }
        assert_eq!(
            to,
            BTreeSet::from(["ann@example.com", "bob@example.com"]),
            "{db}"
        );

        let actions = app.store.staff_actions(None, 100).await.unwrap();
        for want in ["campaigns.create", "campaigns.test", "campaigns.start"] {
            assert!(
                actions.iter().any(|a| a.actor == "user:mia"
                    && a.action == want
                    && a.target.as_deref() == Some(&format!("campaign:{id}"))),
                "{db}: no {want} in {actions:?}"
            );
        }
        app.close().await;
    }
}

async fn api_campaign(app: &TestApp, scheduled: Option<&str>) -> i64 {
    let mut body = json!({
        "name": "Spring offers", "topic": "news", "from": "news@shop.example",
        "subject": "Spring", "text": "Spring is here.\n",
    });
    if let Some(at) = scheduled {
        body["scheduled_at"] = json!(at);
    }
    let (status, out) = app
        .post("/api/v1/campaigns", Some(&app.marketer), &body)
        .await;
    assert_eq!(status, 201, "{out}");
    out["campaign"]["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_watches_but_cannot_run_and_cancelling_needs_a_confirmation() {
    for app in sending_apps(service()).await {
        let db = app.name();
        let id = api_campaign(&app, Some("2099-01-01T09:00:00Z")).await;
        let vi = admin_support::sign_in(&app, "vi", Role::Viewer).await;
        let page = vi.get(&format!("/admin/campaigns/{id}")).await;
        assert_eq!(page.status, 200, "{db}: {}", page.body);
        assert!(page.body.contains("Spring offers"), "{db}");
        for hidden in [
            "Start sending",
            "/cancel",
            "Send the test",
            "Show the preview",
        ] {
            assert!(
                !page.body.contains(hidden),
                "{db}: a viewer sees {hidden:?}"
            );
        }
        let list = vi.get("/admin/campaigns").await;
        assert!(!list.body.contains("/admin/campaigns/new"), "{db}");
        assert_eq!(vi.get("/admin/campaigns/new").await.status, 403, "{db}");
        for action in ["start", "pause", "resume", "cancel", "test"] {
            let res = vi
                .post(
                    &format!("/admin/campaigns/{id}/{action}"),
                    &[("confirm", "yes")],
                )
                .await;
            assert_eq!(res.status, 403, "{db} {action}: {}", res.body);
        }
        let res = vi.post("/admin/campaigns", &campaign_form()).await;
        assert_eq!(res.status, 403, "{db}");
        let preview = vi
            .get(&format!("/admin/campaigns/{id}?preview=ann%40example.com"))
            .await;
        assert_eq!(preview.status, 403, "{db}");
        assert_eq!(progress(&vi, id).await["status"], "draft", "{db}");
        assert_eq!(
            app.store
                .campaign(id)
                .await
                .unwrap()
                .unwrap()
                .state
                .as_str(),
            "draft"
        );

        // A marketer: start (scheduled), pause, resume, then cancel only
        // after ticking the confirmation.
        let mia = admin_support::sign_in(&app, "mia", Role::Marketer).await;
        let path = |a: &str| format!("/admin/campaigns/{id}/{a}");
        let res = mia.post(&path("start"), &[]).await;
        assert!(
            mia.follow(&res).await.body.contains("it is now scheduled"),
            "{db}"
        );
        let p = progress(&mia, id).await;
        assert_eq!(
            (p["status"].as_str(), p["running"].as_bool()),
            (Some("scheduled"), Some(true))
        );
        let page = mia.get(&format!("/admin/campaigns/{id}")).await;
        assert!(page.body.contains("Pause sending"), "{db}");
        assert!(
            page.body.contains("data-running=\"true\""),
            "{db}: {}",
            page.body
        );
        assert!(!page.body.contains("Start sending"), "{db}");
        let res = mia.post(&path("pause"), &[]).await;
        assert!(
            mia.follow(&res).await.body.contains("it is now paused"),
            "{db}"
        );
        // Not possible now: said, nothing changed.
        let res = mia.post(&path("pause"), &[]).await;
        let page = mia.follow(&res).await;
        assert!(
            page.body.contains("could not be paused"),
            "{db}: {}",
            page.body
        );
        let res = mia.post(&path("resume"), &[]).await;
        assert!(
            mia.follow(&res).await.body.contains("it is now scheduled"),
            "{db}"
        );
        let res = mia.post(&path("bogus"), &[]).await;
        assert_eq!(res.status, 404, "{db}");

        let confirm = mia.get(&path("cancel")).await;
        assert_eq!(confirm.status, 200, "{db}: {}", confirm.body);
        assert!(confirm.body.contains("name=\"confirm\""), "{db}");
        let res = mia.post(&path("cancel"), &[]).await;
        assert_eq!(res.status, 303, "{db}");
        assert!(mia.follow(&res).await.body.contains("Tick the box"), "{db}");
        assert_eq!(
            app.store
                .campaign(id)
                .await
                .unwrap()
                .unwrap()
                .state
                .as_str(),
            "scheduled",
            "{db}"
        );
        let res = mia.post(&path("cancel"), &[("confirm", "yes")]).await;
        assert!(
            mia.follow(&res).await.body.contains("it is now cancelled"),
            "{db}"
        );
        let c = app.store.campaign(id).await.unwrap().unwrap();
        assert_eq!(c.state.as_str(), "cancelled", "{db}");
        assert_eq!(
            c.state_reason.as_deref(),
            Some("cancelled by user:mia"),
            "{db}"
        );
        let actions = app.store.staff_actions(None, 100).await.unwrap();
        for want in [
            "campaigns.start",
            "campaigns.pause",
            "campaigns.resume",
            "campaigns.cancel",
        ] {
            assert!(
                actions
                    .iter()
                    .any(|a| a.actor == "user:mia" && a.action == want),
                "{db}: no {want}"
            );
        }
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_outbox_opens_only_its_own_messages() {
    for app in sending_apps(service()).await {
        let db = app.name();
        app.grant("ann@example.com", "news").await;
        let id = api_campaign(&app, None).await;
        let (status, _) = app
            .post(
                &format!("/api/v1/campaigns/{id}/test"),
                Some(&app.marketer),
                &json!({"to": ["ann@example.com"]}),
            )
            .await;
        assert_eq!(status, 200, "{db}");
        let vi = admin_support::sign_in(&app, "vi", Role::Viewer).await;
        let outbox = vi.get("/admin/outbox").await;
        assert_eq!(outbox.status, 200, "{db}: {}", outbox.body);
        let links = outbox_links(&outbox.body);
        assert_eq!(links.len(), 1, "{db}: {}", outbox.body);
        assert_eq!(vi.get(&links[0]).await.status, 200, "{db}");
        // A file beside the maildir, and the store itself, stay out of reach.
        for bad in [
            "..",
            "..%2F..%2Fveto.db",
            "..%2Fnew",
            "..%2F..%2Fsent%2Fnew",
            "%2Fetc%2Fpasswd",
            "tmp",
            "new",
            "..%5C..%5Cveto.db",
            "no-such-message",
            "a%00b",
            &"x".repeat(300),
        ] {
            let res = vi.get(&format!("/admin/outbox/{bad}")).await;
            assert_eq!(res.status, 404, "{db} {bad}: {}", res.body);
        }
        // The HTTP client resolves the dots itself (this asks for /veto.db):
        // the encoded forms above are the ones that reach the outbox route.
        let res = vi.get("/admin/outbox/../../veto.db").await;
        assert_eq!(res.status, 404, "{db}: {}", res.body);
        assert_eq!(vi.get("/admin/outbox?page=0").await.status, 400, "{db}");
        assert!(
            vi.get("/admin/outbox?page=2")
                .await
                .body
                .contains("Page 2 of 1"),
            "{db}"
        );
        // Personal data: not for the machines that send service mail.
        let ss = admin_support::sign_in(&app, "ss", Role::ServiceSender).await;
        assert_eq!(ss.get("/admin/outbox").await.status, 403, "{db}");
        assert_eq!(ss.get(&links[0]).await.status, 403, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_send_is_approved_by_another_dpo_never_by_its_requester() {
    for app in sending_apps(service()).await {
        let db = app.name();
        let sam = app.key_for(Role::ServiceSender, "sam").await;
        let many = [
            "a1@example.com",
            "a2@example.com",
            "a3@example.com",
            "a4@example.com",
            "a5@example.com",
            "a6@example.com",
        ];
        let (status, out) = app
            .post(
                "/api/v1/messages",
                Some(&sam),
                &json!({
                    "type": "billing", "to": many, "from": "billing@shop.example",
                    "subject": "Your bill", "text": "You owe us nothing.\n",
                }),
            )
            .await;
        assert_eq!(status, 202, "{db}: {out}");
        let approval = out["approval"]["id"].as_i64().unwrap();
        let path = format!("/admin/approvals/{approval}");

        // The DPO who holds the requesting key: no button, and refused.
        let sam_dpo = admin_support::sign_in(&app, "sam", Role::Dpo).await;
        let page = sam_dpo.get("/admin/approvals").await;
        assert_eq!(page.status, 200, "{db}: {}", page.body);
        assert!(page.body.contains("service:billing"), "{db}: {}", page.body);
        assert!(!page.body.contains(&format!("action=\"{path}\"")), "{db}");
        assert!(page.body.contains("another DPO must approve it"), "{db}");
        let res = sam_dpo.post(&path, &[]).await;
        assert_eq!(res.status, 303, "{db}: {}", res.body);
        let page = sam_dpo.follow(&res).await;
        assert!(
            page.body.contains("Another DPO must approve it"),
            "{db}: {}",
            page.body
        );
        assert!(page.body.contains("flash-error"), "{db}");
        let a = app.store.approval(approval).await.unwrap().unwrap();
        assert!(a.approved_at.is_none(), "{db}: not approved");

        // An admin sees the list but may not approve; a marketer sees nothing.
        let ad = admin_support::sign_in(&app, "ad", Role::Admin).await;
        let page = ad.get("/admin/approvals").await;
        assert_eq!(page.status, 200, "{db}");
        assert!(!page.body.contains(&format!("action=\"{path}\"")), "{db}");
        assert_eq!(ad.post(&path, &[]).await.status, 403, "{db}");
        let mia = admin_support::sign_in(&app, "mia", Role::Marketer).await;
        assert_eq!(mia.get("/admin/approvals").await.status, 403, "{db}");

        // Another DPO approves.
        let dana = admin_support::sign_in(&app, "dana", Role::Dpo).await;
        let page = dana.get("/admin/approvals").await;
        assert!(page.body.contains(&format!("action=\"{path}\"")), "{db}");
        let res = dana.post(&path, &[]).await;
        let page = dana.follow(&res).await;
        assert!(
            page.body.contains(&format!("Approved request {approval}")),
            "{db}: {}",
            page.body
        );
        let a = app.store.approval(approval).await.unwrap().unwrap();
        assert!(a.approved_at.is_some(), "{db}");
        assert_eq!(a.approved_by.as_deref(), Some("user:dana"), "{db}");
        assert_eq!(a.approver_owner.as_deref(), Some("dana"), "{db}");
        let actions = app.store.staff_actions(None, 100).await.unwrap();
        assert!(
            actions.iter().any(|x| x.actor == "user:dana"
                && x.action == "approvals.approve"
                && x.target.as_deref() == Some(&format!("approval:{approval}"))),
            "{db}: {actions:?}"
        );
        assert!(
            !actions
                .iter()
                .any(|x| x.actor == "user:sam" && x.action == "approvals.approve"),
            "{db}"
        );
        app.close().await;
    }
}
