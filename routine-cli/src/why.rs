//! `why` and `runs why`: whether a call hits or runs, and why (see
//! `routine_core::explain`).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::args::WhyArgs;
use crate::config::Config;
use crate::failure::Failure;
use crate::output;
use crate::routines::find_task;
use crate::run::{arguments, encode_arguments};
use routine_core::code::OnCodeChange;
use routine_core::explain::{self, Explanation, Subject};
use routine_core::lineage::{self, Miss};
use routine_core::registry;
use routine_core::store::{Slot, Store};
use routine_core::{CallOutcome, RunId};

/// An argument value shown in full up to this many characters of JSON;
/// beyond, its digest.
const VALUE_SHOWN: usize = 80;

#[derive(Serialize)]
struct WhyRow {
    routine: String,
    key: String,
    #[serde(flatten)]
    explanation: Explanation,
}

pub(crate) fn why(config: &Config, args: &WhyArgs) -> Result<(), Failure> {
    let task = find_task(&args.call.routine)?;
    let given = arguments(&args.call)?;
    let encoded = encode_arguments(task, &given)?;
    let policy = task.on_code_change().unwrap_or(config.on_code_change);
    let code = task.code();
    let key_code = (policy == OnCodeChange::Rerun).then_some(&code.fingerprint);
    let (key, digests) = task
        .key_of_encoded(&encoded, key_code)
        .map_err(|e| Failure::usage(format!("cannot hash the arguments: {e}")))?;
    let store = config.open_store_to_read()?;
    let names: Vec<String> = task
        .parameters()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    let subject = Subject {
        name: task.name(),
        version: task.version(),
        key,
        arguments: digests.clone(),
        names: names.clone(),
        code: Some(code),
        ttl: task.ttl(),
        as_of: None,
    };
    let explanation = explain::explain(&*store, &subject)?;
    if args.json {
        return output::print_json(&WhyRow {
            routine: task.id().to_string(),
            key: key.to_hex(),
            explanation,
        });
    }
    let value_of = |name: &str| -> Option<String> {
        let value = given.object.get(name)?;
        let text = value.to_string();
        (text.len() <= VALUE_SHOWN).then_some(text)
    };
    let mut text = format!("{} (key {})\n", task.id(), key.short());
    text.push_str(&lines(&explanation, &|name| {
        let index = names.iter().position(|n| n == name);
        match (value_of(name), index.and_then(|i| digests.get(i))) {
            (Some(value), _) => format!("{name} = {value}"),
            (None, Some(digest)) => format!("{name} (digest {})", &digest.to_hex()[..12]),
            (None, None) => name.to_owned(),
        }
    }));
    if matches!(explanation, Explanation::Hit { .. }) && !code.untracked.is_empty() {
        text.push_str(&format!(
            "  note: changes in its untracked calls are not seen: {}\n",
            code.untracked.join(", ")
        ));
    }
    output::print(&text)
}

/// One call of a run, explained.
#[derive(Serialize)]
struct RunCallRow {
    routine: String,
    key: String,
    outcome: CallOutcome,
    lookup: Option<Miss>,
    #[serde(flatten)]
    explanation: Option<Explanation>,
    /// Why there is no explanation.
    unexplained: Option<String>,
}

/// `runs why RUN`: each call of the run that did not hit, explained as of
/// its start.
pub(crate) fn run(store: &dyn Store, run: RunId, json: bool) -> Result<(), Failure> {
    let tree = lineage::run_tree(store, run)?;
    let mut rows = Vec::new();
    for node in &tree.calls {
        let call = &node.call;
        if call.outcome == CallOutcome::Hit {
            continue;
        }
        let started = tree.started + Duration::from_micros(call.started_us);
        let task = registry::find(&call.name, &call.version);
        let slot = Slot {
            name: &call.name,
            version: &call.version,
            key: &call.key,
        };
        let own = explain::stored_meta(store, &slot);
        let (explanation, unexplained) = match &own {
            Some(meta) if !meta.arguments.is_empty() => {
                let names = task.map_or_else(Vec::new, |task| {
                    task.parameters().iter().map(|p| p.name().to_owned()).collect()
                });
                let subject = Subject {
                    name: &call.name,
                    version: &call.version,
                    key: call.key,
                    arguments: meta.arguments.clone(),
                    names,
                    code: task.map(|task| task.code()),
                    ttl: task.and_then(|task| task.ttl()),
                    as_of: Some(started),
                };
                (Some(explain::explain(store, &subject)?), None)
            }
            Some(_) => (None, Some("its result was stored by an older routine, which did not record its arguments".to_owned())),
            None => (None, Some("no result of it is stored (it failed, or was removed since), so its arguments are not known".to_owned())),
        };
        rows.push(RunCallRow {
            routine: format!("{}@{}", call.name, call.version),
            key: call.key.to_hex(),
            outcome: call.outcome,
            lookup: call.miss,
            explanation,
            unexplained,
        });
    }
    if json {
        return output::print_json(&rows);
    }
    if rows.is_empty() {
        return output::print(&format!(
            "every call of run {} was answered from storage\n",
            run.short()
        ));
    }
    let mut text = String::new();
    for row in &rows {
        text.push_str(&format!(
            "{} (key {}) {}{}\n",
            row.routine,
            &row.key[..12],
            row.outcome.as_str(),
            row.lookup
                .map(|miss| format!(", lookup found it {}", miss.as_str()))
                .unwrap_or_default(),
        ));
        match (&row.explanation, &row.unexplained) {
            (Some(explanation), _) => text.push_str(&lines(explanation, &|name| name.to_owned())),
            (None, Some(why)) => text.push_str(&format!("  not explained: {why}\n")),
            (None, None) => {}
        }
    }
    output::print(&text)
}

/// The explanation's lines, indented under the call they explain.
fn lines(explanation: &Explanation, argument: &dyn Fn(&str) -> String) -> String {
    (explanation.describe(SystemTime::now(), argument).iter())
        .map(|line| format!("  {line}\n"))
        .collect()
}
