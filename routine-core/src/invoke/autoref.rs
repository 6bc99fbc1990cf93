//! What the generated code picks by autoref, at compile time: whether a
//! task's future is `Send` (so it may run on any runtime thread), and how
//! to describe an error value (`Display`, else `Debug`, else its type
//! name). Reachable from outside only through the macros' hidden module.

use std::cell::Cell;
use std::fmt;
use std::future::Future;

use super::{Finished, Invocation};

/// A task's future on its way to an [`Invocation`]; the generated code picks
/// the `Send` kind when the future allows it, by autoref:
/// `(&&Started::new(future)).invocation()`.
pub struct Started<F>(Cell<Option<F>>);

impl<F> Started<F> {
    /// Wraps the future.
    pub fn new(future: F) -> Self {
        Started(Cell::new(Some(future)))
    }

    fn take(&self) -> F {
        self.0.take().expect("an invocation is started once")
    }
}

/// Picked for a `Send` future.
pub trait ViaSend {
    /// The future, boxed as an [`Invocation::Send`].
    fn invocation(&self) -> Invocation;
}

impl<F: Future<Output = Result<Finished, String>> + Send + 'static> ViaSend for &Started<F> {
    fn invocation(&self) -> Invocation {
        Invocation::Send(Box::pin(self.take()))
    }
}

/// Picked for any other future.
pub trait ViaLocal {
    /// The future, boxed as an [`Invocation::Local`].
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
pub struct Described<'a, T>(pub &'a T);

/// Picked for an error that implements `Display`.
pub trait ViaDisplay {
    /// The error's message.
    fn describe(&self) -> String;
}

impl<T: fmt::Display> ViaDisplay for &&Described<'_, T> {
    fn describe(&self) -> String {
        self.0.to_string()
    }
}

/// Picked for an error that implements `Debug` only.
pub trait ViaDebug {
    /// The error's message.
    fn describe(&self) -> String;
}

impl<T: fmt::Debug> ViaDebug for &Described<'_, T> {
    fn describe(&self) -> String {
        format!("{:?}", self.0)
    }
}

/// Picked for any other error.
pub trait ViaName {
    /// The error's message.
    fn describe(&self) -> String;
}

impl<T> ViaName for Described<'_, T> {
    fn describe(&self) -> String {
        format!("an error of type `{}`", std::any::type_name::<T>())
    }
}

/// A `Result` task's outcome, asked how its `Err` crosses the wire: by
/// serde when its error type allows ([`ViaSerde`]), else not at all
/// ([`ViaMessage`]: the caller gets its message). `#[task]` writes
/// `(&&ErrorWire(..)).encode()`; the borrows pick the trait.
pub struct ErrorWire<'a, O>(pub Option<&'a O>);

/// An error type with serde's traits: sent whole.
pub trait ViaSerde {
    /// The outcome type.
    type Outcome;
    /// The `Err` of the outcome, encoded; `None` for an `Ok`.
    fn encode(&self) -> Option<Vec<u8>>;
    /// The failed outcome from an encoded `Err`.
    fn decode(&self, bytes: &[u8]) -> Option<Self::Outcome>;
}

impl<T, E: serde::Serialize + serde::de::DeserializeOwned> ViaSerde
    for &ErrorWire<'_, Result<T, E>>
{
    type Outcome = Result<T, E>;
    fn encode(&self) -> Option<Vec<u8>> {
        let error = self.0?.as_ref().err()?;
        let mut bytes = Vec::new();
        crate::codec::encode_into(&mut bytes, error).ok()?;
        Some(bytes)
    }
    fn decode(&self, bytes: &[u8]) -> Option<Result<T, E>> {
        crate::codec::decode_slice(bytes).ok().map(Err)
    }
}

/// Any other error type: only its message crosses.
pub trait ViaMessage {
    /// The outcome type.
    type Outcome;
    /// Nothing: the error is described, not sent.
    fn encode(&self) -> Option<Vec<u8>>;
    /// Nothing.
    fn decode(&self, bytes: &[u8]) -> Option<Self::Outcome>;
}

impl<O> ViaMessage for ErrorWire<'_, O> {
    type Outcome = O;
    fn encode(&self) -> Option<Vec<u8>> {
        None
    }
    fn decode(&self, _: &[u8]) -> Option<O> {
        None
    }
}
