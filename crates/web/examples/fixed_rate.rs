//! An open-loop load generator: GETs URLs (one per line in a file, used in
//! turn) at a fixed rate, whatever the latency, and prints the latency
//! percentiles. wrk is closed-loop, so it cannot show "p99 at 1,000 req/s".
//!
//! cargo run --release -p veto-web --example fixed_rate -- urls.txt 1000 20
//!
//! With `FORWARDED_FOR=1`, each request carries `X-Forwarded-For` with one
//! of 65,536 client addresses (198.18.0.0/16, the benchmarking range), as
//! many people behind a trusted proxy would; veto must trust 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fixed_rate URLS_FILE RATE_PER_S SECONDS";
    let urls: Vec<String> = std::fs::read_to_string(args.next().ok_or(usage)?)?
        .lines()
        .map(str::to_owned)
        .collect();
    let rate: u64 = args.next().ok_or(usage)?.parse()?;
    let seconds: u64 = args.next().ok_or(usage)?.parse()?;
    if urls.is_empty() || rate == 0 {
        return Err(usage.into());
    }
    let forwarded = std::env::var("FORWARDED_FOR").is_ok_and(|v| v == "1");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let latencies = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(
        (rate * seconds) as usize,
    )));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        // Open loop: each request starts on its own schedule.
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url, latencies, errors) = (
            client.clone(),
            urls[i as usize % urls.len()].clone(),
            latencies.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let mut req = client.get(&url);
            if forwarded {
                req = req.header(
                    "x-forwarded-for",
                    format!("198.18.{}.{}", (i >> 8) & 255, i & 255),
                );
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    latencies.lock().await.push(sent.elapsed());
                }
                _ => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let mut l = latencies.lock().await.clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} ok, {} failed in {:.1} s ({:.0} req/s offered)",
        l.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed),
        elapsed.as_secs_f64(),
        (rate * seconds) as f64 / elapsed.as_secs_f64()
    );
    for p in [0.5, 0.9, 0.99, 0.999] {
        println!("p{}: {:.2} ms", p * 100.0, pct(p).as_secs_f64() * 1000.0);
    }
    Ok(())
}
