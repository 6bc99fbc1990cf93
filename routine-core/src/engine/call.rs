//! The call path: what happens when a task wrapper is awaited.
//!
//! ```text
//! key = Key::of(name, version, args)          streamed, canonical
//! loop:
//!   lookup: in-process cache, then store      bad entry = miss (warned)
//!     hit  -> return the stored value
//!   single-flight: follow a leader (wait, loop) or lead:
//!     a sub-routine the policy sends away -> dispatch, then look up again
//!     else run the body, store the value (failure logged, value kept)
//! the run this call started, if any: its record is stored
//! ```

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use tracing::Instrument;

use super::flight::{landed, Flight};
use super::outcome::OutcomeCodec;
use super::report::{CallGuard, ForTriggers};
use super::storage::Encoded;
use super::{Current, Engine, Inner, Place, Served, Stored};
use crate::arguments::{EncodedArguments, KeyBuilder};
use crate::dispatch::{Dispatch, DispatchRequest, Dispatched, Policy};
use crate::id::CallOutcome;
use crate::key::{Key, KeyError};
use crate::registry::TaskSpec;
use crate::store::Found;

/// The entry point of every `#[task]` wrapper. It captures the current
/// engine when the future is created, so the future can be spawned and still
/// use it; a future created outside any scope (as in
/// `engine.scope(train(..))`) takes the engine of the scope it is first
/// polled in.
///
/// `key_of` feeds the arguments to a [`KeyBuilder`]; `codec` comes from
/// [`outcome_codec`], as a promoted `&'static` constant (the call carries a
/// pointer, not the table); `body` runs the user's function.
///
/// # Panics
/// When first polled outside any engine scope, with a message naming the
/// task.
#[doc(hidden)]
pub fn call<A, O, Out, K, F, Fut>(
    task: &'static TaskSpec,
    args: A,
    key_of: K,
    codec: &'static OutcomeCodec<O, Out>,
    body: F,
) -> impl Future<Output = Out>
where
    K: FnOnce(&A, &mut KeyBuilder) -> Result<(), KeyError>,
    F: FnOnce(A) -> Fut,
    Fut: Future<Output = O>,
{
    let captured = Current::get();
    async move {
        let current = captured.unwrap_or_else(|| Engine::current_for(task));
        let into_output = codec.into_output;
        let run = current
            .engine
            .clone()
            .run(current, task, args, key_of, codec, body);
        into_output(run.await)
    }
}

/// Runs a synchronous task body on tokio's blocking pool, so a long
/// computation does not stall the async workers. A panic in the body is
/// resumed in the caller.
#[doc(hidden)]
pub async fn run_blocking<T, F>(body: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(body).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the blocking task body was cancelled: {e}"),
    }
}

impl Engine {
    async fn run<A, O, Out, K, F, Fut>(
        self,
        current: Current,
        task: &'static TaskSpec,
        args: A,
        key_of: K,
        codec: &'static OutcomeCodec<O, Out>,
        body: F,
    ) -> O
    where
        K: FnOnce(&A, &mut KeyBuilder) -> Result<(), KeyError>,
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = O>,
    {
        let started = Instant::now();
        let dispatcher = self.dispatcher_for(current.in_routine).cloned();
        let triggers = task.triggers();
        let mut key_builder = KeyBuilder::new(
            task.name(),
            task.version(),
            dispatcher.is_some() || !triggers.is_empty(),
        );
        let (key, encoded_arguments) = match key_of(&args, &mut key_builder) {
            Ok(()) => key_builder.finish(),
            Err(e) => {
                tracing::warn!(task = task.name(), version = task.version(), error = %e,
                    "the arguments cannot be hashed; running the task without memoization");
                return body(args).await;
            }
        };
        let span = tracing::info_span!(
            "routine.task",
            task = task.name(),
            version = task.version(),
            key = %key.short(),
            outcome = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        let place = current.place.as_deref();
        let serving = place
            .and_then(|p| p.serving.as_ref())
            .filter(|serving| serving.key == key);
        let mut report = CallGuard {
            engine: &self,
            task,
            key,
            started,
            span: span.clone(),
            outcome: None,
            run: place.map(|p| Arc::clone(&p.run)),
            started_run: false,
            parent: place.and_then(|p| p.parent),
            stored: false,
            dispatched: false,
            waiting: false,
            recovering: serving.is_some_and(|serving| serving.redelivered),
            triggers: (!triggers.is_empty()).then(|| {
                Box::new(ForTriggers {
                    triggers,
                    arguments: encoded_arguments.as_ref().map(|e| e.bytes.clone()),
                    result: None,
                })
            }),
            run_closed: false,
        };
        let call = Call {
            task,
            key,
            codec,
            dispatcher,
            // Shared, not copied, with each dispatch of the call (a large
            // argument is megabytes).
            encoded_arguments: encoded_arguments.map(Arc::new),
            // A worker serving this very call does not follow a flight of
            // its own engine: that flight is the dispatcher waiting for this
            // worker (the broker's claim already makes the call run once in
            // the cluster).
            joins_flights: serving.is_none(),
            served: serving.map(|serving| Arc::clone(&serving.served)),
            trust_callers_lookup: serving.is_some_and(|serving| !serving.redelivered),
        };
        let outcome = call.resolve(&mut report, body, args).instrument(span).await;
        if let Some(run) = report.outcome.and_then(|ended| report.close_run(ended)) {
            self.inner.store_run(&run, &key).await;
        }
        outcome
    }
}

/// One call, once its key is known.
struct Call<O: 'static, Out: 'static> {
    task: &'static TaskSpec,
    key: Key,
    codec: &'static OutcomeCodec<O, Out>,
    /// Where the policy sends this call when it misses, if anywhere.
    dispatcher: Option<Arc<dyn Dispatch>>,
    /// The arguments, encoded for a dispatcher (or the triggers).
    encoded_arguments: Option<Arc<EncodedArguments>>,
    joins_flights: bool,
    /// The request this call serves, told whether its result was stored.
    served: Option<Arc<Served>>,
    /// A worker serving a first delivery skips the store on its first
    /// lookup: the caller looked there a moment ago and missed.
    trust_callers_lookup: bool,
}

impl<O, Out> Call<O, Out> {
    /// Looks the call up until it hits, or leads its flight and either
    /// dispatches it or runs the body.
    async fn resolve<A, F, Fut>(mut self, report: &mut CallGuard<'_>, body: F, args: A) -> O
    where
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = O>,
    {
        let engine = report.engine;
        let inner = &*engine.inner;
        let (task, key, codec) = (self.task, self.key, self.codec);
        loop {
            let finished_before = inner.flights.finished();
            let found = match std::mem::take(&mut self.trust_callers_lookup) {
                true => (codec.cached)(inner, task, &key),
                false => lookup(inner, codec, task, &key).await,
            };
            if let Some(outcome) = found {
                report.hit(codec, &outcome);
                return outcome;
            }
            if !report.waiting {
                report.waiting = true;
                inner.counters.waiting.fetch_add(1, Ordering::Relaxed);
            }
            let leader = match self.joins_flights {
                false => None,
                true => match inner.flights.join(key) {
                    Flight::Lead(leader) => Some(leader),
                    Flight::Follow(wait) => {
                        landed(wait).await;
                        continue;
                    }
                },
            };
            // A flight that landed after our lookup may have stored this
            // very result; only then is a second lookup worth its cost.
            if inner.flights.finished() != finished_before {
                if let Some(outcome) = lookup(inner, codec, task, &key).await {
                    report.hit(codec, &outcome);
                    return outcome;
                }
            }
            if let Some(dispatcher) = self.dispatcher.take() {
                match self.dispatch(report, &*dispatcher).await {
                    Remotely::Done(Some(outcome)) => return outcome,
                    Remotely::Done(None) => {}
                    Remotely::LookAgain => {
                        self.dispatcher = Some(dispatcher);
                        drop(leader);
                        continue;
                    }
                }
            }
            let outcome = self.compute(report, body, args).await;
            drop(leader);
            return outcome;
        }
    }

    /// Sends the call to a worker and reads its result from the store.
    async fn dispatch(
        &mut self,
        report: &mut CallGuard<'_>,
        dispatcher: &dyn Dispatch,
    ) -> Remotely<Option<O>> {
        let Some(arguments) = self.encoded_arguments.clone() else {
            return Remotely::Done(None);
        };
        let (engine, task, key) = (report.engine, self.task, self.key);
        let provenance = report.provenance();
        let request = DispatchRequest {
            task,
            key,
            arguments,
            run: provenance.run,
            parent: provenance.parent,
        };
        // The worker that runs it fires its triggers.
        report.dispatched = true;
        let remotely = engine.dispatch(dispatcher, request).await;
        report.dispatched = false;
        match remotely {
            Remotely::Done((worker, entry)) => {
                let inner = &*engine.inner;
                // A small result comes back with the reply: decoded (and
                // verified) from it, without a read of the store.
                let carried = entry.and_then(|entry| {
                    (self.codec.decode)(inner, task, &key, Found::Bytes(Arc::new(entry)))
                });
                let read = match carried {
                    Some(outcome) => Some(outcome),
                    None => lookup(inner, self.codec, task, &key).await,
                };
                let Some(outcome) = read else {
                    // Running it here would hide a cluster whose workers
                    // store their results where this process cannot see them.
                    panic!(
                        "task `{}` completed on worker {worker}, but its result is not in this \
                         process's store {:?}: the workers and this process must share one store",
                        task.id(),
                        inner.store
                    );
                };
                inner.counters.dispatched.fetch_add(1, Ordering::Relaxed);
                report.dispatched = true;
                report.outcome = Some(CallOutcome::Dispatched);
                Remotely::Done(Some(outcome))
            }
            Remotely::LookAgain => Remotely::LookAgain,
        }
    }

    /// Runs the body in the call's run, then stores its outcome.
    async fn compute<A, F, Fut>(&self, report: &mut CallGuard<'_>, body: F, args: A) -> O
    where
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = O>,
    {
        let (engine, task, key, codec) = (report.engine, self.task, self.key, self.codec);
        let inner = &*engine.inner;
        inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        let run_started = Instant::now();
        let provenance = report.provenance();
        let in_body = Current {
            engine: engine.clone(),
            in_routine: true,
            place: Some(Arc::new(Place {
                run: report.run_log(),
                parent: Some(key),
                serving: None,
            })),
        };
        let outcome = match catch_panic(in_body.scope(body(args))).await {
            Ok(outcome) => outcome,
            Err(panic) => {
                // The run's record is stored before the panic goes on to
                // the caller, which may be the run's root.
                report.outcome = Some(CallOutcome::Panicked);
                if let Some(run) = report.close_run(CallOutcome::Panicked) {
                    inner.store_run(&run, &key).await;
                }
                panic::resume_unwind(panic);
            }
        };
        let run_time = run_started.elapsed();
        let (ended, stored): (CallOutcome, Stored) =
            match (codec.encode)(inner, task, &key, &outcome, run_time, provenance) {
                None => (CallOutcome::Failed, Err("nothing to store".to_owned())),
                Some(Encoded::Small { entry, created_at }) => {
                    let put = inner.put(task, &key, Arc::clone(&entry), created_at).await;
                    (CallOutcome::Computed, put.map(|()| Some(entry)))
                }
                Some(Encoded::Streamed(stored)) => (CallOutcome::Computed, stored.map(|()| None)),
                Some(Encoded::Unencodable(why)) => (CallOutcome::Computed, Err(why)),
            };
        report.outcome = Some(ended);
        report.stored = stored.is_ok();
        if let (Some(served), CallOutcome::Computed) = (&self.served, ended) {
            served.set(stored);
        }
        report.capture(codec, &outcome, ended);
        outcome
    }
}

/// The stored outcome of `key`: from the in-process cache, else from the
/// store.
async fn lookup<O, Out>(
    inner: &Inner,
    codec: &OutcomeCodec<O, Out>,
    task: &'static TaskSpec,
    key: &Key,
) -> Option<O> {
    if let Some(hit) = (codec.cached)(inner, task, key) {
        return Some(hit);
    }
    let found = inner.read(task, key).await?;
    (codec.decode)(inner, task, key, found)
}

/// Awaits `future`, catching a panic raised while polling it.
async fn catch_panic<F: Future>(future: F) -> std::thread::Result<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

/// What became of a dispatched call.
enum Remotely<T> {
    /// A worker stored the result (and here, what was read back).
    Done(T),
    /// An identical call elsewhere in the cluster landed: start over.
    LookAgain,
}

impl Engine {
    /// The dispatcher for a call made `in_routine` (a sub-routine) or not.
    fn dispatcher_for(&self, in_routine: bool) -> Option<&Arc<dyn Dispatch>> {
        let (dispatcher, policy) = self.inner.dispatcher.as_ref()?;
        (in_routine && *policy == Policy::SubRoutinesRemote).then_some(dispatcher)
    }

    /// Sends the call to a worker and waits. A failure there is a panic
    /// here, with the worker's id and message, as a panic in a local body
    /// would be.
    async fn dispatch(
        &self,
        dispatcher: &dyn Dispatch,
        request: DispatchRequest,
    ) -> Remotely<(String, Option<Vec<u8>>)> {
        let (task, key) = (request.task, request.key);
        let waiting = &self.inner.counters.dispatch_waiting;
        waiting.fetch_add(1, Ordering::Relaxed);
        let dispatched = dispatcher.dispatch(request).await;
        waiting.fetch_sub(1, Ordering::Relaxed);
        match dispatched {
            Dispatched::Completed { worker, entry } => {
                tracing::debug!(task = task.name(), key = %key.short(), worker = %worker, "completed on a worker");
                Remotely::Done((worker, entry))
            }
            Dispatched::Elsewhere => Remotely::LookAgain,
            Dispatched::Failed { worker, message } => {
                panic!("task `{}` failed on worker {worker}: {message}", task.id())
            }
            Dispatched::Unserved(why) => {
                panic!("task `{}` could not be dispatched: {why}", task.id())
            }
        }
    }
}
