//! The hand-off: retries after upstream trouble, upstream refusals, service
//! mail and its bulk brake, and accept-and-discard.

mod support;

use std::collections::BTreeSet;

use support::{Scripted, World, config, email, message};
use veto_core::{Channel, EventKind, Role, Timestamp};
use veto_gateway::RefusedRecipients;
use veto_store::{GuardClass, KeySpec};

fn service_config(threshold: u64) -> veto_gateway::Config {
    let mut config = config();
    config.service_types = BTreeSet::from(["billing".to_owned(), "security".to_owned()]);
    config.bulk_threshold = threshold;
    config
}

async fn service_key(w: &World, owner: &str) -> String {
    w.store
        .create_api_key_with(KeySpec {
            role: Role::ServiceSender,
            default_topic: None,
            default_service: Some("billing".into()),
            owner: Some(owner.into()),
        })
        .await
        .unwrap()
        .key
}

fn bill() -> Vec<u8> {
    b"From: Shop Billing <billing@shop.example>\r\n\
      To: you@example.com\r\n\
      Subject: Your bill\r\n\
      Message-ID: <bill-7@shop.example>\r\n\
      Content-Type: text/plain; charset=utf-8\r\n\
      \r\n\
      You owe us 12.00.\r\n"
        .to_vec()
}

#[tokio::test]
async fn a_retry_after_upstream_trouble_delivers_only_the_missing_copies() {
    let w = World::new().await;
    for who in ["ann@example.com", "bob@example.com", "cat@example.com"] {
        w.grant(who, &w.news).await;
    }
    w.relay.script(
        "bob@example.com",
        Scripted::Unavailable("connection refused".into()),
    );

    let mut c = w.connect("10.1.2.3").await;
    c.ehlo().await;
    for attempt in 0..2 {
        c.mail_from("news@shop.example", "250").await;
        for who in ["ann@example.com", "bob@example.com", "cat@example.com"] {
            c.rcpt_to(who, "250").await;
        }
        if attempt == 0 {
            let reply = c.data(&message(""), "451 4.4.1").await;
            assert!(reply.contains("connection refused"), "{reply}");
            w.relay.unscript("bob@example.com");
        } else {
            let reply = c.data(&message(""), "250 2.0.0").await;
            assert!(
                reply.contains("2 delivered, 0 withheld, 1 sent by an earlier attempt"),
                "{reply}"
            );
        }
    }
    let mut to: Vec<String> = w.relayed().into_iter().map(|r| r.to).collect();
    to.sort();
    // ann once (first attempt), bob and cat once each (second attempt).
    assert_eq!(
        to,
        ["ann@example.com", "bob@example.com", "cat@example.com"]
    );
}

#[tokio::test]
async fn a_message_without_message_id_is_known_again_by_its_content() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("bob@example.com", &w.news).await;
    w.relay
        .script("bob@example.com", Scripted::Unavailable("timed out".into()));
    let body = b"From: Shop <news@shop.example>\r\nSubject: No id\r\n\r\nHello.\r\n";

    let mut c = w.connect("10.1.2.3").await;
    c.ehlo().await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.rcpt_to("bob@example.com", "250").await;
    c.data(body, "451").await;
    w.relay.unscript("bob@example.com");
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.rcpt_to("bob@example.com", "250").await;
    c.data(body, "250").await;

    let relayed = w.relayed();
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    let ids: BTreeSet<String> = relayed
        .iter()
        .map(|r| {
            let at = r.message.find("Message-ID: ").expect("Message-ID added");
            r.message[at..].lines().next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "both attempts' copies share one Message-ID: {ids:?}"
    );
}

#[tokio::test]
async fn an_upstream_refusal_records_a_hard_bounce_and_tells_the_sender() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("bob@example.com", &w.news).await;
    w.relay.script(
        "bob@example.com",
        Scripted::Reject("550 5.1.1 <bob@example.com>: Recipient address rejected".into()),
    );

    let mut c = w.connect("10.1.2.3").await;
    c.ehlo().await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.rcpt_to("bob@example.com", "250").await;
    let reply = c.data(&message(""), "250 2.0.0").await;
    assert!(
        reply.contains("1 delivered, 0 withheld, 1 refused upstream"),
        "{reply}"
    );

    // The ledger has the hard bounce, and the guard now refuses bob.
    let bob = w
        .store
        .find_contact(&email("bob@example.com"))
        .await
        .unwrap()
        .unwrap();
    let events = w
        .store
        .events_of(veto_core::ContactId(bob.id))
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.event.kind == EventKind::HardBounce),
        "{events:?}"
    );
    let again = w
        .gateway
        .guard()
        .admit(
            &email("bob@example.com"),
            GuardClass::Marketing(&w.news),
            Channel::Email,
        )
        .await
        .unwrap();
    assert!(again.is_err(), "a hard-bounced address is refused");

    // The envelope sender got a delivery status notification, from <>.
    let relayed = w.relayed();
    let dsn = relayed
        .iter()
        .find(|r| r.to == "news@shop.example")
        .expect("a DSN to the envelope sender");
    assert_eq!(dsn.from, "");
    assert!(dsn.message.contains("report-type=delivery-status"));
    assert!(
        dsn.message
            .contains("Final-Recipient: rfc822; bob@example.com")
    );
    assert!(dsn.message.contains("Status: 5.1.1"));

    let receipts = w
        .store
        .receipts_for_message("<autumn-1@shop.example>")
        .await
        .unwrap();
    let bob_receipt = receipts
        .iter()
        .find(|r| r.receipt.recipient == "bob@example.com")
        .unwrap();
    assert!(
        bob_receipt
            .receipt
            .outcome
            .as_deref()
            .unwrap()
            .starts_with("rejected upstream: 550 5.1.1"),
        "{bob_receipt:?}"
    );
}

#[tokio::test]
async fn accept_and_discard_tells_the_tool_250_and_sends_nothing() {
    let mut config = config();
    config.refused_recipients = RefusedRecipients::Discard;
    let w = World::with_config(config).await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("cat@example.com", &w.news).await;
    w.withdraw("cat@example.com", &w.news).await;

    let mut c = w.connect("10.1.2.3").await;
    c.ehlo().await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.rcpt_to("cat@example.com", "250").await;
    c.rcpt_to("dan@example.com", "250").await;
    let reply = c.data(&message(""), "250 2.0.0").await;
    assert!(reply.contains("1 delivered, 2 withheld"), "{reply}");

    let to: Vec<String> = w.relayed().into_iter().map(|r| r.to).collect();
    assert_eq!(to, ["ann@example.com"]);
    let receipts = w
        .store
        .receipts_for_message("<autumn-1@shop.example>")
        .await
        .unwrap();
    let cat = receipts
        .iter()
        .find(|r| r.receipt.recipient == "cat@example.com")
        .unwrap();
    assert!(!cat.receipt.allowed);
    assert_eq!(cat.receipt.reason.as_deref(), Some("withdrawn"));
    assert!(
        cat.receipt
            .outcome
            .as_deref()
            .unwrap()
            .starts_with("discarded at RCPT")
    );
}

#[tokio::test]
async fn service_mail_reaches_people_who_refused_marketing_without_list_headers() {
    let w = World::with_config(service_config(100)).await;
    w.grant("cat@example.com", &w.news).await;
    w.withdraw("cat@example.com", &w.news).await;
    w.grant("eve@example.com", &w.news).await;
    w.erase("eve@example.com").await;
    let key = service_key(&w, "sam").await;

    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&key).await;
    c.mail_from("billing@shop.example", "250").await;
    c.rcpt_to("cat@example.com", "250").await;
    c.rcpt_to("new@example.com", "250").await;
    let erased = c.rcpt_to("eve@example.com", "550 5.7.1").await;
    assert!(erased.contains("billing service messages"), "{erased}");
    let reply = c.data(&bill(), "250 2.0.0").await;
    assert!(reply.contains("2 delivered"), "{reply}");

    let relayed = w.relayed();
    assert_eq!(relayed.len(), 2);
    for copy in &relayed {
        assert!(
            !copy.message.contains("List-Unsubscribe"),
            "{}",
            copy.message
        );
        assert!(
            !copy.message.contains("Unsubscribe"),
            "no footer: {}",
            copy.message
        );
        assert!(copy.message.contains("Feedback-ID: "));
        assert!(copy.from.starts_with("bounces+"), "VERP: {}", copy.from);
    }
    let receipts = w
        .store
        .receipts_for_message("<bill-7@shop.example>")
        .await
        .unwrap();
    assert!(
        receipts
            .iter()
            .all(|r| r.receipt.class == "service:billing")
    );
}

#[tokio::test]
async fn service_classification_is_checked_against_role_and_declared_types() {
    let w = World::with_config(service_config(100)).await;
    let key = service_key(&w, "sam").await;

    // A service key cannot declare marketing; a marketer cannot send service mail.
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&key).await;
    c.mail_from("billing@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    let reply = c.data(&message("Veto-Topic: news\r\n"), "550 5.7.1").await;
    assert!(reply.contains("contradicts"), "{reply}");

    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.bare_key).await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    let reply = c
        .data(
            &message("Veto-Class: service; type=billing\r\n"),
            "550 5.7.1",
        )
        .await;
    assert!(reply.contains("may not send service mail"), "{reply}");

    // An admin's key may, but only declared types.
    let admin = w.store.create_api_key(Role::Admin, None).await.unwrap().key;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&admin).await;
    c.mail_from("billing@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    let reply = c
        .data(
            &message("Veto-Class: service; type=lottery\r\n"),
            "550 5.7.1",
        )
        .await;
    assert!(
        reply.contains("unknown service type \"lottery\""),
        "{reply}"
    );
    c.mail_from("billing@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.data(&message("Veto-Class: service; type=security\r\n"), "250")
        .await;
    let copy = &w.relayed()[0];
    assert!(
        !copy.message.contains("Veto-Class"),
        "Veto-* headers removed"
    );
}

/// One bill to recipients `first..first + n`; checks the reply to DATA.
async fn send_bills(c: &mut support::Client, first: usize, n: usize, expected: &str) -> String {
    c.mail_from("billing@shop.example", "250").await;
    for i in first..first + n {
        c.rcpt_to(&format!("p{i}@example.com"), "250").await;
    }
    c.data(&bill(), expected).await
}

#[tokio::test]
async fn bulk_service_mail_is_held_until_another_dpo_approves() {
    let w = World::with_config(service_config(3)).await;
    let key = service_key(&w, "sam").await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&key).await;
    send_bills(&mut c, 0, 2, "250").await;
    // 2 + 2 > 3: held, nothing relayed, and the tool is told to retry.
    let held = send_bills(&mut c, 2, 2, "450 4.7.1").await;
    assert!(held.contains("approval request 1 awaits a DPO"), "{held}");
    assert_eq!(w.relayed().len(), 2);
    // The retry is held too, under the same request.
    send_bills(&mut c, 2, 2, "450 4.7.1").await;
    let pending = w.store.approvals(true).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].owner.as_deref(), Some("sam"));

    w.store
        .approve(pending[0].id, "api-key:veto_dpo", "dana", Timestamp::now())
        .await
        .unwrap();
    send_bills(&mut c, 2, 2, "250").await;
    assert_eq!(w.relayed().len(), 4);
}

#[tokio::test]
async fn each_copy_is_checked_just_before_it_goes_out() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("bob@example.com", &w.news).await;
    // Upstream is slow with ann's copy; bob unsubscribes meanwhile.
    w.relay.script(
        "ann@example.com",
        Scripted::Slow(std::time::Duration::from_millis(600)),
    );
    let mut c = w.connect("10.1.2.3").await;
    c.ehlo().await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.rcpt_to("bob@example.com", "250").await;
    c.cmd("DATA", "354").await;
    c.send(&message("")).await;
    c.send(b".\r\n").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    w.withdraw("bob@example.com", &w.news).await;
    let reply = c.read_reply().await;
    assert!(reply.contains("1 delivered, 1 withheld"), "{reply}");
    let to: Vec<String> = w.relayed().into_iter().map(|r| r.to).collect();
    assert_eq!(to, ["ann@example.com"]);
    let receipts = w
        .store
        .receipts_for_message("<autumn-1@shop.example>")
        .await
        .unwrap();
    let bob = receipts
        .iter()
        .find(|r| r.receipt.recipient == "bob@example.com")
        .unwrap();
    assert_eq!(bob.receipt.reason.as_deref(), Some("withdrawn"));
}
