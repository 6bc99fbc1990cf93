//! What a task returns, as the engine stores and restores it: the
//! [`Outcome`] of a plain value or a `Result`, and the [`OutcomeCodec`]
//! `#[task]` builds for each task, where the bounds on the user's types are
//! checked once, so that the call path needs none.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::storage::{Encoded, Provenance};
use super::Inner;
use crate::codec;
use crate::entry;
use crate::invoke::Finished;
use crate::key::Key;
use crate::lineage::Miss;
use crate::registry::TaskSpec;
use crate::store::Found;

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

/// How the engine stores and restores one task's outcome type: the
/// monomorphized functions of its [`Outcome`] impl. `#[task]` builds it once,
/// in a `const` spanned at the user's return type, with [`outcome_codec`], so
/// that the trait bounds on the user's types are checked there and only
/// there: [`call`] itself puts no bound on them.
#[doc(hidden)]
pub struct OutcomeCodec<O, Out> {
    /// The outcome from the in-process cache.
    pub(crate) cached: fn(&Inner, &'static TaskSpec, &Key) -> Option<O>,
    /// The outcome from what the store found.
    pub(crate) decode: fn(&Inner, &'static TaskSpec, &Key, Found) -> Result<O, Miss>,
    /// The entry to store, or `None` for an outcome that is not stored (an
    /// `Err`).
    pub(crate) encode:
        fn(&Inner, &'static TaskSpec, &Key, &O, Duration, Provenance) -> Option<Encoded>,
    pub(crate) into_output: fn(O) -> Out,
    /// The caller's output as JSON, for `run` on the command line.
    pub output_json: fn(&Out) -> Finished,
    /// A stored payload as JSON, for `cache show`.
    pub describe_stored: fn(&[u8]) -> Result<serde_json::Value, String>,
    /// The value to store, encoded, for triggers.
    pub(crate) encode_stored: fn(&O) -> Option<Vec<u8>>,
    /// The message of a failed outcome (an `Err`), for triggers.
    pub(crate) describe_failure: fn(&O) -> Option<String>,
    /// A failed outcome's `Err`, encoded for a caller in another process,
    /// when its type implements serde's traits.
    pub(crate) encode_error: fn(&O) -> Option<Vec<u8>>,
    /// The failed outcome a caller rebuilds from that encoding.
    pub(crate) decode_error: fn(&[u8]) -> Option<O>,
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

    /// The same codec, sending a failed outcome's `Err` to callers in other
    /// processes with `encode` and `decode`: `#[task]` passes them for
    /// tasks whose error type implements serde's traits.
    pub const fn carrying_errors(
        self,
        encode: fn(&O) -> Option<Vec<u8>>,
        decode: fn(&[u8]) -> Option<O>,
    ) -> Self {
        OutcomeCodec {
            encode_error: encode,
            decode_error: decode,
            ..self
        }
    }
}

/// The codec of an outcome type.
#[doc(hidden)]
pub const fn outcome_codec<O: Outcome>() -> OutcomeCodec<O, O::Output> {
    OutcomeCodec {
        cached: |inner, task, key| inner.cached(task, key).map(O::from_stored),
        decode: |inner, task, key, found| {
            (inner.decode_found(task, key, found)).map(O::from_stored)
        },
        encode: encode_outcome::<O>,
        into_output: O::into_output,
        output_json: output_json::<O>,
        describe_stored: describe_stored::<O>,
        encode_stored: encode_stored::<O>,
        describe_failure: |_| None,
        encode_error: |_| None,
        decode_error: |_| None,
    }
}

fn encode_stored<O: Outcome>(outcome: &O) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    codec::encode_into(&mut bytes, outcome.stored()?).ok()?;
    Some(bytes)
}

fn encode_outcome<O: Outcome>(
    inner: &Inner,
    task: &'static TaskSpec,
    key: &Key,
    outcome: &O,
    run_time: Duration,
    provenance: Provenance,
) -> Option<Encoded> {
    Some(inner.encode(task, key, outcome.stored()?, run_time, provenance))
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
