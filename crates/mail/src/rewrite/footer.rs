//! The visible footer: why the person gets the message, a one-step
//! unsubscribe link, the preference centre and the sender's postal address
//! (DESIGN.md, "Messages that carry choice"; CAN-SPAM §7704(a)(5)).

use super::{Footer, Personalisation};

/// The plain-text footer, in CRLF lines, behind a signature separator
/// ("-- ", RFC 3676 §4.3) so that mail clients can fold it away in replies.
pub fn text(footer: &Footer<'_>, p: &Personalisation<'_>) -> String {
    format!(
        "\r\n-- \r\n{why}\r\n{unsubscribe}: {unsubscribe_url}\r\n{preferences}: {preferences_url}\r\n{sender}\r\n",
        why = one_line(footer.why),
        unsubscribe = one_line(footer.unsubscribe_text),
        unsubscribe_url = p.unsubscribe_url,
        preferences = one_line(footer.preferences_text),
        preferences_url = p.preferences_url,
        sender = sender_line(footer),
    )
}

/// How text outside US-ASCII is written into an HTML footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HtmlText {
    /// As UTF-8: the part is UTF-8.
    Utf8,
    /// As numeric character references, so the footer is pure ASCII and
    /// fits any ASCII-compatible charset the part is written in.
    AsciiOnly,
}

/// A small `<div>` with escaped text and links.
pub fn html(footer: &Footer<'_>, p: &Personalisation<'_>, mode: HtmlText) -> String {
    const P: &str = "<p style=\"margin:0 0 6px 0\">";
    format!(
        "\r\n<div class=\"veto-footer\" style=\"margin-top:24px;padding-top:12px;border-top:1px solid #cccccc;\
         font-family:Arial,Helvetica,sans-serif;font-size:12px;line-height:1.5;color:#555555\">\r\n\
         {P}{why}</p>\r\n\
         {P}<a href=\"{unsubscribe_url}\" style=\"color:#555555\">{unsubscribe}</a> &#183; \
         <a href=\"{preferences_url}\" style=\"color:#555555\">{preferences}</a></p>\r\n\
         {P}{sender}</p>\r\n</div>\r\n",
        why = escape(&one_line(footer.why), mode),
        unsubscribe_url = escape(p.unsubscribe_url, mode),
        unsubscribe = escape(&one_line(footer.unsubscribe_text), mode),
        preferences_url = escape(p.preferences_url, mode),
        preferences = escape(&one_line(footer.preferences_text), mode),
        sender = escape(&sender_line(footer), mode),
    )
}

/// "Organisation, street, town": a postal address given on several lines
/// is joined with commas.
fn sender_line(footer: &Footer<'_>) -> String {
    let address: Vec<&str> = footer
        .postal_address
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    format!("{}, {}", one_line(footer.organisation), address.join(", "))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn escape(text: &str, mode: HtmlText) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if !c.is_ascii() && mode == HtmlText::AsciiOnly => {
                out.push_str(&format!("&#x{:X};", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Footer<'static>, Personalisation<'static>) {
        (
            Footer {
                why: "You get this because you signed up for <Product> news.",
                unsubscribe_text: "Unsubscribe",
                preferences_text: "Choose what you get",
                postal_address: "1 Rue de l'Église\n75001 Paris",
                organisation: "Example & Co",
            },
            Personalisation {
                unsubscribe_url: "https://veto.example.org/u/abc?x=1&y=2",
                unsubscribe_mailto: "unsubscribe+abc@veto.example.org",
                preferences_url: "https://veto.example.org/p/abc",
                list_id: "news.example.org",
                feedback_id: "c1:news:bulk:exampleorg",
                message_id_domain: "veto.example.org",
                footer: None,
            },
        )
    }

    #[test]
    fn text_footer_has_links_and_address_behind_a_separator() {
        let (f, p) = sample();
        let text = text(&f, &p);
        assert!(text.starts_with("\r\n-- \r\n"));
        assert!(text.contains("Unsubscribe: https://veto.example.org/u/abc?x=1&y=2\r\n"));
        assert!(text.contains("Example & Co, 1 Rue de l'Église, 75001 Paris\r\n"));
    }

    #[test]
    fn html_footer_escapes_text_and_links() {
        let (f, p) = sample();
        let html = html(&f, &p, HtmlText::AsciiOnly);
        assert!(html.is_ascii());
        assert!(html.contains("for &lt;Product&gt; news."));
        assert!(html.contains("href=\"https://veto.example.org/u/abc?x=1&amp;y=2\""));
        assert!(html.contains("l&#39;&#xC9;glise"));
        assert!(html_utf8_keeps_letters(&f, &p));
    }

    fn html_utf8_keeps_letters(f: &Footer<'_>, p: &Personalisation<'_>) -> bool {
        html(f, p, HtmlText::Utf8).contains("l&#39;Église")
    }
}
