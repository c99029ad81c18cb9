//! veto-mail: tokens for unsubscribe, preference and bounce links.
//! MIME rewriting, DKIM and DSN/ARF parsing will live here too.

pub mod token;
pub use token::*;
