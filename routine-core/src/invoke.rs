//! Running a task from encoded arguments: what a worker does with a request.
//!
//! `#[task]` registers, with each task, a function that decodes the task's
//! arguments and calls it (through the worker's engine, so memoization applies
//! there too). The helpers here are what that generated code calls.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::codec;
use std::sync::Arc;

use crate::engine::{Current, Engine, KeyBuilder, Place, TaskArgument};
use crate::key::Key;
use crate::key::KeyError;
use crate::lineage::{RunId, RunLog};

/// Encodes one argument from JSON; the error says why the value does not
/// fit the argument's type.
pub type FromJson = fn(serde_json::Value) -> Result<Vec<u8>, String>;

/// Decodes the next argument of encoded arguments, as JSON.
pub type ToJson = fn(&mut ArgumentsDecoder<'_>) -> Result<serde_json::Value, ArgumentsError>;

/// How to hash, encode and decode one argument type; built by [`argument`]
/// where the bounds on the type are checked, used without bounds elsewhere.
#[doc(hidden)]
pub struct ArgumentCodec<T> {
    /// Hashes the argument into the key (and encodes it, when asked).
    pub add: fn(&T, &mut KeyBuilder) -> Result<(), KeyError>,
    /// Decodes the next argument of a request.
    pub decode: fn(&mut ArgumentsDecoder<'_>) -> Result<T, ArgumentsError>,
    /// Encodes the argument from JSON, as a command line gives it.
    pub from_json: FromJson,
    /// Decodes the next argument as JSON, as a trigger is given it.
    pub to_json: ToJson,
}

/// The codec of one argument type.
#[doc(hidden)]
pub const fn argument<T: TaskArgument>() -> ArgumentCodec<T> {
    ArgumentCodec {
        add: add_argument::<T>,
        decode: decode_argument::<T>,
        from_json: argument_from_json::<T>,
        to_json: argument_to_json::<T>,
    }
}

fn argument_to_json<T: TaskArgument>(
    decoder: &mut ArgumentsDecoder<'_>,
) -> Result<serde_json::Value, ArgumentsError> {
    let position = decoder.position;
    let value: T = decoder.argument()?;
    serde_json::to_value(&value).map_err(|e| ArgumentsError {
        position,
        type_name: std::any::type_name::<T>(),
        reason: format!("cannot be written as JSON: {e}"),
    })
}

fn argument_from_json<T: TaskArgument>(value: serde_json::Value) -> Result<Vec<u8>, String> {
    let value: T = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let mut encoded = Vec::new();
    codec::encode_into(&mut encoded, &value).map_err(|e| e.to_string())?;
    Ok(encoded)
}

fn add_argument<T: TaskArgument>(value: &T, key: &mut KeyBuilder) -> Result<(), KeyError> {
    key.add(value)
}

fn decode_argument<T: TaskArgument>(
    decoder: &mut ArgumentsDecoder<'_>,
) -> Result<T, ArgumentsError> {
    decoder.argument()
}

/// Reads a task's arguments, one after the other, from their encoding.
#[doc(hidden)]
pub struct ArgumentsDecoder<'a> {
    rest: &'a [u8],
    position: usize,
}

impl<'a> ArgumentsDecoder<'a> {
    pub fn new(encoded: &'a [u8]) -> Self {
        ArgumentsDecoder {
            rest: encoded,
            position: 0,
        }
    }

    pub fn argument<T: TaskArgument>(&mut self) -> Result<T, ArgumentsError> {
        let limit = self.rest.len() as u64;
        let value = codec::decode_from(&mut self.rest, limit).map_err(|e| ArgumentsError {
            position: self.position,
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })?;
        self.position += 1;
        Ok(value)
    }

    pub fn finish(self) -> Result<(), ArgumentsError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ArgumentsError {
                position: self.position,
                type_name: "nothing",
                reason: format!("{} bytes are left over", self.rest.len()),
            })
        }
    }
}

/// A request's arguments do not decode as the task's argument types (a
/// caller built from other code for the same name and version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument {position} does not decode as `{type_name}`: {reason}")]
pub struct ArgumentsError {
    /// Zero-based position of the argument.
    pub position: usize,
    /// The type the task expects there.
    pub type_name: &'static str,
    /// What the decoder said.
    pub reason: String,
}

/// How an invoked task ended well.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// Its result is stored (and was not asked for as JSON).
    Stored,
    /// Its result, as JSON.
    Json(serde_json::Value),
    /// Its result is stored but cannot be written as JSON (a map with
    /// non-string keys, say): why.
    NotJson(String),
}

impl Finished {
    /// The result as JSON, or why it cannot be.
    pub(crate) fn of<T: serde::Serialize>(value: &T) -> Finished {
        match serde_json::to_value(value) {
            Ok(json) => Finished::Json(json),
            Err(e) => Finished::NotJson(e.to_string()),
        }
    }
}

/// A running task started from encoded arguments: resolves once its result
/// is stored, or to the error message of an `Err` result.
pub enum Invocation {
    /// The task's future is `Send`: it can run on any runtime thread.
    Send(Pin<Box<dyn Future<Output = Result<Finished, String>> + Send>>),
    /// It is not: it runs on the thread that started it.
    Local(Pin<Box<dyn Future<Output = Result<Finished, String>>>>),
}

impl Future for Invocation {
    type Output = Result<Finished, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Invocation::Send(run) => run.as_mut().poll(cx),
            Invocation::Local(run) => run.as_mut().poll(cx),
        }
    }
}

impl Invocation {
    /// Runs the task in `engine`'s scope as a tokio task of its own: a
    /// `Send` one may use every runtime thread, another stays on this one
    /// (then the caller must be inside a `tokio::task::LocalSet`). A panic
    /// becomes an error message, as an `Err` result does.
    ///
    /// The task is the root of a new run, unless `part_of` says which run
    /// it belongs to (a worker running a caller's sub-routine): then its
    /// calls are recorded as that run's, and the record is stored when it
    /// ends.
    pub async fn run_in(
        self,
        engine: &Engine,
        part_of: Option<PartOf>,
    ) -> Result<Finished, String> {
        let log = part_of.map(|part| (Arc::new(RunLog::new(part.run)), part));
        let mut scope = Current::outside(engine.clone());
        if let Some((log, part)) = &log {
            scope.place = Some(Arc::new(Place {
                run: Arc::clone(log),
                parent: part.parent,
                recovering: part.redelivered.then_some(part.key),
                serving: Some(part.key),
            }));
        }
        let running = match self {
            Invocation::Send(run) => tokio::spawn(scope.scope(run)),
            Invocation::Local(run) => tokio::task::spawn_local(scope.scope(run)),
        };
        let outcome = match running.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => Err(format!("panicked: {}", panic_message(e.into_panic()))),
            Err(e) => Err(format!("was cancelled: {e}")),
        };
        if let Some((log, part)) = log {
            if let Err(e) = log.store(engine.store(), &part.key) {
                tracing::warn!(run = %part.run, error = %e, "cannot store the record of a run; its lineage is lost");
            }
        }
        outcome
    }
}

/// Where an invoked task stands in a run started elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct PartOf {
    /// The run.
    pub run: RunId,
    /// The call that awaits the task, in the caller's process.
    pub parent: Option<Key>,
    /// The task's own key: names this process's part of the run.
    pub key: Key,
    /// The request was delivered before, to a worker that died: if its
    /// result is stored, that worker completed it, and the triggers that
    /// fire on fresh results fire now (with `from_storage` set).
    pub redelivered: bool,
}

/// The text a panic was raised with.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "a panic without a message".to_owned(),
        },
    }
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invocation::Send(_) => "Invocation::Send",
            Invocation::Local(_) => "Invocation::Local",
        })
    }
}

/// A task's future on its way to an [`Invocation`]; the generated code picks
/// the `Send` kind when the future allows it, by autoref:
/// `(&&Started::new(future)).invocation()`.
#[doc(hidden)]
pub struct Started<F>(Cell<Option<F>>);

impl<F> Started<F> {
    pub fn new(future: F) -> Self {
        Started(Cell::new(Some(future)))
    }

    fn take(&self) -> F {
        self.0.take().expect("an invocation is started once")
    }
}

#[doc(hidden)]
pub trait ViaSend {
    fn invocation(&self) -> Invocation;
}

impl<F: Future<Output = Result<Finished, String>> + Send + 'static> ViaSend for &Started<F> {
    fn invocation(&self) -> Invocation {
        Invocation::Send(Box::pin(self.take()))
    }
}

#[doc(hidden)]
pub trait ViaLocal {
    fn invocation(&self) -> Invocation;
}

impl<F: Future<Output = Result<Finished, String>> + 'static> ViaLocal for Started<F> {
    fn invocation(&self) -> Invocation {
        Invocation::Local(Box::pin(self.take()))
    }
}

/// An error value to describe, with the best of `Display`, `Debug` or its
/// type name. The generated code picks by autoref:
/// `(&&&Described(e)).describe()`.
#[doc(hidden)]
pub struct Described<'a, T>(pub &'a T);

#[doc(hidden)]
pub trait ViaDisplay {
    fn describe(&self) -> String;
}

impl<T: fmt::Display> ViaDisplay for &&Described<'_, T> {
    fn describe(&self) -> String {
        self.0.to_string()
    }
}

#[doc(hidden)]
pub trait ViaDebug {
    fn describe(&self) -> String;
}

impl<T: fmt::Debug> ViaDebug for &Described<'_, T> {
    fn describe(&self) -> String {
        format!("{:?}", self.0)
    }
}

#[doc(hidden)]
pub trait ViaName {
    fn describe(&self) -> String;
}

impl<T> ViaName for Described<'_, T> {
    fn describe(&self) -> String {
        format!("an error of type `{}`", std::any::type_name::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_borrow)] // the borrows select the trait
    fn send_futures_become_send_invocations() {
        // As in the generated code, the futures come from other functions:
        // an async block's `Send`-ness is only known outside its own body.
        async fn sendable() -> Result<Finished, String> {
            Ok(Finished::Stored)
        }
        async fn local() -> Result<Finished, String> {
            let shared = std::rc::Rc::new(1);
            std::future::ready(()).await;
            drop(shared);
            Ok(Finished::Stored)
        }
        assert!(matches!(
            (&&Started::new(sendable())).invocation(),
            Invocation::Send(_)
        ));
        assert!(matches!(
            (&&Started::new(local())).invocation(),
            Invocation::Local(_)
        ));
    }

    #[test]
    #[allow(clippy::needless_borrow)] // the borrows select the trait
    fn errors_are_described_by_the_best_available_trait() {
        struct Opaque;
        #[derive(Debug)]
        #[allow(dead_code)]
        struct OnlyDebug(u8);
        let display = String::from("disk on fire");
        assert_eq!((&&&Described(&display)).describe(), "disk on fire");
        assert_eq!((&&&Described(&OnlyDebug(7))).describe(), "OnlyDebug(7)");
        assert!((&&&Described(&Opaque)).describe().contains("Opaque"));
    }

    #[test]
    fn arguments_decode_in_order_and_completely() {
        let mut encoded = Vec::new();
        codec::encode_into(&mut encoded, &String::from("data")).unwrap();
        codec::encode_into(&mut encoded, &7u32).unwrap();
        let mut decoder = ArgumentsDecoder::new(&encoded);
        assert_eq!(decoder.argument::<String>().unwrap(), "data");
        assert_eq!(decoder.argument::<u32>().unwrap(), 7);
        decoder.finish().unwrap();

        let mut short = ArgumentsDecoder::new(&encoded[..6]);
        let error = short.argument::<String>().unwrap_err();
        assert_eq!(
            (error.position, error.type_name),
            (0, "alloc::string::String")
        );
        let mut long = ArgumentsDecoder::new(&encoded);
        long.argument::<String>().unwrap();
        assert!(long.finish().is_err());
    }
}
