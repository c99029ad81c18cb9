//! Campaign and service-message templates (minijinja): a subject, a text
//! body and optionally an HTML body, rendered per recipient with the
//! contact's name, address and attributes. HTML is autoescaped (minijinja
//! escapes templates whose names end in `.html`); a subject that comes out
//! with a line break is an error, never an injected header.

use std::collections::BTreeMap;

use data_encoding::HEXLOWER;
use minijinja::{Environment, context};
use sha2::{Digest, Sha256};

/// Rendered output larger than this is refused (the gateway's message limit).
pub const MAX_RENDERED: usize = veto_mail::rewrite::MAX_MESSAGE_SIZE;

/// Steps a template may take per render: a runaway loop is an error, not a hang.
const FUEL: u64 = 200_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// A template does not compile; `part` is `subject`, `text` or `html`.
    #[error("the {part} template: {message}")]
    Syntax { part: &'static str, message: String },
    #[error("the {part} template failed for this recipient: {message}")]
    Render { part: &'static str, message: String },
    #[error(
        "the subject came out with a line break (from the recipient's data?); a header value may not contain CR or LF"
    )]
    HeaderInjection,
    #[error("the {part} came out larger than {MAX_RENDERED} bytes")]
    TooLarge { part: &'static str },
    #[error("the {0} is empty")]
    Empty(&'static str),
}

/// What the templates may use about a recipient.
#[derive(Debug, Clone)]
pub struct Recipient<'a> {
    pub email: &'a str,
    pub name: Option<&'a str>,
    pub attributes: &'a BTreeMap<String, String>,
}

/// One recipient's subject and bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// Compiled templates, ready to render for many recipients.
pub struct Templates {
    env: Environment<'static>,
    has_html: bool,
    version: String,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Templates {
    pub fn compile(
        subject: &str,
        text: &str,
        html: Option<&str>,
    ) -> Result<Templates, TemplateError> {
        if subject.trim().is_empty() {
            return Err(TemplateError::Empty("subject"));
        }
        if text.trim().is_empty() {
            return Err(TemplateError::Empty("text body"));
        }
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        let syntax = |part| {
            move |e: minijinja::Error| TemplateError::Syntax {
                part,
                message: describe(&e),
            }
        };
        env.add_template_owned("subject.txt", subject.to_owned())
            .map_err(syntax("subject"))?;
        env.add_template_owned("body.txt", text.to_owned())
            .map_err(syntax("text"))?;
        if let Some(html) = html {
            // The name ends in `.html`: minijinja escapes what is put in.
            env.add_template_owned("body.html", html.to_owned())
                .map_err(syntax("html"))?;
        }
        Ok(Templates {
            env,
            has_html: html.is_some(),
            version: version(subject, text, html),
        })
    }

    /// SHA-256 over the three templates (receipts name it).
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn render(&self, r: &Recipient<'_>) -> Result<Rendered, TemplateError> {
        let ctx = context! {
            email => r.email,
            name => r.name.unwrap_or(""),
            attributes => r.attributes,
        };
        let render = |name: &str, part: &'static str| -> Result<String, TemplateError> {
            let out = self
                .env
                .get_template(name)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| TemplateError::Render {
                    part,
                    message: describe(&e),
                })?;
            if out.len() > MAX_RENDERED {
                return Err(TemplateError::TooLarge { part });
            }
            Ok(out)
        };
        let subject = render("subject.txt", "subject")?;
        if subject.contains(['\r', '\n']) {
            return Err(TemplateError::HeaderInjection);
        }
        let subject = subject.trim().to_owned();
        if subject.is_empty() {
            return Err(TemplateError::Empty("subject"));
        }
        Ok(Rendered {
            subject,
            text: render("body.txt", "text")?,
            html: if self.has_html {
                Some(render("body.html", "html")?)
            } else {
                None
            },
        })
    }
}

/// The templates' version without compiling them.
pub fn version(subject: &str, text: &str, html: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [Some(subject), Some(text), html] {
        match part {
            Some(p) => {
                h.update((p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            None => h.update(u64::MAX.to_be_bytes()),
        }
    }
    HEXLOWER.encode(&h.finalize())[..16].to_owned()
}

/// The error and, where minijinja knows it, the line.
fn describe(e: &minijinja::Error) -> String {
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    match e.line() {
        Some(line) => format!("line {line}: {}{detail}", e.kind()),
        None => format!("{}{detail}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient<'a>(name: &'a str, attrs: &'a BTreeMap<String, String>) -> Recipient<'a> {
        Recipient {
            email: "ann@example.com",
            name: Some(name),
            attributes: attrs,
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let t = Templates::compile(
            "Hello {{ name }}",
            "Hi {{ name }}",
            Some("<p>Hi {{ name }}</p>"),
        )
        .unwrap();
        let attrs = BTreeMap::new();
        let r = t.render(&recipient("<b>Ann</b> & co", &attrs)).unwrap();
        assert_eq!(r.text, "Hi <b>Ann</b> & co");
        assert_eq!(
            r.html.as_deref(),
            Some("<p>Hi &lt;b&gt;Ann&lt;&#x2f;b&gt; &amp; co</p>")
        );
    }

    #[test]
    fn a_line_break_in_the_subject_from_data_is_refused() {
        let t = Templates::compile("Hello {{ name }}", "Hi", None).unwrap();
        let attrs = BTreeMap::new();
        for evil in ["Ann\r\nBcc: all@example.com", "Ann\nBcc: x", "Ann\rX"] {
            assert_eq!(
                t.render(&recipient(evil, &attrs)),
                Err(TemplateError::HeaderInjection),
                "{evil:?}"
            );
        }
    }

    #[test]
    fn attributes_and_syntax_errors() {
        let mut attrs = BTreeMap::new();
        attrs.insert("city".to_owned(), "Cardiff".to_owned());
        let t = Templates::compile("News for {{ attributes.city }}", "x", None).unwrap();
        assert_eq!(
            t.render(&recipient("Ann", &attrs)).unwrap().subject,
            "News for Cardiff"
        );
        let e = Templates::compile("ok", "line one\n{{ name ", None).unwrap_err();
        assert!(
            matches!(&e, TemplateError::Syntax { part: "text", message } if message.contains("line 2")),
            "{e:?}"
        );
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let t = Templates::compile(
            "s",
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            None,
        )
        .unwrap();
        let attrs = BTreeMap::new();
        assert!(matches!(
            t.render(&recipient("Ann", &attrs)),
            Err(TemplateError::Render { part: "text", .. })
        ));
    }

    #[test]
    fn the_version_changes_with_any_template() {
        let a = version("s", "t", None);
        assert_ne!(a, version("s", "t", Some("")));
        assert_ne!(a, version("s", "u", None));
        assert_eq!(a, version("s", "t", None));
    }
}
