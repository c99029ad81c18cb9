//! End to end through the SMTP gateway: the real `veto serve`, a real
//! sending tool (`swaks`), the maildir outbox, and the one-click unsubscribe
//! of the copy that went out.
//!
//! Runs only with `VETO_TEST_E2E=1` (it needs `swaks` on `PATH`, and then
//! fails without it); otherwise it says it was skipped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const E2E_VAR: &str = "VETO_TEST_E2E";

/// Kills `veto serve` when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn veto(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veto"));
    cmd.args(args).current_dir(dir).env_clear().env("HOME", dir);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[track_caller]
fn run(dir: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let out = veto(dir, args, env).output().expect("run the veto binary");
    assert!(
        out.status.success(),
        "`veto {}` failed: {}",
        args.join(" "),
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "{:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16, server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = server.0.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("veto serve exited with {status}: {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

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
    if std::env::var_os(E2E_VAR).is_none_or(|v| v != "1") {
        println!("skipped: end-to-end gateway test (set VETO_TEST_E2E=1)");
        return;
    }
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
}
