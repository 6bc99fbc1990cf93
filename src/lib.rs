//! # routine: memoized, versioned, distributable async tasks
//!
//! Mark a pure function with [`#[routine::task]`](macro@task), give it a name
//! and a version, and await it like any async fn inside an engine scope. The
//! engine hashes the task's name, version and arguments into a [`Key`]; if a
//! result for that key is stored, it is returned without running the body;
//! otherwise the body runs and its result is stored.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Data { xs: Vec<f64> }
//!
//! #[routine::task(name = "mean", version = "1.0.0")]
//! async fn mean(data: Data) -> f64 {
//!     data.xs.iter().sum::<f64>() / data.xs.len() as f64
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), routine::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let engine = routine::Engine::local(dir.path())?; // results live under this directory
//! engine.scope(async {
//!     let data = Data { xs: vec![1.0, 2.0, 3.0] };
//!     assert_eq!(mean(data.clone()).await, 2.0); // runs the body, stores 2.0
//!     assert_eq!(mean(data).await, 2.0);         // from storage
//! }).await;
//! assert_eq!((engine.stats().misses, engine.stats().hits), (1, 1));
//! # Ok(()) }
//! ```
//!
//! A *workflow* is a task that awaits other tasks, one after another or
//! concurrently (`futures::join!`, [`spawn`], `tokio::spawn`); each sub-call is
//! memoized on its own.
//!
//! With the `distributed` feature, [`distributed`] runs sub-routines on
//! worker processes through Redis; with `cli` (on by default),
//! [`#[routine::main]`](macro@main) gives every program a command line.
//!
//! The guides live in the repository's `docs/` folder: concepts, versioning
//! rules, the limits of what a task may do, the store format and performance.

pub use routine_core::{
    arguments, code, codec, dispatch, engine, entry, execution, explain, human, id, invoke, key,
    lineage, redact, registry, spawn, store, trace, trigger, unit, CallOutcome, CallReport,
    Completion, Engine, EngineBuilder, Error, Fingerprint, Key, RoutineId, RunId, Stats, TaskSpec,
    Unit,
};

/// Workers, the Redis broker and object stores (feature `distributed`): the
/// [`routine-distributed`](routine_distributed) crate.
#[cfg(feature = "distributed")]
pub use routine_distributed as distributed;

/// Settings from defaults, `routine.toml`, `ROUTINE_*` variables and flags
/// (feature `cli`).
#[cfg(feature = "cli")]
pub use routine_cli::config;

/// What the macros expand to calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use routine_core::__private::*;

    /// What `#[main]` expands to calls.
    #[cfg(feature = "cli")]
    pub mod cli {
        pub use routine_cli::{main, MainOutput, Program};
    }
}

// The README's examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}

// So are the guides' (`rust,ignore` marks a fragment that is not a program).
#[cfg(doctest)]
#[doc = include_str!("../docs/architecture.md")]
mod docs_architecture {}

#[cfg(doctest)]
#[doc = include_str!("../docs/cli.md")]
mod docs_cli {}

#[cfg(doctest)]
#[doc = include_str!("../docs/concepts.md")]
mod docs_concepts {}

#[cfg(doctest)]
#[doc = include_str!("../docs/configuration.md")]
mod docs_configuration {}

#[cfg(doctest)]
#[doc = include_str!("../docs/distributed.md")]
mod docs_distributed {}

#[cfg(doctest)]
#[doc = include_str!("../docs/execution.md")]
mod docs_execution {}

#[cfg(doctest)]
#[doc = include_str!("../docs/fingerprint.md")]
mod docs_fingerprint {}

#[cfg(doctest)]
#[doc = include_str!("../docs/versioning.md")]
mod docs_versioning {}

#[cfg(doctest)]
#[doc = include_str!("../docs/limits.md")]
mod docs_limits {}

#[cfg(doctest)]
#[doc = include_str!("../docs/lineage.md")]
mod docs_lineage {}

#[cfg(doctest)]
#[doc = include_str!("../docs/units.md")]
mod docs_units {}

#[cfg(doctest)]
#[doc = include_str!("../docs/triggers.md")]
mod docs_triggers {}

/// Turns a free `async fn` or `fn` into a memoized, versioned task.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Model { w: f64 }
/// #[routine::task(name = "fit", version = "0.1.0")]
/// async fn fit(xs: Vec<f64>, ys: Vec<f64>) -> Model {
///     let w = xs.iter().zip(&ys).map(|(x, y)| x * y).sum::<f64>() / xs.iter().map(|x| x * x).sum::<f64>();
///     Model { w }
/// }
/// ```
///
/// - `name`: unique in the program, matching `[A-Za-z0-9][A-Za-z0-9_.-]*`
///   (it names a directory of the store).
/// - `version`: a semver version. Bump it whenever a change can alter the
///   task's results: the version, not the code, decides whether a stored
///   result is still valid. If the body changes and the version does not, the
///   first hit on an old result logs a warning.
/// - `ttl` (optional): how long a stored result stays valid, such as
///   `"30d"`, `"12h"` or `"1h 30m"`. An older result is a miss: the body runs
///   again and its new result replaces the old. For tasks that read
///   something that changes (a price list, a web page); `cache gc` removes
///   expired results.
///
/// ```
/// #[routine::task(name = "exchange-rates", version = "1.0.0", ttl = "12h")]
/// async fn exchange_rates(day: String) -> Vec<(String, f64)> {
///     vec![("EUR".into(), 1.0), ("USD".into(), 1.08)] // fetched, in real life
/// }
/// ```
///
/// How the body may run (see [`execution`] and `docs/execution.md`); the
/// engine that runs the body applies them, the caller's for a local call and
/// the worker's for a dispatched one:
///
/// - `timeout` (optional): the longest one attempt may run, such as
///   `"10m"`; its future is dropped then and the call fails with a panic that
///   names the task and the limit (a plain `fn` body keeps running on its
///   thread to the end, its result unused).
/// - `retries = N` (optional, 0 to 100): attempts after the first, for a
///   panic or a timeout; `backoff` (default `"1s"`) is the wait before the
///   first retry, doubled at each next one (at most 32 times it), less a
///   random part of up to half. The final failure says how many attempts
///   were made; each attempt is logged, counted in [`Stats::retried`] and
///   recorded in the run (`runs show`).
/// - `retry_errors` (with `retries`, on a task returning `Result`): an `Err`
///   is retried too; the last attempt's `Err` goes to the caller.
/// - `concurrency = N` (optional): at most N bodies of the task run at once
///   in this process; other calls wait for a slot
///   ([`Stats::waiting_for_slot`]).
/// - `on_code_change = "warn" | "rerun"` (optional): what a call does when
///   the stored result was computed by other code, the task's body or a
///   [`#[tracked]`](macro@tracked) item it reaches: `warn` returns it with
///   one warning naming each changed item, `rerun` makes the code
///   fingerprint part of the key, so changed code is a miss. Unset, the
///   engine's default ([`EngineBuilder::on_code_change`], `[tasks]
///   on_code_change` in routine.toml), which is `warn`.
///
/// A task returning `Result<T, E>` whose `E` implements serde's traits gets
/// its `Err` back typed from a worker, as from a local call; another `E`
/// reaches a remote caller as a panic carrying its message.
///
/// ```
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// enum FitError {
///     Diverged { epoch: u32 },
/// }
///
/// #[routine::task(name = "fit-gpu", version = "1.0.0",
///                 timeout = "10m", retries = 2, backoff = "5s", retry_errors, concurrency = 1)]
/// async fn fit_gpu(epochs: u32) -> Result<f64, FitError> {
///     if epochs == 0 {
///         return Err(FitError::Diverged { epoch: 0 });
///     }
///     Ok(0.01)
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # routine::Engine::in_memory().scope(async { assert!(fit_gpu(3).await.is_ok()); }).await;
/// # }
/// ```
///
/// The function keeps its name, visibility, docs and parameters; callers
/// always `.await` it, also when it is a plain `fn` (a plain `fn` body runs on
/// tokio's blocking pool). Arguments and the result must be owned values that
/// implement serde's `Serialize` and `Deserialize`. A task returning
/// `Result<T, E>` stores `Ok` values only: `Err` goes to the caller and the
/// next call runs the body again.
///
/// The future returned by the call captures the current engine when it is
/// created, so it can be spawned; creating it outside any engine scope
/// panics, naming the task.
///
/// ```
/// #[routine::task(name = "parse-config", version = "1.0.0")]
/// fn parse_config(text: String) -> Result<Vec<String>, String> {
///     text.lines().map(|l| l.strip_prefix("key=").map(str::to_owned).ok_or(format!("bad line: {l}"))).collect()
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// routine::Engine::in_memory().scope(async {
///     assert_eq!(parse_config("key=a\nkey=b".into()).await, Ok(vec!["a".into(), "b".into()]));
///     assert!(parse_config("oops".into()).await.is_err()); // not stored
/// }).await;
/// # }
/// ```
pub use routine_macros::task;

/// Puts a function, `const`, `static` or `impl` block that tasks call under
/// the tasks' code fingerprint: a change to its tokens (not to its comments,
/// docs or formatting) is seen by every task that reaches it, directly or
/// through other tracked items. Such a task warns when it returns a result
/// computed before the change, naming the item, its file and line; with
/// `on_code_change = "rerun"` it computes the result again.
///
/// ```
/// #[routine::tracked]
/// const SCALE: f64 = 2.0;
///
/// #[routine::tracked]
/// fn normalize(x: f64) -> f64 {
///     x * SCALE
/// }
///
/// #[routine::task(name = "scaled", version = "1.0.0")]
/// async fn scaled(x: f64) -> f64 {
///     normalize(x)
/// }
///
/// let task = routine::registry::find("scaled", "1.0.0").unwrap();
/// let names: Vec<&str> = task.code().items.iter().map(|i| i.name.as_str()).collect();
/// assert!(names.iter().any(|n| n.ends_with("::normalize")));
/// assert!(names.iter().any(|n| n.ends_with("::SCALE")));
/// ```
///
/// Names are matched, not resolved: calls are followed to tracked items of
/// the same name (qualified paths such as `prep::normalize` must end the
/// same way; a method call `.apply()` matches every tracked `apply`). What
/// matches no tracked item (other crates, untracked functions, methods of
/// untracked types, macros) is listed as the task's untracked calls
/// (`tasks --code`). `docs/fingerprint.md` says what the fingerprint covers.
pub use routine_macros::tracked;

/// Runs a function whenever a routine completes: after its result is
/// stored, as a tokio task of its own, without delaying the routine's caller.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize)] pub struct Model { loss: f64 }
/// #[routine::task(name = "pick-best", version = "1.0.0")]
/// async fn pick_best(losses: Vec<f64>) -> Model {
///     Model { loss: losses.into_iter().fold(f64::INFINITY, f64::min) }
/// }
///
/// /// Writes a report when a new best model is picked.
/// #[routine::trigger(on = "pick-best")]
/// async fn report(done: routine::Completion<Model>) -> std::io::Result<()> {
///     if let Ok(model) = &done.result {
///         let path = std::env::temp_dir().join(format!("best-{}.txt", done.key.short()));
///         std::fs::write(path, format!("best loss {}\n", model.loss))?;
///     }
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let engine = routine::Engine::in_memory();
/// engine.scope(pick_best(vec![0.3, 0.1])).await;
/// engine.settle().await; // wait for triggers before exiting
/// assert_eq!(engine.stats().triggers_fired, 1);
/// # }
/// ```
///
/// - `on`: the routine, `"name"` (every version) or `"name@version"`.
/// - `hits = true`: also when the call was answered from storage;
///   `failures = true`: also when it returned `Err` or panicked (then
///   `done.result` is `Err` with the message).
///
/// The function takes one [`Completion<T>`](Completion), where `T` is the
/// routine's result type (the `Ok` type of a `Result`): the routine ID, the
/// key, the arguments as JSON, the result, whether it came from storage, the
/// duration and the run. It returns `()` or `Result<(), E>` with `E:
/// Display`; an `Err` or a panic is logged and counted
/// (`Stats::trigger_failures`), never the routine's failure. It runs in an
/// engine scope, so it can await routines ("when training finishes,
/// evaluate the model"); its future must be `Send`.
///
/// A result that could not be stored fires nothing. Distributed, a trigger
/// fires on the worker that completed the routine, at least once per
/// completion: a worker acknowledges a request only after its triggers
/// ended, and a worker that takes over from a dead one fires them again
/// (with `from_storage` set). Use `done.key` to make a trigger idempotent.
pub use routine_macros::trigger;

/// Makes `async fn main()` a routine program: it builds the runtime, reads
/// the configuration, sets up the engine and runs `main` in its scope, and
/// it gives the program routine's command line.
///
/// ```no_run
/// #[routine::task(name = "square", version = "1.0.0")]
/// async fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// /// Squares a number, once.
/// #[routine::main]
/// async fn main() {
///     println!("{}", square(12).await); // memoized in ./.routine
/// }
/// ```
///
/// Configuration, lowest to highest precedence: defaults (a store in
/// `./.routine`), `routine.toml` in the working directory, `ROUTINE_*`
/// environment variables (`ROUTINE_STORE`, `ROUTINE_BROKER`,
/// `ROUTINE_POLICY`, ...), then flags (`--store`, `--broker`, `--policy`,
/// `--config`); see [`config`].
///
/// Without a subcommand the program runs `main`; with one it does that
/// instead: `info`, `tasks`, `run <routine> --arg name=value`, `worker`,
/// `status`, `cache ls|show|rm|gc|stats`. `--help` describes each. Exit
/// codes: 0 success, 1 `main` or the routine failed, 2 usage or
/// configuration error.
///
/// `main` may return `()`, `Result<(), E>` with `E: Display` (an `Err` is
/// printed and exits with 1), or `std::process::ExitCode`. Its doc comment
/// is the program's `--help` description. `#[routine::main(project =
/// "ml")]` names the program (by default, the binary's name).
#[cfg(feature = "cli")]
pub use routine_macros::main;
