//! End to end through the inbound listener: the real `veto serve` with
//! `[gateway] inbound_listen`, a real SMTP client (`swaks`) delivering a
//! mailto unsubscribe and a bounce (a Postfix DSN), then `veto why` and
//! `veto export` reading what the ledger holds.
//!
//! Runs only with `VETO_TEST_E2E=1` (it needs `swaks` on `PATH`, and then
//! fails without it); otherwise it says it was skipped.

mod e2e;

use e2e::{Server, free_port, run, veto, wait_for_port};

use std::path::Path;
use std::process::{Command, Stdio};

use veto_core::EmailAddress;
use veto_mail::{Claims, Purpose, TokenKey, TokenKeys, TokenScope};

const DOMAIN: &str = "veto.shop.example";

/// The bounce token of `email`'s copies, as the gateway mints it (the
/// maildir outbox keeps no return path to read it from).
fn bounce_token(dir: &Path, email: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = veto_store::Store::open_sqlite(&dir.join("veto-data/veto.db"))
            .await
            .expect("open the store");
        let contact = store
            .find_contact(&EmailAddress::parse(email).expect("address"))
            .await
            .expect("read the store")
            .expect("the contact");
        let mut keys = store
            .token_keys()
            .await
            .expect("token keys")
            .into_iter()
            .map(|(id, secret)| TokenKey::new(id, secret));
        let current = keys.next().expect("a token key");
        let keys = TokenKeys::new(current, keys.collect()).expect("key ring");
        store.close().await;
        keys.mint(
            &Claims {
                contact: contact.id as u64,
                scope: TokenScope::AllMarketing,
                message: None,
            },
            Purpose::Bounce,
        )
        .expect("mint")
        .to_string()
    })
}

/// swaks to the inbound listener; its transcript.
fn swaks(port: u16, from: &str, to: &str, extra: &[&str]) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--ehlo", "mx.provider.example"])
        .args(["--from", from])
        .args(["--to", to])
        .args(extra)
        .args(["--timeout", "30"])
        .output()
        .expect("run swaks");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The server's reply to the end of DATA in a swaks transcript.
fn data_reply(transcript: &str) -> &str {
    let lines: Vec<&str> = transcript.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(" -> .") || l.ends_with("-> ."))
        .unwrap_or_else(|| panic!("no end of DATA in:\n{transcript}"));
    lines
        .get(at + 1)
        .unwrap_or_else(|| panic!("no reply to the end of DATA:\n{transcript}"))
}

#[test]
fn bounces_and_mailto_unsubscribes_reach_the_ledger_through_the_real_binary() {
    if !e2e::enabled("end-to-end inbound listener test") {
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
    let (smtp_port, web_port, inbound_port) = (free_port(), free_port(), free_port());
    let env = [
        ("VETO_GATEWAY__LISTEN", format!("127.0.0.1:{smtp_port}")),
        (
            "VETO_GATEWAY__INBOUND_LISTEN",
            format!("127.0.0.1:{inbound_port}"),
        ),
        ("VETO_WEB__LISTEN", format!("127.0.0.1:{web_port}")),
        (
            "VETO_WEB__PUBLIC_URL",
            format!("http://127.0.0.1:{web_port}"),
        ),
        ("VETO_ORGANISATION__DOMAIN", DOMAIN.to_owned()),
        (
            "VETO_ORGANISATION__POSTAL_ADDRESS",
            "1 High Street, Exampletown".to_owned(),
        ),
    ];
    run(dir, &["init", "."], &env);
    for (key, name) in [("news", "Product news"), ("offers", "Offers")] {
        run(
            dir,
            &[
                "topics",
                "add",
                key,
                "--name",
                name,
                "--description",
                "Once a month.",
            ],
            &env,
        );
    }
    std::fs::write(
        dir.join("contacts.csv"),
        "email,action,topic,at,ip,jurisdiction\n\
         a@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         a@example.com,grant,offers,2025-01-02T10:00:00Z,198.51.100.7,UK\n\
         b@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.8,UK\n",
    )
    .expect("write the import");
    run(dir, &["import", "contacts", "contacts.csv"], &env);

    // The mailto unsubscribe carries the same token as the one-click link.
    let link = run(dir, &["link", "a@example.com", "--topic", "news"], &env);
    let token = link
        .split("/u/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no /u/TOKEN link in:\n{link}"))
        .to_owned();
    let unsubscribe = format!("unsubscribe+{token}@{DOMAIN}");
    let bounces = format!("bounces+{}@{DOMAIN}", bounce_token(dir, "b@example.com"));

    let mut server = Server(
        veto(dir, &["serve"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veto serve"),
    );
    wait_for_port(inbound_port, &mut server);

    // Anyone may send to veto's addresses, but veto relays nothing.
    let relay = swaks(inbound_port, "x@example.net", "b@example.com", &[]);
    assert!(
        relay.contains("550 5.7.1") && relay.contains("relaying denied"),
        "a foreign address was not refused:\n{relay}"
    );

    // A person's mail client sends the List-Unsubscribe mailto.
    let transcript = swaks(
        inbound_port,
        "a@example.com",
        &unsubscribe,
        &["--header", "Subject: unsubscribe"],
    );
    assert!(
        data_reply(&transcript).contains(" 250 "),
        "the unsubscribe mail was not accepted:\n{transcript}"
    );

    // A provider's MTA returns a bounce to the VERP return path.
    let dsn = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mail/tests/fixtures/feedback/postfix-hard.eml")
        .canonicalize()
        .expect("the Postfix DSN fixture");
    let transcript = swaks(
        inbound_port,
        "<>",
        &bounces,
        &["--data", &format!("@{}", dsn.display())],
    );
    assert!(
        transcript.contains("MAIL FROM:<>"),
        "not the null sender:\n{transcript}"
    );
    assert!(
        data_reply(&transcript).contains(" 250 "),
        "the bounce was not accepted:\n{transcript}"
    );
    drop(server);

    let why = |email: &str, topic: &str| -> serde_json::Value {
        let out = run(dir, &["why", email, "--topic", topic, "--json"], &env);
        serde_json::from_str(&out).expect("JSON from veto why")
    };
    let a_news = why("a@example.com", "news");
    assert_eq!(a_news["decision"], "denied", "{a_news:#}");
    assert_eq!(a_news["reason"], "withdrawn", "{a_news:#}");
    let a_offers = why("a@example.com", "offers");
    assert_eq!(a_offers["decision"], "allowed", "only news: {a_offers:#}");
    let b_news = why("b@example.com", "news");
    assert_eq!(b_news["decision"], "denied", "{b_news:#}");
    assert_eq!(b_news["reason"], "hard_bounced", "{b_news:#}");

    let export = |email: &str| -> serde_json::Value {
        serde_json::from_str(&run(dir, &["export", email], &env)).expect("JSON from veto export")
    };
    let a = export("a@example.com");
    let last = a["consent_events"]
        .as_array()
        .and_then(|e| e.last())
        .expect("events");
    assert_eq!(last["kind"], "withdraw", "{a:#}");
    assert_eq!(last["source"], "mailto", "{a:#}");
    assert_eq!(a["mail_to_veto"][0]["kind"], "unsubscribe", "{a:#}");
    assert_eq!(
        a["mail_to_veto"][0]["envelope_from"], "a@example.com",
        "{a:#}"
    );
    let b = export("b@example.com");
    let last = b["consent_events"]
        .as_array()
        .and_then(|e| e.last())
        .expect("events");
    assert_eq!(last["kind"], "hard_bounce", "{b:#}");
    assert_eq!(last["source"], "feedback", "{b:#}");
    let report = &b["mail_to_veto"][0];
    assert_eq!(report["status"], "5.1.1", "{b:#}");
    assert_eq!(report["reporting_mta"], "mail.example.com", "{b:#}");
    assert_eq!(report["event"], last["id"], "{b:#}");
}
