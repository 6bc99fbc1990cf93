//! `/metrics`, in Prometheus' text format: what the store holds, per task
//! and version, and the runs it recorded.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use routine_core::lineage::RUNS;

use crate::calls::label;
use crate::cluster::ClusterSnapshot;
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
    let (tallies, runs) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
        Err(e) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    };
    let mut text = String::new();
    text.push_str("# HELP routine_stored_results Results the store holds, per task and version.\n");
    text.push_str("# TYPE routine_stored_results gauge\n");
    for tally in &tallies {
        let _ = writeln!(
            text,
            "routine_stored_results{{task=\"{}\",version=\"{}\"}} {}",
            label(&tally.name),
            label(&tally.version),
            tally.results
        );
    }
    text.push_str(
        "# HELP routine_stored_bytes Bytes of the results the store holds, per task and version.\n",
    );
    text.push_str("# TYPE routine_stored_bytes gauge\n");
    for tally in &tallies {
        let _ = writeln!(
            text,
            "routine_stored_bytes{{task=\"{}\",version=\"{}\"}} {}",
            label(&tally.name),
            label(&tally.version),
            tally.bytes
        );
    }
    text.push_str("# HELP routine_recorded_runs Runs whose records the store holds.\n");
    text.push_str("# TYPE routine_recorded_runs gauge\n");
    let _ = writeln!(text, "routine_recorded_runs {runs}");
    // With a broker: the cluster's queues, slots and workers.
    if let Some(cluster) = &view.cluster {
        match cluster.snapshot().await {
            Ok(snapshot) => cluster_metrics(&mut text, &snapshot),
            Err(e) => tracing::warn!(error = %e, "/metrics: cannot read the broker"),
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The cluster's gauges: requests not yet answered per routine, workers,
/// slots, calls waiting for a slot, gangs waiting.
fn cluster_metrics(text: &mut String, snapshot: &ClusterSnapshot) {
    text.push_str("# HELP routine_queue_depth Requests sent to workers and not yet answered (waiting or running), per routine.\n");
    text.push_str("# TYPE routine_queue_depth gauge\n");
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
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}
