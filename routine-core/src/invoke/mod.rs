//! Running a task from encoded arguments: what a worker does with a request.
//!
//! `#[task]` registers, with each task, a function that decodes the task's
//! arguments and calls it (through the worker's engine, so memoization applies
//! there too). The helpers here are what that generated code calls.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::id::RunId;
use crate::key::Key;

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

/// How a task run for another process ended (see
/// [`Invocation::serve`]).
#[derive(Debug)]
pub struct Answer {
    /// Stored (or the result as JSON), or why not.
    pub outcome: Result<Finished, String>,
    /// The stored entry of a fresh result small enough to be held in
    /// memory: a worker can send it back with its reply, so that the caller
    /// need not read the store.
    pub entry: Option<std::sync::Arc<Vec<u8>>>,
    /// The `Err` the routine returned, encoded, when its error type
    /// implements serde's traits (see [`Dispatched::Failed`](crate::dispatch::Dispatched::Failed)).
    pub error: Option<Vec<u8>>,
}

/// Where an invoked task stands in a run started elsewhere.
#[derive(Debug, Clone)]
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
    /// The worker's slot the task runs in, given back while it waits on
    /// dispatched calls; `None` outside a worker.
    pub lease: Option<std::sync::Arc<crate::slot::SlotLease>>,
}

/// The text a panic was raised with.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => panic_text(&*payload).to_owned(),
    }
}

/// The text a panic was raised with, borrowed.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&'static str>().copied())
        .unwrap_or("a panic without a message")
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invocation::Send(_) => "Invocation::Send",
            Invocation::Local(_) => "Invocation::Local",
        })
    }
}

pub(crate) mod autoref;

#[cfg(test)]
mod tests {
    use super::autoref::*;
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
}
