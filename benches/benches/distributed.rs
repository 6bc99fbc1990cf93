//! `./scripts/bench-distributed`: dispatch round trip, throughput over two
//! worker processes, and shared-store hits, each against a baseline measured
//! in the same run.
//!
//! The workers are this bench binary, re-run with `--worker`. The shared
//! store is a local folder by default (`file://`, every process on this
//! machine sees it), or the S3 server with `ROUTINE_BENCH_STORE=s3`. Every
//! process counts the requests it makes of the shared store; workers write
//! their counts to a file beside the bench's folder every few milliseconds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use routine::dispatch::Policy;
use routine::distributed::worker::WorkerConfig;
use routine::distributed::DistributedConfig;
use routine::distributed::ObjectStoreBackend;
use routine::store::{Counting, FileStore, Store};
use routine::Engine;
use routine_bench::{human, median, run_folder, Workers};

#[routine::task(name = "dbench-trivial", version = "1.0.0")]
async fn remote_trivial(i: u64) -> u64 {
    i
}

/// Dispatches `n` trivial sub-routines one after the other.
#[routine::task(name = "dbench-sequential", version = "1.0.0")]
async fn sequential(base: u64, n: u64) -> u64 {
    let mut sum = 0;
    for i in 0..n {
        sum += remote_trivial(base + i).await;
    }
    sum
}

/// Dispatches `n` trivial sub-routines at once.
#[routine::task(name = "dbench-fan-out", version = "1.0.0")]
async fn fan_out(base: u64, n: u64) -> u64 {
    let calls: Vec<_> = (0..n)
        .map(|i| routine::spawn(remote_trivial(base + i)))
        .collect();
    let mut sum = 0;
    for call in calls {
        sum += call.await.expect("a sub-routine failed");
    }
    sum
}

#[routine::task(name = "dbench-checksum", version = "1.0.0")]
async fn checksum(data: serde_bytes::ByteBuf, salt: u64) -> u64 {
    data.iter().map(|b| u64::from(*b)).sum::<u64>() + salt
}

/// Four sub-routines sharing one large argument.
#[routine::task(name = "dbench-checksums", version = "1.0.0")]
async fn checksums(data: serde_bytes::ByteBuf) -> u64 {
    let calls: Vec<_> = (0..4)
        .map(|salt| routine::spawn(checksum(data.clone(), salt)))
        .collect();
    let mut sum = 0;
    for call in calls {
        sum += call.await.expect("a sub-routine failed");
    }
    sum
}

#[routine::task(name = "dbench-slow", version = "1.0.0")]
async fn slow(i: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    i
}

/// Four slow sub-routines at once.
#[routine::task(name = "dbench-slow-fan-out", version = "1.0.0")]
async fn slow_fan_out(base: u64) -> u64 {
    let calls: Vec<_> = (0..4).map(|i| routine::spawn(slow(base + i))).collect();
    let mut sum = 0;
    for call in calls {
        sum += call.await.expect("a sub-routine failed");
    }
    sum
}

/// Writes the time (µs) to `{tag}:dropped` when dropped.
struct MarkDropped(String);

impl Drop for MarkDropped {
    fn drop(&mut self) {
        let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
        let mut connection = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{}:dropped", self.0))
            .arg(now_micros())
            .query(&mut connection)
            .unwrap();
    }
}

/// Microseconds since the Unix epoch: a drop takes well under a
/// millisecond.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Marks its start and waits: what a dropped caller leaves on a worker.
#[routine::task(name = "dbench-patient", version = "1.0.0")]
async fn patient(tag: String) -> u64 {
    let _dropped = MarkDropped(tag.clone());
    let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let mut connection = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{tag}:started"))
        .arg(1)
        .query(&mut connection)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    0
}

#[routine::task(name = "dbench-wait-patiently", version = "1.0.0")]
async fn wait_patiently(tag: String) -> u64 {
    patient(tag).await
}

#[routine::task(name = "dbench-small", version = "1.0.0")]
async fn small(i: u64) -> Vec<f64> {
    (0..8).map(|j| (i * j) as f64).collect()
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run ./scripts/bench-distributed"))
}

fn stamp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn config(namespace: &str, store: &str) -> DistributedConfig {
    let mut config = DistributedConfig::new(env("ROUTINE_TEST_REDIS_URL"), store);
    config.namespace = namespace.to_owned();

    config
}

/// Connects to the broker over the shared store, counting store requests.
async fn counted(namespace: &str, store: &str) -> (Engine, Counting<Arc<dyn Store>>) {
    let counting = Counting::over(routine::distributed::open_url(store).unwrap());
    let builder = Engine::builder(counting.clone());
    let engine = routine::distributed::attach(builder, &config(namespace, store))
        .await
        .unwrap();
    (engine, counting)
}

/// The store requests made so far by the worker processes.
fn worker_requests(folder: &Path) -> u64 {
    std::fs::read_dir(folder)
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.unwrap().path()).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if args.iter().any(|a| a == "--worker") {
        let (namespace, store) = (env("BENCH_NAMESPACE"), env("BENCH_STORE"));
        let counts = Path::new(&env("BENCH_COUNTS")).join(std::process::id().to_string());
        runtime.block_on(async {
            let (engine, counting) = counted(&namespace, &store).await;
            std::thread::spawn(move || loop {
                let (reads, writes) = counting.counts();
                let fresh = counts.with_extension("tmp");
                std::fs::write(&fresh, (reads + writes).to_string()).unwrap();
                std::fs::rename(&fresh, &counts).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            });
            let worker = WorkerConfig {
                concurrency: 64,
                blob_cache: env("BENCH_BLOB_CACHE").into(),
                ..WorkerConfig::default()
            };
            routine::distributed::worker::serve_until_signalled(engine, worker)
                .await
                .unwrap();
        });
        return;
    }

    let quick = std::env::var_os("ROUTINE_BENCH_QUICK").is_some();
    let root = run_folder("bench-");
    let namespace = root.file_name().unwrap().to_str().unwrap().to_owned();
    let store = match std::env::var("ROUTINE_BENCH_STORE").as_deref() {
        Ok("s3") => format!("{}/{namespace}", env("ROUTINE_TEST_S3_URL")),
        _ => format!(
            "file://{}",
            root.join("shared")
                .canonicalize()
                .unwrap_or(root.join("shared"))
                .display()
        ),
    };
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::create_dir_all(root.join("counts")).unwrap();
    eprintln!("distributed bench: namespace {namespace}, shared store {store}");

    let workers = Workers(
        (0..2)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .arg("--worker")
                    .env("BENCH_NAMESPACE", &namespace)
                    .env("BENCH_STORE", &store)
                    .env("BENCH_BLOB_CACHE", root.join("blobs"))
                    .env("BENCH_COUNTS", root.join("counts"))
                    .stdout(Stdio::null())
                    .stderr(if std::env::var_os("RUST_LOG").is_some() {
                        Stdio::inherit()
                    } else {
                        Stdio::null()
                    })
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );

    let rows = runtime.block_on(async {
        let (engine, counting) = counted(&namespace, &store).await;
        let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let rounds = if quick { 3 } else { 9 };
        let mut base = stamp() << 8;

        // Warm up: workers up, connections open.
        eprintln!("  warming up");
        engine.scope(sequential(base, 20)).await;
        eprintln!("  measuring round trips");
        base += 1 << 20;

        // 1. Round trip of one trivial dispatched task vs a Redis PING.
        let per_round = 100u64;
        let (mut pings, mut trips) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let started = Instant::now();
            for _ in 0..per_round {
                let _: String = redis::cmd("PING").query_async(&mut redis).await.unwrap();
            }
            pings.push(started.elapsed().as_nanos() as f64 / per_round as f64);
            let started = Instant::now();
            engine.scope(sequential(base, per_round)).await;
            base += 1 << 20;
            trips.push(started.elapsed().as_nanos() as f64 / per_round as f64);
        }
        let (ping, trip) = (median(pings), median(trips));

        // 2. Store requests per fresh call, by the caller and the workers,
        // the workflow's own lookup and writes shared out over its calls.
        let requests = |counting: &Counting<_>| {
            let (reads, writes) = counting.counts();
            reads + writes + worker_requests(&root.join("counts"))
        };
        let settle = Duration::from_millis(100);
        tokio::time::sleep(settle).await;
        let before = requests(&counting);
        engine.scope(sequential(base, per_round)).await;
        base += 1 << 20;
        tokio::time::sleep(settle).await;
        let per_call = (requests(&counting) - before) as f64 / per_round as f64;

        // 3. Throughput: 10,000 trivial tasks over the two workers.
        eprintln!("  measuring throughput");
        let tasks = if quick { 2_000 } else { 10_000 };
        let started = Instant::now();
        let sum = engine.scope(fan_out(base, tasks)).await;
        let elapsed = started.elapsed();
        assert_eq!(sum, (0..tasks).map(|i| base + i).sum::<u64>());
        let throughput = tasks as f64 / elapsed.as_secs_f64();

        // 4. A hit in the shared store vs a hit in a local file store, both
        // with no in-process cache (a process seeing the result for the
        // first time).
        eprintln!("  measuring shared-store hits");
        let count = 500u64;
        let local = Engine::builder(FileStore::open(root.join("local")).unwrap())
            .cache_capacity(0)
            .build()
            .unwrap();
        for i in 0..count {
            local.scope(small(i)).await;
        }
        // The hit row reads from object storage: the S3 server.
        let s3 = format!("{}/{namespace}", env("ROUTINE_TEST_S3_URL"));
        let mut s3_only = config(&namespace, &s3);
        s3_only.policy = Policy::Local;
        s3_only.cache_capacity = 0;
        let s3_filler = routine::distributed::connect(s3_only).await.unwrap();
        for i in 0..count {
            s3_filler.scope(small(i)).await;
        }
        let shared_reader = Engine::builder(ObjectStoreBackend::from_url(&s3).unwrap())
            .cache_capacity(0)
            .build()
            .unwrap();
        let (mut shared_hits, mut local_hits) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let started = Instant::now();
            for i in 0..count {
                shared_reader.scope(small(i)).await;
            }
            shared_hits.push(started.elapsed().as_nanos() as f64 / count as f64);
            let started = Instant::now();
            for i in 0..count {
                local.scope(small(i)).await;
            }
            local_hits.push(started.elapsed().as_nanos() as f64 / count as f64);
        }
        let (shared_hit, local_hit) = (median(shared_hits), median(local_hits));

        // 5. Four calls sharing a 100 MB argument: what goes through Redis,
        // and what each worker downloads.
        eprintln!("  measuring a large argument shared by four calls");
        let input_bytes = |info: String| -> u64 {
            info.lines()
                .find_map(|line| line.strip_prefix("total_net_input_bytes:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap()
        };
        let data: Vec<u8> = (0..100_000_000u32)
            .map(|i| (i as u8) ^ (base as u8))
            .collect();
        let before: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut redis)
            .await
            .unwrap();
        let started = Instant::now();
        engine
            .scope(checksums(serde_bytes::ByteBuf::from(data)))
            .await;
        let large_time = started.elapsed();
        let after: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut redis)
            .await
            .unwrap();
        let through_redis = input_bytes(after) - input_bytes(before);
        // Heartbeats carry the counts.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let broker = routine::distributed::broker_of(&engine).unwrap();
        let downloads: Vec<u64> = broker
            .workers()
            .await
            .unwrap()
            .iter()
            .map(|w| w.downloads)
            .collect();
        let large = (through_redis, downloads, large_time);

        // 6. A caller's future dropped while its dispatched call runs: the
        // time until the worker drops the body.
        eprintln!("  measuring drop-to-drop");
        let mut drops = Vec::new();
        for round in 0..rounds {
            let tag = format!("{namespace}:drop:{round}");
            let call = tokio::spawn(engine.scope(wait_patiently(tag.clone())));
            let marker = |suffix: &str| {
                let (mut redis, key) = (redis.clone(), format!("{tag}:{suffix}"));
                async move {
                    let value: Option<u64> = redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut redis)
                        .await
                        .unwrap();
                    value
                }
            };
            while marker("started").await.is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let dropped_at = now_micros();
            call.abort();
            let _ = call.await;
            let dropped = loop {
                if let Some(at) = marker("dropped").await {
                    break at;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            drops.push(dropped.saturating_sub(dropped_at) as f64 * 1e3);
        }
        let drop_to_drop = median(drops);

        // 7. A worker killed (SIGKILL) while it runs 2 s tasks: the time
        // from the kill to the workflow's end, default heartbeat (2 s).
        eprintln!("  measuring kill-to-resume");
        base += 1 << 20;
        let run = tokio::spawn(engine.scope(slow_fan_out(base)));
        let victim = loop {
            let busy = broker
                .workers()
                .await
                .unwrap()
                .into_iter()
                .find(|w| w.routine.is_some());
            if let Some(worker) = busy {
                break worker.id.split('-').rev().nth(1).unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let _ = Command::new("kill").args(["-KILL", &victim]).status();
        let killed = Instant::now();
        run.await.unwrap();
        let resumed = killed.elapsed();
        (
            ping,
            trip,
            per_call,
            tasks,
            throughput,
            shared_hit,
            local_hit,
            large,
            drop_to_drop,
            resumed,
        )
    });
    drop(workers);

    let (
        ping,
        trip,
        per_call,
        tasks,
        throughput,
        shared_hit,
        local_hit,
        large,
        drop_to_drop,
        resumed,
    ) = rows;
    let (through_redis, downloads, large_time) = large;
    let celery = std::env::var_os("ROUTINE_BENCH_CELERY_PYTHON").map(|python| {
        eprintln!("  measuring Celery on the same Redis");
        let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("celery/peer.py");
        let out = Command::new(python)
            .arg(peer)
            .arg(env("ROUTINE_TEST_REDIS_URL"))
            .arg(tasks.to_string())
            .arg(if quick { "3" } else { "9" })
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "the Celery bench failed");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut numbers = text.split_whitespace().map(|n| n.parse::<f64>().unwrap());
        (numbers.next().unwrap(), numbers.next().unwrap())
    });
    println!();
    println!("shared store: {store}");
    println!("| row | routine | baseline | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    let on_s3 = store.starts_with("s3://");
    // The round-trip targets are for a shared folder: on the S3 server,
    // its HTTP requests bound the round trip.
    let target = |text: &'static str, met: bool| match (on_s3, met) {
        (true, _) => ("", ""),
        (false, true) => (text, "yes"),
        (false, false) => (text, "NO"),
    };
    let (goal, met) = target("<= 5x", trip <= 5.0 * ping);
    println!(
        "| dispatch round trip, trivial task | {} | Redis PING {} | {:.1}x | {goal} | {met} |",
        human(trip),
        human(ping),
        trip / ping,
    );
    println!(
        "| store requests per fresh trivial dispatched call (caller and workers; the workflow's own 3 shared over 100) | {per_call:.2} | | | <= 2 + 0.03 | {} |",
        if per_call <= 2.03 { "yes" } else { "NO" }
    );
    if on_s3 {
        println!(
            "| throughput, {tasks} trivial tasks, 2 workers, on the S3 server | {throughput:.0} tasks/s | | | >= 75 tasks/s | {} |",
            if throughput >= 75.0 { "yes" } else { "NO" }
        );
    }
    match celery {
        Some((celery_trip, celery_throughput)) => {
            let (goal, met) = target("< 1x", trip < celery_trip);
            println!(
                "| same round trip, against Celery 5.7 (threads pool) on the same Redis | {} | Celery {} | {:.2}x | {goal} | {met} |",
                human(trip),
                human(celery_trip),
                trip / celery_trip,
            );
            println!(
                "| throughput, {tasks} trivial tasks, 2 workers, against Celery's 2 workers | {throughput:.0} tasks/s | Celery {celery_throughput:.0} tasks/s | {:.1}x | {} | {} |",
                throughput / celery_throughput,
                if on_s3 { "(Celery keeps results in Redis)" } else { "> 1x" },
                if on_s3 { "" } else if throughput > celery_throughput { "yes" } else { "NO" }
            );
        }
        None if on_s3 => {}
        None => println!(
            "| throughput, {tasks} trivial tasks, 2 workers | {throughput:.0} tasks/s | | | | |"
        ),
    }
    println!(
        "| hit in the shared store (S3 server) | {} | local file-store hit {} | {:.1}x | | |",
        human(shared_hit),
        human(local_hit),
        shared_hit / local_hit
    );
    println!(
        "| 100 MB argument shared by 4 calls: bytes through Redis (all traffic while it ran) | {} KiB | | | < 1 MiB | {} |",
        through_redis / 1024,
        if through_redis < 1 << 20 { "yes" } else { "NO" }
    );
    println!(
        "| same: downloads per worker | {downloads:?} | | | 1 | {} |",
        if downloads.iter().all(|&d| d <= 1) {
            "yes"
        } else {
            "NO"
        }
    );
    println!(
        "| same: time for the 4 calls | {} | | | | |",
        human(large_time.as_nanos() as f64)
    );
    println!(
        "| caller's future dropped to the worker dropping the body (median of {}) | {} | | | < 1 s | {} |",
        if quick { 3 } else { 9 },
        human(drop_to_drop),
        if drop_to_drop < 1e9 { "yes" } else { "NO" }
    );
    println!(
        "| worker killed mid-task: kill to the workflow's end (2 s tasks, 2 s beats) | {} | | | <= 10 s + a task | {} |",
        human(resumed.as_nanos() as f64),
        if resumed.as_secs_f64() <= 12.0 { "yes" } else { "NO" }
    );
}
