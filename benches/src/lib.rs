//! Benchmarks live in `benches/`: `engine.rs`, `units.rs` and `scale.rs`
//! (run `cargo bench -p routine-bench`), `distributed.rs` and `gangs.rs`
//! (run `./scripts/bench-distributed`). This library holds what they share, and
//! the scale bench's task, which its program `scale-cli` links too.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A new folder of this run's own, created:
/// `target/routine-bench/<prefix><nanoseconds>`. Runs never delete each
/// other's files, and a run deletes none of its own between timed runs (on
/// these machines, creating files right after deleting many is slow).
pub fn run_folder(prefix: &str) -> PathBuf {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/routine-bench")
        .join(format!("{prefix}{stamp}"));
    std::fs::create_dir_all(&folder).expect("cannot create the bench's folder");
    folder
}

/// The median of `xs` (the upper one of an even count).
///
/// ```
/// assert_eq!(routine_bench::median(vec![3.0, 1.0, 2.0]), 2.0);
/// ```
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Nanoseconds as people read them: `812 ns`, `3.10 us`, `2.50 ms`, `1.20 s`.
///
/// ```
/// assert_eq!(routine_bench::human(3_100.0), "3.10 us");
/// ```
pub fn human(ns: f64) -> String {
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.2} us", ns / 1e3),
        ns if ns < 1e9 => format!("{:.2} ms", ns / 1e6),
        ns => format!("{:.2} s", ns / 1e9),
    }
}

/// Worker processes a bench started: asked to stop (SIGTERM) and waited
/// for when dropped.
pub struct Workers(pub Vec<std::process::Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// The scale bench's task.
pub mod scale {
    /// A 168-byte result (21 numbers).
    #[routine::task(name = "scale-payload", version = "1.0.0")]
    pub async fn payload(i: u64) -> Vec<f64> {
        (0..21).map(|j| (i * 21 + j) as f64).collect()
    }
}

/// The web bench's tasks: a workflow of nine steps, one run each.
pub mod web {
    /// Steps per run.
    pub const STEPS: u64 = 9;

    /// A step: one run in a thousand has a first step that fails.
    #[routine::task(name = "web-bench-step", version = "1.0.0")]
    pub async fn step(n: u64, j: u64) -> Result<u64, String> {
        if n % 1000 == 999 && j == 0 {
            return Err(format!("run {n}: step {j} refused"));
        }
        Ok(n * STEPS + j)
    }

    /// A run: nine steps, their sum (a failed step counts nothing).
    #[routine::task(name = "web-bench-run", version = "1.0.0")]
    pub async fn run(n: u64) -> u64 {
        let mut sum = 0;
        for j in 0..STEPS {
            sum += step(n, j).await.unwrap_or(0);
        }
        sum
    }
}

/// The process's memory, read from `/proc/self/status` (Linux).
pub mod memory {
    use std::fs;

    fn status_bytes(field: &str) -> Option<u64> {
        process_status_bytes("self", field)
    }

    /// A field of `/proc/<process>/status` in bytes (`VmHWM:`, `VmRSS:`).
    pub fn process_status_bytes(process: &str, field: &str) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{process}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Peak resident memory since the last reset, in bytes.
    pub fn peak_rss() -> Option<u64> {
        status_bytes("VmHWM:")
    }

    /// Resident memory now, in bytes.
    pub fn current_rss() -> Option<u64> {
        status_bytes("VmRSS:")
    }

    /// Starts the peak over from now; false where the kernel cannot.
    pub fn reset_peak_rss() -> bool {
        fs::write("/proc/self/clear_refs", "5").is_ok()
    }
}
