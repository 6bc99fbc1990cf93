//! Triggers as the program registers them: which routine each is bound to,
//! when it fires, and what it is handed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use super::TaskSpec;
use crate::id::{CallOutcome, RunId};
use crate::key::Key;

/// A completion before its trigger decodes it into its own types.
#[derive(Clone)]
pub struct Occurrence {
    pub(crate) task: &'static TaskSpec,
    pub(crate) key: Key,
    pub(crate) arguments: Option<Vec<u8>>,
    pub(crate) result: Result<Vec<u8>, String>,
    pub(crate) from_storage: bool,
    pub(crate) duration: Duration,
    pub(crate) run: Option<RunId>,
}

/// Runs a trigger on an occurrence; written by `#[trigger]`.
pub type Fire = fn(Occurrence) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A trigger as `#[trigger]` registers it.
pub struct TriggerSpec {
    name: &'static str,
    on: &'static str,
    on_version: Option<&'static str>,
    hits: bool,
    failures: bool,
    fire: Fire,
    location: (&'static str, u32),
}

impl TriggerSpec {
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub const fn __new(
        name: &'static str,
        on: &'static str,
        on_version: Option<&'static str>,
        hits: bool,
        failures: bool,
        fire: Fire,
        file: &'static str,
        line: u32,
    ) -> TriggerSpec {
        TriggerSpec {
            name,
            on,
            on_version,
            hits,
            failures,
            fire,
            location: (file, line),
        }
    }

    /// Starts the trigger on `occurrence`.
    pub fn fire(
        &self,
        occurrence: Occurrence,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        (self.fire)(occurrence)
    }

    /// The trigger function's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The routine it is bound to: `name` or `name@version`.
    pub fn on(&self) -> String {
        match self.on_version {
            Some(version) => format!("{}@{version}", self.on),
            None => self.on.to_owned(),
        }
    }

    pub(crate) fn matches(&self, task: &TaskSpec) -> bool {
        self.on == task.name() && self.on_version.is_none_or(|v| v == task.version())
    }

    /// Whether it fires for a call that ended so.
    pub fn fires_on(&self, outcome: CallOutcome) -> bool {
        match outcome {
            CallOutcome::Computed => true,
            CallOutcome::Hit => self.hits,
            CallOutcome::Failed | CallOutcome::Panicked | CallOutcome::TimedOut => self.failures,
            _ => false,
        }
    }
}

impl fmt::Debug for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TriggerSpec({} on {} at {}:{})",
            self.name,
            self.on(),
            self.location.0,
            self.location.1
        )
    }
}

#[doc(hidden)]
pub struct RegisteredTrigger(pub &'static TriggerSpec);

inventory::collect!(RegisteredTrigger);

/// Every trigger linked into the program.
pub fn triggers() -> impl Iterator<Item = &'static TriggerSpec> {
    inventory::iter::<RegisteredTrigger>
        .into_iter()
        .map(|r| r.0)
}

/// The triggers bound to `task`, found once.
pub(crate) fn of_task<'a>(
    task: &'static TaskSpec,
    cache: &'a OnceLock<Vec<&'static TriggerSpec>>,
) -> &'a [&'static TriggerSpec] {
    cache.get_or_init(|| triggers().filter(|t| t.matches(task)).collect())
}

/// Triggers bound to a routine the program does not have: a typo in `on`.
/// Engines warn about them when they are built.
pub(crate) fn unbound() -> Vec<&'static TriggerSpec> {
    triggers()
        .filter(|t| !super::tasks().any(|task| t.matches(task)))
        .collect()
}
