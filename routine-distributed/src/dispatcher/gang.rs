//! The coordinator of a gang: the caller's side of a multi-unit call whose
//! units run on workers' slots.
//!
//! ```text
//! run_gang ─▶ reserve slots + send starts (one script; wait while too few are free)
//!          ─▶ follow: unit notices on this engine's reply stream, renewals, workers' liveness
//!          ─▶ every unit returned: rank 0's output ─▶ the call's result
//!             a unit failed: the attempt ends, the call fails naming rank and worker
//!             a worker died: the attempt ends, a new one starts (a new gang id)
//! ```

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use routine_core::dispatch::{GangOutcome, GangRequest};
use routine_core::unit::{UnitEnd, UnitReport};

use super::Shared;
use crate::blobs::take_parcel;
use crate::broker::{
    member, unique_name, waiting_member, GangStart, Part, Reservation, UnitNotice,
};

/// How long a gang's reservations stay without renewal: a coordinator
/// that dies frees its slots this long after its last renewal, and its
/// units are dropped by their workers soon after.
pub const GANG_HOLD: Duration = Duration::from_secs(10);

/// Attempts of one call that a worker's death may end before the call
/// fails: as many as deliveries of a request that kills its workers.
const ATTEMPTS_LOST_TO_DEATHS: u32 = 3;

/// How often the coordinator checks that its units' workers are alive.
const LIVENESS_EVERY: Duration = Duration::from_millis(500);

/// Workers and how many slots each has.
pub(super) type Slots = Vec<(String, u32)>;

/// How an attempt ended.
enum Followed {
    Completed(Vec<u8>),
    Failed(String),
    WorkerDied(String),
}

impl Shared {
    pub(super) async fn run_gang(&self, request: GangRequest) -> GangOutcome {
        let task = request.task;
        let input = match self.by_reference_one(request.input).await {
            Ok(input) => input,
            Err(e) => {
                return GangOutcome::Failed {
                    message: format!(
                        "the input of `{}` cannot be put in the shared store: {e}",
                        task.id()
                    ),
                    units: Vec::new(),
                }
            }
        };
        let mut lost = 0;
        loop {
            let gang = unique_name();
            let (tx, rx) = mpsc::unbounded_channel();
            self.gangs().insert(gang.clone(), tx);
            let mut attempt = Attempt {
                shared: self,
                gang,
                waiting: String::new(),
                members: Vec::new(),
                workers: Vec::new(),
                reports: Vec::new(),
                ended: false,
                completed: false,
            };
            let start = GangStart {
                gang: &attempt.gang,
                task: task.name(),
                version: task.version(),
                least: request.units.min,
                most: request.units.max,
                reply_to: &self.reply_stream,
                run: request.run,
                call: request.call,
                input: &input,
            };
            attempt.waiting = waiting_member(&start);
            let workers = match self.start(&start).await {
                Ok(workers) => workers,
                Err(message) => {
                    // Dropped unended, the attempt ends in the background.
                    drop(attempt);
                    return GangOutcome::Failed {
                        message,
                        units: Vec::new(),
                    };
                }
            };
            attempt.placed(workers);
            let followed = attempt.follow(rx).await;
            let units = attempt.reports();
            match followed {
                // The caller has its answer: the attempt ends (reservations
                // and entries removed, units still running told to stop) in
                // the background.
                Followed::Completed(output) => {
                    attempt.completed = true;
                    drop(attempt);
                    return GangOutcome::Completed { output, units };
                }
                Followed::Failed(message) => {
                    drop(attempt);
                    return GangOutcome::Failed { message, units };
                }
                Followed::WorkerDied(message) => {
                    let dead = attempt.dead().await;
                    attempt.end(&dead).await;
                    lost += 1;
                    if lost >= ATTEMPTS_LOST_TO_DEATHS {
                        return GangOutcome::Failed {
                            message: format!("{message}; gave up after {lost} attempts ended so"),
                            units,
                        };
                    }
                    tracing::warn!(task = %task.id(), attempt = lost + 1, "{message}; starting the gang again");
                }
            }
        }
    }

    /// The input as rank 0's start carries it: in the message, or, when
    /// large, in the shared store.
    async fn by_reference_one(
        &self,
        input: Vec<u8>,
    ) -> Result<Part, routine_core::store::StoreError> {
        match input.len() > self.settings.arguments_by_reference_over {
            true => Ok(Part::Stored(self.uploads.upload(input).await?)),
            false => Ok(Part::Inline(input)),
        }
    }

    /// Reserves the gang's slots and starts its units, waiting while too
    /// few are free, up to the start timeout: the worker of each rank.
    async fn start(&self, start: &GangStart<'_>) -> Result<Vec<String>, String> {
        let task = routine_core::registry::find(start.task, start.version)
            .map(|t| t.id().to_string())
            .unwrap_or_else(|| format!("{}:{}", start.task, start.version));
        let deadline = Instant::now() + self.settings.gang_start_timeout;
        let mut pause = Duration::from_millis(5);
        let mut last = (0u64, 0u64, 0usize);
        let mut fresh = false;
        loop {
            let slots = self.serving(&task, fresh).await;
            fresh = true;
            let total: u64 = slots.iter().map(|(_, n)| u64::from(*n)).sum();
            if !slots.is_empty() {
                match self.broker.start_gang(start, &slots, GANG_HOLD).await {
                    Ok(Reservation::Started(workers)) => return Ok(workers),
                    Ok(Reservation::Short(free)) => last = (free, total, slots.len()),
                    Err(e) => {
                        tracing::warn!(task = %task, error = %e, "cannot reserve slots yet; the gang waits")
                    }
                }
            }
            if Instant::now() >= deadline {
                let (free, total, workers) = last;
                let needs = match start.least == start.most {
                    true => format!("{}", start.least),
                    false => format!("at least {} (at most {})", start.least, start.most),
                };
                return Err(match workers {
                    0 => format!(
                        "the gang of `{task}` could not start: it needs {needs} units, and no worker \
                         serves `{task}` in namespace `{}` (waited {:?}): start workers of a program \
                         with this task",
                        self.broker.namespace(),
                        self.settings.gang_start_timeout
                    ),
                    _ => format!(
                        "the gang of `{task}` could not start within {:?}: it needs {needs} units \
                         started together, and the {workers} worker(s) serving it have {total} \
                         slot(s), {free} of them free for gangs at the last try{}",
                        self.settings.gang_start_timeout,
                        match total < start.least as u64 {
                            true => " (add workers, or raise their concurrency)",
                            false => " (the others held by other gangs)",
                        }
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// The live workers that serve `task`, with their slots: listed at
    /// most once a second (a burst of gangs pays for one listing), or
    /// anew when `fresh`. A worker that died since is found by the
    /// attempt's liveness checks.
    async fn serving(&self, task: &str, fresh: bool) -> Slots {
        const FRESH: Duration = Duration::from_secs(1);
        if !fresh {
            let known = self
                .gang_workers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, workers)) = known.get(task) {
                if at.elapsed() < FRESH {
                    return workers.clone();
                }
            }
        }
        let serving: Slots = match self.broker.workers().await {
            Ok(workers) => workers
                .into_iter()
                .filter(|w| {
                    w.status != crate::broker::WorkerStatus::Terminating
                        && w.routines.iter().any(|r| r == task)
                })
                .map(|w| (w.id, w.slots))
                .collect(),
            Err(e) => {
                tracing::warn!(task = %task, error = %e, "cannot list the workers yet; the gang waits");
                return Vec::new();
            }
        };
        self.gang_workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(task.to_owned(), (Instant::now(), serving.clone()));
        serving
    }

    fn gangs(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, mpsc::UnboundedSender<UnitNotice>>,
    > {
        self.gangs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a unit's notice to the attempt that waits for it (none: an
    /// attempt that ended; dropped).
    pub(super) fn unit_notice(&self, notice: UnitNotice) {
        if let Some(waiting) = self.gangs().get(&notice.gang) {
            let _ = waiting.send(notice);
        }
    }
}

/// One attempt of a gang: its reservations and units. Dropped before it
/// ended (its call dropped, or timed out), it ends them in the background.
struct Attempt<'a> {
    shared: &'a Shared,
    gang: String,
    /// Its entry among the gangs waiting for slots.
    waiting: String,
    /// Its reservations, by rank.
    members: Vec<String>,
    /// The worker of each rank.
    workers: Vec<String>,
    /// How each unit ended, by rank, once known.
    reports: Vec<Option<(UnitEnd, Duration)>>,
    ended: bool,
    /// Whether it completed: then every message posted was taken.
    completed: bool,
}

impl Attempt<'_> {
    fn placed(&mut self, workers: Vec<String>) {
        self.members = (workers.iter().enumerate())
            .map(|(rank, worker)| member(worker, &self.gang, rank))
            .collect();
        self.reports = vec![None; workers.len()];
        self.workers = workers;
    }

    fn count(&self) -> usize {
        self.workers.len()
    }

    /// Follows the units until every one returned, one failed, or a
    /// worker running one died.
    async fn follow(&mut self, mut notices: mpsc::UnboundedReceiver<UnitNotice>) -> Followed {
        let shared = self.shared;
        let count = self.count();
        let started = Instant::now();
        let mut output = None;
        let mut last_renewal = Instant::now();
        loop {
            let notice = tokio::select! {
                notice = notices.recv() => notice,
                () = tokio::time::sleep(LIVENESS_EVERY) => None,
            };
            if let Some(notice) = notice {
                let rank = notice.rank;
                if rank >= count || self.reports[rank].is_some() {
                    continue;
                }
                self.reports[rank] = Some((notice.ended, notice.took));
                if let Some(error) = notice.error {
                    let how = match notice.ended {
                        UnitEnd::Panicked => "panicked",
                        _ => "failed",
                    };
                    return Followed::Failed(format!(
                        "unit {rank} of {count} {how} on worker {}: {error}",
                        notice.worker
                    ));
                }
                if rank == 0 {
                    match self.output(notice.output).await {
                        Ok(bytes) => output = Some(bytes),
                        Err(message) => return Followed::Failed(message),
                    }
                }
                if self.reports.iter().all(Option::is_some) {
                    return match output.take() {
                        Some(output) => Followed::Completed(output),
                        None => Followed::Failed("unit 0 returned without its output".to_owned()),
                    };
                }
                continue;
            }
            if last_renewal.elapsed() >= GANG_HOLD / 3 {
                last_renewal = Instant::now();
                match shared.broker.renew_gang(&self.members, GANG_HOLD).await {
                    Ok(held) if held < self.members.len() => tracing::warn!(gang = %self.gang,
                        "a gang's reservations lapsed while it ran (a stall longer than their hold?); its workers may drop its units"),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(gang = %self.gang, error = %e, "cannot renew a gang's reservations")
                    }
                }
            }
            let dead = self.dead().await;
            if let Some(worker) = dead.first() {
                let ranks: Vec<String> = (0..count)
                    .filter(|&r| &self.workers[r] == worker && self.reports[r].is_none())
                    .map(|r| r.to_string())
                    .collect();
                if !ranks.is_empty() {
                    return Followed::WorkerDied(format!(
                        "worker {worker}, running unit(s) {} of {count}, died {:.1?} into the attempt",
                        ranks.join(", "),
                        started.elapsed()
                    ));
                }
            }
        }
    }

    /// The workers of units still running that are dead.
    async fn dead(&self) -> Vec<String> {
        let running: Vec<&str> = (0..self.count())
            .filter(|&r| self.reports.get(r).is_some_and(Option::is_none))
            .map(|r| self.workers[r].as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        match self.shared.broker.alive(&running).await {
            Ok(alive) => (running.iter().zip(alive))
                .filter(|(_, alive)| !alive)
                .map(|(worker, _)| (*worker).to_owned())
                .collect(),
            // The broker is away: nothing is known dead.
            Err(_) => Vec::new(),
        }
    }

    /// Rank 0's output, read from the shared store when large.
    async fn output(&self, part: Option<Part>) -> Result<Vec<u8>, String> {
        match part {
            Some(Part::Inline(bytes)) => Ok(bytes),
            Some(Part::Stored(address)) => {
                take_parcel(&**self.shared.uploads.store(), &self.gang, &address).await
            }
            None => Err("unit 0 returned without its output".to_owned()),
        }
    }

    /// The units' reports: how each ended, or dropped.
    fn reports(&self) -> Vec<UnitReport> {
        (self.reports.iter().enumerate())
            .map(|(rank, report)| {
                let (ended, duration) = report.unwrap_or((UnitEnd::Dropped, Duration::ZERO));
                UnitReport {
                    rank,
                    count: self.count(),
                    worker: self.workers[rank].clone(),
                    duration,
                    ended,
                }
            })
            .collect()
    }

    /// Ends the attempt: reservations released, units still running told
    /// to stop, the streams of the `dead` workers deleted.
    async fn end(&mut self, dead: &[String]) {
        self.ended = true;
        self.shared.gangs().remove(&self.gang);
        let dead: Vec<&str> = dead.iter().map(String::as_str).collect();
        if let Err(e) = self
            .shared
            .broker
            .end_gang((&self.gang, &self.waiting), &dead)
            .await
        {
            tracing::warn!(gang = %self.gang, error = %e,
                "cannot end a gang's attempt; its reservations lapse and its units are dropped within {GANG_HOLD:?}");
        }
        // Its units are stopped: what they posted and nobody took goes.
        crate::blobs::sweep_parcels(self.shared.uploads.store(), &self.gang).await;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.shared.gangs().remove(&self.gang);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (broker, gang) = (self.shared.broker.clone(), std::mem::take(&mut self.gang));
        let waiting = std::mem::take(&mut self.waiting);
        let cancelling = std::sync::Arc::clone(&self.shared.cancelling);
        // An attempt that did not complete may leave messages no unit took.
        let store = (!self.completed).then(|| std::sync::Arc::clone(self.shared.uploads.store()));
        cancelling.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        runtime.spawn(async move {
            let ended = broker.end_gang((&gang, &waiting), &[]);
            if let Err(e) = ended.await {
                tracing::warn!(gang = %gang, error = %e,
                    "cannot stop a dropped gang's units; their workers drop them within {GANG_HOLD:?}");
            }
            if let Some(store) = store {
                crate::blobs::sweep_parcels(&store, &gang).await;
            }
            cancelling.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        });
    }
}
