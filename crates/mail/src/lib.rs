//! veto-mail: tokens for unsubscribe, preference and bounce links, the
//! per-recipient rewrite (list headers and footer), DKIM signing, and the
//! parsing of bounces (RFC 3464 DSN) and complaints (RFC 5965 ARF).

pub mod dkim;
pub mod feedback;
pub mod rewrite;
pub mod token;
pub use token::*;
