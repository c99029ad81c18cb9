//! Checks on the values veto writes into a message. They come from veto's
//! own configuration and tokens, but a CR or LF in one of them would let it
//! write headers of its own, so each is checked before use.

use super::{Footer, Personalisation, RewriteError, header::encode_phrase};

/// Longest URI or address accepted, so that every header line stays short.
const MAX_URI: usize = 512;

fn invalid(field: &'static str, reason: impl Into<String>) -> RewriteError {
    RewriteError::InvalidPersonalisation {
        field,
        reason: reason.into(),
    }
}

/// The header fields veto adds, rendered and checked.
#[derive(Debug)]
pub struct ListHeaders {
    pub list_unsubscribe: String,
    pub list_id: String,
}

pub fn list_headers(p: &Personalisation<'_>) -> Result<ListHeaders, RewriteError> {
    https_uri("unsubscribe_url", p.unsubscribe_url)?;
    https_uri("preferences_url", p.preferences_url)?;
    let mailto = match p.unsubscribe_mailto.trim() {
        "" => None,
        address => {
            let address = address
                .strip_prefix("mailto:")
                .or_else(|| address.strip_prefix("MAILTO:"))
                .unwrap_or(address);
            addr_spec("unsubscribe_mailto", address)?;
            Some(address)
        }
    };
    // RFC 2369 §2: a list of <URI> in order of preference. RFC 8058 §3.1
    // needs the HTTPS one; it goes first so that it is preferred.
    let mut list_unsubscribe = format!("<{}>", p.unsubscribe_url);
    if let Some(address) = mailto {
        let mailto = format!("<mailto:{address}>");
        if "List-Unsubscribe: ".len() + list_unsubscribe.len() + 2 + mailto.len() > 78 {
            list_unsubscribe.push_str(",\r\n ");
        } else {
            list_unsubscribe.push_str(", ");
        }
        list_unsubscribe.push_str(&mailto);
    }
    Ok(ListHeaders {
        list_unsubscribe,
        list_id: list_id(p.list_id)?,
    })
}

pub fn footer(footer: &Footer<'_>) -> Result<(), RewriteError> {
    for (field, value) in [
        ("footer.why", footer.why),
        ("footer.unsubscribe_text", footer.unsubscribe_text),
        ("footer.preferences_text", footer.preferences_text),
        ("footer.postal_address", footer.postal_address),
        ("footer.organisation", footer.organisation),
    ] {
        if value.trim().is_empty() {
            return Err(invalid(field, "is empty"));
        }
        if value.len() > 2000 {
            return Err(invalid(field, "is longer than 2000 bytes"));
        }
        if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(invalid(field, "holds a control character"));
        }
    }
    Ok(())
}

/// RFC 8058 §3.1: the one-click URI must be HTTPS. Plain `http` is let
/// through for loopback hosts only, so that a local demo works.
fn https_uri(field: &'static str, uri: &str) -> Result<(), RewriteError> {
    if uri.len() > MAX_URI {
        return Err(invalid(field, format!("is longer than {MAX_URI} bytes")));
    }
    // RFC 3986 characters only: no white space, no <, >, ", {, }, |, \, ^, `.
    if let Some(c) = uri
        .chars()
        .find(|&c| !c.is_ascii_graphic() || "<>\"{}|\\^`".contains(c))
    {
        return Err(invalid(
            field,
            format!("holds {c:?}, which a URI may not contain"),
        ));
    }
    let lower = uri.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("https://") {
        rest
    } else if let Some(rest) = lower.strip_prefix("http://") {
        let host = authority_host(rest);
        if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            return Err(invalid(
                field,
                "must be an https URI (RFC 8058 §3.1); http is accepted for loopback hosts only",
            ));
        }
        rest
    } else {
        return Err(invalid(field, "must be an https URI (RFC 8058 §3.1)"));
    };
    if authority_host(rest).is_empty() {
        return Err(invalid(field, "has no host"));
    }
    Ok(())
}

fn authority_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.starts_with('[') {
        return host_port
            .find(']')
            .map_or(host_port, |end| &host_port[..=end]);
    }
    host_port.split(':').next().unwrap_or("")
}

/// `local@domain` with a dot-atom on both sides (RFC 5322 §3.4.1).
fn addr_spec(field: &'static str, address: &str) -> Result<(), RewriteError> {
    if address.len() > MAX_URI {
        return Err(invalid(field, format!("is longer than {MAX_URI} bytes")));
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(invalid(field, "is not an address (no @)"));
    };
    if !is_dot_atom(local) {
        return Err(invalid(
            field,
            "has a local part that is not a plain dot-atom",
        ));
    }
    if !is_domain(domain) {
        return Err(invalid(field, "has an invalid domain"));
    }
    Ok(())
}

/// RFC 2919 §2: `List-Id: [phrase] <list-label.namespace>`. Accepts
/// `news.example.org` or `Product news <news.example.org>` (the phrase may
/// be quoted).
fn list_id(value: &str) -> Result<String, RewriteError> {
    const FIELD: &str = "list_id";
    let value = value.trim();
    let (phrase, id) = match value.find('<') {
        Some(open) => {
            let Some(id) = value[open + 1..].strip_suffix('>') else {
                return Err(invalid(FIELD, "has a '<' without a final '>'"));
            };
            let phrase = value[..open].trim();
            let phrase = phrase
                .strip_prefix('"')
                .and_then(|p| p.strip_suffix('"'))
                .map_or(phrase.to_string(), |p| {
                    p.replace("\\\"", "\"").replace("\\\\", "\\")
                });
            (Some(phrase), id.trim())
        }
        None => (None, value),
    };
    if !(is_dot_atom(id) && id.contains('.') && id.len() <= 255) {
        return Err(invalid(
            FIELD,
            "must be list-label.namespace, a dot-atom of at most 255 characters (RFC 2919 §2)",
        ));
    }
    match phrase {
        Some(phrase) if !phrase.is_empty() => {
            if phrase.chars().any(char::is_control) || phrase.len() > 200 {
                return Err(invalid(
                    FIELD,
                    "has a name with control characters or over 200 bytes",
                ));
            }
            Ok(format!("{} <{id}>", encode_phrase(&phrase)))
        }
        _ => Ok(format!("<{id}>")),
    }
}

/// Gmail's Feedback-ID: `a:b:c:SenderId`, visible ASCII without spaces.
pub fn feedback_id(value: &str) -> Result<String, RewriteError> {
    const FIELD: &str = "feedback_id";
    if value.is_empty() || value.len() > 200 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            FIELD,
            "must be 1 to 200 visible US-ASCII characters without spaces",
        ));
    }
    if value.split(':').next_back().is_none_or(str::is_empty) {
        return Err(invalid(
            FIELD,
            "must end in a sender id (campaign:topic:stream:senderid)",
        ));
    }
    Ok(value.to_string())
}

pub fn message_id_domain(domain: &str) -> Result<(), RewriteError> {
    if is_domain(domain) {
        Ok(())
    } else {
        Err(invalid("message_id_domain", "is not a domain name"))
    }
}

/// RFC 5322 §3.2.3 atext plus dots, no empty atoms.
fn is_dot_atom(value: &str) -> bool {
    !value.is_empty()
        && value.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
        })
}

fn is_domain(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn personalisation() -> Personalisation<'static> {
        Personalisation {
            unsubscribe_url: "https://veto.example.org/u/abc",
            unsubscribe_mailto: "unsubscribe+abc@veto.example.org",
            preferences_url: "https://veto.example.org/p/abc",
            list_id: "news.example.org",
            feedback_id: "c1:news:bulk:exampleorg",
            message_id_domain: "veto.example.org",
            footer: None,
        }
    }

    #[test]
    fn renders_the_list_headers() {
        let headers = list_headers(&personalisation()).unwrap();
        assert_eq!(
            headers.list_unsubscribe,
            "<https://veto.example.org/u/abc>,\r\n <mailto:unsubscribe+abc@veto.example.org>"
        );
        assert_eq!(headers.list_id, "<news.example.org>");
        assert_eq!(
            feedback_id("c1:news:bulk:exampleorg").unwrap(),
            "c1:news:bulk:exampleorg"
        );
    }

    #[test]
    fn list_id_may_carry_the_topic_name() {
        assert_eq!(
            list_id("\"Product news\" <news.example.org>").unwrap(),
            "\"Product news\" <news.example.org>"
        );
        assert_eq!(
            list_id("Nouveautés <news.example.org>").unwrap(),
            "=?utf-8?b?Tm91dmVhdXTDqXM=?= <news.example.org>"
        );
        assert!(list_id("news").is_err());
        assert!(list_id("news.example.org>\r\nBcc: x").is_err());
    }

    #[test]
    fn refuses_values_that_would_inject_headers_or_break_rfc_8058() {
        type Change = fn(&mut Personalisation<'static>);
        let cases: [(&str, Change); 6] = [
            ("unsubscribe_url", |p| {
                p.unsubscribe_url = "http://veto.example.org/u/abc"
            }),
            ("unsubscribe_url", |p| {
                p.unsubscribe_url = "https://veto.example.org/u/a\r\nBcc: x"
            }),
            ("unsubscribe_url", |p| p.unsubscribe_url = "https:///u/abc"),
            ("unsubscribe_mailto", |p| {
                p.unsubscribe_mailto = "a b@example.org"
            }),
            ("feedback_id", |p| p.feedback_id = "a:b c:d"),
            ("feedback_id", |p| p.feedback_id = "a:b:c:"),
        ];
        for (field, change) in cases {
            let mut p = personalisation();
            change(&mut p);
            let checked = list_headers(&p).and_then(|_| feedback_id(p.feedback_id));
            match checked {
                Err(RewriteError::InvalidPersonalisation { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn loopback_http_is_allowed_for_demos_and_mailto_is_optional() {
        let mut p = personalisation();
        p.unsubscribe_url = "http://localhost:8080/u/abc";
        p.unsubscribe_mailto = "";
        assert_eq!(
            list_headers(&p).unwrap().list_unsubscribe,
            "<http://localhost:8080/u/abc>"
        );
    }
}
