//! Benchmarks live in `benches/`: `engine.rs` and `scale.rs` (run
//! `cargo bench -p routine-bench`) and `distributed.rs` (run
//! `./scripts/bench-distributed`). This library holds what they share, and
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

/// The scale bench's task.
pub mod scale {
    /// A 168-byte result (21 numbers).
    #[routine::task(name = "scale-payload", version = "1.0.0")]
    pub async fn payload(i: u64) -> Vec<f64> {
        (0..21).map(|j| (i * 21 + j) as f64).collect()
    }
}

/// The process's memory, read from `/proc/self/status` (Linux).
pub mod memory {
    use std::fs;

    fn status_bytes(field: &str) -> Option<u64> {
        let status = fs::read_to_string("/proc/self/status").ok()?;
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
