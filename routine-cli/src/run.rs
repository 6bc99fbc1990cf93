//! `run`: one routine, arguments from JSON, result to JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

use crate::args::RunArgs;
use crate::config::Config;
use crate::failure::Failure;
use crate::output;
use crate::output::Ui;
use crate::progress;
use routine_core::invoke::Finished;
use routine_core::registry::TaskSpec;
use routine_core::{CallOutcome, CallReport};

use crate::routines::find_task;

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
                if ui.progress {
                    progress::root_call_ended(report);
                }
            })
        })
        .await?;
    let invocation = task.invoke(&encoded, true).map_err(|e| {
        Failure::usage(format!("cannot pass the arguments to `{}`: {e}", task.id()))
    })?;
    let display = progress::Display::start(&engine, ui.progress);
    let finished = crate::interrupt::unless_interrupted(&engine, invocation.run_in(&engine)).await;
    display.finish();
    let finished = finished?;
    engine.settle().await;

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

/// The arguments given on the command line.
pub(crate) struct Given {
    /// As one JSON object: `--args-json`, then each `--arg`.
    pub(crate) object: Map<String, Value>,
    /// The text of each `--arg` as written.
    written: HashMap<String, String>,
}

pub(crate) fn arguments(args: &RunArgs) -> Result<Given, Failure> {
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
pub(crate) fn encode_arguments(task: &TaskSpec, given: &Given) -> Result<Vec<u8>, Failure> {
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
