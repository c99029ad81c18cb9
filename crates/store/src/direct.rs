//! The gateway's hot path on SQLite, without sqlx: the guard's read, the
//! relay memory and the receipt commits on connections of their own,
//! opened through the `sqlite3` that sqlx links (libsqlite3-sys), with
//! prepared statements kept for the connection's life.
//!
//! Why: sqlx-sqlite runs every connection on a worker thread of its own and
//! hands each request and each row across a channel; at thousands of
//! messages a second those thread switches cost more than the queries. A
//! read here runs on the calling thread (a few microseconds on a warm
//! page cache, WAL readers never wait for the writer); the receipt commits
//! run on one thread of their own (see [`crate::ReceiptLog`]).
//!
//! Same SQL, same answers as the sqlx code in `queries.rs` (the store tests
//! run through this path on SQLite); PostgreSQL does not use it.

use std::ffi::{CStr, CString, c_int};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libsqlite3_sys as ffi;
use veto_core::{ConsentState, ContactId, Fact, SubscriberType, Timestamp};

use crate::{Delivery, Result, StoreError};

/// Idle read connections kept (more are opened when more readers come at once).
const MAX_IDLE_READERS: usize = 8;

/// The direct connections of one SQLite store.
pub(crate) struct Direct {
    path: PathBuf,
    readers: Mutex<Vec<Conn>>,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// Checks that the store at `path` (created and migrated by sqlx) opens.
    pub(crate) fn open(path: &Path) -> Result<Direct> {
        let direct = Direct {
            path: path.to_owned(),
            readers: Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        let conn = Conn::open(path)?;
        direct.put_back(conn);
        Ok(direct)
    }

    /// Closes the idle connections (the store is being closed); a reader
    /// still at work closes its own when it is done.
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// A connection for writing (the receipt committer's own).
    pub(crate) fn writer(&self) -> Result<Conn> {
        Conn::open(&self.path)
    }

    /// Runs `f` on an idle read connection, on this thread.
    fn read<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => Conn::open(&self.path)?,
        };
        let out = f(&mut conn);
        // A connection whose read failed is dropped, not reused.
        if out.is_ok() {
            self.put_back(conn);
        }
        out
    }

    fn put_back(&self, conn: Conn) {
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_READERS && !self.closed.load(std::sync::atomic::Ordering::Relaxed)
        {
            idle.push(conn);
        }
    }

    /// The consent state of the address whose key is `email_key` and whose
    /// suppression hash is `addr_hash`: as `queries.rs`'s `load_state`.
    pub(crate) fn load_state(
        &self,
        email_key: &str,
        addr_hash: &[u8],
        now: Timestamp,
    ) -> Result<(Option<ContactId>, ConsentState)> {
        self.read(|c| load_state_in(c, email_key, addr_hash, now))
    }

    /// The recipients of `message_key` relayed since `since` (as
    /// `queries.rs`'s `relayed_recipients`) and [`Direct::load_state`], in
    /// one read transaction: one read lock, and one look at whether the log
    /// changed, for the two.
    pub(crate) fn relayed_and_state(
        &self,
        message_key: &str,
        since: Timestamp,
        email_key: &str,
        addr_hash: &[u8],
        now: Timestamp,
    ) -> Result<(Vec<String>, crate::GuardState)> {
        self.read(|c| {
            c.exec_cached("BEGIN")?;
            let out = relayed_in(c, message_key, since)
                .and_then(|relayed| Ok((relayed, load_state_in(c, email_key, addr_hash, now)?)));
            match out {
                Ok(out) => c.exec_cached("COMMIT").map(|()| out),
                Err(e) => {
                    let _ = c.exec_cached("ROLLBACK");
                    Err(e)
                }
            }
        })
    }
}

fn relayed_in(c: &mut Conn, message_key: &str, since: Timestamp) -> Result<Vec<String>> {
    let mut q =
        c.stmt("SELECT recipient FROM receipts WHERE message_id = ?1 AND relayed_at >= ?2")?;
    q.bind_text(1, message_key)?;
    q.bind_i64(2, since.as_microsecond())?;
    let mut out = Vec::new();
    while q.step()? {
        // An erased recipient's receipt keeps no address: nothing to match.
        if let Some(to) = q.text(0) {
            out.push(to.to_owned());
        }
    }
    Ok(out)
}

fn load_state_in(
    c: &mut Conn,
    email_key: &str,
    addr_hash: &[u8],
    now: Timestamp,
) -> Result<(Option<ContactId>, ConsentState)> {
    let mut state = ConsentState::default();
    let mut id = None;
    let mut suppressed: Option<i64> = None;
    {
        let mut q = c.stmt(
            "SELECT c.id, c.jurisdictions, c.subscriber_type, \
             (SELECT created_at FROM suppressions WHERE addr_hash = ?2 AND scope = 'all'), \
             s.kind, s.source, s.event_id, s.at, s.channel, s.scope_topic, s.until_at, \
             s.freq_max, s.freq_per, s.product_group, s.opt_out_offered \
             FROM (SELECT 1 AS one) AS o \
             LEFT JOIN contacts c ON c.email_key = ?1 \
             LEFT JOIN consent_state s ON s.contact_id = c.id",
        )?;
        q.bind_text(1, email_key)?;
        q.bind_blob(2, addr_hash)?;
        let mut first = true;
        while q.step()? {
            if first {
                first = false;
                suppressed = q.opt_i64(3);
                if let Some(cid) = q.opt_i64(0) {
                    let j = q.text(1).unwrap_or_default();
                    let st = q.text(2).unwrap_or_default();
                    state = ConsentState::known(
                        crate::parse_jurisdictions(j),
                        st.parse().unwrap_or(SubscriberType::Individual),
                    );
                    id = Some(ContactId(cid));
                }
            }
            if let Some(kind) = q.text(4) {
                state
                    .facts
                    .push(crate::sqlite::fact_from_parts(crate::sqlite::FactCols {
                        kind,
                        source: q.text(5).ok_or_else(|| null_column("source"))?,
                        event_id: q.opt_i64(6).ok_or_else(|| null_column("event_id"))?,
                        at: q.opt_i64(7).ok_or_else(|| null_column("at"))?,
                        channel: q.text(8),
                        scope_topic: q.opt_i64(9),
                        until_at: q.opt_i64(10),
                        freq_max: q.opt_i64(11),
                        freq_per: q.text(12),
                        product_group: q.text(13),
                        opt_out_offered: q.opt_i64(14),
                    })?);
            }
        }
    }
    if let Some(ContactId(cid)) = id
        && state
            .facts
            .iter()
            .any(|f| matches!(f, Fact::Frequency { .. }))
    {
        let since = now.as_microsecond() - 31 * 86_400 * 1_000_000;
        let mut q = c.stmt(
            "SELECT checked_at FROM receipts WHERE contact_id = ?1 AND allowed = 1 AND channel = 'email' \
             AND class NOT LIKE 'service:%' AND checked_at > ?2",
        )?;
        q.bind_i64(1, cid)?;
        q.bind_i64(2, since)?;
        while q.step()? {
            let at = q.opt_i64(0).ok_or_else(|| null_column("checked_at"))?;
            state.recent_sends.push(crate::sqlite::ts(at)?);
        }
    }
    if let Some(since) = suppressed {
        state.upsert(Fact::Suppressed {
            since: crate::sqlite::ts(since)?,
        });
    }
    Ok((id, state))
}

fn null_column(name: &str) -> StoreError {
    StoreError::Corrupt(format!("consent_state.{name} is NULL"))
}

/// Receipts, relayed copies and service volume of several messages, in one
/// transaction: as `queries.rs`'s `record_deliveries`.
pub(crate) fn record_deliveries(c: &mut Conn, deliveries: &[Delivery], now: i64) -> Result<()> {
    c.exec_cached("BEGIN IMMEDIATE")?;
    let out = record_in(c, deliveries, now);
    match out {
        Ok(()) => c.exec_cached("COMMIT").inspect_err(|_| {
            let _ = c.exec_cached("ROLLBACK");
        }),
        Err(e) => {
            let _ = c.exec_cached("ROLLBACK");
            Err(e)
        }
    }
}

fn record_in(c: &mut Conn, deliveries: &[Delivery], now: i64) -> Result<()> {
    for (actor, recipients) in deliveries.iter().filter_map(|d| d.service.as_ref()) {
        let mut q =
            c.stmt("INSERT INTO service_volume (actor, sent_at, recipients) VALUES (?1, ?2, ?3)")?;
        q.bind_text(1, actor)?;
        q.bind_i64(2, now)?;
        q.bind_i64(3, *recipients)?;
        q.run()?;
    }
    for r in deliveries.iter().flat_map(|d| &d.receipts) {
        let mut q = c.stmt(
            "INSERT INTO receipts (message_id, contact_id, recipient, subject, content_hash, template_version, class, channel, \
             allowed, rule, reason, event_id, checked_at, outcome, relayed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?;
        q.bind_text(1, &r.message_id)?;
        q.bind_opt_i64(2, r.contact)?;
        q.bind_text(3, &r.recipient)?;
        q.bind_opt_text(4, r.subject.as_deref())?;
        q.bind_opt_text(5, r.content_hash.as_deref())?;
        q.bind_opt_text(6, r.template_version.as_deref())?;
        q.bind_text(7, &r.class)?;
        q.bind_text(8, &r.channel)?;
        q.bind_i64(9, i64::from(r.allowed))?;
        q.bind_text(10, &r.rule)?;
        q.bind_opt_text(11, r.reason.as_deref())?;
        q.bind_opt_i64(12, r.event)?;
        q.bind_i64(13, r.checked_at)?;
        q.bind_opt_text(14, r.outcome.as_deref())?;
        q.bind_opt_i64(15, r.relayed_at)?;
        q.run()?;
    }
    Ok(())
}

/// Forgets relayed copies and service volume older than `before`.
pub(crate) fn prune_relayed(c: &mut Conn, before: Timestamp) -> Result<u64> {
    let before = before.as_microsecond();
    let mut q = c.stmt("UPDATE receipts SET relayed_at = NULL WHERE relayed_at < ?1")?;
    q.bind_i64(1, before)?;
    q.run()?;
    drop(q);
    // SAFETY: `c.db` is an open connection.
    let done = unsafe { ffi::sqlite3_changes64(c.db) };
    let mut q = c.stmt("DELETE FROM service_volume WHERE sent_at < ?1")?;
    q.bind_i64(1, before)?;
    q.run()?;
    Ok(u64::try_from(done).unwrap_or(0))
}

/// One connection and its prepared statements. Used by one thread at a
/// time (it is opened without SQLite's own mutex).
pub(crate) struct Conn {
    db: *mut ffi::sqlite3,
    /// Prepared statements by the address of their (static) SQL.
    stmts: Vec<(usize, *mut ffi::sqlite3_stmt)>,
}

// SAFETY: a connection opened with SQLITE_OPEN_NOMUTEX may move between
// threads as long as one thread uses it at a time, which `&mut` ensures.
unsafe impl Send for Conn {}

impl Conn {
    fn open(path: &Path) -> Result<Conn> {
        use std::os::unix::ffi::OsStrExt;
        let name = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            StoreError::Invalid(format!(
                "the store path {} holds a NUL byte",
                path.display()
            ))
        })?;
        let mut db = std::ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX;
        // SAFETY: `name` is NUL-terminated; `db` receives the handle, which
        // is closed on failure below and in `Drop` otherwise.
        let rc = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, flags, std::ptr::null()) };
        let conn = Conn {
            db,
            stmts: Vec::new(),
        };
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(rc, "open"));
        }
        // The same settings as sqlx's connections (lib.rs `open_sqlite`),
        // without memory-mapped reads: in WAL mode a read transaction that
        // finds the log changed since the connection's last one (here: after
        // nearly every receipt commit) drops its page cache and unmaps the
        // whole file, and the munmap, its TLB shoot-downs and the page faults
        // after it cost more than reading the few pages a lookup needs.
        conn.exec(
            "PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; \
             PRAGMA cache_size = -65536; PRAGMA mmap_size = 0;",
        )?;
        Ok(conn)
    }

    fn error(&self, rc: c_int, what: &str) -> StoreError {
        // SAFETY: sqlite3_errmsg accepts any handle, even NULL, and returns
        // a NUL-terminated string that lives until the next call.
        let msg = unsafe {
            let p = ffi::sqlite3_errmsg(self.db);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        StoreError::Sqlite(format!("{what}: {msg} (code {rc})"))
    }

    fn exec(&self, sql: &str) -> Result<()> {
        let sql =
            CString::new(sql).map_err(|_| StoreError::Invalid("SQL with a NUL byte".into()))?;
        // SAFETY: `self.db` is open; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc, "exec"));
        }
        Ok(())
    }

    /// A statement without parameters or rows (BEGIN, COMMIT), prepared once.
    fn exec_cached(&mut self, sql: &'static str) -> Result<()> {
        self.stmt(sql)?.run()
    }

    /// The prepared statement for `sql`, prepared on first use.
    fn stmt(&mut self, sql: &'static str) -> Result<Stmt<'_>> {
        let key = sql.as_ptr() as usize;
        let s = match self.stmts.iter().find(|(k, _)| *k == key) {
            Some(&(_, s)) => s,
            None => {
                let mut s = std::ptr::null_mut();
                let len = c_int::try_from(sql.len())
                    .map_err(|_| StoreError::Invalid("SQL too long".into()))?;
                // SAFETY: `sql` is valid for `len` bytes; `s` receives the
                // statement, finalized in `Drop`.
                let rc = unsafe {
                    ffi::sqlite3_prepare_v3(
                        self.db,
                        sql.as_ptr().cast(),
                        len,
                        ffi::SQLITE_PREPARE_PERSISTENT,
                        &mut s,
                        std::ptr::null_mut(),
                    )
                };
                if rc != ffi::SQLITE_OK || s.is_null() {
                    return Err(self.error(rc, "prepare"));
                }
                self.stmts.push((key, s));
                s
            }
        };
        Ok(Stmt {
            s,
            db: self.db,
            _conn: PhantomData,
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: every statement belongs to `self.db` and is finalized
        // once; then the handle is closed once.
        unsafe {
            for (_, s) in self.stmts.drain(..) {
                ffi::sqlite3_finalize(s);
            }
            ffi::sqlite3_close(self.db);
        }
    }
}

/// A prepared statement in use; reset (bindings cleared) when dropped.
struct Stmt<'c> {
    s: *mut ffi::sqlite3_stmt,
    db: *mut ffi::sqlite3,
    _conn: PhantomData<&'c mut Conn>,
}

impl Drop for Stmt<'_> {
    fn drop(&mut self) {
        // SAFETY: `s` is a live statement of this connection.
        unsafe {
            ffi::sqlite3_reset(self.s);
            ffi::sqlite3_clear_bindings(self.s);
        }
    }
}

impl Stmt<'_> {
    fn check(&self, rc: c_int, what: &str) -> Result<()> {
        if rc == ffi::SQLITE_OK {
            return Ok(());
        }
        // SAFETY: `db` is the statement's open connection.
        let msg = unsafe {
            CStr::from_ptr(ffi::sqlite3_errmsg(self.db))
                .to_string_lossy()
                .into_owned()
        };
        Err(StoreError::Sqlite(format!("{what}: {msg} (code {rc})")))
    }

    fn bind_i64(&mut self, i: c_int, v: i64) -> Result<()> {
        // SAFETY: live statement; SQLite checks the index.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.s, i, v) };
        self.check(rc, "bind")
    }

    fn bind_opt_i64(&mut self, i: c_int, v: Option<i64>) -> Result<()> {
        match v {
            Some(v) => self.bind_i64(i, v),
            None => Ok(()), // bindings start (and are cleared to) NULL
        }
    }

    fn bind_text(&mut self, i: c_int, v: &str) -> Result<()> {
        let len = c_int::try_from(v.len())
            .map_err(|_| StoreError::Invalid("text too long for the store".into()))?;
        // SAFETY: `v` is valid for `len` bytes; SQLITE_TRANSIENT makes
        // SQLite copy it before this returns.
        let rc = unsafe {
            ffi::sqlite3_bind_text(self.s, i, v.as_ptr().cast(), len, ffi::SQLITE_TRANSIENT())
        };
        self.check(rc, "bind")
    }

    fn bind_opt_text(&mut self, i: c_int, v: Option<&str>) -> Result<()> {
        match v {
            Some(v) => self.bind_text(i, v),
            None => Ok(()),
        }
    }

    fn bind_blob(&mut self, i: c_int, v: &[u8]) -> Result<()> {
        let len = c_int::try_from(v.len())
            .map_err(|_| StoreError::Invalid("blob too long for the store".into()))?;
        // SAFETY: as in `bind_text`.
        let rc = unsafe {
            ffi::sqlite3_bind_blob(self.s, i, v.as_ptr().cast(), len, ffi::SQLITE_TRANSIENT())
        };
        self.check(rc, "bind")
    }

    /// Steps once: `true` when a row is there to read.
    fn step(&mut self) -> Result<bool> {
        // SAFETY: live statement.
        match unsafe { ffi::sqlite3_step(self.s) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => {
                self.check(rc, "step")?;
                Ok(false)
            }
        }
    }

    /// Steps to the end (a statement without rows).
    fn run(&mut self) -> Result<()> {
        while self.step()? {}
        Ok(())
    }

    fn opt_i64(&self, col: c_int) -> Option<i64> {
        // SAFETY: called only after `step` returned a row.
        unsafe {
            if ffi::sqlite3_column_type(self.s, col) == ffi::SQLITE_NULL {
                None
            } else {
                Some(ffi::sqlite3_column_int64(self.s, col))
            }
        }
    }

    /// A text column (None for NULL or text that is not UTF-8, which veto
    /// never writes). Valid until the next step.
    fn text(&self, col: c_int) -> Option<&str> {
        // SAFETY: called only after `step` returned a row; the pointer and
        // length come from SQLite and stay valid until the next step or
        // reset, which need `&mut self`.
        unsafe {
            let p = ffi::sqlite3_column_text(self.s, col);
            if p.is_null() {
                return None;
            }
            let n = usize::try_from(ffi::sqlite3_column_bytes(self.s, col)).ok()?;
            std::str::from_utf8(std::slice::from_raw_parts(p, n)).ok()
        }
    }
}
