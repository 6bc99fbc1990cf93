//! The command line of every `#[routine::main]` program.
//!
//! ```text
//! train                      runs `main` in an engine scope
//! train info                 project, store, broker, policy, what is stored
//! train tasks                every routine: ID, signature, fingerprint, results
//! train run fit --arg epochs=300 --args-json '{"data": ..}'
//! train worker               serves routines through the broker
//! train status               the broker's workers
//! train cache ls|show|rm|gc|stats
//! train runs ls|show
//! ```
//!
//! Exit codes: 0 success, 1 the routine (or `main`) failed, 2 usage or
//! configuration error. Tables for people, `--json` for scripts.
//!
//! | module | concern |
//! |---|---|
//! | `args` | the flags and subcommands, with their help |
//! | `output` | tables, sizes, times and JSON |
//! | `progress` | the live display while a workflow runs |
//! | `inspect` | `info` and `tasks` |
//! | `run` | `run`: a routine from JSON arguments |
//! | `cache` | `cache ls`, `show`, `rm`, `gc`, `stats` |
//! | `cluster` | `worker` and `status` |
//! | `runs` | `runs ls` and `runs show`: lineage |

use std::fmt;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::FromArgMatches;

use crate::config::{Config, ConfigError, Overrides};

mod args;
mod cache;
mod cluster;
mod inspect;
mod output;
mod progress;
mod run;
mod runs;

use self::args::{Cli, Command};

/// What `#[routine::main]` knows of the program.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// The program's name: `project = ".."` or the binary's name.
    pub project: &'static str,
    /// The doc comment of `main`, shown by `--help`.
    pub about: &'static str,
    /// The crate's version.
    pub version: &'static str,
}

/// What `main` may return: `()`, `Result<(), E>` with a displayable `E`,
/// or an [`ExitCode`].
#[diagnostic::on_unimplemented(
    message = "`#[routine::main]` cannot end the program with a `{Self}`",
    note = "return `()`, `Result<(), E>` where `E` implements `Display` (such as `Box<dyn Error>`), or `std::process::ExitCode`"
)]
pub trait MainOutput {
    /// The process's exit code; an error is printed first.
    fn exit_code(self) -> ExitCode;
}

impl MainOutput for () {
    fn exit_code(self) -> ExitCode {
        ExitCode::SUCCESS
    }
}

impl MainOutput for ExitCode {
    fn exit_code(self) -> ExitCode {
        self
    }
}

impl<E: fmt::Display> MainOutput for Result<(), E> {
    fn exit_code(self) -> ExitCode {
        match self {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                progress::clear();
                eprintln!("error: {e}");
                ExitCode::from(FAILED)
            }
        }
    }
}

/// The routine or `main` failed.
const FAILED: u8 = 1;
/// The command line or the configuration is wrong, or a service it names
/// does not answer.
const USAGE: u8 = 2;

/// How the program talks to the person at the terminal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ui {
    /// Show the live progress display.
    pub(crate) progress: bool,
    /// `--quiet`: no summaries on standard error.
    pub(crate) quiet: bool,
}

/// Why a command did not succeed: a message and its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The routine failed: exit code 1.
    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: FAILED,
            message: message.into(),
        }
    }

    /// Bad input or configuration: exit code 2.
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::usage(e.to_string())
    }
}

/// Setting up an engine or a store fails on configuration: a store that
/// cannot be opened, a broker that does not answer.
impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        Failure::usage(e.to_string())
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::usage(format!("the store cannot be used: {e}"))
    }
}

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
    init_logging(cli.global.verbose, cli.global.quiet);

    let overrides = Overrides {
        config: cli.global.config.clone(),
        store: cli.global.store.clone(),
        broker: cli.global.broker.clone(),
        policy: cli.global.policy.clone(),
        concurrency: match &cli.command {
            Some(Command::Worker(worker)) => worker.concurrency,
            _ => None,
        },
    };
    let config = match Config::load(program.project, &overrides) {
        Ok(config) => config,
        Err(e) => return report(Failure::from(e)),
    };
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
    let _local_thread = crate::blocking::local_set_thread();
    let work = std::panic::AssertUnwindSafe(|| match cli.command {
        None => local.block_on(&runtime, async {
            let engine = config.engine(|builder| builder).await?;
            let display = progress::Display::start(&engine, ui.progress);
            let output = engine.scope(user_main()).await;
            // Triggers started by the run end before the program does.
            engine.settle().await;
            display.finish();
            Ok(exit(output))
        }),
        Some(command) => local
            .block_on(&runtime, dispatch(command, &config, ui))
            .map(|()| ExitCode::SUCCESS),
    });
    // A panic in `main` has been printed by the panic hook; it is a failure
    // of the program (exit code 1), not a crash.
    let outcome =
        std::panic::catch_unwind(work).unwrap_or_else(|_| Err(Failure::failed("`main` panicked")));
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
        Command::Worker(_) => cluster::worker(config).await,
        Command::Status(args) => cluster::status(config, &args).await,
        Command::Cache(command) => cache::cache(config, command),
        Command::Runs(command) => runs::runs(config, command),
    }
}

fn report(failure: Failure) -> ExitCode {
    progress::clear();
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {}", failure.message);
    ExitCode::from(failure.code)
}

/// Logs go to standard error through `tracing-subscriber`: `-v` (info),
/// `-vv` (debug), `-vvv` (trace), else `RUST_LOG` (`target=level,..`), else
/// warnings; `--quiet` keeps errors only.
fn init_logging(verbose: u8, quiet: bool) {
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
    // A program that set its own subscriber keeps it.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}
