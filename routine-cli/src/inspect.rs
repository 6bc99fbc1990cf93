//! `info` and `tasks`: what the program is and what it has stored.

use serde::Serialize;

use crate::args::{JsonOnly, TasksArgs};
use crate::config::Config;
use crate::failure::Failure;
use crate::output::{self, Table};
use crate::routines::{by_routine, sorted_tasks, stored_results};
use routine_core::registry;

#[derive(Serialize)]
struct Info {
    project: String,
    config_file: Option<String>,
    store: String,
    store_from: String,
    /// A local store's layout.
    layout: Option<String>,
    /// Whether the local store is new: it gets `layout` when first used.
    new_store: bool,
    broker: Option<String>,
    broker_from: String,
    /// The broker's namespace, when there is a broker.
    namespace: Option<String>,
    policy: String,
    policy_from: String,
    tasks: usize,
    stored_results: usize,
    stored_bytes: u64,
}

pub(crate) fn info(config: &Config, args: &JsonOnly) -> Result<(), Failure> {
    let listings = stored_results(&*config.open_store_to_read()?)?;
    let layout = config.local_layout();
    let info = Info {
        project: config.project.clone(),
        config_file: config.file.as_ref().map(|f| f.display().to_string()),
        store: config.store_display(),
        store_from: config.origin_text(config.origins.store),
        layout: layout.map(|(layout, _)| layout.to_string()),
        new_store: layout.is_some_and(|(_, new)| new),
        broker: config.broker_display(),
        broker_from: config.origin_text(config.origins.broker),
        namespace: config.broker.as_ref().map(|_| config.namespace.clone()),
        policy: config.policy.to_string(),
        policy_from: config.origin_text(config.origins.policy),
        tasks: registry::tasks().count(),
        stored_results: listings.len(),
        stored_bytes: listings.iter().map(|l| l.size).sum(),
    };
    if args.json {
        return output::print_json(&info);
    }
    let namespace = match &info.namespace {
        Some(namespace) => format!("namespace {namespace}\n"),
        None => String::new(),
    };
    let layout = match (&info.layout, info.new_store) {
        (Some(layout), false) => format!("layout   {layout}\n"),
        (Some(layout), true) => format!("layout   {layout} (a new store)\n"),
        (None, _) => String::new(),
    };
    output::print(&format!(
        "project  {}\n\
         config   {}\n\
         store    {} ({})\n\
         {layout}\
         broker   {} ({})\n\
         {namespace}\
         policy   {} ({})\n\
         tasks    {}\n\
         stored   {}, {}\n",
        info.project,
        info.config_file.as_deref().unwrap_or("none"),
        info.store,
        info.store_from,
        info.broker.as_deref().unwrap_or("none"),
        info.broker_from,
        info.policy,
        info.policy_from,
        info.tasks,
        output::results(info.stored_results),
        output::size(info.stored_bytes),
    ))
}

#[derive(Serialize)]
struct TaskRow {
    id: String,
    name: &'static str,
    version: &'static str,
    signature: &'static str,
    fingerprint: String,
    ttl_seconds: Option<u64>,
    location: String,
    stored_results: usize,
    stored_bytes: u64,
}

/// `tasks --code`: one routine's code fingerprint and what it covers.
#[derive(Serialize)]
struct CodeRow {
    id: String,
    fingerprint: String,
    #[serde(flatten)]
    code: &'static routine_core::code::Code,
}

fn tasks_code(json: bool) -> Result<(), Failure> {
    let rows: Vec<CodeRow> = sorted_tasks()
        .into_iter()
        .map(|task| CodeRow {
            id: task.id().to_string(),
            fingerprint: task.fingerprint().short(),
            code: task.code(),
        })
        .collect();
    if json {
        return output::print_json(&rows);
    }
    let mut text = String::new();
    for row in rows {
        text.push_str(&format!("{} (code {})\n", row.id, row.fingerprint));
        for item in &row.code.items {
            text.push_str(&format!(
                "  {}  {} ({}:{})\n",
                item.digest.short(),
                item.name,
                item.file,
                item.line
            ));
        }
        match row.code.untracked.is_empty() {
            true => text.push_str("  untracked calls: none\n"),
            false => text.push_str(&format!(
                "  untracked calls (changes there are not seen): {}\n",
                row.code.untracked.join(", ")
            )),
        }
    }
    if text.is_empty() {
        return output::print("this program has no routines\n");
    }
    output::print(&text)
}

pub(crate) fn tasks(config: &Config, args: &TasksArgs) -> Result<(), Failure> {
    if args.code {
        return tasks_code(args.json);
    }
    let listings = stored_results(&*config.open_store_to_read()?)?;
    let stored = by_routine(&listings);
    let rows: Vec<TaskRow> = sorted_tasks()
        .into_iter()
        .map(|task| {
            let mine = stored
                .get(&(task.name(), task.version()))
                .map_or(&[][..], Vec::as_slice);
            TaskRow {
                id: task.id().to_string(),
                name: task.name(),
                version: task.version(),
                signature: task.signature(),
                fingerprint: task.fingerprint().short(),
                ttl_seconds: task.ttl().map(|ttl| ttl.as_secs()),
                location: task.location(),
                stored_results: mine.len(),
                stored_bytes: mine.iter().map(|l| l.size).sum(),
            }
        })
        .collect();
    if args.json {
        return output::print_json(&rows);
    }
    let mut table = Table::new(&[
        "ROUTINE",
        "FINGERPRINT",
        "TTL",
        "STORED",
        "SIZE",
        "SIGNATURE",
    ]);
    for row in rows {
        table.row(vec![
            row.id,
            row.fingerprint,
            row.ttl_seconds
                .map(|s| output::span(std::time::Duration::from_secs(s)))
                .unwrap_or_else(|| "-".into()),
            row.stored_results.to_string(),
            output::size(row.stored_bytes),
            row.signature.to_owned(),
        ]);
    }
    if table.is_empty() {
        return output::print("this program has no routines\n");
    }
    table.print()
}
