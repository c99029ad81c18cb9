//! Small closed sets: channels, jurisdictions, subscriber types.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what}; expected one of: {expected}")]
pub struct ParseEnumError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let t = s.trim();
                $(if t.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                Err(ParseEnumError {
                    what: $what,
                    value: s.to_owned(),
                    expected: concat!($($text, " "),+),
                })
            }
        }
    };
}

named_enum!(
    /// How a message reaches a person. Each channel's consent is separate.
    Channel, "channel", { Email => "email", Sms => "sms", Phone => "phone", Post => "post" }
);

named_enum!(
    /// A rule pack. A contact may be under several; the strictest wins.
    Jurisdiction, "jurisdiction", { Uk => "UK", Eu => "EU", Ca => "CA", Us => "US" }
);

named_enum!(
    /// PECR reg 22 protects individual subscribers; corporate subscribers
    /// (companies, LLPs, Scottish partnerships) fall under reg 23 and GDPR only.
    SubscriberType, "subscriber type", { Individual => "individual", Corporate => "corporate" }
);

impl Jurisdiction {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of jurisdictions, iterated strictest first (UK, EU, CA, US).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct JurisdictionSet(u8);

impl JurisdictionSet {
    pub const EMPTY: JurisdictionSet = JurisdictionSet(0);

    pub fn of(items: &[Jurisdiction]) -> Self {
        items.iter().fold(Self::EMPTY, |s, j| s.with(*j))
    }

    pub fn with(self, j: Jurisdiction) -> Self {
        JurisdictionSet(self.0 | j.bit())
    }

    pub fn contains(self, j: Jurisdiction) -> bool {
        self.0 & j.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Jurisdiction> {
        Jurisdiction::ALL
            .iter()
            .copied()
            .filter(move |j| self.contains(*j))
    }

    /// `UK|EU`: the form used in CSV files and the store.
    pub fn to_pipe_list(self) -> String {
        self.iter()
            .map(|j| j.as_str())
            .collect::<Vec<_>>()
            .join("|")
    }

    /// Parses `UK|EU` (also accepts commas and spaces). Empty gives the empty set.
    pub fn parse_list(s: &str) -> Result<Self, ParseEnumError> {
        s.split(['|', ',', ' '])
            .filter(|p| !p.trim().is_empty())
            .try_fold(Self::EMPTY, |set, p| Ok(set.with(p.parse()?)))
    }
}

impl fmt::Debug for JurisdictionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.to_pipe_list())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_insensitive_and_errors_name_the_choices() {
        assert_eq!("EMAIL".parse::<Channel>().unwrap(), Channel::Email);
        assert_eq!("uk".parse::<Jurisdiction>().unwrap(), Jurisdiction::Uk);
        let e = "fax".parse::<Channel>().unwrap_err().to_string();
        assert!(
            e.contains("\"fax\" is not a channel") && e.contains("email sms phone post"),
            "{e}"
        );
    }

    #[test]
    fn jurisdiction_sets() {
        let s = JurisdictionSet::parse_list("us|UK").unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![Jurisdiction::Uk, Jurisdiction::Us]
        );
        assert_eq!(s.to_pipe_list(), "UK|US");
        assert!(JurisdictionSet::parse_list("").unwrap().is_empty());
        assert!(JurisdictionSet::parse_list("UK|FR").is_err());
    }
}
