//! A task whose results expire: `quote` fetches a (simulated) live price,
//! which stays valid for five seconds (`ttl = "5s"`). Within that time a call
//! is answered from storage; after it, the price is fetched again.
//!
//! ```text
//! cargo run --example quotes                          # fetches three quotes
//! cargo run --example quotes                          # from storage, if within 5 s
//! cargo run --example quotes -- run quote --arg symbol=ACME
//! cargo run --example quotes -- run quote --arg symbol=NOPE   # fails: exit code 1
//! cargo run --example quotes -- cache gc              # removes expired quotes
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Quote {
    symbol: String,
    price: f64,
    /// Seconds since the Unix epoch when the price was fetched.
    fetched_at: u64,
}

/// Impure on purpose: a price depends on when it is asked for, which is why
/// the task has a `ttl`. An unknown symbol is an `Err`, which is not stored.
#[routine::task(name = "quote", version = "1.0.0", ttl = "5s")]
async fn quote(symbol: String) -> Result<Quote, String> {
    let base = match symbol.as_str() {
        "ACME" => 100.0,
        "GLOBEX" => 42.0,
        "INITECH" => 7.5,
        other => return Err(format!("unknown symbol `{other}`")),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Ok(Quote {
        symbol,
        price: base + (now % 17) as f64 / 10.0,
        fetched_at: now,
    })
}

/// Prints a quote for each symbol; each stays stored for five seconds.
#[routine::main]
async fn main() -> Result<(), String> {
    for symbol in ["ACME", "GLOBEX", "INITECH"] {
        let quote = quote(symbol.to_owned()).await?;
        println!(
            "{:<8} {:>7.2}  fetched at {}",
            quote.symbol, quote.price, quote.fetched_at
        );
    }
    Ok(())
}
