//! `cargo bench -p routine-bench --bench scale`: 1,000,000 small results in
//! one store (the database layout), then what `cache ls`, `cache stats`,
//! `tasks` and `cache gc --max-size` do with them: the store's listing, and
//! a collection plan applied. Times and peak memory (`VmHWM`, reset before
//! each step). `ROUTINE_BENCH_QUICK=1` stores 100,000.

use std::fs;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use routine::store::gc::{self, GcPolicy};
use routine::store::{DatabaseStore, Store};
use routine::Engine;
use routine_bench::memory::{current_rss, peak_rss, reset_peak_rss};

/// A 168-byte result (21 numbers).
#[routine::task(name = "scale-payload", version = "1.0.0")]
async fn payload(i: u64) -> Vec<f64> {
    (0..21).map(|j| (i * 21 + j) as f64).collect()
}

/// Runs `step`, returning its time and its peak memory above the memory
/// held before it.
fn measured<T>(step: impl FnOnce() -> T) -> (T, f64, u64) {
    let before = current_rss().unwrap_or(0);
    reset_peak_rss();
    let started = Instant::now();
    let out = step();
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak_rss().unwrap_or(0).saturating_sub(before);
    (out, seconds, peak)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let results: u64 = match std::env::var_os("ROUTINE_BENCH_QUICK") {
        Some(_) => 100_000,
        None => 1_000_000,
    };
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/routine-bench")
        .join(format!("scale-{stamp}"));
    let store = DatabaseStore::open(&root).unwrap();
    let engine = Engine::builder(store.clone())
        .cache_capacity(0)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!("scale bench: {results} results in {}", root.display());

    let ((), store_s, store_peak) = measured(|| {
        runtime.block_on(engine.scope(async {
            for i in 0..results {
                std::hint::black_box(payload(i).await);
            }
        }))
    });
    let (listed, list_s, list_peak) = measured(|| store.list(None, None).unwrap());
    assert_eq!(listed.len() as u64, results);
    let total: u64 = listed.iter().map(|l| l.size).sum();
    let (plan, plan_s, plan_peak) = measured(|| {
        let policy = GcPolicy {
            older_than: None,
            max_size: Some(total / 2),
        };
        gc::plan(listed, &policy, SystemTime::now(), |_| false)
    });
    let (freed, apply_s, apply_peak) = measured(|| gc::apply(&store, &plan).unwrap());

    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!();
    println!(
        "| {results} results of 168 bytes, database layout | time | peak memory above the start |"
    );
    println!("|---|---|---|");
    println!(
        "| store them (one miss each) | {store_s:.2} s | {:.1} MiB |",
        mib(store_peak)
    );
    println!(
        "| list them (what `cache ls`, `cache stats` and `tasks` read) | {list_s:.2} s | {:.1} MiB |",
        mib(list_peak)
    );
    println!(
        "| plan `gc --max-size` to half ({} to remove) | {plan_s:.2} s | {:.1} MiB |",
        plan.remove.len(),
        mib(plan_peak)
    );
    println!(
        "| apply it ({:.1} MiB freed) | {apply_s:.2} s | {:.1} MiB |",
        mib(freed),
        mib(apply_peak)
    );
    // A few files holding hundreds of megabytes, after every timed step.
    drop((engine, store));
    let _ = fs::remove_dir_all(&root);
}
