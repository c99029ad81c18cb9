//! Delivery status notifications (RFC 3464) for copies upstream refused
//! for good, sent to the envelope sender of the tool's message.

use data_encoding::BASE64;
use veto_core::Timestamp;

/// One recipient upstream refused, with its reply.
pub struct Failure<'a> {
    pub recipient: &'a str,
    pub reply: &'a str,
}

pub struct Report<'a> {
    /// The gateway's host name (`Reporting-MTA`).
    pub reporting_mta: &'a str,
    /// The envelope sender of the refused message.
    pub to: &'a str,
    pub message_id: &'a str,
    pub subject: Option<&'a str>,
    pub failures: &'a [Failure<'a>],
    pub at: Timestamp,
}

/// A `multipart/report; report-type=delivery-status` message, CRLF ended.
pub fn failure_report(r: &Report<'_>) -> Vec<u8> {
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_string(&r.at)
        .unwrap_or_default();
    let boundary = format!("veto-dsn-{}", r.at.as_microsecond());
    let subject = r.subject.map(one_line).unwrap_or_default();
    let mut out = String::with_capacity(2048);
    let mut line = |s: &str| {
        out.push_str(s);
        out.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{}>",
        r.reporting_mta
    ));
    line(&format!("To: <{}>", r.to));
    line(&format!(
        "Subject: {}",
        encode_word(&format!("Undelivered Mail Returned to Sender: {subject}"))
    ));
    line(&format!("Date: {date}"));
    line(&format!(
        "Message-ID: <dsn.{}@{}>",
        r.at.as_microsecond(),
        r.reporting_mta
    ));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
    ));
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Transfer-Encoding: 8bit");
    line("");
    line(&format!(
        "The mail server after {} refused your message {} for good,",
        r.reporting_mta,
        one_line(r.message_id)
    ));
    line("for these recipients. They will get nothing more from this gateway:");
    line("");
    for f in r.failures {
        line(&format!("<{}>: {}", f.recipient, one_line(f.reply)));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("");
    line(&format!("Reporting-MTA: dns; {}", r.reporting_mta));
    line(&format!("Arrival-Date: {date}"));
    for f in r.failures {
        line("");
        line(&format!("Final-Recipient: rfc822; {}", f.recipient));
        line("Action: failed");
        line(&format!("Status: {}", status_of(f.reply)));
        line(&format!("Diagnostic-Code: smtp; {}", one_line(f.reply)));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("");
    line(&format!("Message-ID: {}", one_line(r.message_id)));
    if r.subject.is_some() {
        line(&format!("Subject: {}", encode_word(&subject)));
    }
    line("");
    line(&format!("--{boundary}--"));
    out.into_bytes()
}

/// The enhanced status code in an SMTP reply (`550 5.1.1 ...`), or `5.0.0`.
fn status_of(reply: &str) -> String {
    reply
        .split_whitespace()
        .nth(1)
        .filter(|s| {
            let parts: Vec<&str> = s.split('.').collect();
            parts.len() == 3
                && parts[0] == "5"
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .unwrap_or("5.0.0")
        .to_owned()
}

/// No CR, LF or other controls: text from elsewhere cannot add header fields.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// RFC 2047 for non-ASCII header text.
fn encode_word(s: &str) -> String {
    if s.is_ascii() {
        s.to_owned()
    } else {
        format!("=?utf-8?b?{}?=", BASE64.encode(s.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_each_refused_recipient_with_its_status() {
        let failures = [Failure {
            recipient: "ann@example.com",
            reply: "550 5.1.1 <ann@example.com>: Recipient address rejected\r\nX-Injected: yes",
        }];
        let report = failure_report(&Report {
            reporting_mta: "gw.example.org",
            to: "news@shop.example",
            message_id: "<m1@shop.example>",
            subject: Some("Autumn sale — 20%"),
            failures: &failures,
            at: Timestamp::from_second(1_700_000_000).unwrap(),
        });
        let text = String::from_utf8(report).unwrap();
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains(
            "Final-Recipient: rfc822; ann@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(!text.contains("\r\nX-Injected"), "{text}");
        assert!(text.contains("Subject: =?utf-8?b?"));
        let parsed =
            veto_mail::feedback::parse_feedback(text.as_bytes()).expect("our own DSN parses");
        assert!(
            matches!(parsed, veto_mail::feedback::Feedback::Delivery(_)),
            "{parsed:?}"
        );
    }

    #[test]
    fn status_comes_from_the_reply_or_defaults() {
        assert_eq!(status_of("554 5.7.1 no"), "5.7.1");
        assert_eq!(status_of("550 mailbox unavailable"), "5.0.0");
        assert_eq!(status_of("550 4.1.1 odd"), "5.0.0");
    }
}
