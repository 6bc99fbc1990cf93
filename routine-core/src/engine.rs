//! The engine: the runtime behind every task call.
//!
//! An [`Engine`] is a cheap handle (an `Arc`) over a store, an in-process
//! cache of results, a single-flight table and counters. Task calls find it
//! through a tokio task-local set by [`Engine::scope`]; users rarely touch it
//! beyond setting it up.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::code::OnCodeChange;
use crate::dispatch::{Dispatch, Policy};
use crate::error::Error;
use crate::execution::Execution;
use crate::id::RunId;
use crate::key::Key;
use crate::lineage::RunLog;
use crate::registry::{self, TaskSpec};
use crate::slot::SlotLease;
use crate::store::{MemoryStore, Store};

mod cache;
pub(crate) mod call;
pub mod failure;
mod flight;
mod invocation;
pub(crate) mod outcome;
mod report;
mod storage;
mod triggers;
mod writer;

pub use self::report::CallReport;
pub use self::writer::Writer;

use self::cache::ResultCache;
use self::flight::Flights;
use self::triggers::TriggerCounters;
use self::writer::ThisWriter;

/// Default bound on the memory the in-process result cache may hold.
pub const DEFAULT_CACHE_CAPACITY: usize = 64 * 1024 * 1024;

tokio::task_local! {
    static CURRENT: Current;
}

/// What a task-local scope knows: the engine; whether the code runs inside a
/// routine's body (then the routines it awaits are *sub-routines*, which a
/// distributed policy sends to workers); and, inside a run, the run's log and
/// the call whose body this is.
///
/// Kept small: tokio swaps it in and out of the task-local slot at every
/// poll of a scoped future, and every task call clones it.
#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) engine: Engine,
    pub(crate) in_routine: bool,
    /// Inside a run: where this code stands in it.
    pub(crate) place: Option<Arc<Place>>,
}

/// Where code stands in a run.
pub(crate) struct Place {
    pub(crate) run: Arc<RunLog>,
    /// The call whose body this is.
    pub(crate) parent: Option<Key>,
    /// The request this code serves, when a worker (or the command line)
    /// runs a call on behalf of another process.
    pub(crate) serving: Option<Serving>,
    /// The worker's slot this code runs in, if on a worker.
    pub(crate) lease: Option<Arc<SlotLease>>,
}

/// A call run on behalf of a request from another process.
pub(crate) struct Serving {
    /// The key of the requested call.
    pub(crate) key: Key,
    /// The request was delivered before, to a worker that died.
    pub(crate) redelivered: bool,
    /// What became of the requested call's result, for the reply.
    pub(crate) served: Arc<Served>,
}

/// What became of a served call's fresh result: whether it reached the
/// store, and its entry when it was small enough to hold in memory; or the
/// `Err` it returned, encoded, when its type crosses the wire.
#[derive(Default)]
pub(crate) struct Served(
    std::sync::Mutex<Option<Stored>>,
    std::sync::Mutex<Option<Vec<u8>>>,
);

/// A fresh result as the store took it (or did not).
pub(crate) type Stored = Result<Option<Arc<Vec<u8>>>, String>;

impl Served {
    pub(crate) fn set(&self, stored: Stored) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stored);
    }

    pub(crate) fn set_error(&self, error: Vec<u8>) {
        *self
            .1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }

    /// The encoded `Err` the call returned, if it crosses the wire.
    pub(crate) fn take_error(&self) -> Option<Vec<u8>> {
        self.1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// `Err` when the call computed a result the store did not take;
    /// `Ok(None)` when it computed nothing (the result was stored before).
    pub(crate) fn take(&self) -> Stored {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or(Ok(None))
    }
}

impl Current {
    pub(crate) fn get() -> Option<Current> {
        CURRENT.try_with(Current::clone).ok()
    }

    /// Runs `fut` in this scope.
    pub(crate) fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }

    /// The scope of code outside any run: `main`, a test, a trigger.
    pub(crate) fn outside(engine: Engine) -> Current {
        Current {
            engine,
            in_routine: false,
            place: None,
        }
    }
}

/// The runtime that memoizes task calls. Clones share everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), routine_core::Error> {
/// use routine_core::Engine;
///
/// let dir = tempfile::tempdir().unwrap();
/// let engine = Engine::local(dir.path())?;
/// let answer = engine.scope(async {
///     // Task calls made here use `engine`.
///     assert!(Engine::try_current().is_some());
///     42
/// }).await;
/// assert_eq!(answer, 42);
/// assert_eq!(engine.stats().hits, 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

type Observer = Arc<dyn Fn(&CallReport) + Send + Sync>;

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    cache: ResultCache,
    flights: Flights,
    counters: Counters,
    observer: Option<Observer>,
    pub(crate) triggers: TriggerCounters,
    /// Where calls the policy sends away go.
    dispatcher: Option<(Arc<dyn Dispatch>, Policy)>,
    /// The execution options of tasks that leave them unset.
    execution: Execution,
    /// What tasks that leave `on_code_change` unset do with a result of
    /// other code.
    on_code_change: OnCodeChange,
    /// This process, as the entries it stores name it.
    writer: ThisWriter,
    /// Store failures already warned of (see `Inner::store_failed`).
    store_warnings: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    failures: AtomicU64,
    dispatched: AtomicU64,
    store_errors: AtomicU64,
    corrupt_entries: AtomicU64,
    /// Calls past their first lookup and not ended: a hit at once never
    /// counts here, so the hot path pays for one counter, not three.
    waiting: AtomicU64,
    computed: AtomicU64,
    cancelled: AtomicU64,
    /// Calls now waiting on a dispatcher.
    dispatch_waiting: AtomicU64,
    /// Calls now waiting for a slot of their task's `concurrency`.
    limited: AtomicU64,
    /// Attempts that failed and were tried again.
    retried: AtomicU64,
}

/// One count of a gauge of [`Counters`], taken back when dropped: a call
/// cancelled while it waits leaves the gauge right.
pub(crate) struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    pub(crate) fn up(gauge: &'a AtomicU64) -> Counted<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an engine has done since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls answered from storage (or from an identical call in flight).
    pub hits: u64,
    /// Calls that ran the task body.
    pub misses: u64,
    /// Calls whose body returned `Err` or panicked (here or on a worker).
    pub failures: u64,
    /// Calls run by a worker and then read from the shared store.
    pub dispatched: u64,
    /// Store reads or writes that failed; each such call still got its value.
    pub store_errors: u64,
    /// Stored entries found corrupt or undecodable (and recomputed).
    pub corrupt_entries: u64,
    /// Bytes held by the in-process result cache now.
    pub cache_bytes: u64,
    /// Calls not finished yet that were not answered by their first lookup
    /// (running, following an identical call, or waiting for a worker).
    pub running: u64,
    /// Calls that ended, however they ended.
    pub finished: u64,
    /// Triggers that ran to completion.
    pub triggers_fired: u64,
    /// Triggers that returned an error or panicked.
    pub trigger_failures: u64,
    /// Calls waiting for a slot of their task's `concurrency` now.
    pub waiting_for_slot: u64,
    /// Failed attempts that were tried again (`retries`).
    pub retried: u64,
}

impl Engine {
    /// The local engine over a store rooted at `dir` (created if missing),
    /// with default settings: an existing store in its own layout, a new
    /// one in the default ([`DatabaseStore`](crate::store::DatabaseStore)); see
    /// [`store::open_local`](crate::store::open_local).
    ///
    /// Fails if the directory cannot be created or is not a store, or if
    /// two tasks in the program share a name and version.
    pub fn local(dir: impl AsRef<Path>) -> Result<Engine, Error> {
        let store = crate::store::open_local(dir.as_ref(), None, Default::default())?;
        Engine::builder(store).build()
    }

    /// An engine over a fresh in-memory store: memoization and single-flight
    /// for the life of the engine, nothing on disk.
    ///
    /// # Panics
    /// If two tasks in the program share a name and version.
    pub fn in_memory() -> Engine {
        Engine::builder(MemoryStore::new())
            .cache_capacity(0)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts configuring an engine over `store`.
    ///
    /// ```
    /// use routine_core::store::{Durability, FileStore};
    /// use routine_core::Engine;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = FileStore::open(dir.path()).unwrap().with_durability(Durability::Fsync);
    /// let engine = Engine::builder(store)
    ///     .cache_capacity(16 << 20)
    ///     .on_call(|report| println!("{} {:?}", report.task.name(), report.outcome))
    ///     .build()
    ///     .unwrap();
    /// # drop(engine);
    /// ```
    pub fn builder(store: impl Store) -> EngineBuilder {
        EngineBuilder {
            store: Arc::new(store),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            observer: None,
            dispatcher: None,
            execution: Execution::NONE,
            on_code_change: OnCodeChange::Warn,
            program: None,
        }
    }

    /// Runs `fut` with this engine as the current one. Scopes nest: the
    /// innermost wins.
    pub fn scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        Current::outside(self.clone()).scope(fut)
    }

    /// The run the current code belongs to: inside a routine's body (or a
    /// future spawned from one), the run of the root call that led there.
    ///
    /// ```
    /// // Outside any routine there is no run.
    /// assert_eq!(routine_core::Engine::current_run(), None);
    /// ```
    pub fn current_run() -> Option<RunId> {
        CURRENT
            .try_with(|current| current.place.as_ref().map(|place| place.run.id))
            .ok()
            .flatten()
    }

    /// The engine of the current scope, if any.
    pub fn try_current() -> Option<Engine> {
        CURRENT.try_with(|current| current.engine.clone()).ok()
    }

    /// The engine of the current scope.
    ///
    /// # Panics
    /// Outside any [`scope`](Self::scope).
    pub fn current() -> Engine {
        Engine::try_current().unwrap_or_else(|| panic!("{}", no_engine_message("this code")))
    }

    /// Counters since the engine was built.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            dispatched: c.dispatched.load(Ordering::Relaxed),
            store_errors: c.store_errors.load(Ordering::Relaxed),
            corrupt_entries: c.corrupt_entries.load(Ordering::Relaxed),
            cache_bytes: self.inner.cache.used() as u64,
            running: c.waiting.load(Ordering::Relaxed),
            finished: [
                &c.hits,
                &c.computed,
                &c.failures,
                &c.dispatched,
                &c.cancelled,
            ]
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum(),
            triggers_fired: self.inner.triggers.fired.load(Ordering::Relaxed),
            trigger_failures: self.inner.triggers.failed.load(Ordering::Relaxed),
            waiting_for_slot: c.limited.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
        }
    }

    /// Waits until what this engine started in the background has ended:
    /// every trigger, and the cancellations its dispatcher sends for
    /// dropped calls. A program about to exit calls it so that nothing is
    /// cut short; `#[routine::main]` does.
    pub async fn settle(&self) {
        self.triggers_settled().await;
        if let Some((dispatcher, _)) = &self.inner.dispatcher {
            dispatcher.settle().await;
        }
    }

    /// What a call of `task` does with a result of other code: the
    /// attribute's `on_code_change`, else this engine's default.
    pub fn on_code_change_of(&self, task: &TaskSpec) -> OnCodeChange {
        task.on_code_change().unwrap_or(self.inner.on_code_change)
    }

    /// The execution options a call of `task` runs with: the task's own,
    /// with this engine's defaults where it left them unset.
    pub fn execution_of(&self, task: &TaskSpec) -> Execution {
        task.execution().or(&self.inner.execution)
    }

    /// The store behind this engine.
    pub fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The dispatcher this engine sends calls through, if any; its crate
    /// finds its own type with [`Dispatch::as_any`].
    pub fn dispatcher(&self) -> Option<&dyn Dispatch> {
        self.inner.dispatcher.as_ref().map(|(d, _)| &**d)
    }

    /// The dispatcher that runs this engine's gangs: the one that sends
    /// sub-routines away.
    pub(crate) fn gang_dispatcher(&self) -> Option<&dyn Dispatch> {
        match &self.inner.dispatcher {
            Some((dispatcher, Policy::SubRoutinesRemote)) => Some(&**dispatcher),
            _ => None,
        }
    }

    /// Calls of this engine now waiting on a dispatcher: a worker running
    /// such a routine is `HANGING`.
    pub fn dispatch_waiting(&self) -> u64 {
        self.inner.counters.dispatch_waiting.load(Ordering::Relaxed)
    }

    /// Drops `key` from the in-process cache (not from the store).
    pub fn forget_cached(&self, key: &Key) {
        self.inner.cache.remove(key);
    }

    pub(crate) fn current_for(task: &TaskSpec) -> Current {
        Current::get().unwrap_or_else(|| {
            panic!(
                "{}",
                no_engine_message(&format!(
                    "task `{}` (version {})",
                    task.name(),
                    task.version()
                ))
            )
        })
    }
}

fn no_engine_message(what: &str) -> String {
    format!(
        "{what} was called outside an engine scope: there is no current routine engine. \
         Run it inside `engine.scope(..)`, for example \
         `routine::Engine::local(\".routine\")?.scope(async {{ .. }}).await`, \
         and use `routine::spawn` (or spawn from inside a scope) for new tokio tasks"
    )
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.inner.store)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Configures an [`Engine`]; made by [`Engine::builder`].
#[must_use]
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    cache_capacity: usize,
    observer: Option<Observer>,
    dispatcher: Option<(Arc<dyn Dispatch>, Policy)>,
    execution: Execution,
    on_code_change: OnCodeChange,
    program: Option<(String, String, Option<String>)>,
}

impl EngineBuilder {
    /// Names the program whose results this engine stores: its name,
    /// version and git commit (if the build knows it). `why` shows them for
    /// each result; `#[routine::main]` sets them.
    ///
    /// ```
    /// let engine = routine_core::Engine::builder(routine_core::store::MemoryStore::new())
    ///     .program("train", "1.2.0", Some("3f2c1a9"))
    ///     .build()
    ///     .unwrap();
    /// # let _ = engine;
    /// ```
    pub fn program(mut self, name: &str, version: &str, commit: Option<&str>) -> Self {
        self.program = Some((
            name.to_owned(),
            version.to_owned(),
            commit.map(str::to_owned),
        ));
        self
    }

    /// What tasks that leave `on_code_change` unset in their attribute do
    /// when a stored result was computed by other code (see
    /// [`crate::code`]): [`OnCodeChange::Warn`] (the default) returns it
    /// with a warning naming what changed; [`OnCodeChange::Rerun`] puts the
    /// code fingerprint in the key, so changed code is a miss.
    ///
    /// ```
    /// use routine_core::code::OnCodeChange;
    /// use routine_core::store::MemoryStore;
    ///
    /// let engine = routine_core::Engine::builder(MemoryStore::new())
    ///     .on_code_change(OnCodeChange::Rerun)
    ///     .build()
    ///     .unwrap();
    /// # let _ = engine;
    /// ```
    pub fn on_code_change(mut self, policy: OnCodeChange) -> Self {
        self.on_code_change = policy;
        self
    }

    /// Execution options for the tasks that leave them unset in their
    /// attribute (see [`crate::execution`]): a default `timeout`, `retries`
    /// and `backoff`, `retry_errors`, or `concurrency`.
    ///
    /// ```
    /// use routine_core::execution::Execution;
    /// use routine_core::store::MemoryStore;
    /// use std::time::Duration;
    ///
    /// let engine = routine_core::Engine::builder(MemoryStore::new())
    ///     .execution(Execution { timeout: Some(Duration::from_secs(600)), ..Execution::NONE })
    ///     .build()
    ///     .unwrap();
    /// # let _ = engine;
    /// ```
    pub fn execution(mut self, defaults: Execution) -> Self {
        self.execution = defaults;
        self
    }

    /// Bounds the bytes the in-process cache of results may hold (default
    /// 64 MiB); 0 turns it off. Results larger than an eighth of it are
    /// never cached.
    pub fn cache_capacity(mut self, bytes: usize) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// Calls `observer` after every task call with what happened. It runs on
    /// the caller's task: keep it short.
    pub fn on_call(mut self, observer: impl Fn(&CallReport) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The store the engine will use.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Sends the calls `policy` sends away through `dispatcher`. The store
    /// should be shared with whatever runs them (an object store), or their
    /// results will not be found here.
    pub fn dispatcher(mut self, dispatcher: impl Dispatch, policy: Policy) -> Self {
        self.dispatcher = Some((Arc::new(dispatcher), policy));
        self
    }

    /// Builds the engine; fails if two tasks share a name and version.
    pub fn build(self) -> Result<Engine, Error> {
        registry::check()?;
        for trigger in registry::unbound_triggers() {
            tracing::warn!(trigger = trigger.name(), on = %trigger.on(),
                "a trigger is bound to a routine this program does not have; it never fires");
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                store: self.store,
                cache: ResultCache::new(self.cache_capacity),
                flights: Flights::default(),
                counters: Counters::default(),
                observer: self.observer,
                triggers: TriggerCounters::default(),
                store_warnings: Default::default(),
                dispatcher: self.dispatcher,
                execution: self.execution,
                on_code_change: self.on_code_change,
                writer: ThisWriter::new(Writer::this_process(
                    (self.program.as_ref()).map(|(n, v, c)| (n.as_str(), v.as_str(), c.as_deref())),
                )),
            }),
        })
    }
}

/// `tokio::spawn` that keeps the current engine and span: the spawned
/// future runs in the same engine scope as the code that spawned it, and
/// its spans are children of the current one (a trace of a run follows
/// its calls made in parallel).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let engine = routine_core::Engine::in_memory();
/// engine.scope(async {
///     let inherited = routine_core::spawn(async { routine_core::Engine::try_current().is_some() });
///     assert!(inherited.await.unwrap());
/// }).await;
/// # }
/// ```
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let fut = tracing::Instrument::in_current_span(fut);
    match Current::get() {
        Some(current) => tokio::spawn(current.scope(fut)),
        None => tokio::spawn(fut),
    }
}
