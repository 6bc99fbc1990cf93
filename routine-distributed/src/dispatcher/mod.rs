//! Dispatching calls to workers: the caller's side of the broker.
//!
//! A dispatched call first claims its key cluster-wide (`SET NX` on the
//! in-flight key): an identical call already dispatched elsewhere is waited
//! for instead of sent again. The claimant checks that a live worker serves
//! the routine (waiting up to a configurable time for one), sends the
//! request to the routine's work stream, and waits for the worker's reply on
//! this engine's reply stream, read by one listener task per engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use routine_core::dispatch::{
    ClusterSlot, Dispatch, DispatchRequest, Dispatched, Dispatching, GangRequest, RunningGang,
    Settling, TakingSlot,
};
use routine_core::registry::TaskSpec;

use routine_core::arguments::EncodedArguments;
use routine_core::store::{Store, StoreError};

mod gang;

pub use self::gang::GANG_HOLD;

use crate::blobs::Uploads;
use crate::broker::{unique_name, Broker, BrokerError, Notice, Part, Reply, Request};

/// Timing of dispatched calls.
#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    /// How long a call waits for a live worker that serves its routine
    /// before failing.
    pub no_worker_wait: Duration,
    /// How often a waiting call checks on its flight.
    pub poll: Duration,
    /// Expiry of the cluster-wide in-flight claim, renewed while waiting: a
    /// caller that dies releases its claim after this long.
    pub claim_ttl: Duration,
    /// Encoded arguments larger than this many bytes are uploaded to the
    /// shared store once, by content, and the request carries their
    /// address instead: a large dataset passed to many calls crosses the
    /// broker not at all, and reaches each machine once. The same bound
    /// holds for a gang's input.
    pub arguments_by_reference_over: usize,
    /// How long a gang (the units of a multi-unit call) may wait for
    /// enough free slots to start all together before its call fails.
    pub gang_start_timeout: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            no_worker_wait: Duration::from_secs(30),
            poll: Duration::from_millis(100),
            claim_ttl: Duration::from_secs(30),
            arguments_by_reference_over: 1024 * 1024,
            gang_start_timeout: Duration::from_secs(60),
        }
    }
}

/// Sends an engine's calls to workers through a [`Broker`]; give it to
/// [`EngineBuilder::dispatcher`](routine_core::EngineBuilder::dispatcher), or
/// let [`connect`](crate::connect) do it.
pub struct RedisDispatcher {
    shared: Arc<Shared>,
}

/// What the dispatcher shares with its reply listener.
struct Shared {
    broker: Broker,
    settings: DispatchSettings,
    reply_stream: String,
    /// The calls waiting for their reply, by request id.
    pending: Mutex<HashMap<String, Waiter>>,
    /// When a live worker was last seen serving each routine.
    served_at: Mutex<HashMap<String, Instant>>,
    /// Large arguments put in the shared store.
    uploads: Uploads,
    /// Cancellations of dropped calls (and gangs) not yet sent to the
    /// workers.
    cancelling: Arc<AtomicUsize>,
    /// The gangs this engine coordinates, by attempt: where their units'
    /// notices go.
    gangs: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<crate::broker::UnitNotice>>>,
    /// The workers last seen serving each multi-unit task, and when.
    gang_workers: Mutex<HashMap<String, (Instant, gang::Slots)>>,
}

/// A call waiting for its reply.
struct Waiter {
    reply: oneshot::Sender<Reply>,
    /// When a worker started it, and which, for a call that keeps a
    /// deadline.
    started: Option<(Instant, String)>,
}

impl RedisDispatcher {
    /// A dispatcher over `broker`, uploading large arguments to `store`
    /// (the store the workers share); starts its reply listener on the
    /// current tokio runtime, which stops when the dispatcher is dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        broker: Broker,
        settings: DispatchSettings,
        store: Arc<dyn Store>,
    ) -> RedisDispatcher {
        let reply_stream = broker.reply_stream(&unique_name());
        let shared = Arc::new(Shared {
            broker,
            settings,
            reply_stream,
            pending: Mutex::new(HashMap::new()),
            served_at: Mutex::new(HashMap::new()),
            uploads: Uploads::new(store),
            cancelling: Arc::default(),
            gangs: Mutex::default(),
            gang_workers: Mutex::default(),
        });
        tokio::spawn(listen(Arc::downgrade(&shared)));
        RedisDispatcher { shared }
    }

    /// The broker it sends through.
    pub fn broker(&self) -> &Broker {
        &self.shared.broker
    }
}

impl Dispatch for RedisDispatcher {
    fn dispatch(&self, request: DispatchRequest) -> Dispatching<'_> {
        Box::pin(async move {
            self.shared
                .dispatch(request)
                .await
                .unwrap_or_else(|e| Dispatched::Unserved(e.to_string()))
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn take_slot(&self, task: &'static TaskSpec, limit: u32) -> TakingSlot<'_> {
        Box::pin(async move {
            let broker = self.shared.broker.clone();
            let slots = broker.slots_key(task.name(), task.version());
            let holder = unique_name();
            let mut pause = Duration::from_millis(10);
            loop {
                match broker.take_slot(&slots, &holder, limit, SLOT_HOLD).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(task = %task.id(), error = %e,
                        "cannot take a cluster-wide slot yet; the call waits"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            let renewing = {
                let (broker, slots, holder) = (broker.clone(), slots.clone(), holder.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(SLOT_HOLD / 3).await;
                        if let Ok(false) = broker.renew_slot(&slots, &holder, SLOT_HOLD).await {
                            tracing::warn!(task = %task.id(),
                                "a cluster-wide slot lapsed while its body ran (a stall longer than its hold?); the limit may be exceeded");
                        }
                    }
                })
            };
            Some(Box::new(HeldSlot {
                broker,
                slots,
                holder,
                renewing,
            }) as ClusterSlot)
        })
    }

    fn run_gang(&self, gang: GangRequest) -> Option<RunningGang<'_>> {
        Some(Box::pin(self.shared.run_gang(gang)))
    }

    fn settle(&self) -> Settling<'_> {
        let cancelling = Arc::clone(&self.shared.cancelling);
        Box::pin(async move {
            while cancelling.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }
}

impl Shared {
    async fn dispatch(&self, call: DispatchRequest) -> Result<Dispatched, BrokerError> {
        let (task, key) = (call.task, &call.key);
        let inflight = self.broker.inflight_key(key);
        let ttl = self.settings.claim_ttl.as_millis() as u64;
        if let Some(unserved) = self.wait_for_worker(task).await? {
            return Ok(unserved);
        }
        let arguments = match self.by_reference(call.arguments).await {
            Ok(parts) => parts,
            Err(e) => {
                return Ok(Dispatched::Unserved(format!(
                    "a large argument cannot be put in the shared store: {e}"
                )))
            }
        };
        let request = Request {
            request: unique_name(),
            key: *key,
            task: task.name().to_owned(),
            version: task.version().to_owned(),
            arguments,
            reply_to: self.reply_stream.clone(),
            run: call.run,
            parent: call.parent,
            notify_start: call.deadline.is_some(),
            traceparent: crate::trace_context::traceparent(&tracing::Span::current()),
        };
        let (tx, mut rx) = oneshot::channel();
        let waiter = Waiter {
            reply: tx,
            started: None,
        };
        self.pending().insert(request.request.clone(), waiter);
        let claimed = self.broker.claim_and_send(&inflight, ttl, &request).await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                self.forget(&request.request);
                return Err(e);
            }
        };
        if !claimed {
            self.forget(&request.request);
            return self.wait_elsewhere(&inflight).await;
        }
        // From here the request is this call's: dropped unanswered, the
        // call cancels it on the workers.
        let outstanding = Outstanding {
            shared: self,
            request: request.request.clone(),
            inflight: inflight.clone(),
            answered: false,
        };
        let mut unserved_since: Option<Instant> = None;
        // The claim and the workers are checked every third of the claim's
        // life; a deadline, every second.
        let check_every = self.settings.claim_ttl / 3;
        let tick = match call.deadline {
            Some(_) => check_every.min(Duration::from_secs(1)),
            None => check_every,
        };
        let mut last_check = Instant::now();
        let reply = loop {
            tokio::select! {
                reply = &mut rx => match reply {
                    Ok(reply) => break reply,
                    Err(_) => return Ok(Dispatched::Unserved("the reply listener stopped".into())),
                },
                () = tokio::time::sleep(tick) => {
                    if let Some(failed) = self.past_deadline(&request.request, call.deadline) {
                        // Unsettled, `outstanding` cancels the request on
                        // its worker and gives the claim back.
                        return Ok(failed);
                    }
                    if last_check.elapsed() < check_every {
                        continue;
                    }
                    last_check = Instant::now();
                    // Keep the claim while the call is alive. A claim that
                    // is gone means a broker that lost its data, and with
                    // it the request: send it again (a task being pure, a
                    // second run of a request that survived is harmless).
                    if self.broker.renew_claim(&inflight, ttl).await == Some(false) {
                        tracing::warn!(task = %task.id(), key = %key.short(),
                            "the broker lost the claim of a call in flight (restarted without its data?); sending the request again");
                        if !self.broker.claim_and_send(&inflight, ttl, &request).await? {
                            outstanding.settle();
                            self.forget(&request.request);
                            return self.wait_elsewhere(&inflight).await;
                        }
                    }
                    // Give up if every worker that could serve it is gone
                    // for good.
                    if self.broker.served(task).await? {
                        unserved_since = None;
                    } else {
                        let since = *unserved_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > self.settings.no_worker_wait {
                            outstanding.settle();
                            self.forget(&request.request);
                            self.broker.release_claim(inflight);
                            return Ok(Dispatched::Unserved(format!(
                                "no live worker serves `{}` any more (waited {:?})",
                                task.id(), self.settings.no_worker_wait
                            )));
                        }
                    }
                }
            }
        };
        outstanding.settle();
        self.broker.release_claim(inflight);
        Ok(match reply.outcome {
            Ok(entry) => Dispatched::Completed {
                worker: reply.worker,
                entry,
            },
            Err(failure) => Dispatched::Failed {
                worker: reply.worker,
                message: failure.message,
                error: failure.error,
            },
        })
    }

    /// The request's arguments: each one over the threshold uploaded to the
    /// shared store (once per process and content) and sent as its
    /// address; the others in the message.
    async fn by_reference(
        &self,
        arguments: Arc<EncodedArguments>,
    ) -> Result<Vec<Part>, StoreError> {
        let over = self.settings.arguments_by_reference_over;
        if arguments.parts().all(|part| part.len() <= over) {
            let bytes =
                Arc::try_unwrap(arguments).map_or_else(|shared| shared.bytes.clone(), |a| a.bytes);
            return Ok(vec![Part::Inline(bytes)]);
        }
        let mut parts = Vec::new();
        for part in arguments.parts() {
            parts.push(match part.len() > over {
                true => Part::Stored(self.uploads.upload(part.to_vec()).await?),
                false => Part::Inline(part.to_vec()),
            });
        }
        Ok(parts)
    }

    /// Waits for an identical call someone else in the cluster dispatched:
    /// until its claim goes, when its result is stored (or it failed).
    async fn wait_elsewhere(&self, inflight: &str) -> Result<Dispatched, BrokerError> {
        loop {
            tokio::time::sleep(self.settings.poll).await;
            if !self.broker.claim_held(inflight).await? {
                return Ok(Dispatched::Elsewhere);
            }
        }
    }

    /// Waits until a live worker serves `task`; `Some` if none came in time.
    async fn wait_for_worker(
        &self,
        task: &'static TaskSpec,
    ) -> Result<Option<Dispatched>, BrokerError> {
        // A worker seen serving this routine a moment ago still does: the
        // heartbeat check costs several round trips, so it is not repeated
        // for every call of a burst.
        const FRESH: Duration = Duration::from_secs(1);
        let seen = self
            .served_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&task.id().to_string())
            .copied();
        if seen.is_some_and(|at| at.elapsed() < FRESH) {
            return Ok(None);
        }
        let deadline = Instant::now() + self.settings.no_worker_wait;
        while !self.broker.served(task).await? {
            if Instant::now() >= deadline {
                return Ok(Some(Dispatched::Unserved(format!(
                    "no worker serves `{}` in namespace `{}` (waited {:?} for one): start a \
                     worker of a program with this task, on the same broker and namespace \
                     (ROUTINE_NAMESPACE)",
                    task.id(),
                    self.broker.namespace(),
                    self.settings.no_worker_wait
                ))));
            }
            tokio::time::sleep(self.settings.poll.max(Duration::from_millis(50))).await;
        }
        self.served_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(task.id().to_string(), Instant::now());
        Ok(None)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, request: &str) {
        self.pending().remove(request);
    }

    fn notice(&self, notice: Notice) {
        match notice {
            Notice::Answered(reply) => self.deliver(reply),
            Notice::Unit(notice) => self.unit_notice(notice),
            Notice::Started { request, worker } => {
                if let Some(waiter) = self.pending().get_mut(&request) {
                    waiter.started = Some((Instant::now(), worker));
                }
            }
        }
    }

    fn deliver(&self, reply: Reply) {
        let waiter = self.pending().remove(&reply.request);
        if let Some(waiter) = waiter {
            let _ = waiter.reply.send(reply);
        }
    }

    /// The failure of `request` if its worker started it longer ago than
    /// `deadline` and has not answered.
    fn past_deadline(&self, request: &str, deadline: Option<Duration>) -> Option<Dispatched> {
        let deadline = deadline?;
        let (started, worker) = self.pending().get(request)?.started.clone()?;
        let elapsed = started.elapsed();
        (elapsed > deadline).then(|| Dispatched::Failed {
            message: format!(
                "timed out: the worker started it {elapsed:.1?} ago and has not answered, \
                 past the {deadline:.1?} its timeout and retries allow (the worker is stuck, or its \
                 reply was lost); its caller gave up on it"
            ),
            worker,
            error: None,
        })
    }
}

/// How long a cluster-wide slot stays held without renewal: a holder that
/// dies frees its slot this long after its last renewal (renewed every
/// third of it while its body runs).
pub const SLOT_HOLD: Duration = Duration::from_secs(10);

/// A cluster-wide slot held for a body: renewed while held, given back
/// when dropped.
struct HeldSlot {
    broker: Broker,
    slots: String,
    holder: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.renewing.abort();
        self.broker.release_slot(
            std::mem::take(&mut self.slots),
            std::mem::take(&mut self.holder),
        );
    }
}

/// A request this call sent and that is not answered yet. Dropped so (its
/// caller gave up: a `select!` that moved on, a Ctrl-C), it tells the
/// workers to drop the routine and gives the call's claim back, in a task
/// of its own; [`Dispatch::settle`] waits for those tasks.
struct Outstanding<'a> {
    shared: &'a Shared,
    request: String,
    inflight: String,
    answered: bool,
}

impl Outstanding<'_> {
    /// The call ended without cancelling it: answered, sent again by
    /// someone else, or given up for want of a worker.
    fn settle(mut self) {
        self.answered = true;
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.shared.forget(&self.request);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let broker = self.shared.broker.clone();
        let (request, inflight) = (
            std::mem::take(&mut self.request),
            std::mem::take(&mut self.inflight),
        );
        let cancelling = Arc::clone(&self.shared.cancelling);
        cancelling.fetch_add(1, Ordering::AcqRel);
        runtime.spawn(async move {
            match broker.cancel(&request).await {
                Ok(()) => {
                    tracing::debug!(request = %request, "cancelled a dropped call on the workers")
                }
                Err(e) => tracing::warn!(request = %request, error = %e,
                    "cannot cancel a dropped call; its worker runs it to its end"),
            }
            broker.release_claim(inflight);
            cancelling.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Reads this engine's reply stream and hands each reply to its waiting
/// call; stops when the dispatcher is dropped, deleting its stream.
async fn listen(shared: Weak<Shared>) {
    const BLOCK: Duration = Duration::from_millis(500);
    let Some(first) = shared.upgrade() else {
        return;
    };
    let (broker, stream) = (first.broker.clone(), first.reply_stream.clone());
    drop(first);
    let mut pause = Duration::from_millis(100);
    let mut reader = None;
    loop {
        if shared.strong_count() == 0 {
            broker.drop_stream(&stream).await;
            return;
        }
        let reading = match &mut reader {
            Some(reader) => reader,
            None => match broker.reply_reader(&stream, BLOCK).await {
                Ok(opened) => reader.insert(opened),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the reply connection; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        match reading.read().await {
            Ok(replies) => {
                pause = Duration::from_millis(100);
                let Some(shared) = shared.upgrade() else {
                    continue;
                };
                let mut read = Vec::with_capacity(replies.len());
                for (id, reply) in replies {
                    match reply {
                        Some(notice) => shared.notice(notice),
                        None => tracing::warn!(entry = %id, "ignoring a malformed reply"),
                    }
                    read.push(id);
                }
                // Delivered first, tidied after: the waiting calls do not
                // wait for this round trip.
                reading.tidy(read);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading replies failed; reconnecting");
                reader = None;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
