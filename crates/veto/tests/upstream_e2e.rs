//! End to end through the SMTP gateway to an SMTP upstream: the real
//! `veto serve` with `[delivery] upstream = "smtp://…"`, a real sending tool
//! (`swaks`) and a real MTA upstream (Python's aiosmtpd, saving what it
//! receives). While upstream is down the tool gets a 451 and nothing is
//! lost; once it is up, the consenting recipient's personal copy arrives
//! there.
//!
//! Runs only with `VETO_TEST_E2E=1` (it needs `swaks` and `/usr/bin/python3`
//! with aiosmtpd, and then fails without them); otherwise it says it was
//! skipped.

mod e2e;

use e2e::{Server, free_port, run, veto, wait_for_port};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const PYTHON: &str = "/usr/bin/python3";

/// swaks sending one message for `news` to a@ (consenting) and b@
/// (withdrawn); the reply to the end of DATA.
fn send(smtp_port: u16, key: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtp_port}")])
        .args(["--from", "shop@example.org"])
        .args(["--to", "a@example.com,b@example.com"])
        .args(["--header", "Veto-Topic: news"])
        .args(["--body", "Our news.\n.\nThe end."])
        .args(["--auth", "PLAIN", "--auth-user", "x"])
        .args(["--auth-password", key])
        .args(["--timeout", "30"])
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    // The last lone "." the tool sent ends the DATA; the next line is the reply.
    let lines: Vec<&str> = transcript.lines().collect();
    lines
        .iter()
        .rposition(|l| l.trim_end().ends_with("-> ."))
        .and_then(|end| lines.get(end + 1))
        .unwrap_or_else(|| panic!("no reply to the end of DATA:\n{transcript}"))
        .to_string()
}

#[test]
fn the_gateway_relays_to_an_smtp_upstream_and_says_451_while_it_is_down() {
    if !e2e::enabled("end-to-end SMTP upstream test") {
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
    let aiosmtpd_found = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        aiosmtpd_found,
        "VETO_TEST_E2E=1 but {PYTHON} cannot import aiosmtpd (apt-get install python3-aiosmtpd)"
    );

    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let received = dir.join("upstream");
    std::fs::create_dir_all(&received).expect("mkdir");
    let (smtp_port, web_port, upstream_port) = (free_port(), free_port(), free_port());
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
        (
            "VETO_DELIVERY__UPSTREAM",
            format!("smtp://127.0.0.1:{upstream_port}"),
        ),
        ("VETO_DELIVERY__TLS", "none".to_owned()),
        ("VETO_DELIVERY__TIMEOUT", "10s".to_owned()),
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

    // Upstream is down: the tool must try again later.
    let reply = send(smtp_port, key);
    assert!(
        reply.contains(" 451 "),
        "not a temporary failure while upstream is down: {reply}"
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sender/tests/support/upstream.py"
    );
    let mut upstream = Server(
        Command::new(PYTHON)
            .arg(script)
            .arg(upstream_port.to_string())
            .arg(&received)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd"),
    );
    let mut ready = String::new();
    BufReader::new(upstream.0.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("read from aiosmtpd");
    assert_eq!(ready.trim(), "ready", "aiosmtpd did not start");

    let reply = send(smtp_port, key);
    assert!(reply.contains(" 250 "), "not accepted: {reply}");

    // Exactly one copy upstream, for a@example.com, from a VERP return path.
    let envelope = std::fs::read_to_string(received.join("1.json")).expect("the envelope");
    assert!(
        envelope.contains("\"to\": [\"a@example.com\"]"),
        "{envelope}"
    );
    assert!(
        envelope.contains("\"from\": \"bounces+"),
        "no VERP return path: {envelope}"
    );
    assert!(!received.join("2.json").exists(), "a second copy went out");
    let copy = std::fs::read_to_string(received.join("1.eml")).expect("the copy");
    assert!(copy.contains("List-Unsubscribe: "), "{copy}");
    assert!(copy.contains("1 High Street, Exampletown"), "{copy}");
    // The lone dot line arrived as a lone dot.
    assert!(copy.contains("Our news.\r\n.\r\nThe end."), "{copy}");
}
