//! The outbox viewer: the messages veto handed to the maildir it delivers
//! to (campaigns, service messages), newest first, and each one's headers
//! and parts. HTML is shown as its escaped source, never rendered. Only
//! names listed in the maildir's `cur/` or `new/` can be opened: the name
//! from the URL is compared with the directory's entries, never joined to
//! a path as given.

use std::path::{Path as FsPath, PathBuf};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::campaigns::shown_message;
use super::render::{show_time, urlencode};
use super::{AdminError, Staff, render};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/outbox", get(list))
        .route("/outbox/{name}", get(message))
        .route("/outbox/{name}/html/{n}", get(html_part))
}

/// Messages per page.
const PAGE: usize = 50;
/// The most of one file read for the list (headers are at the start).
const HEAD_BYTES: u64 = 64 * 1024;
/// The most of one file read to show it.
const MAX_BYTES: u64 = 20 * 1024 * 1024;

/// Every message file in `cur/` and `new/`, newest first.
fn entries(dir: &FsPath) -> std::io::Result<Vec<(String, PathBuf, SystemTime)>> {
    let mut all = Vec::new();
    for sub in ["cur", "new"] {
        let rd = match std::fs::read_dir(dir.join(sub)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let at = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            all.push((name, e.path(), at));
        }
    }
    all.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.0.cmp(&a.0)));
    Ok(all)
}

fn read_start(path: &FsPath, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

fn when(t: SystemTime) -> String {
    veto_core::Timestamp::try_from(t)
        .map(show_time)
        .unwrap_or_default()
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> String {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address())
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

/// Date, from, to and subject of one message.
fn summary(name: &str, raw: &[u8], at: SystemTime) -> Value {
    let parsed = mail_parser::MessageParser::default().parse_headers(raw);
    let (date, from, to, subject) = match &parsed {
        Some(m) => (
            m.date()
                .and_then(|d| veto_core::Timestamp::from_second(d.to_timestamp()).ok())
                .map(show_time)
                .unwrap_or_else(|| when(at)),
            addresses(m.from()),
            addresses(m.to()),
            m.subject().unwrap_or("").to_owned(),
        ),
        None => (when(at), String::new(), String::new(), String::new()),
    };
    json!({
        "name": name,
        "href": format!("/admin/outbox/{}", urlencode(name)),
        "date": date,
        "from": from,
        "to": to,
        "subject": if subject.is_empty() { "(no subject)".to_owned() } else { subject },
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    page: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ListQuery>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/receipts")?;
    let page = match q.page.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(p) => p.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            AdminError::BadRequest(format!("page must be a whole number from 1, not {p:?}"))
        })?,
    };
    let Some(dir) = state.outbox_dir().map(FsPath::to_path_buf) else {
        return render(
            &state,
            &staff,
            "admin/outbox.html",
            "Outbox",
            json!({"current": "/admin/outbox", "no_maildir": true}),
        );
    };
    let (rows, total) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let all = entries(&dir)?;
        let rows: Vec<Value> = all
            .iter()
            .skip((page - 1) * PAGE)
            .take(PAGE)
            .map(|(name, path, at)| {
                let raw = read_start(path, HEAD_BYTES).unwrap_or_default();
                summary(name, &raw, *at)
            })
            .collect();
        Ok((rows, all.len()))
    })
    .await
    .map_err(|e| AdminError::Internal(format!("reading the outbox: {e}")))?
    .map_err(|e| AdminError::Internal(format!("reading the outbox: {e}")))?;
    let pages = total.div_ceil(PAGE).max(1);
    render(
        &state,
        &staff,
        "admin/outbox.html",
        "Outbox",
        json!({
            "current": "/admin/outbox",
            "messages": rows,
            "total": total,
            "page": page,
            "pages": pages,
            "prev": (page > 1).then(|| page - 1),
            "next": (page < pages).then(|| page + 1),
        }),
    )
}

/// The file called `name` in `cur/` or `new/`. Only a plain name counts
/// (no `/`, no leading dot, no NUL), so nothing outside those two folders
/// is reached; a symbolic link is not followed. Looked up directly: the
/// outbox of a large campaign holds millions of files.
fn find(dir: &FsPath, name: &str) -> std::io::Result<Option<PathBuf>> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Ok(None);
    }
    for sub in ["cur", "new"] {
        let path = dir.join(sub).join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => return Ok(Some(path)),
            Ok(_) => {}
            // No such file, or a name too long to be one.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidFilename
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

pub(super) async fn message(
    State(state): State<AppState>,
    staff: Staff,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/receipts")?;
    let raw = read_message(&state, &name).await?;
    let shown = shown_message(&raw);
    render(
        &state,
        &staff,
        "admin/outbox_message.html",
        "Outbox message",
        json!({
            "current": "/admin/outbox",
            "name": name,
            "m": shown,
        }),
    )
}

/// The policy of a message's HTML part shown in the outbox viewer: a
/// sandbox (no scripts, no forms, no navigation, an origin of its own),
/// nothing fetched from anywhere (remote images stay unloaded), its own
/// inline styles, framed only by veto's page.
const MAIL_HTML_CSP: &str =
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'";

/// The `n`th (from 1) HTML part of a message, as a mail program would show
/// it, for the sandboxed frame on the message's page.
pub(super) async fn html_part(
    State(state): State<AppState>,
    staff: Staff,
    Path((name, n)): Path<(String, String)>,
) -> Result<Response, AdminError> {
    staff.require("GET", "/receipts")?;
    let raw = read_message(&state, &name).await?;
    let part = n
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| {
            let m = mail_parser::MessageParser::default().parse(&raw[..])?;
            m.parts
                .iter()
                .filter_map(|p| match &p.body {
                    mail_parser::PartType::Html(h) => Some(h.to_string()),
                    _ => None,
                })
                .nth(i)
        })
        .ok_or_else(|| AdminError::NotFound("That message has no such HTML part.".into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, MAIL_HTML_CSP),
            (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
        ],
        part,
    )
        .into_response())
}

/// The raw start of the message `name` in the outbox, if the outbox lists it.
async fn read_message(state: &AppState, name: &str) -> Result<Vec<u8>, AdminError> {
    let not_found = || AdminError::NotFound("There is no such message in the outbox.".into());
    let dir = state
        .outbox_dir()
        .map(FsPath::to_path_buf)
        .ok_or_else(not_found)?;
    let wanted = name.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<Option<Vec<u8>>> {
        match find(&dir, &wanted)? {
            Some(path) => read_start(&path, MAX_BYTES).map(Some),
            None => Ok(None),
        }
    })
    .await
    .map_err(|e| AdminError::Internal(format!("reading the outbox: {e}")))?
    .map_err(|e| AdminError::Internal(format!("reading the outbox: {e}")))?
    .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_names_are_found() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("new/1.M1P1Q1.veto"), "Subject: hi\r\n\r\nx").unwrap();
        std::fs::write(dir.path().join("tmp/2.veto"), "Subject: no\r\n\r\nx").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        assert!(find(dir.path(), "1.M1P1Q1.veto").unwrap().is_some());
        for bad in [
            "../secret",
            "../tmp/2.veto",
            "2.veto",
            "",
            ".",
            "..",
            "/etc/passwd",
        ] {
            assert!(find(dir.path(), bad).unwrap().is_none(), "{bad}");
        }
    }
}
