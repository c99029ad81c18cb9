//! The per-recipient copy as a receiver sees it: parsed back with
//! mail-parser, DKIM-verified with mail-auth (and dkimpy when
//! `VETO_TEST_DKIMPY=1`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use mail_parser::{Message, MessageParser, MimeHeaders};
use proptest::prelude::*;
use veto_mail::dkim::{self, GeneratedKey, Signer};
use veto_mail::rewrite::{self, Footer, Original, Personalisation, RewriteError};

const UNSUBSCRIBE_URL: &str = "https://veto.example.org/u/abcdefghijklmnopqrstuvwxyz234567abcdefgh";
const UNSUBSCRIBE_MAILTO: &str =
    "unsubscribe+abcdefghijklmnopqrstuvwxyz234567abcdefgh@veto.example.org";
const PREFERENCES_URL: &str = "https://veto.example.org/p/abcdefghijklmnopqrstuvwxyz234567abcdefgh";

const FOOTER: Footer<'static> = Footer {
    why: "You get this because you signed up for Product news.",
    unsubscribe_text: "Unsubscribe with one click",
    preferences_text: "Choose what you get",
    postal_address: "Example Shop Ltd\n1 High Street\nLondon N1 1AA",
    organisation: "Example Shop",
};

const FRENCH_FOOTER: Footer<'static> = Footer {
    why: "Vous recevez ce message car vous êtes inscrite aux nouveautés.",
    unsubscribe_text: "Se désabonner",
    preferences_text: "Gérer mes préférences",
    postal_address: "1 rue de l'Église, 75001 Paris",
    organisation: "Boutique",
};

fn personalisation(footer: Option<Footer<'static>>) -> Personalisation<'static> {
    Personalisation {
        unsubscribe_url: UNSUBSCRIBE_URL,
        unsubscribe_mailto: UNSUBSCRIBE_MAILTO,
        preferences_url: PREFERENCES_URL,
        list_id: "Product news <product-news.shop.example.org>",
        feedback_id: "spring25:product-news:bulk:exampleshop",
        message_id_domain: "veto.example.org",
        footer,
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/rewrite/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::new()
        .parse(raw)
        .expect("output parses as a message")
}

/// CRLF everywhere, no bare CR, lines of at most 998 octets.
fn assert_wire_form(out: &[u8]) {
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF at byte {i}");
        }
        if b == b'\r' {
            assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at byte {i}");
        }
    }
    for (n, line) in out.split(|&b| b == b'\n').enumerate() {
        assert!(
            line.len() <= 999,
            "line {} has {} octets",
            n + 1,
            line.len()
        );
    }
}

/// The unfolded values of the top-level fields called `name`.
fn header_values(message: &Message<'_>, name: &str) -> Vec<String> {
    message.parts[0]
        .headers
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| {
            let raw = &message.raw_message[h.offset_start as usize..h.offset_end as usize];
            String::from_utf8_lossy(raw)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn header_names(message: &Message<'_>) -> Vec<String> {
    message.parts[0]
        .headers
        .iter()
        .map(|h| h.name.as_str().to_ascii_lowercase())
        .collect()
}

/// Exactly one of each list header, with the personalisation's values,
/// and no Veto-* field.
fn assert_list_headers(message: &Message<'_>) {
    assert_eq!(
        header_values(message, "List-Unsubscribe"),
        [format!(
            "<{UNSUBSCRIBE_URL}>, <mailto:{UNSUBSCRIBE_MAILTO}>"
        )]
    );
    assert_eq!(
        header_values(message, "List-Unsubscribe-Post"),
        ["List-Unsubscribe=One-Click"]
    );
    assert_eq!(
        header_values(message, "List-Id"),
        ["\"Product news\" <product-news.shop.example.org>"]
    );
    assert_eq!(
        header_values(message, "Feedback-ID"),
        ["spring25:product-news:bulk:exampleshop"]
    );
    assert_eq!(header_values(message, "Message-ID").len(), 1);
    let veto: Vec<String> = header_names(message)
        .into_iter()
        .filter(|n| n.starts_with("veto-"))
        .collect();
    assert!(veto.is_empty(), "Veto-* fields relayed: {veto:?}");
}

fn lf(text: &str) -> String {
    text.replace("\r\n", "\n")
}

/// A body's text with veto's footer taken out again.
fn without_footer(text: &str) -> String {
    let text = lf(text);
    if let Some(start) = text.find("\n<div class=\"veto-footer\"") {
        let end = text[start..]
            .find("</div>\n")
            .map(|e| start + e + "</div>\n".len())
            .expect("footer div is closed");
        return format!("{}{}", &text[..start], &text[end..]);
    }
    match text.rfind("\n-- \n") {
        Some(start) => text[..start].to_string(),
        None => text,
    }
}

fn body_parts(message: &Message<'_>) -> Vec<u32> {
    let mut ids: Vec<u32> = message
        .text_body
        .iter()
        .chain(&message.html_body)
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Everything a receiver of a marketing copy must see, and everything that
/// must not have changed.
fn check_copy(original: &[u8], out: &[u8], footer: &Footer<'_>, why_as_written: &str) {
    assert_wire_form(out);
    let before_raw = crlf(original);
    let before = parse(&before_raw);
    let after = parse(out);
    assert_list_headers(&after);

    let bodies = body_parts(&after);
    assert_eq!(bodies, body_parts(&before), "the same parts are body parts");
    assert!(!bodies.is_empty());
    for &id in &bodies {
        let new = after.parts[id as usize].text_contents().expect("text body");
        let old = before.parts[id as usize]
            .text_contents()
            .expect("text body");
        assert!(
            new.contains(why_as_written),
            "part {id} has no footer:\n{new}"
        );
        assert!(
            new.contains(UNSUBSCRIBE_URL) || new.contains(&UNSUBSCRIBE_URL.replace('&', "&amp;"))
        );
        assert!(new.contains(PREFERENCES_URL));
        assert_eq!(
            without_footer(new).trim_end(),
            lf(old).trim_end(),
            "part {id}: original content changed"
        );
    }

    assert_eq!(after.attachments.len(), before.attachments.len());
    for (&new_id, &old_id) in after.attachments.iter().zip(&before.attachments) {
        let new = &after.parts[new_id as usize];
        let old = &before.parts[old_id as usize];
        assert_eq!(
            new.contents(),
            old.contents(),
            "attachment {old_id} decoded"
        );
        assert_eq!(
            &out[new.offset_header as usize..new.offset_end as usize],
            &before_raw[old.offset_header as usize..old.offset_end as usize],
            "attachment {old_id} bytes"
        );
        let text = String::from_utf8_lossy(new.contents());
        assert!(!text.contains(footer.why), "footer in attachment {old_id}");
        assert!(
            !text.contains(UNSUBSCRIBE_URL),
            "link in attachment {old_id}"
        );
    }
}

fn copy(name: &str, footer: Footer<'static>) -> (Vec<u8>, Vec<u8>) {
    let original = fixture(name);
    let out = rewrite::personal_copy(&original, &personalisation(Some(footer)))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    check_copy(&original, &out, &footer, footer.why);
    (original, out)
}

fn part_with_type<'a>(message: &'a Message<'a>, ctype: &str) -> &'a mail_parser::MessagePart<'a> {
    message
        .parts
        .iter()
        .find(|p| {
            p.content_type().is_some_and(|ct| {
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).eq_ignore_ascii_case(ctype)
            })
        })
        .unwrap_or_else(|| panic!("no {ctype} part"))
}

#[test]
fn plain_text_message_gets_list_headers_and_footer() {
    let (_, out) = copy("plain.eml", FOOTER);
    let message = parse(&out);
    let text = message.body_text(0).unwrap();
    assert!(lf(&text).ends_with(&format!(
        "The Example Shop team\n\n-- \n{}\nUnsubscribe with one click: {UNSUBSCRIBE_URL}\n\
         Choose what you get: {PREFERENCES_URL}\n\
         Example Shop, Example Shop Ltd, 1 High Street, London N1 1AA\n",
        FOOTER.why
    )));
    // ASCII footer in an ASCII message: no MIME fields needed.
    assert!(header_values(&message, "MIME-Version").is_empty());
    assert!(header_values(&message, "Content-Transfer-Encoding").is_empty());
    assert_eq!(
        header_values(&message, "Message-ID"),
        ["<spring-sale-1@shop.example.org>"]
    );
}

#[test]
fn multipart_alternative_keeps_quoted_printable_and_base64() {
    let (_, out) = copy("alternative-qp-base64.eml", FOOTER);
    let message = parse(&out);
    let text = part_with_type(&message, "text/plain");
    assert_eq!(text.content_transfer_encoding(), Some("quoted-printable"));
    let html = part_with_type(&message, "text/html");
    assert_eq!(html.content_transfer_encoding(), Some("base64"));
    let html = html.text_contents().unwrap();
    let footer_at = html.find("class=\"veto-footer\"").unwrap();
    assert!(
        footer_at < html.find("</body>").unwrap(),
        "footer before </body>"
    );
    assert!(html.contains("Fresh crème brûlée every day — only this week."));
    assert!(html.contains(&format!("<a href=\"{UNSUBSCRIBE_URL}\"")));
    // The preamble is kept.
    assert!(String::from_utf8_lossy(&out).contains("This is a multi-part message in MIME format."));
}

#[test]
fn attachments_are_copied_byte_for_byte_and_get_no_footer() {
    let (original, out) = copy("mixed-attachment.eml", FOOTER);
    let message = parse(&out);
    assert_eq!(message.text_body.len(), 1);
    assert_eq!(message.attachments.len(), 2);
    let pdf = part_with_type(&message, "application/pdf");
    assert!(pdf.contents().starts_with(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"));
    // Everything after the body part is the original, byte for byte.
    let original = crlf(&original);
    let tail = |raw: &[u8]| {
        let at = raw
            .windows(b"--mixed-1\r\nContent-Type: application/pdf".len())
            .position(|w| w == b"--mixed-1\r\nContent-Type: application/pdf")
            .unwrap();
        raw[at..].to_vec()
    };
    assert_eq!(tail(&out), tail(&original));
}

#[test]
fn nested_related_and_alternative_parts_all_get_the_footer() {
    let (_, out) = copy("related-alternative.eml", FOOTER);
    let message = parse(&out);
    assert_eq!(body_parts(&message).len(), 2);
    let text = part_with_type(&message, "text/plain");
    assert_eq!(text.content_transfer_encoding(), Some("8bit"));
    let html = part_with_type(&message, "text/html")
        .text_contents()
        .unwrap();
    assert!(html.contains("<img src=\"cid:teapot@shop\">"));
    assert!(html.find("veto-footer").unwrap() < html.rfind("</body>").unwrap());
    let calendar = part_with_type(&message, "text/calendar");
    assert!(!calendar.text_contents().unwrap().contains(FOOTER.why));
    let image = part_with_type(&message, "image/png");
    assert!(image.contents().starts_with(b"\x89PNG\r\n\x1a\n"));
}

#[test]
fn iso_8859_1_parts_keep_their_charset_for_an_ascii_footer() {
    let (_, out) = copy("latin1.eml", FOOTER);
    let message = parse(&out);
    let text = part_with_type(&message, "text/plain");
    assert_eq!(
        text.content_type().unwrap().attribute("charset"),
        Some("ISO-8859-1")
    );
    assert!(text.text_contents().unwrap().contains("Bonjour Zoé"));
    // The raw bytes are still Latin-1.
    assert!(out.windows(4).any(|w| w == b"Zo\xe9,"));
}

#[test]
fn iso_8859_1_text_becomes_utf8_for_a_non_ascii_footer_and_html_uses_references() {
    let original = fixture("latin1.eml");
    let out = rewrite::personal_copy(&original, &personalisation(Some(FRENCH_FOOTER))).unwrap();
    let message = parse(&out);

    let text = part_with_type(&message, "text/plain");
    let ct = text.content_type().unwrap();
    assert_eq!(ct.attribute("charset"), Some("utf-8"));
    assert_eq!(
        ct.attribute("format"),
        Some("flowed"),
        "other parameters kept"
    );
    let text = text.text_contents().unwrap();
    assert!(text.contains("La crème de la crème: à découvrir."));
    assert!(text.contains(FRENCH_FOOTER.why));
    assert!(text.contains("Se désabonner: https://"));

    let html = part_with_type(&message, "text/html");
    assert_eq!(
        html.content_type().unwrap().attribute("charset"),
        Some("iso-8859-1")
    );
    let html = html.text_contents().unwrap();
    assert!(html.contains("Bonjour Zoé, la crème de la crème."));
    assert!(html.contains("inscrite aux nouveaut&#xE9;s."));
    check_copy(
        &original,
        &out,
        &FRENCH_FOOTER,
        "Vous recevez ce message car vous",
    );
}

#[test]
fn a_non_ascii_footer_turns_a_7bit_ascii_message_into_utf8_quoted_printable() {
    let original = fixture("plain.eml");
    let out = rewrite::personal_copy(&original, &personalisation(Some(FRENCH_FOOTER))).unwrap();
    check_copy(&original, &out, &FRENCH_FOOTER, FRENCH_FOOTER.why);
    let message = parse(&out);
    assert_eq!(header_values(&message, "MIME-Version"), ["1.0"]);
    assert_eq!(
        header_values(&message, "Content-Type"),
        ["text/plain; charset=utf-8"]
    );
    assert_eq!(
        header_values(&message, "Content-Transfer-Encoding"),
        ["quoted-printable"]
    );
    assert!(out.is_ascii());
}

#[test]
fn existing_list_headers_and_veto_instructions_are_replaced_in_place() {
    let (original, out) = copy("existing-list-headers.eml", FOOTER);
    let before_raw = crlf(&original);
    let before = parse(&before_raw);
    let after = parse(&out);
    let removed = [
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-id",
        "feedback-id",
    ];
    let kept: Vec<String> = header_names(&before)
        .into_iter()
        .filter(|n| !removed.contains(&n.as_str()) && !n.starts_with("veto-"))
        .collect();
    let mut expected = kept.clone();
    expected.extend(removed.iter().map(|s| s.to_string()));
    assert_eq!(header_names(&after), expected, "other fields in order");
    // The folded Received field is copied byte for byte.
    let received = b"Received: from tool.example.org (tool.example.org [192.0.2.7])\r\n\tby mx.example.org with ESMTP id 12345\r\n\tfor <alice@example.net>; Tue, 04 Mar 2025 10:00:00 +0000\r\n";
    assert!(out.windows(received.len()).any(|w| w == received));
    assert!(!String::from_utf8_lossy(&out).contains("tool.example.org/unsub"));
    // HTML without </body>: the footer is appended.
    let html = after.body_html(0).unwrap();
    assert!(lf(&html).starts_with(
        "<p>Our news, as HTML without a body element.</p>\n\n<div class=\"veto-footer\""
    ));
}

#[test]
fn a_message_without_message_id_gets_one_per_recipient_that_is_stable() {
    let original = fixture("no-message-id.eml");
    let (_, out) = copy("no-message-id.eml", FOOTER);
    let message = parse(&out);
    let id = header_values(&message, "Message-ID").remove(0);
    assert!(
        id.starts_with('<') && id.ends_with("@veto.example.org>"),
        "{id}"
    );
    let again = rewrite::personal_copy(&original, &personalisation(Some(FOOTER))).unwrap();
    assert_eq!(again, out, "deterministic");
    let mut other = personalisation(Some(FOOTER));
    other.unsubscribe_url = "https://veto.example.org/u/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";
    let other = rewrite::personal_copy(&original, &other).unwrap();
    assert_ne!(header_values(&parse(&other), "Message-ID")[0], id);
    let text = message.body_text(0).unwrap();
    assert!(lf(&text).starts_with("Grüße aus dem Laden.\nSchönen Tag!\n"));
    assert_eq!(
        header_values(&message, "Content-Transfer-Encoding"),
        ["base64"]
    );
}

#[test]
fn an_attached_message_is_not_touched() {
    let (original, out) = copy("forwarded-rfc822.eml", FOOTER);
    let message = parse(&out);
    assert_eq!(body_parts(&message), [1]);
    let inner = message
        .attachment(0)
        .and_then(|a| a.message())
        .expect("attached message");
    for id in body_parts(inner) {
        assert!(
            !inner.parts[id as usize]
                .text_contents()
                .unwrap()
                .contains(FOOTER.why)
        );
    }
    let original = crlf(&original);
    let from = |raw: &[u8]| {
        let at = raw
            .windows(b"--fwd-outer\r\nContent-Type: message/rfc822".len())
            .position(|w| w == b"--fwd-outer\r\nContent-Type: message/rfc822")
            .unwrap();
        raw[at..].to_vec()
    };
    assert_eq!(from(&out), from(&original));
}

#[test]
fn a_service_message_gets_the_headers_and_an_unchanged_body() {
    for name in [
        "plain.eml",
        "alternative-qp-base64.eml",
        "mixed-attachment.eml",
        "related-alternative.eml",
        "latin1.eml",
    ] {
        let original = crlf(&fixture(name));
        let out = rewrite::personal_copy(&original, &personalisation(None)).unwrap();
        assert_wire_form(&out);
        let message = parse(&out);
        assert_list_headers(&message);
        let body_at = |raw: &[u8]| raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        assert_eq!(
            out[body_at(&out)..],
            original[body_at(&original)..],
            "{name}"
        );
    }
}

#[test]
fn lf_and_crlf_input_give_the_same_copy() {
    for name in ["plain.eml", "related-alternative.eml", "latin1.eml"] {
        let lf_input = fixture(name);
        let crlf_input = crlf(&lf_input);
        let p = personalisation(Some(FOOTER));
        assert_eq!(
            rewrite::personal_copy(&lf_input, &p).unwrap(),
            rewrite::personal_copy(&crlf_input, &p).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn one_parse_serves_many_recipients() {
    let original = Original::parse(&fixture("alternative-qp-base64.eml")).unwrap();
    let urls: Vec<String> = (0..3)
        .map(|i| format!("https://veto.example.org/u/token{i}"))
        .collect();
    for url in &urls {
        let mut p = personalisation(Some(FOOTER));
        p.unsubscribe_url = url;
        let out = original.personal_copy(&p).unwrap();
        let message = parse(&out);
        assert!(header_values(&message, "List-Unsubscribe")[0].starts_with(&format!("<{url}>")));
        for id in body_parts(&message) {
            assert!(
                message.parts[id as usize]
                    .text_contents()
                    .unwrap()
                    .contains(url.as_str())
            );
        }
    }
}

#[test]
fn refuses_what_is_not_a_message() {
    let p = personalisation(Some(FOOTER));
    type Expected = fn(&RewriteError) -> bool;
    let cases: Vec<(&[u8], Expected)> = vec![
        (b"", |e| matches!(e, RewriteError::NotAMessage)),
        (b"just some text", |e| {
            matches!(e, RewriteError::NoHeaderBodySeparator)
        }),
        (b"From: a@example.org\r\nSubject: x\r\n", |e| {
            matches!(e, RewriteError::NoHeaderBodySeparator)
        }),
        (b"\r\nbody only", |e| matches!(e, RewriteError::NoHeaders)),
        (
            b"From: a@example.org\r\nthis line has no colon\r\n\r\nbody",
            |e| matches!(e, RewriteError::MalformedHeader { line: 2, .. }),
        ),
        (b"From: a@example.org\r\n\r\nbare\rcarriage return", |e| {
            matches!(e, RewriteError::BareCarriageReturn { line: 3 })
        }),
    ];
    for (input, expected) in cases {
        let err = rewrite::personal_copy(input, &p).unwrap_err();
        assert!(
            expected(&err),
            "{:?}: {err:?}",
            String::from_utf8_lossy(input)
        );
        assert!(!err.to_string().is_empty());
    }

    let mut huge = b"From: a@example.org\r\n\r\n".to_vec();
    huge.resize(rewrite::MAX_MESSAGE_SIZE + 1, b'a');
    assert!(matches!(
        rewrite::personal_copy(&huge, &p),
        Err(RewriteError::TooLarge { .. })
    ));
}

/// mail-parser 0.11.9 reaches a `debug_assert!(false)` on this nesting; in
/// a debug build veto must still answer with an error, not a panic.
#[test]
fn a_message_that_trips_mail_parsers_debug_assertions_is_an_error_or_a_copy() {
    let input = b"From: a@example.org\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: message/rfc822\n\nF--b\nContent-Type: message/rfc822\n\nFrom: c@example.org\nContent-Type: multipart/alternative; boundary=\"i\"\n\n--i\nContent-Type: text/plain\n\nx\n--i--\n\n--b--\n";
    for footer in [None, Some(FOOTER)] {
        if let Ok(out) = rewrite::personal_copy(input, &personalisation(footer)) {
            assert_valid_copy(&out);
        }
    }
}

#[test]
fn a_footer_needs_a_body_part_and_an_unsigned_message() {
    let p = personalisation(Some(FOOTER));
    let image_only = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n";
    assert_eq!(
        rewrite::personal_copy(image_only, &p).unwrap_err(),
        RewriteError::NoBodyForFooter
    );
    let signed = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=s\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nsigned text\r\n--s\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--s--\r\n";
    assert_eq!(
        rewrite::personal_copy(signed, &p).unwrap_err(),
        RewriteError::SignedOrEncrypted("multipart/signed".into())
    );
    // Without a footer both may be relayed with their list headers.
    for input in [&image_only[..], &signed[..]] {
        rewrite::personal_copy(input, &personalisation(None)).unwrap();
    }
}

#[test]
fn overlong_lines_are_reencoded_even_without_a_footer() {
    let long_line = "<p>".to_string() + &"x".repeat(3000) + "</p>";
    let input = format!(
        "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<html><body>{long_line}</body></html>\r\n"
    );
    for footer in [None, Some(FOOTER)] {
        let out = rewrite::personal_copy(input.as_bytes(), &personalisation(footer)).unwrap();
        assert_wire_form(&out);
        let message = parse(&out);
        assert_eq!(
            header_values(&message, "Content-Transfer-Encoding"),
            ["quoted-printable"]
        );
        let html = message.body_html(0).unwrap();
        assert!(html.contains(&long_line));
        assert_eq!(html.contains(FOOTER.why), footer.is_some());
    }
}

#[test]
fn invalid_personalisation_is_refused_before_anything_is_written() {
    let original = fixture("plain.eml");
    let mut p = personalisation(Some(FOOTER));
    p.unsubscribe_url = "http://veto.example.org/u/abc";
    assert!(matches!(
        rewrite::personal_copy(&original, &p),
        Err(RewriteError::InvalidPersonalisation {
            field: "unsubscribe_url",
            ..
        })
    ));
    let mut p = personalisation(Some(Footer {
        postal_address: " ",
        ..FOOTER
    }));
    p.list_id = "news.example.org";
    assert!(matches!(
        rewrite::personal_copy(&original, &p),
        Err(RewriteError::InvalidPersonalisation {
            field: "footer.postal_address",
            ..
        })
    ));
}

// ---------------------------------------------------------------- DKIM

fn rsa_key() -> &'static GeneratedKey {
    static KEY: OnceLock<GeneratedKey> = OnceLock::new();
    KEY.get_or_init(|| dkim::generate_rsa(2048).expect("RSA key"))
}

#[derive(Default)]
struct TxtRecords(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for TxtRecords {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _valid_until: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// Runs a future that must not wait on anything (all DNS answers are in
/// the cache, so verification never touches the network).
fn run_now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("DKIM verification tried to use the network"),
    }
}

/// mail-auth's verdicts on every signature of `message`, with the signer's
/// public key as the only DNS record.
fn verify(message: &[u8], signer: &Signer) -> Vec<DkimResult> {
    let records = TxtRecords::default();
    let key = DomainKey::parse(signer.dns_record().as_bytes()).expect("TXT record parses");
    records.insert(
        format!("{}.", signer.dns_name()).into_boxed_str(),
        Txt::DomainKey(Arc::new(key)),
        std::time::Instant::now() + std::time::Duration::from_secs(3600),
    );
    let authenticator = MessageAuthenticator::new_cloudflare().expect("resolver (unused)");
    let message = AuthenticatedMessage::parse(message).expect("signed message parses");
    let outputs =
        run_now(authenticator.verify_dkim(Parameters::new(&message).with_txt_cache(&records)));
    outputs.iter().map(|o| o.result().clone()).collect()
}

fn signed_tags(signed: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(signed);
    let mut lines = text.split("\r\n");
    let mut field = lines.next().unwrap().to_string();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            field.push_str(line);
        } else {
            break;
        }
    }
    let value = field
        .strip_prefix("DKIM-Signature:")
        .expect("signature first");
    value
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            )
        })
        .collect()
}

fn signed_copy(signer: &Signer) -> Vec<u8> {
    let copy = rewrite::personal_copy(
        &fixture("alternative-qp-base64.eml"),
        &personalisation(Some(FOOTER)),
    )
    .unwrap();
    signer.sign(&copy).unwrap()
}

#[test]
fn rsa_signature_verifies_and_covers_both_list_unsubscribe_fields() {
    let signer =
        Signer::from_pem(&rsa_key().private_key_pem, "shop.example.org", "veto2025").unwrap();
    let signed = signed_copy(&signer);
    assert_wire_form(&signed);
    assert_eq!(verify(&signed, &signer), [DkimResult::Pass]);

    let tags = signed_tags(&signed);
    assert_eq!(tags["a"], "rsa-sha256");
    assert_eq!(tags["c"], "relaxed/relaxed");
    assert_eq!(tags["d"], "shop.example.org");
    assert_eq!(tags["s"], "veto2025");
    let h: Vec<String> = tags["h"]
        .split(':')
        .map(|s| s.to_ascii_lowercase())
        .collect();
    for name in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-id",
        "feedback-id",
        "mime-version",
        "content-type",
    ] {
        assert!(h.iter().any(|x| x == name), "h= lacks {name}: {h:?}");
    }
    // Over-signed: a second List-Unsubscribe added later breaks the signature.
    assert_eq!(h.iter().filter(|x| *x == "list-unsubscribe").count(), 2);
}

#[test]
fn signature_fails_after_one_byte_of_list_unsubscribe_changes() {
    let signer =
        Signer::from_pem(&rsa_key().private_key_pem, "shop.example.org", "veto2025").unwrap();
    let signed = signed_copy(&signer);
    let needle = b"List-Unsubscribe: <https://veto.example.org/u/abc";
    let at = signed
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut tampered = signed.clone();
    tampered[at + needle.len() - 1] = b'x';
    assert!(matches!(
        &verify(&tampered, &signer)[..],
        [DkimResult::Fail(_)]
    ));

    let mut tampered = signed.clone();
    let post = b"List-Unsubscribe=One-Click";
    let at = tampered
        .windows(post.len())
        .position(|w| w == post)
        .unwrap();
    tampered[at + post.len() - 1] = b'C';
    // Relaxed canonicalisation does not fold case in values: still a failure.
    assert!(matches!(
        &verify(&tampered, &signer)[..],
        [DkimResult::Fail(_)]
    ));

    let mut added = b"List-Unsubscribe: <https://evil.example/u/1>\r\n".to_vec();
    let split = signed.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let mut with_extra = signed[..split + 2].to_vec();
    with_extra.append(&mut added);
    with_extra.extend_from_slice(&signed[split + 2..]);
    assert!(matches!(
        &verify(&with_extra, &signer)[..],
        [DkimResult::Fail(_)]
    ));
}

#[test]
fn ed25519_signature_verifies() {
    let key = dkim::generate_ed25519().unwrap();
    let signer = Signer::from_pem(&key.private_key_pem, "shop.example.org", "ed2025").unwrap();
    let signed = signed_copy(&signer);
    assert_eq!(signed_tags(&signed)["a"], "ed25519-sha256");
    assert_eq!(verify(&signed, &signer), [DkimResult::Pass]);
}

#[test]
fn signing_needs_exactly_one_from() {
    let signer =
        Signer::from_pem(&rsa_key().private_key_pem, "shop.example.org", "veto2025").unwrap();
    assert!(signer.sign(b"To: a@example.org\r\n\r\nbody\r\n").is_err());
    assert!(
        signer
            .sign(b"From: a@example.org\r\nFrom: b@example.org\r\n\r\nbody\r\n")
            .is_err()
    );
}

/// dkimpy, an independent implementation, verifies veto's RSA and Ed25519
/// signatures and rejects a tampered List-Unsubscribe. Runs when
/// VETO_TEST_DKIMPY=1 (needs `pip install dkimpy pynacl`).
#[test]
fn dkimpy_verifies_the_signature() {
    if std::env::var("VETO_TEST_DKIMPY").as_deref() != Ok("1") {
        println!("skipped: set VETO_TEST_DKIMPY=1 to verify with dkimpy");
        return;
    }
    const SCRIPT: &str = r#"
import sys, dkim
name, record = sys.argv[1], sys.argv[2].encode()
def dnsfunc(qname, timeout=5):
    qname = qname.decode() if isinstance(qname, bytes) else qname
    return record if qname.rstrip('.') == name else None
message = sys.stdin.buffer.read()
sys.exit(0 if dkim.verify(message, dnsfunc=dnsfunc) else 1)
"#;
    let run = |message: &[u8], signer: &Signer| -> bool {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .args(["-c", SCRIPT, &signer.dns_name(), &signer.dns_record()])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child.stdin.take().unwrap().write_all(message).unwrap();
        let status = child.wait().unwrap();
        assert!(status.code().is_some(), "dkimpy crashed");
        status.success()
    };
    let ed25519 = dkim::generate_ed25519().unwrap();
    for (pem, selector) in [
        (&rsa_key().private_key_pem, "veto2025"),
        (&ed25519.private_key_pem, "ed2025"),
    ] {
        let signer = Signer::from_pem(pem, "shop.example.org", selector).unwrap();
        let signed = signed_copy(&signer);
        assert!(
            run(&signed, &signer),
            "dkimpy rejects a good {selector} signature"
        );
        let needle = b"List-Unsubscribe: <https://veto.example.org/u/abc";
        let at = signed
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let mut tampered = signed.clone();
        tampered[at + needle.len() - 1] = b'x';
        assert!(
            !run(&tampered, &signer),
            "dkimpy accepts a tampered {selector} copy"
        );
    }
}

// ---------------------------------------------------------------- properties

/// Checks that hold for every copy written.
fn assert_valid_copy(out: &[u8]) {
    assert_wire_form(out);
    let message = MessageParser::new().parse(out).expect("copy parses");
    assert_eq!(header_values(&message, "List-Unsubscribe").len(), 1);
    assert_eq!(header_values(&message, "List-Unsubscribe-Post").len(), 1);
}

fn mime_like() -> impl Strategy<Value = Vec<u8>> {
    let header = prop::sample::select(vec![
        "From: a@example.org\n",
        "To: b@example.org\n",
        "Subject: =?utf-8?q?caf=C3=A9?=\n",
        "List-Unsubscribe: <https://x.example/u>\n",
        "Veto-Topic: news\n",
        "MIME-Version: 1.0\n",
        "Content-Type: multipart/mixed; boundary=b\n",
        "Content-Type: multipart/alternative; boundary=b\n",
        "Content-Type: text/plain; charset=iso-8859-1\n",
        "Content-Type: text/html; charset=utf-16\n",
        "Content-Type: text/plain; charset=x-unknown\n",
        "Content-Transfer-Encoding: base64\n",
        "Content-Transfer-Encoding: quoted-printable\n",
        "Content-Transfer-Encoding: x-uue\n",
        "Content-Disposition: attachment; filename=a.txt\n",
        " folded continuation\n",
        "no colon\n",
    ]);
    let piece = prop_oneof![
        Just(b"--b\n".to_vec()),
        Just(b"--b--\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"</body>".to_vec()),
        Just(b"=C3=\n".to_vec()),
        prop::sample::select(vec![
            "Content-Type: text/html\n\n",
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n",
            "Content-Type: multipart/related; boundary=c\n\n--c\n",
            "Content-Type: message/rfc822\n\nFrom: x@y\n\nhi\n",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
        "[ -~]{0,1200}".prop_map(String::into_bytes),
    ];
    (
        prop::collection::vec(header, 0..8),
        prop::collection::vec(piece, 0..12),
    )
        .prop_map(|(headers, pieces)| {
            let mut message: Vec<u8> = headers.concat().into_bytes();
            message.push(b'\n');
            for piece in pieces {
                message.extend(piece);
            }
            message
        })
}

proptest! {
    #[test]
    fn personal_copy_never_panics_on_arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        for footer in [None, Some(FOOTER)] {
            if let Ok(out) = rewrite::personal_copy(&input, &personalisation(footer)) {
                assert_valid_copy(&out);
            }
        }
    }

    #[test]
    fn personal_copy_never_panics_on_mime_like_input(input in mime_like()) {
        for footer in [None, Some(FOOTER), Some(FRENCH_FOOTER)] {
            if let Ok(out) = rewrite::personal_copy(&input, &personalisation(footer)) {
                assert_valid_copy(&out);
            }
        }
    }
}

fn fixture_names() -> Vec<&'static str> {
    vec![
        "plain.eml",
        "alternative-qp-base64.eml",
        "mixed-attachment.eml",
        "related-alternative.eml",
        "latin1.eml",
        "existing-list-headers.eml",
        "no-message-id.eml",
        "forwarded-rfc822.eml",
    ]
}

/// A fixture with a few bytes changed, cut or repeated.
fn mutated_fixture() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(fixture_names()),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6),
    )
        .prop_map(|(name, edits)| {
            let mut data = fixture(name);
            for (at, kind, byte) in edits {
                if data.is_empty() {
                    break;
                }
                let i = at.index(data.len());
                match kind {
                    0 => data[i] = byte,
                    1 => data.truncate(i),
                    2 => {
                        data.remove(i);
                    }
                    _ => {
                        let piece = data[i..].iter().take(40).copied().collect::<Vec<_>>();
                        data.splice(i..i, piece);
                    }
                }
            }
            data
        })
}

proptest! {
    #[test]
    fn personal_copy_never_panics_on_mutated_fixtures(input in mutated_fixture()) {
        for footer in [None, Some(FOOTER), Some(FRENCH_FOOTER)] {
            if let Ok(out) = rewrite::personal_copy(&input, &personalisation(footer)) {
                assert_valid_copy(&out);
            }
        }
    }
}
