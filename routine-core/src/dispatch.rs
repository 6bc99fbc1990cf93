//! Sending calls elsewhere: the seam between the engine and a cluster.
//!
//! The engine knows no broker. An engine built with a [`Dispatch`] (the
//! `routine-distributed` crate provides the Redis one) hands it the calls its
//! [`Policy`] sends away, and waits for what became of them:
//!
//! ```text
//! call misses ─▶ policy says remote? ─▶ Dispatch::dispatch(DispatchRequest)
//!                                         │
//!            look the result up again ◀── Dispatched::Completed
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use crate::arguments::EncodedArguments;
use crate::id::RunId;
use crate::key::Key;
use crate::registry::TaskSpec;

/// Where the routines awaited by a routine run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Everything runs in this process.
    #[default]
    Local,
    /// A routine started here (by `main` or, on a worker, by a request) runs
    /// here; the routines it awaits are sent to workers.
    SubRoutinesRemote,
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "local" => Ok(Policy::Local),
            "sub-routines-remote" | "remote" => Ok(Policy::SubRoutinesRemote),
            other => Err(format!(
                "unknown policy `{other}`: use `local` or `sub-routines-remote`"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Local => "local",
            Policy::SubRoutinesRemote => "sub-routines-remote",
        })
    }
}

/// A call the engine hands to a [`Dispatch`].
#[derive(Debug)]
#[non_exhaustive]
pub struct DispatchRequest {
    /// The task called.
    pub task: &'static TaskSpec,
    /// The call's key.
    pub key: Key,
    /// The arguments, each encoded by the codec, one after the other (as
    /// [`TaskSpec::invoke`] takes them), with where each ends.
    pub arguments: std::sync::Arc<EncodedArguments>,
    /// The run the call belongs to.
    pub run: Option<RunId>,
    /// The call whose body made this one.
    pub parent: Option<Key>,
    /// The longest the call may take once a worker starts it, when its task
    /// has a `timeout` (with its retries and backoffs, and a margin): a
    /// worker silent past it is given up on.
    pub deadline: Option<std::time::Duration>,
}

/// What became of a dispatched call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// A worker stored the result: the engine decodes `entry` when the
    /// reply carried it (a small result), else reads it from the store.
    Completed {
        /// Who ran it.
        worker: String,
        /// The stored entry, for a result small enough to travel with the
        /// reply.
        entry: Option<Vec<u8>>,
    },
    /// An identical call dispatched elsewhere in the cluster landed: the
    /// engine looks again.
    Elsewhere,
    /// The worker reported a failure (a panic, a timeout or an `Err`).
    Failed {
        /// Who ran it.
        worker: String,
        /// What it said.
        message: String,
        /// The `Err` the task returned, encoded by the codec, when its
        /// error type implements serde's traits: the caller gets it back
        /// typed.
        error: Option<Vec<u8>>,
    },
    /// It could not be sent or answered: why.
    Unserved(String),
}

/// A call of a multi-unit task whose units a [`Dispatch`] runs as a gang
/// on workers' slots; see [`Dispatch::run_gang`].
#[derive(Debug)]
#[non_exhaustive]
pub struct GangRequest {
    /// The multi-unit task.
    pub task: &'static TaskSpec,
    /// How many units may run: all of them start together, or none.
    pub units: crate::registry::units::Units,
    /// The gang's call: the parent of what its units call.
    pub call: Key,
    /// The call's input, encoded by the codec, for rank 0.
    pub input: Vec<u8>,
    /// The run the call belongs to.
    pub run: Option<RunId>,
}

/// What became of a gang run on workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GangOutcome {
    /// Every unit returned: rank 0's output, encoded by the codec.
    Completed {
        /// Rank 0's output.
        output: Vec<u8>,
        /// Where and how each unit ran, in its last attempt.
        units: Vec<crate::registry::units::UnitReport>,
    },
    /// The gang failed: a unit panicked, a worker died, or it never
    /// started; the message names the task, the rank and the worker.
    Failed {
        /// What happened.
        message: String,
        /// Where and how each unit ran, in its last attempt.
        units: Vec<crate::registry::units::UnitReport>,
    },
}

/// The future of [`Dispatch::run_gang`].
pub type RunningGang<'a> = Pin<Box<dyn Future<Output = GangOutcome> + Send + 'a>>;

/// The future a [`Dispatch`] returns.
pub type Dispatching<'a> = Pin<Box<dyn Future<Output = Dispatched> + Send + 'a>>;

/// The future of [`Dispatch::settle`].
pub type Settling<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A cluster-wide slot, held until dropped; see [`Dispatch::take_slot`].
pub type ClusterSlot = Box<dyn Any + Send>;

/// The future of [`Dispatch::take_slot`].
pub type TakingSlot<'a> = Pin<Box<dyn Future<Output = Option<ClusterSlot>> + Send + 'a>>;

/// Sends calls to other processes and waits for them. Implemented by the
/// distributed crate; the engine calls it for every call its [`Policy`]
/// sends away, after the call missed locally.
///
/// ```
/// use routine_core::dispatch::{Dispatch, DispatchRequest, Dispatched, Dispatching, Policy};
///
/// /// A cluster where nothing is ever served.
/// struct Nowhere;
///
/// impl Dispatch for Nowhere {
///     fn dispatch(&self, request: DispatchRequest) -> Dispatching<'_> {
///         Box::pin(async move { Dispatched::Unserved(format!("nobody serves {}", request.task.id())) })
///     }
///     fn as_any(&self) -> &dyn std::any::Any {
///         self
///     }
/// }
///
/// let engine = routine_core::Engine::builder(routine_core::store::MemoryStore::new())
///     .dispatcher(Nowhere, Policy::SubRoutinesRemote)
///     .build()
///     .unwrap();
/// assert!(engine.dispatcher().is_some());
/// ```
pub trait Dispatch: Send + Sync + 'static {
    /// Runs `request` elsewhere; resolves when the result is stored (or the
    /// call failed, or cannot be served). Dropping the future gives the
    /// call up: a dispatcher that can cancels the work where it runs.
    fn dispatch(&self, request: DispatchRequest) -> Dispatching<'_>;

    /// The dispatcher itself, so that its crate can find it again in an
    /// engine (see [`Engine::dispatcher`](crate::Engine::dispatcher)).
    fn as_any(&self) -> &dyn Any;

    /// Resolves once what dropped calls started has ended (their
    /// cancellations sent): what a program awaits before it exits.
    fn settle(&self) -> Settling<'_> {
        Box::pin(std::future::ready(()))
    }

    /// Takes one of the `limit` slots the whole cluster shares for bodies
    /// of `task` (its `concurrency`), waiting for one; the slot is held
    /// until the returned value is dropped. `None` (the default): the
    /// dispatcher has no cluster to share slots with, and only the
    /// process's own limit holds.
    fn take_slot(&self, task: &'static TaskSpec, limit: u32) -> TakingSlot<'_> {
        let _ = (task, limit);
        Box::pin(std::future::ready(None))
    }

    /// Runs the units of a multi-unit call as a gang on workers' slots,
    /// all started together or none; resolves once every unit has returned
    /// (or the gang failed). Dropping the future drops every unit. `None`
    /// (the default): the dispatcher runs no gangs, and the units run in
    /// this process.
    fn run_gang(&self, gang: GangRequest) -> Option<RunningGang<'_>> {
        let _ = gang;
        None
    }
}
