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
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::arguments::ArgumentsDecoder;
use crate::id::{RoutineId, RunId};
use crate::key::Key;
pub use crate::registry::trigger::{Fire, Occurrence, RegisteredTrigger, TriggerSpec};

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
