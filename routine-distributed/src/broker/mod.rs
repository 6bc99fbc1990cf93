//! The broker: Redis Streams carrying work from callers to workers.
//!
//! ```text
//! {ns}:work:{name}:{version}   one stream per routine ID, consumer group "workers":
//!                              request, key, task, version, args, reply
//! {ns}:reply:{caller}          one stream per calling engine: request, status, error, worker
//! {ns}:inflight:{key}          SET NX while a call is dispatched: identical calls
//!                              anywhere in the cluster wait for it instead
//! {ns}:worker:{id}             hash: status, routine, last_seen, routines (expires)
//! {ns}:workers                 set of worker ids
//! {ns}:dead                    dead-letter stream: requests that kept killing workers
//! {ns}:slots:{name}:{version}  sorted set: holders of the routine's `concurrency` slots,
//!                              scored by when their hold lapses
//! {ns}:cancel                  pub/sub channel: requests their callers gave up on
//! {ns}:gang-slots              sorted set: slots reserved for gangs (see `gangs`)
//! {ns}:units:{worker}          one stream per worker: its gangs' units and their messages
//! {ns}:gangs, {ns}:gangs-waiting   the running gangs, and those waiting for slots (`status`)
//! ```
//!
//! Only keys, encoded arguments and small metadata pass through Redis; results
//! go to the shared store.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::AsyncConnectionConfig;

use routine_core::key::Key;
use routine_core::redact::redact_url;
use routine_core::registry::TaskSpec;

mod calls;
mod gangs;
mod messages;
mod slots;
mod tail;
mod work;

pub(crate) use self::gangs::{member, waiting_member, GangStart, Reservation};
pub use self::gangs::{Gangs, RunningGang, WaitingGang};
pub(crate) use self::messages::{
    Failure, Notice, Part, Reply, Request, UnitEntry, UnitNotice, UnitOrder,
};
pub use self::work::DeadLetter;
pub(crate) use self::work::{Delivery, Heartbeat};

/// The consumer group every worker joins on every work stream.
pub(crate) const GROUP: &str = "workers";

/// How a connection to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be reached, even after retrying.
    #[error("cannot reach the broker at {url} after {attempts} attempts: {source}")]
    Unreachable {
        /// The broker URL, password redacted.
        url: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last error.
        #[source]
        source: redis::RedisError,
    },
    /// A command failed.
    #[error("broker command {command} failed: {source}")]
    Command {
        /// The command.
        command: &'static str,
        /// What Redis said.
        #[source]
        source: redis::RedisError,
    },
}

/// Retries for connecting: attempts and the first pause, doubled each time.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts before giving up.
    pub attempts: u32,
    /// Pause after the first failure; doubles after each.
    pub first_pause: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 6,
            first_pause: Duration::from_millis(200),
        }
    }
}

/// A connection to the broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    client: redis::Client,
    /// Reconnects by itself, with backoff, when the server goes away.
    connection: ConnectionManager,
    namespace: String,
    url: String,
    retry: Retry,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Broker({}, namespace {})", self.url, self.namespace)
    }
}

/// A worker as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id: host, process id and a random suffix.
    pub id: String,
    /// What it was doing.
    pub status: WorkerStatus,
    /// The routine it is running, if any.
    pub routine: Option<String>,
    /// When it last reported.
    pub last_seen: SystemTime,
    /// The routine IDs it serves.
    pub routines: Vec<String>,
    /// The large arguments it downloaded from the shared store (each is
    /// downloaded once per machine, then read from the machine's cache).
    pub downloads: u64,
    /// Calls waiting for a slot of their task's `concurrency`.
    pub waiting_for_slot: u64,
    /// Its slots: how many routines (or units of gangs) it runs at once.
    pub slots: u32,
}

/// What a worker is doing, as its heartbeat says (in capitals on the wire
/// and in `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerStatus {
    /// Starting: joining its routines' streams.
    Initializing,
    /// Waiting for work.
    Idle,
    /// Running routines.
    Working,
    /// Every routine it runs waits on sub-routines running elsewhere.
    Hanging,
    /// Shutting down: it takes no new work.
    Terminating,
    /// A status this build does not know (a newer worker's).
    Unknown,
}

impl WorkerStatus {
    /// The word on the wire: `IDLE`, `WORKING`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Initializing => "INITIALIZING",
            WorkerStatus::Idle => "IDLE",
            WorkerStatus::Working => "WORKING",
            WorkerStatus::Hanging => "HANGING",
            WorkerStatus::Terminating => "TERMINATING",
            WorkerStatus::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WorkerStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            WorkerStatus::Initializing,
            WorkerStatus::Idle,
            WorkerStatus::Working,
            WorkerStatus::Hanging,
            WorkerStatus::Terminating,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
        .ok_or_else(|| format!("`{text}` is not a worker status"))
    }
}

/// How long one attempt to connect to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Broker {
    /// Connects to the Redis server at `url` (`redis://[:password@]host:port[/db]`);
    /// `namespace` prefixes every key, so several deployments can share a
    /// server.
    pub async fn connect(url: &str, namespace: &str, retry: Retry) -> Result<Broker, BrokerError> {
        let redacted = redact_url(url);
        let client = redis::Client::open(url).map_err(|source| BrokerError::Unreachable {
            url: redacted.clone(),
            attempts: 0,
            source,
        })?;
        let mut pause = retry.first_pause;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The manager retries on its own, which suits reconnecting later;
            // the first connection is tried once per attempt here, so that
            // `retry` alone bounds how long an absent broker takes to report.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(Duration::from_secs(10)))
                .set_number_of_retries(retry.attempts as usize)
                .set_max_delay(Duration::from_secs(5));
            let connected = match tokio::time::timeout(
                CONNECT_TIMEOUT,
                client.get_multiplexed_async_connection(),
            )
            .await
            {
                Ok(Ok(_probe)) => ConnectionManager::new_with_config(client.clone(), config).await,
                Ok(Err(e)) => Err(e),
                Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                ))),
            };
            match connected {
                Ok(connection) => {
                    return Ok(Broker {
                        client,
                        connection,
                        namespace: namespace.to_owned(),
                        url: redacted,
                        retry,
                    })
                }
                Err(source) if attempt >= retry.attempts.max(1) => {
                    return Err(BrokerError::Unreachable {
                        url: redacted,
                        attempts: attempt,
                        source,
                    })
                }
                Err(e) => {
                    tracing::warn!(broker = %redacted, attempt, error = %e, "cannot reach the broker; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }

    /// The broker URL, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix of every key of this deployment: workers and callers
    /// meet only in the same namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A connection of its own for blocking reads, which would otherwise
    /// hold up every other command on the shared one.
    pub(crate) async fn blocking_connection(
        &self,
        block: Duration,
    ) -> Result<MultiplexedConnection, BrokerError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(block + Duration::from_secs(10)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| BrokerError::Command {
                command: "connect",
                source,
            })
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Runs `command`, retrying with backoff while the connection is lost
    /// (the connection manager re-establishes it meanwhile), then failing
    /// with the last error.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, BrokerError> {
        let mut pause = self.retry.first_pause;
        let mut attempt = 1;
        loop {
            let mut connection = self.connection();
            match command.query_async(&mut connection).await {
                Ok(value) => return Ok(value),
                Err(e) if transient(&e) && attempt < self.retry.attempts => {
                    tracing::warn!(broker = %self.url, command = name, attempt, error = %e,
                        "the broker connection was lost; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(source) => {
                    return Err(BrokerError::Command {
                        command: name,
                        source,
                    })
                }
            }
        }
    }

    pub(crate) fn work_stream(&self, task: &str, version: &str) -> String {
        format!("{}:work:{task}:{version}", self.namespace)
    }

    pub(crate) fn reply_stream(&self, caller: &str) -> String {
        format!("{}:reply:{caller}", self.namespace)
    }

    pub(crate) fn inflight_key(&self, key: &Key) -> String {
        format!("{}:inflight:{}", self.namespace, key.to_hex())
    }

    pub(crate) fn worker_key(&self, worker: &str) -> String {
        format!("{}:worker:{worker}", self.namespace)
    }

    pub(crate) fn workers_set(&self) -> String {
        format!("{}:workers", self.namespace)
    }

    pub(crate) fn dead_letter_stream(&self) -> String {
        format!("{}:dead", self.namespace)
    }

    /// The channel on which callers name the requests they gave up on.
    pub(crate) fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.namespace)
    }

    /// How many requests each of `routines` has in its work stream: sent
    /// and not yet answered (waiting for a worker, or running).
    pub async fn queued(
        &self,
        routines: &[routine_core::RoutineId],
    ) -> Result<Vec<u64>, BrokerError> {
        if routines.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for routine in routines {
            pipe.cmd("XLEN")
                .arg(self.work_stream(&routine.name, &routine.version));
        }
        pipe.query_async(&mut self.connection())
            .await
            .map_err(command("XLEN"))
    }

    /// The workers whose heartbeat has not expired.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, BrokerError> {
        let mut connection = self.connection();
        let ids: Vec<String> = self
            .query("SMEMBERS", redis::cmd("SMEMBERS").arg(self.workers_set()))
            .await?;
        let mut out = Vec::new();
        for id in ids {
            let fields: HashMap<String, String> = self
                .query("HGETALL", redis::cmd("HGETALL").arg(self.worker_key(&id)))
                .await?;
            if fields.is_empty() {
                // Its heartbeat expired: it is gone.
                let _: Result<(), _> = redis::cmd("SREM")
                    .arg(self.workers_set())
                    .arg(&id)
                    .query_async(&mut connection)
                    .await;
                continue;
            }
            let millis = fields
                .get("last_seen")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            out.push(WorkerInfo {
                id,
                status: fields
                    .get("status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(WorkerStatus::Unknown),
                routine: fields.get("routine").filter(|r| !r.is_empty()).cloned(),
                last_seen: UNIX_EPOCH + Duration::from_millis(millis),
                routines: fields
                    .get("routines")
                    .map(|r| {
                        r.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                downloads: fields
                    .get("downloads")
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0),
                waiting_for_slot: fields
                    .get("waiting_for_slot")
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0),
                slots: fields
                    .get("slots")
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Whether a live worker serves `task`.
    pub(crate) async fn served(&self, task: &TaskSpec) -> Result<bool, BrokerError> {
        let id = task.id().to_string();
        Ok(self
            .workers()
            .await?
            .iter()
            .any(|w| w.routines.contains(&id)))
    }
}

/// Errors that a new connection may cure.
fn transient(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
}

pub(crate) fn command(name: &'static str) -> impl FnOnce(redis::RedisError) -> BrokerError {
    move |source| BrokerError::Command {
        command: name,
        source,
    }
}

/// Milliseconds since the Unix epoch, for heartbeats.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A name unique to this process and moment: host, pid, random suffix.
pub(crate) fn unique_name() -> String {
    let process = routine_core::id::process_name().replace(':', "-");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{process}-{nanos:08x}{n}")
}
