//! Classification: is this transaction marketing on a topic, or a declared
//! service message? Known at RCPT from the sender's default; `Veto-Topic`
//! and `Veto-Class` may set it where there is none, or confirm it — never
//! change it.

use std::sync::Arc;

use veto_core::{Role, Topic};
use veto_store::GuardClass;

use super::{Sender, Session, topic_key};
use crate::Fail;

/// What a transaction's mail is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Class {
    /// Shared with the topic cache: a transaction's class is looked at for
    /// every recipient, and not copied each time.
    Marketing(Arc<Topic>),
    /// A service type declared in the configuration.
    Service(String),
}

impl Class {
    pub(super) fn guard_class(&self) -> GuardClass<'_> {
        match self {
            Class::Marketing(topic) => GuardClass::Marketing(topic.as_ref()),
            Class::Service(kind) => GuardClass::Service(kind),
        }
    }

    /// How replies and errors name it: `topic news`, `service type billing`.
    pub(super) fn describe(&self) -> String {
        match self {
            Class::Marketing(topic) => format!("topic {}", topic.key.as_str()),
            Class::Service(kind) => format!("service type {kind}"),
        }
    }

    /// The words in a refusal: "has not agreed to receive <this>".
    pub(super) fn what(&self) -> String {
        match self {
            Class::Marketing(topic) => topic.key.as_str().to_owned(),
            Class::Service(kind) => format!("{kind} service messages"),
        }
    }
}

/// A classification named in a header or a default, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Named {
    Topic(String),
    Service(String),
}

impl Named {
    fn header(&self) -> String {
        match self {
            Named::Topic(key) => format!("Veto-Topic: {key}"),
            Named::Service(kind) => format!("Veto-Class: service; type={kind}"),
        }
    }

    fn same_as(&self, class: &Class) -> bool {
        match (self, class) {
            (Named::Topic(key), Class::Marketing(topic)) => topic.key.as_str() == key,
            (Named::Service(kind), Class::Service(known)) => kind == known,
            _ => false,
        }
    }
}

/// The `Veto-Topic` or `Veto-Class` field `name` with `value`, if it is one.
pub(super) fn named_by_header(name: &str, value: &str) -> Option<Result<Named, Fail>> {
    if name.eq_ignore_ascii_case("veto-topic") {
        let key = value.trim();
        return Some(if key.is_empty() {
            Err(Fail::MalformedClassHeader("Veto-Topic".into()))
        } else {
            Ok(Named::Topic(key.to_owned()))
        });
    }
    if name.eq_ignore_ascii_case("veto-class") {
        return Some(parse_veto_class(value));
    }
    None
}

/// `Veto-Class: marketing; topic=<key>` or `Veto-Class: service; type=<type>`.
fn parse_veto_class(value: &str) -> Result<Named, Fail> {
    let malformed = || Fail::MalformedClassHeader("Veto-Class".into());
    let mut parts = value.split(';');
    let kind = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let param = |wanted: &str| {
        value
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
    };
    match kind.as_str() {
        "marketing" => param("topic").map(Named::Topic).ok_or_else(malformed),
        "service" => param("type").map(Named::Service).ok_or_else(malformed),
        _ => Err(malformed()),
    }
}

impl<S> Session<S> {
    /// The sender's default classification, resolved once per transaction.
    pub(super) async fn default_class(&mut self, sender: &Sender) -> Result<Option<Class>, Fail> {
        if let Some(class) = &self.tx.class {
            return Ok(Some(class.clone()));
        }
        let named = match (&sender.default_topic, &sender.default_service) {
            (Some(key), _) => Named::Topic(key.clone()),
            (None, Some(kind)) => Named::Service(kind.clone()),
            (None, None) => return Ok(None),
        };
        let class = self.resolve(sender, &named).await?;
        self.tx.class = Some(class.clone());
        Ok(Some(class))
    }

    /// The class of the message at the end of DATA: the RCPT-time one, or
    /// the one its headers name; they must agree.
    pub(super) async fn final_class(
        &mut self,
        sender: &Sender,
        declared: Vec<Named>,
    ) -> Result<Class, Fail> {
        if let Some(other) = declared.iter().find(|n| **n != declared[0]) {
            return Err(Fail::Contradiction {
                header: other.header(),
                known: declared[0].header(),
            });
        }
        let known = self.default_class(sender).await?;
        match (known, declared.first()) {
            (Some(class), Some(named)) if !named.same_as(&class) => Err(Fail::Contradiction {
                header: named.header(),
                known: format!("{}, the default of {}", class.describe(), sender.actor),
            }),
            (Some(class), _) => Ok(class),
            (None, Some(named)) => self.resolve(sender, named).await,
            (None, None) => Err(Fail::NoClassification),
        }
    }

    /// A named class, if it exists and the sender may send it.
    async fn resolve(&self, sender: &Sender, named: &Named) -> Result<Class, Fail> {
        match named {
            Named::Topic(key) => {
                may_send(sender, Role::Marketer)?;
                let topic = match topic_key(key) {
                    Some(parsed) => {
                        let store = self.gateway.guard.store();
                        self.gateway.cache.topic(store, &parsed).await?
                    }
                    None => None,
                };
                topic
                    .map(Class::Marketing)
                    .ok_or_else(|| Fail::UnknownTopic(key.clone()))
            }
            Named::Service(kind) => {
                may_send(sender, Role::ServiceSender)?;
                if !self.gateway.config.service_types.contains(kind) {
                    return Err(Fail::UnknownServiceType(kind.clone()));
                }
                Ok(Class::Service(kind.clone()))
            }
        }
    }
}

/// Marketing needs a marketer's key, service mail a service sender's; an
/// admin's key may send either, and so may a trusted network (configured
/// by an administrator).
fn may_send(sender: &Sender, needed: Role) -> Result<(), Fail> {
    match sender.role {
        None | Some(Role::Admin) => Ok(()),
        Some(role) if role == needed => Ok(()),
        Some(role) => Err(Fail::RoleMayNotSend {
            role: role.as_str().to_owned(),
            what: match needed {
                Role::ServiceSender => "service mail",
                _ => "marketing",
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veto_class_headers_parse() {
        let named = |v: &str| parse_veto_class(v).ok();
        assert_eq!(
            named("service; type=billing"),
            Some(Named::Service("billing".into()))
        );
        assert_eq!(
            named(" Marketing ; topic=\"news\""),
            Some(Named::Topic("news".into()))
        );
        assert_eq!(named("service"), None);
        assert_eq!(named("service; topic=news"), None);
        assert_eq!(named("transactional; type=x"), None);
    }
}
