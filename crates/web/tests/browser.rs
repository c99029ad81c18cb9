//! The customer pages in a real browser.
//!
//! Two journeys, each over an app of its own (a fresh store, veto's own mail
//! going to an outbox maildir):
//!
//! - The unsubscribe link: a person opens it from an email, reads it in
//!   English and Welsh, unsubscribes with the keyboard alone, and sees what
//!   still arrives; a broken link explains itself.
//! - The preference centre: the person reads their choices in English and
//!   Welsh, unticks a topic, sets a limit and a pause and saves with the
//!   keyboard, stops all marketing, downloads their data and erases it
//!   through links mailed to them; then someone asks for a link by typing
//!   their address on `/p`, and someone else confirms a double opt-in
//!   signup. After each press the ledger is checked for exactly what the
//!   person did.
//!
//! Every page is audited with axe-core (WCAG 2.1 A and AA).
//!
//! Runs only with `VETO_TEST_BROWSER=1` (see `browser_support` for the other
//! variables); otherwise it says it skipped and passes.
//!
//! To add a page to a journey: navigate, assert what the person sees,
//! then `browser.assert_accessible(name)` and `browser.screenshot(file)`.

mod browser_support;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use browser_support::mail::Outbox;
use browser_support::{BUDGET, Browser, Chromedriver, Tools};
use fantoccini::key::Key;
use jiff::ToSpan;
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use tempfile::TempDir;
use veto_core::{
    Channel, ContactId, EmailAddress, EventKind, FrequencyLimit, NewEvent, Period, PolicySettings,
    Role, Scope, ServiceType, Source, Timestamp, Topic, TopicKey,
};
use veto_store::{Append, AppendOutcome, ContactInput, Evidence, NewTopic, Store, StoredEvent};
use veto_web::{AppState, Organisation, TrustedProxies, WebSettings};

const ADDRESS: &str = "jo@example.com";
const MASKED: &str = "j\u{2022}\u{2022}\u{2022}@example.com";
/// Someone else on the list, who asks for a link on `/p`.
const SAM: &str = "sam@example.com";
const SAM_MASKED: &str = "s\u{2022}\u{2022}\u{2022}@example.com";
/// Someone new, who signs up on the shop's form (double opt-in).
const LEE: &str = "lee@example.com";
const LEE_MASKED: &str = "l\u{2022}\u{2022}\u{2022}@example.com";

/// The shop's topics: (key, name, description, group).
const TOPICS: [(&str, &str, &str, Option<&str>); 3] = [
    (
        "news",
        "Product news",
        "New products, about once a month.",
        None,
    ),
    (
        "boots",
        "Boot offers",
        "Deals on walking boots, in spring and autumn.",
        Some("shoes"),
    ),
    (
        "events",
        "Events near you",
        "Talks and workshops in our shops.",
        None,
    ),
];

/// What still arrives after an opt-out, and why.
const SERVICE: [&str; 2] = [
    "Bills and receipts for things you bought",
    "Security alerts about your account",
];
const STILL_GET: &str = "You'll still get these messages, because they are about things you have with us, not marketing:";

/// veto-web on a real port over a fresh SQLite store, with veto's own mail
/// going to a maildir, three topics, jo signed up for all three and sam
/// for one.
struct App {
    base: String,
    store: Store,
    /// news, boots, events (in [`TOPICS`] order).
    topics: Vec<Topic>,
    contact: ContactId,
    /// The one-click link veto puts in jo's emails about news.
    unsubscribe: String,
    /// jo's preference-centre link, as in every marketing email.
    preferences: String,
    /// The maildir veto's own messages go to.
    outbox: PathBuf,
    _dir: TempDir,
}

impl App {
    fn topic(&self, key: &str) -> &Topic {
        self.topics
            .iter()
            .find(|t| t.key.to_string() == key)
            .unwrap_or_else(|| panic!("no topic {key}"))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn events_of(&self, contact: ContactId) -> Vec<StoredEvent> {
        self.store.events_of(contact).await.expect("events of")
    }
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("address")
}

/// A sign-up form's grant of `topic` to `address`.
async fn grant(store: &Store, address: &str, topic: &Topic) -> ContactId {
    let outcome = store
        .append(
            vec![Append {
                contact: ContactInput::new(email(address)),
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
    match outcome.as_slice() {
        [AppendOutcome::Recorded { contact, .. }] => *contact,
        other => panic!("the grant was not recorded: {other:?}"),
    }
}

async fn start_app() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&dir.path().join("veto.db"))
        .await
        .expect("open sqlite");
    let mut topics = vec![];
    for (key, name, description, group) in TOPICS {
        topics.push(
            store
                .add_topic(NewTopic {
                    key: TopicKey::parse(key).expect("topic key"),
                    name: name.into(),
                    description: description.into(),
                    group: group.map(str::to_owned),
                })
                .await
                .expect("add topic"),
        );
    }
    let mut contact = None;
    for t in &topics {
        contact = Some(grant(&store, ADDRESS, t).await);
    }
    let contact = contact.expect("jo is a contact");
    grant(&store, SAM, &topics[0]).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let outbox = dir.path().join("outbox");
    let mailer = veto_sender::Mailer::new(
        veto_store::Guard::new(store.clone(), PolicySettings::default()),
        veto_sender::Maildir::open(&outbox).expect("outbox maildir"),
        "Example Shop",
        "example.org",
    );
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
                description: SERVICE[0].into(),
            },
            ServiceType {
                key: "security".into(),
                description: SERVICE[1].into(),
            },
        ],
    };
    let state = AppState::with_mailer(store.clone(), settings, Some(mailer))
        .await
        .expect("app state");
    let links =
        veto_web::links(state.keys(), &base, contact.0, Some(topics[0].id.0)).expect("links");
    tokio::spawn(veto_web::serve(listener, state, std::future::pending()));
    App {
        base,
        store,
        topics,
        contact,
        unsubscribe: links.unsubscribe,
        preferences: links.preferences,
        outbox,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_journeys_in_a_real_browser() {
    if !browser_support::enabled() {
        // Straight to stderr, past the test harness's capture, so that a
        // plain `cargo test` shows that this test did not really run.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: browser tests (set VETO_TEST_BROWSER=1)"
        );
        return;
    }
    let tools = Tools::from_env().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    // Dropping the journey at the deadline ends chromedriver and the browser.
    if tokio::time::timeout(BUDGET, run(tools)).await.is_err() {
        panic!("the browser test took longer than its budget of {BUDGET:?}");
    }
    eprintln!(
        "browser journeys: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

async fn run(tools: Tools) {
    let started = Instant::now();
    let driver = Chromedriver::start(&tools);
    let browser = Browser::open(&driver, &tools).await;
    eprintln!(
        "timing: browser started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The journeys run as a task of their own so that, when one fails, the
    // browser still quits in good order before the failure is passed on.
    let mut task = AbortOnDrop(tokio::spawn({
        let browser = browser.clone();
        async move {
            let unsubscribing = start_app().await;
            timed(
                "unsubscribe journey",
                unsubscribe_journey(&browser, &unsubscribing),
            )
            .await;
            let choosing = start_app().await;
            timed(
                "preference centre journey",
                preference_journey(&browser, &choosing),
            )
            .await;
            timed(
                "request-a-link journey",
                request_link_journey(&browser, &choosing),
            )
            .await;
            timed(
                "double opt-in journey",
                double_opt_in_journey(&browser, &choosing),
            )
            .await;
            // The audit itself: it does find problems when there are some.
            timed("audit self-check", browser.assert_audit_catches_problems()).await;
        }
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

async fn timed<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = fut.await;
    eprintln!("timing: {what}: {:.1} s", started.elapsed().as_secs_f64());
    out
}

/// Stops the journey when the time budget runs out.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---- the one-click unsubscribe link -------------------------------------------------

async fn unsubscribe_journey(browser: &Browser, app: &App) {
    let news = app.topic("news");
    // 1. The link from the email, in English.
    browser.goto(&app.unsubscribe).await;
    assert_eq!(browser.html_lang().await, "en");
    let heading = browser.text("h1").await;
    assert!(
        heading.contains(&news.name),
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
    browser.wait_for("main ul li").await;
    assert_eq!(browser.text("h1").await, "You're unsubscribed");
    let main = browser.text("main").await;
    for kept in SERVICE {
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
        .find_contact(&email(ADDRESS))
        .await
        .expect("find contact")
        .expect("jo is a contact");
    assert_eq!(contact.id, app.contact.0);
    let events = app.events_of(ContactId(contact.id)).await;
    let last = events.last().expect("jo has events");
    assert_eq!(last.event.kind.name(), "withdraw", "{last:?}");
    assert_eq!(last.event.source.as_str(), "one_click", "{last:?}");
    assert_eq!(last.event.scope, Scope::Topic(news.id), "{last:?}");
    assert_from_this_browser(last);

    // 4. A link that is not veto's.
    browser
        .goto(&format!("{}/u/{}", app.base, "a".repeat(60)))
        .await;
    assert_eq!(browser.text("h1").await, "This link doesn't work");
    browser.assert_accessible("invalid link page (en)").await;
}

/// The event's evidence is this browser's: IP 127.0.0.1 and Chrome's user agent.
fn assert_from_this_browser(e: &StoredEvent) {
    let personal = e
        .personal
        .as_ref()
        .unwrap_or_else(|| panic!("the event keeps its evidence: {e:?}"));
    assert_eq!(personal.ip.as_deref(), Some("127.0.0.1"), "{e:?}");
    let agent = personal.user_agent.as_deref().unwrap_or("");
    assert!(
        agent.contains("Chrome"),
        "the browser's user agent is kept as evidence: {agent:?}"
    );
}

// ---- the preference centre ----------------------------------------------------------

/// "28 February 2027": how the English pages write a date (UTC).
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

/// The page's submit button of the form whose hidden `action` is `action`.
fn button_of(action: &str) -> String {
    format!("form:has(> input[name=action][value={action}]) button[type=submit]")
}

/// Every item of the status region (what changed), in order.
async fn status_items(browser: &Browser) -> Vec<String> {
    browser.texts("main [role=status] li").await
}

/// The wording the ledger keeps for an event: its text.
async fn wording_text(app: &App, e: &StoredEvent) -> String {
    let id = e
        .wording
        .unwrap_or_else(|| panic!("the event names its wording: {e:?}"));
    app.store
        .wording(id)
        .await
        .expect("wording")
        .expect("the wording is stored")
        .text
}

async fn preference_journey(browser: &Browser, app: &App) {
    let (news, boots, events) = (app.topic("news"), app.topic("boots"), app.topic("events"));
    let checkbox = |t: &Topic| format!("#topic-{}", t.id.0);
    let label = |t: &Topic| format!("label[for=topic-{}]", t.id.0);
    let mut outbox = Outbox::new(&app.outbox);
    let ledger_at_start = app.store.count_events().await.expect("count events");

    // 1. The link from any marketing email, in English.
    browser.goto(&app.preferences).await;
    assert_eq!(browser.html_lang().await, "en");
    assert_eq!(browser.text("h1").await, "Your email choices");
    let main = browser.text("main").await;
    assert!(
        main.contains(&format!("These choices are for {MASKED}.")),
        "{main}"
    );
    assert!(
        !browser.source().await.contains(ADDRESS),
        "the full address is nowhere in the page"
    );
    for t in [news, boots, events] {
        assert_eq!(
            browser.text(&label(t)).await,
            t.name,
            "the label of {}",
            t.key
        );
        assert_eq!(
            browser.text(&format!("#topic-{}-about", t.id.0)).await,
            t.description,
            "the description of {}",
            t.key
        );
        assert!(
            browser.is_checked(&checkbox(t)).await,
            "{} is ticked: jo signed up for it",
            t.key
        );
    }
    assert_eq!(browser.value("#frequency").await, "none");
    assert!(browser.is_checked("#pause-none").await, "no pause yet");
    assert!(
        main.contains(&format!("Messages that aren't marketing\n{STILL_GET}")),
        "the service messages, and why they still arrive: {main}"
    );
    for s in SERVICE {
        assert!(
            browser.texts("main ul li").await.iter().any(|li| li == s),
            "{s:?} is listed"
        );
    }
    for button in [
        "Save my choices",
        "Stop all marketing",
        "Download my data",
        "Erase my data",
    ] {
        assert!(
            browser
                .texts("main button")
                .await
                .iter()
                .any(|b| b == button),
            "a {button:?} button"
        );
    }
    browser.assert_accessible("preference centre (en)").await;
    browser.screenshot("preferences-en.png").await;

    // 2. The same page in Welsh.
    browser.goto(&format!("{}?lang=cy", app.preferences)).await;
    assert_eq!(browser.html_lang().await, "cy");
    assert_eq!(browser.text("h1").await, "Eich dewisiadau e-bost");
    let main = browser.text("main").await;
    for welsh in [
        format!("Mae'r dewisiadau hyn ar gyfer {MASKED}."),
        "E-byst marchnata".to_owned(),
        "Faint o e-byst marchnata, ar y mwyaf".to_owned(),
        "Cael seibiant rhag e-byst marchnata".to_owned(),
        "Seibiant am 3 mis".to_owned(),
        "Atal pob marchnata".to_owned(),
        "Negeseuon nad ydyn nhw'n farchnata".to_owned(),
        "Lawrlwytho fy nata".to_owned(),
        "Dileu fy nata".to_owned(),
    ] {
        assert!(main.contains(&welsh), "{welsh:?} in the Welsh page: {main}");
    }
    assert_eq!(browser.text(&button_of("save")).await, "Cadw fy newisiadau");
    assert!(!main.contains("Save my choices"), "no English left: {main}");
    for t in [news, boots, events] {
        assert!(browser.is_checked(&checkbox(t)).await, "{} (cy)", t.key);
    }
    browser.assert_accessible("preference centre (cy)").await;
    browser.screenshot("preferences-cy.png").await;

    // 3. In English: untick news, at most one a week, pause for 3 months
    // (the page offers a pause over all marketing, not per topic), and
    // save with the keyboard.
    browser.goto(&app.preferences).await;
    let before = app.events_of(app.contact).await;
    let explain = browser.text("#explain").await;
    browser.click(&label(news)).await;
    assert!(
        !browser.is_checked(&checkbox(news)).await,
        "news is unticked"
    );
    let frequency = browser.find("#frequency").await;
    browser_support::step("choose at most 1 a week", frequency.select_by_value("1w")).await;
    assert_eq!(browser.value("#frequency").await, "1w");
    browser.click("label[for=pause-3]").await;
    assert!(
        browser.is_checked("#pause-3").await,
        "a 3-month pause is chosen"
    );
    let save = browser.tab_to(&button_of("save"), 10).await;
    let outline = browser_support::step("focus outline", save.css_value("outline-style")).await;
    assert_ne!(outline, "none", "the focused save button shows the focus");
    let sent_at = Timestamp::now();
    browser.press(Key::Enter).await;
    browser.wait_for("main [role=status]").await;
    assert_eq!(browser.text("h1").await, "Your choices are saved");

    let new = only_new(&before, app.events_of(app.contact).await);
    let kinds: Vec<&str> = new.iter().map(|e| e.event.kind.name()).collect();
    assert_eq!(
        kinds,
        ["withdraw", "frequency", "pause"],
        "exactly what jo changed, nothing for boots or events: {new:#?}"
    );
    let (withdraw, limit, pause) = (&new[0], &new[1], &new[2]);
    assert_eq!(withdraw.event.scope, Scope::Topic(news.id));
    assert_eq!(withdraw.event.channel, Some(Channel::Email));
    assert_eq!(
        limit.event.kind,
        EventKind::Frequency(Some(FrequencyLimit {
            max: 1,
            per: Period::Week
        }))
    );
    let EventKind::Pause { until } = pause.event.kind else {
        panic!("not a pause: {pause:?}")
    };
    let expected = sent_at
        .to_zoned_datetime(TimeZone::UTC)
        .checked_add(3.months())
        .expect("a date")
        .timestamp();
    assert!(
        (until.as_second() - expected.as_second()).abs() < 120,
        "the pause ends 3 months ahead: {until} vs {expected}"
    );
    for e in &new {
        assert_eq!(e.event.source.as_str(), "preference_centre", "{e:?}");
        assert_eq!(e.actor, "person", "{e:?}");
        assert_eq!(
            wording_text(app, e).await,
            explain,
            "the wording is the text the page showed"
        );
        assert_from_this_browser(e);
        assert!(
            ![Scope::Topic(boots.id), Scope::Topic(events.id)].contains(&e.event.scope),
            "nothing for topics left alone: {e:?}"
        );
    }
    assert_eq!(
        status_items(browser).await,
        [
            "You won't get Product news any more.".to_owned(),
            "Marketing emails: at most 1 a week.".to_owned(),
            format!("Marketing emails are paused until {}.", english_date(until)),
        ],
        "the page lists exactly what changed"
    );
    browser.assert_accessible("choices saved (en)").await;
    browser.screenshot("preferences-saved-en.png").await;

    // Back to the page: it shows what was saved.
    browser.click("main a[href^='/p/']").await;
    browser.wait_for("#frequency").await;
    assert!(
        !browser.is_checked(&checkbox(news)).await,
        "news is off now"
    );
    assert!(browser.is_checked(&checkbox(boots)).await);
    assert!(browser.is_checked(&checkbox(events)).await);
    assert_eq!(browser.value("#frequency").await, "1w");
    assert!(browser.is_checked("#pause-keep").await, "the pause is kept");
    assert!(
        browser.text("main").await.contains(&format!(
            "Marketing emails are paused until {}.",
            english_date(until)
        )),
        "the page says until when"
    );

    // 4a. Stop all marketing.
    let before = app.events_of(app.contact).await;
    let stop_explain = browser.text("#stop-explain").await;
    browser.click(&button_of("stop_all")).await;
    browser.wait_for("main [role=status]").await;
    assert_eq!(browser.text("h1").await, "Your choices are saved");
    assert_eq!(
        status_items(browser).await,
        [
            "You won't get any marketing from Example Shop any more: no emails, texts, calls or post."
        ]
    );
    let main = browser.text("main").await;
    assert!(main.contains(STILL_GET), "{main}");
    for s in SERVICE {
        assert!(main.contains(s), "{s:?} still arrives: {main}");
    }
    browser
        .assert_accessible("all marketing stopped (en)")
        .await;
    let new = only_new(&before, app.events_of(app.contact).await);
    assert_eq!(new.len(), 1, "one objection: {new:#?}");
    let object = &new[0];
    assert_eq!(object.event.kind, EventKind::Object, "{object:?}");
    assert_eq!(object.event.scope, Scope::All, "{object:?}");
    assert_eq!(object.event.channel, None, "every channel: {object:?}");
    assert_eq!(object.event.source.as_str(), "preference_centre");
    assert_eq!(wording_text(app, object).await, stop_explain);
    assert_from_this_browser(object);
    browser.click("main a[href^='/p/']").await;
    browser.wait_for("#frequency").await;
    for t in [news, boots, events] {
        assert!(!browser.is_checked(&checkbox(t)).await, "{} is off", t.key);
    }

    // 4b. Download my data: a link to the inbox, then the file.
    let events_before_data = app.store.count_events().await.expect("count events");
    browser.click("form[action*='/download'] button").await;
    browser.wait_for("main [role=status]").await;
    assert_eq!(browser.text("h1").await, "Check your email");
    let status = browser.text("main [role=status]").await;
    assert!(
        status.contains(&format!(
            "We've sent a link to {MASKED}; it works for an hour."
        )),
        "{status}"
    );
    browser.assert_accessible("download link sent (en)").await;
    let mail = outbox.take_one("the download link");
    assert_eq!(mail.header("Delivered-To").as_deref(), Some(ADDRESS));
    let link = mail.link(&app.url("/p/confirm/download/"));
    let data = download_in_browser(browser, &link).await;
    check_export(&data);
    // The same link over plain HTTP: a JSON attachment.
    let res = reqwest::get(&link).await.expect("GET the download link");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("content type")
            .starts_with("application/json"),
        "{:?}",
        res.headers()
    );
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"my-data.json\""
    );
    check_export(&res.json().await.expect("JSON"));
    assert_eq!(
        app.store.count_events().await.expect("count events"),
        events_before_data,
        "asking for one's data is not a consent event"
    );

    // 4c. Erase my data: a link to the inbox, a page that explains, a button.
    browser.goto(&app.preferences).await;
    browser.click("form[action*='/erase'] button").await;
    browser.wait_for("main [role=status]").await;
    assert_eq!(browser.text("h1").await, "Check your email");
    browser.assert_accessible("erase link sent (en)").await;
    let mail = outbox.take_one("the erase link");
    assert_eq!(mail.header("Delivered-To").as_deref(), Some(ADDRESS));
    let link = mail.link(&app.url("/p/confirm/erase/"));
    browser.goto(&link).await;
    assert_eq!(browser.html_lang().await, "en");
    assert_eq!(browser.text("h1").await, "Erase your data?");
    let main = browser.text("main").await;
    assert!(main.contains(&format!("This is for {MASKED}.")), "{main}");
    assert!(!main.contains(ADDRESS), "{main}");
    assert_eq!(browser.text("main form button").await, "Erase my data");
    browser.assert_accessible("erase confirmation (en)").await;
    browser.screenshot("erase-confirm-en.png").await;
    assert!(
        app.store
            .find_contact(&email(ADDRESS))
            .await
            .expect("find contact")
            .is_some(),
        "opening the link erased nothing"
    );
    browser.tab_to("main form button", 10).await;
    browser.press(Key::Enter).await;
    browser.wait_for("main [role=status]").await;
    assert_eq!(browser.text("h1").await, "Your data is erased");
    browser.assert_accessible("data erased (en)").await;
    assert!(
        app.store
            .find_contact(&email(ADDRESS))
            .await
            .expect("find contact")
            .is_none(),
        "the store no longer finds jo"
    );
    assert!(
        app.store
            .is_suppressed(&email(ADDRESS))
            .await
            .expect("is suppressed")
            .is_some(),
        "jo's \"no\" is kept as a suppression"
    );
    // The preference link now says so, and shows nothing of jo.
    browser.goto(&app.preferences).await;
    assert_eq!(
        browser.text("h1").await,
        "We don't hold your details any more"
    );
    assert!(!browser.source().await.contains(ADDRESS));
    browser.assert_accessible("details gone (en)").await;
    assert!(outbox.take_new().is_empty(), "nothing else was sent to jo");
    let ledger_now = app.store.count_events().await.expect("count events");
    assert!(ledger_now > ledger_at_start, "the journey is in the ledger");
}

/// Opens a download link in the browser and returns the JSON file it saved.
async fn download_in_browser(browser: &Browser, link: &str) -> Value {
    let file = browser.downloads.join("my-data.json");
    // A download is not a page: the browser stays where it was, and some
    // drivers report the aborted navigation as an error.
    let _ = tokio::time::timeout(Duration::from_secs(30), browser.client.goto(link)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return v;
        }
        if Instant::now() > deadline {
            let there: Vec<_> = std::fs::read_dir(&browser.downloads)
                .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            panic!(
                "the browser saved no my-data.json within 30 s; {} holds {there:?}",
                browser.downloads.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// jo's data: the address, every choice made in this journey with its
/// evidence, and the download link's own receipt.
fn check_export(v: &Value) {
    assert_eq!(v["contact"]["email"], ADDRESS, "{v:#}");
    assert_eq!(v["organisation"], "Example Shop", "{v:#}");
    let events = v["consent_events"].as_array().expect("consent_events");
    let seen: Vec<(&str, Option<&str>, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or(""),
                e["topic"].as_str(),
                e["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("grant", Some("news"), "form"),
            ("grant", Some("boots"), "form"),
            ("grant", Some("events"), "form"),
            ("withdraw", Some("news"), "preference_centre"),
            ("frequency", None, "preference_centre"),
            ("pause", None, "preference_centre"),
            ("object", None, "preference_centre"),
        ],
        "{v:#}"
    );
    for e in &events[3..] {
        assert_eq!(e["personal_data"]["ip"], "127.0.0.1", "{e:#}");
    }
    assert_eq!(
        v["wordings_shown"].as_array().map(Vec::len),
        Some(2),
        "the page's two texts: {v:#}"
    );
    let classes: Vec<&str> = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["class"].as_str())
        .collect();
    assert_eq!(classes, ["requested:download-data"], "{v:#}");
}

// ---- "email me a link" --------------------------------------------------------------

async fn request_link_journey(browser: &Browser, app: &App) {
    let mut outbox = Outbox::new(&app.outbox);
    outbox.take_new();
    browser.goto(&app.url("/p")).await;
    assert_eq!(browser.html_lang().await, "en");
    assert_eq!(browser.text("h1").await, "Manage your email choices");
    assert_eq!(browser.text("label[for=email]").await, "Your email address");
    browser.assert_accessible("request a link (en)").await;
    browser.screenshot("request-link-en.png").await;

    let field = browser.find("#email").await;
    browser_support::step("type the address", field.send_keys(SAM)).await;
    browser.press(Key::Enter).await;
    browser.wait_for("main [role=status]").await;
    assert_eq!(browser.text("h1").await, "Check your email");
    let status = browser.text("main [role=status]").await;
    assert!(
        status.starts_with(&format!(
            "If {SAM_MASKED} is on our list, we've sent it a link to your choices."
        )),
        "{status}"
    );
    assert!(!browser.source().await.contains(SAM));
    browser.assert_accessible("link requested (en)").await;

    // The mail holds sam's own preference link; it opens sam's page.
    let mail = outbox.take_one("the preference link");
    assert_eq!(mail.header("Delivered-To").as_deref(), Some(SAM));
    let link = mail.link(&app.url("/p/"));
    assert!(link.ends_with("?lang=en"), "{link}");
    browser.goto(&link).await;
    assert_eq!(browser.text("h1").await, "Your email choices");
    assert!(
        browser
            .text("main")
            .await
            .contains(&format!("These choices are for {SAM_MASKED}.")),
        "the link is sam's"
    );
    let news = app.topic("news");
    assert!(browser.is_checked(&format!("#topic-{}", news.id.0)).await);
}

// ---- double opt-in ------------------------------------------------------------------

async fn double_opt_in_journey(browser: &Browser, app: &App) {
    let mut outbox = Outbox::new(&app.outbox);
    outbox.take_new();
    let events = app.topic("events");
    let key = app
        .store
        .create_api_key(Role::Marketer, None)
        .await
        .expect("API key")
        .key;
    let wording = app
        .store
        .add_wording("Yes, email me about events near me.")
        .await
        .expect("wording")
        .id;
    let res = reqwest::Client::new()
        .post(app.url("/api/v1/signups"))
        .bearer_auth(&key)
        .json(&json!({
            "email": LEE, "topic": "events", "wording": wording.0,
            "ip": "192.0.2.10", "user_agent": "Mozilla/5.0 (sign-up form)",
            "form_url": "https://shop.example/signup",
        }))
        .send()
        .await
        .expect("POST /api/v1/signups");
    assert_eq!(res.status(), 202);
    assert_eq!(
        res.json::<Value>().await.expect("JSON"),
        json!({"status": "confirmation_sent"})
    );
    let mail = outbox.take_one("the confirmation link");
    assert_eq!(mail.header("Delivered-To").as_deref(), Some(LEE));
    let link = mail.link(&app.url("/confirm/"));

    browser.goto(&link).await;
    assert_eq!(browser.html_lang().await, "en");
    assert_eq!(browser.text("h1").await, "Confirm your subscription");
    let main = browser.text("main").await;
    assert!(
        main.contains("Press the button to get Events near you emails from Example Shop."),
        "{main}"
    );
    assert!(
        main.contains(&format!("This is for {LEE_MASKED}.")),
        "{main}"
    );
    assert!(!browser.source().await.contains(LEE));
    browser.assert_accessible("confirm signup (en)").await;
    assert!(
        app.store
            .find_contact(&email(LEE))
            .await
            .expect("find contact")
            .is_none(),
        "opening the link records nothing"
    );

    browser.click("main form button[type=submit]").await;
    browser.wait_for("main [role=status]").await;
    assert_eq!(
        browser.text("h1").await,
        "You're subscribed to Events near you"
    );
    browser.assert_accessible("subscribed (en)").await;

    let lee = app
        .store
        .find_contact(&email(LEE))
        .await
        .expect("find contact")
        .expect("lee is a contact now");
    let recorded = app.events_of(ContactId(lee.id)).await;
    assert_eq!(recorded.len(), 1, "one grant: {recorded:#?}");
    let e = &recorded[0];
    assert_eq!(e.event.kind, EventKind::Grant, "{e:?}");
    assert_eq!(e.event.scope, Scope::Topic(events.id), "{e:?}");
    assert_eq!(e.event.source.as_str(), "double_opt_in", "{e:?}");
    assert_eq!(e.wording, Some(wording), "the form's wording: {e:?}");
    assert_from_this_browser(e);
}
