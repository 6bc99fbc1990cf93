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
//! The guides live in the repository's `docs/` folder: concepts, versioning
//! rules, the limits of what a task may do, the store format and performance.

#[cfg(feature = "distributed")]
pub use routine_core::{broker, worker};
pub use routine_core::{
    codec, engine, entry, invoke, key, redact, registry, spawn, store, CallOutcome, CallReport,
    Engine, EngineBuilder, Error, Key, RoutineId, Stats, TaskSpec,
};

#[doc(hidden)]
pub use routine_core::__private;

// The README's examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}

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
