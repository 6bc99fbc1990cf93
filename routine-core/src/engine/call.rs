//! The call path: what happens when a task wrapper is awaited.
//!
//! ```text
//! key = Key::of(name, version, args)          streamed, canonical
//! loop:
//!   lookup: in-process cache, then store      bad entry = miss (warned)
//!     hit  -> return the stored value
//!   single-flight: follow a leader (wait, loop) or lead:
//!     run the body, store the value (failure logged, value kept), return
//! ```

use std::future::Future;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use super::cache::CachedEntry;
use super::flight::{landed, Flight};
use super::{Current, Engine, Inner, Place};
use crate::arguments::KeyBuilder;
use crate::blocking::blocking;
use crate::codec;
use crate::dispatch::{DispatchRequest, Dispatched, Policy};
use crate::entry::{self, EntryError, EntryMeta, HEADER_LEN, TRAILER_LEN};
use crate::id::{CallOutcome, Fingerprint, RunId};
use crate::invoke::Finished;
use crate::key::{Key, KeyError};
use crate::lineage::RunLog;
use crate::registry::TaskSpec;
use crate::store::{Found, Slot, StoreError};
use crate::trigger::{Occurrence, TriggerSpec};

/// Entries larger than this are read and written with
/// `tokio::task::block_in_place` (on a multi-threaded runtime), so that a
/// large transfer does not stall the other tasks of its worker thread. Small
/// ones stay inline: handing them to another thread costs more than the I/O.
const LARGE_ENTRY: u64 = 4 * 1024 * 1024;

/// How a task's return value maps to what is stored. `#[task]` picks
/// [`Plain`] or `Result`.
#[doc(hidden)]
pub trait Outcome: Sized {
    /// What is stored on success.
    type Value: Serialize + DeserializeOwned;
    /// What the caller receives.
    type Output;
    /// The value to store, or `None` to store nothing (an `Err`).
    fn stored(&self) -> Option<&Self::Value>;
    /// Rebuilds the outcome from a stored value.
    fn from_stored(value: Self::Value) -> Self;
    /// Unwraps for the caller.
    fn into_output(self) -> Self::Output;
    /// The value a caller's output holds, if it is one that is stored.
    fn value_of(output: &Self::Output) -> Option<&Self::Value>;
}

/// A task result that is always stored.
#[doc(hidden)]
pub struct Plain<T>(pub T);

impl<T: Serialize + DeserializeOwned> Outcome for Plain<T> {
    type Value = T;
    type Output = T;
    fn stored(&self) -> Option<&T> {
        Some(&self.0)
    }
    fn from_stored(value: T) -> Self {
        Plain(value)
    }
    fn into_output(self) -> T {
        self.0
    }
    fn value_of(output: &T) -> Option<&T> {
        Some(output)
    }
}

/// `Ok` is stored; `Err` goes to the caller and is not stored.
impl<T: Serialize + DeserializeOwned, E> Outcome for Result<T, E> {
    type Value = T;
    type Output = Result<T, E>;
    fn stored(&self) -> Option<&T> {
        self.as_ref().ok()
    }
    fn from_stored(value: T) -> Self {
        Ok(value)
    }
    fn into_output(self) -> Self {
        self
    }
    fn value_of(output: &Self) -> Option<&T> {
        output.as_ref().ok()
    }
}

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
}

/// How the engine stores and restores one task's outcome type: the
/// monomorphized functions of its [`Outcome`] impl. `#[task]` builds it once,
/// in a `const` spanned at the user's return type, with [`outcome_codec`], so
/// that the trait bounds on the user's types are checked there and only
/// there: [`call`] itself puts no bound on them.
#[doc(hidden)]
pub struct OutcomeCodec<O, Out> {
    lookup: fn(&Inner, &'static TaskSpec, &Key) -> Option<O>,
    save: fn(&Inner, &'static TaskSpec, &Key, &O, Duration, Provenance) -> Saved,
    into_output: fn(O) -> Out,
    /// The caller's output as JSON, for `run` on the command line.
    pub output_json: fn(&Out) -> Finished,
    /// A stored payload as JSON, for `cache show`.
    pub describe_stored: fn(&[u8]) -> Result<serde_json::Value, String>,
    /// The value to store, encoded, for triggers.
    encode_stored: fn(&O) -> Option<Vec<u8>>,
    /// The message of a failed outcome (an `Err`), for triggers.
    describe_failure: fn(&O) -> Option<String>,
}

impl<O, Out> OutcomeCodec<O, Out> {
    /// The same codec, describing failures with `describe`: `#[task]`
    /// passes one for tasks returning `Result`, which describes the `Err`
    /// with its `Display` or `Debug`.
    pub const fn describing_failures(self, describe: fn(&O) -> Option<String>) -> Self {
        OutcomeCodec {
            describe_failure: describe,
            ..self
        }
    }
}

/// The codec of an outcome type.
#[doc(hidden)]
pub const fn outcome_codec<O: Outcome>() -> OutcomeCodec<O, O::Output> {
    OutcomeCodec {
        lookup: lookup_outcome::<O>,
        save: save_outcome::<O>,
        into_output: O::into_output,
        output_json: output_json::<O>,
        describe_stored: describe_stored::<O>,
        encode_stored: encode_stored::<O>,
        describe_failure: |_| None,
    }
}

fn encode_stored<O: Outcome>(outcome: &O) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    codec::encode_into(&mut bytes, outcome.stored()?).ok()?;
    Some(bytes)
}

fn lookup_outcome<O: Outcome>(inner: &Inner, task: &'static TaskSpec, key: &Key) -> Option<O> {
    inner.lookup(task, key).map(O::from_stored)
}

fn save_outcome<O: Outcome>(
    inner: &Inner,
    task: &'static TaskSpec,
    key: &Key,
    outcome: &O,
    run_time: Duration,
    provenance: Provenance,
) -> Saved {
    match outcome.stored() {
        Some(value) => Saved {
            outcome: CallOutcome::Computed,
            stored: inner.save(task, key, value, run_time, provenance),
        },
        None => Saved {
            outcome: CallOutcome::Failed,
            stored: false,
        },
    }
}

/// How a call's outcome was kept.
pub(crate) struct Saved {
    outcome: CallOutcome,
    /// The result is in the store (not so for an `Err`, or when the store
    /// failed).
    stored: bool,
}

/// Where a result comes from: the run, and the call that awaited it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Provenance {
    pub(crate) run: Option<RunId>,
    pub(crate) parent: Option<Key>,
}

fn output_json<O: Outcome>(output: &O::Output) -> Finished {
    match O::value_of(output) {
        Some(value) => Finished::of(value),
        None => Finished::Stored,
    }
}

fn describe_stored<O: Outcome>(payload: &[u8]) -> Result<serde_json::Value, String> {
    let value: O::Value = entry::decode_payload(payload).map_err(|e| e.to_string())?;
    serde_json::to_value(&value).map_err(|e| e.to_string())
}

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
        let (key, mut encoded_arguments) = match key_of(&args, &mut key_builder) {
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
        let mut pending = Some((body, args));
        let place = current.place.as_deref();
        let serving = place
            .and_then(|p| p.serving)
            .filter(|serving| serving.key == key);
        let recovering = serving.is_some_and(|serving| serving.redelivered);
        let (run, parent) = (
            place.map(|p| Arc::clone(&p.run)),
            place.and_then(|p| p.parent),
        );
        let engine = self;
        let call_span = span.clone();
        async move {
            let inner = &*engine.inner;
            let mut report = CallGuard {
                engine: &engine,
                task,
                key,
                started,
                span: call_span,
                outcome: None,
                run,
                started_run: false,
                parent,
                stored: false,
                dispatched: false,
                waiting: false,
                recovering,
                triggers: (!triggers.is_empty()).then(|| {
                    Box::new(ForTriggers {
                        triggers,
                        arguments: encoded_arguments.clone(),
                        result: None,
                    })
                }),
            };
            loop {
                let finished_before = inner.flights.finished();
                if let Some(outcome) = (codec.lookup)(inner, task, &key) {
                    report.hit(codec, &outcome);
                    return outcome;
                }
                if !report.waiting {
                    report.waiting = true;
                    inner.counters.waiting.fetch_add(1, Ordering::Relaxed);
                }
                // A worker serving this very call does not follow a flight of
                // its own engine: that flight is the dispatcher waiting for
                // this worker (the broker's claim already makes the call
                // run once in the cluster).
                let leader = match serving {
                    Some(_) => None,
                    None => match inner.flights.join(key) {
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
                    if let Some(outcome) = (codec.lookup)(inner, task, &key) {
                        report.hit(codec, &outcome);
                        return outcome;
                    }
                }
                if let (Some(dispatcher), Some(arguments)) = (&dispatcher, encoded_arguments.take()) {
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
                    match engine.dispatch(&**dispatcher, request).await {
                        Remotely::Done => {
                            if let Some(outcome) = (codec.lookup)(inner, task, &key) {
                                inner.counters.dispatched.fetch_add(1, Ordering::Relaxed);
                                report.outcome = Some(CallOutcome::Dispatched);
                                return outcome;
                            }
                            tracing::warn!(task = task.name(), key = %key.short(),
                                "a worker reported the result stored, but the shared store does not have it; running it here");
                        }
                        Remotely::LookAgain => {
                            report.dispatched = false;
                            drop(leader);
                            continue;
                        }
                    }
                    report.dispatched = false;
                }
                let (body, args) = pending.take().expect("a call runs its body at most once");
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
                let outcome = in_body.scope(body(args)).await;
                let run_time = run_started.elapsed();
                let saved = (codec.save)(inner, task, &key, &outcome, run_time, provenance);
                report.outcome = Some(saved.outcome);
                report.stored = saved.stored;
                report.capture(codec, &outcome, saved.outcome);
                drop(leader);
                return outcome;
            }
        }
        .instrument(span)
        .await
    }
}

/// What became of a dispatched call.
enum Remotely {
    /// A worker stored the result.
    Done,
    /// An identical call elsewhere in the cluster landed: start over.
    LookAgain,
}

impl Engine {
    /// The dispatcher for a call made `in_routine` (a sub-routine) or not.
    fn dispatcher_for(&self, in_routine: bool) -> Option<&Arc<dyn crate::dispatch::Dispatch>> {
        let (dispatcher, policy) = self.inner.dispatcher.as_ref()?;
        (in_routine && *policy == Policy::SubRoutinesRemote).then_some(dispatcher)
    }

    /// Sends the call to a worker and waits. A failure there is a panic
    /// here, with the worker's id and message, as a panic in a local body
    /// would be.
    async fn dispatch(
        &self,
        dispatcher: &dyn crate::dispatch::Dispatch,
        request: DispatchRequest,
    ) -> Remotely {
        let (task, key) = (request.task, request.key);
        let waiting = &self.inner.counters.dispatch_waiting;
        waiting.fetch_add(1, Ordering::Relaxed);
        let dispatched = dispatcher.dispatch(request).await;
        waiting.fetch_sub(1, Ordering::Relaxed);
        match dispatched {
            Dispatched::Completed { worker } => {
                tracing::debug!(task = task.name(), key = %key.short(), worker = %worker, "completed on a worker");
                Remotely::Done
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

/// Records how a call ended, however it ends: in its span, the counters and
/// the observer. Dropped without an outcome, the call panicked or was
/// cancelled.
struct CallGuard<'a> {
    engine: &'a Engine,
    task: &'static TaskSpec,
    key: Key,
    started: Instant,
    span: tracing::Span,
    outcome: Option<CallOutcome>,
    /// The run this call belongs to: its caller's, or the one it started
    /// as a root whose body runs.
    run: Option<Arc<RunLog>>,
    /// This call started `run`: it stores the run's record when it ends.
    started_run: bool,
    /// The call whose body made this one.
    parent: Option<Key>,
    /// Whether the result reached the store.
    stored: bool,
    /// Sent to a worker, which fires the triggers.
    dispatched: bool,
    /// Counted among the calls waiting (see `Counters::waiting`).
    waiting: bool,
    /// A worker re-running a request whose first worker died: a hit here is
    /// that worker's completion, which its triggers may not have seen.
    recovering: bool,
    /// The triggers bound to the task, and what they will be given.
    /// For a task with triggers: what they will be given. Boxed, so that
    /// the calls of other tasks carry one pointer of it.
    triggers: Option<Box<ForTriggers>>,
}

/// The triggers bound to a task, and what they will be given.
struct ForTriggers {
    triggers: &'static [&'static TriggerSpec],
    arguments: Option<Vec<u8>>,
    result: Option<Result<Vec<u8>, String>>,
}

impl CallGuard<'_> {
    /// The run the body's calls belong to: this call's run, or a new one
    /// when this call is a root. Started only when a body runs, so that a
    /// root answered from storage costs nothing.
    fn run_log(&mut self) -> Arc<RunLog> {
        let started_run = &mut self.started_run;
        let run = self.run.get_or_insert_with(|| {
            *started_run = true;
            Arc::new(RunLog::new(RunId::new()))
        });
        Arc::clone(run)
    }

    /// Answered from storage.
    fn hit<O, Out>(&mut self, codec: &OutcomeCodec<O, Out>, outcome: &O) {
        let as_completion = match self.recovering {
            true => CallOutcome::Computed,
            false => CallOutcome::Hit,
        };
        self.outcome = Some(CallOutcome::Hit);
        self.stored = true;
        self.capture(codec, outcome, as_completion);
    }

    /// Keeps what the triggers that fire for `kind` will be given.
    fn capture<O, Out>(&mut self, codec: &OutcomeCodec<O, Out>, outcome: &O, kind: CallOutcome) {
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

    fn provenance(&mut self) -> Provenance {
        Provenance {
            run: Some(self.run_log().id),
            parent: self.parent,
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
            CallOutcome::Failed | CallOutcome::Panicked => {
                counters.failures.fetch_add(1, Ordering::Relaxed)
            }
            CallOutcome::Computed => counters.computed.fetch_add(1, Ordering::Relaxed),
            CallOutcome::Cancelled => counters.cancelled.fetch_add(1, Ordering::Relaxed),
            // Counted where the worker's answer is read.
            CallOutcome::Dispatched => 0,
        };
        let elapsed = self.started.elapsed();
        if let Some(log) = &self.run {
            log.record(
                self.task,
                self.key,
                self.parent,
                outcome,
                self.started,
                elapsed,
            );
        }
        if let Some(log) = self.run.as_ref().filter(|_| self.started_run) {
            if let Err(e) = log.store(&*inner.store, &self.key) {
                tracing::warn!(run = %log.id, error = %e, "cannot store the record of a run; its lineage is lost");
            }
        }
        self.span.record("outcome", outcome.as_str());
        self.span.record("elapsed_us", elapsed_micros(elapsed));
        tracing::debug!(parent: &self.span, outcome = outcome.as_str(), elapsed_us = elapsed_micros(elapsed), "task call finished");
        self.fire_triggers(outcome, elapsed);
        if let Some(observer) = &inner.observer {
            let report = CallReport {
                task: self.task,
                key: self.key,
                outcome,
                elapsed,
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

/// Why a result could not be stored.
#[derive(Debug, thiserror::Error)]
enum SaveError {
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Inner {
    /// The stored value for `key`, from the cache or the store. Anything
    /// wrong with a stored entry makes this a miss, with a warning.
    fn lookup<T: DeserializeOwned>(&self, task: &'static TaskSpec, key: &Key) -> Option<T> {
        if let Some(cached) = self
            .cache
            .get(key)
            .filter(|c| !outlived(task, c.created_at))
        {
            match entry::decode_payload(cached.payload()) {
                Ok(value) => {
                    self.check_fingerprint(task, &cached.fingerprint);
                    return Some(value);
                }
                Err(e) => {
                    self.cache.remove(key);
                    self.corrupt(task, key, &e);
                }
            }
        }
        let slot = Slot {
            name: task.name(),
            version: task.version(),
            key,
        };
        let found = match self.store.get(&slot) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                self.store_failed(task, key, "read", &e);
                return None;
            }
        };
        match found {
            Found::Bytes(bytes) => {
                let decoded = entry::verify(&bytes, key).and_then(|(meta, payload)| {
                    if outlived(task, meta.created_at) {
                        return Ok(None);
                    }
                    Ok(Some((
                        entry::decode_payload(&bytes[payload.clone()])?,
                        meta,
                        payload,
                    )))
                });
                match decoded {
                    Ok(None) => None,
                    Ok(Some((value, meta, payload))) => {
                        self.check_fingerprint(task, &meta.fingerprint);
                        self.cache.insert(
                            *key,
                            CachedEntry {
                                bytes,
                                payload,
                                fingerprint: meta.fingerprint,
                                created_at: meta.created_at,
                            },
                        );
                        Some(value)
                    }
                    Err(e) => {
                        self.corrupt(task, key, &e);
                        None
                    }
                }
            }
            Found::Stream { reader, len } => {
                match large_io(len, || entry::read(reader, len, key)) {
                    Ok((meta, _)) if outlived(task, meta.created_at) => None,
                    Ok((meta, value)) => {
                        self.check_fingerprint(task, &meta.fingerprint);
                        Some(value)
                    }
                    Err(EntryError::Io(e)) => {
                        self.store_failed(task, key, "read", &e);
                        None
                    }
                    Err(e) => {
                        self.corrupt(task, key, &e);
                        None
                    }
                }
            }
        }
    }

    /// Stores a computed value; true if it was. Never fails the call: a
    /// failure is logged and counted, and the caller still gets its value.
    fn save<T: Serialize>(
        &self,
        task: &'static TaskSpec,
        key: &Key,
        value: &T,
        run_time: Duration,
        provenance: Provenance,
    ) -> bool {
        let saved = codec::encoded_len(value)
            .map_err(|e| SaveError::Entry(EntryError::Encode(e)))
            .and_then(|payload_len| {
                let meta = EntryMeta {
                    key: *key,
                    fingerprint: task.fingerprint(),
                    created_at: SystemTime::now(),
                    run_time,
                    payload_len,
                    run: provenance.run,
                    parent: provenance.parent,
                };
                let bytes = large_io(meta.entry_len(), || self.write_entry(task, &meta, value))?;
                Ok(bytes.map(|bytes| (bytes, meta.created_at)))
            });
        match saved {
            Ok(Some((bytes, created_at))) => {
                let payload = HEADER_LEN..bytes.len() - TRAILER_LEN;
                self.cache.insert(
                    *key,
                    CachedEntry {
                        bytes,
                        payload,
                        fingerprint: task.fingerprint(),
                        created_at,
                    },
                );
                true
            }
            Ok(None) => true,
            Err(e) => {
                self.store_failed(task, key, "write", &e);
                false
            }
        }
    }

    /// Writes the entry; returns its bytes when they are small enough to be
    /// cached (they were encoded in memory once, for both uses).
    fn write_entry<T: Serialize>(
        &self,
        task: &'static TaskSpec,
        meta: &EntryMeta,
        value: &T,
    ) -> Result<Option<Arc<Vec<u8>>>, SaveError> {
        let slot = Slot {
            name: task.name(),
            version: task.version(),
            key: &meta.key,
        };
        let len = meta.entry_len();
        let writer = self.store.create(&slot, len)?;
        if self.cache.admits(len) {
            let bytes = entry::write(Vec::with_capacity(len as usize), meta, value)?;
            let mut writer = writer;
            writer
                .write_all(&bytes)
                .map_err(|e| SaveError::Entry(EntryError::Io(e)))?;
            writer.commit()?;
            Ok(Some(Arc::new(bytes)))
        } else {
            entry::write(writer, meta, value)?.commit()?;
            Ok(None)
        }
    }

    fn check_fingerprint(&self, task: &'static TaskSpec, stored: &Fingerprint) {
        if task.first_fingerprint_mismatch(stored) {
            tracing::warn!(
                task = task.name(),
                version = task.version(),
                stored = %stored.short(),
                current = %task.fingerprint().short(),
                "the body of task `{}` changed but its version {} did not: stored results of the old \
                 body are still returned. Bump the version if the change alters results",
                task.name(),
                task.version(),
            );
        }
    }

    fn corrupt(&self, task: &'static TaskSpec, key: &Key, error: &EntryError) {
        self.counters
            .corrupt_entries
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(task = task.name(), version = task.version(), key = %key.short(), error = %error,
            "stored entry is unusable; recomputing it");
    }

    fn store_failed(
        &self,
        task: &'static TaskSpec,
        key: &Key,
        op: &str,
        error: &dyn std::error::Error,
    ) {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(task = task.name(), version = task.version(), key = %key.short(), error = %error,
            "cannot {op} the store; the call goes on without it");
    }
}

/// Whether a result computed at `created_at` has outlived its task's `ttl`:
/// then it is a miss, and the recomputed result replaces it.
fn outlived(task: &'static TaskSpec, created_at: SystemTime) -> bool {
    task.ttl().is_some() && task.expired(created_at, SystemTime::now())
}

/// Runs `io` where a large transfer will not stall other tasks.
fn large_io<R>(len: u64, io: impl FnOnce() -> R) -> R {
    if len > LARGE_ENTRY {
        blocking(io)
    } else {
        io()
    }
}

fn elapsed_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
