//! The SMTP session, over an in-memory duplex stream.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::{World, config, email, message};
use veto_mail::Purpose;

/// The token in `List-Unsubscribe: <https://veto.example.org/u/TOKEN>`.
fn unsubscribe_token(copy: &str) -> String {
    let start = copy
        .find("List-Unsubscribe: <https://veto.example.org/u/")
        .expect("List-Unsubscribe header")
        + "List-Unsubscribe: <https://veto.example.org/u/".len();
    copy[start..start + 40].to_owned()
}

#[tokio::test]
async fn only_consenting_recipients_get_a_copy_each_with_their_own_token() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("bob@example.com", &w.news).await;
    w.grant("cat@example.com", &w.news).await;
    w.withdraw("cat@example.com", &w.news).await;
    w.grant("eve@example.com", &w.news).await;
    w.erase("eve@example.com").await;

    let mut c = w.connect("192.0.2.1").await;
    let ehlo = c.ehlo().await;
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE ",
        "ENHANCEDSTATUSCODES",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing from {ehlo}");
    }
    c.auth(&w.news_key).await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.rcpt_to("bob@example.com", "250").await;
    let withdrawn = c.rcpt_to("cat@example.com", "550 5.7.1").await;
    assert!(
        withdrawn.contains("<cat@example.com> has not agreed to receive news (withdrew consent)"),
        "{withdrawn}"
    );
    let never = c.rcpt_to("dan@example.com", "550 5.7.1").await;
    assert!(never.contains("has not agreed to receive news"), "{never}");
    let erased = c.rcpt_to("eve@example.com", "550 5.7.1").await;
    assert!(erased.contains("<eve@example.com>"), "{erased}");
    let done = c.data(&message(""), "250 2.0.0").await;
    assert!(done.contains("2 delivered, 0 withheld"), "{done}");
    c.cmd("QUIT", "221").await;

    let relayed = w.relayed();
    let to: HashSet<_> = relayed.iter().map(|r| r.to.as_str()).collect();
    assert_eq!(to, HashSet::from(["ann@example.com", "bob@example.com"]));
    let keys = w.token_keys().await;
    let mut tokens = HashSet::new();
    for copy in &relayed {
        // VERP: bounces come back to veto, attributed to this recipient.
        let bounce = copy
            .from
            .strip_prefix("bounces+")
            .and_then(|rest| rest.strip_suffix("@veto.example.org"))
            .unwrap_or_else(|| panic!("VERP return path, got {}", copy.from));
        let bounce_claims = keys.verify(bounce, Purpose::Bounce).expect("bounce token");
        assert!(
            copy.message
                .contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        );
        assert!(copy.message.contains("mailto:unsubscribe+"));
        assert!(copy.message.contains("<news.lists.example.org>"));
        assert!(copy.message.contains("Feedback-ID: "));
        assert!(copy.message.contains("Example Shop Ltd"));
        let token = unsubscribe_token(&copy.message);
        let claims = keys
            .verify(&token, Purpose::Unsubscribe)
            .expect("valid token");
        let contact = w
            .store
            .find_contact(&email(&copy.to))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claims.contact, contact.id as u64, "token of {}", copy.to);
        assert_eq!(
            bounce_claims.contact, contact.id as u64,
            "return path of {}",
            copy.to
        );
        assert!(tokens.insert(token), "tokens are personal");
    }

    let receipts = w
        .store
        .receipts_for_message("<autumn-1@shop.example>")
        .await
        .unwrap();
    let mut seen: Vec<(String, bool, Option<String>)> = receipts
        .iter()
        .map(|r| {
            (
                r.receipt.recipient.clone(),
                r.receipt.allowed,
                r.receipt.reason.clone(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("ann@example.com".into(), true, None),
            ("bob@example.com".into(), true, None),
            ("cat@example.com".into(), false, Some("withdrawn".into())),
            ("dan@example.com".into(), false, Some("no_record".into())),
            ("eve@example.com".into(), false, Some("suppressed".into())),
        ]
    );
    for r in &receipts {
        assert_eq!(r.receipt.subject.as_deref(), Some("Autumn collection"));
        assert_eq!(r.receipt.class, "news");
        assert!(r.receipt.checked_at > 0);
    }
}

#[tokio::test]
async fn a_withdrawal_while_data_is_open_stops_that_recipient() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("bob@example.com", &w.news).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.news_key).await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.rcpt_to("bob@example.com", "250").await;
    w.withdraw("bob@example.com", &w.news).await;
    let done = c.data(&message(""), "250 2.0.0").await;
    assert!(done.contains("1 delivered, 1 withheld"), "{done}");
    let relayed = w.relayed();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].to, "ann@example.com");
    let receipts = w
        .store
        .receipts_for_message("<autumn-1@shop.example>")
        .await
        .unwrap();
    let bob = receipts
        .iter()
        .find(|r| r.receipt.recipient == "bob@example.com")
        .expect("a receipt for bob");
    assert!(!bob.receipt.allowed);
    assert_eq!(bob.receipt.reason.as_deref(), Some("withdrawn"));
}

#[tokio::test]
async fn unauthenticated_untrusted_clients_cannot_relay() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "530 5.7.0 Authentication required")
        .await;
    c.cmd("DATA", "554").await;
    let wrong = data_encoding::BASE64.encode(b"\0tool\0not-a-key");
    c.cmd(&format!("AUTH PLAIN {wrong}"), "503").await;
    c.cmd("RSET", "250").await;
    c.cmd(&format!("AUTH PLAIN {wrong}"), "535 5.7.8").await;
    assert!(w.relayed().is_empty());
}

#[tokio::test]
async fn auth_login_and_plain_with_a_challenge_work() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.cmd(&data_encoding::BASE64.encode(b"tool"), "334 UGFzc3dvcmQ6")
        .await;
    c.cmd(&data_encoding::BASE64.encode(w.news_key.as_bytes()), "235")
        .await;
    c.cmd("AUTH PLAIN", "503").await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.data(&message(""), "250").await;

    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.cmd("AUTH PLAIN", "334").await;
    let response = data_encoding::BASE64.encode(format!("\0u\0{}", w.news_key).as_bytes());
    c.cmd(&response, "235").await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.cmd("AUTH PLAIN", "334").await;
    c.cmd("*", "501").await;
    c.cmd("AUTH CRAM-MD5", "504").await;
}

#[tokio::test]
async fn a_trusted_network_relays_with_its_default_topic() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = w.connect("10.1.2.3").await;
    c.ehlo().await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    let refused = c.rcpt_to("dan@example.com", "550 5.7.1").await;
    assert!(refused.contains("has not agreed to receive news"));
    c.data(&message(""), "250 2.0.0").await;
    assert_eq!(w.relayed().len(), 1);
}

#[tokio::test]
async fn veto_topic_may_confirm_but_not_contradict() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("ann@example.com", &w.offers).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.news_key).await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    let refused = c
        .data(&message("Veto-Topic: offers\r\n"), "550 5.7.1")
        .await;
    assert!(refused.contains("contradicts"), "{refused}");
    assert!(w.relayed().is_empty());

    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.data(&message("Veto-Topic: news\r\n"), "250 2.0.0").await;
    let relayed = w.relayed();
    assert_eq!(relayed.len(), 1);
    assert!(
        !relayed[0]
            .message
            .to_ascii_lowercase()
            .contains("veto-topic"),
        "Veto-* headers are removed before relaying"
    );
}

#[tokio::test]
async fn without_a_default_the_header_classifies_and_data_decides() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.offers).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.bare_key).await;
    c.mail_from("news@shop.example", "250").await;
    // Not yet classified: accepted provisionally.
    c.rcpt_to("ann@example.com", "250").await;
    c.rcpt_to("dan@example.com", "250").await;
    let done = c
        .data(
            &message("Veto-Class: marketing; topic=offers\r\n"),
            "250 2.0.0",
        )
        .await;
    assert!(done.contains("1 delivered, 1 withheld"), "{done}");
    assert_eq!(w.relayed().len(), 1);
    assert_eq!(w.relayed()[0].to, "ann@example.com");

    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    let unknown = c
        .data(&message("Veto-Topic: nonexistent\r\n"), "550 5.7.1")
        .await;
    assert!(unknown.contains("unknown topic"), "{unknown}");

    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    let none = c.data(&message(""), "550 5.7.1").await;
    assert!(none.contains("no classification"), "{none}");

    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.data(
        &message("Veto-Topic: offers\r\nVeto-Topic: news\r\n"),
        "550 5.7.1",
    )
    .await;
    assert_eq!(w.relayed().len(), 1);
}

#[tokio::test]
async fn bare_lf_and_bare_cr_are_refused_as_smuggling() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.news_key).await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    // A smuggled second transaction behind <LF>.<LF>.
    let smuggled = b"Subject: hi\r\n\r\nhello\n.\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<dan@example.com>\r\nDATA\r\nSubject: spam\r\n\r\nspam\r\n";
    c.data(smuggled, "550 5.5.2").await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.data(b"Subject: hi\r\n\r\nhello\r.\rmore\r\n", "550 5.5.2")
        .await;
    c.cmd("NOOP", "250").await;
    assert!(w.relayed().is_empty());
}

#[tokio::test]
async fn size_line_and_recipient_limits() {
    let mut config = config();
    config.max_message_size = 4000;
    config.max_recipients = 2;
    let w = World::with_config(config).await;
    for a in ["a@example.com", "b@example.com", "c@example.com"] {
        w.grant(a, &w.news).await;
    }
    let mut c = w.connect("192.0.2.1").await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.contains("SIZE 4000"), "{ehlo}");
    c.auth(&w.news_key).await;
    c.cmd("MAIL FROM:<news@shop.example> SIZE=5000", "552 5.3.4")
        .await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("a@example.com", "250").await;
    c.rcpt_to("b@example.com", "250").await;
    c.rcpt_to("c@example.com", "452 4.5.3").await;
    let mut big = message("");
    for _ in 0..100 {
        big.extend_from_slice(&[b'x'; 70]);
        big.extend_from_slice(b"\r\n");
    }
    c.data(&big, "552 5.3.4").await;

    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("a@example.com", "250").await;
    let mut long = message("");
    long.extend_from_slice(&[b'y'; 1200]);
    c.data(&long, "554 5.6.0").await;

    let command = format!("NOOP {}", "z".repeat(3000));
    c.cmd(&command, "500 5.5.2").await;
    c.cmd("NOOP", "250").await;
    assert!(w.relayed().is_empty());
}

#[tokio::test]
async fn malformed_and_out_of_order_commands_get_the_right_5xx() {
    let w = World::new().await;
    let mut c = w.connect("192.0.2.1").await;
    c.mail_from("news@shop.example", "503 5.5.1").await;
    c.ehlo().await;
    c.auth(&w.news_key).await;
    c.rcpt_to("ann@example.com", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("FROBNICATE", "500 5.5.1").await;
    c.cmd("VRFY ann", "502 5.5.1").await;
    c.cmd("STARTTLS", "502").await;
    c.cmd("MAIL FROM:<not an address", "501").await;
    c.mail_from("news@shop.example", "250").await;
    c.mail_from("news@shop.example", "503 5.5.1").await;
    c.cmd("RCPT TO:<>", "501").await;
    c.cmd("HELO tool.example", "250").await;
    c.cmd("QUIT", "221").await;
    assert_eq!(c.read_reply().await, "EOF");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.news_key).await;
    c.send(b"MAIL FROM:<news@shop.example>\r\nRCPT TO:<ann@example.com>\r\nRCPT TO:<dan@example.com>\r\nDATA\r\n")
        .await;
    assert!(c.read_reply().await.starts_with("250"));
    assert!(c.read_reply().await.starts_with("250"));
    assert!(c.read_reply().await.starts_with("550 5.7.1"));
    assert!(c.read_reply().await.starts_with("354"));
    let mut body = message("");
    body.extend_from_slice(b".\r\n");
    c.send(&body).await;
    assert!(c.read_reply().await.starts_with("250 2.0.0"));
}

#[tokio::test]
async fn an_idle_client_is_told_and_disconnected() {
    let mut config = config();
    config.command_timeout = Duration::from_millis(100);
    let w = World::with_config(config).await;
    let mut c = w.connect("192.0.2.1").await;
    let reply = c.read_reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert_eq!(c.read_reply().await, "EOF");
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_fails_closed() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.news_key).await;
    c.mail_from("news@shop.example", "250").await;
    w.store.close().await;
    c.rcpt_to("ann@example.com", "451 4.3.0").await;
    assert!(w.relayed().is_empty());
}

#[tokio::test]
async fn keys_without_the_role_and_service_mail_are_refused() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let viewer = w
        .store
        .create_api_key(veto_core::Role::Viewer, Some(&w.news.key))
        .await
        .unwrap()
        .key;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&viewer).await;
    c.mail_from("news@shop.example", "250").await;
    let refused = c.rcpt_to("ann@example.com", "550 5.7.1").await;
    assert!(refused.contains("may not send marketing"), "{refused}");

    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.bare_key).await;
    c.mail_from("billing@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    let service = c
        .data(
            &message("Veto-Class: service; type=invoice\r\n"),
            "550 5.7.1",
        )
        .await;
    assert!(service.contains("service mail"), "{service}");
    assert!(w.relayed().is_empty());
}

#[tokio::test]
async fn a_client_that_disconnects_inside_data_delivers_nothing() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.news_key).await;
    c.mail_from("news@shop.example", "250").await;
    c.rcpt_to("ann@example.com", "250").await;
    c.cmd("DATA", "354").await;
    c.send(&message("")).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(w.relayed().is_empty());
}

#[tokio::test]
async fn multipart_alternative_gets_the_footer_in_both_parts() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    let mut c = w.connect("192.0.2.1").await;
    c.ehlo().await;
    c.auth(&w.news_key).await;
    c.cmd(
        "MAIL FROM:<news@shop.example> BODY=8BITMIME SMTPUTF8",
        "250",
    )
    .await;
    c.rcpt_to("ann@example.com", "250").await;
    let body = "From: Shop <news@shop.example>\r\n\
        Subject: Herbstkollektion – neu\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
        \r\n\
        --b1\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\
        \r\n\
        Grüße aus dem Laden.\r\n\
        --b1\r\n\
        Content-Type: text/html; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\
        \r\n\
        <html><body><p>Grüße aus dem Laden.</p></body></html>\r\n\
        --b1--\r\n";
    c.data(body.as_bytes(), "250 2.0.0").await;
    let relayed = w.relayed();
    assert_eq!(relayed.len(), 1);
    let copy = &relayed[0].message;
    assert!(copy.contains("Message-ID: <"), "a Message-ID is added");
    assert_eq!(
        copy.matches("You get this because you agreed to receive Product news")
            .count(),
        2,
        "{copy}"
    );
    assert!(copy.contains("Grüße aus dem Laden."));
}
