//! The code a task calls: `#[tracked]` items, how a task reaches them, and
//! the code fingerprint that covers them all.
//!
//! A macro sees one item, so each `#[tracked]` item and each task records
//! its own digest and the names it refers to (see `routine-macros`'
//! `references`); here, in the linked program, the names are matched
//! against every tracked item and followed, through tracked items that
//! refer to others (cycles included), to the closure a task reaches.
//!
//! ```text
//! reference            matches tracked items
//! f:prep::normalize    named `normalize` whose path ends with `prep::normalize`
//! f:normalize, v:SCALE a free function, constant or static of that name
//! m:apply              a method `apply` of any tracked `impl`
//! !:format             nothing: macros are not followed
//! ```
//!
//! Names are matched, not resolved (a macro cannot resolve them): two
//! tracked items of one name are both covered, which may warn of a change
//! that does not concern the task but never misses one that does. A call
//! that matches nothing is an *untracked call*: listed, never followed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::Fingerprint;

/// What kind of item `#[tracked]` went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A free function.
    Function,
    /// A `const` (free or associated).
    Constant,
    /// A `static`.
    Static,
    /// A method or associated function of a tracked `impl`.
    Method,
    /// Another task: its body, and what its body reaches, are followed as
    /// a tracked item's (its result is part of this task's).
    Task,
}

/// One `#[tracked]` item, as the attribute registers it.
#[derive(Debug)]
pub struct TrackedItem {
    kind: ItemKind,
    name: &'static str,
    module_path: &'static str,
    file: &'static str,
    line: u32,
    digest: [u8; 32],
    references: &'static [&'static str],
    /// A task's name, for a [`ItemKind::Task`] item.
    task: Option<&'static str>,
}

impl TrackedItem {
    #[doc(hidden)]
    pub const fn __new(
        kind: ItemKind,
        name: &'static str,
        module_path: &'static str,
        file: &'static str,
        line: u32,
        digest: [u8; 32],
        references: &'static [&'static str],
    ) -> TrackedItem {
        TrackedItem {
            kind,
            name,
            module_path,
            file,
            line,
            digest,
            references,
            task: None,
        }
    }

    /// A task, as an item other tasks reach by calling its function:
    /// `item` names the function, and carries the body's digest and
    /// references.
    pub(crate) fn of_task(task: &'static str, item: TrackedItem) -> TrackedItem {
        TrackedItem {
            kind: ItemKind::Task,
            task: Some(task),
            ..item
        }
    }

    /// The item's path: `my_crate::prep::normalize`, `my_crate::Scaler::apply`.
    pub fn path(&self) -> String {
        format!("{}::{}", self.module_path, self.name)
    }

    /// What kind of item it is.
    pub fn kind(&self) -> ItemKind {
        self.kind
    }

    fn ident(&self) -> &'static str {
        self.name.rsplit("::").next().unwrap_or(self.name)
    }

    fn as_code_item(&self) -> CodeItem {
        CodeItem {
            name: match self.task {
                Some(task) => format!("task {task}"),
                None => self.path(),
            },
            file: self.file.to_owned(),
            line: self.line,
            digest: Fingerprint::from_bytes(self.digest),
        }
    }
}

inventory::collect!(TrackedItem);

/// Every tracked item linked into this program.
pub fn tracked_items() -> impl Iterator<Item = &'static TrackedItem> {
    inventory::iter::<TrackedItem>.into_iter()
}

/// One item a code fingerprint covers, as an entry's code record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeItem {
    /// Its path (`my_crate::prep::SCALE`), or `task NAME` for a task's body.
    pub name: String,
    /// The file it is written in.
    pub file: String,
    /// The line of its name.
    pub line: u32,
    /// The digest of its tokens (comments and formatting excluded).
    pub digest: Fingerprint,
}

/// What a task's code fingerprint covers.
///
/// ```
/// for task in routine_core::registry::tasks() {
///     let code = task.code();
///     println!("{}: {} items, untracked: {:?}", task.id(), code.items.len(), code.untracked);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// The fingerprint: the body's alone when it reaches no tracked item,
    /// else a digest of the body and every item reached.
    pub fingerprint: Fingerprint,
    /// The task's body, then every tracked item it reaches, by name.
    pub items: Vec<CodeItem>,
    /// Calls that match no tracked item (`f:`, `m:` and `!:` references
    /// without the prefix: `helper`, `.iter`, `format!`): their changes are
    /// not seen.
    pub untracked: Vec<String>,
}

impl Code {
    /// The code of a task whose body is `body` and refers to
    /// `references`, from the items of `index`.
    pub(crate) fn of(body: CodeItem, references: &[&'static str], index: &Index) -> Code {
        let mut reached: BTreeMap<String, &'static TrackedItem> = BTreeMap::new();
        let mut untracked = BTreeSet::new();
        let mut pending: Vec<&'static str> = references.to_vec();
        while let Some(reference) = pending.pop() {
            let matched = index.resolve(reference);
            if matched.is_empty() {
                if let Some(call) = untracked_call(reference) {
                    untracked.insert(call);
                }
            }
            for item in matched {
                // The task's own function, called recursively: its body
                // is the first item already.
                if item.as_code_item().name == body.name {
                    continue;
                }
                if reached.insert(item.path(), item).is_none() {
                    pending.extend_from_slice(item.references);
                }
            }
        }
        let fingerprint = match reached.is_empty() {
            // The body's own: results stored before any item was tracked
            // keep matching.
            true => body.digest,
            false => {
                let mut hasher = Sha256::new();
                hasher.update(b"routine-code\0");
                hasher.update(body.digest.as_bytes());
                for (path, item) in &reached {
                    hasher.update((path.len() as u64).to_le_bytes());
                    hasher.update(path.as_bytes());
                    hasher.update(item.digest);
                }
                Fingerprint::from_bytes(hasher.finalize().into())
            }
        };
        let mut items = vec![body];
        items.extend(reached.values().map(|item| item.as_code_item()));
        Code {
            fingerprint,
            items,
            untracked: untracked.into_iter().collect(),
        }
    }

    /// What changed from `before` (an older build's code of the same task)
    /// to this code, by item name.
    pub fn changes_since(&self, before: &Code) -> Vec<CodeChange> {
        let old: HashMap<&str, &CodeItem> =
            before.items.iter().map(|i| (i.name.as_str(), i)).collect();
        let mut changes = Vec::new();
        for item in &self.items {
            match old.get(item.name.as_str()) {
                Some(was) if was.digest == item.digest => {}
                Some(_) => changes.push(CodeChange::Changed(item.clone())),
                None => changes.push(CodeChange::Added(item.clone())),
            }
        }
        let now: BTreeSet<&str> = self.items.iter().map(|i| i.name.as_str()).collect();
        for item in &before.items {
            if !now.contains(item.name.as_str()) {
                changes.push(CodeChange::Removed(item.clone()));
            }
        }
        changes
    }

    /// The code record as a store keeps it.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A code record read back from a store; `None` if it does not parse.
    pub fn from_bytes(bytes: &[u8]) -> Option<Code> {
        serde_json::from_slice(bytes).ok()
    }
}

/// One difference between two builds' code of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", content = "item", rename_all = "snake_case")]
pub enum CodeChange {
    /// The item's tokens changed.
    Changed(CodeItem),
    /// The task reaches an item it did not reach before.
    Added(CodeItem),
    /// The task no longer reaches this item.
    Removed(CodeItem),
}

impl fmt::Display for CodeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, item) = match self {
            CodeChange::Changed(item) => ("changed", item),
            CodeChange::Added(item) => ("now reached", item),
            CodeChange::Removed(item) => ("no longer reached", item),
        };
        write!(f, "{} ({}:{}) {what}", item.name, item.file, item.line)
    }
}

/// What a task does when a stored result was computed by other code (its
/// code fingerprint differs from this build's).
///
/// ```
/// use routine_core::code::OnCodeChange;
///
/// assert_eq!("rerun".parse::<OnCodeChange>(), Ok(OnCodeChange::Rerun));
/// assert_eq!(OnCodeChange::default(), OnCodeChange::Warn);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnCodeChange {
    /// Return the stored result, warning once per task with each changed
    /// item.
    #[default]
    Warn,
    /// The code fingerprint is part of the key: changed code is a miss.
    Rerun,
}

impl FromStr for OnCodeChange {
    type Err = String;

    fn from_str(text: &str) -> Result<OnCodeChange, String> {
        match text {
            "warn" => Ok(OnCodeChange::Warn),
            "rerun" => Ok(OnCodeChange::Rerun),
            other => Err(format!(
                "`{other}` is not a policy for changed code: `warn` or `rerun`"
            )),
        }
    }
}

impl fmt::Display for OnCodeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnCodeChange::Warn => "warn",
            OnCodeChange::Rerun => "rerun",
        })
    }
}

/// The call a reference names, if it is a call (`f:`, `m:`, `!:`).
fn untracked_call(reference: &str) -> Option<String> {
    match reference.split_once(':') {
        Some(("f", path)) => Some(path.to_owned()),
        Some(("m", method)) => Some(format!(".{method}")),
        Some(("!", name)) => Some(format!("{name}!")),
        _ => None,
    }
}

/// Items a task may reach (the program's tracked items and tasks), by
/// their last name.
pub(crate) struct Index(HashMap<&'static str, Vec<&'static TrackedItem>>);

impl Index {
    pub(crate) fn new(items: impl Iterator<Item = &'static TrackedItem>) -> Index {
        let mut by_ident: HashMap<&'static str, Vec<&'static TrackedItem>> = HashMap::new();
        for item in items {
            by_ident.entry(item.ident()).or_default().push(item);
        }
        Index(by_ident)
    }

    fn resolve(&self, reference: &str) -> Vec<&'static TrackedItem> {
        let Some((kind, path)) = reference.split_once(':') else {
            return Vec::new();
        };
        let (qualifier, ident) = match path.rsplit_once("::") {
            Some((qualifier, ident)) => (Some(qualifier), ident),
            None => (None, path),
        };
        let Some(candidates) = self.0.get(ident) else {
            return Vec::new();
        };
        let fits = |item: &&&'static TrackedItem| match (kind, qualifier) {
            ("m", _) => item.kind == ItemKind::Method,
            ("f" | "v", None) => item.kind != ItemKind::Method,
            ("f" | "v", Some(_)) => {
                let full = item.path();
                full == path || full.ends_with(&format!("::{path}"))
            }
            _ => false,
        };
        candidates.iter().filter(fits).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: ItemKind, name: &'static str, module_path: &'static str) -> TrackedItem {
        TrackedItem::__new(kind, name, module_path, "src/lib.rs", 1, [0; 32], &[])
    }

    #[test]
    fn references_match_by_name_and_qualifier() {
        let normalize = Box::leak(Box::new(item(ItemKind::Function, "normalize", "app::prep")));
        let apply = Box::leak(Box::new(item(ItemKind::Method, "Scaler::apply", "app")));
        let other = Box::leak(Box::new(item(
            ItemKind::Function,
            "normalize",
            "app::other",
        )));
        let index = Index::new([&*normalize, &*apply, &*other].into_iter());
        let paths = |reference: &str| -> Vec<String> {
            index.resolve(reference).iter().map(|i| i.path()).collect()
        };
        assert_eq!(paths("f:prep::normalize"), ["app::prep::normalize"]);
        assert_eq!(
            paths("f:normalize").len(),
            2,
            "an unqualified name covers both"
        );
        assert_eq!(paths("m:apply"), ["app::Scaler::apply"]);
        assert_eq!(paths("f:Scaler::apply"), ["app::Scaler::apply"]);
        assert!(
            paths("f:apply").is_empty(),
            "a method is not a free function"
        );
        assert!(paths("f:missing::normalize").is_empty());
        assert!(paths("!:normalize").is_empty());
    }

    #[test]
    fn changes_name_each_item() {
        let item = |name: &str, digest: u8| CodeItem {
            name: name.into(),
            file: "src/lib.rs".into(),
            line: 3,
            digest: Fingerprint::from_bytes([digest; 32]),
        };
        let code = |items: Vec<CodeItem>| Code {
            fingerprint: Fingerprint::from_bytes([0; 32]),
            items,
            untracked: vec![],
        };
        let before = code(vec![
            item("task t", 1),
            item("a::SCALE", 2),
            item("a::gone", 3),
        ]);
        let after = code(vec![
            item("task t", 1),
            item("a::SCALE", 9),
            item("a::new", 4),
        ]);
        let changes: Vec<String> = after
            .changes_since(&before)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            changes,
            [
                "a::SCALE (src/lib.rs:3) changed",
                "a::new (src/lib.rs:3) now reached",
                "a::gone (src/lib.rs:3) no longer reached"
            ]
        );
        assert_eq!(Code::from_bytes(&after.to_bytes()), Some(after));
    }
}
