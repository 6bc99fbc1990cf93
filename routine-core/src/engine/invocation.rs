//! Running an [`Invocation`] (a task started from encoded arguments) in an
//! engine's scope, as a worker or the command line does.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use super::{Current, Engine, Place, Served, Serving};
use crate::invoke::{panic_message, Answer, Finished, Invocation, PartOf};
use crate::lineage::RunLog;

impl Invocation {
    /// Runs the task in `engine`'s scope, as the root of a new run, polled
    /// by the caller: dropping the future drops the routine at once (and
    /// cancels what it dispatched). A panic becomes an error message, as an
    /// `Err` result does.
    pub async fn run_in(self, engine: &Engine) -> Result<Finished, String> {
        self.run(engine, None).await.outcome
    }

    /// Runs the task for another process, as part of a run started there
    /// (its calls are recorded as that run's, and the record is stored when
    /// it ends). The answer carries the stored entry of a small fresh
    /// result, for the reply; a result the store did not take is a failure
    /// that names the store.
    pub async fn serve(self, engine: &Engine, part: PartOf) -> Answer {
        self.run(engine, Some(part)).await
    }

    async fn run(self, engine: &Engine, part_of: Option<PartOf>) -> Answer {
        let span = tracing::Span::current();
        let log = part_of.map(|part| (Arc::new(RunLog::new(part.run, &span)), part));
        let served = Arc::new(Served::default());
        let mut scope = Current::outside(engine.clone());
        if let Some((log, part)) = &log {
            scope.place = Some(Arc::new(Place {
                run: Arc::clone(log),
                parent: part.parent,
                serving: Some(Serving {
                    key: part.key,
                    redelivered: part.redelivered,
                    served: Arc::clone(&served),
                }),
                lease: part.lease.clone(),
            }));
        }
        let outcome = match (self, &log) {
            // Serving another process: a task of its own, so that a `Send`
            // routine may use every runtime thread. Dropping the invocation
            // (a worker cancelling it for a caller that gave up) aborts it.
            // Its spans stay children of the one it was served in.
            (Invocation::Send(run), Some(_)) => {
                let run = tracing::Instrument::instrument(scope.scope(run), span);
                joined(AbortOnDrop(tokio::spawn(run))).await
            }
            (Invocation::Local(run), Some(_)) => {
                let run = tracing::Instrument::instrument(scope.scope(run), span);
                joined(AbortOnDrop(tokio::task::spawn_local(run))).await
            }
            // The root of a run here (`run` on the command line): polled in
            // place, so that dropping it (Ctrl-C) drops the routine at once,
            // with the calls it dispatched, which cancels them on their
            // workers before the program exits. An aborted task would be
            // dropped later, by the runtime, perhaps after the exit.
            (Invocation::Send(run), None) => unwinding_into_error(scope.scope(run)).await,
            (Invocation::Local(run), None) => unwinding_into_error(scope.scope(run)).await,
        };
        if let Some((log, part)) = log {
            engine.inner.store_run(&log, &part.key).await;
        }
        // A result the store did not take is no completion: the caller
        // would not find it (and must not quietly run it itself).
        match (outcome, served.take()) {
            (Ok(finished), Ok(entry)) => Answer {
                outcome: Ok(finished),
                entry,
                error: None,
            },
            (Ok(_), Err(why)) => Answer {
                outcome: Err(format!(
                    "its result could not be stored in {:?}: {why}",
                    engine.store()
                )),
                entry: None,
                error: None,
            },
            (Err(failed), _) => Answer {
                outcome: Err(failed),
                entry: None,
                error: served.take_error(),
            },
        }
    }
}

/// The outcome of a spawned routine: a panic is an error message, as an
/// `Err` result is.
async fn joined(mut running: AbortOnDrop<Result<Finished, String>>) -> Result<Finished, String> {
    match (&mut running.0).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Err(format!("panicked: {}", panic_message(e.into_panic()))),
        Err(e) => Err(format!("was cancelled: {e}")),
    }
}

/// `routine` polled here, a panic in it an error message, as a spawned
/// task's would be.
async fn unwinding_into_error(
    routine: impl Future<Output = Result<Finished, String>>,
) -> Result<Finished, String> {
    let mut routine = std::pin::pin!(routine);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| routine.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(format!("panicked: {}", panic_message(panic)))),
        }
    })
    .await
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
