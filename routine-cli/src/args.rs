//! The flags and subcommands, with their help.

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

use crate::program::Program;
use routine_core::registry::TaskSpec;

/// A routine program's command line.
#[derive(Debug, Parser)]
#[command(disable_version_flag = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Configuration file [default: ./routine.toml, if present; env: ROUTINE_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Where results live: a folder, file:///folder or s3://bucket/prefix [env: ROUTINE_STORE]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) store: Option<String>,
    /// The Redis broker that carries work to workers [env: ROUTINE_BROKER]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) broker: Option<String>,
    /// Where awaited routines run: local or sub-routines-remote [env: ROUTINE_POLICY]
    #[arg(long, global = true, value_name = "POLICY")]
    pub(crate) policy: Option<String>,
    /// Timeout of one attempt, for tasks that set none, such as 10m [env: ROUTINE_TASK_TIMEOUT]
    #[arg(long, global = true, value_name = "DURATION")]
    pub(crate) task_timeout: Option<String>,
    /// Retries of a failed attempt, for tasks that set none [env: ROUTINE_TASK_RETRIES]
    #[arg(long, global = true, value_name = "N")]
    pub(crate) task_retries: Option<String>,
    /// More logs: -v info, -vv debug, -vvv trace (else RUST_LOG, else warnings)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub(crate) verbose: u8,
    /// No progress display and errors only in the logs
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// Print version
    #[arg(long, action = ArgAction::Version)]
    version: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The project, its store and layout, broker and policy, and what the store holds
    Info(JsonOnly),
    /// Every routine of this program: ID, signature, fingerprint, stored results
    Tasks(TasksArgs),
    /// Run one routine with arguments given as JSON and print its result as JSON
    Run(RunArgs),
    /// Whether a call would be answered from storage or run, and why
    Why(WhyArgs),
    /// Serve this program's routines to other processes through the broker
    Worker(WorkerArgs),
    /// Serve a read-only web view of the store: runs, calls, tasks, metrics
    #[cfg(feature = "ui")]
    Ui(UiArgs),
    /// The workers connected to the broker: state, current routine, last heartbeat
    Status(JsonOnly),
    /// Inspect and clean stored results
    #[command(subcommand)]
    Cache(CacheCommand),
    /// The recorded runs of root routines, and the call tree of one
    #[command(subcommand)]
    Runs(RunsCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// Every recorded run: root routine, start, duration, computed / from storage / failed
    Ls(JsonOnly),
    /// The call tree of one run: each call's routine, short key, duration and outcome
    Show(ShowRunArgs),
    /// Why each call of a run that was not answered from storage ran
    Why(WhyRunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct WhyRunArgs {
    /// The run's ID, or its first hex digits (at least 4)
    #[arg(value_name = "RUN", value_parser = hex_prefix)]
    pub(crate) run: String,
    /// Print JSON for scripts instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowRunArgs {
    /// The run's ID, or its first hex digits (at least 4)
    #[arg(value_name = "RUN", value_parser = hex_prefix)]
    pub(crate) run: String,
    /// Print JSON for scripts instead of a tree
    #[arg(long, conflicts_with = "dot")]
    pub(crate) json: bool,
    /// Print a Graphviz graph: `runs show <RUN> --dot | dot -Tsvg > run.svg`
    #[arg(long)]
    pub(crate) dot: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    /// What each routine's code fingerprint covers: its tracked items and its untracked calls
    #[arg(long)]
    pub(crate) code: bool,
    /// Print JSON for scripts instead of a table
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct JsonOnly {
    /// Print JSON for scripts instead of a table
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The routine: tname:<name>:<version>, <name>@<version>, or <name> if one version exists
    #[arg(value_name = "ROUTINE")]
    pub(crate) routine: String,
    /// One argument, NAME=VALUE; VALUE is JSON, or a string if it is not JSON
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub(crate) args: Vec<String>,
    /// All arguments as one JSON object; --arg entries override its fields
    #[arg(long, value_name = "JSON")]
    pub(crate) args_json: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct WhyArgs {
    #[command(flatten)]
    pub(crate) call: RunArgs,
    /// Print JSON for scripts instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

#[cfg(feature = "ui")]
#[derive(Debug, Args)]
pub(crate) struct UiArgs {
    /// Where to listen; an address other than loopback needs a token
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8765")]
    pub(crate) bind: std::net::SocketAddr,
    /// The token every request must carry (Authorization: Bearer, or ?token= once) [env: ROUTINE_UI_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Routines run at once [env: ROUTINE_CONCURRENCY; default: 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub(crate) concurrency: Option<usize>,
    /// Serve Prometheus metrics of this worker's calls at http://ADDR:PORT/metrics
    /// (off loopback, ROUTINE_UI_TOKEN must be set)
    #[cfg(feature = "ui")]
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// List stored results, optionally of one routine (NAME or NAME@VERSION)
    Ls(LsArgs),
    /// Everything about one stored result, its value included
    Show(ShowArgs),
    /// Remove the results of a routine (NAME or NAME@VERSION), or one result by key prefix
    Rm(RmArgs),
    /// Remove expired results, unused ones, then the least recently used beyond a size
    Gc(GcArgs),
    /// Results and bytes per routine
    Stats(JsonOnly),
    /// Move a local store to another layout: files, or a database
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The layout to move to: `database` (small results in an embedded database) or `files`
    #[arg(long, value_name = "LAYOUT", value_parser = parse_layout)]
    pub(crate) to: routine_core::store::Layout,
    /// Print JSON for scripts instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_layout(text: &str) -> Result<routine_core::store::Layout, String> {
    text.parse()
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// NAME or NAME@VERSION
    pub(crate) routine: Option<String>,
    /// Print JSON for scripts instead of a table
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The result's key, or its first hex digits (at least 4)
    #[arg(value_name = "KEY-PREFIX", value_parser = hex_prefix)]
    pub(crate) key: String,
    /// Print JSON for scripts instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// NAME, NAME@VERSION or a key prefix (at least 4 hex digits)
    pub(crate) target: String,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON for scripts instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Remove results not used for this long: 12h, 30d, 1h 30m
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub(crate) older_than: Option<std::time::Duration>,
    /// Then remove the least recently used until the rest fit: 500MB, 10GiB
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size)]
    pub(crate) max_size: Option<u64>,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON for scripts instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// Prefixes shorter than this match too much to be meant.
const MIN_PREFIX: usize = 4;

/// The first hex digits of a key or a run ID, lower-cased.
pub(crate) fn hex_prefix(text: &str) -> Result<String, String> {
    let prefix = text.to_ascii_lowercase();
    match prefix.len() >= MIN_PREFIX && prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        true => Ok(prefix),
        false => Err(format!(
            "`{text}` is not a prefix of a key or run ID: give at least {MIN_PREFIX} of its hex digits \
             (see `cache ls` or `runs ls`)"
        )),
    }
}

fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write a number and a unit, such as 12h or 30d")
    })
}

/// A routine of this program to show in examples, with arguments that
/// `run` takes as written: the first whose parameters are all numbers,
/// booleans or strings (else the first, with placeholders).
struct ExampleRoutine {
    name: String,
    version: String,
    args: String,
}

impl ExampleRoutine {
    fn pick() -> ExampleRoutine {
        let tasks = crate::routines::sorted_tasks();
        let simple = |task: &&'static TaskSpec| {
            task.parameters()
                .iter()
                .all(|p| example_value(p.type_name()).is_some())
        };
        let Some(task) = tasks
            .iter()
            .copied()
            .find(simple)
            .or(tasks.first().copied())
        else {
            return ExampleRoutine {
                name: "<name>".into(),
                version: "<version>".into(),
                args: "--arg <argument>=<value>".into(),
            };
        };
        let args = task
            .parameters()
            .iter()
            .map(|p| {
                let value = example_value(p.type_name())
                    .map_or_else(|| format!("<{}>", p.type_name()), str::to_owned);
                format!("--arg {}={value}", p.name())
            })
            .collect::<Vec<_>>()
            .join(" ");
        ExampleRoutine {
            name: task.name().to_owned(),
            version: task.version().to_owned(),
            args,
        }
    }
}

/// A value `--arg` reads as one of `type_name`, for the simple types.
fn example_value(type_name: &str) -> Option<&'static str> {
    match type_name.trim() {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => Some("7"),
        "f32" | "f64" => Some("0.5"),
        "bool" => Some("true"),
        "String" => Some("hello"),
        _ => None,
    }
}

/// The command with the program's name, description and examples, which
/// name the program's own routines.
pub(crate) fn command(program: &Program, bin: &str) -> clap::Command {
    let about = match program.about.is_empty() {
        true => format!("{} — a routine program", program.project),
        false => program.about.to_owned(),
    };
    let ExampleRoutine {
        name,
        version,
        args,
    } = ExampleRoutine::pick();
    let after_help = format!(
        "Without a command, runs the program's `main` with the configured engine.\n\n\
         Examples:\n  \
         {bin}                            run main (results in ./.routine)\n  \
         {bin} tasks                      list the routines\n  \
         {bin} run {name} {args}\n  \
         {bin} cache gc --max-size 10GiB  keep the store under 10 GiB\n\n\
         Configuration: defaults < routine.toml < ROUTINE_* variables < flags.\n\
         Exit codes: 0 success, 1 the routine failed, 2 usage or configuration error."
    );
    let examples = |lines: &[String]| format!("Examples:\n  {}", lines.join("\n  "));
    Cli::command()
        .name(program.project)
        .bin_name(bin.to_owned())
        .version(program.version)
        .about(about)
        .after_help(after_help)
        .mut_subcommand("info", |c| {
            c.after_help(examples(&[format!("{bin} info"), format!("{bin} info --json | jq .store")]))
        })
        .mut_subcommand("tasks", |c| {
            c.after_help(examples(&[format!("{bin} tasks"), format!("{bin} tasks --json")]))
        })
        .mut_subcommand("run", |c| {
            c.after_help(format!(
                "The routine runs through the engine: a stored result is returned without \
                 running it, and a new one is stored. The result goes to standard output as \
                 JSON; how it was obtained goes to standard error. A VALUE that is not JSON \
                 is taken as a string (--arg label=abc); quote it to keep a number a string \
                 (--arg 'label=\"42\"').\n\n{}",
                examples(&[
                    format!("{bin} run {name} {args}"),
                    format!("{bin} run tname:{name}:{version} {args}"),
                    format!("{bin} run {name}@{version} --args-json \"$(cat args.json)\""),
                ])
            ))
        })
        .mut_subcommand("worker", |c| {
            c.after_help(format!(
                "Needs a broker and a store shared with the callers.\n\n{}",
                examples(&[
                    format!("ROUTINE_BROKER=redis://127.0.0.1:6379 ROUTINE_STORE=s3://bucket/results {bin} worker"),
                    format!("{bin} --broker redis://10.0.0.5:6379 --store s3://bucket/results worker --concurrency 8"),
                ])
            ))
        })
        .mut_subcommand("status", |c| {
            c.after_help(examples(&[
                format!("{bin} --broker redis://127.0.0.1:6379 status"),
                format!("{bin} status --json"),
            ]))
        })
        .mut_subcommand("runs", |c| {
            c.after_help(format!(
                "Every call outside a routine's body (by main, a trigger, or `run`) is the root \
                 of a run; its sub-calls, here or on workers, belong to the same run. A root \
                 answered from storage records no run.\n\n{}",
                examples(&[
                    format!("{bin} runs ls"),
                    format!("{bin} runs show 18ec5340"),
                    format!("{bin} runs show 18ec5340 --dot | dot -Tsvg > run.svg"),
                ])
            ))
            .mut_subcommand("ls", |c| {
                c.after_help(examples(&[format!("{bin} runs ls"), format!("{bin} runs ls --json")]))
            })
            .mut_subcommand("show", |c| {
                c.after_help(examples(&[
                    format!("{bin} runs show 18ec5340"),
                    format!("{bin} runs show 18ec5340 --json"),
                    format!("{bin} runs show 18ec5340 --dot | dot -Tsvg > run.svg"),
                ]))
            })
        })
        .mut_subcommand("cache", |c| {
            c.after_help(examples(&[
                format!("{bin} cache ls {name}@{version}"),
                format!("{bin} cache show 3fa2c1"),
                format!("{bin} cache rm {name}@{version} --dry-run"),
                format!("{bin} cache gc --older-than 30d --max-size 10GiB"),
                format!("{bin} cache stats --json"),
            ]))
            .mut_subcommand("ls", |c| {
                c.after_help(examples(&[
                    format!("{bin} cache ls"),
                    format!("{bin} cache ls {name}"),
                    format!("{bin} cache ls {name}@{version} --json"),
                ]))
            })
            .mut_subcommand("show", |c| {
                c.after_help(examples(&[
                    format!("{bin} cache show 3fa2c1"),
                    format!("{bin} cache show 3fa2c1 --json | jq .value"),
                ]))
            })
            .mut_subcommand("rm", |c| {
                c.after_help(examples(&[
                    format!("{bin} cache rm {name}@{version} --dry-run"),
                    format!("{bin} cache rm {name}"),
                    format!("{bin} cache rm 3fa2c1"),
                ]))
            })
            .mut_subcommand("stats", |c| {
                c.after_help(examples(&[format!("{bin} cache stats"), format!("{bin} cache stats --json")]))
            })
            .mut_subcommand("migrate", |c| {
                c.after_help(format!(
                    "No other process may use the store meanwhile; an interrupted migration \
                     is run again.\n\n{}",
                    examples(&[
                        format!("{bin} cache migrate --to files"),
                        format!("{bin} cache migrate --to database --json"),
                    ])
                ))
            })
            .mut_subcommand("gc", |c| {
                c.after_help(format!(
                    "Always removes results whose task `ttl` has passed, and files left by \
                     writers that were killed. A read records its use (to within a minute), \
                     so --max-size keeps what is in use.\n\n{}",
                    examples(&[
                        format!("{bin} cache gc --dry-run"),
                        format!("{bin} cache gc --older-than 30d"),
                        format!("{bin} cache gc --max-size 10GiB --json"),
                    ])
                ))
            })
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        let program = super::Program {
            project: "demo",
            about: "",
            version: "1.0.0",
            commit: None,
        };
        super::command(&program, "demo").debug_assert();
    }
}
