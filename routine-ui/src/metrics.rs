//! `/metrics`, in Prometheus' text format: what the store holds, per task
//! and version, and the runs it recorded.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use routine_core::lineage::RUNS;

use crate::calls::label;
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
