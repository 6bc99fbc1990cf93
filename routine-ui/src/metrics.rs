//! `/metrics`, in Prometheus' text format: what the store holds, per task
//! and version, and the runs it recorded.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use routine_core::lineage::RUNS;

use crate::calls::label;
use crate::View;

pub(crate) async fn metrics(State(view): State<View>) -> Response {
    let store = view.store.clone();
    let listed = tokio::task::spawn_blocking(move || store.list(None, None)).await;
    let listings = match listed {
        Ok(Ok(listings)) => listings,
        Ok(Err(e)) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
        Err(e) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    };
    let mut per_task: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut runs = std::collections::BTreeSet::new();
    for listing in &listings {
        if &*listing.name == RUNS {
            runs.insert(listing.version.clone());
            continue;
        }
        let entry = per_task
            .entry((listing.name.to_string(), listing.version.to_string()))
            .or_default();
        entry.0 += 1;
        entry.1 += listing.size;
    }
    let mut text = String::new();
    text.push_str("# HELP routine_stored_results Results the store holds, per task and version.\n");
    text.push_str("# TYPE routine_stored_results gauge\n");
    for ((name, version), (results, _)) in &per_task {
        let _ = writeln!(
            text,
            "routine_stored_results{{task=\"{}\",version=\"{}\"}} {results}",
            label(name),
            label(version)
        );
    }
    text.push_str(
        "# HELP routine_stored_bytes Bytes of the results the store holds, per task and version.\n",
    );
    text.push_str("# TYPE routine_stored_bytes gauge\n");
    for ((name, version), (_, bytes)) in &per_task {
        let _ = writeln!(
            text,
            "routine_stored_bytes{{task=\"{}\",version=\"{}\"}} {bytes}",
            label(name),
            label(version)
        );
    }
    text.push_str("# HELP routine_recorded_runs Runs whose records the store holds.\n");
    text.push_str("# TYPE routine_recorded_runs gauge\n");
    let _ = writeln!(text, "routine_recorded_runs {}", runs.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
