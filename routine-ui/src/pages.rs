//! The pages, as HTML (maud escapes every value it is given: task names,
//! arguments and results are user data).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::{self, Stream};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use std::convert::Infallible;

use routine_core::entry::{self, EntryMeta};
use routine_core::explain::{self, Explanation, Subject};
use routine_core::human::{self, age, timestamp};
use routine_core::lineage;
use routine_core::registry;
use routine_core::store::{Found, Slot, Store};
use routine_core::{Key, RunId};

use crate::assets;
use crate::View;

/// Runs on one page of `/`.
const PAGE: usize = 50;
/// The most of a value `/calls/..` shows, in bytes of JSON.
const PREVIEW: usize = 4096;

type Page = Result<Html<String>, Response>;

/// Runs `read` on the blocking pool: stores answer synchronously.
async fn reading<T: Send + 'static>(
    view: &View,
    read: impl FnOnce(&dyn Store) -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let store = view.store.clone();
    match tokio::task::spawn_blocking(move || read(&*store)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &message)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

pub(crate) fn layout(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) " · routine" }
                    style { (CSS) }
                }
                body {
                    nav { a href="/" { "Runs" } " " a href="/tasks" { "Tasks" } " " a href="/workers" { "Workers" } " " a href="/metrics" { "Metrics" } }
                    h1 { (title) }
                    (body)
                }
            }
        }
        .into_string(),
    )
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}\
nav a{margin-right:1em}code,pre{font-family:ui-monospace,monospace}pre{background:#f6f6f6;padding:.6em;overflow:auto}\
.failed,.panicked,.timed_out{color:#b00}.computed{color:#060}";

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, layout("Error", html! { p { (message) } })).into_response()
}

pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}

/// `/`: runs, newest first, filtered and paginated.
#[derive(Deserialize, Default)]
pub(crate) struct RunsQuery {
    page: Option<usize>,
    task: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    /// With a filter: how many of the newest runs earlier pages looked at.
    from: Option<usize>,
}

/// With a filter, the most runs one page reads the records of to find
/// those that fit; the page then links to the next ones.
const LOOKED_AT: usize = 500;

/// What one page of `/` found.
struct RunsFound {
    shown: Vec<lineage::RunSummary>,
    /// Runs stored since the time asked, in all.
    total: usize,
    /// With a filter: where the next page starts looking, if runs are left.
    next_from: Option<usize>,
    /// With a filter: the runs this page looked at.
    looked_at: std::ops::Range<usize>,
}

pub(crate) async fn runs(State(view): State<View>, Query(query): Query<RunsQuery>) -> Page {
    let since = match query.since.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match humantime::parse_duration(text) {
            Ok(window) => Some(SystemTime::now() - window),
            Err(e) => return Err(error(StatusCode::BAD_REQUEST, &format!("since: {e}"))),
        },
    };
    let failed_only = match query.outcome.as_deref().unwrap_or("") {
        "" | "any" => false,
        "failed" => true,
        other => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("outcome `{other}`: use `failed` or `any`"),
            ))
        }
    };
    let task = query.task.clone().filter(|t| !t.is_empty());
    let filtered = task.is_some() || failed_only;
    let page = query.page.unwrap_or(1).max(1);
    let from = query.from.unwrap_or(0);
    let wanted = task.clone();
    // Only the records of the runs shown are read (with a filter, of at
    // most LOOKED_AT runs looked at to find them).
    let found = reading(&view, move |store| {
        let text = |e: lineage::LineageError| e.to_string();
        if !filtered {
            let (total, shown) = page_of_runs(store, since, (page - 1) * PAGE)?;
            return Ok(RunsFound {
                shown,
                total,
                next_from: None,
                looked_at: 0..0,
            });
        }
        // One page of the listing, of the runs to look at.
        let chunk = lineage::recorded_runs(store, since, from, LOOKED_AT).map_err(text)?;
        let total = chunk.total;
        let mut shown = Vec::new();
        let mut at = from;
        for run in &chunk.runs {
            at += 1;
            let summary = run.summary(store).map_err(text)?;
            let fits = wanted
                .as_ref()
                .is_none_or(|t| summary.root.split('@').next() == Some(t))
                && (!failed_only || summary.failed > 0);
            if fits {
                shown.push(summary);
                if shown.len() == PAGE {
                    break;
                }
            }
        }
        Ok(RunsFound {
            shown,
            total,
            next_from: (at < total).then_some(at),
            looked_at: from..at,
        })
    })
    .await?;
    let now = SystemTime::now();
    let link = |page: usize, from: usize| {
        format!(
            "/?page={page}&from={from}&task={}&outcome={}&since={}",
            task.as_deref().unwrap_or(""),
            query.outcome.as_deref().unwrap_or(""),
            query.since.as_deref().unwrap_or("")
        )
    };
    let shown = &found.shown;
    Ok(layout(
        "Runs",
        html! {
            form method="get" action="/" {
                label { "task " input name="task" value=(task.as_deref().unwrap_or("")); }
                " "
                label { "outcome " select name="outcome" {
                    option value="any" { "any" }
                    option value="failed" selected[failed_only] { "failed" }
                } }
                " "
                label { "since " input name="since" placeholder="1h" value=(query.since.as_deref().unwrap_or("")); }
                " " button { "Filter" }
            }
            @if filtered {
                p { (runs_count(found.total)) "; runs " (found.looked_at.start + 1) " to " (found.looked_at.end) " of them, newest first, looked at for these" }
                (runs_table(shown, now))
            } @else if page == 1 && since.is_none() {
                // The newest runs: the table follows the store, a new run
                // appearing without a reload.
                script src=(assets::HTMX) {}
                script src=(assets::HTMX_SSE) {}
                // What the page shows: the stream sends only what differs.
                div id="runs" hx-ext="sse" sse-swap="message"
                    sse-connect={ "/events/runs?total=" (found.total) @if let Some(newest) = shown.first() { "&newest=" (newest.id) } } {
                    (newest_runs_html(found.total, shown, now))
                }
            } @else {
                p { (runs_count(found.total)) }
                (runs_table(shown, now))
            }
            p {
                @if filtered {
                    @if from > 0 { a href=(link(1, 0)) { "newest" } " " }
                    @if let Some(next) = found.next_from { a href=(link(page + 1, next)) { "older" } }
                } @else {
                    @if page > 1 { a href=(link(page - 1, 0)) { "newer" } " " }
                    @if page * PAGE < found.total { a href=(link(page + 1, 0)) { "older" } }
                }
            }
        },
    ))
}

/// The runs of a page, newest first.
fn runs_table(shown: &[lineage::RunSummary], now: SystemTime) -> Markup {
    html! {
        table {
            tr { th { "run" } th { "root" } th { "started" } th { "took" } th { "computed" } th { "from storage" } th { "failed" } }
            @for run in shown {
                tr {
                    td { a href={ "/runs/" (run.id) } { code { (run.id.short()) } } }
                    td { (run.root) }
                    td { (age(run.started, now)) }
                    td { (human::run_time(run.duration)) }
                    td { (run.computed) }
                    td { (run.from_storage) }
                    td class=[(run.failed > 0).then_some("failed")] { (run.failed) }
                }
            }
        }
        @if shown.is_empty() { p { "No run fits." } }
    }
}

/// The count of runs and the newest of them: what `/events/runs` sends.
fn newest_runs_html(total: usize, shown: &[lineage::RunSummary], now: SystemTime) -> Markup {
    html! {
        p { (runs_count(total)) }
        (runs_table(shown, now))
    }
}

/// `1 run`, `3 runs`.
fn runs_count(total: usize) -> String {
    match total {
        1 => "1 run".to_owned(),
        n => format!("{n} runs"),
    }
}

/// The count of runs stored since `since`, and the summaries of [`PAGE`]
/// of them after the newest `skip`.
fn page_of_runs(
    store: &dyn Store,
    since: Option<SystemTime>,
    skip: usize,
) -> Result<(usize, Vec<lineage::RunSummary>), String> {
    let recorded = lineage::recorded_runs(store, since, skip, PAGE).map_err(|e| e.to_string())?;
    let shown = (recorded.runs.iter())
        .map(|run| run.summary(store))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((recorded.total, shown))
}

/// What the page that listens to `/events/runs` shows: the count of runs
/// and the newest.
#[derive(Deserialize, Default)]
pub(crate) struct ShownRuns {
    total: Option<usize>,
    newest: Option<String>,
}

/// `/events/runs`: the newest runs again each time a run is recorded (the
/// store is asked every [`RUNS_EVERY`] for its newest run and count), from
/// what the page shows (`?total=&newest=`; else at once).
pub(crate) async fn runs_events(
    State(view): State<View>,
    Query(shown): Query<ShownRuns>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The count of runs and the newest one, as the page shows them.
    type Shown = (usize, Option<RunId>);
    let shown: Option<Shown> = shown.total.map(|total| {
        let newest = shown.newest.and_then(|id| id.parse::<RunId>().ok());
        (total, newest)
    });
    // The first look at the store is at once; the next ones wait.
    let updates = stream::unfold((view, shown, false), |(view, mut shown, wait)| async move {
        let mut wait = wait;
        loop {
            if wait {
                tokio::time::sleep(RUNS_EVERY).await;
            }
            wait = true;
            let Ok(latest) = reading(&view, |store| {
                let page = lineage::recorded_runs(store, None, 0, 1).map_err(|e| e.to_string())?;
                Ok((page.total, page.runs.first().map(|run| run.id)))
            })
            .await
            else {
                continue;
            };
            if shown == Some(latest) {
                continue;
            }
            let Ok((total, runs)) = reading(&view, |store| page_of_runs(store, None, 0)).await
            else {
                continue;
            };
            shown = Some(latest);
            let html = newest_runs_html(total, &runs, SystemTime::now()).into_string();
            return Some((Ok(Event::default().data(html)), (view, shown, true)));
        }
    });
    Sse::new(updates).keep_alive(KeepAlive::default())
}

/// How often `/events/runs` asks the store for its newest run.
const RUNS_EVERY: Duration = Duration::from_secs(2);

/// `/runs/<id>?call=<key>`: a call's neighbourhood drawn instead of the
/// run's groups.
#[derive(Deserialize, Default)]
pub(crate) struct RunQuery {
    call: Option<String>,
}

/// `/runs/<id>`: the run's lineage, grouped by task, and its calls in
/// call-tree order.
pub(crate) async fn run(
    State(view): State<View>,
    Path(id): Path<String>,
    Query(query): Query<RunQuery>,
) -> Page {
    let id: RunId = id
        .parse()
        .map_err(|e: routine_core::id::RunIdError| error(StatusCode::NOT_FOUND, &e.to_string()))?;
    let tree = reading(&view, move |store| {
        lineage::run_tree(store, id).map_err(|e| e.to_string())
    })
    .await?;
    let mut order: Vec<(usize, usize)> = Vec::new();
    let mut pending: Vec<(usize, usize)> = tree.roots().into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((index, depth)) = pending.pop() {
        order.push((index, depth));
        for child in tree.calls[index].children.iter().rev() {
            pending.push((*child, depth + 1));
        }
    }
    let focus = match query.call.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(hex) => {
            Some(Key::from_hex(hex).map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?)
        }
    };
    let drawn = match &focus {
        None => crate::graph::grouped(&tree),
        Some(key) => crate::graph::neighbourhood(&tree, key),
    }
    .map_err(|e| error(StatusCode::NOT_FOUND, &e))?;
    let mut groups: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    for node in &tree.calls {
        let routine = format!("{}@{}", node.call.name, node.call.version);
        *groups
            .entry(routine)
            .or_default()
            .entry(node.call.outcome.as_str())
            .or_default() += 1;
    }
    Ok(layout(
        &format!("Run {}", id.short()),
        html! {
            p { "started " (timestamp(tree.started)) ", " (tree.calls.len()) " calls" }
            @if let Some(trace) = &tree.trace_id { p { "trace " code { (trace) } } }
            h2 { @if focus.is_some() { "One call, its caller and the calls it awaited " a href={ "/runs/" (id) } { "(all, by task)" } } @else { "Lineage, by task" } }
            div class="graph" { (PreEscaped(&drawn)) }
            h2 { "By task" }
            table {
                tr { th { "task" } th { "calls by outcome" } }
                @for (routine, outcomes) in &groups {
                    tr { td { (routine) } td {
                        @for (outcome, n) in outcomes { span class=(outcome) { (n) " " (outcome) } " " }
                    } }
                }
            }
            h2 { "Calls" }
            table {
                tr { th { "call" } th { "key" } th { "outcome" } th { "took" } th { "where" } th { "attempts" } th { "lookup" } th { "error" } }
                @for (index, depth) in &order {
                    @let call = &tree.calls[*index].call;
                    tr {
                        td { (("· ").repeat(*depth)) a href={ "/runs/" (id) "?call=" (call.key.to_hex()) } { (call.name) "@" (call.version) } }
                        td { a href={ "/calls/" (call.name) "/" (call.version) "/" (call.key.to_hex()) "?run=" (id) } { code { (call.key.short()) } } }
                        td class=(call.outcome.as_str()) { (call.outcome.as_str()) }
                        td { (human::run_time(Duration::from_micros(call.duration_us))) }
                        td { (call.process) }
                        td { (call.attempts) }
                        td { (call.miss.map_or("", |m| m.as_str())) }
                        td class="failed" { (call.error.as_deref().map(cut).unwrap_or_default()) }
                    }
                }
            }
        },
    ))
}

/// `/calls/..?run=<id>`: the run to show the call's record of.
#[derive(Deserialize, Default)]
pub(crate) struct CallQuery {
    run: Option<String>,
    /// For a call with no stored result: compare it with the task's stored
    /// calls to say why it would run (reads the task's listing: on demand).
    why: Option<bool>,
}

/// A message cut to fit a table cell.
fn cut(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `/calls/<name>/<version>/<key>`: one call: its stored result, if any,
/// and its record in a run (`?run=`, or the run that stored the result).
pub(crate) async fn call(
    State(view): State<View>,
    Path((name, version, key)): Path<(String, String, String)>,
    Query(query): Query<CallQuery>,
) -> Page {
    let key = Key::from_hex(&key).map_err(|e| error(StatusCode::NOT_FOUND, &e.to_string()))?;
    let run: Option<RunId> = match query.run.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(text) => Some(text.parse().map_err(|e: routine_core::id::RunIdError| {
            error(StatusCode::BAD_REQUEST, &e.to_string())
        })?),
    };
    let (n, v) = (name.clone(), version.clone());
    let compare = query.why.unwrap_or(false);
    let (meta, value, explanation, record) = reading(&view, move |store| {
        let slot = Slot {
            name: &n,
            version: &v,
            key: &key,
        };
        let task = registry::find(&n, &v);
        let found = store.peek(&slot).map_err(|e| e.to_string())?;
        let (meta, value) = match found {
            None => (None, None),
            Some(found) => described(found, &key, task),
        };
        let subject = Subject {
            name: &n,
            version: &v,
            key,
            arguments: meta
                .as_ref()
                .map(|m: &EntryMeta| m.arguments.clone())
                .unwrap_or_default(),
            names: task.map_or_else(Vec::new, |t| {
                t.parameters().iter().map(|p| p.name().to_owned()).collect()
            }),
            code: task.map(|t| t.code()),
            ttl: task.and_then(|t| t.ttl()),
            as_of: None,
        };
        // A hit is explained from its own entry; a miss by comparing it
        // with the task's stored calls, which lists them: only when asked.
        let explanation = match (&meta, compare) {
            (None, false) => None,
            _ => Some(explain::explain(store, &subject).map_err(|e| e.to_string())?),
        };
        // Where, how and how often it ran: the record of its run.
        let tree = run
            .or(meta.as_ref().and_then(|m| m.run))
            .and_then(|run| lineage::run_tree(store, run).ok());
        let trace = tree.as_ref().and_then(|tree| tree.trace_id.clone());
        let record = tree
            .and_then(|tree| tree.calls.into_iter().find(|node| node.call.key == key))
            .map(|node| (node.call, trace));
        Ok((meta, value, explanation, record))
    })
    .await?;
    let now = SystemTime::now();
    let parameter_names: Vec<&str> = registry::find(&name, &version)
        .map(|task| task.parameters().iter().map(|p| p.name()).collect())
        .unwrap_or_default();
    Ok(layout(
        &format!("{name}@{version}"),
        html! {
            p { "key " code { (key.to_hex()) } }
            @if let Some((call, trace)) = &record {
                h2 { "In its run" }
                table {
                    tr { th { "outcome" } td class=(call.outcome.as_str()) { (call.outcome.as_str()) } }
                    tr { th { "took" } td { (human::run_time(Duration::from_micros(call.duration_us))) } }
                    tr { th { "where" } td { (call.process) } }
                    tr { th { "attempts" } td { (call.attempts) } }
                    @if let Some(miss) = call.miss { tr { th { "lookup found" } td { (miss.as_str()) } } }
                    @if let Some(error) = &call.error { tr { th { "error" } td class="failed" { pre { (error) } } } }
                    @if let Some(trace) = trace { tr { th { "trace" } td { code { (trace) } } } }
                    @for (i, value) in call.arguments.iter().enumerate() {
                        tr {
                            // By name when this program has the task, else by place.
                            th { "argument " (parameter_names.get(i).map_or_else(|| (i + 1).to_string(), |name| name.to_string())) }
                            td { code { (value) } }
                        }
                    }
                }
            }
            @if let Some(meta) = &meta {
                h2 { "Stored result" }
                table {
                    tr { th { "computed" } td { (timestamp(meta.created_at)) " (" (age(meta.created_at, now)) ")" } }
                    tr { th { "body ran" } td { (human::run_time(meta.run_time)) } }
                    tr { th { "size" } td { (human::size(meta.payload_len)) } }
                    tr { th { "code" } td { code { (meta.fingerprint.short()) } } }
                    @if let Some(run) = meta.run { tr { th { "run" } td { a href={ "/runs/" (run) } { code { (run.short()) } } } } }
                    @if let Some(parent) = meta.parent { tr { th { "awaited by" } td { code { (parent.short()) } } } }
                }
            } @else {
                p { "No result is stored under this key." }
            }
            h2 { "Would a call hit or run" }
            @match &explanation {
                Some(explanation) => (explanation_html(explanation)),
                None => p {
                    "It would run. "
                    a href={ "?why=true" @if let Some(run) = &query.run { "&run=" (run) } } { "Why" }
                    " (compares it with the task's stored calls)"
                },
            }
            @if let Some(value) = &value {
                h2 { "Value" }
                pre { (value) }
            }
        },
    ))
}

/// An entry's header, and its value as JSON (a preview), when this program
/// has the task to decode it.
fn described(
    found: Found,
    key: &Key,
    task: Option<&'static registry::TaskSpec>,
) -> (Option<EntryMeta>, Option<String>) {
    let Ok(bytes) = found.into_bytes() else {
        return (None, None);
    };
    match entry::verify(&bytes, key) {
        Ok((meta, payload)) => {
            let value = task.map(|task| match task.describe_stored(&bytes[payload]) {
                Ok(json) => {
                    let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
                    if text.len() > PREVIEW {
                        let mut cut = PREVIEW;
                        while !text.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        text.truncate(cut);
                        text.push_str("\n… (cut: the whole value is larger)");
                    }
                    text
                }
                Err(e) => format!("(does not decode as this build's result type: {e})"),
            });
            (Some(meta), value)
        }
        Err(e) => (
            EntryMeta::parse(&bytes).ok(),
            Some(format!("(damaged: {e})")),
        ),
    }
}

/// `why`'s lines: the verdict, then what changed (indented) as a list.
fn explanation_html(explanation: &Explanation) -> Markup {
    let lines = explanation.describe(SystemTime::now(), &|name| name.to_owned());
    let (details, verdict): (Vec<&String>, Vec<&String>) =
        lines.iter().partition(|line| line.starts_with("  "));
    html! {
        @for line in verdict { p { (line) } }
        @if !details.is_empty() {
            ul { @for line in details { li { code { (line.trim_start()) } } } }
        }
    }
}

/// `/tasks`: every task and version with stored results, and this
/// program's tasks. The store's tallies give results, bytes and the
/// newest; only task versions with a `ttl` are listed, to count their
/// expired results.
pub(crate) async fn tasks(State(view): State<View>) -> Page {
    let now = SystemTime::now();
    let tallies = reading(&view, move |store| {
        let tallies = store.tallies().map_err(|e| e.to_string())?;
        let mut expired = BTreeMap::new();
        for tally in &tallies {
            let Some(task) = registry::find(&tally.name, &tally.version) else {
                continue;
            };
            if task.ttl().is_none() {
                continue;
            }
            let listings =
                (store.list(Some(&tally.name), Some(&tally.version))).map_err(|e| e.to_string())?;
            let count = (listings.iter())
                .filter(|l| task.expired(l.created, now))
                .count();
            expired.insert((tally.name.to_string(), tally.version.to_string()), count);
        }
        Ok((tallies, expired))
    })
    .await?;
    let (tallies, expired) = tallies;
    struct Row {
        results: u64,
        bytes: u64,
        newest: Option<SystemTime>,
        expired: Option<usize>,
    }
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for task in registry::tasks() {
        rows.entry((task.name().to_owned(), task.version().to_owned()))
            .or_insert(Row {
                results: 0,
                bytes: 0,
                newest: None,
                expired: None,
            });
    }
    for tally in tallies {
        let id = (tally.name.to_string(), tally.version.to_string());
        let expired = expired.get(&id).copied();
        rows.insert(
            id,
            Row {
                results: tally.results,
                bytes: tally.bytes,
                newest: Some(tally.newest),
                expired,
            },
        );
    }
    Ok(layout(
        "Tasks",
        html! {
            table {
                tr { th { "task" } th { "in this program" } th { "ttl" } th { "results" } th { "bytes" } th { "newest" } th { "expired (cache gc removes)" } }
                @for ((name, version), row) in &rows {
                    @let task = registry::find(name, version);
                    tr {
                        td { (name) "@" (version) }
                        td { (if task.is_some() { "yes" } else { "no" }) }
                        td { (task.and_then(|t| t.ttl()).map_or("-".to_owned(), |t| humantime::format_duration(t).to_string())) }
                        td { (row.results) }
                        td { (human::size(row.bytes)) }
                        td { (row.newest.map_or("-".to_owned(), |at| age(at, now))) }
                        td { (row.expired.map_or("-".to_owned(), |n| n.to_string())) }
                    }
                }
            }
        },
    ))
}
