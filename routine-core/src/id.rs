//! The identifiers every part of routine shares: what names a routine, a
//! task's code, a run, a process, and how a call ended. A leaf: it depends on
//! nothing else in the crate.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How a routine is named across processes: `tname:{name}:{version}`, or
/// `tname:{project}:{name}:{version}` across projects.
///
/// ```
/// use routine_core::RoutineId;
///
/// let id: RoutineId = "tname:train:0.0.1".parse().unwrap();
/// assert_eq!((id.name.as_str(), id.version.as_str()), ("train", "0.0.1"));
/// let global: RoutineId = "tname:ml:train:0.0.1".parse().unwrap();
/// assert_eq!(global.project.as_deref(), Some("ml"));
/// assert!("train".parse::<RoutineId>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutineId {
    /// The project, for IDs that cross projects.
    pub project: Option<String>,
    /// The task name.
    pub name: String,
    /// The task version.
    pub version: String,
}

impl fmt::Display for RoutineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(project) => write!(f, "tname:{project}:{}:{}", self.name, self.version),
            None => write!(f, "tname:{}:{}", self.name, self.version),
        }
    }
}

/// A string is not a routine ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a routine ID: expected `tname:<name>:<version>` or `tname:<project>:<name>:<version>`")]
pub struct RoutineIdError(String);

impl FromStr for RoutineId {
    type Err = RoutineIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let nonempty = |s: &&str| !s.is_empty();
        match parts.as_slice() {
            ["tname", name, version] if [name, version].iter().all(|s| nonempty(s)) => {
                Ok(RoutineId {
                    project: None,
                    name: name.to_string(),
                    version: version.to_string(),
                })
            }
            ["tname", project, name, version]
                if [project, name, version].iter().all(|s| nonempty(s)) =>
            {
                Ok(RoutineId {
                    project: Some(project.to_string()),
                    name: name.to_string(),
                    version: version.to_string(),
                })
            }
            _ => Err(RoutineIdError(text.to_owned())),
        }
    }
}

/// SHA-256 of code tokens, taken by the macros at compile time: a task's
/// signature and body, a tracked item, or (see [`crate::code`]) a task's
/// body and every tracked item it reaches. Formatting and comments do not
/// change it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Fingerprint, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bad = || serde::de::Error::custom(format!("`{text}` is not 64 hex digits"));
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(bytes))
    }
}

impl Fingerprint {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// All 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

/// Identifies one run of a root routine: 16 bytes, written as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunId([u8; 16]);

impl RunId {
    /// A new, unique run ID: 64 bits from the process's random hasher keys,
    /// then the time in nanoseconds, so that IDs from different machines do
    /// not collide and a few leading digits tell runs apart.
    pub fn new() -> RunId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hasher.finish().to_be_bytes());
        bytes[8..].copy_from_slice(&nanos.to_be_bytes());
        RunId(bytes)
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> RunId {
        RunId(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// All zeros: "no run" in an entry header.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_owned()
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl FromStr for RunId {
    type Err = RunIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || RunIdError(text.to_owned());
        if text.len() != 32 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(RunId(bytes))
    }
}

/// A string is not a run ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a run ID: expected 32 hex digits (see `runs ls`)")]
pub struct RunIdError(String);

/// How one task call ended.
///
/// Stored in run records by its word (`hit`, `computed`, ...), so that
/// records stay readable whatever the order of the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallOutcome {
    /// Answered from storage; the body did not run.
    Hit,
    /// The body ran and its result was returned (and stored, unless the
    /// store failed).
    Computed,
    /// The body returned `Err`; nothing was stored.
    Failed,
    /// The body panicked; the panic goes on to the caller.
    Panicked,
    /// The body ran past the task's `timeout` (on its last attempt); the
    /// caller gets a panic that says so.
    TimedOut,
    /// The caller dropped the call before it finished.
    Cancelled,
    /// A worker ran it; the result was read from the shared store.
    Dispatched,
}

impl CallOutcome {
    /// A lower-case word for logs: `hit`, `computed`, `failed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Hit => "hit",
            CallOutcome::Computed => "computed",
            CallOutcome::Failed => "failed",
            CallOutcome::Panicked => "panicked",
            CallOutcome::TimedOut => "timed-out",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Dispatched => "dispatched",
        }
    }

    const ALL: [CallOutcome; 7] = [
        CallOutcome::Hit,
        CallOutcome::Computed,
        CallOutcome::Failed,
        CallOutcome::Panicked,
        CallOutcome::TimedOut,
        CallOutcome::Cancelled,
        CallOutcome::Dispatched,
    ];
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallOutcome {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CallOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a call outcome"))
    }
}

impl Serialize for CallOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CallOutcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// This process as `host:pid`, computed once: how run records and
/// workers name where they ran.
pub fn process_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", std::process::id())
    })
}
