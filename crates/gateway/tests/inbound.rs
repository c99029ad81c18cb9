//! The inbound listener (veto's own addresses: mailto unsubscribes,
//! bounces, complaints), over an in-memory duplex stream: the SMTP replies,
//! and the ledger rows they leave.
//!
//! Reports are the mail crate's fixtures (the RFC 3464 and RFC 5965
//! examples, Postfix, Exim, Gmail and Yahoo formats, and broken ones) and
//! `tests/fixtures/` here (a Microsoft 365 NDR). Each is delivered as it is:
//! the contact is named by the token in the envelope recipient, and the
//! fixture's own addresses are given to that contact where they matter.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use support::{World, config, email};
use veto_core::{Channel, ContactId, EventKind, Source, Topic};
use veto_mail::{Claims, Purpose, TokenScope};
use veto_store::{GuardClass, SoftBounceLimit};

const DOMAIN: &str = "veto.example.org";

/// A fixture, CRLF line ends: here first, then the mail crate's.
fn fixture(name: &str) -> Vec<u8> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mail = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mail/tests/fixtures/feedback");
    let path = [here.join(name), mail.join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no fixture {name}"));
    crlf(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// LF or CRLF line ends to CRLF.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 20);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// RFC 5321 §4.5.2: a leading dot is doubled on the wire.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

/// `message` with another Message-ID (or one added): a different report.
fn with_message_id(message: &[u8], id: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let mut out = format!("Message-ID: <{id}>\r\n");
    let mut skipping = false;
    let mut in_header = true;
    for line in text.split_inclusive("\r\n") {
        if in_header {
            if line == "\r\n" {
                in_header = false;
            } else if line.starts_with([' ', '\t']) {
                if skipping {
                    continue;
                }
            } else {
                skipping = line.to_ascii_lowercase().starts_with("message-id:");
                if skipping {
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    out.into_bytes()
}

async fn contact(w: &World, address: &str) -> ContactId {
    let c = w
        .store
        .find_contact(&email(address))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no contact {address}"));
    ContactId(c.id)
}

async fn token(w: &World, address: &str, scope: TokenScope, purpose: Purpose) -> String {
    let contact = contact(w, address).await.0 as u64;
    w.token_keys()
        .await
        .mint(
            &Claims {
                contact,
                scope,
                message: None,
            },
            purpose,
        )
        .unwrap()
        .to_string()
}

/// The VERP return path of `address`'s copies (the lead's contract).
async fn bounces(w: &World, address: &str) -> String {
    let t = token(w, address, TokenScope::AllMarketing, Purpose::Bounce).await;
    format!("bounces+{t}@{DOMAIN}")
}

/// The mailto of `address`'s List-Unsubscribe for `topic`.
async fn unsubscribe(w: &World, address: &str, topic: &Topic) -> String {
    let t = token(
        w,
        address,
        TokenScope::Topic(topic.id.0),
        Purpose::Unsubscribe,
    )
    .await;
    format!("unsubscribe+{t}@{DOMAIN}")
}

/// One transaction on a fresh inbound connection: the end-of-DATA reply.
async fn deliver(w: &World, from: &str, to: &str, message: &[u8], expected: &str) -> String {
    let mut c = w.connect_inbound("198.51.100.25").await;
    c.cmd("EHLO mx.provider.example", "250").await;
    c.mail_from(from, "250").await;
    c.rcpt_to(to, "250 2.1.5").await;
    let reply = c.data(&dot_stuff(message), expected).await;
    c.cmd("QUIT", "221").await;
    reply
}

/// A report from the null sender, as MTAs send them.
async fn report(w: &World, to: &str, message: &[u8]) -> String {
    deliver(w, "", to, message, "250 2.0.0").await
}

/// (kind, source) of each of the contact's ledger events, oldest first.
async fn events(w: &World, address: &str) -> Vec<(String, Source)> {
    let id = contact(w, address).await;
    w.store
        .events_of(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event.kind.name().to_owned(), e.event.source))
        .collect()
}

/// The contact's events but the grants the test gave them.
async fn recorded(w: &World, address: &str) -> Vec<(String, Source)> {
    let all = events(w, address).await;
    assert_eq!(all[0], ("grant".to_owned(), Source::Form), "{all:?}");
    all.into_iter()
        .filter(|e| *e != ("grant".to_owned(), Source::Form))
        .collect()
}

/// The guard's answer for `news` by email: `Ok(())` or the reason's code.
async fn guard(w: &World, address: &str, topic: &Topic) -> Result<(), String> {
    match w
        .gateway
        .guard()
        .admit(
            &email(address),
            GuardClass::Marketing(topic),
            Channel::Email,
        )
        .await
        .unwrap()
    {
        Ok(_) => Ok(()),
        Err((_, refusal)) => Err(refusal.reason.code().to_owned()),
    }
}

fn hard() -> Vec<(String, Source)> {
    vec![("hard_bounce".to_owned(), Source::Feedback)]
}

// ---- mailto unsubscribe --------------------------------------------------------------

#[tokio::test]
async fn mail_to_the_unsubscribe_address_withdraws_that_topic() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("ann@example.com", &w.offers).await;
    let to = unsubscribe(&w, "ann@example.com", &w.news).await;

    let mut c = w.connect_inbound("203.0.113.5").await;
    let ehlo = c.cmd("EHLO mail.example.com", "250").await;
    assert!(!ehlo.contains("AUTH"), "no AUTH offered: {ehlo}");
    assert!(ehlo.contains("ENHANCEDSTATUSCODES"), "{ehlo}");
    let auth = c.cmd("AUTH PLAIN AHgAeA==", "502 5.5.1").await;
    assert!(auth.contains("veto's own addresses"), "{auth}");
    c.mail_from("ann@example.com", "250").await;
    // RFC 2369 mailto: the address's case may change on the way.
    c.rcpt_to(
        &to.to_ascii_uppercase().replace("VETO.EXAMPLE.ORG", DOMAIN),
        "250 2.1.5",
    )
    .await;
    let done = c
        .data(
            b"From: Ann <ann@example.com>\r\nTo: <unsubscribe@veto.example.org>\r\n\
              Subject: unsubscribe\r\nMessage-ID: <u1@mail.example.com>\r\n\r\n\r\n",
            "250 2.0.0",
        )
        .await;
    assert!(done.contains("unsubscribed"), "{done}");
    c.cmd("QUIT", "221").await;

    assert_eq!(
        recorded(&w, "ann@example.com").await,
        vec![("withdraw".to_owned(), Source::Mailto)]
    );
    let id = contact(&w, "ann@example.com").await;
    let events = w.store.events_of(id).await.unwrap();
    let withdrawal = events.last().unwrap();
    assert_eq!(withdrawal.event.scope, veto_core::Scope::Topic(w.news.id));
    assert_eq!(withdrawal.event.channel, Some(Channel::Email));
    assert_eq!(withdrawal.actor, "person");
    assert_eq!(
        withdrawal.personal.as_ref().and_then(|p| p.ip.as_deref()),
        Some("203.0.113.5")
    );
    assert_eq!(
        guard(&w, "ann@example.com", &w.news).await,
        Err("withdrawn".into())
    );
    assert_eq!(guard(&w, "ann@example.com", &w.offers).await, Ok(()));

    // The evidence: envelope, Message-ID, client.
    let reports = w.store.inbound_reports_of(id).await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r.kind, "unsubscribe");
    assert_eq!(r.event, Some(withdrawal.event.id.0));
    assert_eq!(r.envelope_from.as_deref(), Some("ann@example.com"));
    assert!(
        r.envelope_to
            .to_ascii_lowercase()
            .starts_with("unsubscribe+"),
        "{r:?}"
    );
    assert_eq!(r.message_id.as_deref(), Some("<u1@mail.example.com>"));
    assert_eq!(r.peer_ip.as_deref(), Some("203.0.113.5"));
    assert!(w.relayed().is_empty(), "nothing is ever relayed");
}

#[tokio::test]
async fn the_same_unsubscribe_mail_twice_records_one_withdrawal() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let to = unsubscribe(&w, "ann@example.com", &w.news).await;
    // No Message-ID: the body identifies it.
    let mail = b"Subject: unsubscribe\r\n\r\nPlease stop.\r\n";
    deliver(&w, "ann@example.com", &to, mail, "250 2.0.0").await;
    deliver(&w, "ann@example.com", &to, mail, "250 2.0.0").await;
    assert_eq!(
        recorded(&w, "ann@example.com").await,
        vec![("withdraw".to_owned(), Source::Mailto)]
    );
    // Another mail is another request.
    deliver(
        &w,
        "ann@example.com",
        &to,
        b"Subject: stop\r\n\r\nAgain.\r\n",
        "250",
    )
    .await;
    assert_eq!(recorded(&w, "ann@example.com").await.len(), 2);
}

#[tokio::test]
async fn one_mail_to_two_unsubscribe_addresses_withdraws_both() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("ann@example.com", &w.offers).await;
    let news = unsubscribe(&w, "ann@example.com", &w.news).await;
    let offers = unsubscribe(&w, "ann@example.com", &w.offers).await;
    let mut c = w.connect_inbound("203.0.113.5").await;
    c.cmd("HELO mail.example.com", "250").await;
    c.mail_from("", "250").await;
    c.rcpt_to(&news, "250").await;
    c.rcpt_to(&offers, "250").await;
    c.data(b"Subject: stop\r\n\r\n", "250 2.0.0").await;
    assert_eq!(
        guard(&w, "ann@example.com", &w.news).await,
        Err("withdrawn".into())
    );
    assert_eq!(
        guard(&w, "ann@example.com", &w.offers).await,
        Err("withdrawn".into())
    );
}

// ---- bounces ---------------------------------------------------------------------------

#[tokio::test]
async fn a_hard_bounce_is_recorded_with_its_evidence_and_the_guard_refuses_the_address() {
    let w = World::new().await;
    w.grant("nobody@example.net", &w.news).await;
    w.grant("nobody@example.net", &w.offers).await;
    assert_eq!(guard(&w, "nobody@example.net", &w.news).await, Ok(()));
    let to = bounces(&w, "nobody@example.net").await;
    let done = report(&w, &to, &fixture("postfix-hard.eml")).await;
    assert!(done.contains("bounce recorded"), "{done}");

    assert_eq!(recorded(&w, "nobody@example.net").await, hard());
    for topic in [&w.news, &w.offers] {
        assert_eq!(
            guard(&w, "nobody@example.net", topic).await,
            Err("hard_bounced".into())
        );
    }
    let id = contact(&w, "nobody@example.net").await;
    let reports = w.store.inbound_reports_of(id).await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r.kind, "hard_bounce");
    assert_eq!(r.status.as_deref(), Some("5.1.1"));
    assert_eq!(r.reporting_mta.as_deref(), Some("mail.example.com"));
    assert!(
        r.diagnostic
            .as_deref()
            .is_some_and(|d| d.starts_with("550 5.1.1") && d.contains("User unknown")),
        "{r:?}"
    );
    assert_eq!(r.envelope_from, None, "the null sender");
    assert_eq!(r.envelope_to, to);
    assert_eq!(
        r.message_id.as_deref(),
        Some("<20240603101502.3F2A81C2A5@mail.example.com>")
    );
    let events = w.store.events_of(id).await.unwrap();
    let bounce = events.last().unwrap();
    assert_eq!(r.event, Some(bounce.event.id.0));
    assert_eq!(bounce.event.kind, EventKind::HardBounce);
    assert_eq!(bounce.event.scope, veto_core::Scope::All);
    assert_eq!(bounce.event.channel, Some(Channel::Email));

    // And at the submission gateway: refused at RCPT.
    let mut c = w.connect("10.1.2.3").await;
    c.ehlo().await;
    c.mail_from("news@shop.example", "250").await;
    let refused = c.rcpt_to("nobody@example.net", "550 5.7.1").await;
    assert!(refused.contains("bounced"), "{refused}");
}

#[tokio::test]
async fn rfc3464_examples_count_as_the_rfc_says() {
    let w = World::new().await;
    // RFC 3464 appendix: "failed" with 4.0.0 (gave up after 5 days) is soft.
    w.grant("louisl@larry.slip.umd.edu", &w.news).await;
    let to = bounces(&w, "louisl@larry.slip.umd.edu").await;
    let done = report(&w, &to, &fixture("rfc3464-simple.eml")).await;
    assert!(done.contains("bounce recorded"), "{done}");
    assert_eq!(recorded(&w, "louisl@larry.slip.umd.edu").await, vec![]);
    assert_eq!(
        guard(&w, "louisl@larry.slip.umd.edu", &w.news).await,
        Ok(())
    );
    let id = contact(&w, "louisl@larry.slip.umd.edu").await;
    let reports = w.store.inbound_reports_of(id).await.unwrap();
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.kind.as_str(), r.status.as_deref(), r.event))
            .collect::<Vec<_>>(),
        vec![("soft_bounce", Some("4.0.0"), None)]
    );

    // The multi-recipient example: each contact by the block that names it.
    let multi = fixture("rfc3464-multi.eml");
    for (address, expected) in [
        ("arathib@vnet.ibm.com", hard()),
        ("johnh@hpnjld.njd.hp.com", vec![]),
        ("wsnell@sdcc13.ucsd.edu", hard()),
        // Named by no block (rewritten on the way): failed and delayed
        // together are not a hard bounce.
        ("someone@else.example", vec![]),
    ] {
        w.grant(address, &w.news).await;
        let to = bounces(&w, address).await;
        report(&w, &to, &multi).await;
        assert_eq!(recorded(&w, address).await, expected, "{address}");
    }
    let soft = contact(&w, "johnh@hpnjld.njd.hp.com").await;
    let reports = w.store.inbound_reports_of(soft).await.unwrap();
    assert_eq!(reports[0].kind, "soft_bounce");
    assert_eq!(reports[0].status.as_deref(), Some("4.0.0"));

    // Failed for one address, delivered to another.
    let mixed = fixture("multi-failed-delivered.eml");
    for (address, expected) in [("old@example.org", hard()), ("reader@example.com", vec![])] {
        w.grant(address, &w.news).await;
        let to = bounces(&w, address).await;
        report(&w, &to, &mixed).await;
        assert_eq!(recorded(&w, address).await, expected, "{address}");
    }
    let delivered = contact(&w, "reader@example.com").await;
    assert!(
        w.store
            .inbound_reports_of(delivered)
            .await
            .unwrap()
            .is_empty(),
        "a delivery is nothing to record"
    );
}

#[tokio::test]
async fn provider_formats_record_hard_and_soft_bounces() {
    let w = World::new().await;
    for (name, address, hard_bounce, status) in [
        ("postfix-hard.eml", "nobody@example.net", true, "5.1.1"),
        ("postfix-delayed.eml", "slow@example.org", false, "4.4.1"),
        ("exim-sloppy.eml", "gone@example.org", true, "5.1.1"),
        (
            "gmail-hard.eml",
            "no.such.user.4711@gmail.com",
            true,
            "5.1.1",
        ),
        ("microsoft-hard.eml", "gone.away@outlook.com", true, "5.5.0"),
        // Exchange behind a disclaimer-adding gateway (multipart/mixed).
        ("wrapped-dsn.eml", "someone@contoso.example", true, "5.1.10"),
    ] {
        w.grant(address, &w.news).await;
        let to = bounces(&w, address).await;
        report(&w, &to, &fixture(name)).await;
        let expected = if hard_bounce { hard() } else { vec![] };
        assert_eq!(recorded(&w, address).await, expected, "{name}");
        let verdict = guard(&w, address, &w.news).await;
        if hard_bounce {
            assert_eq!(verdict, Err("hard_bounced".into()), "{name}");
        } else {
            assert_eq!(verdict, Ok(()), "{name}");
        }
        let id = contact(&w, address).await;
        let reports = w.store.inbound_reports_of(id).await.unwrap();
        assert_eq!(reports.len(), 1, "{name}: {reports:?}");
        assert_eq!(reports[0].status.as_deref(), Some(status), "{name}");
        assert!(reports[0].reporting_mta.is_some(), "{name}");
    }
}

#[tokio::test]
async fn soft_bounces_become_a_hard_bounce_at_the_threshold() {
    let mut config = config();
    config.soft_bounces = SoftBounceLimit {
        threshold: 3,
        window: Duration::from_secs(30 * 86_400),
    };
    let w = World::with_config(config).await;
    w.grant("slow@example.org", &w.news).await;
    let to = bounces(&w, "slow@example.org").await;
    let delayed = fixture("postfix-delayed.eml");
    for n in 1..=2 {
        report(
            &w,
            &to,
            &with_message_id(&delayed, &format!("delay-{n}@mail.example.com")),
        )
        .await;
        assert_eq!(recorded(&w, "slow@example.org").await, vec![], "after {n}");
        assert_eq!(
            guard(&w, "slow@example.org", &w.news).await,
            Ok(()),
            "after {n}"
        );
    }
    // The same delay notice again counts nothing.
    report(
        &w,
        &to,
        &with_message_id(&delayed, "delay-2@mail.example.com"),
    )
    .await;
    assert_eq!(recorded(&w, "slow@example.org").await, vec![]);

    report(
        &w,
        &to,
        &with_message_id(&delayed, "delay-3@mail.example.com"),
    )
    .await;
    assert_eq!(recorded(&w, "slow@example.org").await, hard());
    assert_eq!(
        guard(&w, "slow@example.org", &w.news).await,
        Err("hard_bounced".into())
    );
    let id = contact(&w, "slow@example.org").await;
    let events = w.store.events_of(id).await.unwrap();
    let bounce = events.last().unwrap().event.id.0;
    let reports = w.store.inbound_reports_of(id).await.unwrap();
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert!(
        reports
            .iter()
            .all(|r| r.kind == "soft_bounce" && r.event == Some(bounce)),
        "every soft bounce is evidence of the hard one: {reports:?}"
    );
}

#[tokio::test]
async fn soft_bounces_outside_the_window_do_not_count() {
    let mut config = config();
    config.soft_bounces = SoftBounceLimit {
        threshold: 2,
        window: Duration::from_millis(700),
    };
    let w = World::with_config(config).await;
    w.grant("slow@example.org", &w.news).await;
    let to = bounces(&w, "slow@example.org").await;
    let delayed = fixture("postfix-delayed.eml");
    report(&w, &to, &with_message_id(&delayed, "d1@mail.example.com")).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    report(&w, &to, &with_message_id(&delayed, "d2@mail.example.com")).await;
    assert_eq!(
        recorded(&w, "slow@example.org").await,
        vec![],
        "the first one expired"
    );
    report(&w, &to, &with_message_id(&delayed, "d3@mail.example.com")).await;
    assert_eq!(recorded(&w, "slow@example.org").await, hard());
}

// ---- complaints --------------------------------------------------------------------------

#[tokio::test]
async fn abuse_reports_record_a_complaint_and_not_spam_does_not() {
    let w = World::new().await;
    for (name, address, complaint) in [
        ("arf-rfc5965.eml", "user@example.com", true),
        ("arf-abuse-redacted.eml", "reader@yahoo.example", true),
        ("arf-sloppy.eml", "sloppy@isp.example", true),
        ("arf-not-spam.eml", "reader@example.com", false),
    ] {
        w.grant(address, &w.news).await;
        w.grant(address, &w.offers).await;
        let to = bounces(&w, address).await;
        let done = report(&w, &to, &fixture(name)).await;
        if complaint {
            assert!(done.contains("complaint recorded"), "{name}: {done}");
            assert_eq!(
                recorded(&w, address).await,
                vec![("complaint".to_owned(), Source::Feedback)],
                "{name}"
            );
            assert_eq!(
                guard(&w, address, &w.news).await,
                Err("complained".into()),
                "{name}"
            );
            assert_eq!(
                guard(&w, address, &w.offers).await,
                Err("complained".into()),
                "{name}: all marketing stops"
            );
        } else {
            assert_eq!(recorded(&w, address).await, vec![], "{name}");
            assert_eq!(guard(&w, address, &w.news).await, Ok(()), "{name}");
            assert_eq!(guard(&w, address, &w.offers).await, Ok(()), "{name}");
        }
    }
    let id = contact(&w, "user@example.com").await;
    let reports = w.store.inbound_reports_of(id).await.unwrap();
    assert_eq!(reports[0].kind, "complaint");
    assert_eq!(reports[0].feedback_type.as_deref(), Some("abuse"));
    assert_eq!(
        reports[0].reporting_mta.as_deref(),
        Some("SomeGenerator/1.0")
    );
}

// ---- idempotence ------------------------------------------------------------------------

#[tokio::test]
async fn the_same_report_twice_records_one_event() {
    let w = World::new().await;
    for (name, address) in [
        ("gmail-hard.eml", "no.such.user.4711@gmail.com"),
        // No Message-ID: the body identifies it.
        ("rfc3464-multi.eml", "arathib@vnet.ibm.com"),
        ("arf-rfc5965.eml", "user@example.com"),
    ] {
        w.grant(address, &w.news).await;
        let to = bounces(&w, address).await;
        let message = fixture(name);
        report(&w, &to, &message).await;
        // Redelivered by another relay: one more Received field.
        let mut again =
            b"Received: from relay2.example by mx.shop.example; Mon, 3 Jun 2024 11:00:00 +0000\r\n"
                .to_vec();
        again.extend_from_slice(&message);
        report(&w, &to, &again).await;
        report(&w, &to, &message).await;
        let got = recorded(&w, address).await;
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        let id = contact(&w, address).await;
        assert_eq!(
            w.store.inbound_reports_of(id).await.unwrap().len(),
            1,
            "{name}"
        );
    }
}

// ---- what is refused, and what is ignored -------------------------------------------------

#[tokio::test]
async fn malformed_reports_are_accepted_and_change_nothing() {
    let w = World::new().await;
    w.grant("someone@example.org", &w.news).await;
    let to = bounces(&w, "someone@example.org").await;
    let mut c = w.connect_inbound("198.51.100.25").await;
    c.cmd("EHLO mx.provider.example", "250").await;
    let mut cases: Vec<(String, Vec<u8>)> = [
        "plain.eml",
        "truncated-dsn.eml",
        "truncated-before-status.eml",
        "dsn-no-recipients.eml",
        "mdn-read-receipt.eml",
        "bad-action.eml",
        "bad-status.eml",
        "bad-line.eml",
        "arf-no-feedback-type.eml",
        "report-no-type.eml",
    ]
    .into_iter()
    .map(|n| (n.to_owned(), fixture(n)))
    .collect();
    cases.push(("no header".into(), b"\r\njust a body\r\n".to_vec()));
    cases.push(("empty".into(), Vec::new()));
    cases.push((
        "binary".into(),
        (0u8..=255)
            .filter(|b| *b != b'\r' && *b != b'\n')
            .cycle()
            .take(3000)
            .collect::<Vec<u8>>()
            .chunks(70)
            .flat_map(|l| [l, b"\r\n"].concat())
            .collect(),
    ));
    cases.push((
        "report without a boundary".into(),
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nReporting-MTA: dns; x\r\n".to_vec(),
    ));
    for (name, message) in &cases {
        c.mail_from("", "250").await;
        c.rcpt_to(&to, "250").await;
        let done = c.data(&dot_stuff(message), "250 2.0.0").await;
        assert!(done.contains("ignored"), "{name}: {done}");
    }
    // The session is still there.
    c.cmd("NOOP", "250").await;
    c.cmd("QUIT", "221").await;
    assert_eq!(recorded(&w, "someone@example.org").await, vec![]);
    let id = contact(&w, "someone@example.org").await;
    assert!(w.store.inbound_reports_of(id).await.unwrap().is_empty());
    assert_eq!(guard(&w, "someone@example.org", &w.news).await, Ok(()));
}

#[tokio::test]
async fn only_veto_addresses_with_good_tokens_are_taken_and_nothing_is_relayed() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let bounce = bounces(&w, "ann@example.com").await;
    let unsub = unsubscribe(&w, "ann@example.com", &w.news).await;
    let bounce_token = bounce["bounces+".len()..bounce.find('@').unwrap()].to_owned();
    let unsub_token = unsub["unsubscribe+".len()..unsub.find('@').unwrap()].to_owned();
    let mut tampered = unsub_token.clone().into_bytes();
    tampered[20] = if tampered[20] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();

    for (to, expected) in [
        // Never a relay.
        ("ann@example.com".to_owned(), "550 5.7.1"),
        (
            format!("unsubscribe+{unsub_token}@shop.example"),
            "550 5.7.1",
        ),
        (
            format!("bounces+{bounce_token}@veto.example.org.evil.example"),
            "550 5.7.1",
        ),
        // veto's domain, but not an address with a token that verifies.
        ("postmaster@veto.example.org".to_owned(), "550 5.1.1"),
        ("unsubscribe@veto.example.org".to_owned(), "550 5.1.1"),
        ("unsubscribe+@veto.example.org".to_owned(), "550 5.1.1"),
        (
            format!("unsubscribe+{tampered}@veto.example.org"),
            "550 5.1.1",
        ),
        (
            format!("unsubscribe+{}@veto.example.org", &unsub_token[..39]),
            "550 5.1.1",
        ),
        // A token for one purpose does not work for the other.
        (
            format!("unsubscribe+{bounce_token}@veto.example.org"),
            "550 5.1.1",
        ),
        (
            format!("bounces+{unsub_token}@veto.example.org"),
            "550 5.1.1",
        ),
        (format!("news+{unsub_token}@veto.example.org"), "550 5.1.1"),
    ] {
        // From a "trusted network" too: the inbound listener trusts nobody.
        let mut c = w.connect_inbound("10.0.0.7").await;
        c.cmd("EHLO tool.example", "250").await;
        c.mail_from("spammer@example.net", "250").await;
        let reply = c.rcpt_to(&to, expected).await;
        assert!(reply.contains(&to), "{to}: {reply}");
        if expected == "550 5.7.1" {
            assert!(reply.contains("relaying denied"), "{reply}");
        }
        // No recipient was accepted.
        c.cmd("DATA", "554 5.5.1").await;
        c.cmd("QUIT", "221").await;
    }
    assert!(w.relayed().is_empty());
    assert_eq!(recorded(&w, "ann@example.com").await, vec![]);
}

#[tokio::test]
async fn a_stranger_who_keeps_guessing_is_disconnected() {
    let w = World::new().await;
    let mut c = w.connect_inbound("192.0.2.66").await;
    c.cmd("EHLO x", "250").await;
    c.mail_from("x@example.net", "250").await;
    for i in 0..9 {
        c.rcpt_to(&format!("unsubscribe+guess{i}@{DOMAIN}"), "550 5.1.1")
            .await;
    }
    c.rcpt_to(&format!("unsubscribe+guess9@{DOMAIN}"), "550 5.1.1")
        .await;
    let closing = c.read_reply().await;
    assert!(closing.starts_with("421 4.7.0"), "{closing}");
    assert_eq!(c.read_reply().await, "EOF");
}

#[tokio::test]
async fn mail_for_an_erased_person_is_accepted_and_records_nothing() {
    let w = World::new().await;
    w.grant("gone@example.org", &w.news).await;
    let id = contact(&w, "gone@example.org").await;
    let bounce = bounces(&w, "gone@example.org").await;
    let unsub = unsubscribe(&w, "gone@example.org", &w.news).await;
    w.erase("gone@example.org").await;
    let before = w.store.events_of(id).await.unwrap().len();
    report(&w, &bounce, &fixture("exim-sloppy.eml")).await;
    deliver(
        &w,
        "gone@example.org",
        &unsub,
        b"Subject: stop\r\n\r\n",
        "250 2.0.0",
    )
    .await;
    assert_eq!(w.store.events_of(id).await.unwrap().len(), before);
    assert!(w.store.inbound_reports_of(id).await.unwrap().is_empty());
}

#[tokio::test]
async fn smuggling_and_oversized_mail_are_refused_as_at_submission() {
    let mut config = config();
    config.max_message_size = 4096;
    let w = World::with_config(config).await;
    w.grant("ann@example.com", &w.news).await;
    let to = unsubscribe(&w, "ann@example.com", &w.news).await;
    let mut c = w.connect_inbound("203.0.113.5").await;
    c.cmd("EHLO x", "250").await;
    c.mail_from("ann@example.com", "250").await;
    c.rcpt_to(&to, "250").await;
    c.data(b"Subject: a\r\n\r\nline\n.\nmore\r\n", "550 5.5.2")
        .await;
    c.mail_from("ann@example.com", "250").await;
    c.rcpt_to(&to, "250").await;
    c.data(
        &vec![b'x'; 5000]
            .chunks(100)
            .flat_map(|l| [l, b"\r\n"].concat())
            .collect::<Vec<u8>>(),
        "552 5.3.4",
    )
    .await;
    assert_eq!(recorded(&w, "ann@example.com").await, vec![]);
}

#[tokio::test]
async fn an_unreachable_store_answers_451_so_the_mta_retries() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("nobody@example.net", &w.news).await;
    let to = unsubscribe(&w, "ann@example.com", &w.news).await;
    let bounce = bounces(&w, "nobody@example.net").await;

    let mut c = w.connect_inbound("203.0.113.5").await;
    c.cmd("EHLO x", "250").await;
    c.mail_from("", "250").await;
    c.rcpt_to(&to, "250").await;
    c.rcpt_to(&bounce, "250").await;

    // The store goes away between RCPT and the end of DATA …
    w.store.close().await;
    let done = c.data(&fixture("postfix-hard.eml"), "451 4.3.0").await;
    assert!(done.contains("try again later"), "{done}");
    // … and at RCPT.
    c.mail_from("", "250").await;
    c.rcpt_to(&to, "451 4.3.0").await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test]
async fn a_retried_mail_records_only_what_was_not_recorded_yet() {
    // After a 451 the MTA sends the whole mail again: what the first try
    // recorded (here: the first recipient) is not recorded twice.
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("ann@example.com", &w.offers).await;
    let news = unsubscribe(&w, "ann@example.com", &w.news).await;
    let offers = unsubscribe(&w, "ann@example.com", &w.offers).await;
    let mail = b"Message-ID: <retry@mail.example.com>\r\nSubject: stop\r\n\r\n";
    deliver(&w, "ann@example.com", &news, mail, "250 2.0.0").await;
    let mut c = w.connect_inbound("203.0.113.5").await;
    c.cmd("EHLO x", "250").await;
    c.mail_from("ann@example.com", "250").await;
    c.rcpt_to(&news, "250").await;
    c.rcpt_to(&offers, "250").await;
    c.data(mail, "250 2.0.0").await;
    assert_eq!(
        events(&w, "ann@example.com").await,
        vec![
            ("grant".to_owned(), Source::Form),
            ("grant".to_owned(), Source::Form),
            ("withdraw".to_owned(), Source::Mailto),
            ("withdraw".to_owned(), Source::Mailto)
        ]
    );
    assert_eq!(
        guard(&w, "ann@example.com", &w.offers).await,
        Err("withdrawn".into())
    );
}

// ---- the listener ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_listener_serves_sockets_and_stops_gracefully() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let to = unsubscribe(&w, "ann@example.com", &w.news).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(veto_gateway::listen_inbound(
        listener,
        Arc::clone(&w.gateway),
        async {
            let _ = stopped.await;
        },
    ));

    let mut s = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut said = Vec::new();
    for line in [
        None,
        Some("EHLO mail.example.com".to_owned()),
        Some("MAIL FROM:<ann@example.com>".to_owned()),
        Some(format!("RCPT TO:<{to}>")),
        Some("DATA".to_owned()),
        Some("Subject: unsubscribe\r\n\r\nstop\r\n.".to_owned()),
    ] {
        if let Some(line) = line {
            s.get_mut()
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
        }
        loop {
            let mut reply = String::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_line(&mut reply))
                .await
                .expect("a reply in time")
                .unwrap();
            let last = reply.as_bytes().get(3) != Some(&b'-');
            said.push(reply);
            if last {
                break;
            }
        }
    }
    let last = said.last().unwrap();
    assert!(last.starts_with("250 2.0.0"), "{said:?}");
    assert!(!said.iter().any(|l| l.contains("AUTH")), "{said:?}");
    assert_eq!(
        guard(&w, "ann@example.com", &w.news).await,
        Err("withdrawn".into())
    );

    // Shutdown: no new connections; the one in flight may finish.
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    assert!(!server.is_finished(), "waits for the session in flight");
    s.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    let mut bye = String::new();
    s.read_line(&mut bye).await.unwrap();
    assert!(bye.starts_with("221"), "{bye}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the listener stops once its sessions end")
        .unwrap();
}
