//! The customer pages in a real browser: a person opens the unsubscribe link
//! from an email, reads it in English and Welsh, unsubscribes with the
//! keyboard alone, and sees what still arrives; a broken link explains
//! itself. Every page is audited with axe-core (WCAG 2.1 A and AA).
//!
//! Runs only with `VETO_TEST_BROWSER=1` (see `browser_support` for the other
//! variables); otherwise it says it skipped and passes.
//!
//! To add a page to the journey: navigate, assert what the person sees,
//! then `browser.assert_accessible(name)` and `browser.screenshot(file)`.

mod browser_support;

use browser_support::{BUDGET, Browser, Chromedriver, Tools};
use fantoccini::key::Key;
use tempfile::TempDir;
use veto_core::{
    Channel, ContactId, EmailAddress, EventKind, NewEvent, Scope, ServiceType, Source, Timestamp,
    Topic, TopicKey,
};
use veto_store::{Append, AppendOutcome, ContactInput, Evidence, NewTopic, Store};
use veto_web::{AppState, Organisation, TrustedProxies, WebSettings};

const ADDRESS: &str = "jo@example.com";
const MASKED: &str = "j\u{2022}\u{2022}\u{2022}@example.com";

/// veto-web on a real port over a fresh SQLite store, with one topic and
/// one person who signed up for it.
struct App {
    base: String,
    store: Store,
    topic: Topic,
    contact: ContactId,
    /// The one-click link veto puts in jo's emails about the topic.
    unsubscribe: String,
    _dir: TempDir,
}

async fn start_app() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&dir.path().join("veto.db"))
        .await
        .expect("open sqlite");
    let topic = store
        .add_topic(NewTopic {
            key: TopicKey::parse("news").expect("topic key"),
            name: "Product news".into(),
            description: "New products, about once a month.".into(),
            group: None,
        })
        .await
        .expect("add topic");
    let outcome = store
        .append(
            vec![Append {
                contact: ContactInput::new(EmailAddress::parse(ADDRESS).expect("address")),
                event: NewEvent {
                    kind: EventKind::Grant,
                    scope: Scope::Topic(topic.id),
                    channel: Some(Channel::Email),
                    source: Source::Form,
                    at: Timestamp::now(),
                },
                evidence: Evidence::default(),
                actor: "api-key:test".into(),
            }],
            false,
        )
        .await
        .expect("append grant");
    let contact = match outcome.as_slice() {
        [AppendOutcome::Recorded { contact, .. }] => *contact,
        other => panic!("the grant was not recorded: {other:?}"),
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let settings = WebSettings {
        public_url: base.clone(),
        organisation: Organisation {
            name: "Example Shop".into(),
            postal_address: "1 High Street, Cardiff CF10 1AA".into(),
            privacy_url: Some("https://shop.example/privacy".into()),
        },
        trusted_proxies: TrustedProxies(vec![]),
        service_types: vec![
            ServiceType {
                key: "billing".into(),
                description: "Bills and receipts for things you bought".into(),
            },
            ServiceType {
                key: "security".into(),
                description: "Security alerts about your account".into(),
            },
        ],
    };
    let state = AppState::new(store.clone(), settings)
        .await
        .expect("app state");
    let unsubscribe = veto_web::links(state.keys(), &base, contact.0, Some(topic.id.0))
        .expect("links")
        .unsubscribe;
    tokio::spawn(veto_web::serve(listener, state, std::future::pending()));
    App {
        base,
        store,
        topic,
        contact,
        unsubscribe,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_journey_in_a_real_browser() {
    if !browser_support::enabled() {
        eprintln!("skipped: browser tests (set VETO_TEST_BROWSER=1)");
        return;
    }
    let tools = Tools::from_env().unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    // Dropping the journey at the deadline ends chromedriver and the browser.
    if tokio::time::timeout(BUDGET, run(tools)).await.is_err() {
        panic!("the browser test took longer than its budget of {BUDGET:?}");
    }
    eprintln!("browser journey: {:.1} s", started.elapsed().as_secs_f64());
}

async fn run(tools: Tools) {
    let app = start_app().await;
    let driver = Chromedriver::start(&tools);
    let browser = Browser::open(&driver, &tools).await;
    // The journey runs as a task of its own so that, when it fails, the
    // browser still quits in good order before the failure is passed on.
    let mut task = AbortOnDrop(tokio::spawn({
        let browser = browser.clone();
        async move { journey(&browser, &app).await }
    }));
    let outcome = (&mut task.0).await;
    browser.close().await;
    drop(driver);
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the browser journey did not finish: {e}"),
        }
    }
}

/// Stops the journey when the time budget runs out.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn journey(browser: &Browser, app: &App) {
    // 1. The link from the email, in English.
    browser.goto(&app.unsubscribe).await;
    assert_eq!(browser.html_lang().await, "en");
    let heading = browser.text("h1").await;
    assert!(
        heading.contains(&app.topic.name),
        "the heading names the topic: {heading:?}"
    );
    let main = browser.text("main").await;
    assert!(
        main.contains(MASKED),
        "the page shows whose address this is, masked: {main:?}"
    );
    assert!(
        !main.contains(ADDRESS),
        "the full address is not on the page: {main:?}"
    );
    assert_eq!(
        browser.text("form button[type=submit]").await,
        "Unsubscribe"
    );
    browser.assert_accessible("unsubscribe page (en)").await;
    browser.screenshot("unsubscribe-en.png").await;

    // 2. The same page in Welsh.
    browser.goto(&format!("{}?lang=cy", app.unsubscribe)).await;
    assert_eq!(browser.html_lang().await, "cy");
    assert_eq!(
        browser.text("form button[type=submit]").await,
        "Dad-danysgrifio"
    );
    assert!(browser.text("main").await.contains(MASKED));
    browser.assert_accessible("unsubscribe page (cy)").await;
    browser.screenshot("unsubscribe-cy.png").await;

    // 3. Back in English, with the keyboard only: Tab to the button, Enter.
    browser.goto(&app.unsubscribe).await;
    let button = browser.tab_to("form button[type=submit]", 10).await;
    let outline = browser_support::step("focus outline", button.css_value("outline-style")).await;
    assert_ne!(
        outline, "none",
        "the focused button shows where the focus is"
    );
    browser.press(Key::Enter).await;
    let confirmation = browser_support::step(
        "the confirmation page",
        browser
            .client
            .wait()
            .at_most(browser_support::STEP)
            .for_element(fantoccini::Locator::Css("main ul li")),
    )
    .await;
    drop(confirmation);
    assert_eq!(browser.text("h1").await, "You're unsubscribed");
    let main = browser.text("main").await;
    for kept in [
        "Bills and receipts for things you bought",
        "Security alerts about your account",
    ] {
        assert!(
            main.contains(kept),
            "the page says {kept:?} still arrives: {main:?}"
        );
    }
    browser.assert_accessible("unsubscribed page (en)").await;
    browser.screenshot("unsubscribed-en.png").await;

    // The ledger: jo's latest event is the withdrawal, from this browser.
    let contact = app
        .store
        .find_contact(&EmailAddress::parse(ADDRESS).expect("address"))
        .await
        .expect("find contact")
        .expect("jo is a contact");
    assert_eq!(contact.id, app.contact.0);
    let events = app
        .store
        .events_of(ContactId(contact.id))
        .await
        .expect("events of jo");
    let last = events.last().expect("jo has events");
    assert_eq!(last.event.kind.name(), "withdraw", "{last:?}");
    assert_eq!(last.event.source.as_str(), "one_click", "{last:?}");
    assert_eq!(last.event.scope, Scope::Topic(app.topic.id), "{last:?}");
    let personal = last.personal.as_ref().expect("the withdrawal's evidence");
    assert_eq!(personal.ip.as_deref(), Some("127.0.0.1"), "{last:?}");
    let agent = personal.user_agent.as_deref().unwrap_or("");
    assert!(
        agent.contains("Chrome"),
        "the browser's user agent is kept as evidence: {agent:?}"
    );

    // 4. A link that is not veto's.
    browser
        .goto(&format!("{}/u/{}", app.base, "a".repeat(60)))
        .await;
    assert_eq!(browser.text("h1").await, "This link doesn't work");
    browser.assert_accessible("invalid link page (en)").await;

    // 5. The audit itself: it does find problems when there are some.
    browser.assert_audit_catches_problems().await;
}
