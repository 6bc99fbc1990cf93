//! Setting a store's database aside: a damaged database (or one an earlier
//! routine wrote in another format) is renamed beside the store, with a
//! note saying why, and a fresh one takes its place. Nothing is deleted:
//! the user inspects or removes what was set aside; `cache ls` and
//! `cache gc` list it.
//!
//! ```text
//! <root>/.database/                                the database in use
//! <root>/.database.damaged-20261207T020514Z-4711/  set aside by process 4711
//!     results.sqlite3, ...                         as they were
//!     WHY                                          what was wrong, and when
//! ```
//!
//! Processes sharing the store agree through a lock on `.locks`: the first
//! to find the damage renames the folder; the others, finding another file
//! at the database's path by then, open that one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::sqlite::{FileId, FILE};
use super::DATABASE;
use crate::store::locks::LockFile;

/// Why a database was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// SQLite found it damaged, or it is not routine's database.
    Damaged,
    /// An earlier routine wrote it in a format this one does not read
    /// (LMDB).
    EarlierFormat,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Damaged => "damaged",
            Reason::EarlierFormat => "earlier",
        }
    }
}

/// A database set aside beside a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Its folder.
    pub path: PathBuf,
    /// Why.
    pub reason: Reason,
    /// Bytes it takes.
    pub size: u64,
    /// When it was set aside (the folder's modification time).
    pub at: SystemTime,
}

impl SetAside {
    /// What a user is told of it: where it is, what it cost, and what to do.
    ///
    /// ```
    /// use routine_core::store::{Reason, SetAside};
    /// let set_aside = SetAside {
    ///     path: "/data/.routine/.database.damaged-20261207T020514Z-4711".into(),
    ///     reason: Reason::Damaged,
    ///     size: 4096,
    ///     at: std::time::SystemTime::now(),
    /// };
    /// assert!(set_aside.advice().contains("PRAGMA integrity_check"));
    /// ```
    pub fn advice(&self) -> String {
        let path = self.path.display();
        match self.reason {
            Reason::Damaged => format!(
                "a damaged database was set aside in `{path}`: its results are no longer read. \
                 Inspect it with `sqlite3 {path}/{FILE} 'PRAGMA integrity_check'`, or delete the \
                 folder"
            ),
            Reason::EarlierFormat => format!(
                "a database an earlier routine wrote (LMDB) was set aside in `{path}`: this \
                 routine does not read its results. Delete the folder"
            ),
        }
    }
}

/// The databases set aside beside the store at `root`, oldest first.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// assert!(routine_core::store::set_aside_databases(dir.path()).is_empty());
/// ```
pub fn set_aside_databases(root: &Path) -> Vec<SetAside> {
    let Ok(items) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<SetAside> = items
        .filter_map(Result::ok)
        .filter_map(|item| {
            let name = item.file_name();
            let rest = name.to_str()?.strip_prefix(DATABASE)?.strip_prefix('.')?;
            let reason = [Reason::Damaged, Reason::EarlierFormat]
                .into_iter()
                .find(|reason| rest.starts_with(&format!("{}-", reason.label())))?;
            let meta = item.metadata().ok().filter(fs::Metadata::is_dir)?;
            Some(SetAside {
                size: folder_size(&item.path()),
                path: item.path(),
                reason,
                at: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })
        })
        .collect();
    found.sort_by(|a, b| (a.at, &a.path).cmp(&(b.at, &b.path)));
    found
}

fn folder_size(folder: &Path) -> u64 {
    let Ok(items) = fs::read_dir(folder) else {
        return 0;
    };
    items
        .filter_map(Result::ok)
        .filter_map(|item| item.metadata().ok())
        .filter(fs::Metadata::is_file)
        .map(|meta| meta.len())
        .sum()
}

/// Where the lock that orders setting aside among processes lives in
/// `.locks`: past every key's byte (keys take offsets below 2^62).
const SET_ASIDE_LOCK: i64 = 1 << 62;

/// Sets the database of the store at `root` aside, if the file at its path
/// is still `identity` (another process may have set it aside, and made a
/// fresh one, since this one found it damaged). Returns where it went, or
/// `None` if it was gone already.
pub(crate) fn set_aside(
    root: &Path,
    identity: Option<FileId>,
    reason: Reason,
    detail: &str,
) -> io::Result<Option<PathBuf>> {
    let locks = LockFile::open(root)?;
    let _held = locks.lock_waiting(SET_ASIDE_LOCK)?;
    let folder = root.join(DATABASE);
    let current = FileId::of(&folder.join(FILE))?;
    if reason == Reason::Damaged && (current.is_none() || current != identity) {
        return Ok(None);
    }
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let target = root.join(format!(
        "{DATABASE}.{}-{stamp}-{}",
        reason.label(),
        std::process::id()
    ));
    fs::rename(&folder, &target)?;
    let why = format!(
        "Set aside by process {} at {}: {detail}\n",
        std::process::id(),
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    // The note is a courtesy: the folder's name says the rest.
    let _ = fs::write(target.join("WHY"), why);
    Ok(Some(target))
}
