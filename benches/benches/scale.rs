//! `cargo bench -p routine-bench --bench scale`: 1,000,000 small results in
//! one store (the default, database layout), then the commands a user runs
//! on it: `cache ls`, `cache stats`, `tasks` and `cache gc --max-size`, each
//! a process of its own (the `scale-cli` program), with its time and its
//! peak memory (the kernel's `ru_maxrss` of that process), run under a limit
//! of 2 GiB of address space (`ulimit -v 2097152`, as batch schedulers set
//! it): the store must work there at any size. Storing is timed in this
//! process, its peak memory above what the process held before.
//! `ROUTINE_BENCH_QUICK=1` stores 100,000.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use routine::store::{DatabaseStore, Store};
use routine::Engine;
use routine_bench::memory::{current_rss, peak_rss, reset_peak_rss};
use routine_bench::run_folder;
use routine_bench::scale::payload;

/// The address space each command may take: 2 GiB.
const ADDRESS_SPACE_LIMIT: libc::rlim_t = 2 << 30;

/// What one command did: its time, its peak memory and what it printed.
struct Ran {
    seconds: f64,
    peak: u64,
    printed: u64,
}

/// Runs `scale-cli args` on the store at `root`; its output is read and
/// counted, not kept.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also gives its resource use"
)]
fn command(root: &Path, args: &[&str]) -> Ran {
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_scale-cli"));
    // SAFETY: the closure runs in the child between fork and exec, and
    // only calls `setrlimit`, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT,
                rlim_max: ADDRESS_SPACE_LIMIT,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut child = command
        .args(args)
        .env("ROUTINE_STORE", root)
        .env_remove("ROUTINE_CONFIG")
        .env_remove("ROUTINE_LAYOUT")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let printed = std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let (status, usage) = wait_with_usage(child.id());
    let seconds = started.elapsed().as_secs_f64();
    assert!(status == 0, "scale-cli {args:?} exited with {status}");
    Ran {
        seconds,
        // Linux gives kibibytes.
        peak: usage.ru_maxrss as u64 * 1024,
        printed,
    }
}

/// Waits for the process `pid`, returning its exit status and its resource
/// use (std's `wait` keeps the latter to itself).
fn wait_with_usage(pid: u32) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value; `wait4` writes both
    // out-parameters, which live across the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid as libc::pid_t, "wait4 failed");
    (libc::WEXITSTATUS(status), usage)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let results: u64 = match std::env::var_os("ROUTINE_BENCH_QUICK") {
        Some(_) => 100_000,
        None => 1_000_000,
    };
    let root = run_folder("scale-");
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

    let before = current_rss().unwrap_or(0);
    reset_peak_rss();
    let started = Instant::now();
    runtime.block_on(engine.scope(async {
        for i in 0..results {
            std::hint::black_box(payload(i).await);
        }
    }));
    let store_s = started.elapsed().as_secs_f64();
    let store_peak = peak_rss().unwrap_or(0).saturating_sub(before);
    let total: u64 = store.list(None, None).unwrap().iter().map(|l| l.size).sum();
    // The commands open the store themselves.
    drop((engine, store));
    let disk: u64 = fs::read_dir(root.join(".database"))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();

    let half = (total / 2).to_string();
    let steps: [(&str, Vec<&str>); 4] = [
        ("`cache ls`", vec!["cache", "ls"]),
        ("`cache stats`", vec!["cache", "stats"]),
        ("`tasks`", vec!["tasks"]),
        (
            "`cache gc --max-size` to half the bytes",
            vec!["cache", "gc", "--max-size", &half],
        ),
    ];
    let ran: Vec<(&str, Ran)> = steps
        .iter()
        .map(|(label, args)| (*label, command(&root, args)))
        .collect();
    let remaining = DatabaseStore::open(&root)
        .unwrap()
        .list(None, None)
        .unwrap()
        .len() as u64;
    assert!(
        remaining > 0 && remaining < results,
        "gc kept {remaining} of {results}"
    );

    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!();
    println!(
        "| {results} results of 168 bytes, database layout ({:.0} MiB of database); commands under `ulimit -v 2097152` | time | peak memory | printed |",
        mib(disk)
    );
    println!("|---|---|---|---|");
    println!(
        "| store them (one miss each, in the bench's process) | {store_s:.2} s | {:.1} MiB above the start | |",
        mib(store_peak)
    );
    for (label, ran) in &ran {
        println!(
            "| {label} | {:.2} s | {:.1} MiB | {:.1} MiB |",
            ran.seconds,
            mib(ran.peak),
            mib(ran.printed)
        );
    }
    println!("| (after gc: {remaining} results kept of {results}) | | | |");
    // A few files holding hundreds of megabytes, after every timed step.
    let _ = fs::remove_dir_all(&root);
}
