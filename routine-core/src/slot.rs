//! A worker's slots, and the lease of one by the request it runs.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A worker's slot, held by the request it runs: given back while the
/// routine waits on calls it dispatched (the seed's HANGING state), taken
/// again before it goes on, as a Ray task blocked on others gives back its
/// CPU. With it, a workflow of any depth completes on workers of
/// concurrency 1: each level waits without holding the slot the next level
/// needs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use routine_core::slot::SlotLease;
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
    slots: Arc<Semaphore>,
    state: Mutex<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    held: Option<OwnedSemaphorePermit>,
    /// Dispatched calls the routine waits on now.
    waits: usize,
}

impl SlotLease {
    /// A lease of `held`, one of `slots`.
    pub fn new(slots: Arc<Semaphore>, held: OwnedSemaphorePermit) -> SlotLease {
        SlotLease {
            slots,
            state: Mutex::new(LeaseState {
                held: Some(held),
                waits: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
        let Ok(permit) = Arc::clone(&lease.slots).acquire_owned().await else {
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
