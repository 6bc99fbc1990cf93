//! Multi-unit tasks: one call, several units running at once, each with a
//! rank, coordinating by messages. The caller sees an ordinary task of the
//! input type; the task's body is the gang of its units.
//!
//! ```text
//! psort(input) ──▶ run_gang ─ local engine ─▶ run_units ──spawn──▶ unit 0: receive_input … send_output
//!                     │                                  ──spawn──▶ unit 1: receive(0, "part") …
//!                     │                       inbox: (from, to, key) → messages, in the order sent
//!                     └─ distributed engine ─▶ Dispatch::run_gang ─▶ units on workers' slots
//!                                              (each worker: serve_unit; messages through the broker)
//! ```
//!
//! The gang is the unit of everything: one key (name, version, input), one
//! stored result (rank 0's output), one attempt (a unit that panics ends
//! every other unit at once, and `retries` run the whole gang again), one
//! cancellation (dropping the call drops every unit). Under a local engine
//! units run as tokio tasks of this process, in the caller's engine scope;
//! under an engine that sends sub-routines to workers, on workers' slots
//! (see `routine-distributed`). Either way their own calls are memoized
//! and recorded as the gang call's sub-calls. Messages are
//! encoded with routine's codec, so that a unit receives what it asks for
//! (a wrong type is an error naming the key), as it would from another
//! process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;

mod gang;

pub use self::gang::{run_gang, run_units, serve_unit, unit_entry};
pub use crate::mailbox::{Inbox, Mailbox, Posting, SenderReturned};
pub use crate::registry::units::{
    RunUnit, UnitEnd, UnitFailure, UnitReport, UnitRunning, UnitStart, Units, UnitsSpec,
};

/// Keys of the collective operations' messages: no user key starts so.
const COLLECTIVE: char = '\u{1}';

/// The call's input and output, as the units of this process hold them
/// (rank 0 receives the one and sends the other).
struct Io<In, Out> {
    input: Mutex<Option<In>>,
    output: Mutex<Option<Out>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The handle of one unit of a multi-unit task: its rank, the number of
/// units, the call's input (rank 0), the call's output (rank 0), and
/// messages to and from the other units.
///
/// Written as a task with `#[routine::task(.., units = N)]` on an `async fn`
/// of one `Unit` (see the `routine` crate's documentation); what the task
/// runs, here by hand:
///
/// ```
/// use routine_core::unit::{run_units, Unit, Units};
///
/// async fn sum(unit: Unit<Vec<u64>, u64>) {
///     let numbers = match unit.rank() {
///         0 => Some(unit.receive_input().await),
///         _ => None,
///     };
///     // Every unit sums a third of the numbers.
///     let all: Vec<u64> = unit.broadcast(0, numbers).await;
///     let mine: u64 = all.iter().skip(unit.rank()).step_by(unit.unit_count()).sum();
///     let total = unit.all_reduce(mine, |a, b| a + b).await;
///     if unit.rank() == 0 {
///         unit.send_output(total);
///     }
/// }
///
/// # #[tokio::main] async fn main() {
/// let total = run_units(Units::between(3, 3), (1..=10).collect(), sum).await;
/// assert_eq!(total, 55);
/// # }
/// ```
pub struct Unit<In, Out> {
    rank: usize,
    count: usize,
    mailbox: Arc<dyn Mailbox>,
    io: Arc<Io<In, Out>>,
    /// Collective operations this unit has begun: the n-th of every unit
    /// meet, as MPI's do, so every unit calls them in the same order.
    collectives: AtomicU64,
}

impl<In, Out> Unit<In, Out> {
    /// This unit's rank, from 0 to [`unit_count`](Unit::unit_count) - 1.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many units run this call.
    pub fn unit_count(&self) -> usize {
        self.count
    }

    /// The call's input. Only rank 0 receives it, once; another rank asking
    /// for it ends the call with an error that says so.
    pub async fn receive_input(&self) -> In {
        if self.rank != 0 {
            panic!(
                "unit {} called receive_input: only rank 0 receives the input (send it on with \
                 `send` or `broadcast`)",
                self.rank
            );
        }
        lock(&self.io.input).take().unwrap_or_else(|| {
            panic!("rank 0 called receive_input twice: it receives the input once")
        })
    }

    /// Sets the call's output: rank 0 does, once. Rank 0 returning
    /// without it, or another rank calling it, ends the call with an error
    /// that says so.
    pub fn send_output(&self, output: Out) {
        if self.rank != 0 {
            panic!(
                "unit {} called send_output: only rank 0 sends the output (send the value to \
                 rank 0 first)",
                self.rank
            );
        }
        let mut slot = lock(&self.io.output);
        if slot.is_some() {
            panic!("rank 0 called send_output twice: a call has one output");
        }
        *slot = Some(output);
    }

    /// Sends `value` to the unit of rank `to` under `key`; it is received
    /// there by [`receive`](Unit::receive) of this rank and key, in the
    /// order sent.
    pub async fn send<T: Serialize + ?Sized>(&self, to: usize, key: &str, value: &T) {
        self.check_rank(to, "send to");
        let mut bytes = Vec::new();
        if let Err(e) = codec::encode_into(&mut bytes, value) {
            panic!("unit {} cannot encode the message `{key}`: {e}", self.rank);
        }
        self.post(to, key, bytes).await;
    }

    async fn post(&self, to: usize, key: &str, bytes: Vec<u8>) {
        if let Err(e) = self.mailbox.post(self.rank, to, key, bytes).await {
            panic!(
                "unit {} cannot send the message `{}` to unit {to}: {e}",
                self.rank,
                printable(key)
            );
        }
    }

    /// The next message the unit of rank `from` sent this unit under
    /// `key`, waiting for it. A message that does not decode as `T`, or a
    /// sender that returned without sending it, ends the call with an
    /// error naming both units and the key.
    pub async fn receive<T: DeserializeOwned>(&self, from: usize, key: &str) -> T {
        self.check_rank(from, "receive from");
        let bytes = self.take(from, key).await;
        codec::decode_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "unit {} received the message `{}` from unit {from}, but it does not decode as {}: {e}",
                self.rank,
                printable(key),
                std::any::type_name::<T>()
            )
        })
    }

    async fn take(&self, from: usize, key: &str) -> Vec<u8> {
        match self.mailbox.inbox().take(from, self.rank, key).await {
            Ok(bytes) => bytes,
            Err(SenderReturned) => panic!(
                "unit {} waits for the message `{}` from unit {from}, which has returned \
                 without sending it",
                self.rank,
                printable(key)
            ),
        }
    }

    /// The messages sent under `key` by each unit of `from`, in that order
    /// (a range of ranks gives them in rank order).
    pub async fn receive_many<T: DeserializeOwned>(
        &self,
        from: impl IntoIterator<Item = usize>,
        key: &str,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for rank in from {
            out.push(self.receive(rank, key).await);
        }
        out
    }

    /// Waits until every unit has reached this barrier.
    pub async fn barrier(&self) {
        let key = self.collective_key("barrier");
        if self.rank == 0 {
            for rank in 1..self.unit_count() {
                self.take(rank, &key).await;
            }
            for rank in 1..self.unit_count() {
                self.post(rank, &key, Vec::new()).await;
            }
        } else {
            self.post(0, &key, Vec::new()).await;
            self.take(0, &key).await;
        }
    }

    /// The value of the unit of rank `root`, to every unit: `root` gives
    /// `Some(value)`, the others anything (`None`).
    pub async fn broadcast<T: Serialize + DeserializeOwned>(
        &self,
        root: usize,
        value: Option<T>,
    ) -> T {
        self.check_rank(root, "broadcast from");
        let key = self.collective_key("broadcast");
        if self.rank != root {
            return self.receive(root, &key).await;
        }
        let value = value
            .unwrap_or_else(|| panic!("unit {root} broadcasts, but gave no value (`Some(value)`)"));
        for rank in (0..self.unit_count()).filter(|&r| r != root) {
            self.send(rank, &key, &value).await;
        }
        value
    }

    /// Every unit's `value`, in rank order, at the unit of rank `root`
    /// (`Some` there, `None` elsewhere).
    pub async fn gather<T: Serialize + DeserializeOwned>(
        &self,
        root: usize,
        value: &T,
    ) -> Option<Vec<T>> {
        self.check_rank(root, "gather at");
        let key = self.collective_key("gather");
        self.send(root, &key, value).await;
        match self.rank == root {
            true => Some(self.receive_many(0..self.unit_count(), &key).await),
            false => None,
        }
    }

    /// Every unit's `value`, in rank order, at every unit.
    pub async fn all_gather<T: Serialize + DeserializeOwned>(&self, value: &T) -> Vec<T> {
        let gathered = self.gather(0, value).await;
        self.broadcast(0, gathered).await
    }

    /// Every unit's `value` combined by `reduce`, in rank order (`reduce`
    /// need not be commutative), at every unit.
    pub async fn all_reduce<T: Serialize + DeserializeOwned>(
        &self,
        value: T,
        reduce: impl Fn(T, T) -> T,
    ) -> T {
        let gathered = self.gather(0, &value).await.map(|values| {
            values
                .into_iter()
                .reduce(&reduce)
                .expect("a gang has at least one unit")
        });
        self.broadcast(0, gathered).await
    }

    fn collective_key(&self, what: &str) -> String {
        let n = self.collectives.fetch_add(1, Ordering::Relaxed);
        format!("{COLLECTIVE}{what}/{n}")
    }

    fn check_rank(&self, rank: usize, what: &str) {
        if rank >= self.unit_count() {
            panic!(
                "unit {} cannot {what} unit {rank}: the ranks are 0 to {}",
                self.rank,
                self.unit_count() - 1
            );
        }
    }
}

/// A key for messages, as people read it: a collective's by its name.
fn printable(key: &str) -> String {
    match key.strip_prefix(COLLECTIVE) {
        Some(collective) => format!("({collective})"),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_arrive_in_order_and_by_key() {
        let output = run_units(
            Units::between(3, 3),
            5u32,
            |unit: Unit<u32, Vec<u32>>| async move {
                match unit.rank() {
                    0 => {
                        let n = unit.receive_input().await;
                        for rank in 1..3 {
                            unit.send(rank, "n", &n).await;
                        }
                        let mut got: Vec<u32> = unit.receive_many(1..3, "double").await;
                        got.extend(unit.receive_many::<u32>(1..3, "triple").await);
                        unit.send_output(got);
                    }
                    rank => {
                        let n: u32 = unit.receive(0, "n").await;
                        // Sent in the other order: received by key.
                        unit.send(0, "triple", &(n * 3 + rank as u32)).await;
                        unit.send(0, "double", &(n * 2 + rank as u32)).await;
                    }
                }
            },
        )
        .await;
        assert_eq!(output, [11, 12, 16, 17]);
    }
}
