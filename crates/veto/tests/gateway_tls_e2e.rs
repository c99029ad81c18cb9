//! End to end with STARTTLS: the real `veto serve` makes its self-signed
//! certificate, `swaks --tls` checks the certificate against that file,
//! authenticates inside TLS and sends; the copy in the outbox carries the
//! DKIM signature of the key `veto dkim keygen` made.
//!
//! Runs only with `VETO_TEST_E2E=1` (it needs `swaks` on `PATH`, and then
//! fails without it); otherwise it says it was skipped.

mod e2e;

use e2e::{Server, free_port, run, veto, wait_for_port};

use std::process::{Command, Stdio};

fn swaks(args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(args)
        .args(["--timeout", "30"])
        .output()
        .expect("run swaks");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_tool_sends_over_starttls_and_the_copy_is_dkim_signed() {
    if !e2e::enabled("end-to-end STARTTLS test") {
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
    let key_file = dir.join("dkim.pem");
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
        ("VETO_ORGANISATION__DOMAIN", "shop.example".to_owned()),
        ("VETO_DKIM__SELECTOR", "veto".to_owned()),
        (
            "VETO_DKIM__PRIVATE_KEY_FILE",
            key_file.display().to_string(),
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
         a@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n",
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
    let keygen = run(
        dir,
        &[
            "dkim",
            "keygen",
            "--selector",
            "veto",
            "--domain",
            "shop.example",
            "--out",
            "dkim.pem",
        ],
        &env,
    );
    assert!(keygen.contains("veto._domainkey.shop.example"), "{keygen}");

    let mut server = Server(
        veto(dir, &["serve"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veto serve"),
    );
    wait_for_port(smtp_port, &mut server);
    wait_for_port(web_port, &mut server);

    // The self-signed pair is in the data directory, the key private.
    let cert = dir.join("veto-data/tls/gateway.crt");
    let cert_pem = std::fs::read_to_string(&cert).expect("the self-signed certificate");
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("veto-data/tls/gateway.key"))
            .expect("the key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let server_addr = format!("127.0.0.1:{smtp_port}");
    let cert_path = cert.display().to_string();
    let (ok, transcript) = swaks(&[
        "--server",
        &server_addr,
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        &cert_path,
        "--from",
        "news@shop.example",
        "--to",
        "a@example.com",
        "--h-From",
        "Shop <news@shop.example>",
        "--auth",
        "PLAIN",
        "--auth-user",
        "x",
        "--auth-password",
        key,
    ]);
    assert!(ok, "swaks failed:\n{transcript}");
    assert!(transcript.contains("250-STARTTLS"), "{transcript}");
    assert!(
        transcript.contains("220 2.0.0 Ready to start TLS"),
        "{transcript}"
    );
    assert!(transcript.contains("=== TLS started"), "{transcript}");
    // After STARTTLS swaks talks with "~>"; AUTH went that way.
    assert!(
        transcript
            .lines()
            .any(|l| l.starts_with("<~") && l.contains("235 2.7.0")),
        "no AUTH inside TLS:\n{transcript}"
    );
    let data_reply = transcript
        .lines()
        .skip_while(|l| !l.ends_with("~> ."))
        .nth(1)
        .unwrap_or_else(|| panic!("no reply to the end of DATA:\n{transcript}"));
    assert!(data_reply.contains(" 250 "), "{data_reply}\n{transcript}");

    // A client that trusts some other certificate refuses this one: the
    // gateway really presents the file in the data directory.
    let other = tempfile::NamedTempFile::new().expect("a temp file");
    let other_pem = veto_gateway::self_signed("shop.example").expect("a certificate");
    std::fs::write(other.path(), other_pem.cert_pem).expect("write");
    let other_path = other.path().display().to_string();
    let (ok, transcript) = swaks(&[
        "--server",
        &server_addr,
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        &other_path,
        "--from",
        "news@shop.example",
        "--to",
        "a@example.com",
        "--quit-after",
        "RCPT",
    ]);
    assert!(
        !ok,
        "a certificate nobody trusts was accepted:\n{transcript}"
    );
    assert!(
        transcript.contains("certificate verify failed"),
        "{transcript}"
    );

    let new = dir.join("veto-data/outbox/new");
    let files: Vec<_> = std::fs::read_dir(&new)
        .expect("the outbox")
        .map(|e| e.expect("an outbox entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one copy in {}: {files:?}", new.display());
    let copy = std::fs::read_to_string(&files[0]).expect("read the copy");
    let head = copy.split("\r\n\r\n").next().expect("a header");
    let signature = head
        .split("\r\n")
        .skip_while(|l| !l.starts_with("DKIM-Signature:"))
        .take_while(|l| l.starts_with("DKIM-Signature:") || l.starts_with([' ', '\t']))
        .collect::<String>();
    assert!(signature.contains("d=shop.example"), "{copy}");
    assert!(signature.contains("s=veto"), "{copy}");
    assert!(signature.contains("a=rsa-sha256"), "{copy}");
}
