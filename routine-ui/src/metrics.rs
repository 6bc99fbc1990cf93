//! `/metrics`, in Prometheus' text format: what the store holds, per task
//! and version, and the runs it recorded.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use routine_core::lineage::RUNS;

use crate::cluster::ClusterSnapshot;
use crate::exposition::{family, label, single, Kind, CONTENT_TYPE};
use crate::View;

pub(crate) async fn metrics(State(view): State<View>) -> Response {
    let store = view.store.clone();
    // The store's tallies, and the number of runs: nothing is listed.
    let read = tokio::task::spawn_blocking(move || {
        let tallies = store.tallies()?;
        let runs = store.newest_versions(RUNS, None, 0, 0)?.total;
        Ok::<_, routine_core::store::StoreError>((tallies, runs))
    })
    .await;
    let (tallies, runs) = match read
        .map_err(|e| e.to_string())
        .and_then(|read| read.map_err(|e| e.to_string()))
    {
        Ok(read) => read,
        Err(e) => return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let mut text = String::new();
    family(
        &mut text,
        "routine_stored_results",
        Kind::Gauge,
        "Results the store holds, per task and version.",
    );
    for tally in &tallies {
        let _ = writeln!(
            text,
            "routine_stored_results{{task=\"{}\",version=\"{}\"}} {}",
            label(&tally.name),
            label(&tally.version),
            tally.results
        );
    }
    family(
        &mut text,
        "routine_stored_bytes",
        Kind::Gauge,
        "Bytes of the results the store holds, per task and version.",
    );
    for tally in &tallies {
        let _ = writeln!(
            text,
            "routine_stored_bytes{{task=\"{}\",version=\"{}\"}} {}",
            label(&tally.name),
            label(&tally.version),
            tally.bytes
        );
    }
    single(
        &mut text,
        "routine_recorded_runs",
        Kind::Gauge,
        "Runs whose records the store holds.",
        runs as u64,
    );
    // With a broker: the cluster's queues, slots and workers.
    if let Some(cluster) = &view.cluster {
        match cluster.snapshot().await {
            Ok(snapshot) => cluster_metrics(&mut text, &snapshot),
            Err(e) => tracing::warn!(error = %e, "/metrics: cannot read the broker"),
        }
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// The cluster's gauges: requests not yet answered per routine, workers,
/// slots, calls waiting for a slot, gangs waiting.
fn cluster_metrics(text: &mut String, snapshot: &ClusterSnapshot) {
    family(
        text,
        "routine_queue_depth",
        Kind::Gauge,
        "Requests sent to workers and not yet answered (waiting or running), per routine.",
    );
    for (routine, requests) in &snapshot.queued {
        let _ = writeln!(
            text,
            "routine_queue_depth{{routine=\"{}\"}} {requests}",
            label(routine)
        );
    }
    let slots: u64 = snapshot.workers.iter().map(|w| u64::from(w.slots)).sum();
    let busy = (snapshot.workers.iter())
        .filter(|w| w.routine.is_some())
        .count();
    let waiting: u64 = snapshot.workers.iter().map(|w| w.waiting_for_slot).sum();
    for (name, help, value) in [
        (
            "routine_workers",
            "Live workers.",
            snapshot.workers.len() as u64,
        ),
        ("routine_worker_slots", "Slots of the live workers.", slots),
        (
            "routine_workers_running",
            "Workers running a routine now.",
            busy as u64,
        ),
        (
            "routine_waiting_for_slot",
            "Calls on workers waiting for a slot of their task's concurrency.",
            waiting,
        ),
        (
            "routine_gangs_waiting",
            "Multi-unit calls waiting for enough free slots.",
            snapshot.gangs_waiting.len() as u64,
        ),
    ] {
        single(text, name, Kind::Gauge, help, value);
    }
}
