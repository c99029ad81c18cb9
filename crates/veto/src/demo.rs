//! `veto demo`: a demonstration organisation in a directory of its own,
//! seeded once with topics, wordings, staff users and a few hundred contacts
//! whose consent histories cover the four rule packs, then served exactly as
//! `veto serve` serves it. Everything is written through the store's own
//! operations (appends, erasures, a campaign), so the guard sees the demo
//! data the way it sees real data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use veto_core::{
    Channel, Decision, EmailAddress, EventKind, FrequencyLimit, Jurisdiction, JurisdictionSet,
    Message, MessageClass, NewEvent, Period, PhoneNumber, Relationship, RelationshipKind, Role,
    Scope, Source, Timestamp, Topic, TopicKey, decide,
};
use veto_store::{
    Append, AppendOutcome, ContactInput, Evidence, KeySpec, NewSubjectRequest, NewTopic, Outcome,
    RequestKind, RequestVia,
};

use crate::app::{self, App};
use crate::commands::Serving;
use crate::config;

/// The topic the demo campaign and the gateway's loopback submissions market.
const DEMO_TOPIC: &str = "offers";
/// Written last, after seeding: its presence means "seeded, do not seed again".
const CREDENTIALS_FILE: &str = "demo-credentials.txt";
const ORGANISATION: &str = "Demo Outdoor Shop";
const DOMAIN: &str = "demo.example";
const SEED: u64 = 2026;
/// Contacts made besides the named demo customers.
const GENERATED: usize = 300;

/// What a second run needs to print the same again.
#[derive(Serialize, Deserialize)]
struct Credentials {
    admin: String,
    dpo: String,
    marketer: String,
    api_key: String,
    campaign: i64,
}

/// `veto demo [--dir DIR]`.
pub async fn run(dir: PathBuf) -> Result<ExitCode> {
    let file = dir.join(config::DEFAULT_FILE);
    let credentials_file = dir.join(CREDENTIALS_FILE);
    let seeded = credentials_file.exists();
    if !seeded {
        if file.exists() || dir.join("veto-data").exists() {
            bail!(
                "{} holds a veto configuration or data directory but no {CREDENTIALS_FILE}: it is not a \
                 finished demo (an earlier `veto demo` stopped while seeding, or it is a real installation). \
                 Choose another --dir, or remove {} to start the demo afresh",
                dir.display(),
                dir.display()
            );
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&file, demo_toml())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let config = demo_config(&file)?;
    let credentials = if seeded {
        let text = std::fs::read_to_string(&credentials_file)
            .with_context(|| format!("cannot read {}", credentials_file.display()))?;
        toml::from_str::<Credentials>(&text)
            .with_context(|| format!("{} is damaged", credentials_file.display()))?
    } else {
        eprintln!("veto demo: seeding {} in {} …", ORGANISATION, dir.display());
        let lock = crate::ops::DataLock::take(&config.store.data_dir, "veto demo")?;
        let app = App::open_with(config.clone()).await?;
        let credentials = seed(&app).await?;
        app.store.close().await;
        drop(lock);
        write_private(&credentials_file, &credentials_text(&credentials)?)?;
        credentials
    };
    let serving = Serving::start(config).await?;
    let summary_line = summary(&serving.app).await?;
    print_block(&serving, &dir, &credentials, &summary_line, seeded).await?;
    serving.run().await
}

/// The demo's configuration: its file, the environment over it
/// (`VETO_WEB__LISTEN`, `VETO_GATEWAY__LISTEN`, …), and links that follow
/// the web server's address when only that was moved.
fn demo_config(file: &Path) -> Result<config::Config> {
    let mut config = app::load_config(Some(file))?;
    if std::env::var_os("VETO_WEB__LISTEN").is_some()
        && std::env::var_os("VETO_WEB__PUBLIC_URL").is_none()
    {
        config.web.public_url = format!("http://{}", config.web.listen);
    }
    Ok(config)
}

fn demo_toml() -> String {
    format!(
        r#"# A demonstration of veto, written by `veto demo`: run `veto demo` again to start it.
# Every key not here has its default (see `veto init` for the commented list).
# Environment variables VETO_SECTION__KEY win over this file, e.g. VETO_WEB__LISTEN=127.0.0.1:9090.

[store]
data_dir = "veto-data"

[web]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"

[gateway]
listen = "127.0.0.1:2525"
# Tools on this machine may submit without AUTH; their mail is marketing on the topic {DEMO_TOPIC}.
trusted_networks = ["127.0.0.1/32"]
trusted_default_topic = "{DEMO_TOPIC}"

[delivery]
# Admitted copies go to veto-data/outbox/ (a Maildir), not to the internet.
upstream = "maildir"

[organisation]
name = "{ORGANISATION}"
postal_address = "Demo Outdoor Shop, 1 Example Street, Cardiff CF10 1AA, United Kingdom"
domain = "{DOMAIN}"

[service.types]
billing = "Receipts and invoices for things you bought"
delivery = "Where your order is and when it arrives"
security = "Sign-in and password alerts about your account"
"#
    )
}

fn credentials_text(c: &Credentials) -> Result<String> {
    Ok(format!(
        "# veto demo: the staff users' passwords and the marketer's API key. Keep this file private.\n{}",
        toml::to_string(c)?
    ))
}

/// Writes a file only its owner can read (it holds passwords).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn password() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

// ---- the demo data ---------------------------------------------------------------------

/// A small deterministic generator (SplitMix64): the same demo every time.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A whole number of days in `lo..hi`.
    fn days(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below(u64::try_from(hi - lo).unwrap_or(1)) as i64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Copy)]
enum T {
    News,
    Offers,
    Events,
}

#[derive(Clone, Copy)]
enum W {
    News,
    Offers,
    Events,
    Checkout,
}

/// One event of a person's history, `days_ago` before seeding.
struct Step {
    days_ago: i64,
    kind: EventKind,
    scope: Option<T>,
    channel: Option<Channel>,
    source: Source,
    wording: Option<W>,
    ip: Option<String>,
    form_url: Option<&'static str>,
    actor: &'static str,
}

struct Person {
    email: String,
    name: String,
    jurisdiction: Option<Jurisdiction>,
    phone: Option<String>,
    steps: Vec<Step>,
    /// Erased this many days ago.
    erased: Option<i64>,
}

fn grant(days_ago: i64, topic: T, ip: String) -> Step {
    let (wording, form_url) = match topic {
        T::News => (W::News, "https://demo.example/newsletter"),
        T::Offers => (W::Offers, "https://demo.example/signup"),
        T::Events => (W::Events, "https://demo.example/events"),
    };
    Step {
        days_ago,
        kind: EventKind::Grant,
        scope: Some(topic),
        channel: Some(Channel::Email),
        source: Source::Form,
        wording: Some(wording),
        ip: Some(ip),
        form_url: Some(form_url),
        actor: "api-key:demo-website",
    }
}

fn by_person(days_ago: i64, kind: EventKind, scope: Option<T>, source: Source) -> Step {
    Step {
        days_ago,
        kind,
        scope,
        channel: Some(Channel::Email),
        source,
        wording: None,
        ip: None,
        form_url: None,
        actor: "person",
    }
}

fn purchase(days_ago: i64, group: &str, order: String, opt_out_offered: bool) -> Step {
    Step {
        days_ago,
        kind: EventKind::Relationship(Relationship {
            kind: RelationshipKind::Purchase,
            product_group: Some(group.to_owned()),
            order_ref: Some(order),
            opt_out_offered,
        }),
        scope: None,
        channel: Some(Channel::Email),
        source: Source::Api,
        wording: opt_out_offered.then_some(W::Checkout),
        ip: None,
        form_url: None,
        actor: "api-key:demo-checkout",
    }
}

fn inquiry(days_ago: i64) -> Step {
    Step {
        days_ago,
        kind: EventKind::Relationship(Relationship {
            kind: RelationshipKind::Inquiry,
            product_group: Some("outdoor-gear".into()),
            order_ref: None,
            opt_out_offered: true,
        }),
        scope: None,
        channel: Some(Channel::Email),
        source: Source::Api,
        wording: None,
        ip: None,
        form_url: Some("https://demo.example/contact"),
        actor: "api-key:demo-website",
    }
}

fn feedback(days_ago: i64, kind: EventKind) -> Step {
    Step {
        days_ago,
        kind,
        scope: None,
        channel: Some(Channel::Email),
        source: Source::Feedback,
        wording: None,
        ip: None,
        form_url: None,
        actor: "feedback",
    }
}

/// The named demo customers: the printed block and the swaks example use them.
struct Star {
    email: &'static str,
    what: &'static str,
    /// Whether the guard admits them for the demo topic.
    admitted: bool,
}

const STARS: &[Star] = &[
    Star {
        email: "jo@demo.example",
        what: "UK, agreed on the sign-up form",
        admitted: true,
    },
    Star {
        email: "ana@demo.example",
        what: "EU, bought boots: soft opt-in",
        admitted: true,
    },
    Star {
        email: "max@demo.example",
        what: "US, a customer: CAN-SPAM",
        admitted: true,
    },
    Star {
        email: "sam@demo.example",
        what: "UK, withdrew by one-click",
        admitted: false,
    },
    Star {
        email: "lee@demo.example",
        what: "US, objected to all marketing",
        admitted: false,
    },
    Star {
        email: "kim@demo.example",
        what: "CA, implied consent expired",
        admitted: false,
    },
    Star {
        email: "al@demo.example",
        what: "erased",
        admitted: false,
    },
];

fn stars() -> Vec<Person> {
    let person = |email: &str, name: &str, j: Jurisdiction| Person {
        email: email.into(),
        name: name.into(),
        jurisdiction: Some(j),
        phone: None,
        steps: vec![],
        erased: None,
    };
    let mut jo = person("jo@demo.example", "Jo Bloggs", Jurisdiction::Uk);
    jo.phone = Some("+447700900123".into());
    jo.steps = vec![
        grant(120, T::Offers, "203.0.113.9".into()),
        grant(120, T::News, "203.0.113.9".into()),
    ];
    let mut ana = person("ana@demo.example", "Ana Souza", Jurisdiction::Eu);
    ana.steps = vec![purchase(40, "outdoor-gear", "DEMO-1042".into(), true)];
    let mut max = person("max@demo.example", "Max Miller", Jurisdiction::Us);
    max.steps = vec![purchase(30, "outdoor-gear", "DEMO-1077".into(), false)];
    let mut sam = person("sam@demo.example", "Sam Taylor", Jurisdiction::Uk);
    sam.steps = vec![
        grant(200, T::Offers, "198.51.100.4".into()),
        by_person(20, EventKind::Withdraw, Some(T::Offers), Source::OneClick),
    ];
    let mut lee = person("lee@demo.example", "Lee Chen", Jurisdiction::Us);
    lee.steps = vec![
        purchase(90, "outdoor-gear", "DEMO-0988".into(), false),
        Step {
            channel: None,
            ..by_person(5, EventKind::Object, None, Source::PreferenceCentre)
        },
    ];
    let mut kim = person("kim@demo.example", "Kim Tremblay", Jurisdiction::Ca);
    kim.steps = vec![inquiry(250)];
    let mut al = person("al@demo.example", "Al Jones", Jurisdiction::Uk);
    al.steps = vec![grant(180, T::Offers, "198.51.100.23".into())];
    al.erased = Some(10);
    vec![jo, ana, max, sam, lee, kim, al]
}

const FIRST: &[&str] = &[
    "Alex", "Amira", "Ben", "Chloe", "Dev", "Elena", "Femi", "Grace", "Hugo", "Ines", "Jack",
    "Katja", "Liam", "Mei", "Noah", "Olu", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Umar",
    "Vera", "Wen", "Yusuf", "Zoe", "Marco", "Aoife", "Pierre", "Lucia",
];
const LAST: &[&str] = &[
    "Smith", "Jones", "Patel", "Murphy", "Rossi", "Müller", "Dubois", "Garcia", "Novak",
    "Kowalski", "Nguyen", "Johnson", "Brown", "Roy", "Gagnon", "Wilson", "Evans", "Hughes",
    "Okafor", "Larsen", "Costa", "Fischer", "Moreau", "Silva", "Walsh", "Lee", "Clark", "Singh",
    "Martin", "Bauer",
];

/// The generated contacts: the same list on every run (the seed is fixed).
fn generated() -> Vec<Person> {
    let mut dice = Dice(SEED);
    let mut people = Vec::with_capacity(GENERATED);
    for i in 0..GENERATED {
        let first = dice.pick(FIRST);
        let last = dice.pick(LAST);
        let r = dice.below(100);
        let (jurisdiction, domain) = match r {
            0..35 => (Some(Jurisdiction::Uk), "inbox.example"),
            35..60 => (Some(Jurisdiction::Eu), "post.example"),
            60..80 => (Some(Jurisdiction::Us), "mail.example"),
            80..95 => (Some(Jurisdiction::Ca), "maple.example"),
            // Unknown: `[policy] default_jurisdictions` (UK and EU) apply.
            _ => (None, "example.net"),
        };
        let local: String = format!("{first}.{last}{i}")
            .to_lowercase()
            .chars()
            .map(|c| if c == 'ü' { 'u' } else { c })
            .collect();
        let ip = format!("198.51.100.{}", 1 + dice.below(250));
        let order = format!("DEMO-{}", 2000 + i);
        let start = dice.days(60, 330);
        let later = |dice: &mut Dice| dice.days(1, start.max(2));
        let mut erased = None;
        let profile = dice.below(100);
        let steps = match profile {
            // Agreed on the sign-up form (some to other topics too).
            0..28 => {
                let mut s = vec![grant(start, T::Offers, ip.clone())];
                if dice.below(2) == 0 {
                    s.push(grant(start, T::News, ip.clone()));
                }
                s
            }
            // Bought outdoor gear: the soft opt-in (UK, EU), implied consent (CA),
            // a customer (US). Some CA purchases are older than two years.
            28..40 => {
                let days = match jurisdiction {
                    Some(Jurisdiction::Ca) if dice.below(3) == 0 => dice.days(760, 900),
                    _ => start,
                };
                vec![purchase(days, "outdoor-gear", order, true)]
            }
            // Agreed, then withdrew.
            40..50 => {
                let how = [Source::OneClick, Source::PreferenceCentre, Source::Mailto]
                    [dice.below(3) as usize];
                vec![
                    grant(start, T::Offers, ip.clone()),
                    by_person(later(&mut dice), EventKind::Withdraw, Some(T::Offers), how),
                ]
            }
            // Objected to all direct marketing (GDPR Art 21).
            50..55 => vec![
                grant(start, T::News, ip.clone()),
                Step {
                    channel: None,
                    ..by_person(
                        later(&mut dice),
                        EventKind::Object,
                        None,
                        Source::PreferenceCentre,
                    )
                },
            ],
            // Bought, and ticked "no marketing" at the checkout.
            55..60 => vec![
                purchase(start, "outdoor-gear", order, true),
                Step {
                    source: Source::Form,
                    actor: "api-key:demo-checkout",
                    ..by_person(start, EventKind::Refused, Some(T::Offers), Source::Form)
                },
            ],
            // Asked about something else only: events, or a gift card.
            60..64 => vec![grant(start, T::Events, ip.clone())],
            64..68 => vec![purchase(start, "gift-cards", order, true)],
            // An inquiry: implied consent in Canada for six months.
            68..72 => vec![inquiry(dice.days(20, 300))],
            // Agreed, then the address bounced or the person complained.
            72..76 => vec![
                grant(start, T::Offers, ip.clone()),
                feedback(later(&mut dice), EventKind::HardBounce),
            ],
            76..79 => vec![
                grant(start, T::Offers, ip.clone()),
                feedback(later(&mut dice), EventKind::Complaint),
            ],
            // Agreed, then paused marketing for a while, or limited it.
            79..83 => {
                let until = dice.days(20, 90);
                vec![
                    grant(start, T::Offers, ip.clone()),
                    by_person(
                        later(&mut dice),
                        EventKind::Pause {
                            until: days_from_now(until),
                        },
                        None,
                        Source::PreferenceCentre,
                    ),
                ]
            }
            83..87 => vec![
                grant(start, T::Offers, ip.clone()),
                Step {
                    channel: None,
                    ..by_person(
                        later(&mut dice),
                        EventKind::Frequency(Some(FrequencyLimit {
                            max: 1,
                            per: Period::Month,
                        })),
                        None,
                        Source::PreferenceCentre,
                    )
                },
            ],
            // Withdrew, and later agreed again themselves.
            87..92 => {
                let out = later(&mut dice);
                vec![
                    grant(start, T::Offers, ip.clone()),
                    by_person(out, EventKind::Withdraw, Some(T::Offers), Source::OneClick),
                    Step {
                        wording: Some(W::Offers),
                        ..by_person(
                            (out / 2).max(1),
                            EventKind::Grant,
                            Some(T::Offers),
                            Source::PreferenceCentre,
                        )
                    },
                ]
            }
            // From an old list with no record of how the address was got.
            92..96 => vec![],
            // Agreed, later asked to be erased.
            _ => {
                erased = Some(later(&mut dice));
                vec![grant(start, T::Offers, ip.clone())]
            }
        };
        let phone = (dice.below(8) == 0).then(|| match jurisdiction {
            Some(Jurisdiction::Us | Jurisdiction::Ca) => format!("+1202555{:04}", 100 + i),
            _ => format!("+447700900{:03}", i % 1000),
        });
        people.push(Person {
            email: format!("{local}@{domain}"),
            name: format!("{first} {last}"),
            jurisdiction,
            phone,
            steps,
            erased,
        });
    }
    people
}

fn days_from_now(days: i64) -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second() + days * 86_400).unwrap_or(now)
}

fn days_ago(now: Timestamp, days: i64, salt: usize) -> Timestamp {
    // A time of day that differs from person to person, so timelines read naturally.
    let secs = days * 86_400 - (salt as i64 * 7_919) % 36_000;
    Timestamp::from_second(now.as_second() - secs).unwrap_or(now)
}

fn all_people() -> Vec<Person> {
    let mut people = stars();
    people.extend(generated());
    people
}

/// Seeds the store: topics, wordings, staff users, an API key, the
/// contacts with their histories, erasures, and one started campaign.
async fn seed(app: &App) -> Result<Credentials> {
    let store = &app.store;
    let mut topics: BTreeMap<&str, Topic> = BTreeMap::new();
    for (key, name, description, group) in [
        (
            "news",
            "Product news",
            "New products and stories from the shop, about once a month.",
            None,
        ),
        (
            DEMO_TOPIC,
            "Offers on outdoor gear",
            "Sales and discounts on boots, jackets and tents, at most once a week.",
            Some("outdoor-gear"),
        ),
        (
            "events",
            "Events near you",
            "Walks, talks and repair workshops in our shops, a few times a year.",
            None,
        ),
    ] {
        let t = store
            .add_topic(NewTopic {
                key: TopicKey::parse(key).map_err(|e| anyhow!("topic {e}"))?,
                name: name.into(),
                description: description.into(),
                group: group.map(str::to_owned),
            })
            .await?;
        topics.insert(key, t);
    }
    let topic_id = |t: T| {
        let key = match t {
            T::News => "news",
            T::Offers => DEMO_TOPIC,
            T::Events => "events",
        };
        topics[key].id
    };
    let mut wordings = BTreeMap::new();
    for (w, text) in [
        (
            0,
            "Yes, email me Demo Outdoor Shop's product news, about once a month. I can stop at any time.",
        ),
        (
            1,
            "Yes, email me offers on outdoor gear from Demo Outdoor Shop. I can stop at any time with the link in every email.",
        ),
        (
            2,
            "Yes, tell me about walks, talks and workshops near me. I can stop at any time.",
        ),
        (
            3,
            "We'll email you offers on outdoor gear like what you bought. Tick here if you'd rather we didn't.",
        ),
    ] {
        wordings.insert(w, store.add_wording(text).await?.id.0);
    }
    let wording_id = |w: W| {
        wordings[&match w {
            W::News => 0,
            W::Offers => 1,
            W::Events => 2,
            W::Checkout => 3,
        }]
    };

    let credentials_of = |name: &str| (name.to_owned(), password());
    let users = [
        (credentials_of("admin"), Role::Admin),
        (credentials_of("dpo"), Role::Dpo),
        (credentials_of("marketer"), Role::Marketer),
    ];
    for ((name, password), role) in &users {
        store.add_user(name, *role, password).await?;
    }
    let key = store
        .create_api_key_with(KeySpec {
            role: Role::Marketer,
            default_topic: Some(topics[DEMO_TOPIC].key.clone()),
            default_service: None,
            owner: Some("marketer".into()),
        })
        .await?;

    let now = Timestamp::now();
    let people = all_people();
    let mut items = Vec::new();
    let mut bare = Vec::new();
    for (n, p) in people.iter().enumerate() {
        let email =
            EmailAddress::parse(&p.email).map_err(|e| anyhow!("demo address {}: {e}", p.email))?;
        let mut contact = ContactInput::new(email);
        contact.name = Some(p.name.clone());
        contact.phone = p
            .phone
            .as_deref()
            .map(PhoneNumber::parse)
            .transpose()
            .map_err(|e| anyhow!("demo phone: {e}"))?;
        contact.jurisdictions = p
            .jurisdiction
            .map_or(JurisdictionSet::EMPTY, |j| JurisdictionSet::of(&[j]));
        if p.steps.is_empty() {
            bare.push(contact);
            continue;
        }
        for s in &p.steps {
            items.push(Append {
                contact: contact.clone(),
                event: NewEvent {
                    kind: s.kind.clone(),
                    scope: s.scope.map_or(Scope::All, |t| Scope::Topic(topic_id(t))),
                    channel: s.channel,
                    source: s.source,
                    at: days_ago(now, s.days_ago, n),
                },
                evidence: Evidence {
                    wording: s.wording.map(wording_id),
                    ip: s.ip.clone(),
                    user_agent: s
                        .ip
                        .as_ref()
                        .map(|_| "Mozilla/5.0 (demo browser)".to_owned()),
                    form_url: s.form_url.map(str::to_owned),
                },
                actor: s.actor.to_owned(),
            });
        }
    }
    for outcome in store.append(items, false).await? {
        if let AppendOutcome::Refused(r) = outcome {
            bail!(
                "the demo data has an event the ledger refuses: {} ({})",
                r.reason,
                r.rule.id()
            );
        }
    }
    for contact in bare {
        if let Err(r) = store.upsert_contact(contact).await? {
            bail!(
                "the demo data has a contact the store refuses: {}",
                r.reason
            );
        }
    }
    for (n, p) in people.iter().enumerate() {
        if let Some(days) = p.erased {
            let email = EmailAddress::parse(&p.email).map_err(|e| anyhow!("{e}"))?;
            store
                .erase(&email, "admin:dpo", days_ago(now, days, n))
                .await?;
        }
    }

    // One campaign to everyone: the sender asks the guard about each person.
    let campaigns =
        veto_sender::campaign::Campaigns::new(app::outbound(app)?, app::campaign_settings(app));
    let campaign = campaigns
        .create(veto_sender::campaign::CampaignSpec {
            name: "Winter boots sale (demo)".into(),
            topic: DEMO_TOPIC.into(),
            from_name: Some(ORGANISATION.into()),
            from_address: format!("offers@{DOMAIN}"),
            subject: "Winter boots: 20% off this week".into(),
            text: "Hello {% if name %}{{ name }}{% else %}there{% endif %},\n\n\
                   Our winter boots are 20% off until Sunday: waterproof, warm, and resoled\n\
                   free for two years.\n\nhttps://demo.example/boots\n\nDemo Outdoor Shop\n"
                .into(),
            html: None,
            scheduled_at: None,
            rate: None,
            domain_rate: None,
            concurrency: None,
            created_by: "admin:marketer".into(),
        })
        .await
        .map_err(|e| anyhow!("the demo campaign: {e}"))?;
    campaigns
        .start(campaign.id)
        .await
        .map_err(|e| anyhow!("the demo campaign: {e}"))?;
    let requests = seed_requests(app, now, &people).await?;
    app.audit(
        "demo.seed",
        Some(format!("campaign:{}", campaign.id)),
        serde_json::json!({"contacts": people.len(), "users": 3, "requests": requests}),
    )
    .await?;

    let [(admin, _), (dpo, _), (marketer, _)] = users.map(|((_, p), r)| (p, r));
    Ok(Credentials {
        admin,
        dpo,
        marketer,
        api_key: key.key,
        campaign: campaign.id,
    })
}

/// GDPR requests at three stages, received long enough ago that their
/// deadlines show: jo's access request (identity checked, due within a
/// week), an erasure request nobody answered (overdue), and ana's
/// portability request (answered). Returns how many.
async fn seed_requests(app: &App, now: Timestamp, people: &[Person]) -> Result<usize> {
    let store = &app.store;
    let dpo = "user:dpo";
    let ago = |days: i64| days_ago(now, days, 0);
    let new = |kind, address: &str, via, note: &str, days| -> Result<NewSubjectRequest> {
        Ok(NewSubjectRequest {
            kind,
            contact: None,
            email: Some(EmailAddress::parse(address).map_err(|e| anyhow!("{e}"))?),
            via,
            note: Some(note.to_owned()),
            received_at: ago(days),
            actor: dpo.to_owned(),
        })
    };
    let refused = |what: &str, r: veto_store::RequestRefused| anyhow!("the demo {what}: {r}");

    let access = store
        .create_request(new(
            RequestKind::Access,
            STARS[0].email,
            RequestVia::Email,
            "Asked for a copy of everything we hold about them.",
            25,
        )?)
        .await?;
    store
        .check_request_identity(access.id, dpo, "Replied from the address on file.", ago(24))
        .await?
        .map_err(|r| refused("access request", r))?;

    // Someone the demo still holds: the erasure was asked for and not done.
    let erasing = people
        .iter()
        .skip(STARS.len())
        .find(|p| p.erased.is_none() && !p.steps.is_empty())
        .ok_or_else(|| anyhow!("no generated demo contact to ask for erasure"))?;
    store
        .create_request(new(
            RequestKind::Erasure,
            &erasing.email,
            RequestVia::Letter,
            "Letter asking us to delete their account and stop all email.",
            35,
        )?)
        .await?;

    let portability = store
        .create_request(new(
            RequestKind::Portability,
            STARS[1].email,
            RequestVia::WebForm,
            "Wants their order history as a file.",
            30,
        )?)
        .await?;
    store
        .check_request_identity(
            portability.id,
            dpo,
            "Signed in to their customer account.",
            ago(29),
        )
        .await?
        .map_err(|r| refused("portability request", r))?;
    store
        .answer_request(portability.id, dpo, Outcome::Done, ago(27))
        .await?
        .map_err(|r| refused("portability request", r))?;
    Ok(3)
}

/// "N contacts; the guard admits A for the demo topic and refuses R: reason n, …".
async fn summary(app: &App) -> Result<String> {
    let key = TopicKey::parse(DEMO_TOPIC).map_err(|e| anyhow!("{e}"))?;
    let topic = app
        .store
        .topic(&key)
        .await?
        .ok_or_else(|| anyhow!("the demo topic {DEMO_TOPIC} is missing from the store"))?;
    let people = all_people();
    let emails = people
        .iter()
        .map(|p| EmailAddress::parse(&p.email).map_err(|e| anyhow!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    let now = Timestamp::now();
    let settings = app.policy();
    let message = Message {
        class: MessageClass::Marketing(&topic),
        channel: Channel::Email,
    };
    let mut admitted = 0;
    let mut refused: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (_, state) in app.store.load_states(&emails, now).await? {
        match decide(&state, &message, &settings, now) {
            Decision::Allowed(_) => admitted += 1,
            Decision::Denied(r) => *refused.entry(r.reason.code()).or_default() += 1,
        }
    }
    let mut by_count: Vec<_> = refused.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    Ok(format!(
        "{} contacts; for {} ({}) by email the guard admits {admitted} and refuses {}: {}",
        people.len(),
        topic.name,
        topic.key,
        refused.values().sum::<usize>(),
        by_count
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

async fn print_block(
    serving: &Serving,
    dir: &Path,
    c: &Credentials,
    summary: &str,
    seeded: bool,
) -> Result<()> {
    let app = &serving.app;
    let url = app.config.web.public_url.trim_end_matches('/');
    let keys = veto_web::token_keys(&app.store).await?;
    let jo = EmailAddress::parse(STARS[0].email).map_err(|e| anyhow!("{e}"))?;
    let contact = app
        .store
        .find_contact(&jo)
        .await?
        .ok_or_else(|| anyhow!("the demo customer {jo} is missing from the store"))?;
    let topic = app
        .store
        .topic(&TopicKey::parse(DEMO_TOPIC).map_err(|e| anyhow!("{e}"))?)
        .await?
        .ok_or_else(|| anyhow!("the demo topic {DEMO_TOPIC} is missing"))?;
    let links = veto_web::links(&keys, url, contact.id, Some(topic.id.0))?;
    let all = veto_web::links(&keys, url, contact.id, None)?;
    let outbox = app::outbox_path(&app.config).join("new");
    let config_arg = format!("--config {}", dir.join(config::DEFAULT_FILE).display());
    let smtp = serving.smtp_addr;
    let (admitted, refused): (Vec<&Star>, Vec<&Star>) = STARS.iter().partition(|s| s.admitted);
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "veto demo: {ORGANISATION}, {} in {}",
        if seeded {
            "started again (already seeded)"
        } else {
            "seeded and started"
        },
        dir.display()
    ));
    line(format!("  {summary}"));
    line(format!(
        "  campaign {} \"Winter boots sale (demo)\" goes to everyone the guard admits: veto {config_arg} campaign show {}",
        c.campaign, c.campaign
    ));
    let requests = app.store.request_counts(Timestamp::now()).await?;
    line(format!(
        "  GDPR requests: {} open, {} due within 7 days, {} overdue: {url}/admin/requests",
        requests.open, requests.due_within_7_days, requests.overdue
    ));
    line(String::new());
    line(format!("Admin UI:          {url}/admin"));
    line(format!("  admin     {}   (role admin)", c.admin));
    line(format!("  dpo       {}   (role dpo)", c.dpo));
    line(format!("  marketer  {}   (role marketer)", c.marketer));
    line(format!(
        "  API key (marketer, topic {DEMO_TOPIC}): {}",
        c.api_key
    ));
    line(format!("Preference centre: {}   ({jo})", all.preferences));
    line(format!(
        "One-click unsubscribe from {}: {}   ({jo}; POST with List-Unsubscribe=One-Click)",
        topic.key, links.unsubscribe
    ));
    line(format!("Outbox (maildir):  {}", outbox.display()));
    line(String::new());
    line(format!(
        "Demo customers: admitted {}",
        admitted
            .iter()
            .map(|s| format!("{} ({})", s.email, s.what))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    line(format!(
        "                refused  {}",
        refused
            .iter()
            .map(|s| format!("{} ({})", s.email, s.what))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    line(format!(
        "Send marketing through the SMTP gateway on {smtp} (loopback needs no AUTH; topic {DEMO_TOPIC}):"
    ));
    line(format!(
        "  swaks --server {smtp} --from offers@{DOMAIN} --to jo@{DOMAIN},ana@{DOMAIN},sam@{DOMAIN},al@{DOMAIN} --header \"Subject: Boots are back\""
    ));
    line("  -> 250 for jo and ana, 550 5.7.1 for sam (withdrew) and al (erased); jo's and ana's copies carry List-Unsubscribe".into());
    line(format!(
        "Why not sam?       veto {config_arg} why sam@{DOMAIN} --topic {DEMO_TOPIC}"
    ));
    line(format!(
        "Credentials are kept in {}. Ctrl-C stops the demo; `veto demo --dir {}` starts it again.",
        dir.join(CREDENTIALS_FILE).display(),
        dir.display()
    ));
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_people_are_the_same_every_time_and_usable() {
        let a: Vec<String> = all_people().into_iter().map(|p| p.email).collect();
        let b: Vec<String> = all_people().into_iter().map(|p| p.email).collect();
        assert_eq!(a, b, "the seed is fixed");
        assert_eq!(a.len(), STARS.len() + GENERATED);
        let unique: std::collections::BTreeSet<&String> = a.iter().collect();
        assert_eq!(unique.len(), a.len(), "every address once");
        for p in all_people() {
            EmailAddress::parse(&p.email).expect("an address");
            if let Some(phone) = &p.phone {
                PhoneNumber::parse(phone).expect("a phone number");
            }
            // Each history is in time order (oldest first), as the ledger records it.
            let days: Vec<i64> = p.steps.iter().map(|s| s.days_ago).collect();
            assert!(
                days.windows(2).all(|w| w[0] >= w[1]),
                "{}: {days:?}",
                p.email
            );
        }
        for s in STARS {
            assert!(a.iter().any(|e| e == s.email), "{} is seeded", s.email);
        }
    }

    #[test]
    fn the_demo_configuration_loads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join(config::DEFAULT_FILE);
        std::fs::write(&file, demo_toml()).expect("write");
        let loaded = config::load(Some(&file)).expect("the demo veto.toml loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert_eq!(c.organisation.name, ORGANISATION);
        assert_eq!(
            c.gateway.trusted_default_topic.as_ref().map(|t| t.as_str()),
            Some(DEMO_TOPIC)
        );
        assert_eq!(c.service.types.len(), 3);
    }
}
