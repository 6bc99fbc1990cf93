//! The worker: a process of the user's program that serves the routines it
//! links.
//!
//! It joins the consumer group of the work stream of every routine it serves
//! (found in the registry), so it only ever receives requests it can run.
//! Each request runs through the worker's own engine (lookups, single-flight
//! and storing as usual, in the shared store), then the worker replies and
//! acknowledges the message. Meanwhile:
//!
//! - a heartbeat records its status (`INITIALIZING`, `IDLE`, `WORKING`,
//!   `HANGING`, `TERMINATING`), current routine and last-seen time;
//! - messages it is running are re-claimed periodically, so a long task keeps
//!   them; messages whose worker died (idle longer than `claim_idle`) are
//!   claimed by another worker; one delivered more than `max_deliveries`
//!   times goes to the dead-letter stream and its caller gets an error;
//! - SIGTERM or Ctrl-C stops intake; running routines get `shutdown_grace`
//!   to finish, and whatever is left unacknowledged is picked up by another
//!   worker.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet, LocalSet};

mod units;

use crate::blobs::BlobCache;
use crate::broker::{
    unique_name, Broker, BrokerError, Delivery, Failure, Heartbeat, Part, Reply, Request,
    WorkerStatus,
};
use routine_core::blocking::local_set_thread;
use routine_core::invoke::PartOf;
use routine_core::registry::{self, TaskSpec};
use routine_core::slot::SlotLease;
use routine_core::Engine;
use routine_core::RoutineId;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Routines run at once.
    pub concurrency: usize,
    /// Time between heartbeats; a worker silent for three of them is gone.
    pub heartbeat: Duration,
    /// The work of a worker whose heartbeat expired (three missed beats)
    /// is taken over within about one more beat. As a fallback, for work
    /// whose worker is unknown, a message not re-claimed for this long is
    /// claimed by another worker. Running messages are re-claimed every
    /// third of it, however long they run.
    pub claim_idle: Duration,
    /// Deliveries after which a message goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// How long running routines may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Results whose stored entry is at most this many bytes travel back
    /// with the reply, so that the caller need not read the store (two
    /// store requests per fresh call instead of four); 0 sends none.
    pub inline_result_max: usize,
    /// Only these routines, if set (by default every registered task).
    pub routines: Option<Vec<RoutineId>>,
    /// The folder where the workers of this machine keep large arguments
    /// read from the shared store (see
    /// [`DispatchSettings::arguments_by_reference_over`](crate::DispatchSettings));
    /// by default [`machine_cache_folder`](crate::machine_cache_folder).
    pub blob_cache: std::path::PathBuf,
    /// The bound of that folder, in bytes; the least recently used go
    /// first.
    pub blob_cache_max: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 4,
            heartbeat: Duration::from_secs(2),
            claim_idle: Duration::from_secs(30),
            max_deliveries: 3,
            shutdown_grace: Duration::from_secs(30),
            inline_result_max: 256 * 1024,
            blob_cache: crate::machine_cache_folder(),
            blob_cache_max: crate::MACHINE_CACHE_MAX,
            routines: None,
        }
    }
}

/// A worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The engine has no broker (build it with [`connect`](crate::connect),
    /// or give its builder a [`RedisDispatcher`](crate::RedisDispatcher)).
    #[error("the engine has no broker: a worker needs one (build it with routine::distributed::connect)")]
    NoBroker,
    /// No registered task matches the configured routines.
    #[error("this program serves no routine (registered: {0})")]
    NothingToServe(String),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Serves routines until SIGTERM or Ctrl-C (or until `stop` resolves).
///
/// The returned future is not `Send`: await it on the thread that runs your
/// `main` (the routines run on a `LocalSet`).
pub async fn serve(
    engine: Engine,
    config: WorkerConfig,
    stop: impl Future<Output = ()> + 'static,
) -> Result<(), WorkerError> {
    LocalSet::new()
        .run_until(serve_local(engine, config, stop))
        .await
}

/// Serves until the process is asked to terminate (SIGTERM or Ctrl-C).
pub async fn serve_until_signalled(
    engine: Engine,
    config: WorkerConfig,
) -> Result<(), WorkerError> {
    serve(engine, config, terminate_signal()).await
}

async fn terminate_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

struct Worker {
    id: String,
    engine: Engine,
    broker: Broker,
    config: WorkerConfig,
    /// Work stream name -> the task it carries.
    streams: HashMap<String, &'static TaskSpec>,
    /// Its heartbeat and the claims on what it runs.
    pulse: Arc<Pulse>,
    /// Large arguments read from the shared store, kept for this machine.
    blobs: Arc<BlobCache>,
    /// When the claim-idle fallback last ran.
    last_fallback: std::cell::Cell<std::time::Instant>,
    /// Its `concurrency` slots: each request runs in one, given back while
    /// its routine waits on dispatched calls; each unit of a gang too.
    slots: Arc<Semaphore>,
    /// The units of gangs it runs.
    hosted: units::Hosted,
}

/// What keeps a worker visibly alive: its heartbeat and the claims on what
/// it runs. It runs on the runtime's threads, not on the worker's own, so
/// that a routine keeping that thread busy (decoding a large argument, a
/// body that does not yield) never makes a live worker look dead.
struct Pulse {
    id: String,
    broker: Broker,
    engine: Engine,
    heartbeat: Duration,
    claim_idle: Duration,
    /// The routine IDs it serves.
    serves: Vec<String>,
    blobs: Arc<BlobCache>,
    /// Its slots, for gangs' reservations.
    slots: u32,
    state: Mutex<PulseState>,
}

struct PulseState {
    /// `Initializing` or `Terminating` as set; otherwise derived at each
    /// beat from what runs.
    phase: WorkerStatus,
    /// What is running, by message id.
    running: HashMap<String, Running>,
    /// The units of gangs running, by gang and rank: what they run.
    units: HashMap<(String, usize), String>,
}

/// A request the worker runs.
struct Running {
    stream: String,
    routine: String,
    /// Its request id: what a caller's cancellation names.
    request: String,
    /// Drops the job running it.
    abort: AbortHandle,
}

async fn serve_local(
    engine: Engine,
    config: WorkerConfig,
    stop: impl Future<Output = ()> + 'static,
) -> Result<(), WorkerError> {
    let _local_set = local_set_thread();
    let broker = crate::broker_of(&engine).ok_or(WorkerError::NoBroker)?;
    let tasks: Vec<&'static TaskSpec> = registry::tasks()
        .filter(|t| {
            config
                .routines
                .as_ref()
                .is_none_or(|only| only.contains(&t.id()))
        })
        .collect();
    if tasks.is_empty() {
        let registered: Vec<String> = registry::tasks().map(|t| t.id().to_string()).collect();
        return Err(WorkerError::NothingToServe(registered.join(", ")));
    }
    let streams: HashMap<String, &'static TaskSpec> = tasks
        .iter()
        .map(|t| (broker.work_stream(t.name(), t.version()), *t))
        .collect();
    let blobs = Arc::new(BlobCache::open(&config.blob_cache, config.blob_cache_max));
    let id = unique_name();
    let pulse = Arc::new(Pulse {
        id: id.clone(),
        broker: broker.clone(),
        engine: engine.clone(),
        heartbeat: config.heartbeat,
        claim_idle: config.claim_idle,
        serves: streams.values().map(|t| t.id().to_string()).collect(),
        blobs: Arc::clone(&blobs),
        slots: u32::try_from(config.concurrency.max(1)).unwrap_or(u32::MAX),
        state: Mutex::new(PulseState {
            phase: WorkerStatus::Initializing,
            running: HashMap::new(),
            units: HashMap::new(),
        }),
    });
    let config_concurrency = config.concurrency.max(1);
    let worker = Rc::new(Worker {
        id,
        engine,
        broker,
        config,
        streams,
        pulse,
        blobs,
        last_fallback: std::cell::Cell::new(std::time::Instant::now()),
        slots: Arc::new(Semaphore::new(config_concurrency)),
        hosted: units::Hosted::default(),
    });
    worker.pulse.heartbeat().await?;
    worker.join_groups().await?;
    tracing::info!(worker = %worker.id, routines = worker.streams.len(), "worker ready");
    worker.pulse.set_phase(WorkerStatus::Idle);
    worker.pulse.heartbeat().await?;

    let beating = tokio::spawn(Arc::clone(&worker.pulse).beat());
    let claiming = tokio::spawn(Arc::clone(&worker.pulse).keep_claims());
    let cancelling = tokio::task::spawn_local(Rc::clone(&worker).follow_cancellations());
    let hosting = tokio::task::spawn_local(Rc::clone(&worker).host_units());
    let mut jobs: JoinSet<()> = JoinSet::new();
    let result = worker.intake(&mut jobs, stop).await;

    // A broker that is gone must not hold the exit past the grace: each
    // goodbye gets a moment, then the worker leaves without it (its
    // heartbeat expires on its own).
    const GOODBYE: Duration = Duration::from_secs(1);
    worker.pulse.set_phase(WorkerStatus::Terminating);
    let _ = tokio::time::timeout(GOODBYE, worker.pulse.heartbeat()).await;
    tracing::info!(worker = %worker.id, running = jobs.len(), "worker stopping");
    let _ = tokio::time::timeout(worker.config.shutdown_grace, async {
        while jobs.join_next().await.is_some() {}
    })
    .await;
    // Whatever is still running is abandoned unacknowledged: another worker
    // claims it once it has been idle for `claim_idle`.
    jobs.abort_all();
    hosting.abort();
    worker.hosted.drop_all();
    beating.abort();
    claiming.abort();
    cancelling.abort();
    let _ = tokio::time::timeout(GOODBYE, worker.broker.leave(&worker.id)).await;
    result
}

impl Worker {
    /// Joins the consumer group of every served stream, creating what is
    /// missing (also after the broker lost its data in a restart).
    async fn join_groups(&self) -> Result<(), WorkerError> {
        for stream in self.streams.keys() {
            self.broker.join_group(stream).await?;
        }
        Ok(())
    }

    /// Reads requests until `stop`, running up to `concurrency` at once.
    async fn intake(
        self: &Rc<Self>,
        jobs: &mut JoinSet<()>,
        stop: impl Future<Output = ()> + 'static,
    ) -> Result<(), WorkerError> {
        const BLOCK: Duration = Duration::from_millis(500);
        let streams: Vec<String> = self.streams.keys().cloned().collect();
        let mut reader = self.broker.work_reader(&self.id, streams, BLOCK).await?;
        // A read handed to Redis is never abandoned: messages it delivers
        // would sit, unseen, in this worker's pending list until another
        // worker claimed them. So `stop` only sets a flag that the loop
        // checks between reads.
        let (stopped_tx, mut stopped) = tokio::sync::watch::channel(false);
        let watcher = tokio::task::spawn_local(async move {
            stop.await;
            let _ = stopped_tx.send(true);
        });
        let mut last_reclaim = tokio::time::Instant::now();
        let result = loop {
            while let Some(done) = jobs.try_join_next() {
                match done {
                    // Said when it was cancelled, naming the request.
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => {
                        tracing::error!(error = %e, "a worker job panicked outside its routine")
                    }
                    Ok(()) => {}
                }
            }
            if *stopped.borrow() {
                break Ok(());
            }
            // Free slots: neither running nor taken again by a routine
            // whose dispatched calls were answered.
            let free = self.slots.available_permits();
            if free == 0 {
                // Units of gangs hold slots too, outside `jobs`: with no
                // job, only a freed slot (or a stop) goes on.
                let job_ended = async {
                    match jobs.is_empty() {
                        true => std::future::pending().await,
                        false => jobs.join_next().await,
                    }
                };
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = job_ended => {}
                    _ = self.slots.acquire() => {}
                }
                continue;
            }
            if last_reclaim.elapsed() >= self.reclaim_every() {
                last_reclaim = tokio::time::Instant::now();
                // A broker that is away can hold these commands up; a
                // stop does not wait for them (what was claimed and not
                // started is claimed again by another worker).
                tokio::select! {
                    _ = stopped.changed() => {}
                    claimed = self.reclaim(free) => {
                        for delivery in claimed {
                            self.start(jobs, delivery, true);
                        }
                    }
                }
                continue;
            }
            match reader.read(free).await {
                Ok(deliveries) => {
                    for delivery in deliveries {
                        self.start(jobs, delivery, false);
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "reading work failed; reconnecting");
                    let reconnect = async {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if let Err(e) = reader.reconnect().await {
                            tracing::warn!(worker = %self.id, error = %e, "cannot reconnect yet")
                        }
                        // A broker restarted without its data has lost the
                        // groups: join them again.
                        if let Err(e) = self.join_groups().await {
                            tracing::warn!(worker = %self.id, error = %e, "cannot rejoin the work streams yet");
                        }
                    };
                    // No read is in flight here: a stop may cut this short.
                    tokio::select! {
                        _ = stopped.changed() => {}
                        () = reconnect => {}
                    }
                }
            }
        };
        watcher.abort();
        result
    }

    /// How often claim rounds run: every heartbeat, so that a dead
    /// worker's work resumes within about one beat of its death being
    /// known.
    fn reclaim_every(&self) -> Duration {
        self.config.heartbeat.min(self.config.claim_idle / 2)
    }

    /// Starts one request; `redelivered` when a worker that had it died.
    fn start(self: &Rc<Self>, jobs: &mut JoinSet<()>, delivery: Delivery, redelivered: bool) {
        let worker = Rc::clone(self);
        // Counted as running (its claim kept) from now, also while it waits
        // for its slot: free a moment ago, a slot may have been taken since
        // by a routine going on after its dispatched calls.
        let running = delivery.request.as_ref().map(|request| {
            let id = delivery.id.clone();
            let (stream, routine) = (delivery.stream.clone(), request.routine_id().to_string());
            (id, stream, routine, request.request.clone())
        });
        let abort = jobs.spawn_local(async move { worker.run(delivery, redelivered).await });
        if let Some((id, stream, routine, request)) = running {
            let running = Running {
                stream,
                routine,
                request,
                abort,
            };
            self.pulse.started(id, running);
        }
    }

    /// Drops the routines whose callers gave up on them, as the broker
    /// announces it; follows the announcements again after losing them.
    async fn follow_cancellations(self: Rc<Self>) {
        use futures_util::StreamExt;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.broker.cancellations().await {
                Ok(cancellations) => {
                    pause = Duration::from_millis(100);
                    let mut cancellations = std::pin::pin!(cancellations);
                    while let Some(request) = cancellations.next().await {
                        self.cancel(&request);
                    }
                }
                Err(e) => {
                    tracing::debug!(worker = %self.id, error = %e, "cannot follow cancellations yet")
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Drops the routine `request` runs here, if it does: its body's future
    /// is dropped and its slot freed, and the request is acknowledged (its
    /// caller is gone: nobody would read a reply).
    fn cancel(&self, request: &str) {
        let Some((id, job)) = self.pulse.take_request(request) else {
            return;
        };
        job.abort.abort();
        tracing::info!(worker = %self.id, routine = %job.routine, request, "cancelled by its caller");
        let broker = self.broker.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = broker.finish(&job.stream, &id).await {
                tracing::warn!(error = %e, "cannot acknowledge a cancelled request");
            }
        });
    }

    /// Claims messages whose worker died; dead-letters those that keep
    /// dying. A failure with one stream or message is logged and the round
    /// goes on: one bad message never blocks the recovery of the others.
    async fn reclaim(&self, free: usize) -> Vec<Delivery> {
        // The fallback for work of unknown workers runs at its own, slower
        // pace: the liveness check is what every beat pays for.
        let fallback = self.last_fallback.get().elapsed() >= self.config.claim_idle / 2;
        if fallback {
            self.last_fallback.set(std::time::Instant::now());
        }
        let mut claimed = Vec::new();
        for stream in self.streams.keys() {
            let of_the_dead = self
                .broker
                .claim_from_dead(stream, &self.id, self.config.heartbeat, free)
                .await;
            let abandoned = match of_the_dead {
                Ok(taken) if !taken.is_empty() || !fallback => Ok(taken),
                Ok(_) => {
                    self.broker
                        .claim_abandoned(stream, &self.id, self.config.claim_idle, free)
                        .await
                }
                Err(e) => Err(e),
            };
            let abandoned = match abandoned {
                Ok(abandoned) => abandoned,
                // The broker is away (or restarted empty): the intake's
                // read reconnects and rejoins.
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "cannot claim abandoned work");
                    continue;
                }
            };
            for delivery in abandoned {
                let deliveries = match self.broker.deliveries(stream, &delivery.id).await {
                    Ok(deliveries) => deliveries,
                    Err(e) => {
                        tracing::warn!(worker = %self.id, message = %delivery.id, error = %e,
                            "cannot count the deliveries of a claimed message; running it");
                        0
                    }
                };
                if deliveries > self.config.max_deliveries {
                    if let Err(e) = self.dead_letter(&delivery, deliveries).await {
                        tracing::error!(worker = %self.id, message = %delivery.id, error = %e,
                            "cannot dead-letter a message; the next round tries again");
                    }
                } else {
                    tracing::warn!(worker = %self.id, message = %delivery.id, deliveries,
                        "claimed a message whose worker stopped answering");
                    claimed.push(delivery);
                }
            }
        }
        claimed
    }

    async fn dead_letter(&self, delivery: &Delivery, deliveries: u64) -> Result<(), WorkerError> {
        tracing::error!(worker = %self.id, message = %delivery.id, deliveries,
            "a request was delivered too many times; moving it to the dead-letter stream");
        self.broker.dead_letter(delivery, deliveries).await?;
        if let Some(request) = &delivery.request {
            let reply = Reply {
                request: request.request.clone(),
                outcome: Err(format!(
                    "the request was delivered {deliveries} times and every worker running it died; \
                     it is in the dead-letter stream {}",
                    self.broker.dead_letter_stream()
                )
                .into()),
                worker: self.id.clone(),
            };
            // A reply that cannot be written (its stream poisoned, its
            // caller gone) does not keep the request: it is acknowledged
            // all the same, so that it is dead-lettered once.
            if let Err(e) = self.broker.send_reply(&request.reply_to, &reply).await {
                tracing::warn!(worker = %self.id, message = %delivery.id, error = %e,
                    "cannot tell the caller its request was dead-lettered");
            }
        }
        Ok(self.broker.finish(&delivery.stream, &delivery.id).await?)
    }

    /// Runs one request and answers it.
    async fn run(self: Rc<Self>, delivery: Delivery, redelivered: bool) {
        let Delivery {
            stream,
            id,
            request,
        } = delivery;
        let Some(request) = request else {
            tracing::error!(worker = %self.id, message = %id, "dropping a malformed request");
            let _ = self.broker.finish(&stream, &id).await;
            return;
        };
        let routine = request.routine_id().to_string();
        let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
            self.pulse.finished(&id);
            return;
        };
        let lease = Arc::new(SlotLease::new(Arc::clone(&self.slots), slot));
        tracing::info!(worker = %self.id, routine = %routine, key = %request.key.short(), "running");
        // A caller keeping a deadline counts it from now. Off the routine's
        // path: it starts at once.
        if request.notify_start {
            let (broker, reply_to) = (self.broker.clone(), request.reply_to.clone());
            let (started, worker) = (request.request.clone(), self.id.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = broker.send_started(&reply_to, &started, &worker).await {
                    tracing::warn!(error = %e, "cannot tell a caller its routine started");
                }
            });
        }

        // The worker's spans of the call join the caller's trace.
        let span = tracing::info_span!("routine.worker.call", routine = %routine, key = %request.key.short());
        if let Some(traceparent) = &request.traceparent {
            crate::trace_context::join(&span, traceparent);
        }
        let outcome =
            tracing::Instrument::instrument(self.execute(&request, redelivered, lease), span).await;
        if let Err(failure) = &outcome {
            tracing::warn!(worker = %self.id, routine = %routine, error = %failure.message, "routine failed");
        }
        let reply = Reply {
            request: request.request.clone(),
            outcome,
            worker: self.id.clone(),
        };
        let replied = self.broker.send_reply(&request.reply_to, &reply).await;
        // The caller has its answer; the message is acknowledged only once
        // the triggers the routine started have ended, so that a worker
        // dying before then leaves it to be redelivered (and the triggers to
        // fire again): at least once per completion.
        self.engine.settle().await;
        if let Err(e) = replied {
            tracing::error!(worker = %self.id, error = %e, "cannot send a reply; the request will be redelivered");
        } else if let Err(e) = self.broker.finish(&stream, &id).await {
            tracing::error!(worker = %self.id, error = %e, "cannot acknowledge a request");
        }
        // The periodic heartbeat reports the new status; a round trip here
        // would sit on every request's path.
        self.pulse.finished(&id);
    }

    /// A request's arguments, encoded one after the other, the large ones
    /// read through this machine's blob cache.
    async fn arguments<'a>(&self, parts: &'a [Part]) -> Result<Cow<'a, [u8]>, String> {
        if let [Part::Inline(bytes)] = parts {
            return Ok(Cow::Borrowed(bytes));
        }
        let mut arguments = Vec::new();
        for part in parts {
            match part {
                Part::Inline(bytes) => arguments.extend_from_slice(bytes),
                Part::Stored(address) => arguments
                    .extend_from_slice(&self.blobs.fetch(self.engine.store(), address).await?),
            }
        }
        Ok(Cow::Owned(arguments))
    }

    /// Runs the routine through this worker's engine: done, with its
    /// stored entry when small enough for the reply; or the failure: a
    /// panic, a timeout, an `Err` (typed when it crosses the wire), or a
    /// result the store refused.
    async fn execute(
        &self,
        request: &Request,
        redelivered: bool,
        lease: Arc<SlotLease>,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let Some(task) = self
            .streams
            .get(&self.broker.work_stream(&request.task, &request.version))
        else {
            return Err(format!("this worker does not serve `{}`", request.routine_id()).into());
        };
        let arguments = self.arguments(&request.arguments).await?;
        let invocation = task
            .invoke(&arguments, false)
            .map_err(|e| format!("cannot decode the arguments of `{}`: {e}", task.id()))?;
        // The routine runs here (it is the one this request started); what
        // it awaits follows the engine's policy.
        // A request from a build before lineage has no run: its call is
        // recorded under a run of its own.
        let part_of = PartOf {
            run: request.run.unwrap_or_default(),
            parent: request.parent,
            key: request.key,
            redelivered,
            lease: Some(lease),
        };
        let answer = invocation.serve(&self.engine, part_of).await;
        let inline = self.config.inline_result_max;
        let error = answer.error;
        answer
            .outcome
            .map_err(|message| Failure { message, error })
            .map(|_| {
                answer
                    .entry
                    .filter(|entry| entry.len() <= inline)
                    .map(|entry| Arc::try_unwrap(entry).unwrap_or_else(|shared| shared.to_vec()))
            })
    }
}

impl Pulse {
    fn state(&self) -> std::sync::MutexGuard<'_, PulseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_phase(&self, phase: WorkerStatus) {
        self.state().phase = phase;
    }

    fn started(&self, id: String, running: Running) {
        self.state().running.insert(id, running);
    }

    /// The running request whose request id is `request`, no longer
    /// counted as running, with its message id.
    fn take_request(&self, request: &str) -> Option<(String, Running)> {
        let mut state = self.state();
        let id = state
            .running
            .iter()
            .find(|(_, running)| running.request == request)?
            .0
            .clone();
        state.running.remove_entry(&id)
    }

    fn finished(&self, id: &str) {
        self.state().running.remove(id);
    }

    fn unit_started(&self, gang: &str, rank: usize, what: String) {
        self.state().units.insert((gang.to_owned(), rank), what);
    }

    fn unit_finished(&self, gang: &str, rank: usize) {
        self.state().units.remove(&(gang.to_owned(), rank));
    }

    /// Records the worker's status in the broker: starting or stopping as
    /// set, otherwise idle, working, or hanging when everything it runs
    /// waits on dispatched sub-routines.
    async fn heartbeat(&self) -> Result<(), WorkerError> {
        let (status, running) = {
            let state = self.state();
            let routines: Vec<&str> = (state.running.values().map(|r| r.routine.as_str()))
                .chain(state.units.values().map(String::as_str))
                .collect();
            let (count, waiting) = (routines.len() as u64, self.engine.dispatch_waiting());
            let status = match (state.phase, count, waiting) {
                (WorkerStatus::Initializing | WorkerStatus::Terminating, _, _) => state.phase,
                (_, 0, _) => WorkerStatus::Idle,
                (_, count, waiting) if waiting >= count => WorkerStatus::Hanging,
                _ => WorkerStatus::Working,
            };
            (status, routines.join(","))
        };
        let beat = Heartbeat {
            worker: &self.id,
            status,
            running,
            serves: self.serves.clone(),
            expiry: self.heartbeat * 3,
            downloads: self.blobs.downloads(),
            waiting_for_slot: self.engine.stats().waiting_for_slot,
            slots: self.slots,
        };
        Ok(self.broker.heartbeat(&beat).await?)
    }

    async fn beat(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.heartbeat).await;
            if let Err(e) = self.heartbeat().await {
                tracing::warn!(worker = %self.id, error = %e, "heartbeat failed");
            }
        }
    }

    /// Re-claims running messages so that no other worker takes them while
    /// they run, however long.
    async fn keep_claims(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.claim_idle / 3).await;
            let running: Vec<(String, String)> = self
                .state()
                .running
                .iter()
                .map(|(id, running)| (running.stream.clone(), id.clone()))
                .collect();
            for (stream, id) in running {
                if let Err(e) = self.broker.keep_claim(&stream, &self.id, &id).await {
                    tracing::warn!(worker = %self.id, error = %e, "cannot keep the claim on a running message");
                }
            }
        }
    }
}
