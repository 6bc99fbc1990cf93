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

use redis::streams::StreamReadReply;
use tokio::sync::oneshot;

use super::call::Provenance;
use super::{Engine, Policy};
use crate::broker::{entries, unique_name, Broker, BrokerError, Reply, Request, Retry};
use crate::error::Error;
use crate::key::Key;
use crate::registry::TaskSpec;

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
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            no_worker_wait: Duration::from_secs(30),
            poll: Duration::from_millis(100),
            claim_ttl: Duration::from_secs(30),
        }
    }
}

/// Everything a distributed engine needs; see [`Engine::connect`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DistributedConfig {
    /// The Redis URL, `redis://[:password@]host:port[/db]`.
    pub broker_url: String,
    /// The shared store, `s3://bucket/prefix` or `file:///shared/folder`
    /// (see [`open_url`](crate::store::open_url)).
    pub store_url: String,
    /// Prefix of every broker key, so deployments can share a server.
    pub namespace: String,
    /// Where awaited routines run.
    pub policy: Policy,
    /// Waits of dispatched calls.
    pub dispatch: DispatchSettings,
    /// Retries when connecting to the broker.
    pub retry: Retry,
    /// Bound of the in-process result cache, as for a local engine.
    pub cache_capacity: usize,
}

impl DistributedConfig {
    /// Defaults around a broker and a store: namespace `routine`, policy
    /// sub-routines-remote.
    pub fn new(broker_url: impl Into<String>, store_url: impl Into<String>) -> Self {
        DistributedConfig {
            broker_url: broker_url.into(),
            store_url: store_url.into(),
            namespace: "routine".to_owned(),
            policy: Policy::SubRoutinesRemote,
            dispatch: DispatchSettings::default(),
            retry: Retry::default(),
            cache_capacity: super::DEFAULT_CACHE_CAPACITY,
        }
    }
}

impl Engine {
    /// An engine over a shared object store that sends sub-routines to
    /// workers through a Redis broker. The calling code does not change.
    ///
    /// Fails if the store URL is invalid or the broker cannot be reached
    /// after the configured retries.
    pub async fn connect(config: DistributedConfig) -> Result<Engine, Error> {
        let store = crate::store::open_url(&config.store_url)?;
        let broker = Broker::connect(&config.broker_url, &config.namespace, config.retry).await?;
        Engine::builder(store)
            .cache_capacity(config.cache_capacity)
            .broker(broker, config.policy, config.dispatch)
            .build()
    }

    /// The broker of a distributed engine.
    pub fn broker(&self) -> Option<Broker> {
        self.inner.remote.as_ref().map(|r| r.broker.clone())
    }

    /// Calls of this engine now waiting on workers.
    pub(crate) fn dispatch_waiting(&self) -> usize {
        self.inner
            .remote
            .as_ref()
            .map_or(0, |r| r.waiting.load(Ordering::Relaxed))
    }
}

/// How a dispatched call ended.
pub(crate) enum Dispatched {
    /// A worker stored the result.
    Completed { worker: String },
    /// An identical call dispatched elsewhere landed: look again.
    Elsewhere,
    /// The worker reported a failure (a panic or an `Err`).
    Failed { worker: String, message: String },
    /// It could not be sent or answered.
    Unserved(String),
}

/// The dispatching side of one engine.
pub(crate) struct Remote {
    pub(crate) broker: Broker,
    pub(crate) policy: Policy,
    settings: DispatchSettings,
    reply_stream: String,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    /// When a live worker was last seen serving each routine.
    served_at: Mutex<HashMap<String, Instant>>,
    /// Calls now waiting on a worker: a worker running such a routine is
    /// `HANGING`.
    pub(crate) waiting: AtomicUsize,
}

impl Remote {
    /// Starts the reply listener on the current tokio runtime.
    pub(crate) fn start(broker: Broker, policy: Policy, settings: DispatchSettings) -> Arc<Remote> {
        let reply_stream = broker.reply_stream(&unique_name());
        let remote = Arc::new(Remote {
            broker,
            policy,
            settings,
            reply_stream,
            pending: Mutex::new(HashMap::new()),
            served_at: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
        });
        tokio::spawn(listen(Arc::downgrade(&remote)));
        remote
    }

    pub(crate) async fn dispatch(
        &self,
        task: &'static TaskSpec,
        key: &Key,
        arguments: Vec<u8>,
        provenance: Provenance,
    ) -> Dispatched {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let result = self.dispatch_inner(task, key, arguments, provenance).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        result.unwrap_or_else(|e| Dispatched::Unserved(e.to_string()))
    }

    async fn dispatch_inner(
        &self,
        task: &'static TaskSpec,
        key: &Key,
        arguments: Vec<u8>,
        provenance: Provenance,
    ) -> Result<Dispatched, BrokerError> {
        let mut connection = self.broker.connection();
        let inflight = self.broker.inflight_key(key);
        let ttl = self.settings.claim_ttl.as_millis() as u64;
        if let Some(unserved) = self.wait_for_worker(task).await? {
            return Ok(unserved);
        }
        let request = Request {
            request: unique_name(),
            key: *key,
            task: task.name().to_owned(),
            version: task.version().to_owned(),
            arguments,
            reply_to: self.reply_stream.clone(),
            run: provenance.run,
            parent: provenance.parent,
        };
        let (tx, mut rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request.request.clone(), tx);
        let claimed = self.broker.claim_and_send(&inflight, ttl, &request).await;
        let request = request.request;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                self.forget(&request);
                return Err(e);
            }
        };
        if !claimed {
            self.forget(&request);
            // Someone in the cluster dispatched this very call: wait for it.
            loop {
                tokio::time::sleep(self.settings.poll).await;
                let exists: bool = self
                    .broker
                    .query("EXISTS", redis::cmd("EXISTS").arg(&inflight))
                    .await?;
                if !exists {
                    return Ok(Dispatched::Elsewhere);
                }
            }
        }
        let mut unserved_since: Option<Instant> = None;
        let reply = loop {
            tokio::select! {
                reply = &mut rx => match reply {
                    Ok(reply) => break reply,
                    Err(_) => return Ok(Dispatched::Unserved("the reply listener stopped".into())),
                },
                () = tokio::time::sleep(self.settings.claim_ttl / 3) => {
                    // Keep the claim while the call is alive, and give up if
                    // every worker that could serve it is gone for good.
                    let _: Result<(), _> = redis::cmd("PEXPIRE").arg(&inflight).arg(ttl)
                        .query_async(&mut connection).await;
                    if self.broker.served(task).await? {
                        unserved_since = None;
                    } else {
                        let since = *unserved_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > self.settings.no_worker_wait {
                            self.forget(&request);
                            self.release(inflight);
                            return Ok(Dispatched::Unserved(format!(
                                "no live worker serves `{}` any more (waited {:?})",
                                task.id(), self.settings.no_worker_wait
                            )));
                        }
                    }
                }
            }
        };
        self.release(inflight);
        Ok(match reply.outcome {
            Ok(()) => Dispatched::Completed {
                worker: reply.worker,
            },
            Err(message) => Dispatched::Failed {
                worker: reply.worker,
                message,
            },
        })
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
                    "no worker serves `{}` (waited {:?} for one); start a worker built with this task",
                    task.id(),
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

    /// Drops the cluster-wide claim, off the caller's path: the result is
    /// already stored, and an abandoned claim expires all the same.
    fn release(&self, inflight: String) {
        let mut connection = self.broker.connection();
        tokio::spawn(async move {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(inflight)
                .query_async(&mut connection)
                .await;
        });
    }

    fn forget(&self, request: &str) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(request);
    }

    fn deliver(&self, reply: Reply) {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&reply.request);
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    }
}

/// Reads this engine's reply stream and hands each reply to its waiting
/// call; stops when the engine is dropped.
async fn listen(remote: Weak<Remote>) {
    const BLOCK: Duration = Duration::from_millis(500);
    let Some(first) = remote.upgrade() else {
        return;
    };
    let (broker, stream) = (first.broker.clone(), first.reply_stream.clone());
    drop(first);
    let mut pause = Duration::from_millis(100);
    let mut last_id = String::from("0-0");
    let mut connection = None;
    loop {
        if remote.strong_count() == 0 {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(&stream)
                .query_async(&mut broker.connection())
                .await;
            return;
        }
        if connection.is_none() {
            match broker.blocking_connection(BLOCK).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the reply connection; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let read: Result<Option<StreamReadReply>, _> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last_id)
            .query_async(conn)
            .await;
        match read {
            Ok(reply) => {
                pause = Duration::from_millis(100);
                let Some(remote) = remote.upgrade() else {
                    continue;
                };
                let read: Vec<String> = entries(reply)
                    .into_iter()
                    .map(|(_, entry)| {
                        match Reply::parse(&entry) {
                            Some(reply) => remote.deliver(reply),
                            None => tracing::warn!(entry = %entry.id, "ignoring a malformed reply"),
                        }
                        entry.id
                    })
                    .collect();
                if let Some(last) = read.last() {
                    last_id = last.clone();
                    // Delivered first, tidied after: the waiting calls do not
                    // wait for this round trip.
                    let _: Result<(), _> = redis::cmd("XDEL")
                        .arg(&stream)
                        .arg(&read)
                        .query_async(&mut broker.connection())
                        .await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading replies failed; reconnecting");
                connection = None;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
