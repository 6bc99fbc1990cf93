//! `cargo bench -p routine-bench --bench units`: multi-unit tasks in one
//! process. Message latency between two units (half a round trip, p50 of
//! many, against a tokio channel's round trip between two tasks in the
//! same run), and the time from a unit's panic to its last waiting peer
//! dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use routine::unit::{run_units, Units};
use routine::Unit;

const ROUND_TRIPS: usize = 2_000;

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Round trips between rank 0 and rank 1, each timed by rank 0.
static SAMPLES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

async fn ping_pong(unit: Unit<u32, u32>) {
    match unit.rank() {
        0 => {
            let n = unit.receive_input().await;
            let mut samples = Vec::with_capacity(n as usize);
            for i in 0..n {
                let started = Instant::now();
                unit.send(1, "ping", &i).await;
                let back: u32 = unit.receive(1, "pong").await;
                samples.push(started.elapsed());
                assert_eq!(back, i);
            }
            *SAMPLES.lock().unwrap() = samples;
            unit.send(1, "done", &true).await;
            unit.send_output(n);
        }
        _ => loop {
            tokio::select! {
                biased;
                ping = unit.receive::<u32>(0, "ping") => unit.send(0, "pong", &ping).await,
                _ = unit.receive::<bool>(0, "done") => break,
            }
        },
    }
}

/// Nanoseconds since `EPOCH` at which the last peer was dropped, and the
/// panic happened.
static LAST_DROP: AtomicU64 = AtomicU64::new(0);
static PANIC: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

struct Waiting;

impl Drop for Waiting {
    fn drop(&mut self) {
        LAST_DROP.fetch_max(now_ns(), Ordering::SeqCst);
    }
}

async fn one_panics(unit: Unit<u8, u8>) {
    if unit.rank() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        PANIC.store(now_ns(), Ordering::SeqCst);
        panic!("rank 0 fails");
    }
    let _waiting = Waiting;
    let _: u8 = unit.receive(0, "never").await;
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Baseline: a round trip between two tokio tasks over channels, both
    // spawned, as units are.
    let channel = runtime
        .block_on(runtime.spawn(async {
            let (to_peer, mut peer_in) = tokio::sync::mpsc::unbounded_channel::<u32>();
            let (to_main, mut main_in) = tokio::sync::mpsc::unbounded_channel::<u32>();
            tokio::spawn(async move {
                while let Some(i) = peer_in.recv().await {
                    let _ = to_main.send(i);
                }
            });
            let mut samples = Vec::with_capacity(ROUND_TRIPS);
            for i in 0..ROUND_TRIPS as u32 {
                let started = Instant::now();
                to_peer.send(i).unwrap();
                main_in.recv().await.unwrap();
                samples.push(started.elapsed());
            }
            p50(samples)
        }))
        .unwrap();
    runtime.block_on(run_units(
        Units::between(2, 2),
        ROUND_TRIPS as u32,
        ping_pong,
    ));
    let units = p50(SAMPLES.lock().unwrap().clone());

    let mut drops = Vec::new();
    std::panic::set_hook(Box::new(|_| {}));
    for _ in 0..20 {
        LAST_DROP.store(0, Ordering::SeqCst);
        let gang = runtime.spawn(run_units(Units::between(8, 8), 0u8, one_panics));
        assert!(runtime.block_on(gang).is_err());
        let deadline = Instant::now() + Duration::from_secs(5);
        while LAST_DROP.load(Ordering::SeqCst) < PANIC.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_micros(50));
        }
        drops.push(Duration::from_nanos(
            LAST_DROP.load(Ordering::SeqCst) - PANIC.load(Ordering::SeqCst),
        ));
    }
    let drop = p50(drops);

    let half = units / 2;
    println!();
    println!("| multi-unit tasks, one process | p50 | baseline | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| message between two units (half a round trip) | {:.1} us | tokio channel, half a round trip {:.1} us | {:.2}x | <= 20 us | {} |",
        half.as_secs_f64() * 1e6,
        (channel / 2).as_secs_f64() * 1e6,
        half.as_secs_f64() / (channel / 2).as_secs_f64(),
        if half <= Duration::from_micros(20) { "yes" } else { "NO" }
    );
    println!(
        "| a unit's panic to its last peer dropped (8 units) | {:.1} us | | | <= 10 ms | {} |",
        drop.as_secs_f64() * 1e6,
        if drop <= Duration::from_millis(10) {
            "yes"
        } else {
            "NO"
        }
    );
}
