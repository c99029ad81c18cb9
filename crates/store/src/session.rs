//! Sessions of the admin UI: a random token in a cookie (only its SHA-256
//! is stored) and, per session, the CSRF token its forms carry.

use veto_core::Timestamp;

use crate::{Result, StaffUser, Store, postgres, sqlite};

/// A session ends after this long without a request…
pub const SESSION_IDLE_SECS: i64 = 60 * 60;
/// …and this long after sign-in, whatever happens.
pub const SESSION_MAX_SECS: i64 = 12 * 60 * 60;

/// A session just started: the cookie value and the forms' token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
}

/// A live session and who it belongs to.
#[derive(Debug, Clone)]
pub struct StaffSession {
    pub user: StaffUser,
    pub csrf: String,
    pub expires_at: Timestamp,
}

/// 256 random bits, hex.
pub(crate) fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    crate::chain::hex(&bytes)
}

pub(crate) fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::chain::hex(&Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Starts a session for a user who has just proved their password.
    pub async fn start_session(&self, user_id: i64) -> Result<NewSession> {
        dispatch!(self, start_session(user_id))
    }

    /// The session `token` names, when it is live and its user is not
    /// disabled; counts as activity.
    pub async fn session(&self, token: &str) -> Result<Option<StaffSession>> {
        dispatch!(self, session(token))
    }

    /// Ends the session (logout). Ending one that is gone is no error.
    pub async fn end_session(&self, token: &str) -> Result<()> {
        dispatch!(self, end_session(token))
    }
}
