//! Why a call would hit or run, and why one ran: from the store alone.
//!
//! ```text
//! a valid entry under the call's key        hit: who wrote it, when, ttl left, code since
//! an entry there that does not verify       run: corrupt
//! an entry there past the task's ttl        run: expired
//! a removal noted for the key               run: removed (cache rm, cache gc and why, corrupt)
//! the same arguments stored, other code     run: code changed (on_code_change = "rerun")
//! the same arguments stored, same code      run: the on_code_change policy changed
//! other calls of this version stored        run: new arguments (the nearest call, what differs)
//! calls of other versions stored            run: version changed
//! nothing stored for the task               run: never run
//! ```
//!
//! Entries record a digest of each argument and their writer (see
//! [`crate::entry`]); the store keeps what a writer and a code fingerprint
//! stand for, and notes removals ([`Store::note_removals`]). A store that
//! keeps no notes (memory, an object store) explains less: a removed result
//! looks like new arguments. At most [`COMPARED`] of the newest stored calls
//! of the version are compared with the call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::code::{Code, CodeChange};
use crate::engine::Writer;
use crate::entry::{self, ArgumentDigest, EntryMeta};
use crate::human;
use crate::id::Fingerprint;
use crate::key::Key;
use crate::store::{Found, Listing, RecordKind, RemovalCause, Slot, Store, StoreError};

/// The newest stored calls of a task version `explain` compares a call with.
pub const COMPARED: usize = 1000;

/// The call to explain.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// The task's name and version.
    pub name: &'a str,
    /// Its version.
    pub version: &'a str,
    /// The call's key.
    pub key: Key,
    /// A digest of each argument.
    pub arguments: Vec<ArgumentDigest>,
    /// The arguments' names, in order (`argument N` where unknown).
    pub names: Vec<String>,
    /// The code of this build, when the program has the task: to name what
    /// changed.
    pub code: Option<&'a Code>,
    /// The task's `ttl`.
    pub ttl: Option<Duration>,
    /// Explain the call as of this time (a past run's call): entries and
    /// notes made since are not looked at, and its own entry is not a hit.
    pub as_of: Option<SystemTime>,
}

/// Why a call hits or runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Explanation {
    /// The stored result is returned.
    Hit {
        /// Who wrote it and when.
        written: Written,
        /// Seconds until it expires, under the task's `ttl`.
        ttl_left_secs: Option<u64>,
        /// Whether the code changed since it was written.
        code: CodeSince,
    },
    /// The body runs.
    Run {
        /// The decisive reason.
        #[serde(flatten)]
        reason: Reason,
    },
}

/// Why a call runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Nothing is stored for the task, at any version.
    NeverRun,
    /// Calls of this version are stored, none with these arguments.
    NewArguments {
        /// The stored call with the most arguments in common, if any was
        /// compared (entries written before routine recorded arguments are
        /// not).
        nearest: Option<Nearest>,
    },
    /// Results of other versions are stored, none of this one.
    VersionChanged {
        /// The versions stored.
        stored_versions: Vec<String>,
        /// The version holding a call with these same arguments, if any.
        same_arguments_in: Option<String>,
    },
    /// The same arguments are stored, computed by other code (a task whose
    /// key covers its code: `on_code_change = "rerun"`).
    CodeChanged {
        /// The stored call.
        stored: Written,
        /// What changed, when the store kept the older code's record.
        changes: Option<Vec<CodeChange>>,
    },
    /// The same arguments are stored under another key, by the same code:
    /// stored under the other `on_code_change` policy (only `rerun` puts
    /// the code in the key).
    PolicyChanged {
        /// The stored call.
        stored: Written,
    },
    /// The result was removed.
    Removed {
        /// When, in seconds since the Unix epoch.
        at_unix: u64,
        /// By what.
        cause: RemovalCause,
    },
    /// The result outlived the task's `ttl`.
    Expired {
        /// Who wrote it and when.
        written: Written,
        /// The task's `ttl`, in seconds.
        ttl_secs: u64,
    },
    /// The stored entry is damaged.
    Corrupt {
        /// What is wrong with it.
        error: String,
    },
}

/// The stored call nearest to the one explained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nearest {
    /// Its key.
    pub key: String,
    /// Who wrote it and when.
    pub written: Written,
    /// The arguments that differ, by name.
    pub differing: Vec<String>,
}

/// Who wrote a stored result, and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Written {
    /// When, in seconds since the Unix epoch.
    pub at_unix: u64,
    /// The run that computed it (its ID in hex).
    pub run: Option<String>,
    /// The process, if the store keeps its record.
    pub writer: Option<Writer>,
    /// How long the body ran, in microseconds.
    pub run_time_us: u64,
    /// The code fingerprint that computed it.
    pub code: String,
}

/// Whether the code changed since a result was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CodeSince {
    /// The same code fingerprint (or this program lacks the task).
    Same,
    /// Another; what changed, when the store kept the older code's record.
    Changed {
        /// The changes.
        changes: Option<Vec<CodeChange>>,
    },
}

impl Explanation {
    /// The explanation in lines for people (the command line's `why` and the
    /// web view show these): the first says hit or run and why, the lines
    /// after it, indented by two spaces, name what changed. `argument` shows
    /// a differing argument by name (with its value when known and small).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use routine_core::explain::{Explanation, Reason};
    ///
    /// let never = Explanation::Run { reason: Reason::NeverRun };
    /// let lines = never.describe(SystemTime::now(), &|name| name.to_owned());
    /// assert_eq!(lines, ["runs: nothing was stored for this task, at any version, before"]);
    /// ```
    pub fn describe(&self, now: SystemTime, argument: &dyn Fn(&str) -> String) -> Vec<String> {
        let mut lines = Vec::new();
        match self {
            Explanation::Hit {
                written,
                ttl_left_secs,
                code,
            } => {
                lines.push(format!("hits: {}", written.describe(now)));
                if let Some(left) = ttl_left_secs {
                    lines.push(format!("expires in {}", human::span(Duration::from_secs(*left))));
                }
                match code {
                    CodeSince::Same => lines.push("code: unchanged since".into()),
                    CodeSince::Changed { changes } => {
                        lines.push("code: changed since (the stored result is still returned: on_code_change = \"warn\")".into());
                        lines.extend(changes_lines(changes.as_deref()));
                    }
                }
            }
            Explanation::Run { reason } => match reason {
                Reason::NeverRun => {
                    lines.push("runs: nothing was stored for this task, at any version, before".into())
                }
                Reason::NewArguments { nearest: None } => lines.push(
                    "runs: new arguments (no stored call of this version records its arguments)".into(),
                ),
                Reason::NewArguments {
                    nearest: Some(nearest),
                } => {
                    let differing: Vec<String> =
                        nearest.differing.iter().map(|name| argument(name)).collect();
                    lines.push(format!(
                        "runs: new arguments: {} differ{} from the nearest stored call",
                        differing.join(", "),
                        if differing.len() == 1 { "s" } else { "" },
                    ));
                    lines.push(format!(
                        "nearest: key {}, {}",
                        &nearest.key[..nearest.key.len().min(12)],
                        nearest.written.describe(now)
                    ));
                }
                Reason::VersionChanged {
                    stored_versions,
                    same_arguments_in,
                } => lines.push(format!(
                    "runs: a new version: results are stored for {} only{}",
                    stored_versions.join(", "),
                    same_arguments_in
                        .as_ref()
                        .map(|v| format!(" (version {v} holds these same arguments)"))
                        .unwrap_or_default()
                )),
                Reason::CodeChanged { stored, changes } => {
                    lines.push(format!(
                        "runs: the code changed (on_code_change = \"rerun\"); the result of these arguments was {}",
                        stored.describe(now)
                    ));
                    lines.extend(changes_lines(changes.as_deref()));
                }
                Reason::PolicyChanged { stored } => lines.push(format!(
                    "runs: on_code_change differs from when the result of these arguments was stored \
                     (\"rerun\" puts the code in the key); it was {}",
                    stored.describe(now)
                )),
                Reason::Removed { at_unix, cause } => lines.push(format!(
                    "runs: its result was {cause}, {}",
                    human::age(UNIX_EPOCH + Duration::from_secs(*at_unix), now)
                )),
                Reason::Expired { written, ttl_secs } => lines.push(format!(
                    "runs: its result expired (ttl {}): {}",
                    human::span(Duration::from_secs(*ttl_secs)),
                    written.describe(now)
                )),
                Reason::Corrupt { error } => lines.push(format!(
                    "runs: its stored entry is damaged ({error}); it will be computed again"
                )),
            },
        }
        lines
    }
}

impl Written {
    /// `written 2h ago (2026-11-28T21:30:02Z) by host:42 (train 0.1.0,
    /// commit 3f2c1a9) in run 1a2b…, body 1.2 s, code 4f…`.
    pub fn describe(&self, now: SystemTime) -> String {
        let at = UNIX_EPOCH + Duration::from_secs(self.at_unix);
        let mut text = format!("written {} ({})", human::age(at, now), human::timestamp(at));
        if let Some(writer) = &self.writer {
            text.push_str(&format!(" by {}", writer.process));
            let program = match (&writer.program, &writer.version) {
                (Some(program), Some(version)) => Some(format!("{program} {version}")),
                (Some(program), None) => Some(program.clone()),
                _ => None,
            };
            match (program, &writer.commit) {
                (Some(program), Some(commit)) => {
                    text.push_str(&format!(" ({program}, commit {commit})"))
                }
                (Some(program), None) => text.push_str(&format!(" ({program})")),
                _ => {}
            }
        }
        if let Some(run) = &self.run {
            text.push_str(&format!(" in run {}", &run[..run.len().min(12)]));
        }
        text.push_str(&format!(
            ", body {}, code {}",
            human::run_time(Duration::from_micros(self.run_time_us)),
            self.code
        ));
        text
    }
}

/// The changed items, a line each, or why they cannot be named.
fn changes_lines(changes: Option<&[CodeChange]>) -> Vec<String> {
    match changes {
        Some(changes) => changes.iter().map(|c| format!("  {c}")).collect(),
        None => vec![
            "  (the store keeps no record of the older code: what changed cannot be named)".into(),
        ],
    }
}

/// Explains `call` from what `store` holds.
pub fn explain(store: &dyn Store, call: &Subject<'_>) -> Result<Explanation, StoreError> {
    let slot = Slot {
        name: call.name,
        version: call.version,
        key: &call.key,
    };
    if call.as_of.is_none() {
        if let Some(found) = store.peek(&slot)? {
            return Ok(own_entry(store, call, found));
        }
    }
    if let Some(removal) = store.removal(&slot)? {
        if call.as_of.is_none_or(|as_of| removal.at < as_of) {
            return Ok(Explanation::Run {
                reason: Reason::Removed {
                    at_unix: unix_secs(removal.at),
                    cause: removal.cause,
                },
            });
        }
    }
    let before = |listing: &Listing| call.as_of.is_none_or(|as_of| listing.created < as_of);
    let mut listings: Vec<Listing> = store.list(Some(call.name), None)?;
    listings.retain(|l| before(l) && l.key != call.key);
    let (mut same_version, other_versions): (Vec<Listing>, Vec<Listing>) = listings
        .into_iter()
        .partition(|l| &*l.version == call.version);
    if same_version.is_empty() {
        if other_versions.is_empty() {
            return Ok(Explanation::Run {
                reason: Reason::NeverRun,
            });
        }
        let mut stored_versions: Vec<String> = other_versions
            .iter()
            .map(|l| l.version.to_string())
            .collect();
        stored_versions.dedup();
        let same_arguments_in = newest(other_versions, COMPARED)
            .iter()
            .find(|l| peek_meta(store, l).is_some_and(|m| m.arguments == call.arguments))
            .map(|l| l.version.to_string());
        return Ok(Explanation::Run {
            reason: Reason::VersionChanged {
                stored_versions,
                same_arguments_in,
            },
        });
    }
    same_version = newest(same_version, COMPARED);
    let mut nearest: Option<(usize, Listing, EntryMeta)> = None;
    for listing in same_version {
        let Some(meta) = peek_meta(store, &listing) else {
            continue;
        };
        if !meta.arguments.is_empty() && meta.arguments == call.arguments {
            if call
                .code
                .is_some_and(|code| code.fingerprint == meta.fingerprint)
            {
                return Ok(Explanation::Run {
                    reason: Reason::PolicyChanged {
                        stored: written(store, &meta),
                    },
                });
            }
            return Ok(Explanation::Run {
                reason: Reason::CodeChanged {
                    stored: written(store, &meta),
                    changes: changes(store, call.code, &meta.fingerprint),
                },
            });
        }
        // An entry of an older format records no arguments to compare.
        if meta.arguments.is_empty() {
            continue;
        }
        let common = (meta.arguments.iter().zip(&call.arguments))
            .filter(|(a, b)| a == b)
            .count();
        // Listings are newest first: the newest of the nearest wins.
        if nearest.as_ref().is_none_or(|(best, _, _)| common > *best) {
            nearest = Some((common, listing, meta));
        }
    }
    let nearest = nearest.map(|(_, listing, meta)| Nearest {
        key: listing.key.to_hex(),
        differing: differing(call, &meta.arguments),
        written: written(store, &meta),
    });
    Ok(Explanation::Run {
        reason: Reason::NewArguments { nearest },
    })
}

/// The call's own entry: a hit, unless it is damaged or expired.
fn own_entry(store: &dyn Store, call: &Subject<'_>, found: Found) -> Explanation {
    let verified = found
        .into_bytes()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            entry::verify(&bytes, &call.key)
                .map(|(meta, _)| meta)
                .map_err(|e| e.to_string())
        });
    let meta = match verified {
        Ok(meta) => meta,
        Err(error) => {
            return Explanation::Run {
                reason: Reason::Corrupt { error },
            }
        }
    };
    let age = SystemTime::now()
        .duration_since(meta.created_at)
        .unwrap_or_default();
    if let Some(ttl) = call.ttl {
        if age >= ttl {
            return Explanation::Run {
                reason: Reason::Expired {
                    written: written(store, &meta),
                    ttl_secs: ttl.as_secs(),
                },
            };
        }
    }
    let code = match call.code {
        Some(code) if code.fingerprint != meta.fingerprint => CodeSince::Changed {
            changes: changes(store, Some(code), &meta.fingerprint),
        },
        _ => CodeSince::Same,
    };
    Explanation::Hit {
        written: written(store, &meta),
        ttl_left_secs: call.ttl.map(|ttl| (ttl - age).as_secs()),
        code,
    }
}

/// What changed from the code `stored` stands for to `code`.
fn changes(
    store: &dyn Store,
    code: Option<&Code>,
    stored: &Fingerprint,
) -> Option<Vec<CodeChange>> {
    let code = code?;
    let record = store
        .get_record(RecordKind::Code, stored.as_bytes())
        .ok()??;
    Some(code.changes_since(&Code::from_bytes(&record)?))
}

/// The names of the arguments whose digests differ from `stored`'s.
fn differing(call: &Subject<'_>, stored: &[ArgumentDigest]) -> Vec<String> {
    (call.arguments.iter().enumerate())
        .filter(|(i, digest)| stored.get(*i) != Some(digest))
        .map(|(i, _)| argument_name(call, i))
        .collect()
}

fn argument_name(call: &Subject<'_>, index: usize) -> String {
    (call.names.get(index).cloned()).unwrap_or_else(|| format!("argument {}", index + 1))
}

fn written(store: &dyn Store, meta: &EntryMeta) -> Written {
    Written {
        at_unix: unix_secs(meta.created_at),
        run: meta.run.map(|run| run.to_string()),
        writer: meta.writer.and_then(|id| Writer::of(store, id)),
        run_time_us: u64::try_from(meta.run_time.as_micros()).unwrap_or(u64::MAX),
        code: meta.fingerprint.short(),
    }
}

/// The header of a listed entry, if it can be read.
fn peek_meta(store: &dyn Store, listing: &Listing) -> Option<EntryMeta> {
    stored_meta(
        store,
        &Slot {
            name: &listing.name,
            version: &listing.version,
            key: &listing.key,
        },
    )
}

/// The header of the entry in `slot`, if there is one and it can be read
/// (a look: no use is recorded).
pub fn stored_meta(store: &dyn Store, slot: &Slot<'_>) -> Option<EntryMeta> {
    match store.peek(slot).ok()?? {
        Found::Bytes(bytes) => EntryMeta::parse(&bytes).ok(),
        Found::Stream { reader, .. } => entry::read_header(reader).ok().map(|(meta, _)| meta),
    }
}

/// At most `n` listings, newest first.
fn newest(mut listings: Vec<Listing>, n: usize) -> Vec<Listing> {
    listings.sort_by_key(|listing| std::cmp::Reverse(listing.created));
    listings.truncate(n);
    listings
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
