//! Prints one-click unsubscribe paths (`/u/TOKEN`) for contacts 1..=N of a
//! SQLite store, one per line, for the `wrk` benchmark (bench/one-click.lua).
//!
//! cargo run --release -p veto-web --example bench_tokens -- veto-data/veto.db 200000 > tokens.txt

use std::io::Write;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or("usage: bench_tokens DB N")?;
    let n: i64 = args.next().ok_or("usage: bench_tokens DB N")?.parse()?;
    let store = veto_store::Store::open_sqlite(std::path::Path::new(&db)).await?;
    let keys = veto_web::token_keys(&store).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for contact in 1..=n {
        let links = veto_web::links(&keys, "", contact, None)?;
        writeln!(out, "{}", links.unsubscribe)?;
    }
    Ok(())
}
