//! What the calls of one process did, for Prometheus: an engine observer
//! that counts calls by task and outcome and keeps a histogram of their
//! durations, and the text it is served as (a worker's `--metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

use routine_core::{CallReport, Engine};

use crate::exposition::{family, label, single, Kind};

/// Upper bounds of the duration buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
];

#[derive(Default)]
struct Series {
    /// Calls by outcome.
    outcomes: BTreeMap<&'static str, u64>,
    /// Calls at or under each bound, then all of them.
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The calls of one process, by task: made by [`CallMetrics::default`],
/// fed by [`CallMetrics::observe`] (an engine's `on_call`).
///
/// ```
/// let metrics = routine_ui::CallMetrics::default();
/// let engine = routine_core::Engine::builder(routine_core::store::MemoryStore::new())
///     .on_call(metrics.observer())
///     .build()
///     .unwrap();
/// assert!(metrics.text(&engine).contains("routine_hits_total 0"));
/// ```
#[derive(Clone, Default)]
pub struct CallMetrics(Arc<Mutex<BTreeMap<String, Series>>>);

impl CallMetrics {
    /// Counts one finished call.
    pub fn observe(&self, report: &CallReport) {
        let mut series = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let series = series.entry(report.task.id().to_string()).or_default();
        *series.outcomes.entry(report.outcome.as_str()).or_default() += 1;
        let secs = report.elapsed.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(series.buckets.iter_mut()) {
            if secs <= *bound {
                *count += 1;
            }
        }
        series.count += 1;
        series.sum += secs;
    }

    /// [`CallMetrics::observe`] as an engine observer.
    pub fn observer(&self) -> impl Fn(&CallReport) + Send + Sync + 'static {
        let metrics = self.clone();
        move |report| metrics.observe(report)
    }

    /// The metrics in Prometheus' text format, with `engine`'s totals.
    pub fn text(&self, engine: &Engine) -> String {
        let stats = engine.stats();
        let mut text = String::new();
        for (name, help, value) in [
            (
                "routine_hits_total",
                "Calls answered from storage.",
                stats.hits,
            ),
            (
                "routine_misses_total",
                "Calls whose body ran here.",
                stats.misses,
            ),
            (
                "routine_failures_total",
                "Calls that failed.",
                stats.failures,
            ),
            (
                "routine_dispatched_total",
                "Calls run by workers for this process.",
                stats.dispatched,
            ),
            (
                "routine_store_errors_total",
                "Store reads and writes that failed.",
                stats.store_errors,
            ),
            (
                "routine_corrupt_entries_total",
                "Stored entries found unusable.",
                stats.corrupt_entries,
            ),
            (
                "routine_retries_total",
                "Attempts that failed and were tried again.",
                stats.retried,
            ),
        ] {
            single(&mut text, name, Kind::Counter, help, value);
        }
        for (name, help, value) in [
            ("routine_running_calls", "Calls in flight.", stats.running),
            (
                "routine_waiting_for_slot",
                "Calls waiting for a slot of their task's concurrency.",
                stats.waiting_for_slot,
            ),
            (
                "routine_dispatch_waiting",
                "Calls waiting on a worker.",
                engine.dispatch_waiting(),
            ),
        ] {
            single(&mut text, name, Kind::Gauge, help, value);
        }
        let series = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        family(
            &mut text,
            "routine_calls_total",
            Kind::Counter,
            "Calls by task and outcome.",
        );
        for (task, series) in series.iter() {
            for (outcome, n) in &series.outcomes {
                let _ = writeln!(
                    text,
                    "routine_calls_total{{task=\"{}\",outcome=\"{outcome}\"}} {n}",
                    label(task)
                );
            }
        }
        family(
            &mut text,
            "routine_call_seconds",
            Kind::Histogram,
            "How long calls took, by task.",
        );
        for (task, series) in series.iter() {
            let task = label(task);
            for (bound, count) in BUCKETS.iter().zip(series.buckets) {
                let _ = writeln!(
                    text,
                    "routine_call_seconds_bucket{{task=\"{task}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                text,
                "routine_call_seconds_bucket{{task=\"{task}\",le=\"+Inf\"}} {}",
                series.count
            );
            let _ = writeln!(
                text,
                "routine_call_seconds_sum{{task=\"{task}\"}} {}",
                series.sum
            );
            let _ = writeln!(
                text,
                "routine_call_seconds_count{{task=\"{task}\"}} {}",
                series.count
            );
        }
        text
    }
}
