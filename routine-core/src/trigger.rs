//! Triggers: user functions that run when a routine completes.
//!
//! `#[routine::trigger(on = "train")]` registers a function through
//! `inventory`, as `#[task]` registers a task. When a call of the routine
//! ends, the engine that ran it starts each matching trigger as a tokio task
//! of its own, in an engine scope (so a trigger can await routines), after
//! the result is stored; the caller gets its result without waiting. A
//! trigger's failure or panic is logged and counted, never the routine's.
//!
//! By default a trigger fires when the routine computed a fresh result and
//! stored it. `hits = true` adds completions answered from storage;
//! `failures = true` adds `Err` results and panics.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::engine::{CallOutcome, Current, Engine};
use crate::invoke::ArgumentsDecoder;
use crate::key::Key;
use crate::lineage::RunId;
use crate::registry::{self, RoutineId, TaskSpec};

/// What a trigger receives: one completed call of its routine. (The
/// `routine` crate's `#[trigger]` documentation has a compiled example.)
///
/// ```ignore
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Model { loss: f64 }
/// #[routine::trigger(on = "pick-best")]
/// async fn announce(done: routine::Completion<Model>) {
///     if let Ok(model) = &done.result {
///         println!("run {:?}: best loss {} (key {})", done.run, model.loss, done.key.short());
///     }
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Completion<T> {
    /// The routine that completed.
    pub routine: RoutineId,
    /// The call's key: the same for every completion of the same call, so a
    /// trigger that must act once per result can use it to tell repeats.
    pub key: Key,
    /// The call's arguments, by name, as JSON.
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// The result, or the error message of an `Err` or a panic.
    pub result: Result<T, String>,
    /// The result came from storage (a hit, or a completion recovered after
    /// a worker died) rather than from the body just now.
    pub from_storage: bool,
    /// How long the call took.
    pub duration: Duration,
    /// The run the call belongs to.
    pub run: Option<RunId>,
}

/// A completion before its trigger decodes it into its own types.
#[derive(Clone)]
pub struct Occurrence {
    pub(crate) task: &'static TaskSpec,
    pub(crate) key: Key,
    pub(crate) arguments: Option<Vec<u8>>,
    pub(crate) result: Result<Vec<u8>, String>,
    pub(crate) from_storage: bool,
    pub(crate) duration: Duration,
    pub(crate) run: Option<RunId>,
}

impl Occurrence {
    /// Decodes the arguments and the result as the trigger's types; the
    /// error says why they do not fit.
    pub fn completion<T: DeserializeOwned>(self) -> Result<Completion<T>, String> {
        let result = match self.result {
            Ok(bytes) => Ok(crate::codec::decode_slice::<T>(&bytes).map_err(|e| {
                format!(
                    "the result of `{}` does not decode as `{}`: {e}",
                    self.task.id(),
                    std::any::type_name::<T>()
                )
            })?),
            Err(message) => Err(message),
        };
        let mut arguments = serde_json::Map::new();
        if let Some(encoded) = &self.arguments {
            let mut decoder = ArgumentsDecoder::new(encoded);
            for parameter in self.task.parameters() {
                let value = parameter.decode_json(&mut decoder).map_err(|e| {
                    format!("cannot read the arguments of `{}`: {e}", self.task.id())
                })?;
                arguments.insert(parameter.name().to_owned(), value);
            }
        }
        Ok(Completion {
            routine: self.task.id(),
            key: self.key,
            arguments,
            result,
            from_storage: self.from_storage,
            duration: self.duration,
            run: self.run,
        })
    }
}

impl fmt::Debug for Occurrence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Occurrence")
            .field("routine", &self.task.id())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Runs a trigger on an occurrence; written by `#[trigger]`.
pub type Fire = fn(Occurrence) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A trigger as `#[trigger]` registers it.
pub struct TriggerSpec {
    name: &'static str,
    on: &'static str,
    on_version: Option<&'static str>,
    hits: bool,
    failures: bool,
    fire: Fire,
    location: (&'static str, u32),
}

impl TriggerSpec {
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub const fn __new(
        name: &'static str,
        on: &'static str,
        on_version: Option<&'static str>,
        hits: bool,
        failures: bool,
        fire: Fire,
        file: &'static str,
        line: u32,
    ) -> TriggerSpec {
        TriggerSpec {
            name,
            on,
            on_version,
            hits,
            failures,
            fire,
            location: (file, line),
        }
    }

    /// The trigger function's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The routine it is bound to: `name` or `name@version`.
    pub fn on(&self) -> String {
        match self.on_version {
            Some(version) => format!("{}@{version}", self.on),
            None => self.on.to_owned(),
        }
    }

    fn matches(&self, task: &TaskSpec) -> bool {
        self.on == task.name() && self.on_version.is_none_or(|v| v == task.version())
    }

    /// Whether it fires for a call that ended so.
    pub(crate) fn fires_on(&self, outcome: CallOutcome) -> bool {
        match outcome {
            CallOutcome::Computed => true,
            CallOutcome::Hit => self.hits,
            CallOutcome::Failed | CallOutcome::Panicked => self.failures,
            _ => false,
        }
    }
}

impl fmt::Debug for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TriggerSpec({} on {} at {}:{})",
            self.name,
            self.on(),
            self.location.0,
            self.location.1
        )
    }
}

#[doc(hidden)]
pub struct RegisteredTrigger(pub &'static TriggerSpec);

inventory::collect!(RegisteredTrigger);

/// Every trigger linked into the program.
pub fn triggers() -> impl Iterator<Item = &'static TriggerSpec> {
    inventory::iter::<RegisteredTrigger>
        .into_iter()
        .map(|r| r.0)
}

/// The triggers bound to `task`, found once.
pub(crate) fn of_task<'a>(
    task: &'static TaskSpec,
    cache: &'a OnceLock<Vec<&'static TriggerSpec>>,
) -> &'a [&'static TriggerSpec] {
    cache.get_or_init(|| triggers().filter(|t| t.matches(task)).collect())
}

/// Triggers bound to a routine the program does not have: a typo in `on`.
/// Engines warn about them when they are built.
pub(crate) fn unbound() -> Vec<&'static TriggerSpec> {
    triggers()
        .filter(|t| !registry::tasks().any(|task| t.matches(task)))
        .collect()
}

/// Triggers running now, and what became of those that ended.
#[derive(Default)]
pub(crate) struct TriggerCounters {
    pub(crate) running: AtomicU64,
    pub(crate) fired: AtomicU64,
    pub(crate) failed: AtomicU64,
    settled: tokio::sync::Notify,
}

impl Engine {
    /// Starts each trigger of `occurrence`'s routine that fires for
    /// `outcome`, in a scope of this engine, without waiting for them.
    pub(crate) fn fire(
        &self,
        outcome: CallOutcome,
        occurrence: Occurrence,
        triggers: &[&'static TriggerSpec],
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for trigger in triggers.iter().filter(|t| t.fires_on(outcome)) {
            let counters = &self.inner().triggers;
            counters.running.fetch_add(1, Ordering::Relaxed);
            let scope = Current::outside(self.clone());
            let running = runtime.spawn(scope.scope((trigger.fire)(occurrence.clone())));
            let engine = self.clone();
            let (name, routine) = (trigger.name, occurrence.task.id());
            runtime.spawn(async move {
                let counters = &engine.inner().triggers;
                let failure = match running.await {
                    Ok(Ok(())) => None,
                    Ok(Err(message)) => Some(message),
                    Err(e) if e.is_panic() => Some(format!(
                        "panicked: {}",
                        crate::invoke::panic_message(e.into_panic())
                    )),
                    Err(e) => Some(format!("was cancelled: {e}")),
                };
                match failure {
                    None => counters.fired.fetch_add(1, Ordering::Relaxed),
                    Some(message) => {
                        tracing::error!(trigger = name, routine = %routine, error = %message,
                            "a trigger failed; the routine's result is not affected");
                        counters.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                counters.running.fetch_sub(1, Ordering::Relaxed);
                counters.settled.notify_waiters();
            });
        }
    }

    /// Waits until every trigger this engine started has ended. A program
    /// about to exit calls it so that no trigger is cut short;
    /// `#[routine::main]` does.
    pub async fn settle(&self) {
        let counters = &self.inner().triggers;
        loop {
            let settled = counters.settled.notified();
            if counters.running.load(Ordering::Relaxed) == 0 {
                return;
            }
            settled.await;
        }
    }
}

/// What a trigger may return: `()`, or `Result<(), E>` with a displayable
/// `E` (an `Err` is logged and counted as the trigger's failure).
#[diagnostic::on_unimplemented(
    message = "a trigger cannot return `{Self}`",
    note = "return `()` or `Result<(), E>` where `E` implements `Display`"
)]
pub trait TriggerOutput {
    /// `Ok`, or the failure's message.
    fn into_result(self) -> Result<(), String>;
}

impl TriggerOutput for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> TriggerOutput for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}
