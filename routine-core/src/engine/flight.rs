//! Single-flight: identical calls in flight within one engine run the body
//! once.
//!
//! The first caller of a key becomes its *leader*; later callers *follow*:
//! they wait until the leader is gone, however it went (result stored, `Err`,
//! panic, or its future dropped), then start over with a fresh store lookup.
//! A follower therefore never hangs, and never receives a value that was not
//! stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

use crate::key::{Key, KeyMap};

#[derive(Default)]
pub(crate) struct Flights {
    // The receiver is cloned by followers; it reports a change when the
    // leader drops its sender.
    table: Mutex<KeyMap<watch::Receiver<()>>>,
    // Counts finished flights, so a new leader can tell whether anything
    // could have been stored since its own lookup missed.
    finished: AtomicU64,
}

pub(crate) enum Flight<'a> {
    Lead(Leader<'a>),
    Follow(watch::Receiver<()>),
}

impl Flights {
    pub(crate) fn finished(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    pub(crate) fn join(&self, key: Key) -> Flight<'_> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = table.get(&key) {
            return Flight::Follow(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        table.insert(key, rx);
        Flight::Lead(Leader {
            flights: self,
            key,
            _done: tx,
        })
    }
}

/// Waits until the leader of a flight is gone.
pub(crate) async fn landed(mut rx: watch::Receiver<()>) {
    // The leader never sends; `changed` fails once its sender is dropped.
    while rx.changed().await.is_ok() {}
}

/// Held by the caller that runs the body; dropping it lands the flight.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Key,
    _done: watch::Sender<()>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut table = self
            .flights
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.remove(&self.key);
        self.flights.finished.fetch_add(1, Ordering::Release);
        // `_done` drops after this body, waking the followers.
    }
}
