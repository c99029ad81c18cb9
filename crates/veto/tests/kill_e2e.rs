//! The gateway kill test: `veto serve` is SIGKILLed again and again while a
//! sending tool relays through it to an SMTP upstream (aiosmtpd), and is
//! restarted on the same data directory and ports. The tool behaves like a
//! real one: a message whose connection drops or which gets a 4xx is sent
//! again later, until every message has had its 250.
//!
//! The upstream also answers some DATA with a 451, so some messages are
//! retried without any kill: veto must then relay only the copies upstream
//! had not taken yet.
//!
//! What the upstream received then says whether anything was lost (asserted:
//! nothing) and how many (message, recipient) pairs arrived more than once:
//! the duplicates of a crash between upstream's 250 and veto's record of it.
//! They are asserted to be rare and to come only from messages a kill cut
//! off, and are printed. The ledger is checked with `veto why --message` and
//! `veto audit verify`.
//!
//! Runs only with `VETO_TEST_E2E=1` (it needs `/usr/bin/python3` with
//! aiosmtpd, and then fails without it); otherwise it says it was skipped.

mod e2e;

use e2e::{E2E_VAR, Server, free_port, run, show, veto, wait_for_port};

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
/// Messages the tool sends.
const MESSAGES: usize = 400;
/// Consenting contacts the messages go to (2 or 3 each).
const CONTACTS: usize = 40;
/// Connections the tool sends over at once.
const WORKERS: usize = 4;
/// SIGKILLs of `veto serve`.
const KILLS: usize = 8;
/// The upstream's pause before each MAIL FROM: a copy takes at least this.
const UPSTREAM_DELAY_MS: u32 = 20;
/// The upstream answers every this-many-th DATA with a 451.
const UPSTREAM_FAIL_EVERY: u32 = 29;
/// The whole run, kills and retries included, must end within this.
const DEADLINE: Duration = Duration::from_secs(50);

fn message_id(n: usize) -> String {
    format!("<kill-{n:05}@shop.example>")
}

fn recipients(n: usize) -> Vec<String> {
    let count = 2 + n % 2;
    (0..count)
        .map(|i| format!("c{:02}@example.com", (n * 7 + i * 13) % CONTACTS))
        .collect()
}

/// Standard base64 (RFC 4648 §4), for AUTH PLAIN.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One SMTP connection of the sending tool.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// What became of one attempt to send a message.
enum Attempt {
    /// 250 at the end of DATA: done.
    Accepted,
    /// A 4xx, or the connection dropped: send it again later.
    Again(String),
    /// A 5xx: the test fails.
    Refused(String),
}

impl Connection {
    fn open(port: u16, key: &str) -> std::io::Result<Result<Connection, String>> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut c = Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = c.reply()?;
        if !greeting.starts_with('2') {
            return Ok(Err(greeting));
        }
        let ehlo = c.command("EHLO tool.example")?;
        if !ehlo.starts_with('2') {
            return Ok(Err(ehlo));
        }
        let auth = c.command(&format!(
            "AUTH PLAIN {}",
            base64(format!("\0x\0{key}").as_bytes())
        ))?;
        if !auth.starts_with("235") {
            return Ok(Err(auth));
        }
        Ok(Ok(c))
    }

    /// A whole (possibly multi-line) reply; an error if the server hung up.
    fn reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all.trim_end().to_owned());
            }
        }
    }

    fn command(&mut self, line: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    fn send(&mut self, n: usize) -> std::io::Result<Attempt> {
        let to = recipients(n);
        let judge = |reply: String| match reply.as_bytes().first() {
            Some(b'2' | b'3') => None,
            Some(b'4') => Some(Attempt::Again(reply)),
            _ => Some(Attempt::Refused(reply)),
        };
        if let Some(a) = judge(self.command("MAIL FROM:<news@shop.example>")?) {
            return Ok(a);
        }
        for r in &to {
            if let Some(a) = judge(self.command(&format!("RCPT TO:<{r}>"))?) {
                let _ = self.command("RSET");
                return Ok(a);
            }
        }
        if let Some(a) = judge(self.command("DATA")?) {
            return Ok(a);
        }
        let message = format!(
            "From: Shop <news@shop.example>\r\n\
             To: customers@shop.example\r\n\
             Subject: kill test {n:05}\r\n\
             Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n\
             Message-ID: {}\r\n\
             Veto-Topic: news\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             \r\n\
             Message {n:05} of the kill test.\r\n\
             .\r\n",
            message_id(n)
        );
        self.writer.write_all(message.as_bytes())?;
        let reply = self.reply()?;
        Ok(judge(reply).unwrap_or(Attempt::Accepted))
    }
}

/// The tool's shared state: messages waiting to be (re)sent, and tallies.
struct Tool {
    queue: Mutex<VecDeque<usize>>,
    done: AtomicUsize,
    attempts: Mutex<Vec<u32>>,
    /// Messages an attempt of which was cut off by a kill (the connection
    /// dropped or was refused), and those an attempt of which got a 4xx.
    cut: Mutex<Vec<bool>>,
    deferred_messages: Mutex<Vec<bool>>,
    refused: Mutex<Vec<String>>,
    /// Attempts answered with a 4xx, and attempts whose connection dropped.
    deferred: Mutex<BTreeMap<String, usize>>,
    dropped: AtomicUsize,
}

/// One connection's worth of the tool: takes messages off the queue until
/// all are done; a message that failed goes back to the end of the queue.
fn worker(tool: &Tool, port: u16, key: &str, deadline: Instant) {
    let mut connection: Option<Connection> = None;
    while tool.done.load(Ordering::SeqCst) < MESSAGES && Instant::now() < deadline {
        let Some(n) = tool.queue.lock().unwrap().pop_front() else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        tool.attempts.lock().unwrap()[n] += 1;
        let outcome = match connection.as_mut() {
            Some(c) => c.send(n),
            None => match Connection::open(port, key) {
                Ok(Ok(mut c)) => {
                    let a = c.send(n);
                    connection = Some(c);
                    a
                }
                Ok(Err(reply)) => Ok(Attempt::Again(reply)),
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(Attempt::Accepted) => {
                tool.done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Attempt::Refused(reply)) => {
                tool.refused
                    .lock()
                    .unwrap()
                    .push(format!("{}: {reply}", message_id(n)));
                tool.done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Attempt::Again(reply)) => {
                tool.deferred_messages.lock().unwrap()[n] = true;
                let code: String = reply.chars().take(9).collect();
                *tool.deferred.lock().unwrap().entry(code).or_insert(0) += 1;
                retry_later(tool, n, &mut connection);
            }
            // The connection dropped or was refused: veto was killed.
            Err(_) => {
                tool.cut.lock().unwrap()[n] = true;
                tool.dropped.fetch_add(1, Ordering::SeqCst);
                retry_later(tool, n, &mut connection);
            }
        }
    }
    if let Some(mut c) = connection {
        let _ = c.command("QUIT");
    }
}

/// Like a real tool: drop the connection, send the message again later.
fn retry_later(tool: &Tool, n: usize, connection: &mut Option<Connection>) {
    *connection = None;
    tool.queue.lock().unwrap().push_back(n);
    thread::sleep(Duration::from_millis(100));
}

fn start_upstream(out: &Path, port: u16) -> Server {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/slow_upstream.py");
    let mut child = Command::new(PYTHON)
        .arg(script)
        .arg(out)
        .arg(port.to_string())
        .arg(UPSTREAM_DELAY_MS.to_string())
        .arg(UPSTREAM_FAIL_EVERY.to_string())
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
    child.stdout = Some(stdout);
    Server(child)
}

/// How often the upstream received each (message number, recipient) pair.
fn received(out: &Path) -> BTreeMap<(usize, String), usize> {
    let mut pairs = BTreeMap::new();
    for entry in std::fs::read_dir(out).expect("the upstream's directory") {
        let json = entry.expect("an entry").path();
        if json.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let envelope: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("read an envelope"))
                .expect("an envelope in JSON");
        let message = std::fs::read_to_string(json.with_extension("eml")).expect("read a copy");
        let n: usize = message
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Subject: kill test "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no kill-test subject in {}", json.display()));
        let to = envelope["to"].as_array().expect("recipients");
        assert_eq!(to.len(), 1, "a copy is for one person: {envelope}");
        let to = to[0].as_str().expect("an address").to_owned();
        *pairs.entry((n, to)).or_insert(0) += 1;
    }
    pairs
}

fn start_veto(dir: &Path, env: &[(&str, String)], smtp_port: u16, web_port: u16) -> Server {
    let mut server = Server(
        veto(dir, &["serve"], env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start veto serve"),
    );
    wait_for_port(smtp_port, &mut server);
    wait_for_port(web_port, &mut server);
    server
}

#[test]
fn killed_mid_relay_veto_loses_nothing_and_duplicates_rarely() {
    if !e2e::enabled("gateway kill test") {
        return;
    }
    let aiosmtpd_found = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        aiosmtpd_found,
        "{E2E_VAR}=1 but {PYTHON} cannot import aiosmtpd (apt-get install python3-aiosmtpd)"
    );

    let started = Instant::now();
    let deadline = started + DEADLINE;
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let upstream_dir = dir.join("upstream");
    std::fs::create_dir_all(&upstream_dir).expect("mkdir");
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
    let mut csv = String::from("email,action,topic,at,ip,jurisdiction\n");
    for c in 0..CONTACTS {
        csv.push_str(&format!(
            "c{c:02}@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n"
        ));
    }
    std::fs::write(dir.join("contacts.csv"), csv).expect("write the import");
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
    let key = key.trim().to_owned();

    let _upstream = start_upstream(&upstream_dir, upstream_port);
    let mut server = start_veto(dir, &env, smtp_port, web_port);

    let tool = Arc::new(Tool {
        queue: Mutex::new((0..MESSAGES).collect()),
        done: AtomicUsize::new(0),
        attempts: Mutex::new(vec![0; MESSAGES]),
        cut: Mutex::new(vec![false; MESSAGES]),
        deferred_messages: Mutex::new(vec![false; MESSAGES]),
        refused: Mutex::new(Vec::new()),
        deferred: Mutex::new(BTreeMap::new()),
        dropped: AtomicUsize::new(0),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (tool, key) = (Arc::clone(&tool), key.clone());
            thread::spawn(move || worker(&tool, smtp_port, &key, deadline))
        })
        .collect();

    // SIGKILL every 0.5–0.9 s while the tool is busy, restarting on the
    // same data directory and ports.
    let mut kills = 0;
    while kills < KILLS && tool.done.load(Ordering::SeqCst) < MESSAGES {
        thread::sleep(Duration::from_millis(500 + 57 * (kills as u64 % 8)));
        if tool.done.load(Ordering::SeqCst) >= MESSAGES {
            break;
        }
        server.0.kill().expect("SIGKILL veto serve");
        server.0.wait().expect("reap veto serve");
        kills += 1;
        server = start_veto(dir, &env, smtp_port, web_port);
    }
    for w in workers {
        w.join().expect("a worker of the tool");
    }
    let done = tool.done.load(Ordering::SeqCst);
    assert_eq!(
        done, MESSAGES,
        "the tool had {done} of {MESSAGES} messages accepted within {DEADLINE:?}"
    );
    let refused = tool.refused.lock().unwrap().clone();
    assert!(refused.is_empty(), "permanent failures: {refused:?}");
    assert!(
        kills >= KILLS / 2,
        "the tool finished after {kills} kills: too fast for the test to mean much"
    );
    // Anything upstream still had in hand when veto died is on disk by now.
    thread::sleep(Duration::from_millis(300));

    let pairs = received(&upstream_dir);
    let mut expected = 0;
    let mut lost = Vec::new();
    for n in 0..MESSAGES {
        for to in recipients(n) {
            expected += 1;
            if !pairs.contains_key(&(n, to.clone())) {
                lost.push(format!("{} to {to}", message_id(n)));
            }
        }
    }
    assert!(lost.is_empty(), "lost upstream: {lost:?}");
    let stray: Vec<_> = pairs
        .keys()
        .filter(|(n, to)| !recipients(*n).contains(to))
        .collect();
    assert!(stray.is_empty(), "copies nobody was sent: {stray:?}");
    let copies: usize = pairs.values().sum();
    let duplicated: Vec<_> = pairs.iter().filter(|(_, c)| **c > 1).collect();
    let duplicates: usize = duplicated.iter().map(|(_, c)| **c - 1).sum();
    let attempts = tool.attempts.lock().unwrap().clone();
    let retried = attempts.iter().filter(|&&a| a > 1).count();
    let cut = tool.cut.lock().unwrap().clone();
    let deferred_messages = tool.deferred_messages.lock().unwrap().clone();
    let deferred_only = (0..MESSAGES)
        .filter(|&n| deferred_messages[n] && !cut[n])
        .count();
    println!(
        "kill test: {kills} kills, {MESSAGES} messages ({retried} sent more than once), \
         {expected} (message, recipient) pairs, {copies} copies upstream, \
         {duplicates} duplicates ({:.2}% of pairs; {deferred_only} messages retried after a 451 \
         only, {} cut off by a kill); the tool saw 4xx replies {:?} and {} dropped \
         connections; {:.1} s",
        100.0 * duplicates as f64 / expected as f64,
        cut.iter().filter(|&&c| c).count(),
        tool.deferred.lock().unwrap(),
        tool.dropped.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    for ((n, to), c) in &duplicated {
        println!("  duplicate: {} to {to}: {c} copies", message_id(*n));
    }
    // Only the copies in flight at a kill can go twice: at most every
    // connection's current message (3 copies) per kill.
    assert!(
        duplicates <= kills * WORKERS * 3,
        "{duplicates} duplicates after {kills} kills"
    );
    // A message retried after a 451 (upstream failed temporarily) but never
    // cut off by a kill goes to each recipient exactly once: veto remembered
    // the copies upstream had taken.
    assert!(
        deferred_only > 0,
        "no message got a 451 without being cut off: the upstream's failures did not reach the tool"
    );
    let uncut_duplicates: Vec<_> = duplicated.iter().filter(|((n, _), _)| !cut[*n]).collect();
    assert!(
        uncut_duplicates.is_empty(),
        "duplicates of messages no kill cut off (retried after a 451 only): {uncut_duplicates:?}"
    );

    // The ledger survived: receipts for messages sent once, and for messages
    // retried across kills or after a 451, name every recipient as sent
    // with upstream's 250; the audit chain
    // still verifies.
    let mut sample: Vec<usize> = vec![0, MESSAGES / 2, MESSAGES - 1];
    sample.extend((0..MESSAGES).filter(|&n| cut[n]).take(6));
    sample.extend((0..MESSAGES).filter(|&n| deferred_messages[n]).take(6));
    for n in sample {
        let out = veto(dir, &["why", "--message", &message_id(n)], &env)
            .output()
            .expect("run veto why");
        assert!(out.status.success(), "no receipts: {}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        for to in recipients(n) {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{to}: sent under "))
                        && l.contains("upstream said 250")),
                "no receipt saying {} went to {to}:\n{text}",
                message_id(n)
            );
        }
    }
    run(dir, &["audit", "verify"], &env);
    drop(server);
}
