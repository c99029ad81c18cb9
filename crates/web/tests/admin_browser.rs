//! The admin UI in a real browser (headless Chromium through chromedriver),
//! over an app that really sends campaigns (to a maildir that is also the
//! admin outbox):
//!
//! - a marketer signs in, creates a campaign, sends it and watches its
//!   progress bar fill without reloading the page (the only script), then
//!   opens the timeline of a customer who had unsubscribed and reads, in
//!   plain language, that the campaign was not sent to them;
//! - an admin and a DPO open every page their menu offers.
//!
//! Every page is audited with axe-core (WCAG 2.1 A and AA); screenshots go
//! to `VETO_SCREENSHOTS_DIR` when it is set (docs/screenshots/admin-*.png).
//!
//! Runs only with `VETO_TEST_BROWSER=1` (see `browser_support`); otherwise
//! it says it skipped and passes.

mod api_support;
mod browser_support;

use std::io::Write;
use std::time::{Duration, Instant};

use api_support::TestApp;
use browser_support::{BUDGET, Browser, Chromedriver, Tools};
use veto_core::Role;

const PASSWORD: &str = "correct horse battery";
/// Customers of the shop who agreed to product news.
const AGREED: [&str; 6] = [
    "ann@example.com",
    "bob@example.com",
    "cat@example.com",
    "dan@example.com",
    "eve@example.com",
    "fay@example.com",
];
/// A customer who agreed, then unsubscribed.
const LEFT: &str = "gus@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staff_journeys_in_a_real_browser() {
    if !browser_support::enabled() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: admin browser tests (set VETO_TEST_BROWSER=1)"
        );
        return;
    }
    let tools = Tools::from_env().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    if tokio::time::timeout(BUDGET, run(tools)).await.is_err() {
        panic!("the admin browser test took longer than its budget of {BUDGET:?}");
    }
    eprintln!(
        "admin browser journeys: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

async fn run(tools: Tools) {
    let driver = Chromedriver::start(&tools);
    let browser = Browser::open(&driver, &tools).await;
    let mut task = AbortOnDrop(tokio::spawn({
        let browser = browser.clone();
        async move {
            let app = api_support::sending_apps(service())
                .await
                .into_iter()
                .next()
                .expect("a SQLite app");
            for address in AGREED.iter().chain([&LEFT]) {
                app.grant(address, "news").await;
            }
            app.withdraw(LEFT, "news").await;
            for (name, role) in [
                ("mara", Role::Marketer),
                ("ada", Role::Admin),
                ("dee", Role::Dpo),
            ] {
                app.store
                    .add_user(name, role, PASSWORD)
                    .await
                    .expect("add user");
            }
            marketer_journey(&browser, &app).await;
            every_page(&browser, &app, "ada").await;
            every_page(&browser, &app, "dee").await;
            app.close().await;
        }
    }));
    let outcome = (&mut task.0).await;
    browser.close().await;
    drop(driver);
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the admin browser journey did not finish: {e}"),
        }
    }
}

fn service() -> veto_sender::service::ServiceSettings {
    veto_sender::service::ServiceSettings {
        bulk_threshold: 100,
        bulk_window: Duration::from_secs(24 * 3600),
        types: ["billing".to_owned()].into(),
    }
}

/// Stops the journey when the time budget runs out.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Types into a field, as a person would.
async fn type_into(browser: &Browser, css: &str, text: &str) {
    let el = browser.find(css).await;
    browser_support::step(&format!("clear {css}"), el.clear()).await;
    browser_support::step(&format!("type into {css}"), el.send_keys(text)).await;
}

/// Signs in through the form (the sign-in page is audited the first time).
async fn sign_in(browser: &Browser, app: &TestApp, name: &str, audit: bool) {
    browser.goto(&app.url("/admin")).await;
    browser.wait_for("form[action='/admin/login']").await;
    assert!(
        browser.url().await.contains("/admin/login?next="),
        "an unsigned visit lands on the sign-in page"
    );
    if audit {
        browser.assert_accessible("admin sign-in").await;
        browser.screenshot("admin-sign-in.png").await;
        // A wrong password says so, and the page is still accessible.
        type_into(browser, "#name", name).await;
        type_into(browser, "#password", "not the password").await;
        browser.click("form[action='/admin/login'] button").await;
        browser.wait_for("#login-error").await;
        assert!(
            browser
                .text("#login-error")
                .await
                .contains("do not match an active account")
        );
        browser.assert_accessible("admin sign-in, refused").await;
    }
    type_into(browser, "#name", name).await;
    type_into(browser, "#password", PASSWORD).await;
    browser.click("form[action='/admin/login'] button").await;
    browser.wait_for("form.signout").await;
}

async fn sign_out(browser: &Browser) {
    browser.click("form.signout button").await;
    browser.wait_for("form[action='/admin/login']").await;
}

/// The pages a signed-in person's menu offers.
async fn menu_links(browser: &Browser) -> Vec<String> {
    let v = browser
        .eval(
            "return [...document.querySelectorAll('nav.menu a')].map(a => a.getAttribute('href'));",
        )
        .await;
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn marketer_journey(browser: &Browser, app: &TestApp) {
    sign_in(browser, app, "mara", true).await;
    assert_eq!(browser.text("h1").await, "Dashboard");
    browser.assert_accessible("admin dashboard").await;
    browser.screenshot("admin-dashboard.png").await;
    campaign_journey(browser, app).await;
    timeline_journey(browser, app).await;
    sign_out(browser).await;
}

/// Opens a delivered copy in the outbox: its headers, and its HTML part
/// rendered in a sandbox where the message's script does not run.
async fn outbox_journey(browser: &Browser, app: &TestApp) {
    browser.goto(&app.url("/admin/outbox")).await;
    browser.assert_accessible("admin outbox").await;
    browser.click("a[href^='/admin/outbox/']").await;
    let frame = browser.wait_for("iframe.mail-html").await;
    assert!(browser.source().await.contains("List-Unsubscribe-Post"));
    browser.assert_accessible("admin outbox message").await;
    browser.screenshot("admin-outbox-message.png").await;
    // Inside the frame: the message as sent, its script never run.
    browser_support::step("enter the mail's frame", frame.enter_frame()).await;
    let heading = browser.text("h1").await;
    assert_eq!(heading, "Spring news");
    let title = browser.eval("return document.title;").await;
    assert_ne!(title, serde_json::json!("ran"), "the mail's script ran");
    browser_support::step(
        "leave the frame",
        browser.client.clone().enter_parent_frame(),
    )
    .await;
}

/// Finds the customer who unsubscribed and reads their timeline: they
/// agreed, unsubscribed, and the campaign was not sent to them.
async fn timeline_journey(browser: &Browser, app: &TestApp) {
    browser.goto(&app.url("/admin/contacts")).await;
    type_into(browser, "#q", "gus@").await;
    browser.press(fantoccini::key::Key::Enter).await;
    browser.wait_for("a[href^='/admin/contacts/']").await;
    browser.assert_accessible("admin contact search").await;
    browser.click("a[href^='/admin/contacts/']").await;
    browser.wait_for("ol.timeline").await;
    let lines = browser.texts("ol.timeline > li").await;
    assert!(lines.len() >= 3, "{lines:?}");
    let all = lines.join("\n");
    assert!(
        lines[0].contains("Spring news") && lines[0].contains("not sent"),
        "newest first, the campaign they did not get: {all}"
    );
    assert!(
        all.contains("unsubscribed") || all.contains("withdrew"),
        "{all}"
    );
    assert!(all.contains("agreed"), "{all}");
    browser.assert_accessible("admin contact timeline").await;
    browser.screenshot("admin-contact-timeline.png").await;
}

/// Creates a campaign through the form, starts it, and watches the
/// progress bar fill while the page stays loaded.
async fn campaign_journey(browser: &Browser, app: &TestApp) {
    browser.goto(&app.url("/admin/campaigns/new")).await;
    browser.assert_accessible("admin new campaign").await;
    // A mistake first: the form says which field, keeps what was typed.
    type_into(browser, "#name", "Spring news").await;
    browser
        .eval("document.getElementById('topic').value = 'news'; return null;")
        .await;
    type_into(browser, "#from", "news@shop.example").await;
    type_into(browser, "#subject", "Spring news for {{ email ").await;
    type_into(browser, "#text", "Hello,\nWhat is new this spring.\n").await;
    type_into(
        browser,
        "#html",
        "<h1>Spring news</h1><p>What is <b>new</b> this spring.</p><script>document.title = 'ran'</script>",
    )
    .await;
    type_into(browser, "#rate", "2").await;
    browser
        .click("form.campaign-form button[type=submit]")
        .await;
    browser.wait_for("#form-error").await;
    assert!(browser.text("#form-error").await.contains("subject"));
    assert_eq!(browser.value("#name").await, "Spring news");
    browser
        .assert_accessible("admin new campaign, refused")
        .await;
    type_into(browser, "#subject", "Spring news for {{ email }}").await;
    browser.screenshot("admin-campaign-new.png").await;
    browser
        .click("form.campaign-form button[type=submit]")
        .await;
    browser.wait_for("[data-progress-url]").await;
    assert_eq!(browser.text("h1").await, "Campaign: Spring news");
    assert!(
        browser
            .text(".flash-ok")
            .await
            .contains("created as a draft")
    );
    browser.assert_accessible("admin campaign draft").await;

    // Start it; the script fills the bar while the page stays, then loads
    // the page once more when the campaign is done, for the final counts.
    let start = browser
        .find_all("form[action$='/start'] button")
        .await
        .into_iter()
        .next()
        .expect("a start button for a draft");
    browser_support::step("click start", start.click()).await;
    browser
        .wait_for("[data-progress-url][data-running='true']")
        .await;
    browser
        .eval("window.vetoStayedHere = true; return null;")
        .await;
    let first = browser.text("[data-progress-text]").await;
    let total = AGREED.len() + 1;
    let finished = format!("{} of {total} sent, 1 withheld", AGREED.len());
    let until = Instant::now() + Duration::from_secs(60);
    let mut live = Vec::new();
    loop {
        let stayed = browser.eval("return window.vetoStayedHere === true;").await;
        let text = browser.text("[data-progress-text]").await;
        let status = browser.text("[data-progress-status]").await;
        if stayed == serde_json::json!(true) && text != first && !live.contains(&text) {
            live.push(text.clone());
        }
        if stayed != serde_json::json!(true) && status == "done" && text == finished {
            break;
        }
        assert!(
            Instant::now() < until,
            "the campaign page never showed {finished:?} and done; it shows {text:?}, {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !live.is_empty(),
        "the bar moved from {first:?} without a reload of the page"
    );
    eprintln!("progress seen live: {first:?} then {live:?}");
    let bar = browser
        .eval("const p = document.querySelector('[data-progress-url] progress'); return [p.value, p.max];")
        .await;
    assert_eq!(bar, serde_json::json!([total, total]));
    // After the reload: the final counts, and no more Pause button.
    assert!(
        browser
            .find_all("form[action$='/pause'] button")
            .await
            .is_empty(),
        "a finished campaign offers no pause"
    );
    browser.assert_accessible("admin campaign sent").await;
    browser.screenshot("admin-campaign-sent.png").await;
    outbox_journey(browser, app).await;
    let sent = app.sent();
    assert_eq!(sent.len(), AGREED.len(), "one copy per person who agreed");
    assert!(
        sent.iter().all(|m| !m.contains(LEFT)),
        "nothing for {LEFT}, who unsubscribed"
    );
}

/// Opens every page in `name`'s menu: each loads, has a heading, passes
/// the audit, and is shot.
async fn every_page(browser: &Browser, app: &TestApp, name: &str) {
    sign_in(browser, app, name, false).await;
    let links = menu_links(browser).await;
    assert!(links.len() > 3, "{name}'s menu: {links:?}");
    for href in links {
        browser.goto(&app.url(&href)).await;
        let title = browser_support::step("title", browser.client.title()).await;
        assert!(
            !title.starts_with("Not found") && !title.starts_with("Something went wrong"),
            "{name}: {href} is {title:?}"
        );
        // Not sent elsewhere (e.g. to sign in again) on the way.
        let at = browser.url().await;
        assert!(
            at.ends_with(&href) || at.contains(&format!("{href}?")),
            "{name}: {href} ended at {at}"
        );
        let h1 = browser.text("h1").await;
        assert!(!h1.is_empty(), "{name}: {href} has no heading");
        // None of the admin error page's headings (render.rs AdminError).
        for error in [
            "Not found",
            "That did not work",
            "Not allowed",
            "Try again",
            "Something went wrong",
        ] {
            assert_ne!(h1, error, "{name}: {href} is an error page");
        }
        browser
            .assert_accessible(&format!("admin {href} as {name}"))
            .await;
        let slug = href.trim_start_matches("/admin").trim_matches('/');
        let slug = if slug.is_empty() { "dashboard" } else { slug };
        browser
            .screenshot(&format!("admin-{}-{name}.png", slug.replace('/', "-")))
            .await;
    }
    sign_out(browser).await;
}
