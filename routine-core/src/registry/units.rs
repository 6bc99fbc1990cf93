//! What the registry knows of a multi-unit task: how many units run a
//! call, and how a worker starts one of them (see [`crate::unit`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::id::RunId;
use crate::key::Key;
use crate::mailbox::Mailbox;
use crate::slot::SlotLease;

/// How many units a task runs: `units = 4`, or `units = 2..=8` (as many as
/// can start together, at least the least).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    /// The fewest that may run.
    pub min: usize,
    /// The most that may run.
    pub max: usize,
}

impl Units {
    /// Between `min` and `max` units (the macro has checked `1 <= min <=
    /// max`).
    pub const fn between(min: usize, max: usize) -> Units {
        Units { min, max }
    }

    /// How many start in one process: all of them can, so the most.
    pub fn in_process(&self) -> usize {
        self.max.max(1)
    }
}

/// How a unit ended, in its run's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitEnd {
    /// Its future returned.
    Returned,
    /// It panicked: its gang's attempt failed.
    Panicked,
    /// It was dropped: another unit failed, its worker died, or the call
    /// was dropped.
    Dropped,
}

impl UnitEnd {
    /// The word in records and in `runs show`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitEnd::Returned => "returned",
            UnitEnd::Panicked => "panicked",
            UnitEnd::Dropped => "dropped",
        }
    }
}

/// Why a unit served for another process failed its gang's attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFailure {
    /// How it ended: panicked, or returned (rank 0 without its output).
    pub ended: UnitEnd,
    /// What happened.
    pub message: String,
}

/// What became of one unit of a gang that ran on workers, for the record
/// of its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitReport {
    /// Its rank.
    pub rank: usize,
    /// How many units ran.
    pub count: usize,
    /// The worker it ran on.
    pub worker: String,
    /// How long it ran.
    pub duration: Duration,
    /// How it ended.
    pub ended: UnitEnd,
}

/// The units a multi-unit task runs, and how a worker runs one of them;
/// written by `#[task(units = ..)]`.
#[derive(Debug, Clone, Copy)]
pub struct UnitsSpec {
    pub(crate) units: Units,
    pub(crate) run: RunUnit,
}

impl UnitsSpec {
    #[doc(hidden)]
    pub const fn __new(units: Units, run: RunUnit) -> UnitsSpec {
        UnitsSpec { units, run }
    }

    /// How many units run a call.
    pub fn units(&self) -> Units {
        self.units
    }
}

/// One unit running for a worker: rank 0's encoded output when it
/// returns, `None` for the other ranks, or why it failed. It panics as its
/// unit does.
pub type UnitRunning = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, String>> + Send>>;

/// Starts one unit of a task: written by `#[task(units = ..)]`.
pub type RunUnit = fn(UnitStart) -> UnitRunning;

/// What a worker needs to run one unit of a gang.
pub struct UnitStart {
    /// The unit's rank.
    pub rank: usize,
    /// How many units run the call.
    pub count: usize,
    /// The call's input, encoded: given to rank 0 only.
    pub input: Option<Vec<u8>>,
    /// How the unit passes messages to the others.
    pub mailbox: Arc<dyn Mailbox>,
    /// The run the gang's call belongs to.
    pub run: RunId,
    /// The gang's call: the parent of the calls its units make.
    pub call: Key,
    /// The worker's slot the unit runs in, given back while it waits on
    /// dispatched calls.
    pub lease: Option<Arc<SlotLease>>,
}

impl std::fmt::Debug for UnitStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitStart")
            .field("rank", &self.rank)
            .field("count", &self.count)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}
