//! Benchmarks live in `benches/`: `engine.rs` and `scale.rs` (run
//! `cargo bench -p routine-bench`) and `distributed.rs` (run
//! `./scripts/bench-distributed`). This library holds what they share.

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
