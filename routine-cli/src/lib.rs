//! The command line of every `#[routine::main]` program of
//! [routine](https://docs.rs/routine-engine), and the configuration it reads
//! ([`config`], usable on its own).
//!
//! ```text
//! train                      runs `main` in an engine scope
//! train info                 project, store, broker, policy, what is stored
//! train tasks                every routine: ID, signature, fingerprint, results
//! train run fit --arg epochs=300 --args-json '{"data": ..}'
//! train why fit --arg epochs=300   would it hit or run, and why
//! train worker               serves routines through the broker
//! train status               the broker's workers
//! train cache ls|show|rm|gc|stats
//! train runs ls|show|why
//! ```
//!
//! Exit codes: 0 success, 1 the routine (or `main`) failed, 2 usage or
//! configuration error, 130 interrupted by Ctrl-C (the calls in flight are
//! cancelled on the workers first). Tables for people, `--json` for scripts.
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | settings from defaults, `routine.toml`, `ROUTINE_*`, flags |
//! | `args` | the flags and subcommands, with their help |
//! | `output` | tables, sizes, times and JSON |
//! | `progress` | the live display while a workflow runs |
//! | `interrupt` | Ctrl-C: cancel the calls in flight, exit 130 |
//! | `failed_calls` | a call that failed elsewhere: one `error:` line, no panic trace |
//! | `inspect` | `info` and `tasks` |
//! | `run` | `run`: a routine from JSON arguments |
//! | `cache` | `cache ls`, `show`, `rm`, `gc`, `stats` |
//! | `cluster` | `worker` and `status` |
//! | `runs` | `runs ls`, `runs show` and `runs why`: lineage |
//! | `why` | `why` and `runs why`: why a call hits or runs |
//! | `web` | `ui`: the web view of routine-ui (feature `ui`) |

#![warn(missing_docs)]

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::FromArgMatches;

use crate::config::{Config, Overrides, ProgramIdentity};

mod args;
mod cache;
mod cluster;
pub mod config;
mod failed_calls;
mod failure;
mod inspect;
mod interrupt;
mod output;
mod program;
mod progress;
mod routines;
mod run;
mod runs;
#[cfg(feature = "telemetry")]
mod telemetry;
#[cfg(feature = "ui")]
mod web;
mod why;

pub use crate::program::{MainOutput, Program};

use crate::args::{Cli, Command};
use crate::failure::{report, Failure};
use crate::output::Ui;

/// The entry point `#[routine::main]` writes: parses the command line,
/// reads the configuration, builds the runtime and the engine, then runs
/// `user_main` in the engine's scope or the subcommand asked for.
pub fn main<F, Fut>(program: Program, user_main: F, exit: fn(Fut::Output) -> ExitCode) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let bin = std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| program.project.to_owned());
    let matches = args::command(&program, &bin).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut args::command(&program, &bin)).exit(),
    };
    let ui = Ui {
        progress: !cli.global.quiet && std::io::stderr().is_terminal(),
        quiet: cli.global.quiet,
    };
    failed_calls::quiet_their_panics();

    let overrides = Overrides {
        config: cli.global.config.clone(),
        store: cli.global.store.clone(),
        broker: cli.global.broker.clone(),
        policy: cli.global.policy.clone(),
        concurrency: match &cli.command {
            Some(Command::Worker(worker)) => worker.concurrency,
            _ => None,
        },
        task_timeout: cli.global.task_timeout.clone(),
        task_retries: cli.global.task_retries.clone(),
    };
    let mut config = match Config::load(program.project, &overrides) {
        Ok(config) => config,
        Err(e) => return report(Failure::from(e)),
    };
    // Spans are exported until this is dropped, at the end of `main`.
    let _exporting = match init_logging(cli.global.verbose, cli.global.quiet, &config) {
        Ok(exporting) => exporting,
        Err(failure) => return report(failure),
    };
    // The engines name the program as the writer of their results.
    config.program = Some(ProgramIdentity {
        name: program.project.to_owned(),
        version: program.version.to_owned(),
        commit: program.commit.map(str::to_owned),
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return report(Failure::usage(format!(
                "cannot start the async runtime: {e}"
            )))
        }
    };
    // `main` and routines that are not `Send` run on this thread, where
    // tokio forbids `block_in_place`.
    let local = tokio::task::LocalSet::new();
    let _local_thread = routine_core::blocking::local_set_thread();
    let work = std::panic::AssertUnwindSafe(|| match cli.command {
        None => local.block_on(&runtime, async {
            let engine = config
                .engine(|builder| match ui.progress {
                    true => builder.on_call(progress::root_call_ended),
                    false => builder,
                })
                .await?;
            let display = progress::Display::start(&engine, ui.progress);
            let output = interrupt::unless_interrupted(&engine, engine.scope(user_main())).await;
            display.finish();
            let output = output?;
            // Triggers started by the run end before the program does.
            engine.settle().await;
            Ok(exit(output))
        }),
        Some(command) => local
            .block_on(&runtime, dispatch(command, &config, ui))
            .map(|()| ExitCode::SUCCESS),
    });
    // A panic in `main` is a failure of the program (exit code 1), not a
    // crash: a failed call's says what failed; another has been printed by
    // the panic hook.
    let outcome = std::panic::catch_unwind(work).unwrap_or_else(|_| {
        Err(match failed_calls::last() {
            Some(message) => Failure::failed(message),
            None => Failure::failed("`main` panicked"),
        })
    });
    // Routines still running on other tasks are abandoned, not awaited.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => code,
        Err(failure) => report(failure),
    }
}

async fn dispatch(command: Command, config: &Config, ui: Ui) -> Result<(), Failure> {
    match command {
        Command::Info(args) => inspect::info(config, &args),
        Command::Tasks(args) => inspect::tasks(config, &args),
        Command::Run(args) => run::run(config, &args, ui).await,
        Command::Why(args) => why::why(config, &args),
        Command::Worker(args) => cluster::worker(config, ui, &args).await,
        Command::Status(args) => cluster::status(config, &args).await,
        Command::Cache(command) => cache::cache(config, command),
        Command::Runs(command) => runs::runs(config, command),
        #[cfg(feature = "ui")]
        Command::Ui(args) => web::ui(config, args).await,
    }
}

/// Logs go to standard error through `tracing-subscriber`: `-v` (info),
/// `-vv` (debug), `-vvv` (trace), else `RUST_LOG` (`target=level,..`), else
/// warnings; `--quiet` keeps errors only. With the `telemetry` feature and
/// an OTLP endpoint configured, spans are exported there too (what the
/// returned value flushes when dropped).
fn init_logging(verbose: u8, quiet: bool, config: &Config) -> Result<Exporting, Failure> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;

    let level = |level: LevelFilter| Targets::new().with_default(level);
    let filter = match (quiet, verbose) {
        (true, _) => level(LevelFilter::ERROR),
        (false, 0) => std::env::var("RUST_LOG")
            .ok()
            .and_then(|text| text.parse::<Targets>().ok())
            .unwrap_or_else(|| level(LevelFilter::WARN)),
        (false, 1) => level(LevelFilter::INFO),
        (false, 2) => level(LevelFilter::DEBUG),
        (false, _) => level(LevelFilter::TRACE),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(progress::LogWriter::default)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(layer.with_filter(filter));
    match config.otlp_endpoint.as_deref() {
        #[cfg(feature = "telemetry")]
        Some(endpoint) => {
            // routine's spans at info and above, whatever the log level.
            let (spans, exporting) = telemetry::layer(endpoint, &config.project)?;
            let spans = spans.with_filter(Targets::new().with_default(LevelFilter::INFO));
            // A program that set its own subscriber keeps it.
            let _ = registry.with(spans).try_init();
            Ok(Some(exporting))
        }
        #[cfg(not(feature = "telemetry"))]
        Some(_) => {
            let _ = registry.try_init();
            eprintln!(
                "warning: an OTLP endpoint is configured (ROUTINE_OTLP_ENDPOINT or [telemetry]), \
                 but this program was built without routine's `telemetry` feature: no spans are exported"
            );
            Ok(None)
        }
        None => {
            let _ = registry.try_init();
            Ok(None)
        }
    }
}

/// What flushes exported spans when dropped, if any are exported.
#[cfg(feature = "telemetry")]
type Exporting = Option<telemetry::Exporting>;
#[cfg(not(feature = "telemetry"))]
type Exporting = Option<std::convert::Infallible>;
