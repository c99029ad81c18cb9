//! Campaigns end to end: the real `veto serve` sends a throttled campaign
//! to an SMTP sink (aiosmtpd) while people unsubscribe with one-click POSTs
//! in the middle of it, and a second run is SIGKILLed mid-campaign and
//! restarted.
//!
//! What is asserted is what a person and a DPO would see: who received a
//! message and when (the sink's clock), the one-click's 200 and when it came,
//! and the receipts in the store.
//!
//! Runs only with `VETO_TEST_E2E=1` (it needs `/usr/bin/python3` with
//! aiosmtpd, and then fails without it); otherwise it says it was skipped.

mod e2e;

use e2e::{E2E_VAR, Server, free_port, run, show, veto, wait_for_port};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PYTHON: &str = "/usr/bin/python3";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

fn require_aiosmtpd() {
    let found = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{E2E_VAR}=1 but {PYTHON} cannot import aiosmtpd (apt-get install python3-aiosmtpd)"
    );
}

fn start_sink(file: &Path, port: u16) -> Server {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/campaign_sink.py");
    let mut child = Command::new(PYTHON)
        .arg(script)
        .arg(file)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the aiosmtpd sink");
    let mut ready = [0u8; 6];
    let mut stdout = child.stdout.take().expect("its stdout");
    stdout
        .read_exact(&mut ready)
        .expect("the sink says it is ready");
    assert_eq!(&ready, b"ready\n");
    child.stdout = Some(stdout);
    Server(child)
}

/// What the sink received: recipient → (time, Message-ID, List-Unsubscribe) per copy.
fn received(file: &Path) -> BTreeMap<String, Vec<(f64, String, String)>> {
    let mut out: BTreeMap<String, Vec<(f64, String, String)>> = BTreeMap::new();
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line from the sink");
        let to = v["to"].as_array().expect("recipients");
        assert_eq!(to.len(), 1, "a copy is for one person: {v}");
        out.entry(to[0].as_str().expect("an address").to_owned())
            .or_default()
            .push((
                v["t"].as_f64().expect("a time"),
                v["mid"].as_str().unwrap_or("").to_owned(),
                v["unsubscribe"].as_str().unwrap_or("").to_owned(),
            ));
    }
    out
}

/// A small HTTP/1.1 request; returns the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
    form: bool,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to veto");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let kind = if form {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read the response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Chunked bodies: keep the JSON between the chunk sizes.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_owned(),
        _ => body,
    };
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
    web_port: u16,
    smtp_port: u16,
    sink_file: std::path::PathBuf,
    key: String,
}

/// A store with `consenting` people who agreed to news and `withdrawn` who
/// agreed and then withdrew, an upstream sink, and a marketer key.
fn setup(consenting: usize, withdrawn: usize) -> (Setup, Server) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().to_path_buf();
    let (smtp_port, web_port, sink_port) = (free_port(), free_port(), free_port());
    let env = vec![
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
        (
            "VETO_DELIVERY__UPSTREAM",
            format!("smtp://127.0.0.1:{sink_port}"),
        ),
        ("VETO_DELIVERY__TLS", "none".to_owned()),
        ("VETO_DELIVERY__TIMEOUT", "10s".to_owned()),
    ];
    run(&dir, &["init", "."], &env);
    run(
        &dir,
        &[
            "topics",
            "add",
            "news",
            "--name",
            "Product news",
            "--description",
            "What we made this month.",
        ],
        &env,
    );
    let mut csv = String::from("email,action,topic,at,ip,jurisdiction\n");
    for i in 0..consenting {
        csv.push_str(&format!(
            "r{i:05}@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n"
        ));
    }
    for i in 0..withdrawn {
        csv.push_str(&format!(
            "w{i:05}@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n"
        ));
        csv.push_str(&format!(
            "w{i:05}@example.com,withdraw,news,2025-06-02T10:00:00Z,,\n"
        ));
    }
    std::fs::write(dir.join("contacts.csv"), csv).expect("write the import");
    run(&dir, &["import", "contacts", "contacts.csv"], &env);
    let key = run(&dir, &["keys", "create", "--role", "marketer"], &env)
        .trim()
        .to_owned();
    let sink_file = dir.join("sink.jsonl");
    let sink = start_sink(&sink_file, sink_port);
    (
        Setup {
            _tmp: tmp,
            dir,
            env,
            web_port,
            smtp_port,
            sink_file,
            key,
        },
        sink,
    )
}

fn start_veto(s: &Setup) -> Server {
    let mut server = Server(
        veto(&s.dir, &["serve"], &s.env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start veto serve"),
    );
    wait_for_port(s.smtp_port, &mut server);
    wait_for_port(s.web_port, &mut server);
    server
}

fn create_campaign(s: &Setup, rate: f64) -> i64 {
    let body = serde_json::json!({
        "name": "Winter news",
        "topic": "news",
        "from": "news@shop.example",
        "from_name": "Shop",
        "subject": "Winter news for {{ name or email }}",
        "text": "Hello {{ name }},\n\nWhat we made this winter.\n",
        "html": "<p>Hello {{ name }},</p><p>What we made this winter.</p>",
        "rate": rate,
        "concurrency": 4,
    });
    let (status, body) = http(
        s.web_port,
        "POST",
        "/api/v1/campaigns",
        Some(&s.key),
        &body.to_string(),
        false,
    );
    assert_eq!(status, 201, "create: {body}");
    json(&body)["campaign"]["id"].as_i64().expect("an id")
}

fn campaign(s: &Setup, id: i64) -> serde_json::Value {
    let (status, body) = http(
        s.web_port,
        "GET",
        &format!("/api/v1/campaigns/{id}"),
        Some(&s.key),
        "",
        false,
    );
    assert_eq!(status, 200, "show: {body}");
    json(&body)["campaign"].clone()
}

/// `checked_at` (µs) of every allowed receipt of campaign `id`, by recipient.
fn receipts(dir: &Path, id: i64) -> BTreeMap<String, Vec<i64>> {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import sqlite3, sys, json\n\
             c = sqlite3.connect(sys.argv[1])\n\
             rows = c.execute(\"SELECT recipient, checked_at FROM receipts WHERE allowed = 1 AND message_id LIKE ?\", (sys.argv[2],)).fetchall()\n\
             print(json.dumps(rows))",
        ])
        .arg(dir.join("veto-data").join("veto.db"))
        .arg(format!("<campaign-{id}.%"))
        .output()
        .expect("read the receipts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, i64)> = serde_json::from_slice(&out.stdout).expect("receipts as JSON");
    let mut by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (to, at) in rows {
        by.entry(to).or_default().push(at);
    }
    by
}

/// When each address's withdrawal was committed (µs), from the ledger.
fn withdrawals(dir: &Path) -> BTreeMap<String, i64> {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import sqlite3, sys, json\n\
             c = sqlite3.connect(sys.argv[1])\n\
             rows = c.execute(\"SELECT c.email, MAX(e.recorded_at) FROM events e JOIN contacts c ON c.id = e.contact_id WHERE e.kind = 'withdraw' GROUP BY c.email\").fetchall()\n\
             print(json.dumps(rows))",
        ])
        .arg(dir.join("veto-data").join("veto.db"))
        .output()
        .expect("read the ledger");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, i64)> = serde_json::from_slice(&out.stdout).expect("events as JSON");
    rows.into_iter().collect()
}

/// The distinct outcomes in the receipts, for failure messages.
fn outcomes(dir: &Path) -> String {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             print(c.execute(\"SELECT outcome, COUNT(*) FROM receipts GROUP BY outcome LIMIT 20\").fetchall())",
        ])
        .arg(dir.join("veto-data").join("veto.db"))
        .output()
        .expect("read the receipts");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_done(s: &Setup, id: i64, deadline: Instant) -> serde_json::Value {
    loop {
        let c = campaign(s, id);
        if c["state"] == "done" {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign did not finish in time: {c}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn unsubscribes_during_a_campaign_stop_the_message_before_the_200() {
    if !e2e::enabled("campaign race test") {
        return;
    }
    require_aiosmtpd();
    const CONSENTING: usize = 10_000;
    const WITHDRAWN: usize = 200;
    // 10,200 recipients at 450/s: about 23 s.
    const RATE: f64 = 450.0;
    let (s, _sink) = setup(CONSENTING, WITHDRAWN);
    // 1% of the audience will unsubscribe while the campaign goes out.
    let racers: Vec<String> = (0..CONSENTING)
        .step_by(100)
        .map(|i| format!("r{:05}@example.com", i + 37))
        .collect();
    let links: Vec<String> = racers
        .iter()
        .map(|to| {
            let out = run(&s.dir, &["link", to, "--topic", "news"], &s.env);
            let url = out
                .lines()
                .nth(1)
                .expect("the one-click link")
                .trim()
                .to_owned();
            url.split_once("127.0.0.1")
                .map(|(_, rest)| {
                    rest.split_once('/')
                        .map(|(_, p)| format!("/{p}"))
                        .unwrap_or_default()
                })
                .expect("a local URL")
        })
        .collect();
    let _veto = start_veto(&s);
    let id = create_campaign(&s, RATE);
    let (status, body) = http(
        s.web_port,
        "POST",
        &format!("/api/v1/campaigns/{id}/start"),
        Some(&s.key),
        "",
        false,
    );
    assert_eq!(status, 200, "start: {body}");
    let started = now();

    // The unsubscribes: each fired when the sender's progress comes near
    // that person (contacts go out in id order), a little before or after
    // them, so some land just ahead of their message and some just behind.
    let port = s.web_port;
    let key = s.key.clone();
    let plan: Vec<(i64, String, String)> = racers
        .iter()
        .zip(&links)
        .enumerate()
        .map(|(i, (to, path))| {
            let position = (i * 100 + 37) as i64;
            let offset = [-40, -12, -4, 0, 4, 12, 40][i % 7];
            (position + offset, to.clone(), path.clone())
        })
        .collect();
    let racing = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        let mut done = 0i64;
        for (at, to, path) in plan {
            while done < at {
                let (_, body) = http(
                    port,
                    "GET",
                    &format!("/api/v1/campaigns/{id}"),
                    Some(&key),
                    "",
                    false,
                );
                let p = &json(&body)["campaign"]["progress"];
                done = ["sent", "failed"]
                    .iter()
                    .map(|k| p[k].as_i64().unwrap_or(0))
                    .sum::<i64>()
                    + p["refused"]
                        .as_object()
                        .map_or(0, |r| r.values().filter_map(|v| v.as_i64()).sum());
                if done < at {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let (status, body) = http(
                port,
                "POST",
                &path,
                None,
                "List-Unsubscribe=One-Click",
                true,
            );
            assert_eq!(status, 200, "one-click for {to}: {body}");
            acknowledged.push((to, now()));
        }
        acknowledged
    });
    let c = wait_done(&s, id, Instant::now() + Duration::from_secs(150));
    let acknowledged = racing.join().expect("the one-click thread");
    let took = now() - started;
    assert!(
        took >= 20.0,
        "the campaign was meant to last at least 20 s; it took {took:.1} s"
    );

    let got = received(&s.sink_file);
    let checked = receipts(&s.dir, id);
    let committed = withdrawals(&s.dir);
    // Nobody who withdrew before the start got anything.
    for i in 0..WITHDRAWN {
        let to = format!("w{i:05}@example.com");
        assert!(
            !got.contains_key(&to),
            "{to} withdrew before the campaign and got it"
        );
    }
    // Everyone who unsubscribed mid-campaign: a message, if any, was checked
    // by the guard and handed off before their one-click's 200.
    let racer_set: BTreeSet<&String> = acknowledged.iter().map(|(to, _)| to).collect();
    let mut before = 0;
    let mut in_commit_window = 0;
    for (to, at) in &acknowledged {
        let Some(copies) = got.get(to) else { continue };
        before += 1;
        assert_eq!(copies.len(), 1, "{to} got {} copies", copies.len());
        let (t, _, _) = &copies[0];
        assert!(
            t < at,
            "{to}'s message reached the sink at {t:.6}, after their one-click's 200 at {at:.6}"
        );
        let checks = checked
            .get(to)
            .unwrap_or_else(|| panic!("no receipt for {to}"));
        assert!(
            checks.iter().all(|c| (*c as f64) / 1e6 < *at),
            "{to}'s guard check {checks:?} came after their one-click's 200 at {at:.6}"
        );
        // The ledger stamps a withdrawal (`recorded_at`) just before its
        // transaction commits, and the one-click answers 200 only after the
        // commit. A check between the two still reads the state before the
        // withdrawal (it is not committed yet), so it may admit; the 200
        // above bounds it. Count those checks, made while the commit was
        // in flight.
        let w = committed
            .get(to)
            .unwrap_or_else(|| panic!("no withdrawal of {to} in the ledger"));
        if checks.iter().any(|c| c >= w) {
            in_commit_window += 1;
        }
    }
    println!(
        "{before} of {} mid-campaign unsubscribers got the message, checked and handed off before their 200; \
         {in_commit_window} of those checks fell between the withdrawal's ledger stamp and its commit",
        acknowledged.len()
    );
    // Everyone else who agreed got exactly one message, with their own link.
    let mut links_seen = BTreeSet::new();
    for i in 0..CONSENTING {
        let to = format!("r{i:05}@example.com");
        if racer_set.contains(&to) {
            continue;
        }
        let copies = got
            .get(&to)
            .unwrap_or_else(|| panic!("{to} agreed and got nothing: {c} {}", outcomes(&s.dir)));
        assert_eq!(copies.len(), 1, "{to} got {} copies", copies.len());
        assert!(
            copies[0].1.starts_with(&format!("<campaign-{id}.")),
            "{:?}",
            copies[0]
        );
        assert!(
            copies[0].2.contains("/u/"),
            "no one-click link: {:?}",
            copies[0]
        );
        links_seen.insert(copies[0].2.clone());
    }
    assert_eq!(
        links_seen.len(),
        CONSENTING - racer_set.len(),
        "each person's link is their own"
    );
    let delivered: usize = got.values().map(Vec::len).sum();
    let p = &c["progress"];
    assert_eq!(p["sent"].as_u64(), Some(delivered as u64), "{c}");
    assert_eq!(
        p["refused"]["withdrawn"].as_u64(),
        Some((WITHDRAWN + acknowledged.len() - before) as u64),
        "{c}"
    );
    assert!(
        before > 0 && before < acknowledged.len(),
        "the unsubscribes were meant to land on both sides of their messages: {before} of {} were sent first",
        acknowledged.len()
    );
    println!(
        "campaign race: {delivered} delivered in {took:.1} s; of {} mid-campaign unsubscribes, {before} came after their message went out, {} stopped it; longest guard check to hand-off: {} us",
        acknowledged.len(),
        acknowledged.len() - before,
        c["longest_check_to_handoff_us"]
    );
}

#[test]
fn a_campaign_killed_mid_send_resumes_and_skips_nobody() {
    if !e2e::enabled("campaign kill test") {
        return;
    }
    require_aiosmtpd();
    const CONSENTING: usize = 2_000;
    const WITHDRAWN: usize = 50;
    const KILLS: usize = 3;
    let (s, _sink) = setup(CONSENTING, WITHDRAWN);
    let mut server = start_veto(&s);
    let id = create_campaign(&s, 250.0);
    let (status, body) = http(
        s.web_port,
        "POST",
        &format!("/api/v1/campaigns/{id}/start"),
        Some(&s.key),
        "",
        false,
    );
    assert_eq!(status, 200, "start: {body}");
    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(1200 + 700 * k as u64));
        // SIGKILL: no chance to finish anything.
        server.0.kill().expect("kill veto serve");
        let _ = server.0.wait();
        server = start_veto(&s);
    }
    let c = wait_done(&s, id, Instant::now() + Duration::from_secs(120));
    let got = received(&s.sink_file);
    let mut duplicates = 0;
    for i in 0..CONSENTING {
        let to = format!("r{i:05}@example.com");
        let copies = got
            .get(&to)
            .unwrap_or_else(|| panic!("{to} agreed and was skipped: {c} {}", outcomes(&s.dir)));
        // A second copy only for a crash between hand-off and its record,
        // and then under the same Message-ID, so the upstream can drop it.
        let ids: BTreeSet<&String> = copies.iter().map(|(_, mid, _)| mid).collect();
        assert_eq!(
            ids.len(),
            1,
            "{to}'s copies have different Message-IDs: {copies:?}"
        );
        duplicates += copies.len() - 1;
    }
    for i in 0..WITHDRAWN {
        let to = format!("w{i:05}@example.com");
        assert!(!got.contains_key(&to), "{to} withdrew and got it");
    }
    let p = &c["progress"];
    assert_eq!(p["sent"].as_u64(), Some(CONSENTING as u64), "{c}");
    assert_eq!(
        p["refused"]["withdrawn"].as_u64(),
        Some(WITHDRAWN as u64),
        "{c}"
    );
    // At most what was in hand at each kill: the chunks in flight.
    assert!(
        duplicates <= KILLS * 64,
        "{duplicates} duplicates after {KILLS} kills"
    );
    println!(
        "campaign kill test: {KILLS} kills, {CONSENTING} recipients, {duplicates} sent twice (same Message-ID), none skipped"
    );
    let out = run(&s.dir, &["audit", "verify"], &s.env);
    assert!(out.contains("ok"), "{out}");
}

/// The CLI on a fresh install: copies go to the maildir outbox (the
/// default), and a marketer writes, previews, tests, sends and watches a
/// campaign. Needs only the veto binary, so it always runs.
#[test]
fn a_marketer_runs_a_campaign_from_the_cli_into_the_default_outbox() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let (smtp_port, web_port) = (free_port(), free_port());
    let env = vec![
        ("VETO_GATEWAY__LISTEN", format!("127.0.0.1:{smtp_port}")),
        ("VETO_WEB__LISTEN", format!("127.0.0.1:{web_port}")),
        (
            "VETO_ORGANISATION__POSTAL_ADDRESS",
            "1 High Street, Exampletown".to_owned(),
        ),
    ];
    run(dir, &["init", "."], &env);
    let config = std::fs::read_to_string(dir.join("veto.toml")).expect("veto.toml");
    assert!(
        config.contains("upstream = \"maildir\""),
        "a fresh install delivers to the maildir: {config}"
    );
    run(
        dir,
        &[
            "topics",
            "add",
            "news",
            "--name",
            "News",
            "--description",
            "Our news.",
        ],
        &env,
    );
    std::fs::write(
        dir.join("people.csv"),
        "email,action,topic,name,attr.city\n\
         ann@example.com,grant,news,Ann,Cardiff\n\
         bob@example.com,grant,news,Bob,Leeds\n\
         carl@example.com,grant,news,Carl,York\n\
         carl@example.com,withdraw,news,,\n",
    )
    .expect("write");
    run(dir, &["import", "contacts", "people.csv"], &env);
    std::fs::write(
        dir.join("news.txt"),
        "Hello {{ name }} in {{ attributes.city }}.\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("news.html"),
        "<p>Hello {{ name }} in {{ attributes.city }}.</p>",
    )
    .expect("write");

    // A bad template is refused with the field and the line.
    std::fs::write(dir.join("bad.txt"), "Hello\n{{ name ").expect("write");
    let out = veto(
        dir,
        &[
            "campaign",
            "create",
            "--name",
            "Bad",
            "--topic",
            "news",
            "--from",
            "news@shop.example",
            "--subject",
            "Hi",
            "--text",
            "bad.txt",
        ],
        &env,
    )
    .output()
    .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--text") && err.contains("line 2"), "{err}");

    let id = run(
        dir,
        &[
            "campaign",
            "create",
            "--name",
            "Winter",
            "--topic",
            "news",
            "--from",
            "news@shop.example",
            "--from-name",
            "Shop",
            "--subject",
            "Winter news for {{ name }}",
            "--text",
            "news.txt",
            "--html",
            "news.html",
            "--rate",
            "20",
        ],
        &env,
    )
    .trim()
    .to_owned();
    let preview = run(dir, &["campaign", "preview", &id, "ann@example.com"], &env);
    assert!(
        preview.contains("Subject: Winter news for Ann"),
        "{preview}"
    );
    assert!(preview.contains("Hello Ann in Cardiff."), "{preview}");
    let out = veto(
        dir,
        &[
            "campaign",
            "test",
            &id,
            "bob@example.com",
            "carl@example.com",
        ],
        &env,
    )
    .output()
    .expect("run");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "not every test address was sent: {said}"
    );
    assert!(
        said.contains("bob@example.com: sent") && said.contains("carl@example.com: not sent"),
        "{said}"
    );

    let mut server = Server(
        veto(dir, &["serve"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start veto serve"),
    );
    wait_for_port(web_port, &mut server);
    // `send` starts it and watches it to the end (no terminal here: the
    // bar is hidden and the last line is the summary).
    let out = veto(dir, &["campaign", "send", &id], &env)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("done: sent 2 · refused 1 (withdrawn 1) · failed 0 · remaining 0"),
        "{err}"
    );
    let out = veto(dir, &["campaign", "watch", &id], &env)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("done: sent 2"));
    let shown = run(dir, &["campaign", "show", &id], &env);
    assert!(
        shown.contains("complaints") && shown.contains("providers' limit 0.3%"),
        "{shown}"
    );
    let e = veto(dir, &["campaign", "pause", &id], &env)
        .output()
        .expect("run");
    assert!(!e.status.success());
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("is done"),
        "{}",
        show(&e)
    );

    // What went out, in the outbox: the test copy and the two real ones.
    let outbox = dir.join("veto-data").join("outbox").join("new");
    let mut mails: Vec<String> = std::fs::read_dir(&outbox)
        .expect("the outbox")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("a mail"))
        .collect();
    mails.sort();
    assert_eq!(mails.len(), 3, "{mails:?}");
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.contains("Subject: [TEST]"))
            .count(),
        1
    );
    assert!(
        mails
            .iter()
            .all(|m| m.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"))
    );
    assert!(!mails.iter().any(|m| m.contains("carl@example.com")));
}
