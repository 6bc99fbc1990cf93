//! The call path: what happens when a task wrapper is awaited.
//!
//! ```text
//! key = Key::of(name, version, args)          streamed, canonical
//! loop:
//!   lookup: in-process cache, then store      bad entry = miss (warned)
//!     hit  -> return the stored value
//!   single-flight: follow a leader (wait, loop) or lead:
//!     a sub-routine the policy sends away -> dispatch, then look up again
//!     else take a slot (`concurrency`), run the body: each attempt within
//!       `timeout`, a failed one tried again after a backoff (`retries`);
//!       store the value (failure logged, value kept)
//! the run this call started, if any: its record is stored
//! ```

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::failure;
use super::flight::{landed, Flight};
use super::outcome::OutcomeCodec;
use super::report::{CallGuard, ForTriggers};
use super::storage::Encoded;
use super::{Counted, Current, Engine, Inner, Place, Served, Stored};
use crate::arguments::{ArgumentsError, EncodedArguments, KeyBuilder};
use crate::code::OnCodeChange;
use crate::dispatch::{ClusterSlot, Dispatch, DispatchRequest, Dispatched, Policy};
use crate::execution::Execution;
use crate::id::CallOutcome;
use crate::invoke::{panic_message, panic_text};
use crate::key::{Key, KeyError};
use crate::lineage::Miss;
use crate::registry::TaskSpec;
use crate::slot::SlotLease;
use crate::store::{Found, KeyLock, Slot};

/// The entry point of every `#[task]` wrapper. It captures the current
/// engine when the future is created, so the future can be spawned and still
/// use it; a future created outside any scope (as in
/// `engine.scope(train(..))`) takes the engine of the scope it is first
/// polled in.
///
/// `key_of` feeds the arguments to a [`KeyBuilder`]; `codec` comes from
/// [`outcome_codec`], as a promoted `&'static` constant (the call carries a
/// pointer, not the table); `body` runs the user's function, and `decode`
/// rebuilds its arguments from their encoding for a retry.
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
    decode: fn(&[u8]) -> Result<A, ArgumentsError>,
) -> impl Future<Output = Out>
where
    K: Fn(&A, &mut KeyBuilder) -> Result<(), KeyError>,
    F: Fn(A) -> Fut,
    Fut: Future<Output = O>,
{
    let captured = Current::get();
    async move {
        let current = captured.unwrap_or_else(|| Engine::current_for(task));
        let into_output = codec.into_output;
        let body = Body {
            run: body,
            key_of,
            decode,
        };
        let run = current.engine.clone().run(current, task, args, codec, body);
        into_output(run.await)
    }
}

/// A task's body, how its arguments are hashed and encoded, and how they
/// are rebuilt from their encoding for another attempt.
struct Body<F, K, A> {
    run: F,
    key_of: K,
    decode: fn(&[u8]) -> Result<A, ArgumentsError>,
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
        codec: &'static OutcomeCodec<O, Out>,
        body: Body<F, K, A>,
    ) -> O
    where
        K: Fn(&A, &mut KeyBuilder) -> Result<(), KeyError>,
        F: Fn(A) -> Fut,
        Fut: Future<Output = O>,
    {
        let started = Instant::now();
        let dispatcher = self.dispatcher_for(current.in_routine).cloned();
        let triggers = task.triggers();
        let code = match self.on_code_change_of(task) {
            OnCodeChange::Rerun => Some(task.fingerprint()),
            OnCodeChange::Warn => None,
        };
        let mut key_builder = KeyBuilder::new(
            task.name(),
            task.version(),
            code.as_ref(),
            dispatcher.is_some() || !triggers.is_empty(),
        );
        let (key, encoded_arguments) = match (body.key_of)(&args, &mut key_builder) {
            Ok(()) => key_builder.finish(),
            Err(e) => {
                tracing::warn!(task = task.name(), version = task.version(), error = %e,
                    "the arguments cannot be hashed; running the task without memoization");
                return (body.run)(args).await;
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
            attempts: 1,
            miss: None,
            error: None,
            arguments: Vec::new(),
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
            lease: place.and_then(|p| p.lease.clone()),
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
    /// The worker's slot the call runs in, given back while it waits on a
    /// dispatched call.
    lease: Option<Arc<SlotLease>>,
}

impl<O, Out> Call<O, Out> {
    /// Looks the call up until it hits, or leads its flight and either
    /// dispatches it or runs the body.
    async fn resolve<A, F, K, Fut>(
        mut self,
        report: &mut CallGuard<'_>,
        body: Body<F, K, A>,
        args: A,
    ) -> O
    where
        F: Fn(A) -> Fut,
        K: Fn(&A, &mut KeyBuilder) -> Result<(), KeyError>,
        Fut: Future<Output = O>,
    {
        let engine = report.engine;
        let inner = &*engine.inner;
        let (task, key, codec) = (self.task, self.key, self.codec);
        loop {
            let finished_before = inner.flights.finished();
            let found = match std::mem::take(&mut self.trust_callers_lookup) {
                true => (codec.cached)(inner, task, &key).ok_or(Miss::Absent),
                false => lookup(inner, codec, task, &key).await,
            };
            match found {
                Ok(outcome) => {
                    report.hit(codec, &outcome);
                    return outcome;
                }
                Err(miss) => {
                    report.miss.get_or_insert(miss);
                }
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
                if let Ok(outcome) = lookup(inner, codec, task, &key).await {
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
            // Another process on this store may be computing it: its lock
            // is waited for, and then the result it stored read.
            let (key_lock, waited) = self.lock_key(inner).await;
            if waited {
                if let Ok(outcome) = lookup(inner, codec, task, &key).await {
                    report.hit(codec, &outcome);
                    return outcome;
                }
            }
            let outcome = self.compute(report, body, args).await;
            drop(key_lock);
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
            deadline: engine
                .execution_of(task)
                .longest()
                .map(|longest| longest + DEADLINE_MARGIN),
        };
        // The worker that runs it fires its triggers.
        report.dispatched = true;
        let waiting = self.lease.as_deref().map(SlotLease::give_back);
        let remotely = engine.dispatch(dispatcher, request).await;
        if let Some(waiting) = waiting {
            waiting.take_again().await;
        }
        report.dispatched = false;
        match remotely {
            Answered::Failed {
                worker,
                message,
                error,
            } => {
                // An `Err` whose type crosses the wire is the caller's, as
                // if the body had run here; anything else is a panic here.
                let typed = error.and_then(|error| (self.codec.decode_error)(&error));
                report.error = Some(format!("on worker {worker}: {message}"));
                let Some(outcome) = typed else {
                    failure::raise(format!(
                        "task `{}` failed on worker {worker}: {message}",
                        task.id()
                    ))
                };
                report.dispatched = true;
                report.outcome = Some(CallOutcome::Failed);
                Remotely::Done(Some(outcome))
            }
            Answered::Done(worker, entry) => {
                let inner = &*engine.inner;
                // A small result comes back with the reply: decoded (and
                // verified) from it, without a read of the store.
                let carried = entry.and_then(|entry| {
                    (self.codec.decode)(inner, task, &key, Found::Bytes(Arc::new(entry))).ok()
                });
                let read = match carried {
                    Some(outcome) => Some(outcome),
                    None => lookup(inner, self.codec, task, &key).await.ok(),
                };
                let Some(outcome) = read else {
                    // Running it here would hide a cluster whose workers
                    // store their results where this process cannot see them.
                    failure::raise(format!(
                        "task `{}` completed on worker {worker}, but its result is not in this \
                         process's store {:?}: the workers and this process must share one store",
                        task.id(),
                        inner.store
                    ));
                };
                inner.counters.dispatched.fetch_add(1, Ordering::Relaxed);
                report.dispatched = true;
                report.outcome = Some(CallOutcome::Dispatched);
                Remotely::Done(Some(outcome))
            }
            Answered::LookAgain => Remotely::LookAgain,
        }
    }

    /// Runs the body in the call's run, then stores its outcome.
    async fn compute<A, F, K, Fut>(
        &self,
        report: &mut CallGuard<'_>,
        body: Body<F, K, A>,
        args: A,
    ) -> O
    where
        F: Fn(A) -> Fut,
        K: Fn(&A, &mut KeyBuilder) -> Result<(), KeyError>,
        Fut: Future<Output = O>,
    {
        let (engine, task, key, codec) = (report.engine, self.task, self.key, self.codec);
        let inner = &*engine.inner;
        // Looked up only here: a hit pays nothing for the options.
        let execution = engine.execution_of(task);
        let _slots = take_slots(inner, task, &execution).await;
        inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        let run_started = Instant::now();
        let mut provenance = report.provenance();
        // Each argument's digest, for `why` to tell later which differ, and
        // the start of each, for the run's record.
        let mut digests = KeyBuilder::digests_and_previews();
        if (body.key_of)(&args, &mut digests).is_ok() {
            (provenance.arguments, report.arguments) = digests.finish_digests();
        }
        let in_body = Current {
            engine: engine.clone(),
            in_routine: true,
            place: Some(Arc::new(Place {
                run: report.run_log(),
                parent: Some(key),
                serving: None,
                lease: self.lease.clone(),
            })),
        };
        let attempts = self.attempts(report, &execution, &body, args, in_body);
        let outcome = match attempts.await {
            Ok(outcome) => outcome,
            Err((ended, panic)) => {
                // The run's record is stored before the panic goes on to
                // the caller, which may be the run's root.
                report.outcome = Some(ended);
                report.error = Some(panic_text(&*panic).to_owned());
                if let Some(run) = report.close_run(ended) {
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
        if ended == CallOutcome::Failed {
            report.error = (codec.describe_failure)(&outcome);
        }
        if report.stored {
            inner.record_code(task);
        }
        if let Some(served) = &self.served {
            match ended {
                CallOutcome::Computed => served.set(stored),
                CallOutcome::Failed => {
                    if let Some(error) = (codec.encode_error)(&outcome) {
                        served.set_error(error);
                    }
                }
                _ => {}
            }
        }
        report.capture(codec, &outcome, ended);
        outcome
    }

    /// Runs the body's attempts: each within the timeout, a failed one
    /// tried again after its backoff while attempts remain. The outcome of
    /// the last attempt, or how the call ended and the panic to raise.
    async fn attempts<A, F, K, Fut>(
        &self,
        report: &mut CallGuard<'_>,
        execution: &Execution,
        body: &Body<F, K, A>,
        args: A,
        in_body: Current,
    ) -> Result<O, (CallOutcome, Box<dyn Any + Send>)>
    where
        F: Fn(A) -> Fut,
        K: Fn(&A, &mut KeyBuilder) -> Result<(), KeyError>,
        Fut: Future<Output = O>,
    {
        let task = self.task;
        let attempts = execution.attempts();
        // A retry rebuilds the arguments from their encoding: kept already
        // for a worker or the triggers, else encoded now, before the first
        // attempt takes them.
        let kept = match (&self.encoded_arguments, attempts > 1) {
            (Some(kept), _) => Some(Arc::clone(kept)),
            (None, true) => {
                let mut encoder = KeyBuilder::encoder();
                (body.key_of)(&args, &mut encoder)
                    .ok()
                    .map(|()| Arc::new(encoder.finish_encoding()))
            }
            (None, false) => None,
        };
        let mut args = Some(args);
        loop {
            let attempt = report.attempts;
            let args = match args.take() {
                Some(args) => args,
                None => match decode_again(task, kept.as_deref(), body.decode) {
                    Ok(args) => args,
                    Err(why) => return Err((CallOutcome::Panicked, Box::new(why))),
                },
            };
            let running = catch_panic(in_body.clone().scope((body.run)(args)));
            let ended = match execution.timeout {
                None => running.await.map_err(Stopped::Panicked),
                Some(limit) => match tokio::time::timeout(limit, running).await {
                    Ok(ended) => ended.map_err(Stopped::Panicked),
                    Err(_) => Err(Stopped::TimedOut(limit)),
                },
            };
            let failure = match &ended {
                Ok(outcome) if execution.retries_errors() => (self.codec.describe_failure)(outcome),
                Ok(_) => None,
                Err(stopped) => Some(stopped.to_string()),
            };
            let Some(failure) = failure.filter(|_| attempt < attempts) else {
                return ended.map_err(|stopped| stopped.into_panic(task, attempt, attempts));
            };
            let wait = execution.backoff_before(attempt + 1, jitter(&self.key, attempt));
            tracing::warn!(task = %task.id(), key = %self.key.short(), attempt, of = attempts,
                error = %failure, retry_in_ms = wait.as_millis() as u64, "attempt failed; trying again");
            let retried = &report.engine.inner.counters.retried;
            retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            report.attempts += 1;
        }
    }

    /// The store's cross-process lock of this call's key, waited for; and
    /// whether another process held it meanwhile. None if the store has no
    /// such locks (or its lock failed: then the body runs unlocked, as a
    /// lone process would, with a warning).
    async fn lock_key(&self, inner: &Inner) -> (Option<Box<dyn Send>>, bool) {
        let slot = Slot {
            name: self.task.name(),
            version: self.task.version(),
            key: &self.key,
        };
        let (mut waited, mut pause) = (false, Duration::from_millis(1));
        loop {
            match inner.store.try_lock(&slot) {
                Ok(KeyLock::Held(lock)) => return (Some(lock), waited),
                Ok(KeyLock::Unsupported) => return (None, waited),
                Ok(KeyLock::Busy) => {
                    waited = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => {
                    tracing::warn!(task = %self.task.id(), key = %self.key.short(), error = %e,
                        "cannot lock the call in the store; running it without the lock");
                    return (None, waited);
                }
            }
        }
    }
}

/// The slots of `task`'s `concurrency` a body runs in: one of this
/// process's, then one of the cluster's when the engine has a dispatcher
/// that shares them; waited for (and counted as waiting). None without a
/// limit.
async fn take_slots(
    inner: &Inner,
    task: &'static TaskSpec,
    execution: &Execution,
) -> Option<(tokio::sync::OwnedSemaphorePermit, Option<ClusterSlot>)> {
    let limit = execution.concurrency?;
    let waiting = Counted::up(&inner.counters.limited);
    let local = Arc::clone(task.slots(limit)).acquire_owned().await;
    let cluster = match &inner.dispatcher {
        Some((dispatcher, _)) => dispatcher.take_slot(task, limit).await,
        None => None,
    };
    drop(waiting);
    local.ok().map(|local| (local, cluster))
}

/// A call's arguments again, from their encoding, for another attempt.
fn decode_again<A>(
    task: &TaskSpec,
    kept: Option<&EncodedArguments>,
    decode: fn(&[u8]) -> Result<A, ArgumentsError>,
) -> Result<A, String> {
    let kept = kept.ok_or_else(|| {
        format!(
            "task `{}`: its arguments could not be kept for a retry",
            task.id()
        )
    })?;
    decode(&kept.bytes).map_err(|e| {
        format!(
            "task `{}`: its arguments cannot be decoded for a retry: {e}",
            task.id()
        )
    })
}

/// What a caller allows a worker beyond a task's longest run before giving
/// up on it: the reply's way back, a slow store write.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// How an attempt stopped without a value.
enum Stopped {
    Panicked(Box<dyn Any + Send>),
    TimedOut(Duration),
}

impl Stopped {
    /// The panic the caller gets, once no attempt remains: a lone
    /// attempt's own panic, else a message that counts the attempts.
    fn into_panic(
        self,
        task: &TaskSpec,
        attempt: u32,
        of: u32,
    ) -> (CallOutcome, Box<dyn Any + Send>) {
        match self {
            Stopped::Panicked(panic) if of == 1 => (CallOutcome::Panicked, panic),
            Stopped::Panicked(panic) => (
                CallOutcome::Panicked,
                Box::new(format!(
                    "task `{}` failed on each of its {of} attempts; the last panicked: {}",
                    task.id(),
                    panic_message(panic)
                )),
            ),
            Stopped::TimedOut(limit) => (
                CallOutcome::TimedOut,
                Box::new(format!(
                    "task `{}` timed out: attempt {attempt} of {of} ran past its timeout of {limit:?}",
                    task.id()
                )),
            ),
        }
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Panicked(panic) => write!(f, "panicked: {}", panic_text(&**panic)),
            Stopped::TimedOut(limit) => write!(f, "timed out after {limit:?}"),
        }
    }
}

/// A number in `[0, 1)` for the backoff of one call's attempt.
fn jitter(key: &Key, attempt: u32) -> f64 {
    let mut salt = [0u8; 36];
    salt[..32].copy_from_slice(key.as_bytes());
    salt[32..].copy_from_slice(&attempt.to_le_bytes());
    crate::execution::jitter(&salt)
}

/// The stored outcome of `key`: from the in-process cache, else from the
/// store.
async fn lookup<O, Out>(
    inner: &Inner,
    codec: &OutcomeCodec<O, Out>,
    task: &'static TaskSpec,
    key: &Key,
) -> Result<O, Miss> {
    if let Some(hit) = (codec.cached)(inner, task, key) {
        return Ok(hit);
    }
    match inner.read(task, key).await {
        Ok(Some(found)) => (codec.decode)(inner, task, key, found),
        Ok(None) => Err(Miss::Absent),
        Err(()) => Err(Miss::Unreadable),
    }
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

/// A worker's answer to a dispatched call.
enum Answered {
    /// It stored the result: who ran it, and the entry when it was small.
    Done(String, Option<Vec<u8>>),
    /// An identical call elsewhere in the cluster landed: start over.
    LookAgain,
    /// It reported a failure: its message, and the `Err` it returned,
    /// encoded, when its type crosses the wire.
    Failed {
        worker: String,
        message: String,
        error: Option<Vec<u8>>,
    },
}

impl Engine {
    /// The dispatcher for a call made `in_routine` (a sub-routine) or not.
    fn dispatcher_for(&self, in_routine: bool) -> Option<&Arc<dyn Dispatch>> {
        let (dispatcher, policy) = self.inner.dispatcher.as_ref()?;
        (in_routine && *policy == Policy::SubRoutinesRemote).then_some(dispatcher)
    }

    /// Sends the call to a worker and waits. A call no worker could take
    /// is a panic here.
    async fn dispatch(&self, dispatcher: &dyn Dispatch, request: DispatchRequest) -> Answered {
        let (task, key) = (request.task, request.key);
        let waiting = Counted::up(&self.inner.counters.dispatch_waiting);
        let dispatched = dispatcher.dispatch(request).await;
        drop(waiting);
        match dispatched {
            Dispatched::Completed { worker, entry } => {
                tracing::debug!(task = task.name(), key = %key.short(), worker = %worker, "completed on a worker");
                Answered::Done(worker, entry)
            }
            Dispatched::Elsewhere => Answered::LookAgain,
            Dispatched::Failed {
                worker,
                message,
                error,
            } => Answered::Failed {
                worker,
                message,
                error,
            },
            Dispatched::Unserved(why) => failure::raise(format!(
                "task `{}` could not be dispatched: {why}",
                task.id()
            )),
        }
    }
}
