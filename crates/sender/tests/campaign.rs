//! Campaigns sent by the real sender through the real SMTP transport to a
//! scripted upstream on 127.0.0.1: who got a message, what it said, when it
//! arrived, what upstream answered, and the receipts and ledger rows veto
//! kept. The two-sender test runs on PostgreSQL when
//! `VETO_TEST_POSTGRES_URL` is set (and says it was skipped otherwise).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::{Received, Script, Upstream};
use tokio::sync::watch;
use veto_core::{
    Channel, EmailAddress, EventKind, FrequencyLimit, NewEvent, Period, PolicySettings, Scope,
    Source, Timestamp, TopicKey,
};
use veto_sender::campaign::{CampaignSettings, CampaignSpec, Campaigns};
use veto_sender::copy::{FooterText, Links};
use veto_sender::outbound::Outbound;
use veto_sender::{CopyMaker, SmtpTransport, Transport, TransportFuture};
use veto_store::{
    Admitted, Append, AppendOutcome, CampaignState, ContactInput, Evidence, Guard, NewReceipt,
    NewTopic, Store,
};

fn email(a: &str) -> EmailAddress {
    EmailAddress::parse(a).expect("an address")
}

/// A transport that counts hand-offs in progress and makes each take a
/// little while, in front of the SMTP transport.
struct Counting {
    inner: SmtpTransport,
    now: AtomicUsize,
    most: AtomicUsize,
    delay: Duration,
}

impl Transport for Counting {
    fn relay<'a>(
        &'a self,
        envelope_from: &'a str,
        admitted: &'a Admitted,
        message: &'a [u8],
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let out = self.inner.relay(envelope_from, admitted, message).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            out
        })
    }
}

/// One store, one upstream and a sender over them.
struct World {
    _dir: Option<tempfile::TempDir>,
    store: Store,
    upstream: Upstream,
    campaigns: Arc<Campaigns>,
    counting: Arc<Counting>,
    stop: watch::Sender<bool>,
    wording: i64,
}

fn settings() -> CampaignSettings {
    CampaignSettings {
        node: "test-node".into(),
        claim: 8,
        chunk: 4,
        poll: Duration::from_millis(50),
        ..CampaignSettings::default()
    }
}

async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&dir.path().join("veto.db"))
        .await
        .expect("open sqlite");
    (dir, store)
}

/// The sender over `store`, sending to `upstream`.
fn sender(
    store: &Store,
    upstream: &Upstream,
    settings: CampaignSettings,
) -> (Arc<Campaigns>, Arc<Counting>) {
    let counting = Arc::new(Counting {
        inner: SmtpTransport::new(upstream.settings()).expect("transport"),
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        delay: Duration::from_millis(2),
    });
    let out = Outbound {
        guard: Guard::new(store.clone(), PolicySettings::default()),
        transport: counting.clone(),
        copies: CopyMaker {
            links: Links {
                public_url: "https://veto.shop.example".into(),
                mail_domain: "shop.example".into(),
                list_domain: "shop.example".into(),
                feedback_sender: "shopveto".into(),
            },
            footer: FooterText {
                organisation: "Example Shop".into(),
                postal_address: "1 High Street, Cardiff".into(),
                unsubscribe_text: "Unsubscribe".into(),
                preferences_text: "Manage your preferences".into(),
            },
            dkim: Vec::new(),
        },
    };
    (Campaigns::new(out, settings), counting)
}

async fn world_with(
    script: Script,
    settings: CampaignSettings,
    db: Option<(Option<tempfile::TempDir>, Store)>,
) -> World {
    let (dir, store) = match db {
        Some(db) => db,
        None => {
            let (d, s) = sqlite().await;
            (Some(d), s)
        }
    };
    store
        .add_topic(NewTopic {
            key: TopicKey::parse("news").expect("key"),
            name: "Product news".into(),
            description: "What we made this month.".into(),
            group: None,
        })
        .await
        .expect("add topic");
    let wording = store
        .add_wording("Yes, email me product news.")
        .await
        .expect("wording")
        .id
        .0;
    let upstream = Upstream::start(script).await;
    let (campaigns, counting) = sender(&store, &upstream, settings);
    let (stop, _) = watch::channel(false);
    World {
        _dir: dir,
        store,
        upstream,
        campaigns,
        counting,
        stop,
        wording,
    }
}

async fn world(script: Script, settings: CampaignSettings) -> World {
    world_with(script, settings, None).await
}

fn spec(rate: Option<f64>) -> CampaignSpec {
    CampaignSpec {
        name: "Winter news".into(),
        topic: "news".into(),
        from_name: Some("Shop".into()),
        from_address: "news@shop.example".into(),
        subject: "Winter news for {{ name or email }}".into(),
        text: "Hello {{ name }} from {{ attributes.city }},\nWhat we made this winter.\n".into(),
        html: Some("<p>Hello {{ name }} from {{ attributes.city }}</p>".into()),
        rate,
        created_by: "api-key:test".into(),
        ..CampaignSpec::default()
    }
}

/// A person: address, name, attributes.
type Person<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);

impl World {
    /// The people sign up for news on the shop's form.
    async fn grant(&self, people: &[Person<'_>]) {
        let topic = self
            .store
            .topic(&TopicKey::parse("news").expect("key"))
            .await
            .expect("topic")
            .expect("news");
        let items = people
            .iter()
            .map(|(a, name, attrs)| {
                let mut contact = ContactInput::new(email(a));
                contact.name = name.map(str::to_owned);
                contact.attributes = attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                Append {
                    contact,
                    event: NewEvent {
                        kind: EventKind::Grant,
                        scope: Scope::Topic(topic.id),
                        channel: Some(Channel::Email),
                        source: Source::Form,
                        at: Timestamp::now(),
                    },
                    evidence: Evidence {
                        wording: Some(self.wording),
                        ip: Some("192.0.2.10".into()),
                        user_agent: Some("Mozilla/5.0".into()),
                        form_url: Some("https://shop.example/signup".into()),
                    },
                    actor: "api-key:test".into(),
                }
            })
            .collect();
        for o in self.store.append(items, false).await.expect("grants") {
            assert!(matches!(o, AppendOutcome::Recorded { .. }), "{o:?}");
        }
    }

    async fn grant_plain(&self, addresses: &[String]) {
        let people: Vec<Person<'_>> = addresses
            .iter()
            .map(|a| (a.as_str(), None, &[][..]))
            .collect();
        for chunk in people.chunks(500) {
            self.grant(chunk).await;
        }
    }

    /// The person's own event (withdrawal, pause, complaint…), now.
    async fn event(&self, address: &str, kind: EventKind, scope: Scope, source: Source) {
        let out = self
            .store
            .append(
                vec![Append {
                    contact: ContactInput::new(email(address)),
                    event: NewEvent {
                        kind,
                        scope,
                        channel: Some(Channel::Email),
                        source,
                        at: Timestamp::now(),
                    },
                    evidence: Evidence::default(),
                    actor: "person".into(),
                }],
                false,
            )
            .await
            .expect("append");
        assert!(matches!(out[0], AppendOutcome::Recorded { .. }), "{out:?}");
    }

    async fn withdraw(&self, address: &str) {
        let topic = self
            .store
            .topic(&TopicKey::parse("news").expect("key"))
            .await
            .expect("topic")
            .expect("news");
        self.event(
            address,
            EventKind::Withdraw,
            Scope::Topic(topic.id),
            Source::OneClick,
        )
        .await;
    }

    fn run(&self) {
        tokio::spawn(self.campaigns.clone().run(self.stop.subscribe()));
    }

    async fn wait_state(
        &self,
        id: i64,
        state: CampaignState,
        within: Duration,
    ) -> veto_store::Campaign {
        let until = Instant::now() + within;
        loop {
            let c = self.campaigns.get(id).await.expect("campaign");
            if c.state == state {
                return c;
            }
            assert!(
                Instant::now() < until,
                "campaign {id} is {} ({:?}), not {state}, after {within:?}",
                c.state,
                c.state_reason
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What upstream took, by recipient.
    fn received(&self) -> BTreeMap<String, Vec<Received>> {
        let mut by: BTreeMap<String, Vec<Received>> = BTreeMap::new();
        for m in self.upstream.log().messages {
            assert_eq!(m.to.len(), 1, "one copy per person");
            by.entry(m.to[0].clone()).or_default().push(m);
        }
        by
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The message as text, quoted-printable undone (the rewritten parts use it).
fn text(m: &Received) -> String {
    let raw = String::from_utf8_lossy(&m.content).replace("=\r\n", "");
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'='
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(m: &'a str, name: &str) -> Option<&'a str> {
    let head = m.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
}

fn addresses(prefix: &str, n: usize, domain: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}@{domain}")).collect()
}

// ---- audience, templates, receipts ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_the_guard_admits_gets_their_own_message_and_a_receipt_with_template_version_and_hash()
 {
    let w = world(Script::default(), settings()).await;
    w.grant(&[
        (
            "ann@example.com",
            Some("Ann <b>&</b> co"),
            &[("city", "Cardiff")],
        ),
        ("bob@example.com", Some("Bob"), &[("city", "Leeds")]),
        ("gone@example.com", Some("Gone"), &[]),
        ("paused@example.com", Some("Paused"), &[]),
        ("limited@example.com", Some("Limited"), &[]),
    ])
    .await;
    w.withdraw("gone@example.com").await;
    let until = Timestamp::now() + Duration::from_secs(30 * 86_400);
    w.event(
        "paused@example.com",
        EventKind::Pause { until },
        Scope::All,
        Source::PreferenceCentre,
    )
    .await;
    w.event(
        "limited@example.com",
        EventKind::Frequency(Some(FrequencyLimit {
            max: 1,
            per: Period::Week,
        })),
        Scope::All,
        Source::PreferenceCentre,
    )
    .await;
    // …and got one marketing message yesterday.
    let limited = w
        .store
        .find_contact(&email("limited@example.com"))
        .await
        .unwrap()
        .unwrap();
    w.store
        .record_receipts(vec![NewReceipt {
            message_id: "<earlier@shop.example>".into(),
            contact: Some(limited.id),
            recipient: "limited@example.com".into(),
            subject: Some("Earlier".into()),
            content_hash: None,
            template_version: None,
            class: "news".into(),
            channel: "email".into(),
            allowed: true,
            rule: "GDPR-6".into(),
            reason: None,
            event: None,
            checked_at: (Timestamp::now() - Duration::from_secs(86_400)).as_microsecond(),
            outcome: Some("250 ok".into()),
            relayed_at: None,
        }])
        .await
        .unwrap();

    let c = w.campaigns.create(spec(None)).await.expect("create");
    assert_eq!(c.state, CampaignState::Draft);
    w.campaigns.start(c.id).await.expect("start");
    w.run();
    w.wait_state(c.id, CampaignState::Done, Duration::from_secs(20))
        .await;

    let got = w.received();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["ann@example.com", "bob@example.com"],
        "only the two who may get news"
    );
    let ann = text(&got["ann@example.com"][0]);
    assert_eq!(
        header(&ann, "Subject"),
        Some("Winter news for Ann <b>&</b> co")
    );
    assert!(
        ann.contains("Hello Ann <b>&</b> co from Cardiff"),
        "text part as written: {ann}"
    );
    assert!(
        ann.contains("<p>Hello Ann &lt;b&gt;&amp;&lt;&#x2f;b&gt; co from Cardiff</p>"),
        "HTML part escaped: {ann}"
    );
    assert!(
        ann.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{ann}"
    );
    let bob = text(&got["bob@example.com"][0]);
    assert!(bob.contains("Hello Bob from Leeds"), "{bob}");
    assert_ne!(
        header(&ann, "List-Unsubscribe"),
        header(&bob, "List-Unsubscribe")
    );

    let s = w.campaigns.status(c.id).await.unwrap();
    assert_eq!(s.progress.sent, 2);
    assert_eq!(
        s.progress.refused,
        BTreeMap::from([
            ("frequency_limit".to_owned(), 1),
            ("paused".to_owned(), 1),
            ("withdrawn".to_owned(), 1),
        ])
    );
    assert_eq!(s.progress.remaining(), 0);

    // Receipts: one per recipient, with the template version and the hash
    // of exactly the bytes upstream took.
    for (to, copies) in &got {
        let mid = header(&text(&copies[0]), "Message-ID").unwrap().to_owned();
        let rs = w.store.receipts_for_message(&mid).await.unwrap();
        assert_eq!(rs.len(), 1, "{to}: {rs:?}");
        let r = &rs[0].receipt;
        assert!(r.allowed);
        assert_eq!(
            r.template_version.as_deref(),
            Some(c.template_version.as_str())
        );
        let hash = data_hex(&Sha256::digest(&copies[0].content));
        assert_eq!(r.content_hash.as_deref(), Some(hash.as_str()), "{to}");
        assert!(
            r.outcome.as_deref().unwrap_or("").starts_with("250"),
            "{r:?}"
        );
    }
    for (to, reason) in [
        ("gone@example.com", "withdrawn"),
        ("paused@example.com", "paused"),
        ("limited@example.com", "frequency_limit"),
    ] {
        let contact = w.store.find_contact(&email(to)).await.unwrap().unwrap();
        let rs = w
            .store
            .receipts_for_contact(veto_core::ContactId(contact.id))
            .await
            .unwrap();
        let r = rs
            .iter()
            .find(|r| {
                r.receipt
                    .message_id
                    .starts_with(&format!("<campaign-{}.", c.id))
            })
            .unwrap_or_else(|| panic!("no refusal receipt for {to}: {rs:?}"));
        assert!(!r.receipt.allowed);
        assert_eq!(r.receipt.reason.as_deref(), Some(reason));
        assert_eq!(
            r.receipt.template_version.as_deref(),
            Some(c.template_version.as_str())
        );
    }
}

fn data_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_data_cannot_inject_headers_or_template_code() {
    let w = world(Script::default(), settings()).await;
    w.grant(&[
        (
            "eve@example.com",
            Some("Eve\r\nBcc: everyone@example.com"),
            &[],
        ),
        (
            "mal@example.com",
            Some("{{ 7 * 7 }}{% for x in range(3) %}X{% endfor %}"),
            &[("city", "<script>alert(1)</script>")],
        ),
        ("ok@example.com", Some("Ok"), &[]),
    ])
    .await;
    // Template syntax errors name the part and the line.
    let mut bad = spec(None);
    bad.text = "Hello\n{{ name ".into();
    let e = w.campaigns.create(bad).await.unwrap_err().to_string();
    assert!(e.starts_with("text:") && e.contains("line 2"), "{e}");
    let mut bad = spec(None);
    bad.from_name = Some("Shop\r\nBcc: x@example.com".into());
    let e = w.campaigns.create(bad).await.unwrap_err().to_string();
    assert!(e.starts_with("from_name:"), "{e}");

    let c = w.campaigns.create(spec(None)).await.expect("create");
    w.campaigns.start(c.id).await.unwrap();
    w.run();
    w.wait_state(c.id, CampaignState::Done, Duration::from_secs(20))
        .await;
    let got = w.received();
    assert!(!got.contains_key("everyone@example.com"));
    assert!(
        !got.contains_key("eve@example.com"),
        "a subject with a line break is not sent"
    );
    let log = w.upstream.log();
    assert!(
        !log.commands.iter().any(|(_, l)| l.contains("everyone@")),
        "no injected recipient reached upstream"
    );
    let mal = text(&got["mal@example.com"][0]);
    assert!(
        mal.contains("Hello {{ 7 * 7 }}{% for x in range(3) %}X{% endfor %} from"),
        "data is not code: {mal}"
    );
    assert!(!mal.contains("Hello 49"), "{mal}");
    assert!(
        mal.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{mal}"
    );
    assert!(!mal.contains("<script>alert(1)</script></p>"), "{mal}");
    let s = w.campaigns.status(c.id).await.unwrap();
    assert_eq!((s.progress.sent, s.progress.failed), (2, 1), "{s:?}");
    let eve = w
        .store
        .find_contact(&email("eve@example.com"))
        .await
        .unwrap()
        .unwrap();
    let rs = w
        .store
        .receipts_for_contact(veto_core::ContactId(eve.id))
        .await
        .unwrap();
    assert!(
        rs.iter().any(|r| r
            .receipt
            .outcome
            .as_deref()
            .unwrap_or("")
            .contains("line break")),
        "{rs:?}"
    );
}

// ---- preview and test sends -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_message_and_the_guards_answer_and_a_test_send_is_marked() {
    let w = world(Script::default(), settings()).await;
    w.grant(&[
        ("ann@example.com", Some("Ann"), &[("city", "Cardiff")]),
        ("gone@example.com", Some("Gone"), &[]),
    ])
    .await;
    w.withdraw("gone@example.com").await;
    let c = w.campaigns.create(spec(None)).await.unwrap();
    let p = w.campaigns.preview(c.id, "ann@example.com").await.unwrap();
    assert!(p.allowed);
    assert!(
        p.message.contains("Subject: Winter news for Ann"),
        "{}",
        p.message
    );
    assert!(p.message.contains("Hello Ann from Cardiff"));
    assert!(p.message.contains("List-Unsubscribe:"));
    let p = w.campaigns.preview(c.id, "gone@example.com").await.unwrap();
    assert!(!p.allowed);
    assert_eq!(
        p.reason.as_deref().map(|r| r.contains("withdr")),
        Some(true),
        "{p:?}"
    );
    let e = w
        .campaigns
        .preview(c.id, "nobody@example.com")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no contact"), "{e}");
    assert!(
        w.upstream.log().messages.is_empty(),
        "a preview sends nothing"
    );

    let out = w
        .campaigns
        .test_send(c.id, &["ann@example.com".into(), "gone@example.com".into()])
        .await
        .unwrap();
    assert!(out[0].sent, "{out:?}");
    assert!(
        !out[1].sent && out[1].detail.contains("the guard said no"),
        "{out:?}"
    );
    let got = w.received();
    assert_eq!(got.len(), 1);
    let m = text(&got["ann@example.com"][0]);
    assert_eq!(header(&m, "Subject"), Some("[TEST] Winter news for Ann"));
    assert!(header(&m, "X-Veto-Test").is_some(), "{m}");
    // A test send does not start the campaign.
    assert_eq!(
        w.campaigns.get(c.id).await.unwrap().state,
        CampaignState::Draft
    );
}

// ---- control: pause, resume, cancel, schedule ----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_sending_resume_goes_on_and_cancel_ends_it() {
    let w = world(Script::default(), settings()).await;
    let people = addresses("p", 60, "example.com");
    w.grant_plain(&people).await;
    let c = w.campaigns.create(spec(Some(30.0))).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    w.run();
    while w.upstream.log().messages.len() < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.campaigns.pause(c.id, "api-key:test").await.unwrap();
    // What was in hand finishes; then nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let at_pause = w.upstream.log().messages.len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        w.upstream.log().messages.len(),
        at_pause,
        "sent while paused"
    );
    let s = w.campaigns.status(c.id).await.unwrap();
    assert_eq!(s.campaign.state, CampaignState::Paused);
    assert_eq!(
        s.campaign.state_reason.as_deref(),
        Some("paused by api-key:test")
    );
    assert_eq!(s.progress.sent as usize, at_pause);
    assert!(at_pause < 60, "{at_pause}");
    // Resume twice is refused the second time, with the reason.
    w.campaigns.resume(c.id).await.unwrap();
    let e = w.campaigns.resume(c.id).await.unwrap_err().to_string();
    assert!(e.contains("is sending"), "{e}");
    w.wait_state(c.id, CampaignState::Done, Duration::from_secs(20))
        .await;
    let got = w.received();
    assert_eq!(got.len(), 60);
    assert!(got.values().all(|v| v.len() == 1), "nobody twice");

    // Cancel: a second campaign stops for good.
    let c2 = w.campaigns.create(spec(Some(30.0))).await.unwrap();
    w.campaigns.start(c2.id).await.unwrap();
    let before = w.upstream.log().messages.len();
    while w.upstream.log().messages.len() < before + 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.campaigns.cancel(c2.id, "cli:dana").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let at_cancel = w.upstream.log().messages.len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(w.upstream.log().messages.len(), at_cancel);
    assert!(at_cancel < before + 60);
    let e = w.campaigns.resume(c2.id).await.unwrap_err().to_string();
    assert!(e.contains("cancelled"), "{e}");
    let s = w.campaigns.status(c2.id).await.unwrap();
    assert_eq!(s.campaign.state, CampaignState::Cancelled);
    assert!(
        s.progress.remaining() > 0,
        "the rest stays visible as not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_campaign_waits_for_its_time() {
    let w = world(Script::default(), settings()).await;
    w.grant_plain(&addresses("s", 5, "example.com")).await;
    let mut sp = spec(None);
    let at = Timestamp::now() + Duration::from_secs(2);
    sp.scheduled_at = Some(at);
    let c = w.campaigns.create(sp).await.unwrap();
    let c = w.campaigns.start(c.id).await.unwrap();
    assert_eq!(c.state, CampaignState::Scheduled);
    w.run();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(w.upstream.log().messages.is_empty(), "sent before its time");
    w.wait_state(c.id, CampaignState::Done, Duration::from_secs(10))
        .await;
    let log = w.upstream.log();
    assert_eq!(log.messages.len(), 5);
    assert!(Timestamp::now() >= at);
}

// ---- limits ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_per_domain_rate_and_concurrency_are_kept() {
    let w = world(Script::default(), settings()).await;
    w.grant_plain(&addresses("r", 40, "example.com")).await;
    let c = w.campaigns.create(spec(Some(20.0))).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    let t0 = Instant::now();
    w.run();
    w.wait_state(c.id, CampaignState::Done, Duration::from_secs(20))
        .await;
    let log = w.upstream.log();
    assert_eq!(log.messages.len(), 40);
    let span = log.messages.last().unwrap().at - log.messages[0].at;
    // 40 at 20/s: the last slot is 1.95 s after the first.
    assert!(
        span >= Duration::from_millis(1800),
        "40 messages at 20/s took {span:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));

    // Per domain: 10/s to each of two domains, 100/s in all, 4 at once.
    let mut people = addresses("a", 20, "a.example");
    people.extend(addresses("b", 20, "b.example"));
    w.grant_plain(&people).await;
    let mut sp = spec(Some(100.0));
    sp.domain_rate = Some(10.0);
    sp.concurrency = Some(3);
    let before = w.upstream.log().messages.len();
    let c = w.campaigns.create(sp).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    w.wait_state(c.id, CampaignState::Done, Duration::from_secs(20))
        .await;
    let log = w.upstream.log();
    // The 40 people of the first campaign get it too (they agreed): 80.
    assert_eq!(log.messages.len() - before, 80);
    for domain in ["a.example", "b.example"] {
        let times: Vec<Instant> = log.messages[before..]
            .iter()
            .filter(|m| m.to[0].ends_with(domain))
            .map(|m| m.at)
            .collect();
        assert_eq!(times.len(), 20);
        let span = *times.last().unwrap() - times[0];
        assert!(
            span >= Duration::from_millis(1700),
            "20 to {domain} at 10/s took {span:?}"
        );
    }
    let most = w.counting.most.load(Ordering::SeqCst);
    assert!(
        most <= 4,
        "at most the first campaign's 4 or this one's 3 at once: {most}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_caps_per_topic_and_per_api_key_hold_the_rest_until_tomorrow() {
    let mut s = settings();
    s.daily_cap_per_topic = Some(7);
    let w = world(Script::default(), s).await;
    w.grant_plain(&addresses("d", 12, "example.com")).await;
    let c = w.campaigns.create(spec(None)).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    w.run();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = w.campaigns.status(c.id).await.unwrap();
        if s.campaign
            .state_reason
            .as_deref()
            .is_some_and(|r| r.contains("daily cap"))
        {
            break;
        }
        assert!(Instant::now() < until, "no cap reached: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = w.campaigns.status(c.id).await.unwrap();
    assert_eq!(w.upstream.log().messages.len(), 7);
    assert_eq!(s.progress.sent, 7);
    assert_eq!(
        s.campaign.state,
        CampaignState::Sending,
        "it goes on tomorrow"
    );
    assert_eq!(s.progress.remaining(), 5);

    // Per API key: another sender with a cap of 3 per key.
    let mut s = settings();
    s.daily_cap_per_key = Some(3);
    let w = world(Script::default(), s).await;
    w.grant_plain(&addresses("k", 5, "example.com")).await;
    let c = w.campaigns.create(spec(None)).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    w.run();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.upstream.log().messages.len(), 3);
    let st = w.campaigns.status(c.id).await.unwrap();
    assert!(
        st.campaign
            .state_reason
            .as_deref()
            .unwrap_or("")
            .contains("daily cap"),
        "{st:?}"
    );
}

// ---- the guard at hand-off ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_mid_campaign_stops_that_persons_message() {
    let w = world(Script::default(), settings()).await;
    let people = addresses("m", 30, "example.com");
    w.grant_plain(&people).await;
    let c = w.campaigns.create(spec(Some(15.0))).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    w.run();
    while w.upstream.log().messages.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Queued, claimed even, but not yet checked: these two say no now.
    w.withdraw("m0025@example.com").await;
    w.withdraw("m0029@example.com").await;
    w.wait_state(c.id, CampaignState::Done, Duration::from_secs(20))
        .await;
    let got = w.received();
    assert_eq!(got.len(), 28);
    assert!(!got.contains_key("m0025@example.com") && !got.contains_key("m0029@example.com"));
    let s = w.campaigns.status(c.id).await.unwrap();
    assert_eq!(s.progress.refused.get("withdrawn"), Some(&2));
    assert!(s.longest_check_to_handoff_us < 1_000_000, "{s:?}");
}

// ---- brakes and feedback ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaints_pause_the_campaign_and_say_why_and_counts_show_against_the_limits() {
    let mut s = settings();
    s.brake_min_sample = 10;
    s.claim = 4;
    let w = world(Script::default(), s).await;
    let people = addresses("c", 40, "example.com");
    w.grant_plain(&people).await;
    let c = w.campaigns.create(spec(Some(20.0))).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    w.run();
    while w.upstream.log().messages.len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = w.upstream.log().messages[0].to[0].clone();
    let second = w.upstream.log().messages[1].to[0].clone();
    // The first person's mail provider reports a complaint; the second unsubscribes.
    w.event(&first, EventKind::Complaint, Scope::All, Source::Feedback)
        .await;
    w.withdraw(&second).await;
    let paused = w
        .wait_state(c.id, CampaignState::Paused, Duration::from_secs(10))
        .await;
    let reason = paused.state_reason.unwrap_or_default();
    assert!(reason.starts_with("complaint rate"), "{reason}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = w.campaigns.status(c.id).await.unwrap();
    assert!(s.progress.sent >= 10 && s.progress.sent < 40, "{s:?}");
    assert_eq!(
        (
            s.feedback.complaints,
            s.feedback.unsubscribes,
            s.feedback.hard_bounces
        ),
        (1, 1, 0)
    );
    assert!((s.rates.complaint_rate - 1.0 / s.progress.sent as f64).abs() < 1e-9);
    assert_eq!(s.rates.complaint_limit, 0.001);
    assert_eq!(s.rates.hard_bounce_limit, 0.05);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["rates"]["complaint_limit"], 0.001);
    assert_eq!(json["feedback"]["complaints"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_at_rcpt_is_a_hard_bounce_and_the_bounce_brake_pauses_the_campaign() {
    let mut s = settings();
    s.brake_min_sample = 10;
    s.claim = 4;
    let script = Script {
        rcpt_for: vec![("bad", "550 5.1.1 No such user here")],
        ..Script::default()
    };
    let w = world(script, s).await;
    let mut people = addresses("g", 40, "example.com");
    for i in [1, 4, 7] {
        people[i] = format!("bad{i}@example.com");
    }
    people.sort();
    w.grant_plain(&people).await;
    let c = w.campaigns.create(spec(Some(20.0))).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    w.run();
    let paused = w
        .wait_state(c.id, CampaignState::Paused, Duration::from_secs(10))
        .await;
    let reason = paused.state_reason.unwrap_or_default();
    assert!(reason.starts_with("hard-bounce rate"), "{reason}");
    let s = w.campaigns.status(c.id).await.unwrap();
    assert_eq!(s.feedback.hard_bounces, 3, "{s:?}");
    assert_eq!(s.progress.failed, 3);
    // The ledger holds a hard bounce, and the guard refuses that address now.
    let bad = w
        .store
        .find_contact(&email("bad1@example.com"))
        .await
        .unwrap()
        .unwrap();
    let events = w
        .store
        .events_of(veto_core::ContactId(bad.id))
        .await
        .unwrap();
    let bounce = events
        .iter()
        .find(|e| e.event.kind == EventKind::HardBounce)
        .unwrap_or_else(|| panic!("no hard bounce: {events:?}"));
    assert_eq!(bounce.event.source, Source::Feedback);
    let p = w.campaigns.preview(c.id, "bad1@example.com").await.unwrap();
    assert!(!p.allowed, "{p:?}");
    // Resumed, nobody who bounced is tried again.
    w.campaigns.resume(c.id).await.unwrap();
    let mut s2 = w.campaigns.status(c.id).await.unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while s2.campaign.state != CampaignState::Done && Instant::now() < until {
        // The brake may act again (3 in 40 is 7.5%); resume each time.
        if s2.campaign.state == CampaignState::Paused {
            w.campaigns.resume(c.id).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        s2 = w.campaigns.status(c.id).await.unwrap();
    }
    assert_eq!(s2.campaign.state, CampaignState::Done, "{s2:?}");
    let rcpts = w
        .upstream
        .log()
        .commands
        .iter()
        .filter(|(_, l)| l.contains("bad1@"))
        .count();
    assert_eq!(rcpts, 1, "bad1 was tried once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_upstream_is_retried_with_backoff_and_nobody_is_lost_or_doubled() {
    let script = Script {
        rcpt_temp_failures: 3,
        ..Script::default()
    };
    let w = world(script, settings()).await;
    let people = addresses("t", 12, "example.com");
    w.grant_plain(&people).await;
    let c = w.campaigns.create(spec(None)).await.unwrap();
    w.campaigns.start(c.id).await.unwrap();
    let t0 = Instant::now();
    w.run();
    w.wait_state(c.id, CampaignState::Done, Duration::from_secs(30))
        .await;
    let took = t0.elapsed();
    let got = w.received();
    assert_eq!(got.len(), 12);
    assert!(got.values().all(|v| v.len() == 1));
    // Three refusals, each followed by a wait (1 s, 2 s, …).
    assert!(
        took >= Duration::from_secs(3),
        "retried without waiting: {took:?}"
    );
    let log = w.upstream.log();
    assert_eq!(log.rcpts_seen, 15);
    // Only the copy that went has a receipt; the deferred tries left none.
    for to in &people {
        let contact = w.store.find_contact(&email(to)).await.unwrap().unwrap();
        let rs = w
            .store
            .receipts_for_contact(veto_core::ContactId(contact.id))
            .await
            .unwrap();
        assert_eq!(rs.len(), 1, "{to}: {rs:?}");
        assert!(
            rs[0]
                .receipt
                .outcome
                .as_deref()
                .unwrap_or("")
                .starts_with("250")
        );
    }
}

// ---- several nodes ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_one_postgresql_share_a_campaign_and_nobody_gets_it_twice() {
    let Some(url) = std::env::var("VETO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipped: two senders on PostgreSQL (set VETO_TEST_POSTGRES_URL to run it)");
        return;
    };
    let schema = format!(
        "veto_campaign_{}_{}",
        std::process::id(),
        Timestamp::now().as_microsecond()
    );
    let open = || async {
        Store::open_postgres(&url, Some(&schema))
            .await
            .unwrap_or_else(|e| {
                panic!("VETO_TEST_POSTGRES_URL is set but PostgreSQL could not be used: {e}")
            })
    };
    let mut sa = settings();
    sa.node = "node-a".into();
    sa.claim = 16;
    sa.release_on_start = false;
    let a = world_with(Script::default(), sa.clone(), Some((None, open().await))).await;
    // The second node: its own connection pool and its own upstream.
    let store_b = open().await;
    let upstream_b = Upstream::start(Script::default()).await;
    let mut sb = sa.clone();
    sb.node = "node-b".into();
    let (campaigns_b, _) = sender(&store_b, &upstream_b, sb);
    let people = addresses("n", 1500, "example.com");
    a.grant_plain(&people).await;
    let c = a.campaigns.create(spec(None)).await.unwrap();
    a.campaigns.start(c.id).await.unwrap();
    a.run();
    let (stop_b, rx_b) = watch::channel(false);
    tokio::spawn(campaigns_b.clone().run(rx_b));
    a.wait_state(c.id, CampaignState::Done, Duration::from_secs(120))
        .await;
    let _ = stop_b.send(true);
    let got_a: Vec<String> = a
        .upstream
        .log()
        .messages
        .iter()
        .map(|m| m.to[0].clone())
        .collect();
    let got_b: Vec<String> = upstream_b
        .log()
        .messages
        .iter()
        .map(|m| m.to[0].clone())
        .collect();
    let mut all: BTreeMap<&String, usize> = BTreeMap::new();
    for to in got_a.iter().chain(&got_b) {
        *all.entry(to).or_default() += 1;
    }
    let twice: Vec<_> = all.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "handed off more than once: {twice:?}");
    let everyone: BTreeSet<&String> = people.iter().collect();
    assert_eq!(
        all.keys().copied().collect::<BTreeSet<_>>(),
        everyone,
        "each person once"
    );
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both nodes sent: {} and {}",
        got_a.len(),
        got_b.len()
    );
    let s = a.campaigns.status(c.id).await.unwrap();
    assert_eq!(s.progress.sent, 1500);
    println!(
        "two senders on PostgreSQL: node a handed off {}, node b {}, none twice",
        got_a.len(),
        got_b.len()
    );
}
