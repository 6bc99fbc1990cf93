//! `run`: one routine, arguments from JSON, result to JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

use super::args::RunArgs;
use super::output;
use super::progress;
use super::{Failure, Ui};
use crate::config::Config;
use crate::engine::{CallOutcome, CallReport};
use crate::invoke::Finished;
use crate::registry::{self, RoutineId, TaskSpec};

pub(crate) async fn run(config: &Config, args: &RunArgs, ui: Ui) -> Result<(), Failure> {
    let task = find_task(&args.routine)?;
    let encoded = encode_arguments(task, &arguments(args)?)?;

    // The report of the outermost call of this task tells how it went.
    let reports: Arc<Mutex<Option<CallReport>>> = Arc::default();
    let seen = Arc::clone(&reports);
    let engine = config
        .engine(move |builder| {
            builder.on_call(move |report| {
                if std::ptr::eq(report.task, task) {
                    *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
                }
            })
        })
        .await?;
    let invocation = task.invoke(&encoded, true).map_err(|e| {
        Failure::usage(format!("cannot pass the arguments to `{}`: {e}", task.id()))
    })?;
    let display = progress::Display::start(&engine, ui.progress);
    let finished = invocation.run_in(&engine, None).await;
    engine.settle().await;
    display.finish();

    let report = reports
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let how = match &report {
        Some(report) => format!(
            "{} ({}) in {}, key {}",
            match report.outcome {
                CallOutcome::Hit => "from storage",
                CallOutcome::Computed => "computed",
                CallOutcome::Dispatched => "computed on a worker",
                other => other.as_str(),
            },
            task.id(),
            output::run_time(report.elapsed),
            report.key.to_hex(),
        ),
        None => task.id().to_string(),
    };
    match finished {
        Ok(Finished::Json(value)) => {
            // Standard output holds the value alone, for scripts; how it
            // was obtained is for people.
            if !ui.quiet {
                eprintln!("{how}");
            }
            output::print_json(&value)
        }
        Ok(Finished::Stored) => output::print("null\n"),
        Ok(Finished::NotJson(why)) => Err(Failure::failed(format!(
            "{how}: the result is stored but cannot be written as JSON: {why}"
        ))),
        Err(message) => Err(Failure::failed(format!(
            "routine `{}` failed: {message}",
            task.id()
        ))),
    }
}

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

/// Splits `tname:<name>:<version>`, `<name>@<version>` or `<name>`.
pub(crate) fn split_routine(text: &str) -> Result<(String, Option<String>), Failure> {
    if text.starts_with("tname:") {
        let id: RoutineId = text.parse().map_err(|e| Failure::usage(format!("{e}")))?;
        return Ok((id.name, Some(id.version)));
    }
    match text.split_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => {
            Ok((name.to_owned(), Some(version.to_owned())))
        }
        Some(_) => Err(Failure::usage(format!(
            "`{text}` is not a routine: write NAME, NAME@VERSION or tname:NAME:VERSION"
        ))),
        None if text.is_empty() => Err(Failure::usage("the routine name is empty")),
        None => Ok((text.to_owned(), None)),
    }
}

/// "no routine `trian`; did you mean `train`?" and the list of routines.
fn unknown_routine(name: &str) -> String {
    let mut names: Vec<&'static str> = registry::tasks().map(|t| t.name()).collect();
    names.sort_unstable();
    names.dedup();
    let mut near: Vec<(f64, &str)> = names
        .iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), *candidate))
        .filter(|(score, _)| *score > 0.7)
        .collect();
    near.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut message = format!("this program has no routine `{name}`");
    let near: Vec<String> = near.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
    match near.as_slice() {
        [] => {}
        [only] => message.push_str(&format!("; did you mean {only}?")),
        [first @ .., last] => {
            message.push_str(&format!("; did you mean {} or {last}?", first.join(", ")))
        }
    }
    match names.is_empty() {
        true => message.push_str(" (it has none)"),
        false => message.push_str(&format!(
            "\nits routines: {} (see `tasks`)",
            names.join(", ")
        )),
    }
    message
}

fn listed(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// The arguments given on the command line.
struct Given {
    /// As one JSON object: `--args-json`, then each `--arg`.
    object: Map<String, Value>,
    /// The text of each `--arg` as written.
    written: HashMap<String, String>,
}

fn arguments(args: &RunArgs) -> Result<Given, Failure> {
    let mut written = HashMap::new();
    let mut object = match &args.args_json {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                return Err(Failure::usage(format!(
                    "--args-json must be a JSON object of arguments by name, not {}",
                    kind(&other)
                )))
            }
            Err(e) => {
                return Err(Failure::usage(format!(
                    "--args-json is not valid JSON: {e}"
                )))
            }
        },
    };
    for arg in &args.args {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(Failure::usage(format!(
                "--arg `{arg}` has no value: write --arg NAME=VALUE"
            )));
        };
        // JSON when it parses (numbers, lists, quoted strings), else the
        // text itself: `--arg name=world` means the string "world".
        written.insert(name.to_owned(), value.to_owned());
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        object.insert(name.to_owned(), value);
    }
    Ok(Given { object, written })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Encodes each of the task's arguments from the object, in order.
fn encode_arguments(task: &TaskSpec, given: &Given) -> Result<Vec<u8>, Failure> {
    let (object, written) = (&given.object, &given.written);
    let parameters = task.parameters();
    if let Some(unknown) = object
        .keys()
        .find(|name| !parameters.iter().any(|p| p.name() == name.as_str()))
    {
        return Err(Failure::usage(format!(
            "`{}` has no argument `{unknown}`; its arguments are {}",
            task.id(),
            signature_of(task)
        )));
    }
    let mut encoded = Vec::new();
    for parameter in parameters {
        let Some(value) = object.get(parameter.name()) else {
            return Err(Failure::usage(format!(
                "missing argument `{}` ({}) of `{}`: give it with --arg {}=<value> or in --args-json",
                parameter.name(),
                parameter.type_name(),
                task.id(),
                parameter.name()
            )));
        };
        let bytes = parameter.encode_json(value.clone()).or_else(|first| {
            // `--arg label=100` where a string is expected: the text as
            // written, as a string, may fit where its JSON reading does not.
            match written.get(parameter.name()) {
                Some(text) if !value.is_string() => parameter
                    .encode_json(Value::String(text.clone()))
                    .map_err(|_| first),
                _ => Err(first),
            }
        });
        match bytes {
            Ok(bytes) => encoded.extend_from_slice(&bytes),
            Err(why) => {
                return Err(Failure::usage(format!(
                    "argument `{}` of `{}` expects `{}`, but {} does not fit: {why}",
                    parameter.name(),
                    task.id(),
                    parameter.type_name(),
                    shorten(&value.to_string()),
                )))
            }
        }
    }
    Ok(encoded)
}

fn signature_of(task: &TaskSpec) -> String {
    let parameters: Vec<String> = task
        .parameters()
        .iter()
        .map(|p| format!("`{}: {}`", p.name(), p.type_name()))
        .collect();
    match parameters.is_empty() {
        true => "none".into(),
        false => parameters.join(", "),
    }
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
