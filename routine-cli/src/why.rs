//! `why` and `runs why`: whether a call hits or runs, and why (see
//! `routine_core::explain`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::args::WhyArgs;
use crate::config::Config;
use crate::failure::Failure;
use crate::output;
use crate::routines::find_task;
use crate::run::{arguments, encode_arguments};
use routine_core::code::OnCodeChange;
use routine_core::explain::{self, CodeSince, Explanation, Reason, Subject, Written};
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
    text.push_str(&describe(&explanation, &|name| {
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
            (Some(explanation), _) => {
                text.push_str(&describe(explanation, &|name| name.to_owned()))
            }
            (None, Some(why)) => text.push_str(&format!("  not explained: {why}\n")),
            (None, None) => {}
        }
    }
    output::print(&text)
}

/// The explanation in lines for people; `argument` shows a differing
/// argument by name (with its value when known and small).
fn describe(explanation: &Explanation, argument: &dyn Fn(&str) -> String) -> String {
    let now = SystemTime::now();
    match explanation {
        Explanation::Hit {
            written,
            ttl_left_secs,
            code,
        } => {
            let mut text = format!("  hits: {}\n", by(written, now));
            if let Some(left) = ttl_left_secs {
                text.push_str(&format!("  expires in {}\n", output::span(Duration::from_secs(*left))));
            }
            match code {
                CodeSince::Same => text.push_str("  code: unchanged since\n"),
                CodeSince::Changed { changes } => {
                    text.push_str("  code: changed since (the stored result is still returned: on_code_change = \"warn\")\n");
                    text.push_str(&changes_text(changes.as_deref()));
                }
            }
            text
        }
        Explanation::Run { reason } => match reason {
            Reason::NeverRun => {
                "  runs: nothing was stored for this task, at any version, before\n".into()
            }
            Reason::NewArguments { nearest: None } => {
                "  runs: new arguments (no stored call of this version records its arguments)\n".into()
            }
            Reason::NewArguments {
                nearest: Some(nearest),
            } => {
                let differing: Vec<String> =
                    nearest.differing.iter().map(|name| argument(name)).collect();
                format!(
                    "  runs: new arguments: {} differ{} from the nearest stored call\n  nearest: key {}, {}\n",
                    differing.join(", "),
                    if differing.len() == 1 { "s" } else { "" },
                    &nearest.key[..12],
                    by(&nearest.written, now)
                )
            }
            Reason::VersionChanged {
                stored_versions,
                same_arguments_in,
            } => format!(
                "  runs: a new version: results are stored for {} only{}\n",
                stored_versions.join(", "),
                same_arguments_in
                    .as_ref()
                    .map(|v| format!(" (version {v} holds these same arguments)"))
                    .unwrap_or_default()
            ),
            Reason::CodeChanged { stored, changes } => format!(
                "  runs: the code changed (on_code_change = \"rerun\"); the result of these arguments was {}\n{}",
                by(stored, now),
                changes_text(changes.as_deref())
            ),
            Reason::PolicyChanged { stored } => format!(
                "  runs: on_code_change differs from when the result of these arguments was stored \
                 (\"rerun\" puts the code in the key); it was {}\n",
                by(stored, now)
            ),
            Reason::Removed { at_unix, cause } => format!(
                "  runs: its result was {cause}, {}\n",
                output::age(UNIX_EPOCH + Duration::from_secs(*at_unix), now)
            ),
            Reason::Expired { written, ttl_secs } => format!(
                "  runs: its result expired (ttl {}): {}\n",
                output::span(Duration::from_secs(*ttl_secs)),
                by(written, now)
            ),
            Reason::Corrupt { error } => {
                format!("  runs: its stored entry is damaged ({error}); it will be computed again\n")
            }
        },
    }
}

/// `written 2h ago by host:42 (train 0.1.0, commit 3f2c1a9) in run 1a2b…, body 1.2 s, code 4f…`.
fn by(written: &Written, now: SystemTime) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(written.at_unix);
    let mut text = format!(
        "written {} ({})",
        output::age(at, now),
        output::timestamp(at)
    );
    if let Some(writer) = &written.writer {
        text.push_str(&format!(" by {}", writer.process));
        let program = match (&writer.program, &writer.version) {
            (Some(program), Some(version)) => Some(format!("{program} {version}")),
            (Some(program), None) => Some(program.clone()),
            _ => None,
        };
        match (program, &writer.commit) {
            (Some(program), Some(commit)) => {
                text.push_str(&format!(" ({program}, commit {commit})"))
            }
            (Some(program), None) => text.push_str(&format!(" ({program})")),
            _ => {}
        }
    }
    if let Some(run) = &written.run {
        text.push_str(&format!(" in run {}", &run[..run.len().min(12)]));
    }
    text.push_str(&format!(
        ", body {}, code {}",
        output::run_time(Duration::from_micros(written.run_time_us)),
        written.code
    ));
    text
}

fn changes_text(changes: Option<&[routine_core::code::CodeChange]>) -> String {
    match changes {
        Some(changes) => changes.iter().map(|c| format!("    {c}\n")).collect(),
        None => "    (the store keeps no record of the older code: what changed cannot be named)\n"
            .into(),
    }
}
