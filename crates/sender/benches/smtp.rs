//! Throughput and CPU cost of the upstream SMTP transport: 2 KB
//! single-recipient messages relayed to Postfix's `smtp-sink` (which does
//! the receiving in its own process, so this process's CPU time is the
//! transport's). Prints messages per second and CPU microseconds per message.
//!
//!     cargo bench -p veto-sender --bench smtp [-- MESSAGES CONCURRENCY]
//!
//! Skips (with a message) when `smtp-sink` is not installed.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veto_core::{Channel, EmailAddress, PolicySettings};
use veto_sender::{Outcome, SmtpSettings, SmtpTransport, TlsMode, Transport};
use veto_store::{Guard, GuardClass, Store};

/// User + system CPU time of this process (Linux `/proc/self/stat`, in
/// clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of the line: the 12th and 13th after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn message() -> Vec<u8> {
    let mut m = b"From: Shop <news@example.org>\r\nTo: ann@example.com\r\nSubject: This month's news\r\nMessage-ID: <bench@example.org>\r\nList-Unsubscribe: <https://veto.example.org/u/abcdefghijklmnopqrstuvwxyz234567>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n".to_vec();
    while m.len() < 2000 {
        m.extend_from_slice(b"All the news that fits, in lines of a sensible length for mail.\r\n");
    }
    m
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let total: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(40_000);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let Ok(mut sink) = Command::new("smtp-sink")
        .args(["-u", "root", &format!("127.0.0.1:{port}"), "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("skipped: smtp-sink is not installed");
        return;
    };
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("veto.db"))
            .await
            .expect("store");
        let guard = Guard::new(store, PolicySettings::default());
        let to = EmailAddress::parse("ann@example.com").expect("address");
        let mut settings = SmtpSettings::new("127.0.0.1", port, "veto.test");
        settings.tls = TlsMode::None;
        let transport = Arc::new(SmtpTransport::new(settings).expect("transport"));
        let message = Arc::new(message());

        let mut admitted = Vec::with_capacity(total);
        for _ in 0..total {
            admitted.push(
                guard
                    .admit(&to, GuardClass::Service("bench"), Channel::Email)
                    .await
                    .expect("store")
                    .expect("admitted"),
            );
        }
        let per_task = total / concurrency;
        let mut chunks = Vec::new();
        for _ in 0..concurrency {
            let rest = admitted.split_off(admitted.len() - per_task);
            chunks.push(rest);
        }

        let (cpu0, t0) = (cpu_time(), Instant::now());
        let mut tasks = Vec::new();
        for chunk in chunks {
            let (transport, message) = (transport.clone(), message.clone());
            tasks.push(tokio::spawn(async move {
                for a in &chunk {
                    match transport.relay("bounces+k1abc@example.org", a, &message).await {
                        Ok(Outcome::Accepted { .. }) => {}
                        other => panic!("not accepted: {other:?}"),
                    }
                }
                chunk.len()
            }));
        }
        let mut sent = 0;
        for t in tasks {
            sent += t.await.expect("task");
        }
        let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
        println!(
            "{sent} messages of {} bytes, {concurrency} at once, pool of {}: {:.0} msg/s, {:.1} µs CPU per message",
            message.len(),
            SmtpSettings::DEFAULT_POOL_SIZE,
            sent as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / sent as f64
        );
    });
    let _ = sink.kill();
    let _ = sink.wait();
}
