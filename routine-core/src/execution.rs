//! How a task's body may run: how long an attempt may take, how often a
//! failed one is tried again, and how many calls of the task run at once.
//!
//! A task says it in its attribute; an engine gives defaults for what the
//! task leaves unsaid ([`EngineBuilder::execution`](crate::EngineBuilder::execution)):
//!
//! ```text
//! #[routine::task(name = "fit", version = "1.0.0",
//!                 timeout = "10m", retries = 3, backoff = "2s", concurrency = 1)]
//! ```
//!
//! The engine that runs the body applies them: the local engine for a local
//! call, the worker's engine for a dispatched one, so a workflow behaves the
//! same whether its calls run here or on workers.
//!
//! | failure of an attempt | tried again (while attempts remain) |
//! |---|---|
//! | the body panicked | yes |
//! | the attempt passed `timeout` (its future is dropped) | yes |
//! | the body returned `Err` | only with `retry_errors` |
//! | the worker running it died | yes, by the broker's redelivery, on another worker |

use std::time::Duration;

/// The execution options of a task, each unset unless given.
///
/// ```
/// use routine_core::execution::Execution;
/// use std::time::Duration;
///
/// let task = Execution { retries: Some(2), ..Execution::NONE };
/// let defaults = Execution { timeout: Some(Duration::from_secs(60)), retries: Some(5), ..Execution::NONE };
/// let applied = task.or(&defaults);
/// assert_eq!(applied.retries, Some(2)); // the task's own
/// assert_eq!(applied.timeout, Some(Duration::from_secs(60))); // the default
/// assert_eq!(applied.attempts(), 3);
/// ```
/// Written with `..Execution::NONE`, as the examples do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Execution {
    /// The longest one attempt may run; its body's future is dropped then.
    pub timeout: Option<Duration>,
    /// Attempts after the first, for a failure that is retried.
    pub retries: Option<u32>,
    /// The wait before the first retry, doubled at each next one (capped
    /// at [`MAX_BACKOFF_DOUBLINGS`] doublings), less a random part of up to
    /// half; one second if unset.
    pub backoff: Option<Duration>,
    /// Whether an `Err` returned by the body is retried, as a panic is.
    pub retry_errors: Option<bool>,
    /// The most calls of the task whose bodies run at once in this process.
    pub concurrency: Option<u32>,
}

/// Backoffs double at most this many times: the tenth retry waits no longer
/// than the sixth.
pub const MAX_BACKOFF_DOUBLINGS: u32 = 5;

/// The most `retries` a task (or an engine's default) may give; the
/// attribute checks the same bound when the program compiles.
pub const MAX_RETRIES: u32 = 100;

/// The backoff when a task gives `retries` but no `backoff`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

impl Execution {
    /// Nothing set: one attempt, no time limit, no concurrency limit.
    pub const NONE: Execution = Execution {
        timeout: None,
        retries: None,
        backoff: None,
        retry_errors: None,
        concurrency: None,
    };

    /// What `#[task]` writes.
    #[doc(hidden)]
    pub const fn __new(
        timeout: Option<Duration>,
        retries: Option<u32>,
        backoff: Option<Duration>,
        retry_errors: Option<bool>,
        concurrency: Option<u32>,
    ) -> Execution {
        Execution {
            timeout,
            retries,
            backoff,
            retry_errors,
            concurrency,
        }
    }

    /// These options, with `defaults` where they are unset.
    pub fn or(&self, defaults: &Execution) -> Execution {
        Execution {
            timeout: self.timeout.or(defaults.timeout),
            retries: self.retries.or(defaults.retries),
            backoff: self.backoff.or(defaults.backoff),
            retry_errors: self.retry_errors.or(defaults.retry_errors),
            concurrency: self.concurrency.or(defaults.concurrency),
        }
    }

    /// Attempts in all: one, plus the retries.
    pub fn attempts(&self) -> u32 {
        self.retries.unwrap_or(0).saturating_add(1)
    }

    /// Whether an `Err` is retried.
    pub fn retries_errors(&self) -> bool {
        self.retry_errors.unwrap_or(false)
    }

    /// The wait before attempt `next` (2 for the first retry), given a
    /// random `jitter` in `[0, 1)`: the backoff doubled per retry before
    /// it, capped, less up to half of it.
    ///
    /// ```
    /// use routine_core::execution::Execution;
    /// use std::time::Duration;
    ///
    /// let e = Execution { backoff: Some(Duration::from_secs(1)), ..Execution::NONE };
    /// assert_eq!(e.backoff_before(2, 0.0), Duration::from_secs(1));
    /// assert_eq!(e.backoff_before(4, 0.0), Duration::from_secs(4));
    /// assert_eq!(e.backoff_before(4, 0.5), Duration::from_secs(3));
    /// assert_eq!(e.backoff_before(40, 0.0), Duration::from_secs(32));
    /// ```
    pub fn backoff_before(&self, next: u32, jitter: f64) -> Duration {
        let doublings = next.saturating_sub(2).min(MAX_BACKOFF_DOUBLINGS);
        let full = self.backoff.unwrap_or(DEFAULT_BACKOFF) * (1u32 << doublings);
        full.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// The longest a call of the task can take in its bodies and backoffs:
    /// what a caller waiting on a worker allows before giving up; `None`
    /// without a timeout.
    pub fn longest(&self) -> Option<Duration> {
        let timeout = self.timeout?;
        let attempts = self.attempts();
        let backoffs: Duration = (2..=attempts).map(|n| self.backoff_before(n, 0.0)).sum();
        Some(timeout * attempts + backoffs)
    }
}

/// A number in `[0, 1)` that differs between calls and attempts, enough to
/// spread retries of calls that failed together.
pub(crate) fn jitter(salt: &[u8]) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(salt);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_wait_counts_every_attempt_and_backoff() {
        let e = Execution {
            timeout: Some(Duration::from_secs(10)),
            retries: Some(2),
            backoff: Some(Duration::from_secs(1)),
            ..Execution::NONE
        };
        assert_eq!(e.longest(), Some(Duration::from_secs(30 + 1 + 2)));
        assert_eq!(Execution::NONE.longest(), None);
    }

    #[test]
    fn jitter_stays_in_range() {
        for n in 0u32..100 {
            let j = jitter(&n.to_le_bytes());
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
