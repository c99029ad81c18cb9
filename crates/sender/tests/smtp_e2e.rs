//! The upstream SMTP transport against real SMTP servers: Postfix's
//! `smtp-sink` (pipelining) and Python's aiosmtpd (no pipelining; STARTTLS
//! and AUTH), asserting on the bytes they received.
//!
//! Runs only with `VETO_TEST_E2E=1`; then a missing `smtp-sink` or
//! `/usr/bin/python3` with aiosmtpd fails the test.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{TestPki, admitted};
use veto_sender::{Outcome, SmtpCredentials, SmtpSettings, SmtpTransport, TlsMode, Transport};

const E2E_VAR: &str = "VETO_TEST_E2E";
const PYTHON: &str = "/usr/bin/python3";

const MESSAGE: &[u8] = b"From: Shop <news@example.org>\r\nTo: ann@example.com\r\nSubject: Hi\r\n\r\nHello.\r\n.\r\n.hidden\nlast line";
const STORED: &[u8] = b"From: Shop <news@example.org>\r\nTo: ann@example.com\r\nSubject: Hi\r\n\r\nHello.\r\n.\r\n.hidden\r\nlast line\r\n";

fn enabled(test: &str) -> bool {
    let on = std::env::var_os(E2E_VAR).is_some_and(|v| v == "1");
    if !on {
        println!("skipped: {test} (set {E2E_VAR}=1)");
    }
    on
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Files in `dir` whose names end with `suffix`, sorted, once `count` exist.
fn wait_for_files(dir: &Path, suffix: &str, count: usize) -> Vec<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        if files.len() >= count {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} files in {}",
            files.len(),
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn relay(transport: &SmtpTransport, from: &str, message: &[u8]) -> Outcome {
    let (_dir, to) = admitted("ann@example.com").await;
    transport
        .relay(from, &to, message)
        .await
        .unwrap_or_else(|e| panic!("not relayed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_to_postfix_smtp_sink() {
    if !enabled("SMTP upstream through Postfix smtp-sink") {
        return;
    }
    let found = Command::new("smtp-sink")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{E2E_VAR}=1 but smtp-sink is not installed (apt-get install postfix)"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _sink = Server(
        Command::new("smtp-sink")
            .args(["-u", "root", "-d"])
            .arg(format!("{}/%M.", tmp.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink"),
    );
    wait_for_port(port);

    let mut settings = SmtpSettings::new("127.0.0.1", port, "veto.test");
    settings.tls = TlsMode::None;
    let transport = SmtpTransport::new(settings).expect("transport");
    let from = "bounces+k1abc@example.org";
    for sender in [from, from, ""] {
        let Outcome::Accepted { reply } = relay(&transport, sender, MESSAGE).await else {
            panic!("smtp-sink refused the message");
        };
        assert!(reply.starts_with("250 2.0.0 Ok"), "{reply}");
    }

    // smtp-sink dumps each message with its envelope as X- fields, line
    // ends as LF, transparency dots removed.
    let files = wait_for_files(tmp.path(), "", 3);
    let mut senders = Vec::new();
    for file in &files {
        let dump = std::fs::read_to_string(file).expect("read dump");
        assert!(dump.contains("X-Rcpt-Args: <ann@example.com>\n"), "{dump}");
        let expected = String::from_utf8_lossy(STORED).replace("\r\n", "\n");
        assert!(
            dump.contains(&expected),
            "message changed on the way:\n{dump}"
        );
        senders.push(
            dump.lines()
                .find_map(|l| l.strip_prefix("X-Mail-Args: "))
                .expect("X-Mail-Args")
                .to_owned(),
        );
    }
    senders.sort();
    assert_eq!(senders, ["<>", &format!("<{from}>"), &format!("<{from}>")]);
}

fn aiosmtpd(dir: &Path, port: u16, extra: &[&str]) -> Server {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/upstream.py");
    let check = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .status();
    assert!(
        check.is_ok_and(|s| s.success()),
        "{E2E_VAR}=1 but {PYTHON} cannot import aiosmtpd (apt-get install python3-aiosmtpd)"
    );
    let mut child = Command::new(PYTHON)
        .arg(script)
        .arg(port.to_string())
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start aiosmtpd");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read from aiosmtpd");
    assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
    Server(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_to_aiosmtpd_over_starttls_with_auth() {
    if !enabled("SMTP upstream through aiosmtpd with STARTTLS and AUTH") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let (out, files) = (tmp.path().join("out"), tmp.path().join("pki"));
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::create_dir_all(&files).expect("mkdir");
    let pki = TestPki::new();
    for (name, pem) in [
        ("ca.pem", &pki.ca_pem),
        ("cert.pem", &pki.cert_pem),
        ("key.pem", &pki.key_pem),
    ] {
        std::fs::write(files.join(name), pem).expect("write PEM");
    }
    let port = free_port();
    let cert = files.join("cert.pem");
    let key = files.join("key.pem");
    let _server = aiosmtpd(
        &out,
        port,
        &[
            "--tls",
            &cert.to_string_lossy(),
            &key.to_string_lossy(),
            "--auth",
            "veto",
            "s3cret",
        ],
    );

    let mut settings = SmtpSettings::new("localhost", port, "veto.test");
    settings.ca_file = Some(files.join("ca.pem"));
    settings.credentials = Some(SmtpCredentials {
        username: "veto".into(),
        password: "s3cret".into(),
    });
    let transport = SmtpTransport::new(settings).expect("transport");
    let from = "bounces+k1abc@example.org";
    let eight_bit = "Subject: Grüße\r\n\r\n.Ä\r\n".as_bytes();
    for (n, message) in [MESSAGE, eight_bit].into_iter().enumerate() {
        let outcome = relay(&transport, from, message).await;
        assert_eq!(
            outcome,
            Outcome::Accepted {
                reply: format!("250 2.0.0 Ok: queued as aiosmtpd-{}", n + 1)
            }
        );
    }

    wait_for_files(&out, ".json", 2);
    assert_eq!(std::fs::read(out.join("1.eml")).expect("message"), STORED);
    assert_eq!(
        std::fs::read(out.join("2.eml")).expect("message"),
        eight_bit
    );
    for n in 1..=2 {
        let envelope = std::fs::read_to_string(out.join(format!("{n}.json"))).expect("json");
        for field in [
            format!("\"from\": \"{from}\""),
            "\"to\": [\"ann@example.com\"]".to_owned(),
            "\"tls\": true".to_owned(),
            "\"authenticated\": true".to_owned(),
        ] {
            assert!(envelope.contains(&field), "no {field} in {envelope}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_without_starttls_gets_nothing_when_it_is_required() {
    if !enabled("SMTP upstream refusing a server without STARTTLS") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = aiosmtpd(tmp.path(), port, &[]);
    let settings = SmtpSettings::new("127.0.0.1", port, "veto.test");
    let transport = SmtpTransport::new(settings).expect("transport");
    let (_dir, to) = admitted("ann@example.com").await;
    let err = transport
        .relay("", &to, MESSAGE)
        .await
        .expect_err("sent without TLS");
    assert!(err.0.contains("does not offer STARTTLS"), "{err}");
    let received = std::fs::read_dir(tmp.path()).expect("dir").count();
    assert_eq!(received, 0);
}
