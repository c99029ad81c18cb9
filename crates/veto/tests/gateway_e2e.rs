//! End to end through the SMTP gateway: the real `veto serve`, a real
//! sending tool (`swaks`), the maildir outbox, and the one-click unsubscribe
//! of the copy that went out.
//!
//! Runs only with `VETO_TEST_E2E=1` (it needs `swaks` on `PATH`, and then
//! fails without it); otherwise it says it was skipped.

mod e2e;

use e2e::{E2E_VAR, Server, free_port, run, show, veto, wait_for_port};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The header fields of a message, unfolded (RFC 5322 §2.2.3).
fn headers(message: &str) -> Vec<String> {
    let head = message.split("\r\n\r\n").next().expect("a header section");
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        match fields.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
            _ => fields.push(line.to_owned()),
        }
    }
    fields
}

fn field<'a>(fields: &'a [String], name: &str) -> Option<&'a str> {
    fields.iter().find_map(|f| {
        let (n, v) = f.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// `POST url` with a urlencoded `body` over plain HTTP/1.1; the status code.
fn post(url: &str, body: &str) -> u16 {
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
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[test]
fn a_tool_sends_through_the_gateway_and_only_the_consenting_get_it() {
    if !e2e::enabled("end-to-end gateway test") {
        return;
    }
    send_through_the_gateway(None);
}

/// The same on PostgreSQL: the gateway's thread and the web server share
/// the store's connection pool, and `veto serve` still stops cleanly.
#[test]
fn a_tool_sends_through_the_gateway_on_postgresql() {
    if !e2e::enabled("end-to-end gateway test on PostgreSQL") {
        return;
    }
    let Some(url) = std::env::var("VETO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("skipped: the gateway on PostgreSQL (set VETO_TEST_POSTGRES_URL)");
        return;
    };
    // A schema of its own (CI drops the veto_*test_* ones earlier runs left).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos();
    let schema = format!("veto_gateway_test_{}_{nanos}", std::process::id());
    let made = Command::new("psql")
        .args([url.as_str(), "-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .output()
        .expect("run psql (postgresql-client)");
    assert!(made.status.success(), "CREATE SCHEMA: {}", show(&made));
    let sep = if url.contains('?') { '&' } else { '?' };
    send_through_the_gateway(Some(format!("{url}{sep}options=-csearch_path%3D{schema}")));
}

/// `swaks` sends one message to a consenting and a withdrawn recipient;
/// exactly one copy goes out, its one-click unsubscribe works, and
/// SIGTERM stops `veto serve` with success. `store`: a PostgreSQL URL, or
/// SQLite in the data directory.
fn send_through_the_gateway(store: Option<String>) {
    let swaks_found = Command::new("swaks")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        swaks_found,
        "VETO_TEST_E2E=1 but swaks is not installed (apt-get install swaks)"
    );

    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let (smtp_port, web_port) = (free_port(), free_port());
    let env = [
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
        ("VETO_STORE__URL", store.unwrap_or_default()),
    ];
    run(dir, &["init", "."], &env);
    run(
        dir,
        &[
            "topics",
            "add",
            "news",
            "--name",
            "Product news",
            "--description",
            "What we made this month, once a month.",
        ],
        &env,
    );
    std::fs::write(
        dir.join("contacts.csv"),
        "email,action,topic,at,ip,jurisdiction\n\
         a@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         b@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.8,UK\n\
         b@example.com,withdraw,news,2025-02-02T10:00:00Z,,\n",
    )
    .expect("write the import");
    run(dir, &["import", "contacts", "contacts.csv"], &env);
    // The key's default topic classifies the mail at RCPT, so the withdrawn
    // recipient is refused there (without one, recipients are accepted
    // provisionally and the end-of-DATA check withholds them).
    let key = run(
        dir,
        &[
            "keys",
            "create",
            "--role",
            "marketer",
            "--default-topic",
            "news",
        ],
        &env,
    );
    let key = key.trim();

    let mut server = Server(
        veto(dir, &["serve"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veto serve"),
    );
    wait_for_port(smtp_port, &mut server);
    wait_for_port(web_port, &mut server);

    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtp_port}")])
        .args(["--from", "shop@example.org"])
        .args(["--to", "a@example.com,b@example.com"])
        .args(["--header", "Veto-Topic: news"])
        .args([
            "--auth",
            "PLAIN",
            "--auth-user",
            "x",
            "--auth-password",
            key,
        ])
        .args(["--timeout", "30"])
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "swaks failed: {}", show(&out));
    let lines: Vec<&str> = transcript.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("550 5.7.1") && l.contains("b@example.com")),
        "no 550 for the withdrawn recipient:\n{transcript}"
    );
    let data_reply = lines
        .iter()
        .skip_while(|l| !l.contains(" -> .") && !l.ends_with("-> ."))
        .nth(1)
        .unwrap_or_else(|| panic!("no reply to the end of DATA:\n{transcript}"));
    assert!(
        data_reply.contains(" 250 "),
        "the message was not accepted: {data_reply}\n{transcript}"
    );

    // Exactly one copy, for a@example.com.
    let new = dir.join("veto-data/outbox/new");
    let files: Vec<_> = std::fs::read_dir(&new)
        .expect("the outbox")
        .map(|e| e.expect("an outbox entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one copy in {}: {files:?}", new.display());
    let copy = std::fs::read_to_string(&files[0]).expect("read the copy");
    let fields = headers(&copy);
    assert_eq!(
        field(&fields, "Delivered-To"),
        Some("a@example.com"),
        "{copy}"
    );
    let unsubscribe = field(&fields, "List-Unsubscribe")
        .unwrap_or_else(|| panic!("no List-Unsubscribe:\n{copy}"));
    assert!(unsubscribe.contains("/u/"), "{unsubscribe}");
    assert_eq!(
        field(&fields, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click"),
        "{copy}"
    );
    assert_eq!(field(&fields, "Veto-Topic"), None, "{copy}");
    assert!(
        copy.contains("1 High Street, Exampletown"),
        "no footer:\n{copy}"
    );
    assert!(
        copy.contains("Unsubscribe: http://"),
        "no footer link:\n{copy}"
    );

    // The one-click unsubscribe of that copy works (RFC 8058).
    let url = unsubscribe
        .split(['<', '>'])
        .find(|part| part.starts_with("http"))
        .unwrap_or_else(|| panic!("no https link in {unsubscribe}"));
    assert_eq!(post(url, "List-Unsubscribe=One-Click"), 200, "POST {url}");

    let why = run(
        dir,
        &["why", "a@example.com", "--topic", "news", "--json"],
        &env,
    );
    let why: serde_json::Value = serde_json::from_str(&why).expect("JSON from veto why");
    assert_eq!(why["decision"], "denied", "{why:#}");

    e2e::sigterm(&server);
    let status = e2e::wait_exit(&mut server, Duration::from_secs(20));
    let mut stderr = String::new();
    if let Some(mut err) = server.0.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "veto serve exited with {status}:\n{stderr}"
    );
    assert!(stderr.contains("veto: stopped"), "{stderr}");
}

/// Python with a module importable, or a clear failure.
fn python_with(python: &str, module: &str, package: &str) -> String {
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{E2E_VAR}=1 but {python} cannot import {module} (install {package})"
    );
    python.to_owned()
}

/// The upstream MTA (aiosmtpd) writing what it accepts into `out`.
fn start_upstream(out: &Path, port: u16) -> Server {
    let python = python_with("/usr/bin/python3", "aiosmtpd", "Debian's python3-aiosmtpd");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/upstream.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(out)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the aiosmtpd upstream");
    let mut ready = [0u8; 6];
    let mut stdout = child.stdout.take().expect("its stdout");
    stdout
        .read_exact(&mut ready)
        .expect("the upstream says it is ready");
    assert_eq!(&ready, b"ready\n");
    // Kept open while the upstream runs.
    child.stdout = Some(stdout);
    Server(child)
}

/// What the upstream received: (envelope, message) in arrival order.
fn received(out: &Path) -> Vec<(serde_json::Value, String)> {
    let mut names: Vec<_> = std::fs::read_dir(out)
        .expect("the upstream's directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|json| {
            let envelope = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
            let message = std::fs::read_to_string(json.with_extension("eml")).unwrap();
            (envelope, message)
        })
        .collect()
}

/// Sends one message with Python's smtplib; the replies to RCPT and DATA.
fn smtplib_send(port: u16, message_id: &str, to: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tool.py");
    let out = Command::new("python3")
        .args([script, &port.to_string(), message_id, &to.join(",")])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "smtplib tool failed: {}", show(&out));
    serde_json::from_slice(&out.stdout).expect("JSON from the tool")
}

#[test]
fn relayed_upstream_only_consenting_people_get_a_signed_copy_that_unsubscribes() {
    if !e2e::enabled("end-to-end relay test") {
        return;
    }
    let dkim_python = python_with("python3", "dkim", "dkimpy from PyPI");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let upstream_dir = dir.join("upstream");
    std::fs::create_dir(&upstream_dir).unwrap();
    let (smtp_port, web_port, upstream_port) = (free_port(), free_port(), free_port());
    let _upstream = start_upstream(&upstream_dir, upstream_port);

    let mut env = vec![
        ("VETO_GATEWAY__LISTEN", format!("127.0.0.1:{smtp_port}")),
        ("VETO_GATEWAY__TRUSTED_DEFAULT_TOPIC", "news".to_owned()),
        ("VETO_WEB__LISTEN", format!("127.0.0.1:{web_port}")),
        (
            "VETO_WEB__PUBLIC_URL",
            format!("http://127.0.0.1:{web_port}"),
        ),
        ("VETO_ORGANISATION__DOMAIN", "shop.example".to_owned()),
        (
            "VETO_ORGANISATION__POSTAL_ADDRESS",
            "1 High Street, Exampletown".to_owned(),
        ),
        (
            "VETO_DELIVERY__UPSTREAM",
            format!("smtp://127.0.0.1:{upstream_port}"),
        ),
        ("VETO_DELIVERY__TLS", "none".to_owned()),
    ];
    run(dir, &["init", "."], &env);
    let keygen = run(
        dir,
        &[
            "dkim",
            "keygen",
            "--selector",
            "s1",
            "--domain",
            "shop.example",
            "--out",
            "dkim.key",
        ],
        &env,
    );
    let txt = keygen
        .lines()
        .find_map(|l| l.trim().strip_prefix("value:"))
        .unwrap_or_else(|| panic!("no TXT value in:\n{keygen}"))
        .trim()
        .trim_matches('"')
        .to_owned();
    env.extend([
        ("VETO_DKIM__DOMAIN", "shop.example".to_owned()),
        ("VETO_DKIM__SELECTOR", "s1".to_owned()),
        (
            "VETO_DKIM__PRIVATE_KEY_FILE",
            dir.join("dkim.key").display().to_string(),
        ),
    ]);
    run(
        dir,
        &[
            "topics",
            "add",
            "news",
            "--name",
            "Product news",
            "--description",
            "Monthly.",
        ],
        &env,
    );
    // ann and fay agreed; bob withdrew; eve agreed and was then erased;
    // dan was never asked.
    std::fs::write(
        dir.join("contacts.csv"),
        "email,action,topic,at,ip,jurisdiction\n\
         ann@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         fay@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         bob@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.8,UK\n\
         bob@example.com,withdraw,news,2025-02-02T10:00:00Z,,\n\
         eve@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.9,UK\n",
    )
    .unwrap();
    run(dir, &["import", "contacts", "contacts.csv"], &env);
    run(dir, &["erase", "eve@example.com"], &env);

    let mut server = Server(
        veto(dir, &["serve"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veto serve"),
    );
    wait_for_port(smtp_port, &mut server);
    wait_for_port(web_port, &mut server);

    let everyone = [
        "ann@example.com",
        "bob@example.com",
        "dan@example.com",
        "eve@example.com",
        "fay@example.com",
    ];
    let replies = smtplib_send(smtp_port, "<spring-1@shop.example>", &everyone);
    let rcpt = |who: &str| replies["rcpt"][who][0].as_u64().unwrap();
    assert_eq!(
        everyone.map(rcpt),
        [250, 550, 550, 550, 250],
        "RCPT replies: {replies:#}"
    );
    assert!(
        replies["rcpt"]["bob@example.com"][1]
            .as_str()
            .unwrap()
            .contains("withdrew consent"),
        "{replies:#}"
    );
    // fay's mailbox is gone upstream: the transaction is still 250, and says so.
    assert_eq!(replies["data"][0], 250, "{replies:#}");
    let data = replies["data"][1].as_str().unwrap();
    assert!(
        data.contains("1 delivered") && data.contains("1 refused upstream"),
        "{data}"
    );

    // Upstream got exactly ann's copy, and a DSN for fay to the tool's sender.
    let got = received(&upstream_dir);
    let copies: Vec<_> = got
        .iter()
        .filter(|(e, _)| e["to"][0] != "news@shop.example")
        .collect();
    assert_eq!(copies.len(), 1, "{got:#?}");
    let (envelope, copy) = copies[0];
    assert_eq!(envelope["to"], serde_json::json!(["ann@example.com"]));
    let from = envelope["from"].as_str().unwrap();
    assert!(
        from.starts_with("bounces+") && from.ends_with("@shop.example"),
        "VERP: {from}"
    );
    let dsn = got
        .iter()
        .find(|(e, _)| e["to"][0] == "news@shop.example")
        .unwrap_or_else(|| panic!("no DSN for fay: {got:#?}"));
    assert_eq!(dsn.0["from"], "<>", "a DSN has the null sender");
    assert!(
        dsn.1.contains("Final-Recipient: rfc822; fay@example.com"),
        "{}",
        dsn.1
    );

    let fields = headers(copy);
    let unsubscribe = field(&fields, "List-Unsubscribe").unwrap_or_else(|| panic!("{copy}"));
    assert_eq!(
        field(&fields, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(field(&fields, "List-Id").is_some_and(|v| v.contains("<news.shop.example>")));
    let signature = field(&fields, "DKIM-Signature").unwrap_or_else(|| panic!("unsigned: {copy}"));
    let h: String = signature
        .split(';')
        .find_map(|t| t.trim().strip_prefix("h="))
        .expect("h= tag")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let signed: Vec<&str> = h.split(':').collect();
    assert!(
        signed.contains(&"list-unsubscribe") && signed.contains(&"list-unsubscribe-post"),
        "h= must cover both List-Unsubscribe fields: {h}"
    );
    // An independent verifier (dkimpy), on the bytes upstream received.
    let copy_file = dir.join("copy.eml");
    std::fs::write(&copy_file, copy).unwrap();
    let verify = Command::new(&dkim_python)
        .args([
            "-c",
            "import dkim, sys\n\
             msg = open(sys.argv[1], 'rb').read()\n\
             txt = sys.argv[2].encode()\n\
             print('pass' if dkim.verify(msg, dnsfunc=lambda name, timeout=5: txt) else 'fail')",
        ])
        .arg(&copy_file)
        .arg(&txt)
        .output()
        .expect("run dkimpy");
    assert_eq!(
        String::from_utf8_lossy(&verify.stdout).trim(),
        "pass",
        "dkimpy: {}",
        show(&verify)
    );
    assert!(
        copy.contains("1 High Street, Exampletown"),
        "footer: {copy}"
    );

    // The copy's one-click unsubscribe works; the next send leaves ann out,
    // and fay (hard-bounced) too.
    let url = unsubscribe
        .split(['<', '>'])
        .find(|part| part.starts_with("http"))
        .unwrap_or_else(|| panic!("no http link in {unsubscribe}"));
    assert_eq!(post(url, "List-Unsubscribe=One-Click"), 200, "POST {url}");
    let replies = smtplib_send(
        smtp_port,
        "<spring-2@shop.example>",
        &["ann@example.com", "fay@example.com"],
    );
    assert_eq!(replies["rcpt"]["ann@example.com"][0], 550, "{replies:#}");
    let fay = replies["rcpt"]["fay@example.com"][1].as_str().unwrap();
    assert!(fay.contains("bounced"), "{fay}");
    assert_eq!(
        received(&upstream_dir).len(),
        got.len(),
        "nothing more went upstream"
    );

    // The receipts say why, per recipient.
    let why = run(
        dir,
        &["why", "--message", "<spring-1@shop.example>", "--json"],
        &env,
    );
    for who in everyone {
        assert!(why.contains(who), "no receipt for {who}: {why}");
    }
}
