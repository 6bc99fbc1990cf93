//! Sizes, times and durations as people read them, the same in the command
//! line and the web view.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use routine_core::human;
//!
//! assert_eq!(human::size(1536), "1.5 KiB");
//! let now = SystemTime::now();
//! assert_eq!(human::age(now - Duration::from_secs(90), now), "1m ago");
//! assert_eq!(human::run_time(Duration::from_micros(12_300)), "12.3 ms");
//! ```

use std::time::{Duration, SystemTime};

/// `1.5 KiB`, `12.0 MiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`; `in 3d` for a future time.
pub fn age(at: SystemTime, now: SystemTime) -> String {
    match now.duration_since(at) {
        Ok(past) => format!("{} ago", span(past)),
        Err(future) => format!("in {}", span(future.duration())),
    }
}

/// A duration in its largest whole unit: `42s`, `3m`, `2h`, `4d`.
pub fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A run time: `850 us`, `12.3 ms`, `4.56 s`.
pub fn run_time(duration: Duration) -> String {
    let micros = duration.as_micros();
    match micros {
        0..1000 => format!("{micros} us"),
        1000..1_000_000 => format!("{:.1} ms", micros as f64 / 1e3),
        _ => format!("{:.2} s", duration.as_secs_f64()),
    }
}

/// `2026-11-28T21:30:02Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(10 << 30), "10.0 GiB");
        let now = SystemTime::now();
        assert_eq!(age(now - Duration::from_secs(90), now), "1m ago");
        assert_eq!(age(now + Duration::from_secs(3 * 86_400), now), "in 3d");
        assert_eq!(run_time(Duration::from_micros(12_300)), "12.3 ms");
        assert_eq!(span(Duration::from_secs(7200)), "2h");
    }
}
