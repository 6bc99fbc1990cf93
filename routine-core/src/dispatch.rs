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

/// The future a [`Dispatch`] returns.
pub type Dispatching<'a> = Pin<Box<dyn Future<Output = Dispatched> + Send + 'a>>;

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
    /// call failed, or cannot be served).
    fn dispatch(&self, request: DispatchRequest) -> Dispatching<'_>;

    /// The dispatcher itself, so that its crate can find it again in an
    /// engine (see [`Engine::dispatcher`](crate::Engine::dispatcher)).
    fn as_any(&self) -> &dyn Any;
}

/// A worker's slot, held by the request it runs: given back while the
/// routine waits on calls it dispatched (the seed's HANGING state), taken
/// again before it goes on, as a Ray task blocked on others gives back its
/// CPU. With it, a workflow of any depth completes on workers of
/// concurrency 1: each level waits without holding the slot the next level
/// needs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use routine_core::dispatch::SlotLease;
/// use std::sync::Arc;
/// use tokio::sync::Semaphore;
///
/// let slots = Arc::new(Semaphore::new(1));
/// let lease = SlotLease::new(Arc::clone(&slots), Arc::clone(&slots).acquire_owned().await.unwrap());
/// assert_eq!(slots.available_permits(), 0);
/// let waiting = lease.give_back();
/// assert_eq!(slots.available_permits(), 1); // another request may run
/// waiting.take_again().await;
/// assert_eq!(slots.available_permits(), 0);
/// # }
/// ```
#[derive(Debug)]
pub struct SlotLease {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    state: std::sync::Mutex<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Dispatched calls the routine waits on now.
    waits: usize,
}

impl SlotLease {
    /// A lease of `held`, one of `slots`.
    pub fn new(
        slots: std::sync::Arc<tokio::sync::Semaphore>,
        held: tokio::sync::OwnedSemaphorePermit,
    ) -> SlotLease {
        SlotLease {
            slots,
            state: std::sync::Mutex::new(LeaseState {
                held: Some(held),
                waits: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the routine holds its slot now (it is not hanging).
    pub fn holds_slot(&self) -> bool {
        self.state().held.is_some()
    }

    /// The routine starts waiting on a dispatched call: the first such
    /// wait gives the slot back. Await [`Waiting::take_again`] when the
    /// call is answered; a `Waiting` dropped unawaited (the wait was
    /// cancelled) ends the wait without taking a slot.
    pub fn give_back(&self) -> Waiting<'_> {
        let mut state = self.state();
        state.waits += 1;
        if state.waits == 1 {
            state.held = None;
        }
        Waiting {
            lease: self,
            ended: false,
        }
    }
}

/// One wait of a routine on a dispatched call; see [`SlotLease::give_back`].
#[derive(Debug)]
pub struct Waiting<'a> {
    lease: &'a SlotLease,
    ended: bool,
}

impl Waiting<'_> {
    /// Ends the wait; the last one takes a slot again (waiting for one to
    /// be free) before the routine goes on.
    pub async fn take_again(mut self) {
        self.ended = true;
        let lease = self.lease;
        {
            let mut state = lease.state();
            state.waits -= 1;
            if state.waits > 0 || state.held.is_some() {
                return;
            }
        }
        let Ok(permit) = std::sync::Arc::clone(&lease.slots).acquire_owned().await else {
            return; // the worker is shutting down: go on without a slot
        };
        let mut state = lease.state();
        // Another wait may have started meanwhile: then the slot goes back.
        if state.waits == 0 && state.held.is_none() {
            state.held = Some(permit);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let mut state = self.lease.state();
            state.waits = state.waits.saturating_sub(1);
        }
    }
}
