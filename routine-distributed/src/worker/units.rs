//! A worker's units of gangs: it reads its unit stream, runs the units its
//! starts name (each in one of its slots), delivers the messages that
//! arrive for them, and tells each gang's coordinator how its units ended.
//!
//! ```text
//! {ns}:units:{worker} ─XREAD─▶ start    ─▶ a unit job: slot, serve_unit, notice to the coordinator
//!                              message  ─▶ the gang's inbox here
//!                              returned ─▶ the gang's inbox here (a peer sends no more)
//!                              end      ─▶ the gang's units here dropped
//! a unit's message ─▶ its receiver's worker: here, into the inbox; else XADD to that worker's stream
//! ```
//!
//! A gang whose reservations are gone (its coordinator died, or ended the
//! attempt without being heard) has its units dropped at the next check.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use routine_core::slot::SlotLease;
use routine_core::unit::{serve_unit, Inbox, Mailbox, Posting, UnitEnd, UnitFailure, UnitStart};
use routine_core::Engine;

use super::Worker;
use crate::blobs::{put_parcel, take_parcel};
use crate::broker::{member, Broker, Part, UnitEntry, UnitNotice, UnitOrder};

/// Messages (and rank 0's output) larger than this travel through the
/// shared store, as large arguments do.
const BY_REFERENCE_OVER: usize = 1024 * 1024;

/// How often the worker checks that the gangs it runs units of are still
/// reserved.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The gangs this worker runs units of, by attempt.
#[derive(Default)]
pub(super) struct Hosted {
    gangs: RefCell<HashMap<String, GangHere>>,
}

/// One gang's units on this worker.
struct GangHere {
    mailbox: Arc<Parcels>,
    /// Its units running here, by rank.
    running: HashMap<usize, AbortHandle>,
}

impl Hosted {
    /// Drops every unit of `gang` here.
    fn drop_gang(&self, gang: &str) -> usize {
        let Some(here) = self.gangs.borrow_mut().remove(gang) else {
            return 0;
        };
        for unit in here.running.values() {
            unit.abort();
        }
        here.running.len()
    }

    /// Drops every unit here: the worker stops.
    pub(super) fn drop_all(&self) {
        for (_, here) in self.gangs.borrow_mut().drain() {
            for unit in here.running.values() {
                unit.abort();
            }
        }
    }

    fn finished(&self, gang: &str, rank: usize) {
        // Dropped by `drop_gang`, which holds the map: nothing to do.
        let Ok(mut gangs) = self.gangs.try_borrow_mut() else {
            return;
        };
        if let Some(here) = gangs.get_mut(gang) {
            here.running.remove(&rank);
            if here.running.is_empty() {
                gangs.remove(gang);
            }
        }
    }

    /// The reservations of the units running here, by gang.
    fn members(&self, worker: &str) -> Vec<(String, Vec<String>)> {
        self.gangs
            .borrow()
            .iter()
            .map(|(gang, here)| {
                let members = here
                    .running
                    .keys()
                    .map(|&r| member(worker, gang, r))
                    .collect();
                (gang.clone(), members)
            })
            .collect()
    }
}

impl Worker {
    /// Reads this worker's unit stream until the worker stops.
    pub(super) async fn host_units(self: Rc<Self>) {
        const BLOCK: Duration = Duration::from_millis(500);
        let mut pause = Duration::from_millis(100);
        let mut reader = None;
        let mut last_check = Instant::now();
        loop {
            let reading = match &mut reader {
                Some(reader) => reader,
                None => match self.broker.unit_reader(&self.id, BLOCK).await {
                    Ok(opened) => reader.insert(opened),
                    Err(e) => {
                        tracing::warn!(worker = %self.id, error = %e, "cannot read the unit stream yet");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            match reading.read().await {
                Ok(entries) => {
                    pause = Duration::from_millis(100);
                    let mut read = Vec::with_capacity(entries.len());
                    for (id, entry) in entries {
                        match entry {
                            Some(entry) => self.unit_entry(entry).await,
                            None => {
                                tracing::warn!(worker = %self.id, entry = %id, "ignoring a malformed entry of the unit stream")
                            }
                        }
                        read.push(id);
                    }
                    // Handled first, deleted after: off the units' path.
                    reading.tidy(read);
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "reading the unit stream failed; reconnecting");
                    tokio::time::sleep(pause).await;
                    if let Err(e) = reading.reconnect().await {
                        tracing::debug!(worker = %self.id, error = %e, "cannot reconnect yet");
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
            if last_check.elapsed() >= CHECK_EVERY {
                last_check = Instant::now();
                self.drop_orphans().await;
            }
        }
    }

    async fn unit_entry(self: &Rc<Self>, entry: UnitEntry) {
        match entry {
            UnitEntry::Start(order) => self.start_unit(order),
            UnitEntry::Message {
                gang,
                from,
                to,
                key,
                body,
            } => {
                let Some(mailbox) = self.gang_mailbox(&gang) else {
                    return; // its units here have ended
                };
                let bytes = match body {
                    Part::Inline(bytes) => bytes,
                    Part::Stored(address) => {
                        // Read here, in order: a later message from the same
                        // sender never overtakes it.
                        match take_parcel(self.engine.store(), &gang, &address).await {
                            Ok(bytes) => bytes,
                            Err(e) => {
                                tracing::error!(worker = %self.id, gang = %gang, error = %e,
                                    "a large message is lost; the units of its gang here are dropped");
                                self.hosted.drop_gang(&gang);
                                return;
                            }
                        }
                    }
                };
                mailbox.inbox.deliver(from, to, &key, bytes);
            }
            UnitEntry::Returned { gang, rank } => {
                if let Some(mailbox) = self.gang_mailbox(&gang) {
                    mailbox.inbox.returned(rank);
                }
            }
            UnitEntry::End { gang } => {
                let dropped = self.hosted.drop_gang(&gang);
                if dropped > 0 {
                    tracing::info!(worker = %self.id, gang = %gang, units = dropped, "the gang's attempt ended; its units here are dropped");
                }
            }
        }
    }

    fn gang_mailbox(&self, gang: &str) -> Option<Arc<Parcels>> {
        self.hosted
            .gangs
            .borrow()
            .get(gang)
            .map(|here| Arc::clone(&here.mailbox))
    }

    /// Starts one unit in a job of its own.
    fn start_unit(self: &Rc<Self>, order: UnitOrder) {
        let mailbox = self.gang_mailbox(&order.gang).unwrap_or_else(|| {
            Arc::new(Parcels {
                gang: order.gang.clone(),
                here: self.id.clone(),
                workers: order.workers.clone(),
                inbox: Inbox::new(order.count),
                broker: self.broker.clone(),
                engine: self.engine.clone(),
            })
        });
        let (gang, rank) = (order.gang.clone(), order.rank);
        let job = tokio::task::spawn_local(Rc::clone(self).run_unit(order, Arc::clone(&mailbox)));
        let mut gangs = self.hosted.gangs.borrow_mut();
        let here = gangs.entry(gang).or_insert_with(|| GangHere {
            mailbox,
            running: HashMap::new(),
        });
        here.running.insert(rank, job.abort_handle());
    }

    /// Runs one unit and tells its coordinator how it ended.
    async fn run_unit(self: Rc<Self>, order: UnitOrder, mailbox: Arc<Parcels>) {
        let label = format!(
            "{}:{} (unit {} of {})",
            order.task, order.version, order.rank, order.count
        );
        let _shown = Shown::unit(&self, &order, label.clone());
        let started = Instant::now();
        let outcome = self.unit_outcome(&order, mailbox).await;
        let took = started.elapsed();
        let (ended, error, output) = match outcome {
            Ok(output) => (UnitEnd::Returned, None, output),
            Err(UnitFailure { ended, message }) => {
                tracing::warn!(worker = %self.id, unit = %label, error = %message, "unit failed");
                (ended, Some(message), None)
            }
        };
        let output = match output {
            Some(bytes) if bytes.len() > BY_REFERENCE_OVER => {
                match put_parcel(self.engine.store(), &order.gang, bytes).await {
                    Ok(address) => Some(Part::Stored(address)),
                    Err(e) => {
                        let notice = UnitNotice {
                            gang: order.gang.clone(),
                            rank: order.rank,
                            worker: self.id.clone(),
                            ended: UnitEnd::Returned,
                            error: Some(format!(
                                "its output cannot be put in the shared store: {e}"
                            )),
                            output: None,
                            took,
                        };
                        self.notify(&order, &notice).await;
                        return;
                    }
                }
            }
            Some(bytes) => Some(Part::Inline(bytes)),
            None => None,
        };
        let notice = UnitNotice {
            gang: order.gang.clone(),
            rank: order.rank,
            worker: self.id.clone(),
            ended,
            error,
            output,
            took,
        };
        self.notify(&order, &notice).await;
    }

    async fn notify(&self, order: &UnitOrder, notice: &UnitNotice) {
        if let Err(e) = self.broker.send_unit_notice(&order.reply_to, notice).await {
            tracing::error!(worker = %self.id, gang = %order.gang, error = %e,
                "cannot tell a gang's caller how a unit ended (the broker was retried); the call waits until its timeout, if it has one");
        }
    }

    async fn unit_outcome(
        &self,
        order: &UnitOrder,
        mailbox: Arc<Parcels>,
    ) -> Result<Option<Vec<u8>>, UnitFailure> {
        let dropped = |message: String| UnitFailure {
            ended: UnitEnd::Dropped,
            message,
        };
        let stream = self.broker.work_stream(&order.task, &order.version);
        let Some(task) = self.streams.get(&stream).copied() else {
            return Err(dropped(format!(
                "this worker does not serve `{}:{}`",
                order.task, order.version
            )));
        };
        let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
            return Err(dropped("the worker is stopping".to_owned()));
        };
        let lease = Arc::new(SlotLease::new(Arc::clone(&self.slots), slot));
        let input = match &order.input {
            None => None,
            Some(Part::Inline(bytes)) => Some(bytes.clone()),
            Some(Part::Stored(address)) => Some(
                self.blobs
                    .fetch(self.engine.store(), address)
                    .await
                    .map_err(dropped)?,
            ),
        };
        let start = UnitStart {
            rank: order.rank,
            count: order.count,
            input,
            mailbox,
            run: order.run,
            call: order.call,
            lease: Some(lease),
        };
        serve_unit(&self.engine, task, start).await
    }

    /// Drops the units of gangs whose reservations are gone.
    async fn drop_orphans(&self) {
        for (gang, members) in self.hosted.members(&self.id) {
            match self.broker.gang_held(&members).await {
                Ok(held) if !held.iter().any(|&h| h) && !held.is_empty() => {
                    let dropped = self.hosted.drop_gang(&gang);
                    tracing::warn!(worker = %self.id, gang = %gang, units = dropped,
                        "the gang's reservations are gone (its caller died?); its units here are dropped");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(worker = %self.id, error = %e, "cannot check a gang's reservations")
                }
            }
        }
    }
}

/// A unit running here, shown in the worker's heartbeat and counted in its
/// gang's units here until it ends, however it ends (returned, failed, or
/// dropped with its gang).
struct Shown {
    worker: Rc<Worker>,
    gang: String,
    rank: usize,
}

impl Shown {
    fn unit(worker: &Rc<Worker>, order: &UnitOrder, label: String) -> Shown {
        worker.pulse.unit_started(&order.gang, order.rank, label);
        Shown {
            worker: Rc::clone(worker),
            gang: order.gang.clone(),
            rank: order.rank,
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.worker.pulse.unit_finished(&self.gang, self.rank);
        self.worker.hosted.finished(&self.gang, self.rank);
    }
}

/// The mailbox of a gang's units on this worker: a message for a unit here
/// goes into the inbox; for a unit elsewhere, to that worker's unit stream
/// (through the shared store when large).
struct Parcels {
    gang: String,
    here: String,
    /// The worker of each rank.
    workers: Vec<String>,
    inbox: Inbox,
    broker: Broker,
    /// Its store is the shared one.
    engine: Engine,
}

impl Mailbox for Parcels {
    fn post<'a>(&'a self, from: usize, to: usize, key: &'a str, bytes: Vec<u8>) -> Posting<'a> {
        let Some(worker) = self.workers.get(to) else {
            return Box::pin(std::future::ready(Err(format!("no unit has rank {to}"))));
        };
        if *worker == self.here {
            self.inbox.deliver(from, to, key, bytes);
            return Box::pin(std::future::ready(Ok(())));
        }
        Box::pin(async move {
            let body = match bytes.len() > BY_REFERENCE_OVER {
                true => Part::Stored(
                    put_parcel(self.engine.store(), &self.gang, bytes)
                        .await
                        .map_err(|e| format!("cannot put it in the shared store: {e}"))?,
                ),
                false => Part::Inline(bytes),
            };
            self.broker
                .post_message(worker, &self.gang, (from, to), key, &body)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Told off the unit's path: every message the unit sent is in its
    /// receiver's stream already (each send was awaited), so the notice
    /// still arrives after them.
    fn returned(&self, rank: usize) -> Posting<'_> {
        self.inbox.returned(rank);
        let mut elsewhere: Vec<String> = (self.workers.iter())
            .filter(|w| **w != self.here)
            .cloned()
            .collect();
        elsewhere.sort_unstable();
        elsewhere.dedup();
        if !elsewhere.is_empty() {
            let (broker, gang) = (self.broker.clone(), self.gang.clone());
            tokio::spawn(async move {
                let to: Vec<&str> = elsewhere.iter().map(String::as_str).collect();
                if let Err(e) = broker.post_returned(&to, &gang, rank).await {
                    tracing::warn!(gang = %gang, rank, error = %e,
                        "cannot tell a gang's other units that one returned; a unit waiting for its messages waits until the attempt ends");
                }
            });
        }
        Box::pin(std::future::ready(Ok(())))
    }
}
