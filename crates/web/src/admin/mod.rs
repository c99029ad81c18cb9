//! The admin UI (`/admin`): server-rendered pages for the people who run
//! veto day to day. Staff sign in with a name and password (`veto users
//! add`, argon2id); a session is a random token in an HttpOnly cookie, and
//! every form carries the session's CSRF token and must come from veto's
//! own origin ([`session::Posted`]).
//!
//! What a member of staff may see and do is decided by the same role table
//! as the admin API ([`crate::api::roles::TABLE`]): each page and each
//! action names the API endpoint it corresponds to, so that a role can do
//! exactly the same here as with a key, and nothing more. Every change is
//! recorded in the staff audit trail as `user:<name>`.
//!
//! To add a page: a handler taking [`Staff`] (GET) or [`Posted`] (POST),
//! `staff.require("GET", "/the-api-path")?`, then [`render`] a template
//! registered in [`render::TEMPLATES`]; after a change, `staff.record(…)`
//! and [`done`] back to a page with a notice.

mod approvals;
mod campaigns;
mod config;
mod dashboard;
mod outbox;
mod people;
mod render;
mod requests;
mod session;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::get;

use crate::AppState;
pub(crate) use render::{AdminError, done, done_with_error, render, show_time};
pub(crate) use session::{Posted, Staff};

/// The admin UI's own Content-Security-Policy: as strict as the customer
/// pages', but scripts from veto itself may run (live progress bars) and
/// fetch from it, and veto's own pages may be framed in it (a mail's HTML
/// part in the outbox viewer, in a sandbox).
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn routes() -> Router<AppState> {
    let admin = Router::new()
        .route("/", get(dashboard::page))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", axum::routing::post(session::logout))
        .route("/audit/verify", axum::routing::post(dashboard::verify))
        .merge(campaigns::routes())
        .merge(approvals::routes())
        .merge(outbox::routes())
        .merge(requests::routes())
        .merge(config::routes())
        .merge(people::routes())
        .fallback(render::not_found)
        .layer(axum::middleware::map_response(
            |mut res: axum::response::Response| async move {
                // A page with a policy of its own (a mail's HTML part in
                // its sandbox) keeps it.
                if !res.headers().contains_key(header::CONTENT_SECURITY_POLICY) {
                    res.headers_mut().insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(CSP),
                    );
                }
                res
            },
        ));
    Router::new()
        .nest("/admin", admin)
        .route("/static/admin.css", get(render::stylesheet))
        .route("/static/admin.js", get(render::script))
}
