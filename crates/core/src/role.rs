//! Staff roles, for API keys and admin users.

use std::fmt;
use std::str::FromStr;

use crate::ParseEnumError;

/// What a member of staff (or their tool's API key) may do. None of them may
/// re-grant consent on a person's behalf or send past the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Runs campaigns and records consent from the organisation's forms.
    Marketer,
    /// Sends declared service messages (bills, alerts).
    ServiceSender,
    /// Data protection officer: approvals, exports, erasures, bounce removals.
    Dpo,
    /// Keys, users and configuration.
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::Viewer,
        Role::Marketer,
        Role::ServiceSender,
        Role::Dpo,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Marketer => "marketer",
            Role::ServiceSender => "service-sender",
            Role::Dpo => "dpo",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == t)
            .ok_or(ParseEnumError {
                what: "role",
                value: s.to_owned(),
                expected: "viewer marketer service-sender dpo admin",
            })
    }
}
