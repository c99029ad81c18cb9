//! Bounce (RFC 3464 / 6533 DSN) and complaint (RFC 5965 ARF) parsing against
//! the fixtures in `tests/fixtures/feedback/`.

use std::path::PathBuf;
use std::sync::LazyLock;

use proptest::prelude::*;
use veto_mail::feedback::{
    Action, Bounce, ComplaintReport, DeliveryReport, Feedback, FeedbackError, FeedbackType,
    RecipientStatus, parse_feedback, verp_token,
};
use veto_mail::{Claims, Purpose, TokenKey, TokenKeys, TokenScope};

const DSN: &str = "message/delivery-status";
const ARF: &str = "message/feedback-report";

/// The VERP token in the Postfix fixtures' return path.
const POSTFIX_TOKEN: &str = "5ciy752nwwaquh44rdcv5geme3drxpomfn3cyczv";
/// The unsubscribe token in the complaint fixtures' List-Unsubscribe.
const ARF_TOKEN: &str = "lvdyskyhyhk36ejd4e6ffoulvzzwccxutyxazkrt";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feedback")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every fixture's bytes, read once for the property tests.
static FIXTURES: LazyLock<Vec<Vec<u8>>> =
    LazyLock::new(|| fixture_names().iter().map(|n| fixture(n)).collect());

/// Every fixture file, sorted by name.
fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".eml"))
        .collect();
    names.sort();
    names
}

fn delivery(name: &str) -> DeliveryReport {
    match parse_feedback(&fixture(name)) {
        Ok(Feedback::Delivery(report)) => report,
        other => panic!("{name}: expected a delivery report, got {other:?}"),
    }
}

fn complaint(name: &str) -> ComplaintReport {
    match parse_feedback(&fixture(name)) {
        Ok(Feedback::Complaint(report)) => report,
        other => panic!("{name}: expected a complaint, got {other:?}"),
    }
}

fn error(name: &str) -> FeedbackError {
    match parse_feedback(&fixture(name)) {
        Err(e) => e,
        Ok(other) => panic!("{name}: expected an error, got {other:?}"),
    }
}

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn rcpt(
    final_recipient: &str,
    original_recipient: Option<&str>,
    action: Action,
    status: Option<(u8, u16, u16)>,
    diagnostic: Option<&str>,
    remote_mta: Option<&str>,
) -> RecipientStatus {
    RecipientStatus {
        final_recipient: s(final_recipient),
        original_recipient: original_recipient.map(str::to_owned),
        action,
        status,
        diagnostic: diagnostic.map(str::to_owned),
        remote_mta: remote_mta.map(str::to_owned),
    }
}

fn bounces(report: &DeliveryReport) -> Vec<Option<Bounce>> {
    report
        .recipients
        .iter()
        .map(RecipientStatus::bounce)
        .collect()
}

// ---------------------------------------------------------------- DSN

#[test]
fn rfc3464_simple_dsn_failed_with_a_transient_status_is_soft() {
    let report = delivery("rfc3464-simple.eml");
    assert_eq!(report.reporting_mta, s("cs.utk.edu"));
    assert_eq!(report.original_envelope_id, None);
    assert_eq!(
        report.recipients,
        [rcpt(
            "louisl@larry.slip.umd.edu",
            Some("louisl@larry.slip.umd.edu"),
            Action::Failed,
            Some((4, 0, 0)),
            Some("426 connection timed out"),
            None,
        )]
    );
    assert_eq!(bounces(&report), [Some(Bounce::Soft)]);
    assert_eq!(report.header("subject"), Some("info-mime digest"));
}

#[test]
fn rfc3464_multi_recipient_dsn() {
    let report = delivery("rfc3464-multi.eml");
    assert_eq!(report.reporting_mta, s("cs.utk.edu"));
    assert_eq!(
        report.recipients,
        [
            rcpt(
                "arathib@vnet.ibm.com",
                Some("arathib@vnet.ibm.com"),
                Action::Failed,
                Some((5, 0, 0)),
                // Folded over two lines, the indentation is one space.
                Some("550 'arathib@vnet.IBM.COM' is not a registered gateway user"),
                Some("vnet.ibm.com"),
            ),
            rcpt(
                "johnh@hpnjld.njd.hp.com",
                Some("johnh@hpnjld.njd.hp.com"),
                Action::Delayed,
                Some((4, 0, 0)),
                None,
                None,
            ),
            rcpt(
                "wsnell@sdcc13.ucsd.edu",
                Some("wsnell@sdcc13.ucsd.edu"),
                Action::Failed,
                Some((5, 0, 0)),
                Some("550 user unknown"),
                Some("sdcc13.ucsd.edu"),
            ),
        ]
    );
    assert_eq!(
        bounces(&report),
        [Some(Bounce::Hard), Some(Bounce::Soft), Some(Bounce::Hard)]
    );
}

#[test]
fn postfix_hard_bounce() {
    let report = delivery("postfix-hard.eml");
    assert_eq!(
        report,
        DeliveryReport {
            reporting_mta: s("mail.example.com"),
            original_envelope_id: None,
            recipients: vec![rcpt(
                "nobody@example.net",
                Some("nobody@example.net"),
                Action::Failed,
                Some((5, 1, 1)),
                Some(
                    "550 5.1.1 <nobody@example.net>: Recipient address rejected: \
                     User unknown in virtual mailbox table"
                ),
                Some("mx1.example.net"),
            )],
            original_headers: report.original_headers.clone(),
        }
    );
    assert_eq!(bounces(&report), [Some(Bounce::Hard)]);
    // The returned message is there, with the headers veto put in.
    assert_eq!(report.original_headers.len(), 14);
    assert_eq!(
        report.header("Message-ID"),
        Some("<c1.42.summer24@shop.example>")
    );
    assert_eq!(
        report.header("list-unsubscribe"),
        Some(
            "<https://prefs.shop.example/u/ipbfdzogpjd6um5mctyjuhoj267rwqvr47v5n2vx>, \
             <mailto:unsubscribe+ipbfdzogpjd6um5mctyjuhoj267rwqvr47v5n2vx@mail.shop.example>"
        )
    );
    let return_path = report.header("Return-Path").expect("Return-Path");
    assert_eq!(
        verp_token(return_path, "bounces"),
        Some(POSTFIX_TOKEN),
        "the VERP token also survives in the returned header"
    );
}

#[test]
fn gmail_hard_bounce_with_a_multi_line_reply() {
    let report = delivery("gmail-hard.eml");
    assert_eq!(report.reporting_mta, s("googlemail.com"));
    assert_eq!(
        report.recipients,
        [rcpt(
            "no.such.user.4711@gmail.com",
            None,
            Action::Failed,
            Some((5, 1, 1)),
            Some(
                "550-5.1.1 The email account that you tried to reach does not exist. \
                 Please try 550-5.1.1 double-checking the recipient's email address for \
                 typos or 550-5.1.1 unnecessary spaces. For more information, go to \
                 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser \
                 a1si123456wrx.100 - gsmtp"
            ),
            Some(
                "gmail-smtp-in.l.google.com. (142.250.27.26, the server for the domain gmail.com.)"
            ),
        )]
    );
    assert_eq!(bounces(&report), [Some(Bounce::Hard)]);
    assert_eq!(
        report.header("Message-ID"),
        Some("<c7.99.summer24@shop.example>")
    );
}

#[test]
fn sloppy_exim_dsn_takes_the_status_from_the_diagnostic_code() {
    // Lower-case field names, `dns;host` and `rfc822;<addr>` without spaces,
    // no blank line after the per-message fields, no Status, a folded
    // Diagnostic-Code, a mixed-case report-type and part type.
    let report = delivery("exim-sloppy.eml");
    assert_eq!(report.reporting_mta, s("mx.example.net"));
    assert_eq!(
        report.recipients,
        [rcpt(
            "gone@example.org",
            None,
            Action::Failed,
            Some((5, 1, 1)),
            Some("550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown"),
            Some("mx.example.org"),
        )]
    );
    assert_eq!(bounces(&report), [Some(Bounce::Hard)]);
    // text/rfc822-headers third part, field names as written.
    assert_eq!(report.original_headers.len(), 6);
    assert_eq!(
        report.header("List-Unsubscribe"),
        Some("<https://prefs.shop.example/u/ipbfdzogpjd6um5mctyjuhoj267rwqvr47v5n2vx>")
    );
}

#[test]
fn postfix_delay_notice_is_soft() {
    let report = delivery("postfix-delayed.eml");
    assert_eq!(report.reporting_mta, s("mail.example.com"));
    assert_eq!(
        report.recipients,
        [rcpt(
            "slow@example.org",
            Some("slow@example.org"),
            Action::Delayed,
            Some((4, 4, 1)),
            Some("connect to mx.example.org[203.0.113.20]:25: Connection timed out"),
            None,
        )]
    );
    assert_eq!(bounces(&report), [Some(Bounce::Soft)]);
    assert_eq!(
        report.header("feedback-id"),
        Some("summer24:offers:marketing:shopveto01")
    );
}

#[test]
fn one_failed_and_one_delivered_recipient() {
    let report = delivery("multi-failed-delivered.eml");
    assert_eq!(report.reporting_mta, s("relay.example.com"));
    assert_eq!(report.original_envelope_id, s("veto-c9-offers-00042"));
    assert_eq!(
        report.recipients,
        [
            rcpt(
                "old@example.org",
                Some("old@example.org"),
                Action::Failed,
                Some((5, 2, 1)),
                Some("550 5.2.1 <old@example.org>: mailbox disabled"),
                Some("mx.example.org"),
            ),
            rcpt(
                "reader@example.com",
                Some("reader@example.com"),
                Action::Delivered,
                Some((2, 0, 0)),
                Some("250 2.0.0 OK queued as 4Vt9Xc1Qz"),
                Some("mx.example.com"),
            ),
        ]
    );
    assert_eq!(bounces(&report), [Some(Bounce::Hard), None]);
    assert_eq!(report.header("Subject"), Some("Your order has shipped"));
}

#[test]
fn global_delivery_status_with_utf8_addresses() {
    let report = delivery("global-dsn.eml");
    assert_eq!(report.reporting_mta, s("mx.example.cn"));
    assert_eq!(report.original_envelope_id, s("veto-c3-offers-00007"));
    assert_eq!(
        report.recipients,
        [rcpt(
            "用户@例子.example",
            Some("用户@例子.example"),
            Action::Failed,
            Some((5, 1, 1)),
            Some("550 5.1.1 邮箱不存在 (mailbox does not exist)"),
            Some("mx.例子.example"),
        )]
    );
    assert_eq!(bounces(&report), [Some(Bounce::Hard)]);
    // message/global-headers third part.
    assert_eq!(report.header("subject"), Some("夏季系列"));
}

#[test]
fn report_wrapped_by_a_disclaimer_gateway() {
    let report = delivery("wrapped-dsn.eml");
    assert_eq!(
        report.reporting_mta,
        s("AM0PR01MB1234.eurprd01.prod.exchangelabs.com")
    );
    assert_eq!(
        report.recipients,
        [rcpt(
            "someone@contoso.example",
            None,
            Action::Failed,
            Some((5, 1, 10)),
            Some(
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP \
                 address lookup"
            ),
            Some("AM0PR01MB1234.eurprd01.prod.exchangelabs.com"),
        )]
    );
    assert_eq!(
        report.header("Message-ID"),
        Some("<t.882.orders@shop.example>")
    );
}

#[test]
fn bounce_classification() {
    let with = |action, status| RecipientStatus {
        final_recipient: None,
        original_recipient: None,
        action,
        status,
        diagnostic: None,
        remote_mta: None,
    };
    let cases = [
        (Action::Failed, Some((5, 1, 1)), Some(Bounce::Hard)),
        (Action::Failed, Some((5, 7, 1)), Some(Bounce::Hard)),
        (Action::Failed, Some((4, 4, 7)), Some(Bounce::Soft)),
        (Action::Failed, Some((2, 0, 0)), None),
        (Action::Failed, None, None),
        (Action::Delayed, Some((4, 4, 1)), Some(Bounce::Soft)),
        (Action::Delayed, None, Some(Bounce::Soft)),
        (Action::Delivered, Some((2, 0, 0)), None),
        (Action::Relayed, Some((2, 0, 0)), None),
        (Action::Expanded, Some((2, 0, 0)), None),
        (Action::Delivered, Some((5, 1, 1)), None),
    ];
    for (action, status, expected) in cases {
        assert_eq!(
            with(action, status).bounce(),
            expected,
            "{action:?} {status:?}"
        );
    }
}

#[test]
fn missing_action_comes_from_the_status_class() {
    let raw = dsn_with_body(
        "Reporting-MTA: dns; mta.example.net\n\n\
         Final-Recipient: rfc822; a@example.org\nStatus: 5.1.1\n\n\
         Final-Recipient: rfc822; b@example.org\nStatus: 4.2.2\n\n\
         Final-Recipient: rfc822; c@example.org\nStatus: 2.0.0\n",
    );
    let Ok(Feedback::Delivery(report)) = parse_feedback(raw.as_bytes()) else {
        panic!("not parsed");
    };
    let actions: Vec<Action> = report.recipients.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [Action::Failed, Action::Delayed, Action::Delivered]
    );
}

#[test]
fn recipients_without_blank_lines_between_them_are_split() {
    // Postfix order (Final before Original) and RFC order, run together.
    let raw = dsn_with_body(
        "Reporting-MTA: dns; mta.example.net\n\
         Final-Recipient: rfc822; a@example.org\n\
         Original-Recipient: rfc822;a@example.org\n\
         Action: failed\nStatus: 5.1.1\n\
         Original-Recipient: rfc822;b@example.org\n\
         Final-Recipient: rfc822; b@example.org\n\
         Action: delayed\nStatus: 4.4.1\n\
         Final-Recipient: rfc822; c@example.org\n\
         Action: delivered\nStatus: 2.0.0\n",
    );
    let Ok(Feedback::Delivery(report)) = parse_feedback(raw.as_bytes()) else {
        panic!("not parsed");
    };
    assert_eq!(report.reporting_mta, s("mta.example.net"));
    let got: Vec<(Option<&str>, Option<&str>, Action)> = report
        .recipients
        .iter()
        .map(|r| {
            (
                r.final_recipient.as_deref(),
                r.original_recipient.as_deref(),
                r.action,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("a@example.org"), Some("a@example.org"), Action::Failed),
            (
                Some("b@example.org"),
                Some("b@example.org"),
                Action::Delayed
            ),
            (Some("c@example.org"), None, Action::Delivered),
        ]
    );
}

#[test]
fn status_from_diagnostic_without_enhanced_code_and_untyped_recipients() {
    let raw = dsn_with_body(
        "Reporting-MTA: mta.example.net\n\n\
         Final-Recipient: a@example.org\nAction: FAILED\n\
         Diagnostic-Code: smtp; 550 no such user here\n",
    );
    let Ok(Feedback::Delivery(report)) = parse_feedback(raw.as_bytes()) else {
        panic!("not parsed");
    };
    assert_eq!(report.reporting_mta, s("mta.example.net"));
    assert_eq!(
        report.recipients,
        [rcpt(
            "a@example.org",
            None,
            Action::Failed,
            Some((5, 0, 0)),
            Some("550 no such user here"),
            None,
        )]
    );
    assert_eq!(report.recipients[0].bounce(), Some(Bounce::Hard));
    assert!(report.original_headers.is_empty());
}

/// A minimal DSN around a delivery-status body.
fn dsn_with_body(body: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mta.example.net\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\nBounced.\n\n\
         --b\nContent-Type: message/delivery-status\n\n{body}\n--b--\n"
    )
}

// ---------------------------------------------------------------- ARF

#[test]
fn rfc5965_example_report() {
    let report = complaint("arf-rfc5965.eml");
    assert_eq!(
        report,
        ComplaintReport {
            feedback_type: FeedbackType::Abuse,
            user_agent: s("SomeGenerator/1.0"),
            version: s("1"),
            original_rcpt_to: vec!["user@example.com".to_owned()],
            original_mail_from: s("somespammer@example.net"),
            arrival_date: s("Thu, 8 Mar 2005 14:00:00 EDT"),
            reported_domain: vec!["example.net".to_owned()],
            source_ip: s("192.0.2.1"),
            original_headers: report.original_headers.clone(),
        }
    );
    let names: Vec<&str> = report
        .original_headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "From",
            "Received",
            "To",
            "Subject",
            "MIME-Version",
            "Content-Type",
            "Message-ID",
            "Date"
        ]
    );
    assert_eq!(
        report.header("received"),
        Some(
            "from mailserver.example.net (mailserver.example.net [192.0.2.1]) by example.com \
             with ESMTP id M63d4137594e46; Thu, 08 Mar 2005 14:00:00 -0400"
        )
    );
}

#[test]
fn redacted_abuse_report_with_rfc822_headers_keeps_veto_headers() {
    let report = complaint("arf-abuse-redacted.eml");
    assert_eq!(
        report,
        ComplaintReport {
            feedback_type: FeedbackType::Abuse,
            user_agent: s("Yahoo!-Mail-Feedback/2.0"),
            version: s("0.1"),
            original_rcpt_to: vec!["redacted@yahoo.com".to_owned()],
            original_mail_from: s(&format!("bounces+{ARF_TOKEN}@mail.shop.example")),
            // The older Received-Date stands in for Arrival-Date.
            arrival_date: s("Mon, 03 Jun 2024 10:15:01 +0000"),
            reported_domain: vec!["shop.example".to_owned()],
            source_ip: s("192.0.2.10"),
            original_headers: report.original_headers.clone(),
        }
    );
    // The recipient is redacted, but veto's own headers identify the person.
    assert_eq!(report.header("To"), Some("redacted@yahoo.com"));
    assert_eq!(
        report.header("List-Unsubscribe"),
        Some(
            format!(
                "<https://prefs.shop.example/u/{ARF_TOKEN}>, \
                 <mailto:unsubscribe+{ARF_TOKEN}@mail.shop.example>"
            )
            .as_str()
        )
    );
    assert_eq!(report.header("x-veto-trace"), Some(ARF_TOKEN));
    assert_eq!(
        report.header("FEEDBACK-ID"),
        Some("summer24:offers:marketing:shopveto01")
    );
    assert_eq!(
        report.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    assert_eq!(report.header("X-Not-There"), None);
    assert_eq!(report.original_headers.len(), 14);
    assert_eq!(
        verp_token(report.original_mail_from.as_deref().unwrap(), "bounces"),
        Some(ARF_TOKEN)
    );
}

#[test]
fn not_spam_report_with_the_whole_original_message() {
    let report = complaint("arf-not-spam.eml");
    assert_eq!(
        report,
        ComplaintReport {
            feedback_type: FeedbackType::NotSpam,
            user_agent: s("ExampleMail-FBL/3.1"),
            version: s("1"),
            original_rcpt_to: vec!["reader@example.com".to_owned()],
            original_mail_from: s(&format!("bounces+{ARF_TOKEN}@mail.shop.example")),
            arrival_date: s("Wed, 5 Jun 2024 13:58:10 +0000"),
            reported_domain: vec!["shop.example".to_owned(), "mail.shop.example".to_owned()],
            source_ip: s("192.0.2.10"),
            original_headers: report.original_headers.clone(),
        }
    );
    // Only the header of the message/rfc822 part, not its body parts' headers.
    assert_eq!(report.original_headers.len(), 9);
    assert_eq!(
        report.header("content-type"),
        Some("multipart/alternative; boundary=\"inner-alt\"")
    );
    assert_eq!(
        report.header("List-Unsubscribe"),
        Some(
            format!(
                "<https://prefs.shop.example/u/{ARF_TOKEN}>, \
                 <mailto:unsubscribe+{ARF_TOKEN}@mail.shop.example>"
            )
            .as_str()
        )
    );
}

#[test]
fn sloppy_complaint_is_read_leniently() {
    // No report-type (the part says what it is), lower-case field names, a
    // folded User-Agent, no Version, a null Original-Mail-From, a
    // base64-encoded text/rfc822-headers part with CRLF line ends.
    let report = complaint("arf-sloppy.eml");
    assert_eq!(
        report,
        ComplaintReport {
            feedback_type: FeedbackType::Abuse,
            user_agent: s("ISP-FBL/1.0"),
            version: None,
            original_rcpt_to: vec![
                "xxxxxxxx@isp.example".to_owned(),
                "yyyyyyyy@isp.example".to_owned()
            ],
            original_mail_from: None,
            arrival_date: s("Thu, 6 Jun 2024 07:00:00 +0000"),
            reported_domain: vec!["shop.example".to_owned()],
            source_ip: s("192.0.2.10"),
            original_headers: vec![
                (
                    "Received".to_owned(),
                    "from veto.shop.example (192.0.2.10) by mx.isp.example; \
                     Thu, 6 Jun 2024 07:00:00 +0000"
                        .to_owned()
                ),
                (
                    "From".to_owned(),
                    "Shop News <news@shop.example>".to_owned()
                ),
                ("To".to_owned(), "xxxxxxxx@isp.example".to_owned()),
                ("Subject".to_owned(), "Our summer collection".to_owned()),
                (
                    "Message-ID".to_owned(),
                    "<c9.19.summer24@shop.example>".to_owned()
                ),
                (
                    "List-Unsubscribe".to_owned(),
                    format!("<https://prefs.shop.example/u/{ARF_TOKEN}>")
                ),
                (
                    "Feedback-ID".to_owned(),
                    "summer24:offers:marketing:shopveto01".to_owned()
                ),
            ],
        }
    );
}

#[test]
fn feedback_types() {
    let cases = [
        ("abuse", FeedbackType::Abuse),
        ("Fraud", FeedbackType::Fraud),
        ("other", FeedbackType::Other),
        ("VIRUS", FeedbackType::Virus),
        ("not-spam", FeedbackType::NotSpam),
        (
            "auth-failure",
            FeedbackType::Unknown("auth-failure".to_owned()),
        ),
        ("Opt-Out", FeedbackType::Unknown("opt-out".to_owned())),
    ];
    for (value, expected) in cases {
        let raw = format!(
            "From: fbl@isp.example\n\
             Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n\
             --b\nContent-Type: text/plain\n\nReport.\n\n\
             --b\nContent-Type: message/feedback-report\n\n\
             Feedback-Type: {value}\nUser-Agent: t/1\nVersion: 1\n\n--b--\n"
        );
        let Ok(Feedback::Complaint(report)) = parse_feedback(raw.as_bytes()) else {
            panic!("{value}: not parsed");
        };
        assert_eq!(report.feedback_type, expected, "{value}");
        assert_eq!(report.feedback_type.as_str(), value.to_ascii_lowercase());
        assert!(report.original_headers.is_empty());
    }
}

// ---------------------------------------------------------------- MIME

/// A complaint whose third part is `message/rfc822` with this content,
/// followed by another part.
fn complaint_with_original(original: &str) -> ComplaintReport {
    let raw = format!(
        "From: fbl@isp.example\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n\
         --b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n\n\
         --b\nContent-Type: message/rfc822\n\n{original}\n\
         --b\nContent-Type: text/plain\n\nNot-A-Header: from the next part\n--b--\n"
    );
    match parse_feedback(raw.as_bytes()) {
        Ok(Feedback::Complaint(report)) => report,
        other => panic!("{original:?}: {other:?}"),
    }
}

#[test]
fn original_message_parts_never_take_headers_from_the_next_part() {
    let headers = |original: &str| complaint_with_original(original).original_headers;
    let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    // Headers only, no blank line before the boundary.
    assert_eq!(
        headers("From: a@example.org\nSubject: hi"),
        [pair("From", "a@example.org"), pair("Subject", "hi")]
    );
    assert_eq!(
        headers("From: a@example.org\n\nbody: text"),
        [pair("From", "a@example.org")]
    );
    // Garbage, or nothing.
    assert_eq!(headers("F"), []);
    assert_eq!(headers(""), []);
}

#[test]
fn encoded_report_parts_are_decoded() {
    let status = "Reporting-MTA: dns; mta.example.net\r\n\r\n\
                  Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n";
    let base64 = {
        let encoded = data_encoding::BASE64.encode(status.as_bytes());
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        lines.join("\r\n")
    };
    let qp = "Reporting-MTA: dns; mta=2Eexample.net\n\nFinal-Recipient: rfc822; a@exam=\nple.org\n\
              Action: failed\nStatus: 5.1=\n.1\n";
    for (encoding, body) in [("base64", base64.as_str()), ("quoted-printable", qp)] {
        let raw = format!(
            "From: MAILER-DAEMON@mta.example.net\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b b\"\n\n\
             --b b\nContent-Type: message/delivery-status\n\
             Content-Transfer-Encoding: {encoding}\n\n{body}\n--b b--\n"
        );
        let Ok(Feedback::Delivery(report)) = parse_feedback(raw.as_bytes()) else {
            panic!("{encoding}: not parsed");
        };
        assert_eq!(report.reporting_mta, s("mta.example.net"), "{encoding}");
        assert_eq!(
            report.recipients,
            [rcpt(
                "a@example.org",
                None,
                Action::Failed,
                Some((5, 1, 1)),
                None,
                None
            )],
            "{encoding}"
        );
    }
}

#[test]
fn boundaries_need_their_own_line() {
    // Transport padding after a delimiter is allowed; a longer boundary
    // that starts with ours is not ours; a boundary inside a line is text.
    let raw = "From: MAILER-DAEMON@mta.example.net\n\
               Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n\
               preamble --b\n\
               --b \t\n\
               Content-Type: message/delivery-status\n\n\
               Reporting-MTA: dns; mta.example.net\n\n\
               Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\
               --bb\n\
               Diagnostic-Code: smtp; 550 --b gone\n\
               --b--\n";
    // `--bb` is not a delimiter, so it is a line of the status part.
    assert_eq!(
        parse_feedback(raw.as_bytes()),
        Err(FeedbackError::Syntax {
            part: DSN,
            line: 6,
            text: "--bb".to_owned()
        })
    );
    let fixed = raw.replace("--bb\n", "");
    let Ok(Feedback::Delivery(report)) = parse_feedback(fixed.as_bytes()) else {
        panic!("not parsed");
    };
    assert_eq!(report.recipients[0].diagnostic, s("550 --b gone"));
}

#[test]
fn a_forwarded_report_is_not_a_report() {
    let raw = format!(
        "From: colleague@shop.example\n\
         Content-Type: multipart/mixed; boundary=outer\n\n\
         --outer\nContent-Type: text/plain\n\nFYI, a bounce.\n\n\
         --outer\nContent-Type: message/rfc822\n\n{}\n--outer--\n",
        String::from_utf8(fixture("postfix-hard.eml")).unwrap()
    );
    assert_eq!(
        parse_feedback(raw.as_bytes()),
        Err(FeedbackError::NotReport {
            content_type: "multipart/mixed".to_owned()
        })
    );
}

#[test]
fn reports_nested_too_deep_are_not_searched() {
    let nest = |depth: usize| {
        let mut raw = String::from(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n\
             --r\nContent-Type: message/delivery-status\n\n\
             Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n--r--\n",
        );
        for level in 0..depth {
            raw = format!(
                "Content-Type: multipart/mixed; boundary=m{level}\n\n--m{level}\n{raw}\n--m{level}--\n"
            );
        }
        format!("From: x@example.org\n{raw}")
    };
    assert!(matches!(
        parse_feedback(nest(8).as_bytes()),
        Ok(Feedback::Delivery(_))
    ));
    assert!(matches!(
        parse_feedback(nest(9).as_bytes()),
        Err(FeedbackError::NotReport { .. })
    ));
}

// ---------------------------------------------------------------- errors

#[test]
fn plain_message_is_not_a_report() {
    let e = error("plain.eml");
    assert_eq!(
        e,
        FeedbackError::NotReport {
            content_type: "text/plain".to_owned()
        }
    );
    assert_eq!(
        e.to_string(),
        "not a multipart/report (Content-Type: text/plain)"
    );
}

#[test]
fn truncated_dsn_says_what_is_missing_and_where() {
    let e = error("truncated-dsn.eml");
    assert_eq!(
        e,
        FeedbackError::MissingField {
            part: DSN,
            line: 4,
            field: "Action",
        }
    );
    assert_eq!(
        e.to_string(),
        "message/delivery-status, fields starting at line 4: required field Action is missing"
    );
}

#[test]
fn malformed_fixtures_give_clear_errors() {
    let cases: [(&str, FeedbackError, &str); 9] = [
        (
            "truncated-before-status.eml",
            FeedbackError::MissingStatusPart {
                report_type: "delivery-status".to_owned(),
                expected: DSN,
            },
            "multipart/report; report-type=delivery-status has no message/delivery-status part",
        ),
        (
            "dsn-no-recipients.eml",
            FeedbackError::NoRecipients { part: DSN },
            "message/delivery-status has no per-recipient fields (truncated report?)",
        ),
        (
            "mdn-read-receipt.eml",
            FeedbackError::UnknownReportType("disposition-notification".to_owned()),
            "unknown report-type \"disposition-notification\" (expected delivery-status or \
             feedback-report)",
        ),
        (
            "bad-action.eml",
            FeedbackError::Field {
                part: DSN,
                line: 4,
                field: "Action".to_owned(),
                reason: "\"bounced\" is not one of failed, delayed, delivered, relayed, expanded"
                    .to_owned(),
            },
            "message/delivery-status, line 4, Action: \"bounced\" is not one of failed, \
             delayed, delivered, relayed, expanded",
        ),
        (
            "bad-status.eml",
            FeedbackError::Field {
                part: DSN,
                line: 5,
                field: "Status".to_owned(),
                reason: "\"permanent\" is not a status code x.y.z".to_owned(),
            },
            "message/delivery-status, line 5, Status: \"permanent\" is not a status code x.y.z",
        ),
        (
            "bad-line.eml",
            FeedbackError::Syntax {
                part: DSN,
                line: 3,
                text: "The following recipient could not be reached".to_owned(),
            },
            "message/delivery-status, line 3: not a \"Name: value\" field: \"The following \
             recipient could not be reached\"",
        ),
        (
            "arf-no-feedback-type.eml",
            FeedbackError::MissingField {
                part: ARF,
                line: 1,
                field: "Feedback-Type",
            },
            "message/feedback-report, fields starting at line 1: required field Feedback-Type \
             is missing",
        ),
        (
            "report-no-type.eml",
            FeedbackError::MissingReportType,
            "multipart/report without a report-type parameter and without a \
             message/delivery-status or message/feedback-report part",
        ),
        (
            "plain.eml",
            FeedbackError::NotReport {
                content_type: "text/plain".to_owned(),
            },
            "not a multipart/report (Content-Type: text/plain)",
        ),
    ];
    for (name, expected, message) in cases {
        let e = error(name);
        assert_eq!(e, expected, "{name}");
        assert_eq!(e.to_string(), message, "{name}");
    }
}

#[test]
fn not_a_message_at_all() {
    assert_eq!(parse_feedback(b""), Err(FeedbackError::NotMessage));
    assert!(matches!(
        parse_feedback(b"just some words\n"),
        Err(FeedbackError::NotMessage | FeedbackError::NotReport { .. })
    ));
    assert!(matches!(
        parse_feedback(b"Subject: hi\n\nbody\n"),
        Err(FeedbackError::NotReport { .. })
    ));
}

#[test]
fn report_part_garbage_is_an_error_not_a_guess() {
    let e = parse_feedback(dsn_with_body("Final-Recipient rfc822 a@example.org\n").as_bytes());
    assert!(
        matches!(e, Err(FeedbackError::Syntax { line: 1, .. })),
        "{e:?}"
    );
    let e = parse_feedback(
        dsn_with_body("Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 9.9.9\n")
            .as_bytes(),
    );
    assert!(
        matches!(&e, Err(FeedbackError::Field { line: 3, field, .. }) if field == "Status"),
        "{e:?}"
    );
}

/// Every fixture is either read as a report (checked field by field above)
/// or refused with an error (checked above); a new fixture must be added to
/// one of these lists.
#[test]
fn every_fixture_is_accounted_for() {
    let reports = [
        "arf-abuse-redacted.eml",
        "arf-not-spam.eml",
        "arf-rfc5965.eml",
        "arf-sloppy.eml",
        "exim-sloppy.eml",
        "global-dsn.eml",
        "gmail-hard.eml",
        "multi-failed-delivered.eml",
        "postfix-delayed.eml",
        "postfix-hard.eml",
        "rfc3464-multi.eml",
        "rfc3464-simple.eml",
        "wrapped-dsn.eml",
    ];
    let errors = [
        "arf-no-feedback-type.eml",
        "bad-action.eml",
        "bad-line.eml",
        "bad-status.eml",
        "dsn-no-recipients.eml",
        "mdn-read-receipt.eml",
        "plain.eml",
        "report-no-type.eml",
        "truncated-before-status.eml",
        "truncated-dsn.eml",
    ];
    let mut listed: Vec<String> = reports
        .iter()
        .chain(&errors)
        .map(|n| n.to_string())
        .collect();
    listed.sort();
    assert_eq!(fixture_names(), listed);
    for name in reports {
        assert!(parse_feedback(&fixture(name)).is_ok(), "{name}");
    }
    for name in errors {
        assert!(parse_feedback(&fixture(name)).is_err(), "{name}");
    }
}

#[test]
fn crlf_line_ends_give_the_same_result() {
    for name in fixture_names() {
        let lf = fixture(&name);
        let text = String::from_utf8(lf.clone()).expect("fixtures are UTF-8");
        let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
        assert_eq!(
            parse_feedback(crlf.as_bytes()),
            parse_feedback(&lf),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------- VERP

#[test]
fn verp_tokens() {
    let cases: [(&str, &str, Option<&str>); 14] = [
        ("Bounces+ABC@x.org", "bounces", Some("ABC")),
        ("bounces+abc@x.org", "BOUNCES", Some("abc")),
        ("<bounces+abc@x.org>", "bounces", Some("abc")),
        ("  bounces+abc@x.org ", "bounces", Some("abc")),
        ("bounces+a+b@x.org", "bounces", Some("a+b")),
        ("bounces@x.org", "bounces", None),
        ("unsubscribe+ABC@x.org", "bounces", None),
        ("bouncesx+ABC@x.org", "bounces", None),
        ("xbounces+ABC@x.org", "bounces", None),
        ("bounces+@x.org", "bounces", None),
        ("bounces+ABC", "bounces", None),
        ("bounces+ABC@", "bounces", None),
        ("", "bounces", None),
        ("@", "bounces", None),
    ];
    for (address, prefix, expected) in cases {
        assert_eq!(
            verp_token(address, prefix),
            expected,
            "{address:?} {prefix:?}"
        );
    }
}

#[test]
fn a_minted_bounce_token_travels_through_a_dsn() {
    let keys = TokenKeys::new(TokenKey::new(3, [7; 32]), Vec::new()).expect("keys");
    let claims = Claims {
        contact: 4711,
        scope: TokenScope::Topic(2),
        message: Some(99),
    };
    let token = keys.mint(&claims, Purpose::Bounce).expect("mint");
    let raw = String::from_utf8(fixture("postfix-hard.eml"))
        .unwrap()
        .replace(POSTFIX_TOKEN, token.as_str());
    // The inbound listener knows the envelope recipient; the returned
    // header carries it too.
    let Ok(Feedback::Delivery(report)) = parse_feedback(raw.as_bytes()) else {
        panic!("not parsed");
    };
    let return_path = report.header("Return-Path").unwrap();
    let found = verp_token(return_path, "bounces").expect("token");
    assert_eq!(keys.verify(found, Purpose::Bounce), Ok(claims));
    assert!(keys.verify(found, Purpose::Unsubscribe).is_err());
    assert_eq!(report.recipients[0].bounce(), Some(Bounce::Hard));
}

// ---------------------------------------------------------------- properties

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(prop::sample::Index),
    Delete(prop::sample::Index, usize),
    Insert(prop::sample::Index, Vec<u8>),
    Replace(prop::sample::Index, u8),
    Duplicate(prop::sample::Index, usize),
}

fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::sample::select(vec![
            "\n",
            "\r\n",
            "\n\n",
            " ",
            "\t",
            ":",
            ";",
            "<",
            ">",
            "--",
            "\n--",
            "\n ",
            "5.",
            "4.4.",
            ".",
            "=?utf-8?B?",
            "\\x{",
            "\\x{D800}",
            "rfc822;",
            "utf-8;",
            "Status: ",
            "Action: ",
            "Final-Recipient: ",
            "Feedback-Type: ",
            "\nContent-Type: message/delivery-status\n\n",
            "\nContent-Type: message/feedback-report\n\n",
            "\nContent-Type: message/rfc822\n\n",
            "\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n",
            "\nContent-Transfer-Encoding: base64\n",
            "\nContent-Transfer-Encoding: quoted-printable\n",
            "=\n",
            "=C3=A9",
            "\u{fffd}",
            "用户",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<prop::sample::Index>(), interesting_bytes())
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<prop::sample::Index>(), 1..200usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(raw: &mut Vec<u8>, mutation: &Mutation) {
    let len = raw.len();
    if len == 0 {
        if let Mutation::Insert(_, bytes) = mutation {
            raw.extend_from_slice(bytes);
        }
        return;
    }
    match mutation {
        Mutation::Truncate(i) => raw.truncate(i.index(len)),
        Mutation::Delete(i, n) => {
            let start = i.index(len);
            raw.drain(start..(start + n).min(len));
        }
        Mutation::Insert(i, bytes) => {
            let at = i.index(len + 1);
            raw.splice(at..at, bytes.iter().copied());
        }
        Mutation::Replace(i, b) => raw[i.index(len)] = *b,
        Mutation::Duplicate(i, n) => {
            let start = i.index(len);
            let copy = raw[start..(start + n).min(len)].to_vec();
            raw.splice(start..start, copy);
        }
    }
}

/// What must hold for any successful parse.
fn check_invariants(feedback: &Feedback) {
    match feedback {
        Feedback::Delivery(report) => {
            assert!(!report.recipients.is_empty());
            for r in &report.recipients {
                if let Some((class, _, _)) = r.status {
                    assert!(matches!(class, 2 | 4 | 5), "{r:?}");
                }
                match r.bounce() {
                    Some(Bounce::Hard) => {
                        assert!(r.action == Action::Failed && matches!(r.status, Some((5, _, _))))
                    }
                    Some(Bounce::Soft) => assert!(
                        r.action == Action::Delayed
                            || r.action == Action::Failed && matches!(r.status, Some((4, _, _)))
                    ),
                    None => {}
                }
                for value in [
                    &r.final_recipient,
                    &r.original_recipient,
                    &r.diagnostic,
                    &r.remote_mta,
                ]
                .into_iter()
                .flatten()
                {
                    assert!(!value.is_empty() && value.trim() == value, "{value:?}");
                }
            }
        }
        Feedback::Complaint(report) => {
            assert!(!report.feedback_type.as_str().is_empty());
            for (name, value) in &report.original_headers {
                assert!(!name.is_empty() && !name.contains(':'));
                assert!(!value.contains('\n') && value.trim() == value, "{value:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(feedback) = parse_feedback(&raw) {
            check_invariants(&feedback);
        }
    }

    #[test]
    fn arbitrary_report_bodies_never_panic(
        body in prop::collection::vec(
            prop_oneof![
                "[ -~]{0,40}",
                "(Final-Recipient|Original-Recipient|Action|Status|Diagnostic-Code|Remote-MTA|Reporting-MTA|Feedback-Type|Original-Rcpt-To): [ -~]{0,30}",
                Just(String::new()),
                " [ -~]{0,20}",
            ],
            0..20,
        ),
        complaint in any::<bool>(),
    ) {
        let body = body.join("\n");
        let raw = if complaint {
            format!(
                "Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n\
                 --b\nContent-Type: message/feedback-report\n\n{body}\n--b--\n"
            )
        } else {
            dsn_with_body(&body)
        };
        if let Ok(feedback) = parse_feedback(raw.as_bytes()) {
            check_invariants(&feedback);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn mutated_fixtures_never_panic(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut raw = which.get(&FIXTURES).clone();
        for m in &mutations {
            apply(&mut raw, m);
        }
        if let Ok(feedback) = parse_feedback(&raw) {
            check_invariants(&feedback);
        }
    }

    #[test]
    fn verp_token_round_trips(
        prefix in "[A-Za-z][A-Za-z0-9._-]{0,15}",
        token in "[a-z2-7+=-]{1,40}",
        domain in "[a-z0-9.-]{1,30}",
        upper in any::<bool>(),
    ) {
        let local = if upper { prefix.to_ascii_uppercase() } else { prefix.clone() };
        let address = format!("{local}+{token}@{domain}");
        prop_assert_eq!(verp_token(&address, &prefix), Some(token.as_str()));
        prop_assert_eq!(verp_token(&address, &format!("{prefix}x")), None);
    }

    #[test]
    fn verp_token_never_panics(address in "\\PC{0,60}", prefix in "\\PC{0,10}") {
        if let Some(token) = verp_token(&address, &prefix) {
            prop_assert!(!token.is_empty());
            prop_assert!(address.contains(token));
            prop_assert!(!token.contains('@'));
        }
    }
}
