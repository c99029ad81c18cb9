//! Running veto in production, as an operator sees it: `veto backup` while
//! `veto serve` runs and `veto restore` with its checks, `veto purge` and
//! `[retention]`, `/metrics` and `/healthz`, JSON logs, and SIGTERM letting
//! the SMTP transaction in flight finish while new connections are refused.
//!
//! Each test runs the real binary in a directory of its own with an
//! environment holding only `PATH`, `HOME` and what the test sets. They need
//! nothing but `sh` and Python's `sqlite3` module (to damage a backup the way
//! a bad disk or an attacker would), like the command-line tests.

mod e2e;

use e2e::{Server, free_port, run, show, sigterm, veto, wait_exit, wait_for_port};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// ---- helpers -------------------------------------------------------------------------

struct Site {
    tmp: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    smtp_port: u16,
    web_port: u16,
}

impl Site {
    /// `veto init`, a topic `news`, and jo (withdrew), sam (agreed) and al
    /// (agreed, then erased: a suppression entry).
    fn new(extra: &[(&'static str, &str)]) -> Site {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let (smtp_port, web_port) = (free_port(), free_port());
        let mut env = vec![
            ("VETO_GATEWAY__LISTEN", format!("127.0.0.1:{smtp_port}")),
            ("VETO_WEB__LISTEN", format!("127.0.0.1:{web_port}")),
            (
                "VETO_WEB__PUBLIC_URL",
                format!("http://127.0.0.1:{web_port}"),
            ),
            (
                "VETO_ORGANISATION__POSTAL_ADDRESS",
                "1 High Street, Exampletown".to_owned(),
            ),
            ("VETO_GATEWAY__TRUSTED_DEFAULT_TOPIC", "news".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let site = Site {
            tmp,
            env,
            smtp_port,
            web_port,
        };
        site.ok(&["init", "."]);
        site.ok(&[
            "topics",
            "add",
            "news",
            "--name",
            "Product news",
            "--description",
            "What we made this month, once a month.",
        ]);
        std::fs::write(
            site.path("people.csv"),
            "email,action,topic,at,ip,jurisdiction\n\
             jo@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
             jo@example.com,withdraw,news,2025-02-02T10:00:00Z,,\n\
             sam@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.8,UK\n\
             al@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.9,UK\n",
        )
        .expect("write the import");
        site.ok(&["import", "contacts", "people.csv"]);
        site.ok(&["erase", "al@example.com"]);
        site
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    fn out(&self, args: &[&str]) -> Output {
        veto(self.dir(), args, &self.env)
            .output()
            .expect("run the veto binary")
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        run(self.dir(), args, &self.env)
    }

    /// Exits 2 with `needle` on stderr, changing nothing.
    #[track_caller]
    fn refused(&self, args: &[&str], needle: &str) {
        let out = self.out(args);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            show(&out)
        );
    }

    /// `veto serve`, its stderr going to `serve.log`.
    fn serve(&self) -> Server {
        let log = std::fs::File::create(self.path("serve.log")).expect("create serve.log");
        let mut server = Server(
            veto(self.dir(), &["serve"], &self.env)
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("start veto serve"),
        );
        wait_for_port(self.smtp_port, &mut server);
        wait_for_port(self.web_port, &mut server);
        server
    }

    fn why_json(&self, email: &str) -> serde_json::Value {
        let out = self.ok(&["why", email, "--topic", "news", "--json"]);
        serde_json::from_str(&out).expect("JSON from veto why")
    }

    fn audit_ok(&self) {
        let out = self.out(&["audit", "verify"]);
        assert!(out.status.success(), "audit verify: {}", show(&out));
    }
}

/// Runs Python's sqlite3 on `db`, as someone editing the file would.
fn python_sqlite(db: &Path, sql: &str) {
    let script = format!(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.executescript({sql:?})\nc.commit()\nc.close()\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(db)
        .output()
        .expect("python3 with its sqlite3 module (apt-get install python3)");
    assert!(out.status.success(), "python3 sqlite3: {}", show(&out));
}

/// `GET path` (with an optional bearer token): status and body.
fn http_get(port: u16, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the web server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn post_form(url: &str, body: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("an http:// link");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = TcpStream::connect(authority).expect("connect to the web server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// The value of one sample line in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{series} is not a number"))
}

/// A plain SMTP client for one session.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone the stream");
        let mut smtp = Smtp {
            reader: BufReader::new(stream),
            writer,
        };
        smtp.expect("220");
        smtp
    }

    /// Reads one (possibly multi-line) reply; panics unless it starts with `code`.
    #[track_caller]
    fn expect(&mut self, code: &str) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read a reply");
            assert!(
                n > 0,
                "the gateway closed the connection; so far: {reply:?}"
            );
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}");
        reply
    }

    fn send(&mut self, text: &str) {
        self.writer
            .write_all(text.as_bytes())
            .expect("write to the gateway");
    }

    #[track_caller]
    fn command(&mut self, line: &str, code: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.expect(code)
    }
}

fn outbox(site: &Site) -> Vec<String> {
    let new = site.path("veto-data/outbox/new");
    match std::fs::read_dir(&new) {
        Ok(entries) => entries
            .map(|e| std::fs::read_to_string(e.expect("an outbox entry").path()).expect("read"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

// ---- backup and restore ----------------------------------------------------------------

#[test]
fn backup_while_serving_then_restore_only_a_sound_backup_into_a_stopped_store() {
    let site = Site::new(&[]);
    let mut server = site.serve();

    // An online backup, while `veto serve` holds the store.
    let said = site.ok(&["backup", "backup.db"]);
    assert!(
        said.contains("integrity and hash chains verified") && said.contains("3 contacts"),
        "{said}"
    );
    let again = site.out(&["backup", "backup.db"]);
    assert!(!again.status.success(), "{}", show(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        show(&again)
    );
    // No restore under a running server.
    site.refused(
        &["restore", "backup.db", "--replace"],
        "in use by veto serve",
    );

    sigterm(&server);
    assert!(wait_exit(&mut server, Duration::from_secs(20)).success());

    // Something changes after the backup: sam is erased.
    site.ok(&["erase", "sam@example.com"]);
    assert_eq!(site.why_json("sam@example.com")["decision"], "denied");

    // The store is there: restoring over it must be asked for.
    site.refused(&["restore", "backup.db"], "--replace");

    // A damaged backup: one ledger event edited.
    std::fs::copy(site.path("backup.db"), site.path("edited.db")).expect("copy");
    python_sqlite(
        &site.path("edited.db"),
        "UPDATE events SET kind = 'grant' WHERE kind = 'withdraw';",
    );
    site.refused(&["restore", "edited.db", "--replace"], "do not verify");
    // A backup from a newer veto.
    std::fs::copy(site.path("backup.db"), site.path("newer.db")).expect("copy");
    python_sqlite(
        &site.path("newer.db"),
        "INSERT INTO veto_schema (version, applied_at) VALUES (99, 0);",
    );
    site.refused(&["restore", "newer.db", "--replace"], "version 99");
    // Not a database at all.
    std::fs::write(site.path("notes.txt"), "not a database\n".repeat(100)).expect("write");
    site.refused(&["restore", "notes.txt", "--replace"], "notes.txt");
    // None of that touched the store: sam is still erased, the ledger verifies.
    assert_eq!(site.why_json("sam@example.com")["decision"], "denied");
    site.audit_ok();

    // The sound backup goes in; the store it replaces is kept.
    let said = site.ok(&["restore", "backup.db", "--replace"]);
    assert!(said.contains("hash chains verified"), "{said}");
    assert_eq!(site.why_json("sam@example.com")["decision"], "allowed");
    assert_eq!(site.why_json("jo@example.com")["decision"], "denied");
    // The erased address stays suppressed: the suppression secret came back with it.
    let al = site.why_json("al@example.com");
    assert_eq!(al["decision"], "denied", "{al:#}");
    site.audit_ok();
    let kept: Vec<String> = std::fs::read_dir(site.path("veto-data"))
        .expect("the data directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("veto.db.replaced-"))
        .collect();
    assert!(!kept.is_empty(), "the replaced store was not kept");

    // And `veto serve` runs on the restored store.
    let mut server = site.serve();
    assert_eq!(http_get(site.web_port, "/healthz", None).0, 200);
    sigterm(&server);
    assert!(wait_exit(&mut server, Duration::from_secs(20)).success());
}

#[test]
fn backup_and_restore_on_postgresql_say_to_use_pg_dump() {
    let site = Site::new(&[]);
    let mut env = site.env.clone();
    env.push((
        "VETO_STORE__URL",
        "postgres://veto@127.0.0.1:1/veto".to_owned(),
    ));
    for args in [&["backup", "x.dump"][..], &["restore", "x.dump"][..]] {
        let out = veto(site.dir(), args, &env).output().expect("run veto");
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("pg_dump") && stderr.contains("pg_restore"),
            "{}",
            show(&out)
        );
    }
    assert!(!site.path("x.dump").exists());
}

// ---- retention ---------------------------------------------------------------------------

#[test]
fn purge_blanks_old_evidence_and_keeps_suppressions_and_the_ledger() {
    let site = Site::new(&[("VETO_RETENTION__EVIDENCE", "1s")]);
    let export = |email: &str| -> String { site.ok(&["export", email]) };
    assert!(export("sam@example.com").contains("198.51.100.8"));
    std::thread::sleep(Duration::from_millis(1100));

    let dry = site.ok(&["purge", "--dry-run", "--json"]);
    let dry: serde_json::Value = serde_json::from_str(&dry).expect("JSON from veto purge");
    // jo's grant and sam's (jo's withdrawal carries none; al's were erased).
    assert_eq!(dry["purged"]["evidence"]["ledger_rows"], 2, "{dry:#}");
    assert!(
        export("sam@example.com").contains("198.51.100.8"),
        "a dry run changed something"
    );

    let said = site.ok(&["purge"]);
    assert!(
        said.contains("suppression entries and ledger events are kept"),
        "{said}"
    );
    assert!(
        !export("sam@example.com").contains("198.51.100.8"),
        "the IP address is still there"
    );
    site.audit_ok();
    assert_eq!(site.why_json("sam@example.com")["decision"], "allowed");
    let al = site.why_json("al@example.com");
    assert_eq!(al["decision"], "denied", "{al:#}");

    // Receipts must outlive the frequency limits' 31 days.
    let mut env = site.env.clone();
    env.push(("VETO_RETENTION__RECEIPTS", "7 days".to_owned()));
    let out = veto(site.dir(), &["purge"], &env)
        .output()
        .expect("run veto");
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("VETO_RETENTION__RECEIPTS") && stderr.contains("31 days"),
        "{}",
        show(&out)
    );
}

// ---- serving: metrics, health, logs, shutdown ------------------------------------------------

const TOKEN: &str = "metrics-token-0123456789";

#[test]
fn metrics_count_refusals_and_unsubscribes_and_logs_are_json() {
    let site = Site::new(&[
        ("VETO_LOG__FORMAT", "json"),
        ("VETO_METRICS__ALLOWED_NETWORKS", "[]"),
        ("VETO_METRICS__BEARER_TOKEN", TOKEN),
    ]);
    let mut server = site.serve();
    let metrics = || {
        let (status, body) = http_get(site.web_port, "/metrics", Some(TOKEN));
        assert_eq!(status, 200, "{body}");
        body
    };

    assert_eq!(
        http_get(site.web_port, "/healthz", None),
        (200, "ok\n".to_owned())
    );
    // Without the token (and no network allowed): refused.
    assert_eq!(http_get(site.web_port, "/metrics", None).0, 403);
    assert_eq!(
        http_get(site.web_port, "/metrics", Some("wrong-token-0123456789")).0,
        403
    );

    let before = metrics();
    let refused = "veto_messages_refused_total{reason=\"withdrawn\"}";
    let allowed = "veto_messages_allowed_total{class=\"marketing\"}";
    let sessions = "veto_gateway_sessions_total{listener=\"submission\"}";
    let one_click = "veto_unsubscribes_total{source=\"one_click\"}";

    // A tool mails jo (withdrew) and sam (agreed) through the gateway.
    let mut smtp = Smtp::connect(site.smtp_port);
    smtp.command("EHLO tool.example", "250");
    smtp.command("MAIL FROM:<shop@example.org>", "250");
    smtp.command("RCPT TO:<jo@example.com>", "550");
    smtp.command("RCPT TO:<sam@example.com>", "250");
    smtp.command("DATA", "354");
    smtp.send(
        "From: shop@example.org\r\nTo: sam@example.com\r\nSubject: Spring\r\n\
         Message-ID: <metrics-1@example.org>\r\n\r\nNew boots.\r\n.\r\n",
    );
    smtp.expect("250");
    smtp.command("QUIT", "221");

    let after = metrics();
    assert_eq!(
        sample(&after, refused),
        sample(&before, refused) + 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, allowed),
        sample(&before, allowed) + 1.0,
        "{after}"
    );
    // At least ours (the probes that waited for the port may be counted late).
    assert!(
        sample(&after, sessions) >= sample(&before, sessions) + 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, one_click),
        sample(&before, one_click),
        "{after}"
    );
    assert_eq!(sample(&after, "veto_store_up"), 1.0);
    assert_eq!(sample(&after, "veto_campaign_queue_depth"), 0.0);
    assert!(
        sample(
            &after,
            "veto_store_latency_seconds_count{op=\"receipt_commit\"}"
        ) >= 1.0
    );

    // sam unsubscribes with the one-click link.
    let links = site.ok(&["link", "sam@example.com", "--topic", "news"]);
    let url = links
        .lines()
        .find(|l| l.contains("/u/"))
        .unwrap_or_else(|| panic!("no unsubscribe link in {links}"));
    assert_eq!(post_form(url, "List-Unsubscribe=One-Click"), 200);
    let last = metrics();
    assert_eq!(
        sample(&last, one_click),
        sample(&after, one_click) + 1.0,
        "{last}"
    );

    sigterm(&server);
    assert!(wait_exit(&mut server, Duration::from_secs(20)).success());

    // Every log line from tracing is one JSON object.
    let log = std::fs::read_to_string(site.path("serve.log")).expect("serve.log");
    let records: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["fields"]["message"] == "veto is serving" && r["level"] == "INFO"),
        "no JSON record of the start in:\n{log}"
    );
}

#[test]
fn sigterm_lets_the_smtp_transaction_and_http_request_in_flight_finish_and_takes_no_new_ones() {
    let site = Site::new(&[]);
    let mut server = site.serve();
    let links = site.ok(&["link", "sam@example.com", "--topic", "news"]);
    let url = links
        .lines()
        .find(|l| l.contains("/u/"))
        .unwrap_or_else(|| panic!("no unsubscribe link in {links}"));
    let path = &url[url.find("/u/").expect("a path")..];

    // A tool is in the middle of DATA when veto is told to stop.
    let mut smtp = Smtp::connect(site.smtp_port);
    smtp.command("EHLO tool.example", "250");
    smtp.command("MAIL FROM:<shop@example.org>", "250");
    smtp.command("RCPT TO:<sam@example.com>", "250");
    smtp.command("DATA", "354");
    smtp.send(
        "From: shop@example.org\r\nTo: sam@example.com\r\nSubject: Sent during shutdown\r\n\
         Message-ID: <sigterm-1@example.org>\r\n\r\nFirst half,\r\n",
    );
    // ... and a mail client is in the middle of sam's one-click unsubscribe.
    let mut http = TcpStream::connect(("127.0.0.1", site.web_port)).expect("connect");
    http.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let body = "List-Unsubscribe=One-Click";
    write!(
        http,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        site.web_port,
        body.len(),
        &body[..10]
    )
    .expect("send half the request");
    http.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&server);

    // New connections are refused on both listeners while it drains.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", site.smtp_port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the gateway still accepts connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", site.web_port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the web server still accepts connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.0.try_wait().expect("wait").is_none(),
        "veto serve exited with a transaction in flight"
    );

    // The tool finishes its message: accepted and delivered.
    smtp.send("second half.\r\n.\r\n");
    let reply = smtp.expect("250");
    assert!(reply.contains("1 delivered"), "{reply}");
    // A new transaction in the same session is turned away.
    smtp.command("MAIL FROM:<shop@example.org>", "421");
    // The unsubscribe finishes too: 200, and it is recorded.
    http.write_all(&body.as_bytes()[10..])
        .expect("send the rest of the request");
    let mut response = String::new();
    let _ = http.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "the unsubscribe in flight got {response:?}"
    );

    let status = wait_exit(&mut server, Duration::from_secs(20));
    assert!(status.success(), "veto serve exited with {status}");
    let copies = outbox(&site);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0].contains("Sent during shutdown") && copies[0].contains("second half."),
        "{}",
        copies[0]
    );
    // The receipt is in the store.
    let why = site.ok(&["why", "--message", "<sigterm-1@example.org>", "--json"]);
    assert!(why.contains("sam@example.com"), "{why}");
    let sam = site.why_json("sam@example.com");
    assert_eq!(sam["decision"], "denied", "{sam:#}");
}

#[test]
fn a_store_written_by_a_newer_veto_is_refused_at_start() {
    let site = Site::new(&[]);
    // What an upgrade and a rollback of the binary would leave behind.
    python_sqlite(
        &site.path("veto-data/veto.db"),
        "INSERT INTO veto_schema (version, applied_at) VALUES (99, 0);",
    );
    let mut server = Server(
        veto(site.dir(), &["serve"], &site.env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veto serve"),
    );
    let status = wait_exit(&mut server, Duration::from_secs(20));
    assert!(!status.success(), "veto serve ran on a newer schema");
    let mut stderr = String::new();
    if let Some(mut e) = server.0.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        stderr.contains("version 99") && stderr.contains("upgrade veto"),
        "{stderr}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", site.web_port)).is_err(),
        "something listens on the web port"
    );
}
