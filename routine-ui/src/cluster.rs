//! The cluster as the workers page shows it. The view knows no broker: a
//! program that has one (`routine-cli` with `distributed`) hands it a
//! [`Cluster`] that reads it.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

/// What a cluster looks like at one moment.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    /// The live workers.
    pub workers: Vec<WorkerRow>,
    /// Multi-unit calls running, each unit on a worker.
    pub gangs_running: Vec<GangRow>,
    /// Multi-unit calls waiting for enough free slots.
    pub gangs_waiting: Vec<WaitingGangRow>,
    /// The newest dead letters, newest first.
    pub dead_letters: Vec<DeadLetterRow>,
    /// Each routine the workers serve, and its requests sent and not yet
    /// answered (waiting for a worker, or running).
    pub queued: Vec<(String, u64)>,
}

/// A request set aside because the workers that took it kept dying.
#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    /// When it was set aside.
    pub at: SystemTime,
    /// Its task, `name@version` (empty if unknown).
    pub task: String,
    /// The call's key, in hex (empty if unknown).
    pub key: String,
    /// How many workers it was delivered to, each of which died.
    pub deliveries: u64,
}

/// One worker.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    /// Its ID (host, process, suffix).
    pub id: String,
    /// What its heartbeat says it does (`IDLE`, `BUSY`, ...).
    pub state: String,
    /// The routine it runs now, if any.
    pub routine: Option<String>,
    /// Its last heartbeat.
    pub last_seen: SystemTime,
    /// How many routines it serves.
    pub serves: usize,
    /// Its slots.
    pub slots: u32,
    /// Calls waiting for a slot of their task's `concurrency`.
    pub waiting_for_slot: u64,
}

/// One running gang.
#[derive(Debug, Clone)]
pub struct GangRow {
    /// The gang's ID.
    pub id: String,
    /// Its task.
    pub task: String,
    /// The call's key.
    pub call: String,
    /// Each unit: rank and worker.
    pub units: Vec<(usize, String)>,
}

/// One gang waiting for slots.
#[derive(Debug, Clone)]
pub struct WaitingGangRow {
    /// The gang's ID.
    pub id: String,
    /// Its task.
    pub task: String,
    /// The fewest and most units it runs with.
    pub units: (usize, usize),
}

/// A future of a snapshot.
pub type Snapshot<'a> = Pin<Box<dyn Future<Output = Result<ClusterSnapshot, String>> + Send + 'a>>;

/// Reads a cluster for the workers page.
pub trait Cluster: Send + Sync + 'static {
    /// The cluster now, or why it cannot be read.
    fn snapshot(&self) -> Snapshot<'_>;
}
