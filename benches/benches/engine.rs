//! `cargo bench -p routine-bench`: routine's hit and miss paths against their
//! floors and against the `cached` crate's disk-backed macro, in one table.
//!
//! Every figure is a median over interleaved batches; each ratio divides two
//! figures measured in this same run, so machine noise mostly cancels.
//! Files are never deleted between timed runs: each run writes into a fresh
//! directory under `target/routine-bench/`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cached::macros::concurrent_cached;
use routine::entry::{EntryMeta, HEADER_LEN, TRAILER_LEN};
use routine::store::{DatabaseStore, Durability, FileStore};
use routine::{Engine, Key};
use routine_bench::memory::{current_rss, peak_rss, reset_peak_rss};
use routine_bench::run_folder;
use routine_bench::{human, median};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- workloads

/// The small-argument task: a name, a count and a short vector.
#[routine::task(name = "bench-small", version = "1.0.0")]
async fn small(name: String, n: u32, values: Vec<u32>) -> Vec<f64> {
    small_body(&name, n, &values)
}

fn small_body(name: &str, n: u32, values: &[u32]) -> Vec<f64> {
    values
        .iter()
        .map(|v| f64::from(*v + n) / name.len() as f64)
        .collect()
}

fn small_args(n: u32) -> (String, u32, Vec<u32>) {
    ("experiment-alpha-042".to_owned(), n, (0..8).collect())
}

/// `small` with every execution option: what its checks cost on a hit.
#[routine::task(
    name = "bench-small-limited",
    version = "1.0.0",
    timeout = "10m",
    retries = 3,
    backoff = "1s",
    concurrency = 2
)]
async fn small_limited(name: String, n: u32, values: Vec<u32>) -> Vec<f64> {
    small_body(&name, n, &values)
}

/// A 168-byte result (21 numbers), as in the disk-use rows.
#[routine::task(name = "bench-payload", version = "1.0.0")]
async fn payload(i: u64) -> Vec<f64> {
    payload_body(i)
}

fn payload_body(i: u64) -> Vec<f64> {
    (0..21).map(|j| (i * 21 + j) as f64).collect()
}

#[concurrent_cached(
    disk = true,
    disk_dir = "/tmp/routine-bench-cached/payload",
    // Durable: non-durable redb commits stay in memory until a durable one,
    // and their disk use would not show.
    durable = true,
    key = "String",
    convert = r#"{ i.to_string() }"#,
    map_error = |e| format!("{e:?}")
)]
fn cached_payload(i: u64) -> Result<Vec<f64>, String> {
    Ok(payload_body(i))
}

/// Bytes `path` takes on disk (`du`, after `sync`: blocks of data not yet
/// written back are not allocated yet), 0 if it cannot tell.
fn disk_use(path: &Path) -> u64 {
    let _ = std::process::Command::new("sync").status();
    let out = std::process::Command::new("du")
        .arg("-sk")
        .arg(path)
        .output();
    out.ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[routine::task(name = "bench-big-arg", version = "1.0.0")]
async fn big_arg(data: Vec<u8>) -> u64 {
    data.len() as u64
}

/// The same bytes as one serde byte string: hashed in bulk.
#[routine::task(name = "bench-big-bytes", version = "1.0.0")]
async fn big_bytes(data: serde_bytes::ByteBuf) -> u64 {
    data.len() as u64
}

#[routine::task(name = "bench-trivial", version = "1.0.0")]
async fn trivial(i: u64) -> u64 {
    i
}

#[routine::task(name = "bench-gib", version = "1.0.0")]
async fn gib(len: u64) -> Vec<u8> {
    vec![7u8; len as usize]
}

#[concurrent_cached(
    disk = true,
    disk_dir = "/tmp/routine-bench-cached/small",
    durable = false,
    key = "String",
    convert = r#"{ format!("{name}:{n}:{values:?}") }"#,
    map_error = |e| format!("{e:?}")
)]
fn cached_small(name: String, n: u32, values: Vec<u32>) -> Result<Vec<f64>, String> {
    Ok(small_body(&name, n, &values))
}

/// `cached_small` on a disk store only the cold batches' processes open
/// (its database takes one process at a time).
#[concurrent_cached(
    disk = true,
    disk_dir = "/tmp/routine-bench-cached/cold",
    durable = false,
    key = "String",
    convert = r#"{ format!("{name}:{n}:{values:?}") }"#,
    map_error = |e| format!("{e:?}")
)]
fn cached_small_cold(name: String, n: u32, values: Vec<u32>) -> Result<Vec<f64>, String> {
    Ok(small_body(&name, n, &values))
}

#[concurrent_cached(
    disk = true,
    disk_dir = "/tmp/routine-bench-cached/trivial",
    durable = false,
    key = "String",
    convert = r#"{ i.to_string() }"#,
    map_error = |e| format!("{e:?}")
)]
fn cached_trivial(i: u64) -> Result<u64, String> {
    Ok(i)
}

#[concurrent_cached(
    disk = true,
    disk_dir = "/tmp/routine-bench-cached/durable",
    durable = true,
    key = "String",
    convert = r#"{ i.to_string() }"#,
    map_error = |e| format!("{e:?}")
)]
fn cached_trivial_durable(i: u64) -> Result<u64, String> {
    Ok(i)
}

#[concurrent_cached(
    disk = true,
    disk_dir = "/tmp/routine-bench-cached/big",
    durable = false,
    key = "String",
    convert = r#"{ format!("{data:?}") }"#,
    map_error = |e| format!("{e:?}")
)]
fn cached_big_arg(data: Vec<u8>) -> Result<u64, String> {
    Ok(data.len() as u64)
}

// ---------------------------------------------------------------- timing

/// One timed batch: how long it took and how many operations it ran.
type Batch<'a> = Box<dyn FnMut() -> (Duration, u64) + 'a>;

/// Runs the batches in turn, `rounds` times, after one untimed round that
/// warms caches and allocators; returns each one's median nanoseconds per
/// operation. Interleaving makes every column see the same machine noise.
fn medians(rounds: usize, mut batches: Vec<Batch<'_>>) -> Vec<f64> {
    let mut samples = vec![Vec::new(); batches.len()];
    for round in 0..=rounds {
        for (batch, samples) in batches.iter_mut().zip(&mut samples) {
            let (time, ops) = batch();
            if round > 0 {
                samples.push(time.as_nanos() as f64 / ops as f64);
            }
        }
    }
    samples.into_iter().map(median).collect()
}

fn timed(ops: u64, f: impl FnOnce()) -> (Duration, u64) {
    let started = Instant::now();
    f();
    (started.elapsed(), ops)
}

struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(&mut self, name: &str, ours: f64, base_name: &str, base: f64, target: &str, ok: bool) {
        self.rows.push([
            name.to_owned(),
            human(ours),
            format!("{base_name} {}", human(base)),
            format!("{:.2}x", ours / base),
            target.to_owned(),
            if ok { "yes".into() } else { "NO".into() },
        ]);
        eprintln!("  measured: {name}");
    }

    fn print(&self) {
        let headers = ["row", "routine", "baseline", "ratio", "target", "met"];
        let mut widths = headers.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: [&str; 6]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(headers);
        println!("|{}|", widths.map(|w| "-".repeat(w + 2)).join("|"));
        for row in &self.rows {
            line(row.each_ref().map(String::as_str));
        }
    }
}

// ---------------------------------------------------------------- helpers

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Keys never seen before in this or any earlier run.
fn fresh_base() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    (stamp << 20) + NEXT.fetch_add(1 << 16, Ordering::Relaxed)
}

fn engine(dir: &Path, durability: Durability, cache: usize) -> Engine {
    Engine::builder(FileStore::open(dir).unwrap().with_durability(durability))
        .cache_capacity(cache)
        .build()
        .unwrap()
}

/// The same over the compact store (an SQLite database beside the files).
fn database_engine(dir: &Path, durability: Durability, cache: usize) -> Engine {
    Engine::builder(DatabaseStore::open_with(dir, durability).unwrap())
        .cache_capacity(cache)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- cold hits

/// What a cold-hit batch reads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColdReader {
    /// The floor: open, read and decode the file store's entry files.
    Floor,
    /// An engine on the file store.
    Files,
    /// The peer, `cached` on its disk store.
    Cached,
    /// An engine on the database store.
    Database,
}

const COLD_READERS: [ColdReader; 4] = [
    ColdReader::Floor,
    ColdReader::Files,
    ColdReader::Cached,
    ColdReader::Database,
];

/// Runs one cold batch in a fresh process: this program with `--cold`.
fn cold_in_child(
    reader: ColdReader,
    dir: &Path,
    keys: std::ops::Range<u32>,
    warm_up: u32,
) -> (Duration, u64) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--cold")
        .arg(format!("{reader:?}"))
        .arg(dir)
        .arg(keys.start.to_string())
        .arg(keys.end.to_string())
        .arg(warm_up.to_string())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let nanos: u64 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (
        Duration::from_nanos(nanos),
        u64::from(keys.end - keys.start),
    )
}

/// The child's side: opens the store, reads the `warm_up` key untimed,
/// then prints the nanoseconds the reads of `start..end` took.
fn cold_child(mut args: impl Iterator<Item = String>) {
    let mut next = || args.next().expect("--cold READER DIR START END WARM_UP");
    let reader = next();
    let reader = *COLD_READERS
        .iter()
        .find(|r| format!("{r:?}") == reader)
        .expect("a reader");
    let dir = PathBuf::from(next());
    let [start, end, warm_up]: [u32; 3] = [next(), next(), next()].map(|n| n.parse().unwrap());
    let rt = runtime();
    let elapsed = match reader {
        ColdReader::Floor => {
            let path = |i: u32| {
                let (name, _, values) = small_args(0);
                let key = Key::of("bench-small", "1.0.0", &(name, i, values)).unwrap();
                dir.join("bench-small/1.0.0").join(key.to_hex())
            };
            let read = |path: &Path| {
                let bytes = fs::read(path).unwrap();
                let start = EntryMeta::header_len(&bytes).unwrap();
                let payload = &bytes[start..bytes.len() - TRAILER_LEN];
                let value: Vec<f64> = routine::codec::decode_slice(payload).unwrap();
                std::hint::black_box(value);
            };
            read(&path(warm_up));
            let paths: Vec<PathBuf> = (start..end).map(path).collect();
            timed(0, || paths.iter().for_each(|p| read(p))).0
        }
        ColdReader::Cached => {
            let read = |i: u32| {
                let (name, _, values) = small_args(0);
                std::hint::black_box(cached_small_cold(name, i, values).unwrap());
            };
            read(warm_up);
            timed(0, || (start..end).for_each(read)).0
        }
        ColdReader::Files | ColdReader::Database => {
            let engine = match reader {
                ColdReader::Files => engine(&dir, Durability::Process, 0),
                _ => database_engine(&dir, Durability::Process, 0),
            };
            let read = |keys: std::ops::Range<u32>| {
                rt.block_on(engine.scope(async {
                    for i in keys {
                        let (name, _, values) = small_args(0);
                        std::hint::black_box(small(name, i, values).await);
                    }
                }))
            };
            read(warm_up..warm_up + 1);
            timed(0, || read(start..end)).0
        }
    };
    println!("{}", elapsed.as_nanos());
}

// ---------------------------------------------------------------- main

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--cold") {
        return cold_child(args);
    }
    let quick = std::env::var_os("ROUTINE_BENCH_QUICK").is_some();
    let batches = if quick { 5 } else { 21 };
    let root = run_folder("");
    let rt = runtime();
    let mut table = Table { rows: Vec::new() };
    let mut peer_rows: Vec<(&str, f64, f64)> = Vec::new();
    eprintln!("routine bench: store under {}", root.display());

    // Hits with small arguments, warm: the floor, the file store with its
    // in-process cache, the in-memory store, and the peer.
    let (name, n, values) = small_args(1);
    let result_bytes = bincode::serialize(&small_body(&name, n, &values)).unwrap();
    let warm = engine(
        &root.join("warm"),
        Durability::Process,
        routine::engine::DEFAULT_CACHE_CAPACITY,
    );
    let memory = Engine::in_memory();
    for engine in [&warm, &memory] {
        rt.block_on(engine.scope(small(name.clone(), n, values.clone())));
    }
    rt.block_on(warm.scope(small_limited(name.clone(), n, values.clone())));
    cached_small(name.clone(), n, values.clone()).unwrap();
    let ours_repeated = |engine: &Engine| -> Batch<'_> {
        let (rt, name, values) = (&rt, &name, &values);
        let engine = engine.clone();
        Box::new(move || {
            timed(2000, || {
                rt.block_on(engine.scope(async {
                    for _ in 0..2000 {
                        std::hint::black_box(small(name.clone(), n, values.clone()).await);
                    }
                }))
            })
        })
    };
    let m = medians(
        batches,
        vec![
            Box::new(|| {
                timed(2000, || {
                    for _ in 0..2000 {
                        let args = (name.clone(), n, values.clone());
                        let key = Key::of("bench-small", "1.0.0", &args).unwrap();
                        let value: Vec<f64> = routine::codec::decode_slice(&result_bytes).unwrap();
                        std::hint::black_box((key, value));
                    }
                })
            }),
            ours_repeated(&warm),
            ours_repeated(&memory),
            Box::new(|| {
                timed(2000, || {
                    for _ in 0..2000 {
                        std::hint::black_box(
                            cached_small(name.clone(), n, values.clone()).unwrap(),
                        );
                    }
                })
            }),
            Box::new(|| {
                timed(2000, || {
                    rt.block_on(warm.scope(async {
                        for _ in 0..2000 {
                            std::hint::black_box(
                                small_limited(name.clone(), n, values.clone()).await,
                            );
                        }
                    }))
                })
            }),
        ],
    );
    let (floor, warm_ns, memory_ns, peer, limited_ns) = (m[0], m[1], m[2], m[3], m[4]);
    table.row(
        "hit, small args, warm",
        warm_ns,
        "hash+decode",
        floor,
        "<= 2x",
        warm_ns <= 2.0 * floor,
    );
    table.row(
        "hit, in-memory store",
        memory_ns,
        "hash+decode",
        floor,
        "< 1 us",
        memory_ns < 1000.0,
    );
    table.row(
        "hit, small args, warm, task with timeout, retries and concurrency",
        limited_ns,
        "hash+decode",
        floor,
        "<= 2x",
        limited_ns <= 2.0 * floor,
    );
    peer_rows.push(("peer: hit, small args, warm", warm_ns, peer));

    // Hits with small arguments, cold: what a fresh process sees. Each
    // batch runs in a new process (this program, run again) that reads
    // entries no process has read since they were written, after one
    // warm-up read that opens the store; each column walks its own range.
    let cold_dir = root.join("cold");
    let per_batch = 400u32;
    let cold_keys = per_batch * (batches as u32 + 1);
    let cold_db_dir = root.join("cold-database");
    for filler in [
        engine(&cold_dir, Durability::Process, 0),
        database_engine(&cold_db_dir, Durability::Process, 0),
    ] {
        rt.block_on(filler.scope(async {
            for i in 0..=cold_keys {
                let (name, _, values) = small_args(0);
                small(name, i, values).await;
            }
        }));
    }
    // The peer's entries, written by a process of their own.
    cold_in_child(
        ColdReader::Cached,
        Path::new(""),
        0..cold_keys + 1,
        cold_keys,
    );
    let batch = |reader: ColdReader, dir: &Path| -> Batch<'static> {
        let dir = dir.to_owned();
        let mut next = 0;
        Box::new(move || {
            let start = next;
            next = (next + per_batch) % cold_keys;
            cold_in_child(reader, &dir, start..start + per_batch, cold_keys)
        })
    };
    let m = medians(
        batches,
        vec![
            batch(ColdReader::Floor, &cold_dir),
            batch(ColdReader::Files, &cold_dir),
            batch(ColdReader::Cached, &cold_dir),
            batch(ColdReader::Database, &cold_db_dir),
        ],
    );
    let (floor, cold_ns, peer, db_cold_ns) = (m[0], m[1], m[2], m[3]);
    table.row(
        "hit, small args, cold",
        cold_ns,
        "open+read+decode",
        floor,
        "<= 2x",
        cold_ns <= 2.0 * floor,
    );
    peer_rows.push(("peer: hit, small args, cold", cold_ns, peer));
    peer_rows.push((
        "peer: hit, small args, cold, database store",
        db_cold_ns,
        peer,
    ));

    // Hits this process has not read before, in a long-running process:
    // the store's pages are mapped or cached in memory already, and only
    // the CPU's caches are cold (the other batches flush them).
    let (mut ours_next, mut peer_next) = (0, 0);
    for i in 0..cold_keys {
        let (name, _, values) = small_args(0);
        cached_small(name, i, values).unwrap();
    }
    let next_range = |next: &mut u32| {
        let start = *next;
        *next = (*next + per_batch) % cold_keys;
        start..start + per_batch
    };
    let db_engine = database_engine(&cold_db_dir, Durability::Process, 0);
    let m = medians(
        batches,
        vec![
            Box::new(|| {
                let keys = next_range(&mut ours_next);
                timed(u64::from(per_batch), || {
                    rt.block_on(db_engine.scope(async {
                        for i in keys {
                            let (name, _, values) = small_args(0);
                            std::hint::black_box(small(name, i, values).await);
                        }
                    }))
                })
            }),
            Box::new(|| {
                let keys = next_range(&mut peer_next);
                timed(u64::from(per_batch), || {
                    for i in keys {
                        let (name, _, values) = small_args(0);
                        std::hint::black_box(cached_small(name, i, values).unwrap());
                    }
                })
            }),
            // Flushes the CPU's caches, as other work would.
            Box::new(|| {
                let mut flush = vec![1u8; 32 << 20];
                timed(1, || {
                    for i in (0..flush.len()).step_by(64) {
                        flush[i] = flush[i].wrapping_add(1);
                    }
                    std::hint::black_box(&flush);
                })
            }),
        ],
    );
    drop(db_engine);
    peer_rows.push((
        "peer: hit, small args, not yet read by this process, database store",
        m[0],
        m[1],
    ));

    // Hits with a 64 MiB argument: hashing dominates. The argument is cloned
    // outside the timed part; the peer keys its disk cache by a string.
    let big: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let bytes = serde_bytes::ByteBuf::from(big.clone());
    let big_engine = engine(&root.join("big"), Durability::Process, 0);
    rt.block_on(big_engine.scope(async {
        big_arg(big.clone()).await;
        big_bytes(bytes.clone()).await;
    }));
    cached_big_arg(big.clone()).unwrap();
    let m = medians(
        if quick { 2 } else { 5 },
        vec![
            Box::new(|| {
                timed(1, || {
                    std::hint::black_box(Sha256::digest(&big));
                })
            }),
            Box::new(|| {
                let arg = big.clone();
                timed(1, || {
                    std::hint::black_box(rt.block_on(big_engine.scope(big_arg(arg))));
                })
            }),
            Box::new(|| {
                let arg = bytes.clone();
                timed(1, || {
                    std::hint::black_box(rt.block_on(big_engine.scope(big_bytes(arg))));
                })
            }),
            Box::new(|| {
                let arg = big.clone();
                timed(1, || {
                    std::hint::black_box(cached_big_arg(arg).unwrap());
                })
            }),
        ],
    );
    let (sha, vec_ns, bytes_ns, peer) = (m[0], m[1], m[2], m[3]);
    let target = ">= 80% of SHA-256 (<= 1.25x)";
    table.row(
        "hit, 64 MiB argument, Vec<u8>",
        vec_ns,
        "SHA-256 of 64 MiB",
        sha,
        target,
        vec_ns <= 1.25 * sha,
    );
    table.row(
        "hit, 64 MiB argument, serde_bytes",
        bytes_ns,
        "SHA-256 of 64 MiB",
        sha,
        target,
        bytes_ns <= 1.25 * sha,
    );
    peer_rows.push(("peer: hit, 64 MiB argument", vec_ns, peer));
    drop((big, bytes));

    // Misses with a trivial body, new keys every call: not synced, then
    // synced.
    for durability in [Durability::Process, Durability::Fsync] {
        let sync = durability == Durability::Fsync;
        let suffix = if sync { ", fsync" } else { "" };
        let floor_dir = root.join(format!("floor{suffix}"));
        fs::create_dir_all(&floor_dir).unwrap();
        let misses = engine(
            &root.join(format!("miss{suffix}")),
            durability,
            routine::engine::DEFAULT_CACHE_CAPACITY,
        );
        let database_misses = database_engine(
            &root.join(format!("miss-database{suffix}")),
            durability,
            routine::engine::DEFAULT_CACHE_CAPACITY,
        );
        let ops = if sync { 50 } else { 400 };
        let payload = vec![0u8; HEADER_LEN + TRAILER_LEN + 8];
        let mut written = 0u64;
        let m = medians(
            batches,
            vec![
                Box::new(|| {
                    timed(ops, || {
                        for _ in 0..ops {
                            written += 1;
                            let tmp = floor_dir.join(format!(".{written}.tmp"));
                            let mut file = fs::File::create(&tmp).unwrap();
                            file.write_all(&payload).unwrap();
                            if sync {
                                file.sync_all().unwrap();
                            }
                            drop(file);
                            fs::rename(&tmp, floor_dir.join(written.to_string())).unwrap();
                        }
                    })
                }),
                Box::new(|| {
                    let base = fresh_base();
                    timed(ops, || {
                        rt.block_on(misses.scope(async {
                            for i in 0..ops {
                                std::hint::black_box(trivial(base + i).await);
                            }
                        }))
                    })
                }),
                Box::new(|| {
                    let base = fresh_base();
                    timed(ops, || {
                        for i in 0..ops {
                            let value = if sync {
                                cached_trivial_durable(base + i)
                            } else {
                                cached_trivial(base + i)
                            };
                            std::hint::black_box(value.unwrap());
                        }
                    })
                }),
                Box::new(|| {
                    let base = fresh_base();
                    timed(ops, || {
                        rt.block_on(database_misses.scope(async {
                            for i in 0..ops {
                                std::hint::black_box(trivial(base + i).await);
                            }
                        }))
                    })
                }),
            ],
        );
        let (floor, miss_ns, peer, db_miss_ns) = (m[0], m[1], m[2], m[3]);
        let floor_name = if sync {
            "write+fsync+rename"
        } else {
            "write+rename"
        };
        table.row(
            &format!("miss, trivial body{suffix}"),
            miss_ns,
            floor_name,
            floor,
            "<= 1.5x",
            miss_ns <= 1.5 * floor,
        );
        peer_rows.push((
            if sync {
                "peer: miss, trivial body, fsync"
            } else {
                "peer: miss, trivial body"
            },
            miss_ns,
            peer,
        ));
        peer_rows.push((
            if sync {
                "peer: miss, trivial body, fsync, database store"
            } else {
                "peer: miss, trivial body, database store"
            },
            db_miss_ns,
            peer,
        ));
    }
    // Durable misses from 8 callers at once, each on a thread of its own
    // (the time per call is the batch's time over all its calls): the
    // database layout puts the writes that arrive during a commit into the
    // next one; `cached`'s database commits one write at a time.
    let callers = 8u64;
    let per_caller = if quick { 25 } else { 50 };
    let concurrent = database_engine(
        &root.join("miss-database-concurrent"),
        Durability::Fsync,
        routine::engine::DEFAULT_CACHE_CAPACITY,
    );
    // Each caller makes its calls on the keys of one range.
    let at_once = |calls: &(dyn Fn(std::ops::Range<u64>) + Sync)| {
        let base = fresh_base();
        timed(callers * per_caller, || {
            std::thread::scope(|threads| {
                for caller in 0..callers {
                    let start = base + caller * per_caller;
                    threads.spawn(move || calls(start..start + per_caller));
                }
            })
        })
    };
    let m = medians(
        batches.min(9),
        vec![
            Box::new(|| {
                at_once(&|keys| {
                    runtime().block_on(concurrent.scope(async {
                        for i in keys {
                            std::hint::black_box(trivial(i).await);
                        }
                    }))
                })
            }),
            Box::new(|| {
                at_once(&|keys| {
                    for i in keys {
                        std::hint::black_box(cached_trivial_durable(i).unwrap());
                    }
                })
            }),
        ],
    );
    peer_rows.push((
        "peer: miss, trivial body, fsync, database store, 8 callers at once",
        m[0],
        m[1],
    ));

    for (label, ours, peer) in peer_rows {
        table.row(label, ours, "cached", peer, "ahead (< 1x)", ours < peer);
    }

    // Disk use per small result, and misses right after a mass deletion,
    // for both layouts; the peer's disk use beside.
    let results = if quick { 5_000u64 } else { 20_000 };
    let cached_dir = Path::new("/tmp/routine-bench-cached/payload");
    // One file, before its first use in this process: its growth is then
    // this run's results alone.
    let _ = fs::remove_dir_all(cached_dir);
    let cached_before = disk_use(cached_dir);
    let base = fresh_base();
    for i in 0..results {
        std::hint::black_box(cached_payload(base + i).unwrap());
    }
    let cached_per = disk_use(cached_dir).saturating_sub(cached_before) as f64 / results as f64;
    let mut layout_rows = Vec::new();
    for (layout, open) in [
        ("files", engine as fn(&Path, Durability, usize) -> Engine),
        ("database", database_engine),
    ] {
        let dir = root.join(format!("disk-{layout}"));
        let store = open(&dir, Durability::Process, 0);
        let misses = |base: u64| {
            let started = Instant::now();
            rt.block_on(store.scope(async {
                for i in 0..results {
                    std::hint::black_box(payload(base + i).await);
                }
            }));
            started.elapsed().as_nanos() as f64 / results as f64
        };
        let before = misses(fresh_base());
        let per_result = disk_use(&dir) as f64 / results as f64;
        // Remove every result, as `cache gc` does, then miss again.
        let listed = store.store().list(Some("bench-payload"), None).unwrap();
        let plan = routine::store::gc::GcPlan {
            remove: listed
                .into_iter()
                .map(|l| (l, routine::store::gc::Reason::OverSize))
                .collect(),
            keep: Vec::new(),
        };
        routine::store::gc::apply(store.store(), &plan).unwrap();
        let after = misses(fresh_base());
        layout_rows.push((layout, per_result, before, after));
    }

    // 7. Memory: store and load a 1 GiB result.
    let gib_len: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let gib_dir = root.join("gib");
    let gib_engine = engine(
        &gib_dir,
        Durability::Process,
        routine::engine::DEFAULT_CACHE_CAPACITY,
    );
    let mut memory_rows = Vec::new();
    if reset_peak_rss() {
        for phase in ["store: compute, encode, write", "load: read, decode"] {
            let before = current_rss().unwrap_or(0);
            reset_peak_rss();
            let started = Instant::now();
            let value = rt.block_on(gib_engine.scope(gib(gib_len)));
            let elapsed = started.elapsed();
            let peak = peak_rss().unwrap_or(0).saturating_sub(before);
            assert_eq!(value.len() as u64, gib_len);
            drop(value);
            memory_rows.push((phase, peak as f64 / gib_len as f64, elapsed));
        }
    }
    let _ = fs::remove_dir_all(&gib_dir); // one file, after every timed run

    println!();
    table.print();
    println!();
    println!(
        "| memory, {} MiB result | peak RSS / value size | time |",
        gib_len >> 20
    );
    println!("|---|---|---|");
    for (phase, ratio, elapsed) in memory_rows {
        println!("| {phase} | {ratio:.2}x | {:.2} s |", elapsed.as_secs_f64());
    }
    println!();
    println!(
        "| layout, {results} results of 168 bytes | disk per result | vs cached ({cached_per:.0} B) | miss before a mass deletion | right after | after / before |"
    );
    println!("|---|---|---|---|---|---|");
    for (layout, per_result, before, after) in layout_rows {
        println!(
            "| {layout} | {per_result:.0} B | {:.2}x | {} | {} | {:.2}x |",
            per_result / cached_per.max(1.0),
            human(before),
            human(after),
            after / before
        );
    }
    println!();
    explaining_bytes(&warm, &name, n, &values);
}

/// The bytes an entry spends so that `why` can explain it (its writer and
/// a digest of each argument): a stored entry of the three-argument task,
/// against the same entry in format 2.
fn explaining_bytes(engine: &Engine, name: &str, n: u32, values: &[u32]) {
    let key = Key::of("bench-small", "1.0.0", &(name, n, values)).unwrap();
    let slot = routine::store::Slot {
        name: "bench-small",
        version: "1.0.0",
        key: &key,
    };
    let bytes = engine
        .store()
        .peek(&slot)
        .unwrap()
        .unwrap()
        .into_bytes()
        .unwrap();
    let meta = EntryMeta::parse(&bytes).unwrap();
    let format_2 = (routine::entry::HEADER_LEN_V2 + TRAILER_LEN) as u64 + meta.payload_len;
    let added = bytes.len() as u64 - format_2;
    let target = 64 + 40 * meta.arguments.len() as u64;
    println!(
        "| entry bytes that explain it, {} arguments | bytes | target | met |",
        meta.arguments.len()
    );
    println!("|---|---|---|---|");
    println!(
        "| writer and argument digests, over format 2 | {added} B | <= {target} B | {} |",
        if added <= target { "yes" } else { "NO" }
    );
}
