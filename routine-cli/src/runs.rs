//! `runs ls` and `runs show`: the runs recorded in the store, and the call
//! tree of one.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::args::{RunsCommand, ShowRunArgs};
use crate::config::Config;
use crate::failure::Failure;
use crate::output::{self, Table};
use routine_core::lineage::{self, CallNode, LineageError, RunSummary, RunTree};
use routine_core::store::Store;
use routine_core::RunId;

impl From<LineageError> for Failure {
    fn from(e: LineageError) -> Self {
        match e {
            LineageError::Store(e) => Failure::from(e),
            other => Failure::usage(other.to_string()),
        }
    }
}

pub(crate) fn runs(config: &Config, command: RunsCommand) -> Result<(), Failure> {
    let store = config.open_store_to_read()?;
    match command {
        RunsCommand::Ls(args) => ls(&*store, args.json),
        RunsCommand::Show(args) => show(&*store, &args),
        RunsCommand::Why(args) => {
            let run = find_run(&*store, &args.run)?;
            crate::why::run(&*store, run, args.json)
        }
    }
}

#[derive(Serialize)]
struct RunRow {
    id: String,
    root: String,
    started: u64,
    duration_seconds: f64,
    computed: usize,
    from_storage: usize,
    failed: usize,
}

impl From<&RunSummary> for RunRow {
    fn from(run: &RunSummary) -> Self {
        RunRow {
            id: run.id.to_string(),
            root: run.root.clone(),
            started: output::unix_seconds(run.started),
            duration_seconds: run.duration.as_secs_f64(),
            computed: run.computed,
            from_storage: run.from_storage,
            failed: run.failed,
        }
    }
}

fn ls(store: &dyn Store, json: bool) -> Result<(), Failure> {
    let runs = lineage::runs(store)?;
    let rows: Vec<RunRow> = runs.iter().map(RunRow::from).collect();
    if json {
        return output::print_json(&rows);
    }
    if runs.is_empty() {
        return output::print("no runs are recorded in this store\n");
    }
    let now = SystemTime::now();
    let mut table = Table::new(&[
        "RUN",
        "ROOT",
        "STARTED",
        "DURATION",
        "COMPUTED",
        "FROM STORAGE",
        "FAILED",
    ]);
    for run in &runs {
        table.row(vec![
            run.id.short(),
            run.root.clone(),
            output::age(run.started, now),
            output::run_time(run.duration),
            run.computed.to_string(),
            run.from_storage.to_string(),
            run.failed.to_string(),
        ]);
    }
    table.print()
}

/// The one recorded run whose ID starts with `prefix` (checked by
/// [`hex_prefix`](super::args::hex_prefix) as the command line is parsed).
fn find_run(store: &dyn Store, prefix: &str) -> Result<RunId, Failure> {
    let mut ids: Vec<String> = store
        .list(Some(lineage::RUNS), None)?
        .into_iter()
        .map(|l| l.version.to_string())
        .filter(|id| id.starts_with(prefix))
        .collect();
    ids.dedup();
    match ids.as_slice() {
        [] => Err(Failure::usage(format!(
            "no recorded run starts with `{prefix}`"
        ))),
        [one] => one
            .parse()
            .map_err(|e: routine_core::id::RunIdError| Failure::usage(e.to_string())),
        several => Err(Failure::usage(format!(
            "`{prefix}` starts {} runs; give more digits: {}",
            several.len(),
            several.join(", ")
        ))),
    }
}

#[derive(Serialize)]
struct ShownRun<'a> {
    #[serde(flatten)]
    run: RunRow,
    roots: Vec<usize>,
    calls: &'a [CallNode],
    /// Its trace, when its processes exported spans (feature `telemetry`).
    trace_id: Option<&'a str>,
}

fn show(store: &dyn Store, args: &ShowRunArgs) -> Result<(), Failure> {
    let id = find_run(store, &args.run)?;
    let tree = lineage::run_tree(store, id)?;
    let summary = tree.summary();
    if args.json {
        return output::print_json(&ShownRun {
            run: RunRow::from(&summary),
            roots: tree.roots(),
            calls: &tree.calls,
            trace_id: tree.trace_id.as_deref(),
        });
    }
    if args.dot {
        return output::print(&dot(&tree));
    }
    let mut text = format!(
        "run {id}: {}, started {}, took {}; {} computed, {} from storage, {} failed\n",
        summary.root,
        output::timestamp(summary.started),
        output::run_time(summary.duration),
        summary.computed,
        summary.from_storage,
        summary.failed,
    );
    if let Some(trace) = &tree.trace_id {
        text.push_str(&format!("trace {trace}\n"));
    }
    let width = tree
        .roots()
        .into_iter()
        .map(|root| label_width(&tree, root, 0))
        .max()
        .unwrap_or(0);
    for root in tree.roots() {
        draw(&tree, root, "", "", width, &mut text);
    }
    output::print(&text)
}

/// Characters of tree drawing each level adds before a label: `│  `
/// or `├─ `.
const LEVEL_INDENT: usize = 3;

/// The widest label under `node` (itself included), with its drawing, at
/// `level`: where the columns after the labels start.
fn label_width(tree: &RunTree, node: usize, level: usize) -> usize {
    let node = &tree.calls[node];
    let call = &node.call;
    let own = LEVEL_INDENT * level + call.name.chars().count() + 1 + call.version.chars().count();
    let units = node.units.iter().map(|u| {
        LEVEL_INDENT * (level + 1) + format!("unit {} of {}", u.rank, u.count).chars().count()
    });
    node.children
        .iter()
        .map(|&child| label_width(tree, child, level + 1))
        .chain(units)
        .fold(own, usize::max)
}

fn outcome_text(node: &CallNode) -> String {
    let text = match (node.call.outcome.as_str(), node.on_worker) {
        ("dispatched", _) => "computed on a worker".to_owned(),
        ("hit", _) => "from storage".to_owned(),
        (outcome, true) => format!("{outcome} on {}", node.call.process),
        (outcome, false) => outcome.to_owned(),
    };
    match node.call.attempts {
        0 | 1 => text,
        attempts => format!("{text} after {attempts} attempts"),
    }
}

fn draw(tree: &RunTree, node: usize, lead: &str, branch: &str, width: usize, out: &mut String) {
    let n = &tree.calls[node];
    let label = format!("{lead}{branch}{}@{}", n.call.name, n.call.version);
    let _ = writeln!(
        out,
        "{label}{:pad$}  {}  {:>9}  {}",
        "",
        n.call.key.short(),
        output::run_time(Duration::from_micros(n.call.duration_us)),
        outcome_text(n),
        // Counted in characters: the tree's drawing takes several bytes each.
        pad = width.saturating_sub(label.chars().count()),
    );
    let children = &n.children;
    let next_lead = format!(
        "{lead}{}",
        match branch {
            "" => "",
            "├─ " => "│  ",
            _ => "   ",
        }
    );
    // A multi-unit call's units, before the calls they made.
    for (i, unit) in n.units.iter().enumerate() {
        let last = i + 1 == n.units.len() && children.is_empty();
        let label = format!(
            "{next_lead}{}unit {} of {}",
            if last { "└─ " } else { "├─ " },
            unit.rank,
            unit.count
        );
        let place = match unit.process == n.call.process {
            true => String::new(),
            false => format!(" on {}", unit.process),
        };
        let _ = writeln!(
            out,
            "{label}{:pad$}  {:12}  {:>9}  {}{place}",
            "",
            "",
            output::run_time(Duration::from_micros(unit.duration_us)),
            unit.ended,
            pad = width.saturating_sub(label.chars().count()),
        );
    }
    for (i, &child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        draw(
            tree,
            child,
            &next_lead,
            if last { "└─ " } else { "├─ " },
            width,
            out,
        );
    }
}

/// The tree as a Graphviz `digraph`: `runs show <id> --dot | dot -Tsvg`.
fn dot(tree: &RunTree) -> String {
    let mut out = format!(
        "digraph \"run {}\" {{\n  node [shape=box, fontname=monospace];\n",
        tree.id
    );
    for (i, node) in tree.calls.iter().enumerate() {
        let color = match node.call.outcome.as_str() {
            "computed" => "palegreen",
            "hit" => "lightblue",
            "failed" | "panicked" | "timed-out" => "salmon",
            _ => "lightgrey",
        };
        let _ = writeln!(
            out,
            "  n{i} [label=\"{}@{}\\n{}\\n{} {}\", style=filled, fillcolor={color}];",
            node.call.name,
            node.call.version,
            node.call.key.short(),
            outcome_text(node),
            output::run_time(Duration::from_micros(node.call.duration_us)),
        );
    }
    for (i, node) in tree.calls.iter().enumerate() {
        for child in &node.children {
            let _ = writeln!(out, "  n{i} -> n{child};");
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use routine_core::lineage::{CallRecord, RunTree};
    use routine_core::{CallOutcome, Key};

    fn node(outcome: CallOutcome, attempts: u32, on_worker: bool) -> CallNode {
        CallNode {
            call: CallRecord {
                name: "fit".into(),
                version: "1.0.0".into(),
                key: Key::of("fit", "1.0.0", &1_u32).unwrap(),
                parent: None,
                outcome,
                started_us: 0,
                duration_us: 10,
                process: "gpu-1:42".into(),
                attempts,
                miss: None,
                error: None,
                arguments: Vec::new(),
            },
            children: Vec::new(),
            on_worker,
            units: Vec::new(),
        }
    }

    #[test]
    fn keys_line_up_at_every_depth() {
        let mut calls: Vec<CallNode> = ["a-workflow", "b", "a-rather-long-task-name", "c"]
            .into_iter()
            .map(|name| {
                let mut n = node(CallOutcome::Computed, 1, false);
                n.call.name = name.into();
                n
            })
            .collect();
        // a-workflow ── b ── a-rather-long-task-name, and c beside b.
        calls[0].children = vec![1, 3];
        calls[1].children = vec![2];
        let tree = RunTree {
            id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            started: std::time::SystemTime::UNIX_EPOCH,
            calls,
            trace_id: None,
        };
        let mut text = String::new();
        let width = label_width(&tree, 0, 0);
        draw(&tree, 0, "", "", width, &mut text);
        let key = tree.calls[0].call.key.short();
        let columns: Vec<usize> = text
            .lines()
            .map(|line| line[..line.find(&key).unwrap()].chars().count())
            .collect();
        assert_eq!(columns.len(), 4, "{text}");
        assert!(columns.iter().all(|&c| c == columns[0]), "{text}");
    }

    #[test]
    fn retried_calls_say_how_many_attempts_they_took() {
        assert_eq!(
            outcome_text(&node(CallOutcome::Computed, 1, false)),
            "computed"
        );
        assert_eq!(
            outcome_text(&node(CallOutcome::Computed, 3, false)),
            "computed after 3 attempts"
        );
        assert_eq!(
            outcome_text(&node(CallOutcome::TimedOut, 2, true)),
            "timed-out on gpu-1:42 after 2 attempts"
        );
    }
}
