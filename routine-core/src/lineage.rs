//! Lineage: what ran, in which run, awaited by which call.
//!
//! Every call made outside any routine's body (by `main`, a test, a trigger)
//! is the *root* of a run and gets a [`RunId`]; the calls it awaits, however
//! deep, and on whatever worker, belong to the same run. Two records make the
//! call tree of a run rebuildable from the store alone:
//!
//! - each stored result's entry header holds the run that computed it and
//!   the key of the call that awaited it (see [`crate::entry`]);
//! - each process that took part in a run stores a *run record* of every call
//!   it made for the run (routine, key, parent, outcome, timing), as an entry
//!   of the reserved routine `routine.runs` under version `<run-id>`.
//!
//! A root call answered from storage records no run: nothing was computed.
//! Nor does a part that is a single call with no sub-calls (a run of one
//! call, or a worker running one call for a caller): its entry's header (its
//! run and parent) and the caller's record say all there is, and a record
//! would double the cost of storing it.
//!
//! ```no_run
//! # async fn example(store: &dyn routine_core::store::Store) -> Result<(), routine_core::lineage::LineageError> {
//! use routine_core::lineage;
//!
//! for run in lineage::runs(store)? {
//!     println!("{} {} computed {}", run.id, run.root, run.computed);
//!     let tree = lineage::run_tree(store, run.id)?;
//!     println!("{} calls", tree.calls.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::entry::{self, EntryMeta};
use crate::id::{process_name, CallOutcome, Fingerprint, RunId, RunIdError};
use crate::key::Key;
use crate::registry::TaskSpec;
use crate::store::{Found, Slot, Store, StoreError};

/// The reserved routine name run records are stored under. Task names
/// cannot start with `routine.`, so no task's results share it.
pub const RUNS: &str = "routine.runs";
/// The version-like component of run records' layout version: the key
/// space of a run's parts, whatever the record's own layout (a reader tells
/// those apart by decoding).
const RECORD_KEY_SPACE: &str = "run-record-1";

/// One call of a run, as its process recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The routine's name.
    pub name: String,
    /// The routine's version.
    pub version: String,
    /// The call's key.
    pub key: Key,
    /// The call that awaited it; none for the run's root.
    pub parent: Option<Key>,
    /// How it ended.
    pub outcome: CallOutcome,
    /// When it started, in microseconds after the run started (in the
    /// clock of the process that made it).
    pub started_us: u64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
    /// The process that made it: the host's name and process ID.
    pub process: String,
    /// Attempts its body took (see `retries`); 1 for a call that did not
    /// run its body here.
    pub attempts: u32,
    /// What its lookup found, for a call that did not hit: the start of
    /// its explanation (`runs why`).
    pub miss: Option<Miss>,
    /// Why it failed, for a call that did: its `Err`, panic or timeout, as
    /// a message.
    pub error: Option<String>,
    /// For a call that ran its body: the start of each argument as JSON
    /// (at most 200 bytes each), in the order of the task's parameters
    /// (those `#[routine(skip)]` leaves out excepted).
    pub arguments: Vec<String>,
}

/// What a call's lookup found when it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Miss {
    /// No result under its key.
    Absent,
    /// A result that had outlived the task's `ttl`.
    Expired,
    /// A result that did not verify or decode.
    Corrupt,
    /// The store could not be read.
    Unreadable,
}

impl Miss {
    /// A word for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Miss::Absent => "absent",
            Miss::Expired => "expired",
            Miss::Corrupt => "corrupt",
            Miss::Unreadable => "unreadable",
        }
    }
}

/// One unit of a multi-unit call (see [`crate::unit`]), as its process
/// recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// The key of the call the unit is part of.
    pub call: Key,
    /// Its rank, and the number of units.
    pub rank: u32,
    /// How many units ran the call.
    pub count: u32,
    /// When it started, in microseconds after the run started (in the
    /// clock of the process that ran it).
    pub started_us: u64,
    /// How long it ran, in microseconds.
    pub duration_us: u64,
    /// Where it ran: the host's name and process ID.
    pub process: String,
    /// How it ended: `returned`, `panicked` or `dropped` (another unit
    /// failed, or the call was dropped).
    pub ended: String,
}

/// How a call ended, for its record.
pub(crate) struct Ended {
    pub(crate) outcome: CallOutcome,
    pub(crate) started: Instant,
    pub(crate) duration: Duration,
    pub(crate) attempts: u32,
    pub(crate) miss: Option<Miss>,
    pub(crate) error: Option<String>,
    pub(crate) arguments: Vec<String>,
}

/// What one process stored about a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    run: RunId,
    /// Unix time in microseconds when this process's part started.
    started_unix_us: u64,
    calls: Vec<CallRecord>,
    /// The units of its multi-unit calls.
    units: Vec<UnitRecord>,
    /// The trace its part belongs to, when the process exports traces
    /// (see [`crate::trace`]).
    trace_id: Option<String>,
}

/// A run record as builds before traces and argument previews stored it.
/// Still read.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RunRecordV4 {
    run: RunId,
    started_unix_us: u64,
    calls: Vec<CallRecordV4>,
    units: Vec<UnitRecord>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct CallRecordV4 {
    name: String,
    version: String,
    key: Key,
    parent: Option<Key>,
    outcome: CallOutcome,
    started_us: u64,
    duration_us: u64,
    process: String,
    attempts: u32,
    miss: Option<Miss>,
    error: Option<String>,
}

impl From<RunRecordV4> for RunRecord {
    fn from(old: RunRecordV4) -> RunRecord {
        RunRecord {
            run: old.run,
            started_unix_us: old.started_unix_us,
            calls: (old.calls.into_iter())
                .map(|c| CallRecord {
                    name: c.name,
                    version: c.version,
                    key: c.key,
                    parent: c.parent,
                    outcome: c.outcome,
                    started_us: c.started_us,
                    duration_us: c.duration_us,
                    process: c.process,
                    attempts: c.attempts,
                    miss: c.miss,
                    error: c.error,
                    arguments: Vec::new(),
                })
                .collect(),
            units: old.units,
            trace_id: None,
        }
    }
}

/// The layout of the run records this build writes, kept in the first byte
/// of their entry's fingerprint field (a run record has no task body to
/// fingerprint); records of the first layout have zeros there, of the
/// second (before multi-unit tasks) a 2, of the third (before misses were
/// recorded) a 3, of the fourth (before trace ids and argument previews) a
/// 4.
const RECORD_LAYOUT: u8 = 5;

/// The fingerprint field of a run record's entry: its layout.
fn layout_mark() -> Fingerprint {
    let mut bytes = [0; 32];
    bytes[0] = RECORD_LAYOUT;
    Fingerprint::from_bytes(bytes)
}

/// A run record's payload, in the layout its entry's fingerprint field
/// names: this build's, or the first.
fn decode_record(payload: &[u8], mark: &Fingerprint) -> Result<RunRecord, LineageError> {
    let decoded = match mark.as_bytes()[0] {
        0 => entry::decode_payload::<RunRecordV1>(payload).map(RunRecord::from),
        2 => entry::decode_payload::<RunRecordV2>(payload).map(RunRecord::from),
        3 => entry::decode_payload::<RunRecordV3>(payload).map(RunRecord::from),
        4 => entry::decode_payload::<RunRecordV4>(payload).map(RunRecord::from),
        _ => entry::decode_payload::<RunRecord>(payload),
    };
    decoded.map_err(|e| LineageError::Encode(e.to_string()))
}

/// A run record as builds before misses were recorded stored it. Still
/// read.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RunRecordV3 {
    run: RunId,
    started_unix_us: u64,
    calls: Vec<CallRecordV3>,
    units: Vec<UnitRecord>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct CallRecordV3 {
    name: String,
    version: String,
    key: Key,
    parent: Option<Key>,
    outcome: CallOutcome,
    started_us: u64,
    duration_us: u64,
    process: String,
    attempts: u32,
}

impl From<CallRecordV3> for CallRecord {
    fn from(c: CallRecordV3) -> CallRecord {
        CallRecord {
            name: c.name,
            version: c.version,
            key: c.key,
            parent: c.parent,
            outcome: c.outcome,
            started_us: c.started_us,
            duration_us: c.duration_us,
            process: c.process,
            attempts: c.attempts,
            miss: None,
            error: None,
            arguments: Vec::new(),
        }
    }
}

impl From<RunRecordV3> for RunRecord {
    fn from(old: RunRecordV3) -> RunRecord {
        RunRecord {
            run: old.run,
            started_unix_us: old.started_unix_us,
            calls: old.calls.into_iter().map(CallRecord::from).collect(),
            units: old.units,
            trace_id: None,
        }
    }
}

/// A run record as builds before multi-unit tasks stored it: no units.
/// Still read.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RunRecordV2 {
    run: RunId,
    started_unix_us: u64,
    calls: Vec<CallRecordV3>,
}

impl From<RunRecordV2> for RunRecord {
    fn from(old: RunRecordV2) -> RunRecord {
        RunRecord {
            run: old.run,
            started_unix_us: old.started_unix_us,
            calls: old.calls.into_iter().map(CallRecord::from).collect(),
            units: Vec::new(),
            trace_id: None,
        }
    }
}

/// A run record as builds before `retries` stored it: calls without their
/// attempts. Still read.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RunRecordV1 {
    run: RunId,
    started_unix_us: u64,
    calls: Vec<CallRecordV1>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct CallRecordV1 {
    name: String,
    version: String,
    key: Key,
    parent: Option<Key>,
    outcome: CallOutcome,
    started_us: u64,
    duration_us: u64,
    process: String,
}

impl From<RunRecordV1> for RunRecord {
    fn from(old: RunRecordV1) -> RunRecord {
        RunRecord {
            run: old.run,
            started_unix_us: old.started_unix_us,
            calls: old
                .calls
                .into_iter()
                .map(|c| CallRecord {
                    name: c.name,
                    version: c.version,
                    key: c.key,
                    parent: c.parent,
                    outcome: c.outcome,
                    started_us: c.started_us,
                    duration_us: c.duration_us,
                    process: c.process,
                    attempts: 1,
                    miss: None,
                    error: None,
                    arguments: Vec::new(),
                })
                .collect(),
            units: Vec::new(),
            trace_id: None,
        }
    }
}

/// The calls one process makes for a run, gathered while it runs and
/// stored when its part ends.
pub(crate) struct RunLog {
    pub(crate) id: RunId,
    started: Instant,
    started_at: SystemTime,
    calls: Mutex<Vec<CallRecord>>,
    units: Mutex<Vec<UnitRecord>>,
    trace_id: Option<String>,
}

impl RunLog {
    /// A run's part in this process; `span` is the one it runs in (the
    /// trace it belongs to is recorded).
    pub(crate) fn new(id: RunId, span: &tracing::Span) -> RunLog {
        RunLog {
            id,
            started: Instant::now(),
            started_at: SystemTime::now(),
            calls: Mutex::new(Vec::new()),
            units: Mutex::new(Vec::new()),
            trace_id: crate::trace::trace_id(span),
        }
    }

    /// Records one unit of the multi-unit call `call`, which ran from
    /// `started` for `duration` on `worker` (`None`: this process) and
    /// ended as `ended` says.
    pub(crate) fn record_unit(
        &self,
        call: Key,
        (rank, count): (usize, usize),
        (started, duration): (Instant, Duration),
        ended: crate::registry::units::UnitEnd,
        worker: Option<&str>,
    ) {
        let record = UnitRecord {
            call,
            rank: rank as u32,
            count: count as u32,
            started_us: micros(started.saturating_duration_since(self.started)),
            duration_us: micros(duration),
            process: worker.unwrap_or(process_name()).to_owned(),
            ended: ended.as_str().to_owned(),
        };
        self.units
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    /// Records one finished call of `task`, made by the call `parent`.
    pub(crate) fn record(&self, task: &TaskSpec, key: Key, parent: Option<Key>, ended: Ended) {
        let record = CallRecord {
            name: task.name().to_owned(),
            version: task.version().to_owned(),
            key,
            parent,
            outcome: ended.outcome,
            started_us: micros(ended.started.saturating_duration_since(self.started)),
            duration_us: micros(ended.duration),
            process: process_name().to_owned(),
            attempts: ended.attempts,
            miss: ended.miss,
            error: ended.error,
            arguments: ended.arguments,
        };
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    /// Stores this process's part of the run, named by `part` (the key of
    /// the call it started with), unless every call was answered from
    /// storage.
    pub(crate) async fn store(&self, store: &dyn Store, part: &Key) -> Result<(), LineageError> {
        let calls = std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner));
        let units = std::mem::take(&mut *self.units.lock().unwrap_or_else(PoisonError::into_inner));
        let computed_something = calls.iter().any(|c| c.outcome != CallOutcome::Hit);
        // A part that is one call and nothing else (no sub-calls, no
        // units) is told by its entry's header (run, parent) and, for a
        // worker's, by the caller's record of the dispatch; a record would
        // double the cost of every such call for little the store does not
        // already say.
        if !(computed_something && (calls.len() > 1 || !units.is_empty())) {
            return Ok(());
        }
        let record = RunRecord {
            run: self.id,
            started_unix_us: micros(
                self.started_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            calls,
            units,
            trace_id: self.trace_id.clone(),
        };
        let version = self.id.to_string();
        let key = Key::of(RUNS, RECORD_KEY_SPACE, &(self.id, part))
            .map_err(|e| LineageError::Encode(e.to_string()))?;
        let payload_len =
            crate::codec::encoded_len(&record).map_err(|e| LineageError::Encode(e.to_string()))?;
        let meta = EntryMeta {
            key,
            fingerprint: layout_mark(),
            created_at: SystemTime::now(),
            run_time: self.started.elapsed(),
            payload_len,
            run: Some(self.id),
            parent: None,
            writer: None,
            arguments: Vec::new(),
        };
        let slot = Slot {
            name: RUNS,
            version: &version,
            key: &key,
        };
        let entry = entry::write(
            Vec::with_capacity(meta.entry_len() as usize),
            &meta,
            &record,
        )
        .map_err(|e| LineageError::Encode(e.to_string()))?;
        store.put_async(&slot, std::sync::Arc::new(entry)).await?;
        Ok(())
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Lineage cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A run record cannot be encoded or decoded.
    #[error("a run record is unusable: {0}")]
    Encode(String),
    /// Not a run ID.
    #[error(transparent)]
    BadRunId(#[from] RunIdError),
    /// No record of this run is stored.
    #[error("no run {0} is recorded in this store")]
    UnknownRun(RunId),
}

/// One run, summed up.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The run.
    pub id: RunId,
    /// The root routine, `name@version`.
    pub root: String,
    /// When the run started.
    pub started: SystemTime,
    /// How long the root call took.
    pub duration: Duration,
    /// Calls that ran their body and stored a result.
    pub computed: usize,
    /// Calls answered from storage.
    pub from_storage: usize,
    /// Calls that failed (`Err` or panic).
    pub failed: usize,
}

/// Every run recorded in `store`, newest first.
pub fn runs(store: &dyn Store) -> Result<Vec<RunSummary>, LineageError> {
    // One listing of every record, then each run's records.
    let mut by_run: BTreeMap<std::sync::Arc<str>, Vec<Key>> = BTreeMap::new();
    for listing in store.list(Some(RUNS), None)? {
        by_run.entry(listing.version).or_default().push(listing.key);
    }
    let mut out = Vec::new();
    for (version, parts) in by_run {
        if let Ok(id) = version.parse::<RunId>() {
            out.push(read_tree(store, id, &parts)?.summary());
        }
    }
    out.sort_by_key(|run| std::cmp::Reverse(run.started));
    Ok(out)
}

/// A run whose records the store holds, known without reading them.
#[derive(Debug, Clone)]
pub struct RecordedRun {
    /// The run.
    pub id: RunId,
    /// When its last record was stored.
    pub stored: SystemTime,
}

impl RecordedRun {
    /// Its summary, from its records (one read per process that took part).
    pub fn summary(&self, store: &dyn Store) -> Result<RunSummary, LineageError> {
        Ok(run_tree(store, self.id)?.summary())
    }
}

/// A page of recorded runs (see [`recorded_runs`]).
#[derive(Debug, Clone, Default)]
pub struct RecordedRuns {
    /// The runs of the page, the most recently stored first.
    pub runs: Vec<RecordedRun>,
    /// How many runs there are in all (stored since the time asked).
    pub total: usize,
}

/// The runs the store holds records of, the most recently stored first:
/// those stored at or after `since`, `take` of them after the first `skip`.
/// No record is read (a page of runs reads only its own), and a store that
/// keeps tallies (the database layout) does not list every run either.
pub fn recorded_runs(
    store: &dyn Store,
    since: Option<SystemTime>,
    skip: usize,
    take: usize,
) -> Result<RecordedRuns, LineageError> {
    let page = store.newest_versions(RUNS, since, skip, take)?;
    let runs = (page.versions.into_iter())
        .filter_map(|tally| {
            let id = tally.version.parse::<RunId>().ok()?;
            Some(RecordedRun {
                id,
                stored: tally.newest,
            })
        })
        .collect();
    Ok(RecordedRuns {
        runs,
        total: page.total,
    })
}

/// The calls of a run, from every process that took part, arranged as a
/// tree.
#[derive(Debug, Clone)]
pub struct RunTree {
    /// The run.
    pub id: RunId,
    /// When its first part started.
    pub started: SystemTime,
    /// Every call, one per node: a call dispatched to a worker appears once,
    /// as the worker recorded it.
    pub calls: Vec<CallNode>,
    /// The trace the run's spans belong to (32 hex digits), when its
    /// processes export traces (feature `telemetry`): its first part's.
    pub trace_id: Option<String>,
}

/// One call in a [`RunTree`].
#[derive(Debug, Clone, Serialize)]
pub struct CallNode {
    /// What was recorded.
    #[serde(flatten)]
    pub call: CallRecord,
    /// Indexes of the calls it awaited, in the order they started.
    pub children: Vec<usize>,
    /// Whether a worker ran it for the caller.
    pub on_worker: bool,
    /// Its units, by rank, if it is a multi-unit call.
    pub units: Vec<UnitRecord>,
}

impl RunTree {
    /// The root calls (normally one).
    pub fn roots(&self) -> Vec<usize> {
        let mut is_child = vec![false; self.calls.len()];
        for node in &self.calls {
            for &child in &node.children {
                is_child[child] = true;
            }
        }
        (0..self.calls.len()).filter(|&i| !is_child[i]).collect()
    }

    /// Sums the run up.
    pub fn summary(&self) -> RunSummary {
        let count = |outcome: CallOutcome| {
            self.calls
                .iter()
                .filter(|n| n.call.outcome == outcome)
                .count()
        };
        let root = self.roots().first().map(|&i| &self.calls[i]);
        RunSummary {
            id: self.id,
            root: root
                .map(|n| format!("{}@{}", n.call.name, n.call.version))
                .unwrap_or_default(),
            started: self.started,
            duration: Duration::from_micros(root.map_or(0, |n| n.call.duration_us)),
            // A call a worker ran and recorded no part for shows as its
            // dispatch: computed all the same.
            computed: count(CallOutcome::Computed) + count(CallOutcome::Dispatched),
            from_storage: count(CallOutcome::Hit),
            failed: count(CallOutcome::Failed)
                + count(CallOutcome::Panicked)
                + count(CallOutcome::TimedOut),
        }
    }
}

/// Rebuilds the call tree of run `id` from `store`.
pub fn run_tree(store: &dyn Store, id: RunId) -> Result<RunTree, LineageError> {
    let parts: Vec<Key> = store
        .list(Some(RUNS), Some(&id.to_string()))?
        .into_iter()
        .map(|listing| listing.key)
        .collect();
    if parts.is_empty() {
        return Err(LineageError::UnknownRun(id));
    }
    read_tree(store, id, &parts)
}

/// Reads the records `parts` of run `id` and joins them into its tree.
fn read_tree(store: &dyn Store, id: RunId, parts: &[Key]) -> Result<RunTree, LineageError> {
    let version = id.to_string();
    let mut records = Vec::new();
    for key in parts {
        let slot = Slot {
            name: RUNS,
            version: &version,
            key,
        };
        let Some(found) = store.get(&slot)? else {
            continue;
        };
        let bytes = found
            .into_bytes()
            .map_err(|e| LineageError::Encode(e.to_string()))?;
        let (meta, payload) =
            entry::verify(&bytes, key).map_err(|e| LineageError::Encode(e.to_string()))?;
        let record = decode_record(&bytes[payload], &meta.fingerprint)?;
        records.push(record);
    }
    Ok(assemble(id, records))
}

/// Joins the parts of a run: a call a caller dispatched and a worker ran is
/// one node, the worker's; each call hangs under the call that awaited it.
fn assemble(id: RunId, mut records: Vec<RunRecord>) -> RunTree {
    records.sort_by_key(|r| r.started_unix_us);
    let started_unix_us = records.first().map_or(0, |r| r.started_unix_us);
    let mut calls: Vec<CallRecord> = Vec::new();
    let mut units: Vec<UnitRecord> = Vec::new();
    for record in &records {
        // Align each part's clock to the run's start.
        let offset = record.started_unix_us.saturating_sub(started_unix_us);
        for call in &record.calls {
            let mut call = call.clone();
            call.started_us += offset;
            calls.push(call);
        }
        for unit in &record.units {
            let mut unit = unit.clone();
            unit.started_us += offset;
            units.push(unit);
        }
    }
    units.sort_by_key(|u| (u.rank, u.started_us));
    let ran_remotely: Vec<Key> = calls
        .iter()
        .filter(|c| c.outcome != CallOutcome::Dispatched)
        .map(|c| c.key)
        .collect();
    let mut nodes: Vec<CallNode> = Vec::new();
    for call in calls {
        let dispatched = call.outcome == CallOutcome::Dispatched;
        if dispatched && ran_remotely.contains(&call.key) {
            continue; // the worker's record stands for it
        }
        // A call's units hang under the node that ran its body.
        let mine = match call.outcome {
            CallOutcome::Hit | CallOutcome::Dispatched => Vec::new(),
            _ => units
                .iter()
                .filter(|u| u.call == call.key)
                .cloned()
                .collect(),
        };
        nodes.push(CallNode {
            call,
            children: Vec::new(),
            on_worker: false,
            units: mine,
        });
    }
    let dispatched_keys: Vec<Key> = records
        .iter()
        .flat_map(|r| &r.calls)
        .filter(|c| c.outcome == CallOutcome::Dispatched)
        .map(|c| c.key)
        .collect();
    // A worker records its part only when it made calls of its own; a
    // dispatched call it ran alone stays the caller's `dispatched` node.
    for node in &mut nodes {
        node.on_worker = dispatched_keys.contains(&node.call.key);
    }
    nodes.sort_by_key(|n| n.call.started_us);
    // A parent is the call with that key which ran its body (a key can be
    // called twice in a run: computed once, then answered from storage).
    let mut parent_of: Vec<Option<usize>> = vec![None; nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        let Some(parent_key) = node.call.parent else {
            continue;
        };
        let ran_body = |n: &CallNode| n.call.outcome != CallOutcome::Hit;
        parent_of[i] = nodes
            .iter()
            .position(|p| p.call.key == parent_key && ran_body(p))
            .or_else(|| nodes.iter().position(|p| p.call.key == parent_key));
    }
    for (i, parent) in parent_of.into_iter().enumerate() {
        if let Some(parent) = parent.filter(|&p| p != i) {
            nodes[parent].children.push(i);
        }
    }
    RunTree {
        id,
        started: UNIX_EPOCH + Duration::from_micros(started_unix_us),
        calls: nodes,
        trace_id: records.iter().find_map(|r| r.trace_id.clone()),
    }
}

/// What a stored result's entry says about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The run that computed it (none for entries written before lineage).
    pub run: Option<RunId>,
    /// The call that awaited it; none when it was a run's root.
    pub parent: Option<Key>,
    /// When it was computed.
    pub created: SystemTime,
}

/// The lineage of the stored result of `name`/`version`/`key`, read from
/// its entry's header; `None` if no result is stored.
pub fn of(
    store: &dyn Store,
    name: &str,
    version: &str,
    key: &Key,
) -> Result<Option<Lineage>, LineageError> {
    let slot = Slot { name, version, key };
    let meta = match store.get(&slot)? {
        None => return Ok(None),
        Some(Found::Bytes(bytes)) => EntryMeta::parse(&bytes),
        Some(Found::Stream { reader, .. }) => entry::read_header(reader).map(|(meta, _)| meta),
    }
    .map_err(|e| LineageError::Encode(e.to_string()))?;
    Ok(Some(Lineage {
        run: meta.run,
        parent: meta.parent,
        created: meta.created_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_and_round_trip() {
        let (a, b) = (RunId::new(), RunId::new());
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
        assert!("xyz".parse::<RunId>().is_err());
        assert!(!a.is_nil());
    }

    fn call(
        name: &str,
        key: u8,
        parent: Option<u8>,
        outcome: CallOutcome,
        started_us: u64,
    ) -> CallRecord {
        let k = |n: u8| Key::of("t", "1", &n).unwrap();
        CallRecord {
            name: name.into(),
            version: "1.0.0".into(),
            key: k(key),
            parent: parent.map(k),
            outcome,
            started_us,
            duration_us: 10,
            process: "p".into(),
            attempts: 1,
            miss: None,
            error: None,
            arguments: Vec::new(),
        }
    }

    #[test]
    fn records_of_builds_before_retries_are_still_read() {
        let old = RunRecordV1 {
            run: RunId::new(),
            started_unix_us: 7,
            calls: vec![CallRecordV1 {
                name: "fit".into(),
                version: "1.0.0".into(),
                key: Key::of("fit", "1.0.0", &1_u8).unwrap(),
                parent: None,
                outcome: CallOutcome::Computed,
                started_us: 1,
                duration_us: 2,
                process: "p".into(),
            }],
        };
        let mut payload = Vec::new();
        crate::codec::encode_into(&mut payload, &old).unwrap();
        let first_layout = Fingerprint::from_bytes([0; 32]);
        let read = decode_record(&payload, &first_layout).unwrap();
        assert_eq!(read.run, old.run);
        assert_eq!(read.calls[0].attempts, 1);
        assert_eq!(read.calls[0].name, "fit");

        let mut current = Vec::new();
        let mut record = read.clone();
        record.calls[0].attempts = 3;
        crate::codec::encode_into(&mut current, &record).unwrap();
        let read = decode_record(&current, &layout_mark()).unwrap();
        assert_eq!(read.calls[0].attempts, 3);
        assert!(decode_record(b"junk", &layout_mark()).is_err());

        // The second layout: no units; the third: no misses.
        let call = |c: &CallRecord| CallRecordV3 {
            name: c.name.clone(),
            version: c.version.clone(),
            key: c.key,
            parent: c.parent,
            outcome: c.outcome,
            started_us: c.started_us,
            duration_us: c.duration_us,
            process: c.process.clone(),
            attempts: c.attempts,
        };
        let second = RunRecordV2 {
            run: read.run,
            started_unix_us: read.started_unix_us,
            calls: read.calls.iter().map(call).collect(),
        };
        let mut payload = Vec::new();
        crate::codec::encode_into(&mut payload, &second).unwrap();
        let mut mark = [0; 32];
        mark[0] = 2;
        let second = decode_record(&payload, &Fingerprint::from_bytes(mark)).unwrap();
        assert_eq!((second.calls.len(), second.units.len()), (1, 0));
        let third = RunRecordV3 {
            run: read.run,
            started_unix_us: read.started_unix_us,
            calls: read.calls.iter().map(call).collect(),
            units: Vec::new(),
        };
        let mut payload = Vec::new();
        crate::codec::encode_into(&mut payload, &third).unwrap();
        mark[0] = 3;
        let third = decode_record(&payload, &Fingerprint::from_bytes(mark)).unwrap();
        assert_eq!((third.calls[0].attempts, third.calls[0].miss), (3, None));
        // The fourth: no trace id.
        let fourth = RunRecordV4 {
            run: read.run,
            started_unix_us: read.started_unix_us,
            calls: (read.calls.iter())
                .map(|c| CallRecordV4 {
                    name: c.name.clone(),
                    version: c.version.clone(),
                    key: c.key,
                    parent: c.parent,
                    outcome: c.outcome,
                    started_us: c.started_us,
                    duration_us: c.duration_us,
                    process: c.process.clone(),
                    attempts: c.attempts,
                    miss: c.miss,
                    error: c.error.clone(),
                })
                .collect(),
            units: Vec::new(),
        };
        let mut payload = Vec::new();
        crate::codec::encode_into(&mut payload, &fourth).unwrap();
        mark[0] = 4;
        let fourth = decode_record(&payload, &Fingerprint::from_bytes(mark)).unwrap();
        assert_eq!((fourth.calls[0].attempts, fourth.trace_id), (3, None));
        let mut traced = read.clone();
        traced.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        traced.calls[0].arguments = vec!["\"a\"".into(), "3".into()];
        let mut payload = Vec::new();
        crate::codec::encode_into(&mut payload, &traced).unwrap();
        let traced = decode_record(&payload, &layout_mark()).unwrap();
        assert_eq!(
            traced.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn parts_from_callers_and_workers_join_into_one_tree() {
        let id = RunId::new();
        let caller = RunRecord {
            run: id,
            started_unix_us: 1_000,
            calls: vec![
                call("fit", 2, Some(1), CallOutcome::Dispatched, 5),
                call("prep", 3, Some(1), CallOutcome::Hit, 6),
                call("train", 1, None, CallOutcome::Computed, 0),
            ],
            units: Vec::new(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        };
        let worker = RunRecord {
            run: id,
            started_unix_us: 1_002,
            calls: vec![call("fit", 2, Some(1), CallOutcome::Computed, 0)],
            units: Vec::new(),
            trace_id: None,
        };
        let tree = assemble(id, vec![worker, caller]);
        assert_eq!(
            tree.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            "the run's trace, from the part that has one"
        );
        assert_eq!(tree.calls.len(), 3, "the dispatched call is one node");
        let roots = tree.roots();
        assert_eq!(roots.len(), 1);
        let root = &tree.calls[roots[0]];
        assert_eq!(root.call.name, "train");
        let children: Vec<(&str, bool)> = root
            .children
            .iter()
            .map(|&c| (tree.calls[c].call.name.as_str(), tree.calls[c].on_worker))
            .collect();
        assert_eq!(children, [("fit", true), ("prep", false)]);
        let summary = tree.summary();
        assert_eq!(
            (summary.computed, summary.from_storage, summary.failed),
            (2, 1, 0)
        );
        assert_eq!(summary.root, "train@1.0.0");
    }
}
