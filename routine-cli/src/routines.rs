//! The routines a command line names, and the results stored for them:
//! what `run`, `tasks`, `info` and `cache` share.

use std::collections::BTreeMap;

use routine_core::lineage;
use routine_core::registry::{self, TaskSpec};
use routine_core::store::{self, Listing, Store};
use routine_core::RoutineId;

use crate::failure::Failure;

/// The task a command line names: `tname:<name>:<version>`,
/// `<name>@<version>`, or `<name>` when the program has one version of it.
pub(crate) fn find_task(text: &str) -> Result<&'static TaskSpec, Failure> {
    let (name, version) = split_routine(text)?;
    let versions: Vec<&'static TaskSpec> = registry::tasks().filter(|t| t.name() == name).collect();
    if versions.is_empty() {
        return Err(Failure::usage(unknown_routine(&name)));
    }
    match version {
        Some(version) => versions
            .iter()
            .find(|t| t.version() == version)
            .copied()
            .ok_or_else(|| {
                Failure::usage(format!(
                    "this program has no version {version} of `{name}`; it has {}",
                    listed(versions.iter().map(|t| t.version().to_owned()))
                ))
            }),
        None if versions.len() == 1 => Ok(versions[0]),
        None => Err(Failure::usage(format!(
            "`{name}` has several versions here; name one: {}",
            listed(versions.iter().map(|t| format!("{name}@{}", t.version())))
        ))),
    }
}

/// Splits `tname:<name>:<version>`, `<name>@<version>` or `<name>`, each
/// part checked against what names and versions may be.
pub(crate) fn split_routine(text: &str) -> Result<(String, Option<String>), Failure> {
    let (name, version) = if text.starts_with("tname:") {
        let id: RoutineId = text.parse().map_err(|e| Failure::usage(format!("{e}")))?;
        (id.name, Some(id.version))
    } else {
        match text.split_once('@') {
            Some((name, version)) if !name.is_empty() && !version.is_empty() => {
                (name.to_owned(), Some(version.to_owned()))
            }
            Some(_) => {
                return Err(Failure::usage(format!(
                    "`{text}` is not a routine: write NAME, NAME@VERSION or tname:NAME:VERSION"
                )))
            }
            None if text.is_empty() => return Err(Failure::usage("the routine name is empty")),
            None => (text.to_owned(), None),
        }
    };
    if store::check_name(&name).is_err() {
        return Err(Failure::usage(format!(
            "`{name}` is not a routine name: names are letters, digits, `_`, `.` and `-`, \
             starting with a letter or digit"
        )));
    }
    if let Some(version) = &version {
        if store::check_version(version).is_err() {
            return Err(Failure::usage(format!(
                "`{version}` is not a version: versions are letters, digits, `_`, `.`, `-` and \
                 `+`, such as 1.0.0"
            )));
        }
    }
    Ok((name, version))
}

/// "no routine `trian`; did you mean `train`?" and the list of routines.
fn unknown_routine(name: &str) -> String {
    let mut names: Vec<&str> = registry::tasks().map(|t| t.name()).collect();
    names.sort_unstable();
    names.dedup();
    let mut message = format!("this program has no routine `{name}`");
    message.push_str(&nearest(name, &names));
    match names.is_empty() {
        true => message.push_str(" (it has none)"),
        false => message.push_str(&format!(
            "\nits routines: {} (see `tasks`)",
            names.join(", ")
        )),
    }
    message
}

/// "no routine or stored result named `gret`; did you mean `greet`?": a
/// name neither this program nor `store` knows, among both's names.
pub(crate) fn unknown_name(name: &str, store: &dyn Store) -> Result<Failure, Failure> {
    let stored = stored_results(store)?;
    let mut names: Vec<&str> = registry::tasks()
        .map(|t| t.name())
        .chain(stored.iter().map(|l| &*l.name))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut message = format!("no routine of this program or stored result is named `{name}`");
    message.push_str(&nearest(name, &names));
    if !names.is_empty() {
        message.push_str(&format!(
            "\nnames: {} (see `tasks` and `cache ls`)",
            names.join(", ")
        ));
    }
    Ok(Failure::usage(message))
}

/// "; did you mean `a` or `b`?" for the names close to `name`, or nothing.
fn nearest(name: &str, names: &[&str]) -> String {
    let mut near: Vec<(f64, &str)> = names
        .iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), *candidate))
        .filter(|(score, _)| *score > 0.7)
        .collect();
    near.sort_by(|a, b| b.0.total_cmp(&a.0));
    let near: Vec<String> = near.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
    match near.as_slice() {
        [] => String::new(),
        [only] => format!("; did you mean {only}?"),
        [first @ .., last] => format!("; did you mean {} or {last}?", first.join(", ")),
    }
}

fn listed(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Every stored result. Names starting with `routine.` (which no task may
/// take) hold routine's own records: run records (see [`lineage`]), large
/// arguments sent by reference, probes. They are not results.
pub(crate) fn stored_results(store: &dyn Store) -> Result<Vec<Listing>, Failure> {
    let mut listings = store.list(None, None)?;
    listings.retain(is_result);
    Ok(listings)
}

/// Whether a listing is a routine's result, not a record the store keeps
/// for itself (the records of runs, under the reserved `routine.` names).
pub(crate) fn is_result(listing: &Listing) -> bool {
    debug_assert!(lineage::RUNS.starts_with("routine."));
    !listing.name.starts_with("routine.")
}

/// The program's tasks by name and version.
pub(crate) fn sorted_tasks() -> Vec<&'static TaskSpec> {
    let mut tasks: Vec<&'static TaskSpec> = registry::tasks().collect();
    tasks.sort_by_key(|t| (t.name(), t.version()));
    tasks
}

/// Stored results by (name, version), in that order.
pub(crate) fn by_routine(listings: &[Listing]) -> BTreeMap<(&str, &str), Vec<&Listing>> {
    let mut out: BTreeMap<(&str, &str), Vec<&Listing>> = BTreeMap::new();
    for listing in listings {
        out.entry((&listing.name, &listing.version))
            .or_default()
            .push(listing);
    }
    out
}
