//! Each recipient's own copy of a message: their unsubscribe and
//! preference links, the list headers of RFC 2369, 2919 and 8058, the
//! footer, a VERP return path and the DKIM signatures. The gateway, the
//! campaign sender and the service-message API all make copies here, so a
//! message carries the same choice whichever way it leaves veto.

use std::sync::Arc;

use veto_core::{ContactId, Topic};
use veto_mail::dkim::{DkimError, Signer};
use veto_mail::rewrite::{Footer, Original, Personalisation, RewriteError};
use veto_mail::{Claims, Purpose, TokenKeys, TokenScope};

/// Where the links and list headers of each copy point.
#[derive(Debug, Clone)]
pub struct Links {
    /// Where people reach veto, e.g. `https://veto.example.org`.
    pub public_url: String,
    /// veto's own mail domain: `unsubscribe+TOKEN@` it, and Message-IDs.
    pub mail_domain: String,
    /// `List-Id: <topic.list_domain>` (RFC 2919).
    pub list_domain: String,
    /// The last field of `Feedback-ID`.
    pub feedback_sender: String,
}

/// The organisation's words in the footer.
#[derive(Debug, Clone)]
pub struct FooterText {
    pub organisation: String,
    pub postal_address: String,
    pub unsubscribe_text: String,
    pub preferences_text: String,
}

/// What a copy is: marketing on a topic (list headers and footer) or a
/// declared service message (neither: a bill must not offer to unsubscribe
/// from bills).
#[derive(Debug, Clone, Copy)]
pub enum CopyClass<'a> {
    Marketing(&'a Topic),
    Service(&'a str),
}

/// One recipient's copy and its VERP return path.
#[derive(Debug)]
pub struct PersonalCopy {
    pub bytes: Vec<u8>,
    pub return_path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("message refused: {0}")]
    Rewrite(#[from] RewriteError),
    #[error("DKIM: {0}")]
    Dkim(#[from] DkimError),
    #[error("no token key: {0}")]
    Token(String),
}

/// Makes personal copies with one set of links, footer and signatures.
#[derive(Debug, Clone)]
pub struct CopyMaker {
    pub links: Links,
    pub footer: FooterText,
    /// DKIM signatures put on every copy, in this order (e.g. RSA, then
    /// Ed25519). Empty: copies go unsigned.
    pub dkim: Vec<Arc<Signer>>,
}

/// Which message a copy belongs to, for `Feedback-ID`
/// (`<campaign>:<topic>:<stream>:<sender>`, Gmail's feedback loop).
#[derive(Debug, Clone, Copy)]
pub struct Stream<'a> {
    /// The campaign (or, for the gateway, a short hash of the message).
    pub campaign: &'a str,
    /// `gateway`, `campaign` or `api`.
    pub name: &'a str,
}

impl CopyMaker {
    pub fn new(links: Links, footer: FooterText) -> CopyMaker {
        CopyMaker {
            links,
            footer,
            dkim: Vec::new(),
        }
    }

    /// `contact`'s copy of `original`, signed.
    pub fn personal_copy(
        &self,
        original: &Original,
        class: CopyClass<'_>,
        keys: &TokenKeys,
        contact: ContactId,
        stream: Stream<'_>,
    ) -> Result<PersonalCopy, CopyError> {
        let links = &self.links;
        let contact = u64::try_from(contact.0)
            .map_err(|_| CopyError::Token(format!("contact id {} out of range", contact.0)))?;
        let mint = |scope, purpose| {
            keys.mint(
                &Claims {
                    contact,
                    scope,
                    message: None,
                },
                purpose,
            )
            .map_err(|e| CopyError::Token(e.to_string()))
        };
        // VERP (RFC 3464 bounces come back to the return path): the token
        // names the contact, so a bounce is attributed without parsing.
        let bounce = mint(TokenScope::AllMarketing, Purpose::Bounce)?;
        let return_path = format!("bounces+{bounce}@{}", links.mail_domain);
        let topic = match class {
            CopyClass::Marketing(topic) => topic,
            CopyClass::Service(kind) => {
                let feedback_id = format!(
                    "{}:service-{kind}:{}:{}",
                    stream.campaign, stream.name, links.feedback_sender
                );
                let p = Personalisation {
                    unsubscribe_url: "",
                    unsubscribe_mailto: "",
                    preferences_url: "",
                    list_id: "",
                    feedback_id: &feedback_id,
                    message_id_domain: &links.mail_domain,
                    footer: None,
                };
                return self.signed(original.personal_copy(&p)?, return_path);
            }
        };
        let unsubscribe = mint(TokenScope::Topic(topic.id.0), Purpose::Unsubscribe)?;
        let preferences = mint(TokenScope::AllMarketing, Purpose::Preferences)?;
        let base = links.public_url.trim_end_matches('/');
        let unsubscribe_url = format!("{base}/u/{unsubscribe}");
        let preferences_url = format!("{base}/p/{preferences}");
        let mailto = format!("unsubscribe+{unsubscribe}@{}", links.mail_domain);
        let name = topic.name.replace('\\', "\\\\").replace('"', "\\\"");
        let list_id = format!("\"{name}\" <{}.{}>", topic.key.as_str(), links.list_domain);
        let feedback_id = format!(
            "{}:{}:{}:{}",
            stream.campaign,
            topic.key.as_str(),
            stream.name,
            links.feedback_sender
        );
        let why = format!(
            "You get this because you agreed to receive {} from {}.",
            topic.name, self.footer.organisation
        );
        let p = Personalisation {
            unsubscribe_url: &unsubscribe_url,
            unsubscribe_mailto: &mailto,
            preferences_url: &preferences_url,
            list_id: &list_id,
            feedback_id: &feedback_id,
            message_id_domain: &links.mail_domain,
            footer: Some(Footer {
                why: &why,
                unsubscribe_text: &self.footer.unsubscribe_text,
                preferences_text: &self.footer.preferences_text,
                postal_address: &self.footer.postal_address,
                organisation: &self.footer.organisation,
            }),
        };
        self.signed(original.personal_copy(&p)?, return_path)
    }

    /// The copy with the configured DKIM signatures on it.
    fn signed(&self, mut bytes: Vec<u8>, return_path: String) -> Result<PersonalCopy, CopyError> {
        for signer in &self.dkim {
            bytes = signer.sign(&bytes)?;
        }
        Ok(PersonalCopy { bytes, return_path })
    }
}
