//! The upstream SMTP transport against a scripted SMTP server on
//! 127.0.0.1: the exact commands and bytes upstream receives, and what the
//! transport reports for each reply.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Script, TestPki, Upstream, admitted};
use veto_sender::{
    Outcome, SmtpCredentials, SmtpSettings, SmtpSetupError, SmtpTransport, TlsMode, Transport,
    TransportError,
};

const FROM: &str = "bounces+k1abc@example.org";
const TO: &str = "ann@example.com";

/// A message with what SMTP must protect: a line that is a lone dot, one
/// that starts with a dot, and a bare LF.
const MESSAGE: &[u8] = b"From: Shop <news@example.org>\r\nTo: ann@example.com\r\nSubject: Hi\r\n\r\nHello.\r\n.\r\n.hidden\nlast line";
/// The same as upstream must store it: every line end CRLF.
const STORED: &[u8] = b"From: Shop <news@example.org>\r\nTo: ann@example.com\r\nSubject: Hi\r\n\r\nHello.\r\n.\r\n.hidden\r\nlast line\r\n";
/// And as it must cross the wire after DATA.
const DATA_WIRE: &[u8] = b"From: Shop <news@example.org>\r\nTo: ann@example.com\r\nSubject: Hi\r\n\r\nHello.\r\n..\r\n..hidden\r\nlast line\r\n.\r\n";

async fn send(
    transport: &SmtpTransport,
    from: &str,
    message: &[u8],
) -> Result<Outcome, TransportError> {
    let (_dir, to) = admitted(TO).await;
    transport.relay(from, &to, message).await
}

fn accepted(reply: &str) -> Result<Outcome, TransportError> {
    Ok(Outcome::Accepted {
        reply: reply.to_owned(),
    })
}

#[tokio::test]
async fn pipelined_envelope_goes_in_one_write_and_the_message_arrives_intact() {
    let upstream = Upstream::start(Script::default()).await;
    let transport = SmtpTransport::new(upstream.settings()).expect("transport");

    let outcome = send(&transport, FROM, MESSAGE).await;
    assert_eq!(outcome, accepted("250 2.0.0 Ok: queued as 4XyZ"));

    assert_eq!(
        upstream.commands(1),
        [
            "EHLO veto.test",
            &format!("MAIL FROM:<{FROM}>"),
            &format!("RCPT TO:<{TO}>"),
            "DATA",
        ]
    );
    let log = upstream.log();
    let envelope = format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{TO}>\r\nDATA\r\n");
    assert!(
        log.reads.iter().any(|(_, read)| *read == envelope),
        "MAIL, RCPT and DATA did not arrive in one write: {:#?}",
        log.reads
    );
    assert_eq!(log.messages.len(), 1);
    let got = &log.messages[0];
    assert_eq!(
        (got.from.as_str(), got.to.as_slice()),
        (FROM, &[TO.to_owned()][..])
    );
    assert_eq!(
        String::from_utf8_lossy(&got.wire),
        String::from_utf8_lossy(DATA_WIRE)
    );
    assert_eq!(
        String::from_utf8_lossy(&got.content),
        String::from_utf8_lossy(STORED)
    );
}

#[tokio::test]
async fn without_pipelining_each_command_waits_for_its_reply() {
    let upstream = Upstream::start(Script {
        extensions: vec!["8BITMIME"],
        ..Script::default()
    })
    .await;
    let transport = SmtpTransport::new(upstream.settings()).expect("transport");

    let outcome = send(&transport, FROM, MESSAGE).await;
    assert_eq!(outcome, accepted("250 2.0.0 Ok: queued as 4XyZ"));
    let log = upstream.log();
    for command in [
        format!("MAIL FROM:<{FROM}>\r\n"),
        format!("RCPT TO:<{TO}>\r\n"),
        "DATA\r\n".to_owned(),
    ] {
        assert!(
            log.reads.iter().any(|(_, read)| *read == command),
            "{command:?} was not written alone: {:#?}",
            log.reads
        );
    }
    assert_eq!(log.messages[0].wire, DATA_WIRE);
}

#[tokio::test]
async fn with_chunking_envelope_and_message_go_in_one_write() {
    let upstream = Upstream::start(Script {
        extensions: vec!["PIPELINING", "CHUNKING", "SIZE 10240000"],
        ..Script::default()
    })
    .await;
    let transport = SmtpTransport::new(upstream.settings()).expect("transport");

    let outcome = send(&transport, FROM, MESSAGE).await;
    assert_eq!(outcome, accepted("250 2.0.0 Ok: queued as 4XyZ"));
    let log = upstream.log();
    let expected = format!(
        "MAIL FROM:<{FROM}> SIZE={}\r\nRCPT TO:<{TO}>\r\nBDAT {} LAST\r\n{}",
        MESSAGE.len(),
        STORED.len(),
        String::from_utf8_lossy(STORED)
    );
    assert!(
        log.reads.iter().any(|(_, read)| *read == expected),
        "not one write: {:#?}",
        log.reads
    );
    assert_eq!(log.messages[0].content, STORED);
}

#[tokio::test]
async fn the_null_sender_and_8bit_content() {
    let upstream = Upstream::start(Script::default()).await;
    let transport = SmtpTransport::new(upstream.settings()).expect("transport");

    let message = "Subject: Grüße\r\n\r\nÄ\r\n".as_bytes();
    assert!(send(&transport, "", message).await.is_ok());
    assert!(
        send(&transport, "<>", b"Subject: x\r\n\r\nx\r\n")
            .await
            .is_ok()
    );
    let commands = upstream.commands(1);
    assert!(
        commands.contains(&"MAIL FROM:<> BODY=8BITMIME".to_owned()),
        "{commands:#?}"
    );
    assert!(
        commands.contains(&"MAIL FROM:<>".to_owned()),
        "{commands:#?}"
    );
    assert_eq!(upstream.log().messages[0].content, message);
}

#[tokio::test]
async fn connections_are_reused_and_bounded_by_the_pool() {
    let upstream = Upstream::start(Script::default()).await;
    let mut settings = upstream.settings();
    settings.pool_size = 2;
    let transport = SmtpTransport::new(settings).expect("transport");

    for _ in 0..3 {
        assert!(send(&transport, FROM, MESSAGE).await.is_ok());
    }
    assert_eq!(
        upstream.log().connections,
        1,
        "one connection for three messages"
    );
    assert_eq!(
        upstream
            .commands(1)
            .iter()
            .filter(|c| c.starts_with("EHLO"))
            .count(),
        1
    );

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let transport = transport.clone();
        tasks.push(tokio::spawn(async move {
            send(&transport, FROM, MESSAGE).await
        }));
    }
    for task in tasks {
        assert!(task.await.expect("task").is_ok());
    }
    let log = upstream.log();
    assert_eq!(log.messages.len(), 23);
    assert!(log.connections <= 2, "{} connections", log.connections);
}

/// Each stage's refusal, pipelined or not: 5xx is final, 4xx is temporary,
/// and the connection serves the next message after a RSET.
#[tokio::test]
async fn replies_map_to_outcomes_at_every_stage() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("MAIL", "550 5.7.1 sender refused", None),
        ("RCPT", "550 5.1.1 no such user", None),
        ("DATA", "554 5.3.0 no data today", None),
        ("AFTER", "554 5.7.1 spam", None),
        ("MAIL", "451 4.3.0 try later", Some("451 4.3.0 try later")),
        (
            "RCPT",
            "450 4.2.0 mailbox busy",
            Some("450 4.2.0 mailbox busy"),
        ),
        (
            "DATA",
            "451 4.3.0 no data now",
            Some("451 4.3.0 no data now"),
        ),
        ("AFTER", "452 4.3.1 disk full", Some("452 4.3.1 disk full")),
    ];
    for pipelining in [true, false] {
        for &(stage, reply, temporary) in cases {
            let mut script = Script::default();
            if !pipelining {
                script.extensions = vec![];
            }
            if stage == "AFTER" {
                script.after_message = reply;
            } else {
                script.replies = vec![(stage, reply)];
            }
            let upstream = Upstream::start(script).await;
            let transport = SmtpTransport::new(upstream.settings()).expect("transport");
            let outcome = send(&transport, FROM, MESSAGE).await;
            let context = format!("{stage} {reply:?}, pipelining {pipelining}");
            match temporary {
                None => assert_eq!(
                    outcome,
                    Ok(Outcome::Rejected {
                        reply: reply.to_owned()
                    }),
                    "{context}"
                ),
                Some(text) => {
                    assert_eq!(outcome, Err(TransportError(text.to_owned())), "{context}")
                }
            }
            assert!(upstream.log().messages.is_empty(), "{context}");

            // The same connection takes the next transaction, after RSET
            // where a MAIL may still be open.
            let _ = send(&transport, FROM, MESSAGE).await;
            assert_eq!(upstream.log().connections, 1, "{context}");
            let commands = upstream.commands(1);
            let second_mail = commands
                .iter()
                .rposition(|c| c.starts_with("MAIL"))
                .expect("a second MAIL");
            // After a refused MAIL, RCPT or DATA a MAIL may be open; after
            // the message's final reply none is.
            assert_eq!(
                commands[second_mail - 1] == "RSET",
                stage != "AFTER",
                "{context}: {commands:#?}"
            );
        }
    }
}

#[tokio::test]
async fn a_data_accepted_after_a_refused_recipient_gets_an_empty_message() {
    // RFC 2920 §3.1: the client must end the DATA with "." alone.
    let upstream = Upstream::start(Script {
        replies: vec![
            ("RCPT", "550 5.1.1 no such user"),
            ("DATA", "354 go ahead anyway"),
        ],
        ..Script::default()
    })
    .await;
    let transport = SmtpTransport::new(upstream.settings()).expect("transport");
    let outcome = send(&transport, FROM, MESSAGE).await;
    assert_eq!(
        outcome,
        Ok(Outcome::Rejected {
            reply: "550 5.1.1 no such user".into()
        })
    );
    let log = upstream.log();
    assert!(log.messages.is_empty());
    assert_eq!(log.contents, [b".\r\n"]);
}

#[tokio::test]
async fn a_pooled_connection_that_upstream_closed_is_replaced_once() {
    for farewell in [None, Some("421 4.4.2 fake.test Error: timeout exceeded")] {
        let upstream = Upstream::start(Script {
            close_after: Some(1),
            farewell,
            ..Script::default()
        })
        .await;
        let transport = SmtpTransport::new(upstream.settings()).expect("transport");

        assert!(send(&transport, FROM, MESSAGE).await.is_ok());
        // Give upstream's close time to arrive, as with a real idle timeout.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let outcome = send(&transport, FROM, MESSAGE).await;
        assert_eq!(
            outcome,
            accepted("250 2.0.0 Ok: queued as 4XyZ"),
            "farewell {farewell:?}"
        );
        let log = upstream.log();
        assert_eq!(log.connections, 2, "farewell {farewell:?}");
        assert_eq!(log.messages.len(), 2, "each message once");
    }
}

#[tokio::test]
async fn no_upstream_is_a_temporary_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let mut settings = SmtpSettings::new("127.0.0.1", port, "veto.test");
    settings.tls = TlsMode::None;
    let transport = SmtpTransport::new(settings).expect("transport");
    let Err(TransportError(reason)) = send(&transport, FROM, MESSAGE).await else {
        panic!("delivered to nobody");
    };
    assert!(reason.contains("cannot connect to 127.0.0.1"), "{reason}");
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    let upstream = Upstream::start(Script {
        silent_after_message: true,
        ..Script::default()
    })
    .await;
    let mut settings = upstream.settings();
    settings.reply_timeout = Duration::from_millis(300);
    let transport = SmtpTransport::new(settings).expect("transport");
    let started = Instant::now();
    let Err(TransportError(reason)) = send(&transport, FROM, MESSAGE).await else {
        panic!("accepted without a reply");
    };
    assert!(reason.contains("no reply within"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn idle_connections_are_closed_with_quit() {
    let upstream = Upstream::start(Script::default()).await;
    let mut settings = upstream.settings();
    settings.idle_timeout = Duration::from_millis(100);
    let transport = SmtpTransport::new(settings).expect("transport");
    assert!(send(&transport, FROM, MESSAGE).await.is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(upstream.log().quits, 1);
    assert!(send(&transport, FROM, MESSAGE).await.is_ok());
    assert_eq!(upstream.log().connections, 2);
}

fn tls_settings(upstream: &Upstream, ca: Option<&std::path::Path>) -> SmtpSettings {
    let mut settings = SmtpSettings::new("localhost", upstream.addr.port(), "veto.test");
    settings.ca_file = ca.map(|p| p.to_owned());
    settings.connect_timeout = Duration::from_secs(2);
    settings.reply_timeout = Duration::from_secs(2);
    settings
}

fn ca_file(pki: &TestPki) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &pki.ca_pem).expect("write CA");
    (dir, path)
}

#[tokio::test]
async fn starttls_with_a_private_ca_then_auth() {
    let pki = TestPki::new();
    for (mechanism, offer) in [("PLAIN", "AUTH PLAIN"), ("LOGIN", "AUTH LOGIN")] {
        let upstream = Upstream::start(Script {
            tls: Some(pki.server.clone()),
            auth: Some(("veto", "s3cret pass")),
            extensions: vec!["PIPELINING", offer],
            ..Script::default()
        })
        .await;
        let (_dir, ca) = ca_file(&pki);
        let mut settings = tls_settings(&upstream, Some(&ca));
        settings.credentials = Some(SmtpCredentials {
            username: "veto".into(),
            password: "s3cret pass".into(),
        });
        let transport = SmtpTransport::new(settings).expect("transport");
        for _ in 0..2 {
            let outcome = send(&transport, FROM, MESSAGE).await;
            assert_eq!(
                outcome,
                accepted("250 2.0.0 Ok: queued as 4XyZ"),
                "{mechanism}"
            );
        }
        let log = upstream.log();
        assert_eq!(log.connections, 1);
        assert_eq!(log.tls_at_mail, [true, true], "every MAIL over TLS");
        assert_eq!(log.messages.len(), 2);
        assert_eq!(log.messages[0].content, STORED);
        let commands = upstream.commands(1);
        assert_eq!(commands[..2], ["EHLO veto.test", "STARTTLS"]);
        assert_eq!(commands[2], "EHLO veto.test", "EHLO again after STARTTLS");
        assert!(
            commands[3].starts_with(&format!("AUTH {mechanism}")),
            "{commands:#?}"
        );
        // The handshake happened once, not per message.
        assert_eq!(commands.iter().filter(|c| *c == "STARTTLS").count(), 1);
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let pki = TestPki::new();
    let upstream = Upstream::start(Script {
        tls: Some(pki.server.clone()),
        ..Script::default()
    })
    .await;
    // Platform roots only: the test CA is not among them.
    let transport = SmtpTransport::new(tls_settings(&upstream, None)).expect("transport");
    let Err(TransportError(reason)) = send(&transport, FROM, MESSAGE).await else {
        panic!("sent over an unverified connection");
    };
    assert!(reason.contains("TLS failed"), "{reason}");
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    assert!(upstream.log().tls_at_mail.is_empty(), "no MAIL was sent");

    // Another CA's file does not help either.
    let other = TestPki::new();
    let (_dir, ca) = ca_file(&other);
    let transport = SmtpTransport::new(tls_settings(&upstream, Some(&ca))).expect("transport");
    assert!(send(&transport, FROM, MESSAGE).await.is_err());
    assert!(upstream.log().messages.is_empty());
}

#[tokio::test]
async fn starttls_is_required_when_configured() {
    let upstream = Upstream::start(Script::default()).await;
    let mut settings = upstream.settings();
    settings.tls = TlsMode::StartTls;
    let transport = SmtpTransport::new(settings).expect("transport");
    let Err(TransportError(reason)) = send(&transport, FROM, MESSAGE).await else {
        panic!("sent in clear text");
    };
    assert!(reason.contains("does not offer STARTTLS"), "{reason}");
    assert!(upstream.log().tls_at_mail.is_empty(), "no MAIL was sent");
}

#[tokio::test]
async fn a_wrong_password_is_a_temporary_failure() {
    let pki = TestPki::new();
    let upstream = Upstream::start(Script {
        tls: Some(pki.server.clone()),
        auth: Some(("veto", "right")),
        extensions: vec!["PIPELINING", "AUTH PLAIN LOGIN"],
        ..Script::default()
    })
    .await;
    let (_dir, ca) = ca_file(&pki);
    let mut settings = tls_settings(&upstream, Some(&ca));
    settings.credentials = Some(SmtpCredentials {
        username: "veto".into(),
        password: "wrong".into(),
    });
    let transport = SmtpTransport::new(settings).expect("transport");
    let Err(TransportError(reason)) = send(&transport, FROM, MESSAGE).await else {
        panic!("sent without authentication");
    };
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(
        !reason.contains("wrong"),
        "the password is never shown: {reason}"
    );
    assert!(upstream.log().tls_at_mail.is_empty());
}

#[test]
fn a_bad_ca_file_is_a_setup_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = SmtpSettings::new("mta.example.org", 25, "veto.test");
    settings.ca_file = Some(dir.path().join("missing.pem"));
    let err = SmtpTransport::new(settings.clone()).expect_err("missing file");
    assert!(matches!(err, SmtpSetupError::CaFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    settings.ca_file = Some(empty);
    let err = SmtpTransport::new(settings).expect_err("no certificate");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

#[test]
fn no_password_in_clear_text() {
    let mut settings = SmtpSettings::new("mta.example.org", 25, "veto.test");
    settings.tls = TlsMode::None;
    settings.credentials = Some(SmtpCredentials {
        username: "veto".into(),
        password: "hunter2".into(),
    });
    let err = SmtpTransport::new(settings).expect_err("AUTH in clear text");
    assert!(err.to_string().contains("clear text"), "{err}");
}

#[test]
fn credentials_never_print() {
    let credentials = SmtpCredentials {
        username: "veto".into(),
        password: "hunter2".into(),
    };
    let mut settings = SmtpSettings::new("mta.example.org", 25, "veto.test");
    settings.credentials = Some(credentials);
    let shown = format!("{settings:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// veto's own messages (confirmation links) go through the same transport,
/// from `no-reply@` veto's domain, and their receipts carry upstream's reply.
#[tokio::test]
async fn the_mailer_sends_through_the_smtp_transport() {
    use veto_core::{EmailAddress, PolicySettings};
    use veto_sender::{Mailer, SendError, Sent};
    use veto_store::{Guard, GuardClass, Store};

    for (after_message, delivered) in [
        ("250 2.0.0 Ok: queued as M1", true),
        ("554 5.7.1 not today", false),
    ] {
        let upstream = Upstream::start(Script {
            after_message,
            ..Script::default()
        })
        .await;
        let transport = SmtpTransport::new(upstream.settings()).expect("transport");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("veto.db"))
            .await
            .expect("store");
        let guard = Guard::new(store.clone(), PolicySettings::default());
        let mailer =
            Mailer::with_transport(guard, Arc::new(transport), "Example Shop", "example.org");
        let to = EmailAddress::parse(TO).expect("address");
        let sent = mailer
            .send_text(
                &to,
                GuardClass::Requested("test"),
                "Your link",
                "Here it is.",
            )
            .await;
        let message_id = match (sent, delivered) {
            (Ok(Sent::Delivered { message_id }), true) => message_id,
            (Err(SendError::Rejected(reply)), false) => {
                assert_eq!(reply, after_message);
                let log = upstream.log();
                assert!(log.messages.is_empty());
                continue_with_receipt(&store, &log, after_message).await;
                continue;
            }
            (other, _) => panic!("{after_message}: {other:?}"),
        };
        let log = upstream.log();
        assert_eq!(log.messages.len(), 1);
        assert_eq!(log.messages[0].from, "no-reply@example.org");
        assert_eq!(log.messages[0].to, [TO]);
        let text = String::from_utf8_lossy(&log.messages[0].content).into_owned();
        assert!(text.contains("Subject: Your link\r\n"), "{text}");
        let receipts = store
            .receipts_for_message(&message_id)
            .await
            .expect("receipts");
        assert_eq!(receipts.len(), 1);
        assert_eq!(
            receipts[0].receipt.outcome.as_deref(),
            Some("250 2.0.0 Ok: queued as M1")
        );
    }

    async fn continue_with_receipt(store: &Store, log: &support::Log, reply: &str) {
        let message_id = log
            .contents
            .first()
            .and_then(|c| {
                let text = String::from_utf8_lossy(c).into_owned();
                text.lines()
                    .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
            })
            .expect("the refused message's Message-ID");
        let receipts = store
            .receipts_for_message(&message_id)
            .await
            .expect("receipts");
        assert_eq!(receipts.len(), 1, "a receipt for the refused message too");
        assert_eq!(
            receipts[0].receipt.outcome.as_deref(),
            Some(format!("rejected upstream: {reply}").as_str())
        );
    }
}
