//! `./scripts/bench-distributed`: gangs on two worker processes of one slot
//! each (so that the two units of a gang run on different workers), each
//! row against a baseline measured in the same run:
//!
//! - a message between two units, one way (half a round trip), against a
//!   Redis PING from the bench;
//! - what a gang of two trivial units adds to a call, against one
//!   dispatched trivial call, in PINGs;
//! - a 64 MiB message between the units, against a put and a get of the
//!   same bytes in the shared store from the bench.
//!
//! The workers are this bench binary, re-run with `--worker`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use routine::distributed::worker::WorkerConfig;
use routine::distributed::DistributedConfig;
use routine::store::Slot;
use routine::{Key, Unit};
use routine_bench::{human, median, run_folder, Workers};

#[routine::task(name = "gbench-trivial", version = "1.0.0")]
async fn trivial(i: u64) -> u64 {
    i
}

/// A call here that dispatches one trivial call: the baseline of a gang's
/// start.
#[routine::task(name = "gbench-one-dispatch", version = "1.0.0")]
async fn one_dispatch(i: u64) -> u64 {
    trivial(i).await
}

/// Two units that return at once.
#[routine::task(name = "gbench-trivial-gang", version = "1.0.0", units = 2)]
async fn trivial_gang(unit: Unit<u64, u64>) {
    if unit.rank() == 0 {
        let i = unit.receive_input().await;
        unit.send_output(i);
    }
}

/// `rounds` round trips of a small message between two units: each round
/// trip's time, in nanoseconds, measured at rank 0.
#[routine::task(name = "gbench-ping-pong", version = "1.0.0", units = 2)]
async fn ping_pong(unit: Unit<(u64, u32), Vec<f64>>) {
    let rounds = match unit.rank() {
        0 => Some(unit.receive_input().await.1),
        _ => None,
    };
    let rounds: u32 = unit.broadcast(0, rounds).await;
    let mut times = Vec::new();
    for round in 0..rounds {
        if unit.rank() == 0 {
            let started = Instant::now();
            unit.send(1, "ping", &round).await;
            let _: u32 = unit.receive(1, "pong").await;
            times.push(started.elapsed().as_nanos() as f64);
        } else {
            let got: u32 = unit.receive(0, "ping").await;
            unit.send(0, "pong", &got).await;
        }
    }
    if unit.rank() == 0 {
        unit.send_output(times);
    }
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Rank 1 sends rank 0 `n` bytes; the microseconds from before the send to
/// after the receive (the units are on one machine: one clock).
#[routine::task(name = "gbench-big", version = "1.0.0", units = 2)]
async fn big(unit: Unit<(u64, u64), u64>) {
    if unit.rank() == 0 {
        let (_, n) = unit.receive_input().await;
        unit.send(1, "n", &n).await;
        let sent_at: u64 = unit.receive(1, "sent at").await;
        let bytes: serde_bytes::ByteBuf = unit.receive(1, "bytes").await;
        assert_eq!(bytes.len() as u64, n);
        unit.send_output(micros_now() - sent_at);
    } else {
        let n: u64 = unit.receive(0, "n").await;
        let bytes = serde_bytes::ByteBuf::from(vec![7u8; n as usize]);
        unit.send(0, "sent at", &micros_now()).await;
        unit.send(0, "bytes", &bytes).await;
    }
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run ./scripts/bench-distributed"))
}

fn config(namespace: &str, store: &str) -> DistributedConfig {
    let mut config = DistributedConfig::new(env("ROUTINE_TEST_REDIS_URL"), store);
    config.namespace = namespace.to_owned();
    config
}

/// A unique number per call, so that every call misses.
fn stamp() -> u64 {
    micros_now() << 8
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if args.iter().any(|a| a == "--worker") {
        let (namespace, store) = (env("BENCH_NAMESPACE"), env("BENCH_STORE"));
        runtime.block_on(async {
            let engine = routine::distributed::connect(config(&namespace, &store))
                .await
                .unwrap();
            let worker = WorkerConfig {
                concurrency: 1,
                ..WorkerConfig::default()
            };
            routine::distributed::worker::serve_until_signalled(engine, worker)
                .await
                .unwrap();
        });
        return;
    }
    let quick = std::env::var_os("ROUTINE_BENCH_QUICK").is_some();
    let root = run_folder("gangs-");
    let namespace = root.file_name().unwrap().to_str().unwrap().to_owned();
    let store = match std::env::var("ROUTINE_BENCH_STORE").as_deref() {
        Ok("s3") => format!("{}/{namespace}", env("ROUTINE_TEST_S3_URL")),
        _ => format!("file://{}", root.join("shared").display()),
    };
    std::fs::create_dir_all(root.join("shared")).unwrap();
    eprintln!("gang bench: namespace {namespace}, shared store {store}");
    let workers = Workers(
        (0..2)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .arg("--worker")
                    .env("BENCH_NAMESPACE", &namespace)
                    .env("BENCH_STORE", &store)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let rows = runtime.block_on(async {
        let engine = routine::distributed::connect(config(&namespace, &store))
            .await
            .unwrap();
        let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        // Warm up: workers up, connections open.
        let base = stamp();
        engine.scope(trivial_gang(base)).await;
        engine.scope(one_dispatch(base)).await;

        let rounds: u32 = if quick { 100 } else { 500 };
        let mut pings = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let _: String = redis::cmd("PING").query_async(&mut redis).await.unwrap();
            pings.push(started.elapsed().as_nanos() as f64);
        }
        let ping = median(pings);

        // 1. One way between units on two workers: half a round trip.
        let trips = engine.scope(ping_pong((stamp(), rounds))).await;
        let one_way = median(trips) / 2.0;

        // 2. A gang of two trivial units against one dispatched call.
        let calls = if quick { 10 } else { 40 };
        let (mut singles, mut gangs) = (Vec::new(), Vec::new());
        for _ in 0..calls {
            let i = stamp();
            let started = Instant::now();
            engine.scope(one_dispatch(i)).await;
            singles.push(started.elapsed().as_nanos() as f64);
            let started = Instant::now();
            engine.scope(trivial_gang(i)).await;
            gangs.push(started.elapsed().as_nanos() as f64);
        }
        let (single, gang) = (median(singles), median(gangs));

        // 3. 64 MiB between the units, against a put and a get of 64 MiB.
        let n: u64 = 64 << 20;
        let tries = if quick { 1 } else { 3 };
        let (mut messages, mut stores) = (Vec::new(), Vec::new());
        for _ in 0..tries {
            let micros = engine.scope(big((stamp(), n))).await;
            messages.push(micros as f64 * 1e3);
            let bytes = Arc::new(vec![7u8; n as usize]);
            let key = Key::of("gbench", "put-get", &stamp()).unwrap();
            let slot = Slot {
                name: "gbench.bytes",
                version: "1",
                key: &key,
            };
            let started = Instant::now();
            engine.store().put_async(&slot, bytes).await.unwrap();
            let found = engine.store().get_async(&slot).await.unwrap().unwrap();
            let read = found.into_bytes().unwrap();
            stores.push(started.elapsed().as_nanos() as f64);
            assert_eq!(read.len() as u64, n);
            engine.store().remove(&slot).unwrap();
        }
        (
            ping,
            one_way,
            single,
            gang,
            median(messages),
            median(stores),
        )
    });
    drop(workers);
    let (ping, one_way, single, gang, message, store_trip) = rows;
    let met = |ok: bool| if ok { "yes" } else { "NO" };
    println!();
    println!("shared store: {store}");
    println!("| row | routine | baseline | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| message between units on two workers, one way (p50) | {} | Redis PING {} | {:.1}x | <= 3x | {} |",
        human(one_way),
        human(ping),
        one_way / ping,
        met(one_way <= 3.0 * ping)
    );
    let overhead = gang - single;
    println!(
        "| gang of two trivial units, over one dispatched call (median) | {} ({} vs {}) | Redis PING {} | {:.1} PINGs | <= 2 PINGs | {} |",
        human(overhead),
        human(gang),
        human(single),
        human(ping),
        overhead / ping,
        met(overhead <= 2.0 * ping)
    );
    println!(
        "| 64 MiB message between units on two workers | {} | store put + get of 64 MiB {} | {:.2}x | <= 1.2x | {} |",
        human(message),
        human(store_trip),
        message / store_trip,
        met(message <= 1.2 * store_trip)
    );
}
