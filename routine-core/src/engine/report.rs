//! How a call ended: the [`CallReport`] an engine's observer is told, and
//! the guard that records every call's end, however it ends, in its run,
//! its span, the counters, its triggers and the observer.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outcome::OutcomeCodec;
use super::storage::Provenance;
use super::Engine;
use crate::id::{CallOutcome, RunId};
use crate::key::Key;
use crate::lineage::Miss;
use crate::lineage::{Ended, RunLog};
use crate::registry::TaskSpec;
use crate::trigger::{Occurrence, TriggerSpec};

/// What an engine's observer (see
/// [`EngineBuilder::on_call`](super::EngineBuilder::on_call)) is told after
/// each call.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CallReport {
    /// The task called.
    pub task: &'static TaskSpec,
    /// The call's key.
    pub key: Key,
    /// How it ended.
    pub outcome: CallOutcome,
    /// From the call's start to its end, lookups and storing included.
    pub elapsed: Duration,
    /// Whether the call was made outside any routine's body (by `main`,
    /// say): the root of its run.
    pub root: bool,
}

/// Records how a call ended, however it ends: in its run, its span, the
/// counters, its triggers and the observer. Dropped without an outcome, the
/// call panicked or was cancelled.
pub(super) struct CallGuard<'a> {
    pub(super) engine: &'a Engine,
    pub(super) task: &'static TaskSpec,
    pub(super) key: Key,
    pub(super) started: Instant,
    pub(super) span: tracing::Span,
    pub(super) outcome: Option<CallOutcome>,
    /// The run this call belongs to: its caller's, or the one it started
    /// as a root whose body runs.
    pub(super) run: Option<Arc<RunLog>>,
    /// This call started `run`: it stores the run's record when it ends.
    pub(super) started_run: bool,
    /// The call whose body made this one.
    pub(super) parent: Option<Key>,
    /// Whether the result reached the store.
    pub(super) stored: bool,
    /// Sent to a worker, which fires the triggers.
    pub(super) dispatched: bool,
    /// Counted among the calls waiting (see `Counters::waiting`).
    pub(super) waiting: bool,
    /// A worker re-running a request whose first worker died: a hit here is
    /// that worker's completion, which its triggers may not have seen.
    pub(super) recovering: bool,
    /// The triggers bound to the task, and what they will be given.
    /// For a task with triggers: what they will be given. Boxed, so that
    /// the calls of other tasks carry one pointer of it.
    pub(super) triggers: Option<Box<ForTriggers>>,
    /// The call is recorded in its run already.
    pub(super) run_closed: bool,
    /// Attempts its body took here.
    pub(super) attempts: u32,
    /// What the call's first lookup found, if it missed.
    pub(super) miss: Option<Miss>,
    /// The start of each argument as JSON, for a call that ran its body.
    pub(super) arguments: Vec<String>,
    /// Why it failed, if it did: its `Err`, its panic, its timeout.
    pub(super) error: Option<String>,
}

/// The triggers bound to a task, and what they will be given.
pub(super) struct ForTriggers {
    pub(super) triggers: &'static [&'static TriggerSpec],
    pub(super) arguments: Option<Vec<u8>>,
    pub(super) result: Option<Result<Vec<u8>, String>>,
}

impl CallGuard<'_> {
    /// The run the body's calls belong to: this call's run, or a new one
    /// when this call is a root. Started only when a body runs, so that a
    /// root answered from storage costs nothing.
    pub(super) fn run_log(&mut self) -> Arc<RunLog> {
        let started_run = &mut self.started_run;
        let span = &self.span;
        let run = self.run.get_or_insert_with(|| {
            *started_run = true;
            Arc::new(RunLog::new(RunId::new(), span))
        });
        Arc::clone(run)
    }

    /// Answered from storage.
    pub(super) fn hit<O, Out>(&mut self, codec: &OutcomeCodec<O, Out>, outcome: &O) {
        let as_completion = match self.recovering {
            true => CallOutcome::Computed,
            false => CallOutcome::Hit,
        };
        self.outcome = Some(CallOutcome::Hit);
        self.stored = true;
        self.capture(codec, outcome, as_completion);
    }

    /// Keeps what the triggers that fire for `kind` will be given.
    pub(super) fn capture<O, Out>(
        &mut self,
        codec: &OutcomeCodec<O, Out>,
        outcome: &O,
        kind: CallOutcome,
    ) {
        let Some(pending) = &mut self.triggers else {
            return;
        };
        if !pending.triggers.iter().any(|t| t.fires_on(kind)) {
            return;
        }
        pending.result = match kind {
            CallOutcome::Failed => Some(Err((codec.describe_failure)(outcome)
                .unwrap_or_else(|| "the routine returned an error".to_owned()))),
            _ => (codec.encode_stored)(outcome).map(Ok),
        };
    }

    /// Starts the triggers this call's end calls for.
    fn fire_triggers(&mut self, outcome: CallOutcome, elapsed: Duration) {
        if self.dispatched {
            return;
        }
        let Some(mut pending) = self.triggers.take() else {
            return;
        };
        let kind = match outcome {
            CallOutcome::Hit if self.recovering => CallOutcome::Computed,
            // A result that did not reach the store is not a completion.
            CallOutcome::Computed if !self.stored => return,
            other => other,
        };
        if !pending.triggers.iter().any(|t| t.fires_on(kind)) {
            return;
        }
        let result = match pending.result.take() {
            Some(result) => result,
            None if kind == CallOutcome::Panicked => Err("the routine panicked".to_owned()),
            None if kind == CallOutcome::TimedOut => Err("the routine timed out".to_owned()),
            None => return,
        };
        let occurrence = Occurrence {
            task: self.task,
            key: self.key,
            arguments: pending.arguments.take(),
            result,
            from_storage: outcome == CallOutcome::Hit,
            duration: elapsed,
            run: self.run.as_ref().map(|log| log.id),
        };
        self.engine.fire(kind, occurrence, pending.triggers);
    }

    /// Records the call in its run, once. When this call started the run,
    /// hands the run back: its record is complete and is to be stored.
    pub(super) fn close_run(&mut self, outcome: CallOutcome) -> Option<Arc<RunLog>> {
        if std::mem::replace(&mut self.run_closed, true) {
            return None;
        }
        let log = self.run.as_ref()?;
        let ended = Ended {
            outcome,
            started: self.started,
            duration: self.started.elapsed(),
            attempts: self.attempts,
            miss: self.miss,
            error: self.error.take(),
            arguments: std::mem::take(&mut self.arguments),
        };
        log.record(self.task, self.key, self.parent, ended);
        self.started_run.then(|| Arc::clone(log))
    }

    pub(super) fn provenance(&mut self) -> Provenance {
        Provenance {
            run: Some(self.run_log().id),
            parent: self.parent,
            arguments: Vec::new(),
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(if std::thread::panicking() {
            CallOutcome::Panicked
        } else {
            CallOutcome::Cancelled
        });
        let inner = &*self.engine.inner;
        let counters = &inner.counters;
        if self.waiting {
            counters.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        match outcome {
            CallOutcome::Hit => counters.hits.fetch_add(1, Ordering::Relaxed),
            CallOutcome::Failed | CallOutcome::Panicked | CallOutcome::TimedOut => {
                counters.failures.fetch_add(1, Ordering::Relaxed)
            }
            CallOutcome::Computed => counters.computed.fetch_add(1, Ordering::Relaxed),
            CallOutcome::Cancelled => counters.cancelled.fetch_add(1, Ordering::Relaxed),
            // Counted where the worker's answer is read.
            CallOutcome::Dispatched => 0,
        };
        if let Some(log) = self.close_run(outcome) {
            // Only a cancelled call gets here with its run to store (the
            // call path stores it otherwise): a task of its own does it.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (engine, key) = (self.engine.clone(), self.key);
                runtime.spawn(async move { engine.inner.store_run(&log, &key).await });
            }
        }
        let elapsed = self.started.elapsed();
        self.span.record("outcome", outcome.as_str());
        self.span.record("elapsed_us", elapsed_micros(elapsed));
        // One line per call at `-v` (info), inside the call's span, which
        // names the task and key.
        tracing::info!(parent: &self.span, outcome = outcome.as_str(), elapsed_us = elapsed_micros(elapsed), "call finished");
        self.fire_triggers(outcome, elapsed);
        if let Some(observer) = &inner.observer {
            let report = CallReport {
                task: self.task,
                key: self.key,
                outcome,
                elapsed,
                root: self.parent.is_none(),
            };
            // An observer that panics while a task panic unwinds would abort
            // the process; contain it.
            if panic::catch_unwind(AssertUnwindSafe(|| observer(&report))).is_err() {
                tracing::error!(
                    task = self.task.name(),
                    "the engine's call observer panicked"
                );
            }
        }
    }
}

fn elapsed_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
