//! End-to-end tests of the `veto` command line.
//!
//! Each test runs the real binary in a directory of its own (a
//! `tempfile::tempdir()`), with an environment that holds nothing but `PATH`,
//! `HOME` and what the test sets, and checks what a user sees: the exit
//! status, what is printed, and the state of the store as other `veto`
//! commands report it. The tamper tests edit the SQLite file with Python's
//! `sqlite3` module, as an attacker with access to the file would.

use std::fmt;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

// ---- helpers -----------------------------------------------------------------------

/// What one run of `veto` did.
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`veto {}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    /// Asserts the exit status and returns the run, for chaining.
    #[track_caller]
    fn exits(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit status: {self}");
        self
    }

    #[track_caller]
    fn succeeds(&self) -> &Self {
        self.exits(0)
    }

    #[track_caller]
    fn fails(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a failure: {self}"
        );
        self
    }

    #[track_caller]
    fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}: {self}"
        );
        self
    }

    #[track_caller]
    fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self}"
        );
        self
    }

    #[track_caller]
    fn prints_nowhere(&self, needle: &str) -> &Self {
        assert!(
            !self.stdout.contains(needle) && !self.stderr.contains(needle),
            "{needle:?} was printed: {self}"
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

/// A directory to run `veto` in.
struct Site {
    dir: TempDir,
}

impl Site {
    /// An empty directory.
    fn empty() -> Site {
        Site {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// `veto init .` done, and a topic `news`.
    fn new() -> Site {
        let site = Site::empty();
        site.veto(&["init", "."]).succeeds();
        site.veto(&[
            "topics",
            "add",
            "news",
            "--name",
            "Product news",
            "--description",
            "What we made this month, once a month.",
        ])
        .succeeds();
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn db(&self) -> PathBuf {
        self.path("veto-data/veto.db")
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write a test file");
        path
    }

    fn veto(&self, args: &[&str]) -> Run {
        self.veto_env(args, &[])
    }

    /// Runs veto with only PATH, HOME and `env` in its environment, so no
    /// `VETO_*` variable of the developer's leaks in.
    fn veto_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_veto"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("HOME", self.dir.path());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run the veto binary");
        Run {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Writes `csv` to `name` and imports it with `extra` arguments.
    fn import(&self, name: &str, csv: &str, extra: &[&str]) -> Run {
        self.write(name, csv);
        let mut args = vec!["import", "contacts", name];
        args.extend_from_slice(extra);
        self.veto(&args)
    }

    fn why(&self, email: &str, topic: &str) -> Value {
        let run = self.veto(&["why", email, "--topic", topic, "--json"]);
        run.succeeds();
        run.json()
    }

    /// What `veto why` decides for `email` and `topic`: ("allowed" or
    /// "denied", the rule).
    fn decision(&self, email: &str, topic: &str) -> (String, String) {
        let v = self.why(email, topic);
        (
            v["decision"].as_str().unwrap_or_default().to_owned(),
            v["rule"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Asserts that veto holds nothing at all about `email`.
    #[track_caller]
    fn holds_nothing_about(&self, email: &str) {
        self.veto(&["export", email])
            .fails()
            .stderr_has(&format!("veto holds nothing about {email}"));
        let v = self.why(email, "news");
        assert_eq!(v["decision"], "denied", "{v:#}");
        assert_eq!(v["rule"], "VETO-NO-RECORD", "{v:#}");
        assert_eq!(v["known"], false, "{v:#}");
    }

    /// The events of `email`, as `veto export` lists them.
    fn events(&self, email: &str) -> Vec<Value> {
        let run = self.veto(&["export", email]);
        run.succeeds();
        run.json()["consent_events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Runs `script` with python3 (its sqlite3 module) on the store's SQLite
    /// file and `sql` as arguments; what it printed.
    #[track_caller]
    fn python_on_store(&self, script: &str, sql: &str) -> String {
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(self.db())
            .arg(sql)
            .output()
            .expect(
                "python3 (with its sqlite3 module) is needed to read and tamper with the store",
            );
        assert!(
            out.status.success(),
            "python3 failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first column of a query's rows, read from the store's SQLite
    /// file, as text.
    #[track_caller]
    fn column(&self, sql: &str) -> Vec<String> {
        self.python_on_store(
            "import sqlite3, sys\n\
             for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):\n    print(row[0])\n",
            sql,
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// Runs one SQL statement on the store's SQLite file, behind veto's back.
    #[track_caller]
    fn tamper(&self, sql: &str) {
        self.python_on_store(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             n = c.execute(sys.argv[2]).rowcount\n\
             c.commit()\n\
             c.close()\n\
             assert n == 1, f'{n} rows changed'\n",
            sql,
        );
    }
}

fn id_of(event: &Value) -> i64 {
    event["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("event without an id: {event:#}"))
}

/// A "PostgreSQL server" that accepts connections and hangs up at once, so a
/// connection fails quickly (a refused one is retried for seconds).
fn hang_up_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    port
}

// ---- init ------------------------------------------------------------------------

#[test]
fn init_writes_config_and_store_and_never_overwrites() {
    let site = Site::empty();
    let run = site.veto(&["init", "site"]);
    run.succeeds().stdout_has("wrote").stdout_has("veto.toml");
    let toml = site.path("site/veto.toml");
    let db = site.path("site/veto-data/veto.db");
    assert!(toml.is_file(), "{run}");
    assert!(db.is_file(), "the store is in DIR/veto-data: {run}");
    assert!(
        !site.path("veto-data").exists(),
        "no data directory outside DIR: {run}"
    );
    let written = std::fs::read_to_string(&toml).unwrap();
    assert!(written.contains("[store]"), "{written}");

    // The configuration it wrote works.
    site.veto(&["--config", "site/veto.toml", "check"])
        .succeeds()
        .stdout_has("ok");

    // A second init refuses and leaves the (edited) file as it is.
    let edited = format!("{written}\n# edited by the operator\n");
    std::fs::write(&toml, &edited).unwrap();
    let db_before = std::fs::read(&db).unwrap();
    site.veto(&["init", "site"])
        .fails()
        .stderr_has("never overwritten");
    assert_eq!(std::fs::read_to_string(&toml).unwrap(), edited);
    assert_eq!(std::fs::read(&db).unwrap(), db_before);
}

#[test]
fn init_in_the_current_directory() {
    let site = Site::empty();
    site.veto(&["init", "."]).succeeds();
    assert!(site.path("veto.toml").is_file());
    assert!(site.db().is_file());
    let before = std::fs::read(site.path("veto.toml")).unwrap();
    site.veto(&["init"]).fails().stderr_has("veto.toml");
    assert_eq!(std::fs::read(site.path("veto.toml")).unwrap(), before);
}

// ---- topics, wordings, keys --------------------------------------------------------

#[test]
fn topics_add_and_list() {
    let site = Site::new();
    site.veto(&[
        "topics",
        "add",
        "offers",
        "--name",
        "Offers",
        "--description",
        "Discounts, at most weekly.",
        "--group",
        "shop",
    ])
    .succeeds()
    .stdout_has("added topic offers (Offers)");
    let run = site.veto(&["topics", "list", "--json"]);
    run.succeeds();
    let topics = run.json();
    let topics = topics.as_array().expect("a JSON list");
    assert_eq!(topics.len(), 2, "{run}");
    let offers = topics
        .iter()
        .find(|t| t["key"] == "offers")
        .unwrap_or_else(|| panic!("no offers: {run}"));
    assert_eq!(offers["name"], "Offers");
    assert_eq!(offers["description"], "Discounts, at most weekly.");
    assert_eq!(offers["group"], "shop");
    let news = topics.iter().find(|t| t["key"] == "news").unwrap();
    assert_eq!(news["name"], "Product news");
    assert_eq!(news["group"], Value::Null);

    site.veto(&["topics", "list"])
        .succeeds()
        .stdout_has("offers")
        .stdout_has("Product news");
}

#[test]
fn topic_key_must_be_valid() {
    let site = Site::new();
    site.veto(&[
        "topics",
        "add",
        "News!",
        "--name",
        "News",
        "--description",
        "News.",
    ])
    .fails()
    .stderr_has("\"News!\" is not a valid key")
    .stderr_has("lower-case letters, digits and hyphens");
    let topics = site.veto(&["topics", "list", "--json"]).json();
    assert_eq!(topics.as_array().map(Vec::len), Some(1), "{topics:#}");
}

#[test]
fn duplicate_topic_is_refused() {
    let site = Site::new();
    site.veto(&[
        "topics",
        "add",
        "news",
        "--name",
        "Other news",
        "--description",
        "Something else.",
    ])
    .fails()
    .stderr_has("already exists");
    let topics = site.veto(&["topics", "list", "--json"]).json();
    let topics = topics.as_array().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["name"], "Product news", "the first one stays");
}

#[test]
fn wordings_add_prints_the_same_id_for_the_same_text() {
    let site = Site::new();
    let text = "Yes, email me product news. You can stop at any time.";
    let first = site.veto(&["wordings", "add", "--text", text]);
    first.succeeds();
    let id: i64 = first
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an id: {first}"));
    let again = site.veto(&["wordings", "add", "--text", text]);
    again.succeeds();
    assert_eq!(again.stdout.trim(), id.to_string(), "{again}");
    let other = site.veto(&["wordings", "add", "--text", "Something else."]);
    other.succeeds();
    assert_ne!(other.stdout.trim(), id.to_string(), "{other}");
    site.veto(&["wordings", "add", "--text", "   "])
        .fails()
        .stderr_has("empty");
}

#[test]
fn keys_create_prints_the_key_once_on_stdout() {
    let site = Site::new();
    let run = site.veto(&[
        "keys",
        "create",
        "--role",
        "marketer",
        "--default-topic",
        "news",
    ]);
    run.succeeds().stderr_has("marketer");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {run}");
    let key = lines[0].trim();
    assert!(key.len() >= 32, "a key of at least 32 characters: {run}");
    assert!(!key.contains(char::is_whitespace), "{run}");
    assert!(!run.stderr.contains(key), "the key only on stdout: {run}");

    let other = site.veto(&["keys", "create", "--role", "viewer"]);
    other.succeeds();
    assert_ne!(other.stdout.trim(), key, "every key is new");
}

#[test]
fn keys_create_with_an_unknown_role_lists_the_roles() {
    let site = Site::new();
    let run = site.veto(&["keys", "create", "--role", "boss"]);
    run.fails().stderr_has("boss");
    for role in ["viewer", "marketer", "service-sender", "dpo", "admin"] {
        run.stderr_has(role);
    }
    assert!(run.stdout.trim().is_empty(), "no key printed: {run}");
}

// ---- import: the veto format -------------------------------------------------------

const HEADER: &str = "email,action,topic,at,ip,jurisdiction\n";

#[test]
fn import_reports_bad_rows_and_imports_the_rest() {
    let site = Site::new();
    let csv = format!(
        "{HEADER}\
         jo@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         not-an-address,grant,news,2025-01-02T10:00:00Z,,\n\
         al@example.com,grant,news,last tuesday,,\n\
         mo@example.com,grant,sport,2025-01-02T10:00:00Z,,\n\
         di@example.com,grant,news,2025-01-03T10:00:00Z,203.0.113.5,UK\n"
    );
    let run = site.import("contacts.csv", &csv, &[]);
    run.exits(3)
        .stderr_has("line 3, column \"email\"")
        .stderr_has("\"not-an-address\" is not a valid address")
        .stderr_has("line 4, column \"at\"")
        .stderr_has("\"last tuesday\"")
        .stderr_has("line 5, column \"topic\"")
        .stderr_has("unknown topic \"sport\"")
        .stderr_has("known topics: news")
        .stdout_has("imported 2 rows (2 new contacts); refused 3")
        .stdout_has("3 rows with errors");
    assert!(
        !run.stderr.contains("line 2") && !run.stderr.contains("line 6"),
        "the good rows are not reported: {run}"
    );

    // The good rows are really in the store.
    assert_eq!(
        site.decision("jo@example.com", "news"),
        ("allowed".into(), "PECR-22-2".into())
    );
    assert_eq!(site.decision("di@example.com", "news").0, "allowed");
    // The bad ones are not.
    site.holds_nothing_about("al@example.com");
    site.holds_nothing_about("mo@example.com");
}

#[test]
fn import_of_an_all_valid_file_exits_0() {
    let site = Site::new();
    let csv = format!(
        "{HEADER}\
         jo@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         al@example.com,withdraw,news,2025-01-02T10:00:00Z,,\n\
         \n\
         di@example.com,grant,news,2025-01-03T10:00:00Z,,EU\n"
    );
    site.import("contacts.csv", &csv, &[])
        .succeeds()
        .stdout_has("imported 3 rows (3 new contacts); refused 0");
    assert_eq!(site.decision("jo@example.com", "news").0, "allowed");
    assert_eq!(
        site.decision("al@example.com", "news"),
        ("denied".into(), "GDPR-7".into())
    );
    assert_eq!(site.why("al@example.com", "news")["known"], true);
    assert_eq!(site.decision("di@example.com", "news").0, "allowed");
}

#[test]
fn import_of_an_unusable_file_exits_2_and_imports_nothing() {
    let site = Site::new();
    let row = "x@example.com,grant,news\n";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "image.csv",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10".to_vec(),
            "is this a CSV file?",
        ),
        (
            "contacts.json",
            br#"[{"email": "x@example.com", "action": "grant", "topic": "news"}]"#.to_vec(),
            "",
        ),
        (
            "duplicate.csv",
            format!("email,action,topic,Email\n{row}").into_bytes(),
            "appears twice",
        ),
        (
            "unknown.csv",
            format!(
                "email,action,topic,colour\n{}",
                "x@example.com,grant,news,red\n"
            )
            .into_bytes(),
            "\"colour\", is not a veto column",
        ),
        (
            "no-email.csv",
            b"address,action,topic\nx@example.com,grant,news\n".to_vec(),
            "\"address\", is not a veto column",
        ),
        (
            "no-email-at-all.csv",
            b"action,topic\ngrant,news\n".to_vec(),
            "has no \"email\" column",
        ),
        (
            "semicolons.csv",
            b"email;action;topic\nx@example.com;grant;news\n".to_vec(),
            "comma",
        ),
        ("empty.csv", Vec::new(), "empty"),
    ];
    for (name, contents, message) in cases {
        site.write(name, &contents);
        let run = site.veto(&["import", "contacts", name]);
        run.exits(2)
            .stderr_has(name)
            .stderr_has(message)
            .stderr_has("nothing was imported");
        site.holds_nothing_about("x@example.com");
    }
    site.veto(&["import", "contacts", "no-such-file.csv"])
        .exits(2)
        .stderr_has("cannot read");
}

#[test]
fn import_dry_run_imports_nothing() {
    let site = Site::new();
    let csv = format!(
        "{HEADER}\
         jo@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         al@example.com,grant,news,2025-01-02T10:00:00Z,,\n"
    );
    site.import("contacts.csv", &csv, &["--dry-run"])
        .succeeds()
        .stdout_has("would import 2 rows (2 new contacts); refused 0");
    site.holds_nothing_about("jo@example.com");
    site.holds_nothing_about("al@example.com");
    // The same file for real.
    site.veto(&["import", "contacts", "contacts.csv"])
        .succeeds()
        .stdout_has("imported 2 rows");
    assert_eq!(site.decision("jo@example.com", "news").0, "allowed");
}

#[test]
fn import_strict_with_one_bad_row_imports_nothing() {
    let site = Site::new();
    let csv = format!(
        "{HEADER}\
         jo@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         al@example.com,grant,news,2025-01-02T10:00:00Z,not-an-ip,\n\
         di@example.com,grant,news,2025-01-02T10:00:00Z,,\n"
    );
    site.import("contacts.csv", &csv, &["--strict"])
        .exits(3)
        .stderr_has("line 3, column \"ip\"")
        .stdout_has("refused 1")
        .stdout_has("nothing was imported");
    site.holds_nothing_about("jo@example.com");
    site.holds_nothing_about("al@example.com");
    site.holds_nothing_about("di@example.com");
}

#[test]
fn import_refuses_to_resurrect_a_withdrawal_in_the_same_file() {
    let site = Site::new();
    let csv = format!(
        "{HEADER}\
         jo@example.com,grant,news,2025-01-01T10:00:00Z,,UK\n\
         jo@example.com,withdraw,news,2025-02-01T10:00:00Z,,\n\
         jo@example.com,grant,news,2025-03-01T10:00:00Z,,\n\
         al@example.com,grant,news,2025-03-01T10:00:00Z,,UK\n"
    );
    let run = site.import("contacts.csv", &csv, &[]);
    run.exits(3)
        .stderr_has("line 4: refused: withdrew")
        .stdout_has("imported 3 rows (2 new contacts); refused 1")
        .stdout_has("1 refused: withdrew consent");
    assert!(!run.stderr.contains("line 5"), "{run}");
    let v = site.why("jo@example.com", "news");
    assert_eq!(v["decision"], "denied", "{v:#}");
    assert_eq!(v["reason"], "withdrawn", "{v:#}");
    assert_eq!(v["event"]["kind"], "withdraw", "{v:#}");
    let kinds: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["grant", "withdraw"],
        "the refused row wrote nothing"
    );
    assert_eq!(site.decision("al@example.com", "news").0, "allowed");
}

#[test]
fn import_refuses_to_resurrect_a_withdrawal_from_an_earlier_import() {
    let site = Site::new();
    site.import(
        "first.csv",
        &format!(
            "{HEADER}\
             jo@example.com,grant,news,2025-01-01T10:00:00Z,,\n\
             jo@example.com,withdraw,news,2025-02-01T10:00:00Z,,\n"
        ),
        &[],
    )
    .succeeds();
    site.import(
        "second.csv",
        &format!("{HEADER}jo@example.com,grant,news,2025-06-01T10:00:00Z,192.0.2.1,UK\n"),
        &[],
    )
    .exits(3)
    .stderr_has("line 2: refused: withdrew")
    .stdout_has("imported 0 rows (0 new contacts); refused 1");
    assert_eq!(
        site.decision("jo@example.com", "news"),
        ("denied".into(), "GDPR-7".into())
    );
    assert_eq!(site.events("jo@example.com").len(), 2);

    // A withdrawal from all marketing blocks a topic grant too.
    site.import(
        "third.csv",
        &format!(
            "{HEADER}\
             al@example.com,withdraw,,2025-02-01T10:00:00Z,,\n\
             al@example.com,grant,news,2025-03-01T10:00:00Z,,\n"
        ),
        &[],
    )
    .exits(3)
    .stderr_has("line 3: refused: withdrew");
    assert_eq!(site.decision("al@example.com", "news").0, "denied");
}

#[test]
fn import_strict_with_a_resurrection_imports_nothing() {
    let site = Site::new();
    let csv = format!(
        "{HEADER}\
         di@example.com,grant,news,2025-01-01T10:00:00Z,,\n\
         jo@example.com,grant,news,2025-01-01T10:00:00Z,,\n\
         jo@example.com,withdraw,news,2025-02-01T10:00:00Z,,\n\
         jo@example.com,grant,news,2025-03-01T10:00:00Z,,\n"
    );
    site.import("contacts.csv", &csv, &["--strict"])
        .exits(3)
        .stderr_has("line 5: refused: withdrew")
        .stdout_has("nothing was imported");
    site.holds_nothing_about("di@example.com");
    site.holds_nothing_about("jo@example.com");
}

// ---- import: listmonk and Mailchimp ------------------------------------------------

const LISTMONK: &str = "\
uuid,email,name,attributes,status,created_at,updated_at,subscription_status,list_id
u1,jo@example.com,Jo Bloggs,\"{\"\"city\"\": \"\"Leeds\"\"}\",enabled,2021-03-04 10:19:25.953416 +0000 UTC,2024-05-06 07:08:09 +0000 UTC,confirmed,3
u2,al@example.com,Al,{},enabled,2021-03-04 10:19:25 +0000 UTC,2024-01-01 00:00:00 +0000 UTC,unsubscribed,3
u3,mo@example.com,Mo,{},enabled,2021-03-04 10:19:25 +0000 UTC,,unconfirmed,3
u4,bo@example.com,Bo,{},blocklisted,2021-03-04 10:19:25 +0000 UTC,2023-01-02 03:04:05 +0000 UTC,confirmed,3
";

#[test]
fn import_listmonk_with_a_topic() {
    let site = Site::new();
    let run = site.import(
        "subscribers.csv",
        LISTMONK,
        &["--format", "listmonk", "--topic", "news"],
    );
    run.exits(3)
        .stderr_has("line 4, column \"subscription_status\"")
        .stderr_has("unconfirmed")
        .stdout_has("imported 3 rows (3 new contacts); refused 1");

    let jo = site.why("jo@example.com", "news");
    assert_eq!(jo["decision"], "allowed", "{jo:#}");
    assert_eq!(jo["event"]["kind"], "grant");
    assert_eq!(jo["event"]["source"], "import");
    assert_eq!(jo["event"]["actor"], "import:subscribers.csv");
    assert_eq!(jo["event"]["at"], "2021-03-04T10:19:25.953416Z");
    let export = site.veto(&["export", "jo@example.com"]).json();
    assert_eq!(export["contact"]["name"], "Jo Bloggs", "{export:#}");
    assert_eq!(
        export["contact"]["attributes"]["city"], "Leeds",
        "{export:#}"
    );

    assert_eq!(
        site.decision("al@example.com", "news"),
        ("denied".into(), "GDPR-7".into())
    );
    let bo = site.why("bo@example.com", "news");
    assert_eq!(bo["decision"], "denied", "{bo:#}");
    assert_eq!(bo["event"]["kind"], "withdraw", "blocklisted: {bo:#}");
    assert_eq!(bo["event"]["topic"], Value::Null, "all marketing: {bo:#}");
    site.holds_nothing_about("mo@example.com");
}

const MAILCHIMP_SUBSCRIBED: &str = "\
\"Email Address\",\"First Name\",\"Last Name\",\"Address\",MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS
jo@example.com,Jo,Bloggs,\"1 High St, Leeds\",2,\"2023-04-05 10:11:12\",198.51.100.7,\"2023-04-05 10:15:00\",198.51.100.8,53.8,-1.5,0,1,Europe/London,GB,ENG,\"2024-01-01 00:00:00\",123,abc,,\"\"\"VIP\"\"\"
al@example.com,Al,,,1,\"2022-01-01 09:00:00\",203.0.113.9,,,,,,,,,,\"2022-01-01 09:00:00\",124,abd,,
mo@example.com,,,,1,,,,,,,,,,,,\"2022-01-01 09:00:00\",125,abe,,
";

const MAILCHIMP_UNSUBSCRIBED: &str = "\
Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,UNSUB_REASON_OTHER,LEID,EUID,NOTES,TAGS,LAST_CHANGED
al@example.com,Al,,1,2022-01-01 09:00:00,203.0.113.9,,,2024-02-03 04:05:06,Spring sale,abc123,NORMAL,,2,e2,,,2024-02-03 04:05:06
";

#[test]
fn import_mailchimp_with_a_topic() {
    let site = Site::new();
    let run = site.import(
        "subscribed.csv",
        MAILCHIMP_SUBSCRIBED,
        &["--format", "mailchimp", "--topic", "news"],
    );
    run.exits(3)
        .stderr_has("line 4")
        .stderr_has("no evidence")
        .stdout_has("imported 2 rows (2 new contacts); refused 1");

    let jo = site.why("jo@example.com", "news");
    assert_eq!(jo["decision"], "allowed", "{jo:#}");
    assert_eq!(jo["event"]["at"], "2023-04-05T10:15:00Z", "CONFIRM_TIME");
    assert_eq!(
        jo["event"]["personal_data"]["ip"], "198.51.100.8",
        "CONFIRM_IP"
    );
    let export = site.veto(&["export", "jo@example.com"]).json();
    assert_eq!(export["contact"]["name"], "Jo Bloggs", "{export:#}");
    assert_eq!(
        export["contact"]["attributes"]["address"], "1 High St, Leeds",
        "{export:#}"
    );
    assert_eq!(site.decision("al@example.com", "news").0, "allowed");
    site.holds_nothing_about("mo@example.com");

    // The unsubscribed export withdraws.
    site.import(
        "unsubscribed.csv",
        MAILCHIMP_UNSUBSCRIBED,
        &["--format", "mailchimp", "--topic", "news"],
    )
    .succeeds()
    .stdout_has("imported 1 rows (0 new contacts)");
    let al = site.why("al@example.com", "news");
    assert_eq!(al["decision"], "denied", "{al:#}");
    assert_eq!(al["reason"], "withdrawn", "{al:#}");
    assert_eq!(al["event"]["at"], "2024-02-03T04:05:06Z", "{al:#}");
    // And the subscribed export, imported again, does not undo it.
    site.veto(&[
        "import",
        "contacts",
        "subscribed.csv",
        "--format",
        "mailchimp",
        "--topic",
        "news",
    ])
    .exits(3)
    .stderr_has("line 3: refused: withdrew");
    assert_eq!(site.decision("al@example.com", "news").0, "denied");
}

#[test]
fn import_mailchimp_cleaned_is_a_hard_bounce() {
    let site = Site::new();
    let run = site.import(
        "cleaned.csv",
        "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID,LEID,EUID,NOTES,TAGS,LAST_CHANGED\n\
         gone@example.com,,,1,,,,,2024-05-06 07:08:09,Newsletter 12,c12,1,e1,,,2024-05-06 07:08:09\n",
        &["--format", "mailchimp", "--topic", "news"],
    );
    run.succeeds()
        .stdout_has("imported 1 rows (1 new contacts)");
    let v = site.why("gone@example.com", "news");
    assert_eq!(v["decision"], "denied", "{v:#}");
    assert_eq!(v["rule"], "VETO-HARD-BOUNCE", "{v:#}");
    assert_eq!(v["event"]["kind"], "hard_bounce", "{v:#}");
}

#[test]
fn list_formats_need_a_known_topic() {
    let site = Site::new();
    site.write("subscribers.csv", LISTMONK);
    site.veto(&[
        "import",
        "contacts",
        "subscribers.csv",
        "--format",
        "listmonk",
    ])
    .exits(2)
    .stderr_has("--topic is required for listmonk imports")
    .stderr_has("nothing was imported");
    site.write("subscribed.csv", MAILCHIMP_SUBSCRIBED);
    site.veto(&[
        "import",
        "contacts",
        "subscribed.csv",
        "--format",
        "mailchimp",
    ])
    .exits(2)
    .stderr_has("--topic is required for mailchimp imports");
    site.veto(&[
        "import",
        "contacts",
        "subscribers.csv",
        "--format",
        "listmonk",
        "--topic",
        "sport",
    ])
    .exits(2)
    .stderr_has("\"sport\" is not a topic")
    .stderr_has("known topics: news");
    site.veto(&["import", "contacts", "subscribers.csv", "--format", "csv"])
        .exits(2)
        .stderr_has("expected veto, listmonk or mailchimp");
    site.write(
        "contacts.csv",
        format!("{HEADER}x@example.com,grant,news,,,\n"),
    );
    site.veto(&["import", "contacts", "contacts.csv", "--topic", "news"])
        .exits(2)
        .stderr_has("--topic is not used with veto files");
    for email in [
        "jo@example.com",
        "al@example.com",
        "bo@example.com",
        "x@example.com",
    ] {
        site.holds_nothing_about(email);
    }
}

// ---- why -------------------------------------------------------------------------

#[test]
fn why_an_unknown_address_is_denied() {
    let site = Site::new();
    let v = site.why("nobody@example.com", "news");
    assert_eq!(v["decision"], "denied", "{v:#}");
    assert_eq!(v["rule"], "VETO-NO-RECORD", "{v:#}");
    assert_eq!(v["reason"], "no_record", "{v:#}");
    assert_eq!(v["known"], false, "{v:#}");
    assert_eq!(v["email"], "nobody@example.com");
    assert_eq!(v["topic"], "news");
    assert_eq!(v["channel"], "email");
    assert_eq!(v["event"], Value::Null);
    assert_eq!(v["history"], Value::Array(vec![]));

    site.veto(&["why", "nobody@example.com", "--topic", "news"])
        .succeeds()
        .stdout_has("NOT ALLOWED")
        .stdout_has("VETO-NO-RECORD")
        .stdout_has("no record of this address");
}

#[test]
fn why_a_consenting_uk_contact_is_allowed_by_their_grant() {
    let site = Site::new();
    let wording = site.veto(&["wordings", "add", "--text", "Yes, send me product news."]);
    wording.succeeds();
    let wording = wording.stdout.trim().to_owned();
    site.import(
        "contacts.csv",
        &format!(
            "email,action,topic,at,ip,jurisdiction,wording\n\
             jo@example.com,purchase,,2024-12-01T09:00:00Z,,UK,\n\
             jo@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK,{wording}\n"
        ),
        &[],
    )
    .succeeds();
    let grant = site
        .events("jo@example.com")
        .into_iter()
        .find(|e| e["kind"] == "grant")
        .expect("the grant is exported");

    let v = site.why("jo@example.com", "news");
    assert_eq!(v["decision"], "allowed", "{v:#}");
    assert_eq!(v["rule"], "PECR-22-2", "{v:#}");
    assert_eq!(v["jurisdiction"], "UK", "{v:#}");
    assert_eq!(v["known"], true, "{v:#}");
    assert_eq!(v["reason"], Value::Null, "{v:#}");
    assert_eq!(id_of(&v["event"]), id_of(&grant), "{v:#}");
    assert_eq!(v["event"]["kind"], "grant", "{v:#}");
    assert_eq!(v["event"]["at"], "2025-01-02T10:00:00Z", "{v:#}");
    assert_eq!(v["wording"]["text"], "Yes, send me product news.", "{v:#}");
    assert_eq!(v["history"].as_array().map(Vec::len), Some(2), "{v:#}");

    site.veto(&["why", "jo@example.com", "--topic", "news"])
        .succeeds()
        .stdout_has("ALLOWED under PECR-22-2 (UK)")
        .stdout_has(&format!("#{}", id_of(&grant)))
        .stdout_has("agreed to news")
        .stdout_has("IP 198.51.100.7")
        .stdout_has("Yes, send me product news.");
}

#[test]
fn why_with_an_unknown_topic_lists_the_known_ones() {
    let site = Site::new();
    site.veto(&[
        "topics",
        "add",
        "offers",
        "--name",
        "Offers",
        "--description",
        "Discounts.",
    ])
    .succeeds();
    let run = site.veto(&["why", "jo@example.com", "--topic", "sport"]);
    run.fails()
        .stderr_has("unknown topic \"sport\"")
        .stderr_has("known topics:")
        .stderr_has("news")
        .stderr_has("offers");
    assert!(run.stdout.is_empty(), "{run}");
    site.veto(&["why", "jo@example.com", "--topic", "sport", "--json"])
        .fails()
        .stderr_has("unknown topic");
}

#[test]
fn why_with_an_unknown_channel_fails() {
    let site = Site::new();
    let run = site.veto(&[
        "why",
        "jo@example.com",
        "--topic",
        "news",
        "--channel",
        "fax",
    ]);
    run.fails()
        .stderr_has("\"fax\" is not a channel")
        .stderr_has("email sms phone post");
    assert!(run.stdout.is_empty(), "{run}");
    // Each channel's consent is its own.
    site.import(
        "contacts.csv",
        &format!("{HEADER}jo@example.com,grant,news,2025-01-02T10:00:00Z,,UK\n"),
        &[],
    )
    .succeeds();
    let v = site
        .veto(&[
            "why",
            "jo@example.com",
            "--topic",
            "news",
            "--channel",
            "sms",
            "--json",
        ])
        .json();
    assert_eq!(v["channel"], "sms", "{v:#}");
    assert_eq!(
        v["decision"], "denied",
        "an email grant is not an SMS one: {v:#}"
    );
}

#[test]
fn why_with_a_bad_address_fails() {
    let site = Site::new();
    site.veto(&["why", "not-an-address", "--topic", "news"])
        .fails()
        .stderr_has("not a usable email address");
}

// ---- export and erase ----------------------------------------------------------------

#[test]
fn export_holds_the_contact_events_ip_and_wordings() {
    let site = Site::new();
    let wording = site.veto(&["wordings", "add", "--text", "Tick to get product news."]);
    wording.succeeds();
    let wording: i64 = wording.stdout.trim().parse().unwrap();
    site.import(
        "contacts.csv",
        &format!(
            "email,action,topic,at,ip,jurisdiction,wording,name,attr.plan\n\
             jo@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK,{wording},Jo Bloggs,gold\n"
        ),
        &[],
    )
    .succeeds();
    let run = site.veto(&["export", "jo@example.com"]);
    run.succeeds();
    let v = run.json();
    assert_eq!(v["contact"]["email"], "jo@example.com", "{v:#}");
    assert_eq!(v["contact"]["name"], "Jo Bloggs", "{v:#}");
    assert_eq!(v["contact"]["attributes"]["plan"], "gold", "{v:#}");
    assert_eq!(v["contact"]["erased_at"], Value::Null, "{v:#}");
    let events = v["consent_events"].as_array().expect("consent_events");
    assert_eq!(events.len(), 1, "{v:#}");
    assert_eq!(events[0]["kind"], "grant");
    assert_eq!(events[0]["topic"], "news");
    assert_eq!(events[0]["personal_data"]["ip"], "198.51.100.7", "{v:#}");
    assert_eq!(events[0]["wording"], wording);
    let wordings = v["wordings_shown"].as_array().expect("wordings_shown");
    assert_eq!(wordings.len(), 1, "{v:#}");
    assert_eq!(wordings[0]["id"], wording);
    assert_eq!(wordings[0]["text"], "Tick to get product news.");
    assert_eq!(v["messages"], Value::Array(vec![]), "{v:#}");

    site.veto(&["export", "nobody@example.com"])
        .fails()
        .stderr_has("veto holds nothing about nobody@example.com");
}

#[test]
fn erasure_removes_the_data_and_the_no_sticks() {
    let site = Site::new();
    site.import(
        "contacts.csv",
        &format!(
            "{HEADER}\
             jo@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
             al@example.com,grant,news,2025-01-02T10:00:00Z,,UK\n"
        ),
        &[],
    )
    .succeeds();
    assert_eq!(site.decision("jo@example.com", "news").0, "allowed");

    site.veto(&["erase", "jo@example.com"])
        .succeeds()
        .stdout_has("erased jo@example.com");

    // Export: nothing but the fact of the erasure.
    let run = site.veto(&["export", "jo@example.com"]);
    run.fails()
        .stderr_has("erased")
        .prints_nowhere("198.51.100.7");

    // Why: denied, by the suppression list.
    let v = site.why("jo@example.com", "news");
    assert_eq!(v["decision"], "denied", "{v:#}");
    assert!(
        v["reason"] == "suppressed" || v["rule"] == "ICO-SUPP",
        "{v:#}"
    );
    assert!(!v.to_string().contains("198.51.100.7"), "{v:#}");

    // A new import of the address (a grant) is refused, whatever its case.
    site.import(
        "again.csv",
        &format!(
            "{HEADER}\
             jo@example.com,grant,news,2025-06-01T10:00:00Z,192.0.2.1,UK\n\
             Jo@EXAMPLE.com,grant,news,2025-06-02T10:00:00Z,,UK\n"
        ),
        &[],
    )
    .exits(3)
    .stderr_has("line 2: not imported")
    .stderr_has("line 3: not imported")
    .stderr_has("suppression list")
    .stdout_has("imported 0 rows (0 new contacts); refused 2");
    let v = site.why("jo@example.com", "news");
    assert_eq!(v["decision"], "denied", "{v:#}");
    site.veto(&["export", "jo@example.com"])
        .fails()
        .stderr_has("erased");

    // Erasing again is harmless; the other contact is untouched.
    site.veto(&["erase", "jo@example.com"])
        .succeeds()
        .stdout_has("already erased");
    assert_eq!(site.decision("al@example.com", "news").0, "allowed");
    site.veto(&["erase", "nobody@example.com"])
        .fails()
        .stderr_has("veto holds nothing about nobody@example.com");

    // The audit chain still verifies after an erasure.
    site.veto(&["audit", "verify"]).succeeds().stdout_has("ok");
}

// ---- audit ---------------------------------------------------------------------------

/// A store with jo (grant, then withdraw) and al (grant); returns jo's events.
fn audited_site() -> (Site, Vec<Value>) {
    let site = Site::new();
    site.import(
        "contacts.csv",
        &format!(
            "{HEADER}\
             jo@example.com,grant,news,2025-01-01T10:00:00Z,198.51.100.7,UK\n\
             jo@example.com,withdraw,news,2025-02-01T10:00:00Z,198.51.100.7,\n\
             al@example.com,grant,news,2025-01-01T10:00:00Z,,UK\n"
        ),
        &[],
    )
    .succeeds();
    let events = site.events("jo@example.com");
    assert!(events.len() >= 2, "{events:#?}");
    (site, events)
}

#[test]
fn audit_verify_passes_on_an_untouched_store() {
    let site = Site::new();
    site.veto(&["audit", "verify"]).succeeds().stdout_has("ok");
    let (site, _) = audited_site();
    let run = site.veto(&["audit", "verify"]);
    run.succeeds().stdout_has("ok: 3 events");
    let v = site.veto(&["audit", "verify", "--json"]).json();
    assert_eq!(v["problems"], Value::Array(vec![]), "{v:#}");
    assert_eq!(v["events"], 3, "{v:#}");
}

#[test]
fn audit_verify_names_an_altered_event() {
    let (site, events) = audited_site();
    let withdraw = events
        .iter()
        .find(|e| e["kind"] == "withdraw")
        .expect("a withdraw event");
    let id = id_of(withdraw);
    // Someone turns the "no" into a "yes" behind veto's back.
    site.tamper(&format!("UPDATE events SET kind = 'grant' WHERE id = {id}"));

    let run = site.veto(&["audit", "verify"]);
    run.exits(1)
        .stdout_has("TAMPERED")
        .stdout_has(&format!("event #{id} was altered"));
    let run = site.veto(&["audit", "verify", "--json"]);
    run.exits(1);
    let v = run.json();
    let problems = v["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{v:#}");
    assert_eq!(problems[0]["event"], id, "{v:#}");
    assert_eq!(
        problems[0]["partition"], withdraw["chain"]["partition"],
        "{v:#}"
    );
}

#[test]
fn audit_verify_detects_a_deleted_newest_event() {
    let (site, events) = audited_site();
    let newest = events
        .iter()
        .max_by_key(|e| e["chain"]["seq"].as_i64())
        .unwrap();
    site.tamper(&format!("DELETE FROM events WHERE id = {}", id_of(newest)));

    site.veto(&["audit", "verify"])
        .exits(1)
        .stdout_has("TAMPERED")
        .stdout_has("the newest events were deleted");
    let run = site.veto(&["audit", "verify", "--json"]);
    run.exits(1);
    let v = run.json();
    let problems = v["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{v:#}");
    assert_eq!(
        problems[0]["partition"], newest["chain"]["partition"],
        "{v:#}"
    );
    assert!(
        problems[0]["problem"].as_str().unwrap().contains("deleted"),
        "{v:#}"
    );
}

#[test]
fn audit_verify_detects_a_deleted_event_inside_a_chain() {
    let (site, events) = audited_site();
    let first = events
        .iter()
        .find(|e| e["chain"]["seq"] == 1)
        .expect("a first event");
    let second = events
        .iter()
        .find(|e| e["chain"]["seq"] == 2)
        .expect("a second event");
    site.tamper(&format!("DELETE FROM events WHERE id = {}", id_of(first)));
    let run = site.veto(&["audit", "verify", "--json"]);
    run.exits(1);
    let v = run.json();
    assert_eq!(v["problems"][0]["event"], id_of(second), "{v:#}");
    assert!(
        v["problems"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("deleted or reordered"),
        "{v:#}"
    );
}

#[test]
fn audit_verify_detects_altered_personal_data() {
    let (site, events) = audited_site();
    let first = id_of(&events[0]);
    site.tamper(&format!(
        "UPDATE personal_data SET body = replace(body, '198.51.100.7', '10.0.0.1') \
         WHERE id = (SELECT pd_id FROM events WHERE id = {first})"
    ));
    site.veto(&["audit", "verify"])
        .exits(1)
        .stdout_has(&format!("of event #{first} was altered"));
}

// ---- check -------------------------------------------------------------------------

/// The configuration `veto init` wrote, with `edits` (old, new) applied.
fn edited_config(site: &Site, name: &str, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(site.path("veto.toml")).unwrap();
    for (old, new) in edits {
        assert!(text.contains(old), "{old:?} is not in veto.toml");
        text = text.replacen(old, new, 1);
    }
    site.write(name, text);
}

#[test]
fn check_passes_on_a_fresh_site() {
    let site = Site::new();
    site.veto(&["check"])
        .succeeds()
        .stdout_has("configuration: veto.toml")
        .stdout_has("store: sqlite")
        .stdout_has("topics: 1")
        .stdout_has("contacts: 0")
        .stdout_has("ok");
}

#[test]
fn check_reports_every_problem_at_once() {
    let site = Site::new();
    edited_config(
        &site,
        "bad.toml",
        &[
            ("listen = \"127.0.0.1:8080\"", "listen = \"localhost-ish\""),
            (
                "default_jurisdictions = [\"UK\", \"EU\"]",
                "default_jurisdictions = [\"UK\", \"XX\"]",
            ),
            ("bulk_threshold = 100", "bulk_threshold = \"lots\""),
        ],
    );
    let run = site.veto(&["--config", "bad.toml", "check"]);
    run.fails()
        .stderr_has("3 problems")
        .stderr_has("[web] listen")
        .stderr_has("\"localhost-ish\" is not a socket address")
        .stderr_has("[policy] default_jurisdictions")
        .stderr_has("\"XX\" is not a jurisdiction")
        .stderr_has("[service] bulk_threshold")
        .stderr_has("\"lots\"")
        .stderr_has("bad.toml:");
    assert!(!run.stdout.contains("ok"), "{run}");

    // Any other command refuses the same configuration.
    site.veto(&["--config", "bad.toml", "topics", "list"])
        .fails()
        .stderr_has("3 problems");
}

#[test]
fn check_reports_environment_overrides() {
    let site = Site::new();
    site.veto_env(&["check"], &[("VETO_WEB__LISTEN", "nonsense")])
        .fails()
        .stderr_has("VETO_WEB__LISTEN")
        .stderr_has("\"nonsense\" is not a socket address");

    // Together with the file's problems.
    edited_config(
        &site,
        "bad.toml",
        &[
            (
                "default_jurisdictions = [\"UK\", \"EU\"]",
                "default_jurisdictions = [\"UK\", \"XX\"]",
            ),
            ("bulk_threshold = 100", "bulk_threshold = \"lots\""),
        ],
    );
    site.veto_env(
        &["--config", "bad.toml", "check"],
        &[("VETO_WEB__LISTEN", "nonsense")],
    )
    .fails()
    .stderr_has("3 problems")
    .stderr_has("VETO_WEB__LISTEN")
    .stderr_has("[policy] default_jurisdictions")
    .stderr_has("[service] bulk_threshold");

    // A good override is used.
    site.veto_env(
        &["check"],
        &[("VETO_POLICY__DEFAULT_JURISDICTIONS", "[\"US\"]")],
    )
    .succeeds()
    .stdout_has("default jurisdictions US");
}

#[test]
fn check_warns_about_unknown_keys_but_passes() {
    let site = Site::new();
    edited_config(
        &site,
        "typo.toml",
        &[("[web]\n", "[web]\nlisten_port = 9000\n")],
    );
    site.veto(&["--config", "typo.toml", "check"])
        .succeeds()
        .stderr_has("warning:")
        .stderr_has("unknown key [web] listen_port")
        .stdout_has("ok");
    site.veto_env(&["check"], &[("VETO_WEB_LISTEN", "0.0.0.0:80")])
        .succeeds()
        .stderr_has("warning: VETO_WEB_LISTEN");
}

#[test]
fn check_never_prints_the_store_password() {
    let site = Site::new();
    let port = hang_up_server();
    let reachable = format!("postgres://u:hunter2@127.0.0.1:{port}/x");

    // In the file: the connection fails.
    edited_config(
        &site,
        "pg.toml",
        &[("url = \"\"", &format!("url = \"{reachable}\""))],
    );
    site.veto(&["--config", "pg.toml", "check"])
        .fails()
        .stderr_has("[store] url")
        .prints_nowhere("hunter2");

    // From the environment, with a connection failure, a URL that does not
    // parse, and a URL that is not PostgreSQL.
    for url in [
        reachable.clone(),
        format!("{reachable}?sslmode=bogus"),
        "postgres://u:hunter2@127.0.0.1:99999/x".to_owned(),
        "mysql://u:hunter2@127.0.0.1/x".to_owned(),
    ] {
        site.veto_env(&["check"], &[("VETO_STORE__URL", &url)])
            .fails()
            .stderr_has("[store] url")
            .prints_nowhere("hunter2");
    }

    // Next to other problems in the file.
    edited_config(
        &site,
        "pg-bad.toml",
        &[
            ("url = \"\"", "url = \"mysql://u:hunter2@127.0.0.1/x\""),
            ("bulk_threshold = 100", "bulk_threshold = \"lots\""),
        ],
    );
    site.veto(&["--config", "pg-bad.toml", "check"])
        .fails()
        .stderr_has("2 problems")
        .prints_nowhere("hunter2");

    // Any other command that opens the store keeps it quiet as well.
    site.veto_env(&["topics", "list"], &[("VETO_STORE__URL", &reachable)])
        .fails()
        .prints_nowhere("hunter2");
}

#[test]
fn check_with_a_missing_explicit_config_fails() {
    let site = Site::empty();
    site.veto(&["--config", "nowhere.toml", "check"])
        .fails()
        .stderr_has("nowhere.toml")
        .stderr_has("not found");
    assert!(!site.path("veto-data").exists());
}

// ---- known product bugs (see the report); remove `ignore` once fixed ---------------------

#[test]
fn init_that_fails_can_be_run_again() {
    let site = Site::empty();
    site.veto_env(&["init", "."], &[("VETO_WEB__LISTEN", "nonsense")])
        .fails()
        .stderr_has("VETO_WEB__LISTEN");
    assert!(!site.db().exists());
    // With the environment fixed, init should now create the store.
    site.veto(&["init", "."]).succeeds();
    assert!(site.db().is_file());
}

#[test]
fn why_for_an_erased_address_does_not_say_there_is_no_record() {
    let site = Site::new();
    site.import(
        "contacts.csv",
        &format!("{HEADER}jo@example.com,grant,news,2025-01-02T10:00:00Z,,UK\n"),
        &[],
    )
    .succeeds();
    site.veto(&["erase", "jo@example.com"]).succeeds();
    let run = site.veto(&["why", "jo@example.com", "--topic", "news"]);
    run.succeeds().stdout_has("ICO-SUPP");
    assert!(
        !run.stdout.contains("no record of this address"),
        "the text contradicts the decision: {run}"
    );
}

// ---- staff users and the staff audit trail ----------------------------------------------

#[test]
fn users_add_reads_the_password_from_a_file_or_stdin_and_list_shows_them() {
    let site = Site::new();
    let pw = site.write("pw.txt", "correct horse battery staple\n");
    site.veto(&["users", "list"])
        .succeeds()
        .stdout_has("no users yet");
    site.veto(&[
        "users",
        "add",
        "ada",
        "--role",
        "admin",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .succeeds()
    .stdout_has("added admin user ada (id 1)")
    .prints_nowhere("correct horse");
    // Piped in, as a provisioning script would.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veto"));
    cmd.args(["users", "add", "dana", "--role", "dpo"])
        .current_dir(site.dir.path())
        .env_clear()
        .env("HOME", site.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn veto");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"another long passphrase\n")
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = site.veto(&["users", "list"]);
    run.succeeds()
        .stdout_has("ada")
        .stdout_has("admin")
        .stdout_has("dana")
        .stdout_has("dpo");
    let v = site.veto(&["users", "list", "--json"]).json();
    assert_eq!(v[1]["name"], "dana", "{v:#}");
    assert_eq!(v[1]["role"], "dpo", "{v:#}");
    assert_eq!(v[1]["disabled"], false, "{v:#}");
    assert!(
        !v.to_string().contains("argon2"),
        "no hash is listed: {v:#}"
    );

    site.veto(&[
        "users",
        "add",
        "ada",
        "--role",
        "viewer",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .fails()
    .stderr_has("already a user named \"ada\"");
    let short = site.write("short.txt", "short\n");
    site.veto(&[
        "users",
        "add",
        "bo",
        "--role",
        "viewer",
        "--password-file",
        short.to_str().unwrap(),
    ])
    .fails()
    .stderr_has("at least 12 characters");
    site.veto(&[
        "users",
        "add",
        "bo",
        "--role",
        "boss",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .fails()
    .stderr_has("--role");
    let v = site.veto(&["users", "list", "--json"]).json();
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(2),
        "nothing more was added: {v:#}"
    );
}

#[test]
fn admin_commands_are_recorded_and_audit_verify_names_an_edited_staff_action() {
    let site = Site::new();
    let pw = site.write("pw.txt", "correct horse battery staple\n");
    let env = [("USER", "sam")];
    site.veto_env(
        &[
            "users",
            "add",
            "ada",
            "--role",
            "admin",
            "--password-file",
            pw.to_str().unwrap(),
        ],
        &env,
    )
    .succeeds();
    site.veto_env(&["keys", "create", "--role", "viewer"], &env)
        .succeeds();
    site.veto(&["audit", "verify"])
        .succeeds()
        .stdout_has("3 staff actions verified");
    let v = site.veto(&["audit", "verify", "--json"]).json();
    assert_eq!(v["staff_actions"], 3, "{v:#}");
    assert!(v["staff_problem"].is_null(), "{v:#}");

    // Someone makes it look as if another person created the key.
    site.tamper("UPDATE staff_audit SET actor = 'cli:nobody' WHERE seq = 3");
    site.veto(&["audit", "verify"])
        .exits(1)
        .stdout_has("TAMPERED")
        .stdout_has("staff audit trail: staff action #3 (keys.create by cli:nobody) was altered");
    let v = site.veto(&["audit", "verify", "--json"]).json();
    assert_eq!(v["staff_problem"]["seq"], 3, "{v:#}");
}

// ---- telephone preference screening ------------------------------------------------

#[test]
fn tps_import_screens_calls_and_a_bad_file_changes_nothing() {
    let site = Site::new();
    site.import(
        "people.csv",
        "email,action,channel,at,jurisdiction,phone\n\
         listed@example.com,purchase,phone,2026-01-05T10:00:00Z,UK,+447700900002\n\
         free@example.com,purchase,phone,2026-01-05T10:00:00Z,UK,+447700900001\n",
        &[],
    )
    .succeeds();
    let call = |email: &str| {
        let run = site.veto(&[
            "why",
            email,
            "--topic",
            "news",
            "--channel",
            "phone",
            "--json",
        ]);
        run.succeeds();
        let v = run.json();
        (
            v["decision"].as_str().unwrap_or_default().to_owned(),
            v["reason"].as_str().unwrap_or("").to_owned(),
        )
    };
    // No list loaded: a call to a customer needs screening first.
    assert_eq!(
        call("free@example.com"),
        ("denied".into(), "tps_not_screened".into())
    );
    site.veto(&["tps", "status"])
        .succeeds()
        .stdout_has("no telephone preference list is loaded");

    // A file with a bad row loads nothing, and says where.
    site.write(
        "tps.csv",
        "number,listed_on\n01632 960000,2026-01-01\n+44x,2026-01-01\n+447700900003,01/01/2026\n",
    );
    site.veto(&["tps", "import", "tps.csv"])
        .fails()
        .stderr_has("line 3: number:")
        .stderr_has("line 4: listed_on:")
        .stderr_has("2 bad row(s); nothing was loaded");
    assert_eq!(call("free@example.com").1, "tps_not_screened");

    site.write(
        "tps.csv",
        "number,listed_on\n07700 900002,2026-01-01\n+447700900009,2026-11-30\n",
    );
    site.veto(&["tps", "import", "tps.csv"])
        .succeeds()
        .stdout_has("loaded the tps list: 2 numbers");
    assert_eq!(call("free@example.com"), ("allowed".into(), String::new()));
    assert_eq!(
        call("listed@example.com"),
        ("denied".into(), "tps_listed".into())
    );
    site.veto(&[
        "why",
        "listed@example.com",
        "--topic",
        "news",
        "--channel",
        "phone",
    ])
    .succeeds()
    .stdout_has("NOT ALLOWED")
    .stdout_has("+447700900002 is on the preference lists since");
    let status = site.veto(&["tps", "status", "--json"]);
    status.succeeds();
    let v = status.json();
    assert_eq!(v[0]["list"], "tps", "{v:#}");
    assert_eq!(v[0]["numbers"], 2, "{v:#}");
    assert_eq!(v[0]["stale"], false, "{v:#}");

    // Data older than 28 days is stale: calls that need screening stop.
    site.veto(&["tps", "import", "tps.csv", "--as-of", "2026-01-01"])
        .succeeds();
    assert_eq!(call("free@example.com").1, "tps_screening_stale");
    site.veto(&["tps", "status"]).succeeds().stdout_has("STALE");
    site.veto(&["tps", "import", "tps.csv", "--list", "dnc"])
        .fails()
        .stderr_has("not a telephone preference list");
}

// ---- data-subject requests ----------------------------------------------------------------

#[test]
fn requests_are_added_checked_extended_answered_and_listed_with_their_deadlines() {
    let site = Site::new();
    site.import(
        "contacts.csv",
        &format!("{HEADER}jo@example.com,grant,news,2025-01-02T10:00:00Z,,UK\n"),
        &[],
    )
    .succeeds();
    site.veto(&[
        "requests",
        "add",
        "--kind",
        "access",
        "--email",
        "jo@example.com",
        "--via",
        "letter",
    ])
    .succeeds()
    .stdout_has("#1 access (Art 15) open")
    .stdout_has("contact #1");
    site.veto(&[
        "requests",
        "add",
        "--kind",
        "erasure",
        "--email",
        "jo@example.com",
        "--received-at",
        "2026-01-31T09:00:00Z",
    ])
    .succeeds()
    .stdout_has("due 2026-02-28, OVERDUE");
    site.veto(&[
        "requests",
        "add",
        "--kind",
        "gossip",
        "--email",
        "jo@example.com",
    ])
    .fails()
    .stderr_has("--kind must be access, portability, erasure");

    // Done before the identity check, or an erasure before `veto erase`: refused.
    site.veto(&["requests", "answer", "1"])
        .fails()
        .stderr_has("before the person's identity is checked");
    site.veto(&[
        "requests",
        "check",
        "1",
        "--how",
        "reply from the address on file",
    ])
    .succeeds()
    .stdout_has("identity checked");
    site.veto(&[
        "requests",
        "extend",
        "1",
        "--reason",
        "the archive is on paper",
    ])
    .succeeds()
    .stdout_has("extended from");
    site.veto(&["requests", "extend", "1", "--reason", "again"])
        .fails()
        .stderr_has("extended already");
    site.veto(&["requests", "extend", "2", "--reason", "late"])
        .fails()
        .stderr_has("has passed");
    site.veto(&["requests", "check", "2", "--how", "signed letter"])
        .succeeds();
    site.veto(&["requests", "answer", "2"])
        .fails()
        .stderr_has("has not been erased");

    site.veto(&["requests", "list"])
        .succeeds()
        .stdout_has("#1 access")
        .stdout_has("#2 erasure")
        .stdout_has("2 open, 0 due within 7 days, 1 overdue");
    let v = site
        .veto(&["requests", "list", "--status", "overdue", "--json"])
        .succeeds()
        .json();
    let rows = v.as_array().expect("a list");
    assert_eq!(rows.len(), 1, "{v:#}");
    assert_eq!(rows[0]["id"], 2, "{v:#}");
    assert!(rows[0]["days_left"].as_i64().expect("days") < 0, "{v:#}");

    site.veto(&["erase", "jo@example.com"]).succeeds();
    site.veto(&["requests", "answer", "2"])
        .succeeds()
        .stdout_has("answered");
    site.veto(&[
        "requests",
        "answer",
        "1",
        "--refuse",
        "manifestly excessive (Art 12(5))",
    ])
    .succeeds()
    .stdout_has("refused: manifestly excessive");
    let v = site
        .veto(&["requests", "list", "--status", "all", "--json"])
        .succeeds()
        .json();
    let rows = v.as_array().expect("a list");
    assert_eq!(rows.len(), 2, "{v:#}");
    assert_eq!(
        v[1]["email"],
        Value::Null,
        "the erasure blanked the address: {v:#}"
    );
    assert_eq!(v[0]["email"], Value::Null, "{v:#}");
    for row in rows {
        assert!(row["answered_at"].is_string(), "{v:#}");
    }
    site.veto(&["requests", "list"])
        .succeeds()
        .stdout_has("no requests");

    // Each change is in the staff audit trail, as the CLI's, and the trail verifies.
    assert_eq!(
        site.column(
            "SELECT action || ' ' || target FROM staff_audit \
             WHERE action LIKE 'requests.%' ORDER BY seq"
        ),
        [
            "requests.create request:1",
            "requests.create request:2",
            "requests.identity_checked request:1",
            "requests.extend request:1",
            "requests.identity_checked request:2",
            "requests.answer request:2",
            "requests.answer request:1",
        ]
    );
    site.veto(&["audit", "verify"]).succeeds().stdout_has("ok");
}
