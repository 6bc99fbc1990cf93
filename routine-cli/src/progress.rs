//! The live display while a workflow runs in a terminal: calls done, from
//! storage, running, failed, and the time elapsed.
//!
//! It reads the engine's counters ten times a second from a thread of its
//! own, so the call path pays nothing for it, and shows only while calls
//! run. The end of a call made outside a routine's body (by `main`)
//! clears it at once, through the engine's observer ([`root_call_ended`]):
//! what `main` prints next starts on a clean line. Log lines are written
//! above it (see [`LogWriter`]) instead of through it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use routine_core::engine::{Engine, Stats};

/// The bar on screen, if any: log lines suspend it while they are written.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

const TICK: Duration = Duration::from_millis(100);

/// A running display; [`finish`](Display::finish) it to clear the line.
pub(crate) struct Display {
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Display {
    /// Shows progress of `engine`'s calls if `enabled` (a terminal, not
    /// `--quiet`); otherwise does nothing.
    pub(crate) fn start(engine: &Engine, enabled: bool) -> Display {
        if !enabled {
            return Display { running: None };
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, stopping) = (engine.clone(), Arc::clone(&stop));
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("routine-progress".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let stats = engine.stats();
                    // Drawn under the lock that `clear` takes: a clear is
                    // never undone by a draw already under way.
                    let mut shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner);
                    match stats.running {
                        0 => {
                            if let Some(bar) = shown.take() {
                                bar.finish_and_clear();
                            }
                        }
                        _ => {
                            let bar = shown.get_or_insert_with(|| new_bar(started));
                            bar.set_message(describe(&stats));
                            bar.tick();
                        }
                    }
                    drop(shown);
                    std::thread::sleep(TICK);
                }
                let stats = engine.stats();
                clear();
                if stats.finished > 0 {
                    let _ = writeln!(
                        std::io::stderr(),
                        "routine: {} in {:.1}s",
                        describe(&stats),
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        match thread {
            Ok(thread) => Display {
                running: Some((stop, thread)),
            },
            Err(_) => {
                clear();
                Display { running: None }
            }
        }
    }

    /// Stops the display and prints the totals in its place.
    pub(crate) fn finish(self) {
        if let Some((stop, thread)) = self.running {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

fn describe(stats: &Stats) -> String {
    let mut line = format!(
        "{} done · {} from storage · {} running · {} failed",
        stats.finished, stats.hits, stats.running, stats.failures
    );
    if stats.waiting_for_slot > 0 {
        line.push_str(&format!(" · {} waiting for a slot", stats.waiting_for_slot));
    }
    if stats.retried > 0 {
        line.push_str(&format!(" · {} retried", stats.retried));
    }
    line
}

fn new_bar(started: Instant) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    // Elapsed since the display started, not since this bar was drawn.
    bar.set_elapsed(started.elapsed());
    bar
}

/// For the engine's observer: the end of a root call (one `main` made)
/// clears the bar before `main` goes on, so that what it prints starts on a
/// clean line; the bar comes back at the next tick if calls still run.
pub(crate) fn root_call_ended(report: &routine_core::CallReport) {
    if report.root {
        clear();
    }
}

/// Removes the bar, so that what follows starts on a clean line.
pub(crate) fn clear() {
    if let Some(bar) = SHOWN.lock().unwrap_or_else(PoisonError::into_inner).take() {
        bar.finish_and_clear();
    }
}

/// Standard error for log lines, with the bar lifted while each is written.
#[derive(Default)]
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match shown {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(bytes))?,
            None => std::io::stderr().write_all(bytes)?,
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
