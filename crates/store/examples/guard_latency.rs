//! Per-recipient guard latency: `Guard::admit` (the store read and the
//! policy decision the gateway makes for every recipient) against a SQLite
//! store, over random recipients — granted, withdrawn, soft opt-in and
//! unknown addresses — and the latency distribution. Target (issue 4):
//! p99 ≤ 1 ms with 1,000,000 contacts.
//!
//! The store is the one `bench/gen_contacts.py` and `veto import contacts`
//! make (contacts `c0@example.com` … with topics news, offers, events); see
//! docs/BENCHMARKS.md for the commands.
//!
//! cargo run --release -p veto-store --example guard_latency -- DB [SAMPLES] [CONCURRENCY] [UNKNOWN_PERCENT]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use veto_core::{Channel, EmailAddress, PolicySettings, Topic};
use veto_store::{Guard, GuardClass, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: guard_latency DB [SAMPLES=100000] [CONCURRENCY=1] [UNKNOWN_PERCENT=10]";
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or(usage)?;
    let samples: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(1), |a| a.parse())?;
    let unknown_percent: u32 = args.next().map_or(Ok(10), |a| a.parse())?;
    if concurrency == 0 || samples == 0 {
        return Err(usage.into());
    }

    let store = Store::open_sqlite(Path::new(&db)).await?;
    let contacts = store.count_contacts().await?;
    let topics = store.topics().await?;
    let topic = |key: &str| -> Result<Topic, String> {
        topics
            .iter()
            .find(|t| t.key.as_str() == key)
            .cloned()
            .ok_or_else(|| format!("the store has no topic {key:?} (see docs/BENCHMARKS.md)"))
    };
    // gen_contacts.py gives contact i its row for topic i % 3.
    let by_contact = [topic("news")?, topic("offers")?, topic("events")?];
    let guard = Guard::new(store.clone(), PolicySettings::default());

    // The recipients, drawn up front so that drawing is not measured.
    let mut rng = StdRng::seed_from_u64(4);
    let population = u64::try_from(contacts)?.max(1);
    let recipients: Vec<(EmailAddress, usize)> = (0..samples + 1_000)
        .map(|_| {
            let i = rng.random_range(0..population);
            let address = if rng.random_range(0..100) < unknown_percent {
                format!("nobody{i}@example.net")
            } else {
                format!("c{i}@example.com")
            };
            let address = EmailAddress::parse(&address).expect("a generated address");
            (address, (i % 3) as usize)
        })
        .collect();
    let (warm_up, measured) = recipients.split_at(1_000);

    for (to, t) in warm_up {
        guard
            .admit(to, GuardClass::Marketing(&by_contact[*t]), Channel::Email)
            .await?
            .ok();
    }

    let by_contact = Arc::new(by_contact);
    let chunk = measured.len().div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in measured.chunks(chunk) {
        let part = part.to_vec();
        let guard = guard.clone();
        let by_contact = Arc::clone(&by_contact);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(part.len());
            let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
            for (to, t) in &part {
                let start = Instant::now();
                let decision = guard
                    .admit(to, GuardClass::Marketing(&by_contact[*t]), Channel::Email)
                    .await;
                latencies.push(start.elapsed());
                let outcome = match decision {
                    Ok(Ok(_)) => "allowed",
                    Ok(Err((_, refusal))) => refusal.reason.code(),
                    Err(_) => "store error",
                };
                *outcomes.entry(outcome).or_default() += 1;
            }
            (latencies, outcomes)
        }));
    }
    let mut latencies = Vec::with_capacity(measured.len());
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    for task in tasks {
        let (l, o) = task.await?;
        latencies.extend(l);
        for (k, v) in o {
            *outcomes.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = at(0.99);

    println!("store: {db} ({contacts} contacts)");
    println!(
        "{} admits, {concurrency} at a time, {unknown_percent}% unknown addresses, in {:.2} s ({:.0}/s)",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    let mix: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("decisions: {}", mix.join(", "));
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(p99),
        ms(at(0.999)),
        ms(latencies[latencies.len() - 1])
    );
    println!(
        "target p99 <= 1 ms: {}",
        if p99 <= Duration::from_millis(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    store.close().await;
    Ok(())
}
