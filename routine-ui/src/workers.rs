//! `/workers`: the live workers, their slots and routines, the gangs
//! running and waiting, and the dead letters. The page is whole without
//! JavaScript; with it, htmx's server-sent events extension swaps in the
//! table each event of `/workers/events` carries (one a second, rendered
//! and escaped here), so that a worker appears, changes routine or goes
//! without a reload.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use maud::{html, Markup};

use crate::assets;
use crate::cluster::ClusterSnapshot;
use routine_core::human::age;

use crate::pages::layout;
use crate::View;

/// How often the live table is sent again.
const EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn page(State(view): State<View>) -> Response {
    let table = table(&view).await;
    layout(
        "Workers",
        html! {
            script src=(assets::HTMX) {}
            script src=(assets::HTMX_SSE) {}
            div id="cluster" hx-ext="sse" sse-connect="/workers/events" sse-swap="message" { (table) }
        },
    )
    .into_response()
}

pub(crate) async fn events(
    State(view): State<View>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let updates = stream::unfold((view, true), |(view, first)| async move {
        if !first {
            tokio::time::sleep(EVERY).await;
        }
        let html = table(&view).await.into_string();
        Some((Ok(Event::default().data(html)), (view, false)))
    });
    Sse::new(updates).keep_alive(KeepAlive::default())
}

async fn table(view: &View) -> Markup {
    let Some(cluster) = &view.cluster else {
        return html! {
            p { "No broker is configured (ROUTINE_BROKER, or `broker` in routine.toml): there are no workers to show." }
        };
    };
    match cluster.snapshot().await {
        Ok(snapshot) => render(&snapshot, SystemTime::now()),
        Err(e) => html! { p class="failed" { "Cannot read the broker: " (e) } },
    }
}

fn render(snapshot: &ClusterSnapshot, now: SystemTime) -> Markup {
    html! {
        p { (snapshot.workers.len()) (if snapshot.workers.len() == 1 { " worker" } else { " workers" }) }
        table {
            tr { th { "worker" } th { "state" } th { "routine" } th { "heartbeat" } th { "serves" } th { "slots" } th { "waiting for a slot" } }
            @for worker in &snapshot.workers {
                tr {
                    td { code { (worker.id) } }
                    td { (worker.state) }
                    td { (worker.routine.as_deref().unwrap_or("-")) }
                    td { (age(worker.last_seen, now)) }
                    td { (worker.serves) " routines" }
                    td { (worker.slots) }
                    td { (worker.waiting_for_slot) }
                }
            }
        }
        @if !snapshot.queued.is_empty() {
            h2 { "Requests not yet answered" }
            table {
                tr { th { "routine" } th { "waiting or running" } }
                @for (routine, requests) in &snapshot.queued {
                    tr { td { (routine) } td { (requests) } }
                }
            }
        }
        @if !snapshot.gangs_running.is_empty() {
            h2 { "Gangs running" }
            table {
                tr { th { "gang" } th { "task" } th { "call" } th { "units (rank@worker)" } }
                @for gang in &snapshot.gangs_running {
                    tr {
                        td { code { (gang.id) } }
                        td { (gang.task) }
                        td { code { (gang.call.chars().take(12).collect::<String>()) } }
                        td { @for (rank, worker) in &gang.units { (rank) "@" (worker) " " } }
                    }
                }
            }
        }
        @if !snapshot.gangs_waiting.is_empty() {
            h2 { "Gangs waiting for free slots" }
            table {
                tr { th { "gang" } th { "task" } th { "needs" } }
                @for gang in &snapshot.gangs_waiting {
                    tr {
                        td { code { (gang.id) } }
                        td { (gang.task) }
                        td { (gang.units.0) "..=" (gang.units.1) " units" }
                    }
                }
            }
        }
        @if !snapshot.dead_letters.is_empty() {
            h2 { "Dead letters" }
            p { "Requests set aside because every worker that took them died; they will not run again by themselves." }
            table {
                tr { th { "set aside" } th { "task" } th { "call" } th { "error" } }
                @for letter in &snapshot.dead_letters {
                    tr {
                        td { (age(letter.at, now)) }
                        td { (if letter.task.is_empty() { "?" } else { &letter.task }) }
                        td { code { (letter.key.chars().take(12).collect::<String>()) } }
                        td class="failed" { "the worker running it died, " (letter.deliveries) " times" }
                    }
                }
            }
        }
    }
}
