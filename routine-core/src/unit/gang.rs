//! Running a gang: the units of one call, in this process
//! ([`run_units`]) or, under a distributed engine, on workers' slots (the
//! engine's dispatcher runs them; [`serve_unit`] is a worker's side).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{lock, Io, Unit, Units};
use crate::codec;
use crate::dispatch::{GangOutcome, GangRequest};
use crate::engine::{Current, Engine, Place};
use crate::invoke::panic_message;
use crate::key::Key;
use crate::lineage::RunLog;
use crate::mailbox::{InProcess, Inbox, Mailbox};
use crate::registry::units::{UnitEnd, UnitFailure, UnitRunning, UnitStart};
use crate::registry::TaskSpec;
use crate::slot::SlotLease;

impl<In, Out> Unit<In, Out> {
    fn new(rank: usize, count: usize, mailbox: Arc<dyn Mailbox>, io: Arc<Io<In, Out>>) -> Self {
        Unit {
            rank,
            count,
            mailbox,
            io,
            collectives: AtomicU64::new(0),
        }
    }
}

/// The body of a multi-unit task's call: its units run as a gang on the
/// workers when the current engine sends sub-routines away, else in this
/// process ([`run_units`]). Called by the code `#[task(units = ..)]`
/// writes.
pub async fn run_gang<In, Out, F, Fut>(task: &'static TaskSpec, input: In, unit: F) -> Out
where
    In: Serialize + DeserializeOwned + Send + 'static,
    Out: Serialize + DeserializeOwned + Send + 'static,
    F: Fn(Unit<In, Out>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let units = task.units().map_or(Units::between(1, 1), |spec| spec.units);
    let current = Current::get();
    let place = current.as_ref().and_then(|c| c.place.clone());
    let engine = current.map(|c| c.engine);
    let dispatcher = engine.as_ref().and_then(Engine::gang_dispatcher);
    let (Some(dispatcher), Some(call)) = (dispatcher, place.as_ref().and_then(|p| p.parent)) else {
        return run_units(units, input, unit).await;
    };
    let mut encoded = Vec::new();
    if let Err(e) = codec::encode_into(&mut encoded, &input) {
        panic!(
            "the input of `{}` cannot be encoded for its units: {e}",
            task.id()
        );
    }
    let request = GangRequest {
        task,
        units,
        call,
        input: encoded,
        run: place.as_ref().map(|p| p.run.id),
    };
    let Some(running) = dispatcher.run_gang(request) else {
        return run_units(units, input, unit).await;
    };
    drop(input);
    // Waiting for its units, the call holds no worker slot: they may need
    // it.
    let waiting = place
        .as_ref()
        .and_then(|p| p.lease.as_deref())
        .map(SlotLease::give_back);
    let outcome = running.await;
    if let Some(waiting) = waiting {
        waiting.take_again().await;
    }
    let (output, units) = match outcome {
        GangOutcome::Completed { output, units } => (Ok(output), units),
        GangOutcome::Failed { message, units } => (Err(message), units),
    };
    if let Some(place) = &place {
        for report in &units {
            place.run.record_unit(
                call,
                (report.rank, report.count),
                (Instant::now() - report.duration, report.duration),
                report.ended,
                Some(&report.worker),
            );
        }
    }
    match output {
        Ok(bytes) => codec::decode_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "the output of `{}` from its rank 0 does not decode as {}: {e}",
                task.id(),
                std::any::type_name::<Out>()
            )
        }),
        Err(message) => panic!("{message}"),
    }
}

/// One unit of a task, started by a worker: the input decoded for rank 0,
/// the unit run, its peers told it returned, rank 0's output encoded.
/// Called by the code `#[task(units = ..)]` writes.
pub fn unit_entry<In, Out, F, Fut>(start: UnitStart, unit: F) -> UnitRunning
where
    In: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + 'static,
    F: FnOnce(Unit<In, Out>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let UnitStart {
        rank,
        count,
        input,
        mailbox,
        ..
    } = start;
    let input = match input.map(|bytes| codec::decode_slice::<In>(&bytes)) {
        None => None,
        Some(Ok(input)) => Some(input),
        Some(Err(e)) => {
            let failed = Err(format!("unit {rank} cannot decode the call's input: {e}"));
            return Box::pin(std::future::ready(failed));
        }
    };
    let io = Arc::new(Io {
        input: Mutex::new(input),
        output: Mutex::new(None),
    });
    let running = unit(Unit::new(
        rank,
        count,
        Arc::clone(&mailbox),
        Arc::clone(&io),
    ));
    Box::pin(async move {
        running.await;
        mailbox
            .returned(rank)
            .await
            .map_err(|e| format!("unit {rank} cannot tell the others it returned: {e}"))?;
        if rank != 0 {
            return Ok(None);
        }
        let output = lock(&io.output).take().ok_or_else(|| {
            format!("unit 0 of {count} returned without its output: rank 0 must call `send_output`")
        })?;
        let mut bytes = Vec::new();
        codec::encode_into(&mut bytes, &output)
            .map_err(|e| format!("the output of unit 0 cannot be encoded: {e}"))?;
        Ok(Some(bytes))
    })
}

/// Runs one unit of `task` for another process (a worker serving a gang),
/// in `engine`'s scope, as part of the gang's run: its calls are recorded
/// with the gang's call as their parent. A panic is an error message;
/// dropping the future drops the unit at once.
pub async fn serve_unit(
    engine: &Engine,
    task: &'static TaskSpec,
    start: UnitStart,
) -> Result<Option<Vec<u8>>, UnitFailure> {
    let failed = |ended, message| UnitFailure { ended, message };
    let Some(spec) = task.units() else {
        let message = format!("`{}` is not a multi-unit task", task.id());
        return Err(failed(UnitEnd::Dropped, message));
    };
    let log = Arc::new(RunLog::new(start.run, &tracing::Span::current()));
    let call = start.call;
    // A part of the run per unit: the record's key names the call and the
    // rank.
    let part = Key::of("unit", "part", &(call, start.rank))
        .map_err(|e| failed(UnitEnd::Dropped, e.to_string()))?;
    let mut scope = Current::outside(engine.clone());
    scope.in_routine = true;
    scope.place = Some(Arc::new(Place {
        run: Arc::clone(&log),
        parent: Some(call),
        serving: None,
        lease: start.lease.clone(),
    }));
    let running = (spec.run)(start);
    let mut spawned = tokio::task::JoinSet::new();
    spawned.spawn(scope.scope(running));
    let outcome = match spawned.join_next().await {
        Some(Ok(outcome)) => outcome.map_err(|message| failed(UnitEnd::Returned, message)),
        Some(Err(e)) if e.is_panic() => {
            Err(failed(UnitEnd::Panicked, panic_message(e.into_panic())))
        }
        Some(Err(e)) => Err(failed(UnitEnd::Dropped, format!("was cancelled: {e}"))),
        None => Err(failed(UnitEnd::Dropped, "was never started".to_owned())),
    };
    engine.inner().store_run(&log, &part).await;
    outcome
}

/// A unit's record in its run, written when the unit's future ends or is
/// dropped: `returned`, else `dropped` (a panic unwinds through it as a
/// drop and is said `panicked`).
struct Recorded {
    run: Arc<RunLog>,
    call: Key,
    rank: usize,
    count: usize,
    started: Instant,
    ended: UnitEnd,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let ended = match (self.ended, std::thread::panicking()) {
            (UnitEnd::Dropped, true) => UnitEnd::Panicked,
            (ended, _) => ended,
        };
        self.run.record_unit(
            self.call,
            (self.rank, self.count),
            (self.started, self.started.elapsed()),
            ended,
            None,
        );
    }
}

/// Runs the units of one call of a multi-unit task on `input`, each the
/// future `unit` makes of its handle, as tokio tasks of this process in
/// the current engine scope; rank 0's output when all have returned. A
/// unit that panics ends the others at once, and this call panics, naming
/// its rank; so does rank 0 returning without its output.
pub async fn run_units<In, Out, F, Fut>(units: Units, input: In, unit: F) -> Out
where
    In: Send + 'static,
    Out: Send + 'static,
    F: Fn(Unit<In, Out>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let count = units.in_process();
    let mailbox = Arc::new(InProcess(Inbox::new(count)));
    let io = Arc::new(Io {
        input: Mutex::new(Some(input)),
        output: Mutex::new(None),
    });
    let mut running = tokio::task::JoinSet::new();
    let mut ranks = HashMap::new();
    let current = Current::get();
    // The run and the call this gang is the body of: each unit is recorded
    // there, however it ends.
    let place = current.as_ref().and_then(|c| c.place.clone());
    for rank in 0..count {
        let handle = Unit::new(rank, count, mailbox.clone(), Arc::clone(&io));
        let run = unit(handle);
        let record = place.as_ref().and_then(|place| {
            Some(Recorded {
                run: Arc::clone(&place.run),
                call: place.parent?,
                rank,
                count,
                started: Instant::now(),
                ended: UnitEnd::Dropped,
            })
        });
        let run = async move {
            let mut record = record;
            run.await;
            if let Some(record) = &mut record {
                record.ended = UnitEnd::Returned;
            }
        };
        let aborts = match &current {
            Some(current) => running.spawn(current.clone().scope(run)),
            None => running.spawn(run),
        };
        ranks.insert(aborts.id(), rank);
    }
    // Dropping `running` (this future dropped, or a unit failed) aborts
    // every unit still running.
    while let Some(ended) = running.join_next_with_id().await {
        let (id, outcome) = match ended {
            Ok((id, ())) => (id, Ok(())),
            Err(e) => (e.id(), Err(e)),
        };
        let rank = ranks[&id];
        match outcome {
            Ok(()) => {
                // Units waiting on it learn it will send no more.
                mailbox.0.returned(rank);
                if rank == 0 && lock(&io.output).is_none() {
                    running.abort_all();
                    panic!("unit 0 of {count} returned without its output: rank 0 must call `send_output`");
                }
            }
            // The other units are ended before the panic is raised (its hook
            // can take a while to print).
            Err(e) if e.is_panic() => {
                running.abort_all();
                panic!(
                    "unit {rank} of {count} panicked: {}",
                    panic_message(e.into_panic())
                )
            }
            Err(e) => {
                running.abort_all();
                panic!("unit {rank} of {count} was cancelled: {e}")
            }
        }
    }
    let output = lock(&io.output).take();
    output.expect("rank 0 returned with its output")
}
