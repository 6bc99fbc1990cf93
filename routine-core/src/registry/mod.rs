//! The registry: every task and trigger linked into the program, found by
//! name and version.
//!
//! Each `#[task]` registers a [`TaskSpec`] through `inventory` at link time,
//! so the registry costs nothing at run time and needs no start-up code. A
//! worker or a command line finds a routine here from its [`RoutineId`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use self::units::UnitsSpec;
use crate::arguments::typed::{AddEncoded, KeyBuilder};
use crate::arguments::{ArgumentsDecoder, ArgumentsError, FromJson, ToJson};
use crate::code::{self, Code, CodeItem, Index, ItemKind, OnCodeChange, TrackedItem};
use crate::entry::ArgumentDigest;
use crate::execution::Execution;
use crate::id::{Fingerprint, RoutineId};
use crate::invoke::Invocation;
use crate::key::Key;

pub(crate) mod trigger;
pub mod units;

pub(crate) use self::trigger::unbound as unbound_triggers;
use self::trigger::TriggerSpec;

/// Starts a task from encoded arguments; written by `#[task]`. The flag asks
/// for the result as JSON.
type Invoke = fn(&[u8], bool) -> Result<Invocation, ArgumentsError>;

/// Decodes a stored result into JSON; written by `#[task]`.
type DescribeStored = fn(&[u8]) -> Result<serde_json::Value, String>;

/// One argument of a task, as a command line sees it.
#[derive(Debug)]
pub struct Parameter {
    name: &'static str,
    type_name: &'static str,
    from_json: FromJson,
    to_json: ToJson,
    add_encoded: AddEncoded,
}

impl Parameter {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        type_name: &'static str,
        from_json: FromJson,
        to_json: ToJson,
        add_encoded: AddEncoded,
    ) -> Self {
        Parameter {
            name,
            type_name,
            from_json,
            to_json,
            add_encoded,
        }
    }

    /// Decodes this argument from encoded arguments, as JSON.
    pub fn decode_json(
        &self,
        decoder: &mut ArgumentsDecoder<'_>,
    ) -> Result<serde_json::Value, ArgumentsError> {
        (self.to_json)(decoder)
    }

    /// The argument's name in the task's signature.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its Rust type, as written in the signature.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Encodes a JSON value as this argument, as [`TaskSpec::invoke`] takes
    /// it; the error says why the value does not fit the type.
    pub fn encode_json(&self, value: serde_json::Value) -> Result<Vec<u8>, String> {
        (self.from_json)(value)
    }
}

/// Everything the program knows about one task, written by `#[task]`.
///
/// ```
/// for task in routine_core::registry::tasks() {
///     println!("{} {} {}", task.id(), task.signature(), task.fingerprint().short());
/// }
/// ```
pub struct TaskSpec {
    name: &'static str,
    version: &'static str,
    fingerprint: Fingerprint,
    signature: &'static str,
    module_path: &'static str,
    file: &'static str,
    line: u32,
    ttl: Option<Duration>,
    execution: Execution,
    parameters: &'static [Parameter],
    invoke: Invoke,
    describe_stored: DescribeStored,
    units: Option<UnitsSpec>,
    /// What the body refers to (see [`crate::code`]).
    references: &'static [&'static str],
    /// The Rust name of the task's function, for calls of it to be found.
    function: &'static str,
    /// `on_code_change` in the attribute.
    on_code_change: Option<OnCodeChange>,
    /// The code the task reaches, found at first use.
    code: OnceLock<Code>,
    /// Set once this process has given the store the task's code record.
    code_recorded: AtomicBool,
    /// The process's slots for the task's bodies, made at the first call
    /// from its `concurrency` (or the engine's default).
    slots: OnceLock<std::sync::Arc<tokio::sync::Semaphore>>,
    /// The triggers bound to this task, found at its first call.
    triggers: OnceLock<Vec<&'static TriggerSpec>>,
    /// Set once the "body changed but version did not" warning was given.
    fingerprint_warned: AtomicBool,
}

impl TaskSpec {
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub const fn __new(
        name: &'static str,
        version: &'static str,
        fingerprint: [u8; 32],
        signature: &'static str,
        module_path: &'static str,
        file: &'static str,
        line: u32,
        ttl: Option<Duration>,
        execution: Execution,
        parameters: &'static [Parameter],
        invoke: Invoke,
        describe_stored: DescribeStored,
        units: Option<UnitsSpec>,
        references: &'static [&'static str],
        function: &'static str,
        on_code_change: Option<OnCodeChange>,
    ) -> TaskSpec {
        TaskSpec {
            name,
            version,
            fingerprint: Fingerprint::from_bytes(fingerprint),
            signature,
            module_path,
            file,
            line,
            ttl,
            execution,
            parameters,
            invoke,
            describe_stored,
            units,
            references,
            function,
            on_code_change,
            code: OnceLock::new(),
            code_recorded: AtomicBool::new(false),
            slots: OnceLock::new(),
            triggers: OnceLock::new(),
            fingerprint_warned: AtomicBool::new(false),
        }
    }

    /// The task's name, as given to `#[task(name = ..)]`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The task's semver version.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// The routine ID, `tname:{name}:{version}`.
    pub fn id(&self) -> RoutineId {
        RoutineId {
            project: None,
            name: self.name.to_owned(),
            version: self.version.to_owned(),
        }
    }

    /// The code fingerprint this program was built with: of the body and
    /// signature, and of every tracked item the body reaches (see
    /// [`TaskSpec::code`]). Stored results record the one that computed them.
    pub fn fingerprint(&self) -> Fingerprint {
        self.code().fingerprint
    }

    /// The fingerprint of the body and signature alone.
    pub fn body_fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The code the task reaches: its body, the tracked items it calls
    /// (directly or through other tracked items), and the calls that match
    /// no tracked item.
    pub fn code(&self) -> &Code {
        self.code.get_or_init(|| {
            let body = CodeItem {
                name: format!("task {}", self.name),
                file: self.file.to_owned(),
                line: self.line,
                digest: self.fingerprint,
            };
            Code::of(body, self.references, code_index())
        })
    }

    /// What the body refers to by name (see [`crate::code`]).
    pub fn references(&self) -> &'static [&'static str] {
        self.references
    }

    /// `on_code_change` as the attribute gives it; unset, the engine's
    /// default applies.
    pub fn on_code_change(&self) -> Option<OnCodeChange> {
        self.on_code_change
    }

    /// The file the task is written in.
    pub fn file(&self) -> &'static str {
        self.file
    }

    /// The line of its attribute.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// True the first time it is called in this process: the caller then
    /// gives the store the task's code record.
    pub(crate) fn first_code_record(&self) -> bool {
        !self.code_recorded.swap(true, Ordering::Relaxed)
    }

    /// The Rust signature, for example `fn train(epochs: u32) -> Vec<Model>`.
    pub fn signature(&self) -> &'static str {
        self.signature
    }

    /// Where the task is defined: `module::path (file:line)`.
    pub fn location(&self) -> String {
        format!("{} ({}:{})", self.module_path, self.file, self.line)
    }

    /// How long a stored result stays valid (`ttl` in the attribute);
    /// `None`: forever.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The execution options the task's attribute gives (`timeout`,
    /// `retries`, `backoff`, `retry_errors`, `concurrency`); an engine fills
    /// in what is unset from its defaults.
    pub fn execution(&self) -> &Execution {
        &self.execution
    }

    /// The process's slots for the task's bodies: `limit` of them, made at
    /// the first call (later calls share them whatever their engine's
    /// default).
    pub(crate) fn slots(&self, limit: u32) -> &std::sync::Arc<tokio::sync::Semaphore> {
        self.slots
            .get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(limit as usize)))
    }

    /// Whether a result stored at `created` has outlived the task's `ttl`
    /// at `now`; an expired result is a miss.
    pub fn expired(&self, created: SystemTime, now: SystemTime) -> bool {
        self.ttl
            .is_some_and(|ttl| now.duration_since(created).is_ok_and(|age| age >= ttl))
    }

    /// The task's arguments, in order.
    pub fn parameters(&self) -> &'static [Parameter] {
        self.parameters
    }

    /// Starts the task from its encoded arguments (the bincode encodings of
    /// each argument, one after the other), as a worker does. It runs through
    /// the current engine, so its result is looked up and stored as usual.
    /// With `json`, the invocation also hands back the result as JSON.
    pub fn invoke(
        &self,
        encoded_arguments: &[u8],
        json: bool,
    ) -> Result<Invocation, ArgumentsError> {
        (self.invoke)(encoded_arguments, json)
    }

    /// The key of a call from its encoded arguments (as
    /// [`TaskSpec::invoke`] takes them), covering `code` when given (a task
    /// whose policy is `on_code_change = "rerun"`), and each argument's
    /// digest: what `why` looks up.
    pub fn key_of_encoded(
        &self,
        encoded_arguments: &[u8],
        code: Option<&Fingerprint>,
    ) -> Result<(Key, Vec<ArgumentDigest>), ArgumentsError> {
        let mut key = KeyBuilder::new(self.name, self.version, code, false);
        let mut digests = KeyBuilder::digests();
        for builder in [&mut key, &mut digests] {
            let mut decoder = ArgumentsDecoder::new(encoded_arguments);
            for parameter in self.parameters {
                (parameter.add_encoded)(&mut decoder, builder)?;
            }
            decoder.finish()?;
        }
        Ok((key.finish().0, digests.finish_digests().0))
    }

    /// A stored result's payload (see [`crate::entry`]) as JSON, decoded with
    /// this build's result type.
    pub fn describe_stored(&self, payload: &[u8]) -> Result<serde_json::Value, String> {
        (self.describe_stored)(payload)
    }

    /// How many units run a call, for a multi-unit task.
    pub fn units(&self) -> Option<&UnitsSpec> {
        self.units.as_ref()
    }

    /// The triggers bound to this task.
    pub fn triggers(&'static self) -> &'static [&'static TriggerSpec] {
        trigger::of_task(self, &self.triggers)
    }

    /// True the first time it is called for a stored fingerprint that differs
    /// from this build's: the caller then warns, once per task and process.
    pub(crate) fn first_fingerprint_mismatch(&self, stored: &Fingerprint) -> bool {
        *stored != self.fingerprint() && !self.fingerprint_warned.swap(true, Ordering::Relaxed)
    }
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("signature", &self.signature)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[doc(hidden)]
pub struct Registered(pub &'static TaskSpec);

inventory::collect!(Registered);

/// Every task linked into this program, in no particular order.
pub fn tasks() -> impl Iterator<Item = &'static TaskSpec> {
    inventory::iter::<Registered>.into_iter().map(|r| r.0)
}

/// The items a task's code may reach: every tracked item, and every task
/// (by its function's name).
fn code_index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let tasks: Vec<TrackedItem> = tasks()
            .map(|task| {
                let function = TrackedItem::__new(
                    ItemKind::Task,
                    task.function,
                    task.module_path,
                    task.file,
                    task.line,
                    *task.fingerprint.as_bytes(),
                    task.references,
                );
                TrackedItem::of_task(task.name, function)
            })
            .collect();
        let tasks: &'static [TrackedItem] = Box::leak(tasks.into_boxed_slice());
        Index::new(code::tracked_items().chain(tasks))
    })
}

/// The task with this name and version, if the program has it.
///
/// ```
/// assert!(routine_core::registry::find("no-such-task", "1.0.0").is_none());
/// ```
pub fn find(name: &str, version: &str) -> Option<&'static TaskSpec> {
    // Built once: commands look up the task of every stored result.
    static BY_ID: OnceLock<HashMap<(&str, &str), &TaskSpec>> = OnceLock::new();
    let by_id = BY_ID.get_or_init(|| {
        let mut by_id = HashMap::new();
        for task in tasks() {
            by_id.entry((task.name, task.version)).or_insert(task);
        }
        by_id
    });
    by_id.get(&(name, version)).copied()
}

/// Checks that no two tasks share a name and version. Engines call this when
/// they are built, so a duplicate is reported at start-up, not at the first
/// call that happens to collide.
pub fn check() -> Result<(), RegistryError> {
    static RESULT: OnceLock<Result<(), RegistryError>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            let mut seen: HashMap<(&str, &str), &TaskSpec> = HashMap::new();
            let mut duplicates = Vec::new();
            for task in tasks() {
                if let Some(first) = seen.insert((task.name, task.version), task) {
                    duplicates.push(Duplicate {
                        id: task.id(),
                        first: first.location(),
                        second: task.location(),
                    });
                }
            }
            duplicates.sort_by_key(|d| d.id.to_string());
            match duplicates.is_empty() {
                true => Ok(()),
                false => Err(RegistryError::Duplicates(duplicates)),
            }
        })
        .clone()
}

/// One name and version defined twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The shared routine ID.
    pub id: RoutineId,
    /// Where one definition is.
    pub first: String,
    /// Where the other is.
    pub second: String,
}

/// The program's tasks are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two tasks have the same name and version: their results would share
    /// storage.
    #[error("{}", describe_duplicates(.0))]
    Duplicates(Vec<Duplicate>),
}

fn describe_duplicates(duplicates: &[Duplicate]) -> String {
    let mut text = String::from("tasks defined more than once with the same name and version (their results would overwrite each other; rename one or give it another version):");
    for d in duplicates {
        text.push_str(&format!("\n  {}: {} and {}", d.id, d.first, d.second));
    }
    text
}
