//! `cargo bench -p routine-bench --features ui --bench web`: the web view
//! over a store of 100,000 runs of a nine-step workflow (1,000,000 results;
//! one run in a thousand has a failed step), database layout. `web-cli ui`
//! serves it in a process of its own; each page is fetched over HTTP once
//! cold, then seven times (median and slowest), against the same fetches of
//! a static asset (htmx, served from the binary) as the baseline, and the
//! server's peak resident memory (`VmHWM`) is read at the end.
//! `ROUTINE_BENCH_QUICK=1` stores 10,000 runs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use routine::lineage;
use routine::store::{DatabaseStore, Store};
use routine::Engine;
use routine_bench::memory::process_status_bytes;
use routine_bench::web::{run, STEPS};
use routine_bench::{median, run_folder};

const FETCHES: usize = 7;

/// A GET of `path`: its status and the body's length.
fn get(port: u16, path: &str) -> (u16, usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = (text.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(0, |(_, body)| body.len());
    (status, body)
}

/// One cold fetch, then `FETCHES` timed ones: (cold, median, slowest) in
/// milliseconds, and the body's size.
type Timed = (f64, f64, f64, usize);

fn time(port: u16, path: &str) -> Timed {
    let started = Instant::now();
    let (status, size) = get(port, path);
    let cold = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(status, 200, "GET {path}");
    let mut samples = Vec::new();
    for _ in 0..FETCHES {
        let started = Instant::now();
        let (status, _) = get(port, path);
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "GET {path}");
    }
    let slowest = samples.iter().copied().fold(0.0, f64::max);
    (cold, median(samples), slowest, size)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: u64 = match std::env::var_os("ROUTINE_BENCH_QUICK") {
        Some(_) => 10_000,
        None => 100_000,
    };
    let root = run_folder("web-");
    let store = DatabaseStore::open(&root).unwrap();
    let engine = Engine::builder(store.clone())
        .cache_capacity(0)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!("web bench: {runs} runs in {}", root.display());
    let started = Instant::now();
    for r in 0..runs {
        std::hint::black_box(runtime.block_on(engine.scope(run(r))));
    }
    let fill_s = started.elapsed().as_secs_f64();
    // The first question that needs tallies makes them: one pass.
    let started = Instant::now();
    let recorded = lineage::recorded_runs(&store, None, 0, 1).unwrap();
    let tally_s = started.elapsed().as_secs_f64();
    assert_eq!(recorded.total as u64, runs, "one run record per run");
    let results: u64 = store.tallies().unwrap().iter().map(|t| t.results).sum();
    let newest = recorded.runs[0].id;
    let tree = lineage::run_tree(&store, newest).unwrap();
    let step = (tree.calls.iter())
        .find(|node| node.call.name == "web-bench-step")
        .expect("a step in the newest run")
        .call
        .key
        .to_hex();
    drop((engine, store));

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_web-cli"))
        .args(["ui", "--bind", &format!("127.0.0.1:{port}")])
        .env("ROUTINE_STORE", &root)
        .env_remove("ROUTINE_CONFIG")
        .env_remove("ROUTINE_BROKER")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "`web-cli ui` did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pages: Vec<(&str, String)> = vec![
        (
            "a static asset (the baseline)",
            "/assets/htmx-2.0.11.min.js".into(),
        ),
        ("`/` runs, newest 50", "/".into()),
        ("`/?page=1000` runs 49,951-50,000", "/?page=1000".into()),
        (
            "`/?outcome=failed` (looks at 500 runs)",
            "/?outcome=failed".into(),
        ),
        (
            "`/?task=web-bench-run&since=1h`",
            "/?task=web-bench-run&since=1h".into(),
        ),
        ("`/runs/<id>` (10 calls)", format!("/runs/{newest}")),
        (
            "`/runs/<id>?call=<key>`",
            format!("/runs/{newest}?call={step}"),
        ),
        (
            "`/calls/..` a failed step: its record, error",
            format!("/calls/web-bench-step/1.0.0/{step}?run={newest}"),
        ),
        ("`/tasks`", "/tasks".into()),
        ("`/metrics`", "/metrics".into()),
    ];
    let mut timed: Vec<(&str, Timed)> = pages
        .iter()
        .map(|(label, path)| (*label, time(port, path)))
        .collect();
    let peak = process_status_bytes(&server.id().to_string(), "VmHWM:").unwrap_or(0);
    // Why a call with no result would run: compares it with the task's
    // stored calls, which lists them (on demand only).
    let why = format!("/calls/web-bench-step/1.0.0/{step}?run={newest}&why=true");
    timed.push((
        "`/calls/..?why=true` (lists the step's results)",
        time(port, &why),
    ));
    let peak_after_why = process_status_bytes(&server.id().to_string(), "VmHWM:").unwrap_or(0);
    let _ = server.kill();
    let _ = server.wait();

    let baseline = timed[0].1 .1;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!();
    println!(
        "| {runs} runs of {} calls, {results} results, database layout (filled in {fill_s:.1} s, tallies made in {tally_s:.2} s); `web-cli ui` peak memory {:.1} MiB, {:.1} MiB after `?why=true` | cold | median of {FETCHES} | slowest | median / baseline | body |",
        STEPS + 1,
        mib(peak),
        mib(peak_after_why)
    );
    println!("|---|---|---|---|---|---|");
    for (label, (cold, median, slowest, size)) in &timed {
        println!(
            "| {label} | {cold:.1} ms | {median:.1} ms | {slowest:.1} ms | {:.1}x | {:.1} KiB |",
            median / baseline,
            *size as f64 / 1024.0
        );
    }
    // A few files holding hundreds of megabytes, after every timed step.
    let _ = std::fs::remove_dir_all(&root);
}
