//! A file store knows it is one: `<root>/.routine-store` names the format
//! of its layout. The file is written when a store is first used; a folder
//! without it is used as a store only if it is empty, or laid out as an
//! earlier routine wrote its stores (then it gets its marker). Anything
//! else, and a file system's root, is refused: neither the engine nor
//! `cache gc`/`cache rm` ever write into or delete from a folder that is
//! not a store.
//!
//! ```text
//! <root>/.routine-store      "routine store, layout 1"
//! <root>/<name>/<version>/<key-hex>
//! ```

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::{check_name, check_version, StoreError};
use crate::entry::MAGIC;
use crate::key::Key;

/// The marker's file name, at the store's root.
pub const MARKER: &str = ".routine-store";

/// The layout this build writes: one file per entry.
pub const LAYOUT: u32 = 1;

const PREFIX: &str = "routine store, layout ";

/// Entries whose first bytes are checked when an unmarked folder is
/// recognised as an earlier store.
const SAMPLED: usize = 3;

/// Makes sure `root` (an existing folder) is a store: marked, or empty, or
/// laid out as an earlier store; marks it if need be.
pub(crate) fn claim(root: &Path) -> Result<(), StoreError> {
    if is_file_system_root(root) {
        return Err(not_a_store(root, "it is the root of a file system"));
    }
    let marker = root.join(MARKER);
    if let Some(text) = read_marker(&marker)? {
        return check(root, &text);
    }
    let earlier = match Layout::of(root)? {
        Layout::Empty => false,
        Layout::EarlierStore => true,
        // Another process may have marked it, then begun to use it, since
        // the marker was looked for.
        Layout::Foreign(what) => {
            return match read_marker(&marker)? {
                Some(text) => check(root, &text),
                None => Err(not_a_store(root, &what)),
            }
        }
    };
    // Written whole under a name of its own, then linked into place: a
    // process reading the marker never sees it half written, and of two
    // processes marking a new store at once, one links and the other finds
    // its marker.
    static WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let written = root.join(format!(
        "{MARKER}.{}.{}.tmp",
        std::process::id(),
        WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    fs::write(&written, format!("{PREFIX}{LAYOUT}\n"))
        .map_err(StoreError::io("write the store marker", &written))?;
    let linked = match fs::hard_link(&written, &marker) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // A file system without hard links: moved into place instead (a
        // process marking it at the same time writes the same text).
        Err(_) => fs::rename(&written, &marker).map(|()| true),
        Ok(()) => Ok(true),
    };
    let _ = fs::remove_file(&written);
    if !linked.map_err(StoreError::io("write the store marker", &marker))? {
        let text = read_marker(&marker)?.unwrap_or_default();
        return check(root, &text);
    }
    if earlier {
        tracing::info!(store = %root.display(), "a store of an earlier routine: marked as a store");
    }
    Ok(())
}

/// The marker's text, if there is a marker.
fn read_marker(marker: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(marker) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read the store marker", marker)(e)),
    }
}

/// Whether `root` is marked as a store, without marking it.
pub fn is_marked(root: &Path) -> bool {
    root.join(MARKER).is_file()
}

fn check(root: &Path, text: &str) -> Result<(), StoreError> {
    let layout = text
        .trim()
        .strip_prefix(PREFIX)
        .and_then(|n| n.parse::<u32>().ok());
    match layout {
        Some(layout) if layout <= LAYOUT => Ok(()),
        Some(layout) => Err(not_a_store(
            root,
            &format!(
                "its layout {layout} is newer than this build's ({LAYOUT}): use the routine that made it"
            ),
        )),
        None => Err(not_a_store(
            root,
            &format!("its marker `{MARKER}` is not one routine wrote ({text:?})"),
        )),
    }
}

fn not_a_store(root: &Path, why: &str) -> StoreError {
    StoreError::NotAStore {
        path: root.to_owned(),
        reason: why.to_owned(),
    }
}

fn is_file_system_root(root: &Path) -> bool {
    root.canonicalize()
        .map(|path| path.parent().is_none())
        .unwrap_or(false)
}

/// What an unmarked folder holds.
enum Layout {
    Empty,
    EarlierStore,
    /// Something a store never holds, said for the error.
    Foreign(String),
}

impl Layout {
    fn of(root: &Path) -> Result<Layout, StoreError> {
        let mut seen_any = false;
        let mut sampled = 0;
        for name in read_dir(root)? {
            let (file_name, path) = (name.file_name(), name.path());
            let Some(text) = file_name.to_str() else {
                return Ok(foreign(&path, "a name that is not UTF-8"));
            };
            // Another process's marker, being written.
            if text.starts_with(MARKER) && text.ends_with(".tmp") {
                continue;
            }
            seen_any = true;
            if !is_dir(&name) || check_name(text).is_err() {
                return Ok(foreign(&path, "not a routine's folder"));
            }
            // The machine cache keeps raw blobs, not entries.
            let entries = text != "routine.blobs";
            for version in read_dir(&path)? {
                let version_path = version.path();
                let ok = version
                    .file_name()
                    .to_str()
                    .is_some_and(|v| check_version(v).is_ok());
                if !ok || !is_dir(&version) {
                    return Ok(foreign(&version_path, "not a version's folder"));
                }
                for item in read_dir(&version_path)? {
                    let item_path = item.path();
                    let item_name = item.file_name();
                    let item_name = item_name.to_str().unwrap_or("");
                    let temporary = item_name.starts_with('.') && item_name.ends_with(".tmp");
                    if temporary {
                        continue;
                    }
                    if Key::from_hex(item_name).is_err() || !is_file(&item) {
                        return Ok(foreign(&item_path, "not a stored entry"));
                    }
                    if entries && sampled < SAMPLED {
                        sampled += 1;
                        if !starts_with_magic(&item_path)? {
                            return Ok(foreign(&item_path, "not a stored entry"));
                        }
                    }
                }
            }
        }
        Ok(match seen_any {
            true => Layout::EarlierStore,
            false => Layout::Empty,
        })
    }
}

fn foreign(path: &Path, what: &str) -> Layout {
    Layout::Foreign(format!(
        "it has no `{MARKER}` marker and is not empty (`{}`: {what})",
        path.display()
    ))
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    fs::read_dir(dir)
        .and_then(|read| read.collect())
        .map_err(StoreError::io("list", dir))
}

fn is_dir(item: &fs::DirEntry) -> bool {
    item.file_type().is_ok_and(|t| t.is_dir())
}

fn is_file(item: &fs::DirEntry) -> bool {
    item.file_type().is_ok_and(|t| t.is_file())
}

fn starts_with_magic(path: &Path) -> Result<bool, StoreError> {
    let mut head = [0u8; 8];
    let mut file = fs::File::open(path).map_err(StoreError::io("open", path))?;
    match file.read_exact(&mut head) {
        Ok(()) => Ok(head == MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(StoreError::io("read", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_new_folder_becomes_a_store() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path()).unwrap();
        assert!(is_marked(dir.path()));
        claim(dir.path()).unwrap(); // marked: opens again
    }

    #[test]
    fn a_folder_of_other_files_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("build")).unwrap();
        fs::write(dir.path().join("build/.cache.tmp"), b"user data").unwrap();
        let hex = "ab".repeat(32);
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::write(dir.path().join("blobs/sha256").join(&hex), b"not an entry").unwrap();
        let error = claim(dir.path()).unwrap_err().to_string();
        assert!(error.contains("is not a routine store"), "{error}");
        assert!(!is_marked(dir.path()));

        // Even a tree shaped like a store is refused if its files are not
        // entries.
        let shaped = tempfile::tempdir().unwrap();
        fs::create_dir_all(shaped.path().join("blobs/sha256")).unwrap();
        fs::write(
            shaped.path().join("blobs/sha256").join(&hex),
            b"not an entry",
        )
        .unwrap();
        let error = claim(shaped.path()).unwrap_err().to_string();
        assert!(error.contains("not a stored entry"), "{error}");
    }

    #[test]
    fn a_store_of_an_earlier_version_is_recognised_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let version = dir.path().join("train/0.0.1");
        fs::create_dir_all(&version).unwrap();
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&[0; 40]);
        fs::write(version.join("cd".repeat(32)), &entry).unwrap();
        fs::write(version.join(".cdcdcdcd.42.0.tmp"), b"half written").unwrap();
        claim(dir.path()).unwrap();
        assert!(is_marked(dir.path()));
    }

    #[test]
    fn a_newer_layout_or_a_strange_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MARKER), format!("{PREFIX}{}\n", LAYOUT + 1)).unwrap();
        let error = claim(dir.path()).unwrap_err().to_string();
        assert!(error.contains("newer than this build"), "{error}");
        fs::write(dir.path().join(MARKER), "hello").unwrap();
        let error = claim(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not one routine wrote"), "{error}");
    }

    #[test]
    fn a_file_system_root_is_refused() {
        let error = claim(Path::new("/")).unwrap_err().to_string();
        assert!(error.contains("root of a file system"), "{error}");
    }

    #[test]
    fn processes_marking_a_new_store_at_once_all_open_it() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            std::fs::create_dir(&root).unwrap();
            let claims: Vec<_> = (0..8)
                .map(|_| {
                    let root = root.clone();
                    std::thread::spawn(move || claim(&root))
                })
                .collect();
            for claim in claims {
                claim.join().unwrap().unwrap();
            }
            let names: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
            assert_eq!(names.len(), 1, "only the marker is left: {names:?}");
        }
    }
}
