//! `cache ls`, `show`, `rm`, `gc` and `stats`: the stored results, on any
//! store.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::args::{
    hex_prefix, CacheCommand, GcArgs, JsonOnly, LsArgs, MigrateArgs, RmArgs, ShowArgs,
};
use crate::config::Config;
use crate::failure::Failure;
use crate::output::{self, Table};
use crate::routines::{by_routine, is_result, split_routine, stored_results, unknown_name};
use routine_core::entry::{self, EntryMeta};
use routine_core::lineage;
use routine_core::registry::{self, TaskSpec};
use routine_core::store::gc::{self, GcPolicy};
use routine_core::store::{Found, Listing, RemovalCause, Slot, Store};

/// Entries up to this size are read whole by `show`, value included.
const SHOW_VALUE_MAX: u64 = 64 * 1024 * 1024;
/// Lines of a value `show` prints for people; `--json` prints it all.
const SHOW_VALUE_LINES: usize = 40;
/// Temporary files of writers younger than this may still be written.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

pub(crate) fn cache(config: &Config, command: CacheCommand) -> Result<(), Failure> {
    let store = || config.open_store_to_read();
    match command {
        CacheCommand::Ls(args) => ls(&*store()?, &args).inspect(|()| note_set_aside(config)),
        CacheCommand::Show(args) => show(&*store()?, &args),
        CacheCommand::Rm(args) => rm(&*store()?, &args),
        CacheCommand::Gc(args) => collect(&*store()?, &args).inspect(|()| note_set_aside(config)),
        CacheCommand::Stats(args) => stats(&*store()?, &args).inspect(|()| note_set_aside(config)),
        // A migration opens the store in both layouts itself.
        CacheCommand::Migrate(args) => migrate(config, &args),
    }
}

/// Says on standard error what databases were set aside beside a local
/// store (damaged, or of an earlier format): results the store no longer
/// reads, and disk the user may want back.
fn note_set_aside(config: &Config) {
    let Some(root) = routine_core::store::local_path(&config.store) else {
        return;
    };
    for set_aside in routine_core::store::set_aside_databases(std::path::Path::new(root)) {
        crate::progress::clear();
        eprintln!(
            "note: {} ({}, set aside {})",
            set_aside.advice(),
            output::size(set_aside.size),
            output::age(set_aside.at, SystemTime::now())
        );
    }
}

#[derive(Serialize)]
struct Migration {
    to: String,
    moved: u64,
    moved_bytes: u64,
}

/// `cache migrate --to database|files`: a local store's small results moved
/// into its database, or back into files.
fn migrate(config: &Config, args: &MigrateArgs) -> Result<(), Failure> {
    let Some(root) = routine_core::store::local_path(&config.store) else {
        return Err(Failure::usage(format!(
            "only a local store has layouts; {} is not one",
            config.store_display()
        )));
    };
    if !std::path::Path::new(root).exists() {
        return Err(Failure::usage(format!(
            "there is no store at `{root}` to migrate"
        )));
    }
    let moved = routine_core::store::migrate(std::path::Path::new(root), args.to)?;
    let migration = Migration {
        to: args.to.to_string(),
        moved: moved.results,
        moved_bytes: moved.bytes,
    };
    if args.json {
        return output::print_json(&migration);
    }
    let to = &migration.to;
    output::print(&format!(
        "moved {} ({}) to the {to} layout; open the store with `layout = \"{to}\"` (ROUTINE_LAYOUT={to})\n",
        output::results(moved.results as usize),
        output::size(moved.bytes)
    ))
}

/// One result, for `--json`.
#[derive(Serialize)]
struct Row {
    routine: String,
    name: String,
    version: String,
    key: String,
    size: u64,
    created: u64,
    last_used: u64,
    expired: bool,
    in_this_program: bool,
}

impl Row {
    fn of(listing: &Listing, now: SystemTime) -> Row {
        let task = task_of(listing);
        Row {
            routine: format!("{}@{}", listing.name, listing.version),
            name: listing.name.to_string(),
            version: listing.version.to_string(),
            key: listing.key.to_hex(),
            size: listing.size,
            created: output::unix_seconds(listing.created),
            last_used: output::unix_seconds(listing.accessed),
            expired: task.is_some_and(|task| task.expired(listing.created, now)),
            in_this_program: task.is_some(),
        }
    }
}

fn task_of(listing: &Listing) -> Option<&'static TaskSpec> {
    registry::find(&listing.name, &listing.version)
}

fn is_expired(listing: &Listing, now: SystemTime) -> bool {
    task_of(listing).is_some_and(|task| task.expired(listing.created, now))
}

/// A note for people: expired, or not a routine of this program.
fn note(listing: &Listing, now: SystemTime) -> String {
    match task_of(listing) {
        None => "not in this program".into(),
        Some(task) if task.expired(listing.created, now) => "expired".into(),
        Some(_) => String::new(),
    }
}

fn list_filtered(store: &dyn Store, filter: Option<&str>) -> Result<Vec<Listing>, Failure> {
    match filter {
        None => stored_results(store),
        Some(text) => {
            let (name, version) = split_routine(text)?;
            let listed = store.list(Some(&name), version.as_deref())?;
            // A name known nowhere is a typo, not an empty list.
            if listed.is_empty() && !is_known_name(store, &name)? {
                return Err(unknown_name(&name, store)?);
            }
            Ok(listed)
        }
    }
}

/// Whether `name` is a routine of this program or has stored results (of
/// any version).
fn is_known_name(store: &dyn Store, name: &str) -> Result<bool, Failure> {
    Ok(registry::tasks().any(|t| t.name() == name) || !store.list(Some(name), None)?.is_empty())
}

fn ls(store: &dyn Store, args: &LsArgs) -> Result<(), Failure> {
    let listings = list_filtered(store, args.routine.as_deref())?;
    let now = SystemTime::now();
    if args.json {
        let rows: Vec<Row> = listings.iter().map(|l| Row::of(l, now)).collect();
        return output::print_json(&rows);
    }
    if listings.is_empty() {
        return output::print("no stored results\n");
    }
    let mut table = Table::new(&["KEY", "ROUTINE", "SIZE", "CREATED", "LAST USED", "NOTE"]);
    for listing in &listings {
        table.row(vec![
            listing.key.short(),
            format!("{}@{}", listing.name, listing.version),
            output::size(listing.size),
            output::age(listing.created, now),
            output::age(listing.accessed, now),
            note(listing, now),
        ]);
    }
    table.print()?;
    let total: u64 = listings.iter().map(|l| l.size).sum();
    output::print(&format!(
        "{}, {}\n",
        output::results(listings.len()),
        output::size(total)
    ))
}

/// The one result whose key starts with `prefix`.
fn by_key_prefix(store: &dyn Store, prefix: &str) -> Result<Listing, Failure> {
    the_one(prefix, matching_keys(store, prefix)?)
}

/// The only one of the results `prefix` matched.
fn the_one(prefix: &str, matches: Vec<Listing>) -> Result<Listing, Failure> {
    match matches.len() {
        0 => Err(Failure::usage(format!(
            "no stored result has a key starting with `{prefix}`"
        ))),
        1 => Ok(matches.into_iter().next().expect("one match")),
        n => {
            let shown: Vec<String> = matches
                .iter()
                .take(10)
                .map(|l| format!("  {} {}@{}", l.key.short(), l.name, l.version))
                .collect();
            Err(Failure::usage(format!(
                "`{prefix}` starts {n} keys; give more digits:\n{}",
                shown.join("\n")
            )))
        }
    }
}

fn matching_keys(store: &dyn Store, prefix: &str) -> Result<Vec<Listing>, Failure> {
    let prefix = hex_prefix(prefix).map_err(Failure::usage)?;
    Ok(stored_results(store)?
        .into_iter()
        .filter(|l| l.key.to_hex().starts_with(&prefix))
        .collect())
}

#[derive(Serialize)]
struct Shown {
    #[serde(flatten)]
    row: Row,
    run_time_seconds: Option<f64>,
    fingerprint: Option<String>,
    fingerprint_matches_build: Option<bool>,
    expires: Option<u64>,
    run: Option<String>,
    parent: Option<String>,
    parent_routine: Option<String>,
    value: Option<serde_json::Value>,
    value_unavailable: Option<String>,
}

fn show(store: &dyn Store, args: &ShowArgs) -> Result<(), Failure> {
    let listing = by_key_prefix(store, &args.key)?;
    let now = SystemTime::now();
    let task = task_of(&listing);
    let slot = Slot {
        name: &listing.name,
        version: &listing.version,
        key: &listing.key,
    };
    let (meta, value) = match read_entry(store, &slot, task) {
        Ok(read) => read,
        Err(why) => (None, Err(why)),
    };
    let shown = Shown {
        row: Row::of(&listing, now),
        run_time_seconds: meta.as_ref().map(|m| m.run_time.as_secs_f64()),
        fingerprint: meta.as_ref().map(|m| m.fingerprint.short()),
        fingerprint_matches_build: match (&meta, task) {
            (Some(meta), Some(task)) => Some(meta.fingerprint == task.fingerprint()),
            _ => None,
        },
        expires: task
            .and_then(|t| t.ttl())
            .map(|ttl| output::unix_seconds(listing.created + ttl)),
        run: meta.as_ref().and_then(|m| m.run).map(|r| r.to_string()),
        parent: meta.as_ref().and_then(|m| m.parent).map(|k| k.to_hex()),
        parent_routine: meta.as_ref().and_then(|m| parent_routine(store, m)),
        value_unavailable: value.as_ref().err().cloned(),
        value: value.ok(),
    };
    if args.json {
        return output::print_json(&shown);
    }
    let mut text = String::new();
    let mut line = |label: &str, value: String| text.push_str(&format!("{label:<12} {value}\n"));
    line(
        "routine",
        match task {
            Some(task) => task.id().to_string(),
            None => format!("{} (not in this program)", shown.row.routine),
        },
    );
    line("key", shown.row.key.clone());
    line("size", output::size(listing.size));
    line(
        "created",
        format!(
            "{} ({})",
            output::timestamp(listing.created),
            output::age(listing.created, now)
        ),
    );
    line(
        "last used",
        format!(
            "{} ({})",
            output::timestamp(listing.accessed),
            output::age(listing.accessed, now)
        ),
    );
    if let Some(meta) = &meta {
        line("run time", output::run_time(meta.run_time));
        let fingerprint = match shown.fingerprint_matches_build {
            Some(true) => format!("{} (this build's)", meta.fingerprint.short()),
            Some(false) => format!(
                "{} (this build's body differs: {})",
                meta.fingerprint.short(),
                task.map(|t| t.fingerprint().short()).unwrap_or_default()
            ),
            None => meta.fingerprint.short(),
        };
        line("fingerprint", fingerprint);
        match meta.run {
            // A run that was this one call alone keeps no record (see
            // docs/lineage.md): nothing for `runs show` to show.
            Some(run) => match lineage::run_tree(store, run) {
                Ok(_) => line("run", format!("{run} (`runs show {}`)", run.short())),
                Err(_) => line(
                    "run",
                    format!("{run} (this call alone: no record of calls)"),
                ),
            },
            None => line("run", "not recorded (stored before lineage)".into()),
        }
        match (meta.parent, &shown.parent_routine) {
            (Some(parent), Some(routine)) => {
                line("awaited by", format!("{} ({routine})", parent.short()))
            }
            (Some(parent), None) => line("awaited by", parent.short()),
            (None, _) if meta.run.is_some() => {
                line("awaited by", "nothing: the root of its run".into())
            }
            (None, _) => {}
        }
    }
    match task.and_then(|t| t.ttl()) {
        Some(ttl) => {
            let at = listing.created + ttl;
            let state = match at <= now {
                true => "expired".to_owned(),
                false => output::age(at, now),
            };
            line(
                "expires",
                format!(
                    "{} ({state}; ttl {})",
                    output::timestamp(at),
                    output::span(ttl)
                ),
            );
        }
        None => line("expires", "never".into()),
    }
    match (&shown.value, &shown.value_unavailable) {
        (Some(value), _) => {
            let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
            let lines: Vec<&str> = pretty.lines().collect();
            text.push_str("value\n");
            for l in lines.iter().take(SHOW_VALUE_LINES) {
                text.push_str(&format!("  {l}\n"));
            }
            if lines.len() > SHOW_VALUE_LINES {
                text.push_str(&format!(
                    "  … {} more lines (--json prints it all)\n",
                    lines.len() - SHOW_VALUE_LINES
                ));
            }
        }
        (None, Some(why)) => text.push_str(&format!("{:<12} not shown: {why}\n", "value")),
        (None, None) => {}
    }
    output::print(&text)
}

/// The routine of the call that awaited a result, from its run's record.
fn parent_routine(store: &dyn Store, meta: &EntryMeta) -> Option<String> {
    let (run, parent) = (meta.run?, meta.parent?);
    let tree = lineage::run_tree(store, run).ok()?;
    tree.calls
        .iter()
        .find(|node| node.call.key == parent)
        .map(|node| format!("{}@{}", node.call.name, node.call.version))
}

type ReadEntry = (Option<EntryMeta>, Result<serde_json::Value, String>);

/// The entry's metadata and its value as JSON (or why the value is not
/// shown).
fn read_entry(
    store: &dyn Store,
    slot: &Slot<'_>,
    task: Option<&'static TaskSpec>,
) -> Result<ReadEntry, String> {
    // Looking is not using: `cache gc` must not keep it for having been shown.
    let found = match store.peek(slot).map_err(|e| e.to_string())? {
        None => return Err("it was removed while being read".into()),
        Some(Found::Stream { mut reader, len }) if len > SHOW_VALUE_MAX => {
            let (meta, _) = entry::read_header(&mut reader).map_err(|e| e.to_string())?;
            return Ok((
                Some(meta),
                Err(format!(
                    "it is {} (over {})",
                    output::size(len),
                    output::size(SHOW_VALUE_MAX)
                )),
            ));
        }
        Some(found) => found,
    };
    let bytes = found.into_bytes().map_err(|e| e.to_string())?;
    let (meta, payload) = entry::verify(&bytes, slot.key)
        .map_err(|e| format!("the entry is damaged ({e}); the next call recomputes it"))?;
    let value = match task {
        Some(task) => task
            .describe_stored(&bytes[payload])
            .map_err(|e| format!("it does not decode as this build's result type: {e}")),
        None => Err("this program does not have the routine, so it cannot decode it".into()),
    };
    Ok((Some(meta), value))
}

#[derive(Serialize)]
struct Removal {
    dry_run: bool,
    removed: Vec<Row>,
    removed_bytes: u64,
}

fn rm(store: &dyn Store, args: &RmArgs) -> Result<(), Failure> {
    let now = SystemTime::now();
    let targets = rm_targets(store, &args.target)?;
    let mut removed_bytes = 0;
    let mut removed = Vec::new();
    let mut noted = Vec::new();
    for listing in &targets {
        let slot = Slot {
            name: &listing.name,
            version: &listing.version,
            key: &listing.key,
        };
        if args.dry_run || store.remove(&slot)? {
            removed_bytes += listing.size;
            removed.push(Row::of(listing, now));
            noted.push(slot);
        }
    }
    if !args.dry_run && !noted.is_empty() {
        // For `why`: the results are gone either way.
        if let Err(e) = store.note_removals(&noted, &RemovalCause::Removed) {
            tracing::warn!(error = %e, "cannot note the removals in the store");
        }
    }
    let removal = Removal {
        dry_run: args.dry_run,
        removed,
        removed_bytes,
    };
    if args.json {
        return output::print_json(&removal);
    }
    output::print(&format!(
        "{} {} ({})\n",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        output::results(removal.removed.len()),
        output::size(removal.removed_bytes)
    ))
}

/// `NAME@VERSION`, a name (stored or of this program), else a key prefix.
fn rm_targets(store: &dyn Store, target: &str) -> Result<Vec<Listing>, Failure> {
    let (name, version) = split_routine(target)?;
    if version.is_some() {
        return Ok(store.list(Some(&name), version.as_deref())?);
    }
    let named = routine_core::store::check_name(&name)
        .ok()
        .map(|()| store.list(Some(&name), None))
        .transpose()?
        .unwrap_or_default();
    let is_routine = !named.is_empty() || registry::tasks().any(|t| t.name() == name);
    let looks_like_a_key = target.chars().all(|c| c.is_ascii_hexdigit());
    match (is_routine, looks_like_a_key) {
        (true, _) => Ok(named),
        (false, false) => Err(unknown_name(&name, store)?),
        (false, true) => {
            let found = matching_keys(store, target)?;
            if found.is_empty() {
                return Err(Failure::usage(format!(
                    "`{target}` is neither a routine with stored results nor the start of a stored key"
                )));
            }
            the_one(target, found).map(|one| vec![one])
        }
    }
}

#[derive(Serialize)]
struct Collection {
    dry_run: bool,
    removed: Vec<Removed>,
    removed_bytes: u64,
    kept_results: usize,
    kept_bytes: u64,
    abandoned_bytes: u64,
}

#[derive(Serialize)]
struct Removed {
    #[serde(flatten)]
    row: Row,
    reason: &'static str,
}

fn collect(store: &dyn Store, args: &GcArgs) -> Result<(), Failure> {
    let now = SystemTime::now();
    let policy = GcPolicy {
        older_than: args.older_than,
        max_size: args.max_size,
    };
    let plan = gc::plan(store.list(None, None)?, &policy, now, |l| {
        is_expired(l, now)
    });
    let (removed_bytes, abandoned_bytes) = match args.dry_run {
        true => (plan.freed(), 0),
        false => (
            gc::apply(store, &plan)?,
            store.sweep_abandoned(ABANDONED_AFTER)?,
        ),
    };
    let collection = Collection {
        dry_run: args.dry_run,
        removed: plan
            .remove
            .iter()
            .map(|(listing, reason)| Removed {
                row: Row::of(listing, now),
                reason: reason.as_str(),
            })
            .collect(),
        removed_bytes,
        kept_results: plan.keep.iter().filter(|l| is_result(l)).count(),
        kept_bytes: plan
            .keep
            .iter()
            .filter(|l| is_result(l))
            .map(|l| l.size)
            .sum(),
        abandoned_bytes,
    };
    if args.json {
        return output::print_json(&collection);
    }
    if !plan.remove.is_empty() {
        let mut table = Table::new(&["KEY", "ROUTINE", "SIZE", "LAST USED", "REASON"]);
        for (listing, reason) in &plan.remove {
            table.row(vec![
                listing.key.short(),
                format!("{}@{}", listing.name, listing.version),
                output::size(listing.size),
                output::age(listing.accessed, now),
                reason.as_str().to_owned(),
            ]);
        }
        table.print()?;
    }
    // Results, as `cache stats` and `info` count them; the runs' records
    // (which `runs ls` shows) apart.
    let removed_records = plan.remove.iter().filter(|(l, _)| !is_result(l)).count();
    let mut summary = format!(
        "{} {} ({}); kept {} ({})",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        output::results(plan.remove.len() - removed_records),
        output::size(removed_bytes),
        output::results(collection.kept_results),
        output::size(collection.kept_bytes),
    );
    if removed_records > 0 {
        summary.push_str(&format!(
            "; {} {removed_records} records of runs",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            }
        ));
    }

    if abandoned_bytes > 0 {
        summary.push_str(&format!(
            "; swept {} left by killed writers",
            output::size(abandoned_bytes)
        ));
    }
    output::print(&format!("{summary}\n"))
}

#[derive(Serialize)]
struct StatsRow {
    routine: String,
    name: String,
    version: String,
    in_this_program: bool,
    results: usize,
    bytes: u64,
    expired: usize,
    oldest: u64,
    newest: u64,
    last_used: u64,
}

fn stats(store: &dyn Store, args: &JsonOnly) -> Result<(), Failure> {
    let listings = stored_results(store)?;
    let now = SystemTime::now();
    let rows: Vec<StatsRow> = by_routine(&listings)
        .into_iter()
        .map(|((name, version), mine)| {
            let task = registry::find(name, version);
            let times = |at: fn(&Listing) -> SystemTime| mine.iter().map(move |l| at(l));
            let seconds =
                |at: Option<SystemTime>| output::unix_seconds(at.unwrap_or(SystemTime::UNIX_EPOCH));
            StatsRow {
                routine: format!("{name}@{version}"),
                in_this_program: task.is_some(),
                expired: mine
                    .iter()
                    .filter(|l| task.is_some_and(|task| task.expired(l.created, now)))
                    .count(),
                oldest: seconds(times(|l| l.created).min()),
                newest: seconds(times(|l| l.created).max()),
                last_used: seconds(times(|l| l.accessed).max()),
                results: mine.len(),
                bytes: mine.iter().map(|l| l.size).sum(),
                name: name.to_owned(),
                version: version.to_owned(),
            }
        })
        .collect();
    if args.json {
        return output::print_json(&rows);
    }
    if rows.is_empty() {
        return output::print("no stored results\n");
    }
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let mut table = Table::new(&[
        "ROUTINE",
        "RESULTS",
        "SIZE",
        "EXPIRED",
        "OLDEST",
        "NEWEST",
        "LAST USED",
        "NOTE",
    ]);
    for row in &rows {
        table.row(vec![
            row.routine.clone(),
            row.results.to_string(),
            output::size(row.bytes),
            row.expired.to_string(),
            output::age(at(row.oldest), now),
            output::age(at(row.newest), now),
            output::age(at(row.last_used), now),
            match row.in_this_program {
                true => String::new(),
                false => "not in this program".into(),
            },
        ]);
    }
    let (results, bytes) = rows
        .iter()
        .fold((0, 0), |(n, b), row| (n + row.results, b + row.bytes));
    table.row(vec![
        "total".into(),
        results.to_string(),
        output::size(bytes),
        rows.iter().map(|r| r.expired).sum::<usize>().to_string(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.print()
}
