//! `veto demo` as a newcomer runs it: the real binary seeds a directory,
//! serves it, and prints a block of URLs, passwords and a swaks command.
//! The test follows the block: the pages answer, the printed passwords
//! sign in to the admin UI, where every page in each user's menu opens
//! (sam's timeline shows the campaign not sent, the outbox shows a copy's
//! List-Unsubscribe, the seeded GDPR requests show one overdue), the gateway says 250 to
//! the consenting demo customers and 550 to the opted-out ones, the demo
//! campaign reaches exactly the people the guard admits (each copy with a
//! List-Unsubscribe header), and a second run seeds nothing and prints the
//! same passwords. It needs nothing but the binary (SMTP and HTTP are
//! spoken over plain sockets here, so swaks is not needed).

mod e2e;

use e2e::{Server, free_port, show, veto};

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The last line of the printed block.
const LAST_LINE: &str = "Credentials are kept in";

struct Demo {
    server: Server,
    block: String,
}

/// `veto demo --dir demo` in `dir`; returns once the block is printed.
fn start(dir: &Path, env: &[(&str, String)]) -> Demo {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("demo.log"))
        .expect("create demo.log");
    let mut server = Server(
        veto(dir, &["demo", "--dir", "demo"], env)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start veto demo"),
    );
    let stdout = server.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut block = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                block.push_str(&line);
                block.push('\n');
                if line.starts_with(LAST_LINE) {
                    break;
                }
            }
            Err(_) => {
                let _ = server.0.kill();
                let log = std::fs::read_to_string(dir.join("demo.log")).unwrap_or_default();
                panic!("veto demo printed no complete block:\n{block}\n--- log ---\n{log}");
            }
        }
    }
    Demo { server, block }
}

/// The text after `label` on the block's line that starts with it, up to whitespace.
fn after<'a>(block: &'a str, label: &str) -> &'a str {
    block
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in the block:\n{block}"))
}

fn http_status(url: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(authority).expect("connect to the web server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
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

/// Sends one HTTP/1.1 request and returns the status, the head and the body.
fn http(base: &str, request: &str) -> (u16, String, String) {
    let authority = base.strip_prefix("http://").expect("an http:// base");
    let mut stream = TcpStream::connect(authority).expect("connect to the web server");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
        .write_all(request.replace("{authority}", authority).as_bytes())
        .expect("send the request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_owned(), body.to_owned())
}

/// Signs in to the admin UI as a browser would: the status and the
/// session cookie (`veto_admin=…`), if one was set.
fn sign_in(base: &str, name: &str, password: &str) -> (u16, Option<String>) {
    let body = format!("name={name}&password={password}");
    let (status, head, _) = http(
        base,
        &format!(
            "POST /admin/login HTTP/1.1\r\nHost: {{authority}}\r\nOrigin: {base}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let cookie = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let pair = value.trim().split(';').next()?;
        pair.starts_with("veto_admin=").then(|| pair.to_owned())
    });
    (status, cookie)
}

/// An admin page as a signed-in browser sees it: the status and the body,
/// with minijinja's escapes of `/`, `'` and `&` turned back.
fn admin_page(base: &str, cookie: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http(
        base,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {{authority}}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
    );
    let body = body
        .replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&amp;", "&");
    (status, body)
}

/// The page's title, up to " · veto admin".
fn title(body: &str) -> &str {
    body.split("<title>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .unwrap_or_default()
}

/// The links (`href` values) in `html`.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|h| h.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// The links in the admin menu (`<nav class="menu">`).
fn menu(body: &str) -> Vec<String> {
    let nav = body
        .split("<nav class=\"menu\"")
        .nth(1)
        .and_then(|n| n.split("</nav>").next())
        .unwrap_or_else(|| panic!("no menu on the page:\n{body}"));
    hrefs(nav)
}

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
        let mut s = Smtp {
            reader: BufReader::new(stream.try_clone().expect("clone the stream")),
            writer: stream,
        };
        let greeting = s.reply();
        assert!(greeting.starts_with("220"), "greeting: {greeting}");
        s
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read a reply");
            assert!(n > 0, "the gateway hung up after {all:?}");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all.trim_end().to_owned();
            }
        }
    }

    fn command(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send a command");
        self.reply()
    }
}

/// Each copy in the outbox: (Delivered-To, Subject, has List-Unsubscribe).
fn outbox(dir: &Path) -> Vec<(String, String, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .map(|e| {
            let text = std::fs::read_to_string(e.expect("an entry").path()).expect("read a copy");
            let head = text.split("\r\n\r\n").next().unwrap_or_default();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        l.strip_prefix(name)
                            .and_then(|r| r.strip_prefix(':'))
                            .map(|v| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            (
                header("Delivered-To"),
                header("Subject"),
                head.lines().any(|l| l.starts_with("List-Unsubscribe:")),
            )
        })
        .collect()
}

fn campaign_done(dir: &Path, env: &[(&str, String)]) -> Option<i64> {
    let out = veto(
        dir,
        &[
            "--config",
            "demo/veto.toml",
            "campaign",
            "show",
            "1",
            "--json",
        ],
        env,
    )
    .output()
    .expect("run veto campaign show");
    assert!(out.status.success(), "campaign show: {}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    (v["state"] == "done").then(|| v["progress"]["sent"].as_i64().unwrap_or(-1))
}

fn contacts(dir: &Path, env: &[(&str, String)]) -> String {
    let out = veto(dir, &["--config", "demo/veto.toml", "check"], env)
        .output()
        .expect("run veto check");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("contacts:"))
        .unwrap_or_else(|| panic!("no contacts line: {}", show(&out)))
        .to_owned()
}

fn sigterm_and_wait(server: &mut Server) {
    e2e::sigterm(server);
    e2e::wait_exit(server, Duration::from_secs(30));
}

#[test]
fn demo_seeds_once_serves_and_the_guard_decides_who_gets_mail() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let (web_port, smtp_port) = (free_port(), free_port());
    let env = vec![
        ("VETO_WEB__LISTEN", format!("127.0.0.1:{web_port}")),
        ("VETO_GATEWAY__LISTEN", format!("127.0.0.1:{smtp_port}")),
    ];
    let mut demo = start(dir, &env);
    let block = demo.block.clone();
    println!("{block}");
    assert!(block.contains("seeded and started"), "{block}");

    // The printed URLs are the real ones.
    let base = format!("http://127.0.0.1:{web_port}");
    assert_eq!(after(&block, "Admin UI:"), format!("{base}/admin"));
    assert_eq!(http_status(&format!("{base}/healthz")), 200);
    let preferences = after(&block, "Preference centre:");
    assert!(preferences.starts_with(&base), "{preferences}");
    assert_eq!(http_status(preferences), 200, "the preference centre link");
    assert!(block.contains(&format!("--server 127.0.0.1:{smtp_port}")));
    let admitted: i64 = block
        .split("the guard admits ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no admitted count in:\n{block}"));
    assert!(admitted > 50, "{block}");
    assert!(
        block.contains("GDPR requests: 2 open, 1 due within 7 days, 1 overdue"),
        "{block}"
    );
    for reason in [
        "withdrawn",
        "suppressed",
        "objected",
        "hard_bounced",
        "complained",
    ] {
        assert!(block.contains(&format!("{reason} ")), "{reason}: {block}");
    }
    let passwords: Vec<String> = ["admin", "dpo", "marketer"]
        .iter()
        .map(|u| after(&block, &format!("{u} ")).to_owned())
        .collect();
    // The printed passwords sign in to the admin UI.
    assert_eq!(http_status(&format!("{base}/admin/login")), 200);
    let mut sessions = Vec::new();
    for (user, password) in ["admin", "dpo", "marketer"].iter().zip(&passwords) {
        let (status, cookie) = sign_in(&base, user, password);
        assert!((300..400).contains(&status), "{user} signs in: {status}");
        let cookie = cookie.unwrap_or_else(|| panic!("{user} got no session cookie"));
        sessions.push((*user, cookie));
    }
    let (status, cookie) = sign_in(&base, "admin", "not-the-password");
    assert!(
        status == 401 && cookie.is_none(),
        "a wrong password: {status}"
    );

    // The printed swaks command, spoken by hand: 250 for the consenting
    // demo customers, 550 for the opted-out and the erased one.
    let mut smtp = Smtp::connect(smtp_port);
    assert!(smtp.command("EHLO tool.example").starts_with("250"));
    assert!(
        smtp.command("MAIL FROM:<offers@demo.example>")
            .starts_with("250")
    );
    for (to, code) in [
        ("jo@demo.example", "250"),
        ("ana@demo.example", "250"),
        ("sam@demo.example", "550"),
        ("al@demo.example", "550"),
    ] {
        let reply = smtp.command(&format!("RCPT TO:<{to}>"));
        assert!(reply.starts_with(code), "RCPT {to}: {reply}");
    }
    assert!(smtp.command("DATA").starts_with("354"));
    let data = "From: Demo Outdoor Shop <offers@demo.example>\r\n\
                To: jo@demo.example, ana@demo.example, sam@demo.example, al@demo.example\r\n\
                Subject: Boots are back\r\n\
                Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\
                Message-ID: <demo-test-1@demo.example>\r\n\
                \r\n\
                The boots you liked are back in stock.\r\n.";
    let reply = smtp.command(data);
    assert!(reply.starts_with("250"), "end of DATA: {reply}");
    let _ = smtp.command("QUIT");

    // The campaign: done within a minute, one copy per admitted person.
    let deadline = Instant::now() + Duration::from_secs(60);
    let sent = loop {
        if let Some(sent) = campaign_done(dir, &env) {
            break sent;
        }
        assert!(
            Instant::now() < deadline,
            "the demo campaign is not done after 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        sent, admitted,
        "the campaign went to everyone the guard admitted"
    );
    let copies = outbox(&dir.join("demo/veto-data/outbox/new"));
    let to_of = |subject: &str| -> BTreeSet<String> {
        copies
            .iter()
            .filter(|c| c.1 == subject)
            .map(|c| c.0.clone())
            .collect()
    };
    let campaign = to_of("Winter boots: 20% off this week");
    assert_eq!(campaign.len() as i64, admitted);
    for star in ["jo@demo.example", "ana@demo.example", "max@demo.example"] {
        assert!(campaign.contains(star), "{star} got no campaign copy");
    }
    for star in [
        "sam@demo.example",
        "al@demo.example",
        "lee@demo.example",
        "kim@demo.example",
    ] {
        assert!(!campaign.contains(star), "{star} was sent the campaign");
    }
    let gateway: BTreeSet<String> = to_of("Boots are back");
    assert_eq!(
        gateway,
        BTreeSet::from(["ana@demo.example".to_owned(), "jo@demo.example".to_owned()])
    );
    assert_eq!(copies.len() as i64, admitted + 2, "no other copies");
    assert!(
        copies.iter().all(|c| c.2),
        "every copy carries List-Unsubscribe"
    );
    let before = contacts(dir, &env);

    // Each user's menu: every page answers, none with an error page.
    for (user, cookie) in &sessions {
        let (status, home) = admin_page(&base, cookie, "/admin");
        assert_eq!(status, 200, "{user}'s dashboard");
        let links = menu(&home);
        assert!(links.len() > 3, "{user}'s menu: {links:?}");
        for link in &links {
            let (status, body) = admin_page(&base, cookie, link);
            let t = title(&body);
            assert!(
                status == 200
                    && !t.starts_with("Not found")
                    && !t.starts_with("Something went wrong"),
                "{user} opens {link}: {status} {t:?}"
            );
        }
        if *user != "marketer" {
            // The GDPR requests the demo seeded, on the dashboard.
            assert!(
                home.contains("<dt>Overdue</dt><dd>1</dd>"),
                "{user}: {home}"
            );
        }
        assert!(
            home.contains("messages checked in the last 30 days:"),
            "{user}'s chart is empty: {home}"
        );
    }
    let admin = &sessions[0].1;
    // Sam's timeline: the demo campaign was not sent to sam, who withdrew.
    let (_, list) = admin_page(&base, admin, "/admin/contacts?q=sam@demo.example");
    let sam = hrefs(&list)
        .into_iter()
        .find(|h| h.starts_with("/admin/contacts/"))
        .unwrap_or_else(|| panic!("no contact link for sam:\n{list}"));
    let (status, page) = admin_page(&base, admin, &sam);
    assert_eq!(status, 200, "{sam}");
    assert!(
        page.split("Winter boots sale (demo)")
            .skip(1)
            .any(|rest| rest
                .chars()
                .take(200)
                .collect::<String>()
                .contains("not sent — withdrew consent")),
        "sam's timeline:\n{page}"
    );
    // The outbox, and a copy's List-Unsubscribe header.
    let (status, list) = admin_page(&base, admin, "/admin/outbox");
    assert_eq!(status, 200);
    let message = hrefs(&list)
        .into_iter()
        .find(|h| h.starts_with("/admin/outbox/"))
        .unwrap_or_else(|| panic!("no message in the outbox page:\n{list}"));
    let (status, page) = admin_page(&base, admin, &message);
    assert_eq!(status, 200, "{message}");
    assert!(page.contains("List-Unsubscribe"), "{message}:\n{page}");
    // The overdue erasure request.
    let (status, page) = admin_page(&base, admin, "/admin/requests");
    assert_eq!(status, 200);
    assert!(
        page.contains("<p class=\"big\">1</p><p>overdue"),
        "one request overdue: {page}"
    );
    assert!(page.contains("badge bad\">overdue by"), "{page}");

    // A second run: nothing seeded again, the same passwords printed.
    sigterm_and_wait(&mut demo.server);
    let mut again = start(dir, &env);
    assert!(
        again.block.contains("already seeded"),
        "second run: {}",
        again.block
    );
    for (user, password) in ["admin", "dpo", "marketer"].iter().zip(&passwords) {
        assert_eq!(after(&again.block, &format!("{user} ")), password);
    }
    assert_eq!(contacts(dir, &env), before, "the second run added contacts");
    assert_eq!(
        outbox(&dir.join("demo/veto-data/outbox/new")).len(),
        copies.len()
    );
    sigterm_and_wait(&mut again.server);
}
