//! Prints one-click unsubscribe paths (`/u/TOKEN`) — or, with a third
//! argument `p` and a base URL, preference-centre URLs — for contacts 1..=N
//! of a SQLite store, one per line, for the benchmarks in docs/BENCHMARKS.md.
//!
//! cargo run --release -p veto-web --example bench_tokens -- veto-data/veto.db 200000 > tokens.txt
//! cargo run --release -p veto-web --example bench_tokens -- veto-data/veto.db 5000 p http://127.0.0.1:18081 > urls.txt

use std::io::Write;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or("usage: bench_tokens DB N")?;
    let n: i64 = args
        .next()
        .ok_or("usage: bench_tokens DB N [u|p BASE_URL]")?
        .parse()?;
    let preferences = args.next().is_some_and(|k| k == "p");
    let base = args.next().unwrap_or_default();
    let store = veto_store::Store::open_sqlite(std::path::Path::new(&db)).await?;
    let keys = veto_web::token_keys(&store).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for contact in 1..=n {
        let links = veto_web::links(&keys, &base, contact, None)?;
        writeln!(
            out,
            "{}",
            if preferences {
                links.preferences
            } else {
                links.unsubscribe
            }
        )?;
    }
    Ok(())
}
