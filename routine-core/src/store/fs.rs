//! The embedded default store: one file per entry under
//! `<root>/<name>/<version>/<key-hex>`.
//!
//! Writes go to a hidden temporary file in the same directory and are renamed
//! into place, so a reader or a crash sees the old entry or the new one, never
//! a part. With [`Durability::Fsync`] the file and its directory are also
//! synced, so a committed entry survives power loss.

use std::fs::{self, File, FileTimes, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use super::locks::{LockFile, Taken, LOCKS};
use super::{
    access_is_stale, check_name, check_version, EntryWrite, Found, KeyLock, Listing, Slot, Store,
    StoreError,
};
use crate::key::Key;

/// Entries up to this size are read whole in one system call; larger ones are
/// streamed.
const READ_WHOLE_MAX: u64 = 1024 * 1024;

/// How hard a committed entry is pushed to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Rename into place without syncing: the entry survives the process
    /// being killed at any point (the kernel holds it), not power loss.
    #[default]
    Process,
    /// `fsync` the entry and its directory before the call returns: the entry
    /// survives power loss. Costs a disk flush per stored result.
    Fsync,
}

/// The file store. Cheap to clone; safe to share between threads and
/// processes.
///
/// ```
/// use routine_core::store::{Durability, FileStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStore::open(dir.path()).unwrap().with_durability(Durability::Fsync);
/// assert_eq!(store.root(), dir.path());
/// ```
#[derive(Debug, Clone)]
pub struct FileStore {
    root: Arc<PathBuf>,
    durability: Durability,
    /// The keys' cross-process locks, opened at the first lock; or why
    /// not, and whether it is because the store cannot be written.
    locks: Arc<OnceLock<Result<LockFile, (bool, String)>>>,
}

impl FileStore {
    /// Opens the store rooted at `root`, creating the directory if missing.
    /// A folder becomes a store on first use (see [`marker`](super::marker)):
    /// an empty one, or one an earlier routine laid out, gets a marker; a
    /// folder of other files, or a file system's root, is refused with
    /// [`StoreError::NotAStore`].
    pub fn open(root: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let root = root.as_ref();
        fs::create_dir_all(root).map_err(StoreError::io("create the store directory", root))?;
        let probe = fs::metadata(root).map_err(StoreError::io("read the store directory", root))?;
        if !probe.is_dir() {
            return Err(StoreError::Io {
                op: "use as the store directory",
                path: root.to_owned(),
                source: io::Error::other("it is not a directory"),
            });
        }
        super::marker::claim(root)?;
        // Its small results would look missing to a file store.
        if root.join(super::DATABASE).exists() {
            return Err(StoreError::Unusable {
                store: root.display().to_string(),
                reason: format!(
                    "it keeps its small results in a database (`{}`): open it with the database \
                     layout (`layout = \"database\"` in routine.toml, ROUTINE_LAYOUT=database, or \
                     `DatabaseStore`)",
                    super::DATABASE
                ),
                hint: None,
            });
        }
        Ok(FileStore::beside_database(root))
    }

    /// The files of a store whose small results are in a database
    /// ([`DatabaseStore`](super::DatabaseStore)); `root` is claimed already.
    pub(crate) fn beside_database(root: &Path) -> FileStore {
        FileStore {
            root: Arc::new(root.to_owned()),
            durability: Durability::default(),
            locks: Arc::default(),
        }
    }

    /// The same store with another durability.
    pub fn with_durability(mut self, durability: Durability) -> FileStore {
        self.durability = durability;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding one version of one task.
    pub fn version_dir(&self, name: &str, version: &str) -> Result<PathBuf, StoreError> {
        check_name(name)?;
        check_version(version)?;
        Ok(self.root.join(name).join(version))
    }

    fn entry_path(&self, slot: &Slot<'_>) -> Result<PathBuf, StoreError> {
        Ok(self
            .version_dir(slot.name, slot.version)?
            .join(slot.key.to_hex()))
    }
}

impl FileStore {
    /// Reads the entry in `slot`; with `record`, records its use.
    fn read(&self, slot: &Slot<'_>, record: bool) -> Result<Option<Found>, StoreError> {
        let path = self.entry_path(slot)?;
        let mut file = match open_entry(&path, record) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open", path)(e)),
        };
        let meta = file.metadata().map_err(StoreError::io("stat", &path))?;
        if !meta.is_file() {
            return Err(StoreError::io("open", path)(io::Error::other(
                "it is not a regular file (a pipe, a device or a folder stands where an entry belongs)",
            )));
        }
        if record {
            record_use(&file, &meta);
        }
        let len = meta.len();
        if len > READ_WHOLE_MAX {
            return Ok(Some(Found::Stream {
                reader: Box::new(file),
                len,
            }));
        }
        let mut bytes = vec![0; len as usize];
        file.read_exact(&mut bytes)
            .map_err(StoreError::io("read", &path))?;
        Ok(Some(Found::Bytes(Arc::new(bytes))))
    }
}

impl Store for FileStore {
    fn try_lock(&self, slot: &Slot<'_>) -> Result<KeyLock, StoreError> {
        let path = self.root.join(LOCKS);
        let locks = self.locks.get_or_init(|| {
            LockFile::open(&self.root).map_err(|e| (super::is_read_only(&e), e.to_string()))
        });
        let locks = match locks {
            Ok(locks) => locks,
            // Nothing is written to a read-only store: no call needs its
            // key locked.
            Err((true, _)) => return Ok(KeyLock::Unsupported),
            Err((false, e)) => {
                return Err(StoreError::io("open", &path)(io::Error::other(e.clone())))
            }
        };
        match locks.try_lock(slot.key) {
            Ok(Taken::Held(held)) => Ok(KeyLock::Held(held)),
            Ok(Taken::Busy) => Ok(KeyLock::Busy),
            Err(e) => Err(StoreError::io("lock", path)(e)),
        }
    }

    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        self.read(slot, true)
    }

    fn peek(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        self.read(slot, false)
    }

    fn create(&self, slot: &Slot<'_>, _len: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        let dest = self.entry_path(slot)?;
        let dir = dest
            .parent()
            .expect("an entry path has a parent")
            .to_owned();
        let tmp = dir.join(temp_name(slot.key));
        let open = || OpenOptions::new().write(true).create_new(true).open(&tmp);
        let file = match open() {
            Ok(file) => file,
            // The first result of a task version, or the directory was removed
            // by hand while the program ran.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
                open().map_err(StoreError::io("create", &tmp))?
            }
            Err(e) => return Err(StoreError::io("create", &tmp)(e)),
        };
        Ok(Box::new(FileWriter {
            file,
            tmp,
            dest,
            dir,
            durability: self.durability,
            committed: false,
        }))
    }

    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        let path = self.entry_path(slot)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove", path)(e)),
        }
    }

    fn list(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<Listing>, StoreError> {
        let names = match name {
            Some(name) => {
                check_name(name)?;
                vec![name.to_owned()]
            }
            None => subdirectories(&self.root, check_name)?,
        };
        let mut out = Vec::new();
        for name in names {
            let task_dir = self.root.join(&name);
            let versions = match version {
                Some(version) => {
                    check_version(version)?;
                    vec![version.to_owned()]
                }
                None => subdirectories(&task_dir, check_version)?,
            };
            let name: Arc<str> = name.into();
            for version in versions {
                let dir = task_dir.join(&*version);
                let version: Arc<str> = version.into();
                for (key, meta) in entries_in(&dir)? {
                    out.push(Listing {
                        name: Arc::clone(&name),
                        version: Arc::clone(&version),
                        key,
                        size: meta.len(),
                        created: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        accessed: last_use(&meta),
                    });
                }
            }
        }
        Ok(out)
    }

    fn sweep_abandoned(&self, older_than: Duration) -> Result<u64, StoreError> {
        let now = SystemTime::now();
        let mut freed = 0;
        for name in subdirectories(&self.root, check_name)? {
            for version in subdirectories(&self.root.join(&name), check_version)? {
                for item in items(&self.root.join(&name).join(&version))? {
                    let file_name = item.file_name();
                    let Some(file_name) = file_name.to_str() else {
                        continue;
                    };
                    if !(file_name.starts_with('.') && file_name.ends_with(".tmp")) {
                        continue;
                    }
                    let Ok(meta) = item.metadata() else { continue };
                    let age = meta
                        .modified()
                        .ok()
                        .and_then(|modified| now.duration_since(modified).ok());
                    if age.is_some_and(|age| age > older_than) {
                        match fs::remove_file(item.path()) {
                            Ok(()) => freed += meta.len(),
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(StoreError::io("remove", item.path())(e)),
                        }
                    }
                }
            }
        }
        Ok(freed)
    }
}

/// An entry's modification time is when it was written (entries are never
/// modified in place); its access time, kept current by [`record_use`] even
/// on `noatime` mounts, is when it was last read.
fn last_use(meta: &Metadata) -> SystemTime {
    let written = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    meta.accessed().map_or(written, |read| read.max(written))
}

/// Sets the access time of an entry just read, when the recorded one is
/// stale. Best effort: a store on a read-only mount still serves reads.
fn record_use(file: &File, meta: &Metadata) {
    let now = SystemTime::now();
    if access_is_stale(last_use(meta), now) {
        if let Err(e) = file.set_times(FileTimes::new().set_accessed(now)) {
            tracing::debug!(error = %e, "cannot record the use of a stored entry");
        }
    }
}

/// Opens an entry for reading without blocking: a named pipe or a device
/// at an entry's path is opened at once (then refused as not a regular
/// file) instead of waiting for a writer forever. Unless the read is a use
/// (`record`), the file system is asked not to update its access time
/// (a process may ask so only of its own files; others are opened as a
/// use would be).
fn open_entry(path: &Path, record: bool) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    if !record {
        match open_with(path, libc::O_NONBLOCK | libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            opened => return opened,
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = record;
    #[cfg(unix)]
    return open_with(path, libc::O_NONBLOCK);
    #[cfg(not(unix))]
    return File::open(path);
}

/// `path` opened for reading with the open flags `flags`.
#[cfg(unix)]
fn open_with(path: &Path, flags: libc::c_int) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// Unique per process and call: the pid keeps processes apart, the counter
/// keeps concurrent writers of one process apart.
fn temp_name(key: &Key) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{}.{}.{n}.tmp", key.short(), std::process::id())
}

/// What `dir` holds; a missing `dir` holds nothing.
fn items(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    match fs::read_dir(dir) {
        Ok(read) => read
            .collect::<Result<_, _>>()
            .map_err(StoreError::io("list", dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io("list", dir)(e)),
    }
}

/// Directory names under `dir` that are valid components; a missing `dir` is
/// empty.
/// The subdirectories of `dir` whose names `valid` accepts.
fn subdirectories(
    dir: &Path,
    valid: fn(&str) -> Result<(), StoreError>,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for item in items(dir)? {
        let is_dir = item.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if let (true, Some(name)) = (is_dir, item.file_name().to_str()) {
            if valid(name).is_ok() {
                out.push(name.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Entries (files named by a full key) under one version directory; temporary
/// and foreign files are skipped.
fn entries_in(dir: &Path) -> Result<Vec<(Key, Metadata)>, StoreError> {
    let mut out = Vec::new();
    for item in items(dir)? {
        let Some(key) = item
            .file_name()
            .to_str()
            .and_then(|n| Key::from_hex(n).ok())
        else {
            continue;
        };
        match item.metadata() {
            Ok(meta) if meta.is_file() => out.push((key, meta)),
            Ok(_) => {}
            // Removed between listing and stat: it is simply gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("stat", item.path())(e)),
        }
    }
    out.sort_by_key(|(key, _)| *key);
    Ok(out)
}

struct FileWriter {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    durability: Durability,
    committed: bool,
}

impl Write for FileWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.file.write(bytes)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl EntryWrite for FileWriter {
    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.durability == Durability::Fsync {
            // `fdatasync` flushes the data and the size needed to read it
            // back; the timestamps it skips are not part of an entry.
            self.file
                .sync_data()
                .map_err(StoreError::io("sync", &self.tmp))?;
        }
        fs::rename(&self.tmp, &self.dest)
            .map_err(StoreError::io("rename into place", &self.dest))?;
        self.committed = true;
        if self.durability == Durability::Fsync {
            // The rename itself is durable only once the directory is synced.
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(StoreError::io("sync", &self.dir))?;
        }
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract() {
        let dir = tempfile::tempdir().unwrap();
        super::super::contract::run(&FileStore::open(dir.path()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        super::super::contract::run(
            &FileStore::open(dir.path())
                .unwrap()
                .with_durability(Durability::Fsync),
        );
    }

    #[test]
    fn layout_is_name_version_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let key = Key::of("train", "0.0.1", &1u8).unwrap();
        let slot = Slot {
            name: "train",
            version: "0.0.1",
            key: &key,
        };
        let mut w = store.create(&slot, 1).unwrap();
        w.write_all(b"x").unwrap();
        w.commit().unwrap();
        assert!(dir.path().join("train/0.0.1").join(key.to_hex()).is_file());
        // No temporary file is left next to it.
        assert_eq!(
            fs::read_dir(dir.path().join("train/0.0.1"))
                .unwrap()
                .count(),
            1
        );
    }

    fn put(store: &FileStore, slot: &Slot<'_>, bytes: &[u8]) {
        let mut w = store.create(slot, bytes.len() as u64).unwrap();
        w.write_all(bytes).unwrap();
        w.commit().unwrap();
    }

    fn set_times(path: &Path, at: SystemTime) {
        let times = FileTimes::new().set_accessed(at).set_modified(at);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(times)
            .unwrap();
    }

    #[test]
    fn reads_record_their_use_at_the_access_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let key = Key::of("train", "0.0.1", &1u8).unwrap();
        let slot = Slot {
            name: "train",
            version: "0.0.1",
            key: &key,
        };
        put(&store, &slot, b"x");
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
        set_times(
            &dir.path().join("train/0.0.1").join(key.to_hex()),
            two_days_ago,
        );
        let before = store.list(None, None).unwrap().remove(0);
        assert_eq!(
            (before.created, before.accessed),
            (two_days_ago, two_days_ago)
        );

        store.get(&slot).unwrap().unwrap();
        let after = store.list(None, None).unwrap().remove(0);
        assert_eq!(
            after.created, two_days_ago,
            "a read does not change the creation time"
        );
        let since_use = SystemTime::now().duration_since(after.accessed).unwrap();
        assert!(since_use < Duration::from_secs(60), "{since_use:?}");

        // A re-read two minutes after the last recorded use counts too
        // (on a `noatime` mount nothing else would record it).
        let two_minutes_ago = SystemTime::now() - Duration::from_secs(120);
        set_times(
            &dir.path().join("train/0.0.1").join(key.to_hex()),
            two_minutes_ago,
        );
        store.get(&slot).unwrap().unwrap();
        let again = store.list(None, None).unwrap().remove(0);
        let since_use = SystemTime::now().duration_since(again.accessed).unwrap();
        assert!(since_use < Duration::from_secs(60), "{since_use:?}");
    }

    #[test]
    fn sweeping_removes_only_old_leftovers_of_killed_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let key = Key::of("train", "0.0.1", &1u8).unwrap();
        let slot = Slot {
            name: "train",
            version: "0.0.1",
            key: &key,
        };
        put(&store, &slot, b"entry");
        let version_dir = dir.path().join("train/0.0.1");
        let (old, young) = (
            version_dir.join(".ab.1.0.tmp"),
            version_dir.join(".ab.1.1.tmp"),
        );
        fs::write(&old, b"12345").unwrap();
        fs::write(&young, b"123").unwrap();
        set_times(&old, SystemTime::now() - Duration::from_secs(7200));

        assert_eq!(store.sweep_abandoned(Duration::from_secs(3600)).unwrap(), 5);
        assert!(!old.exists() && young.exists());
        assert!(
            store.get(&slot).unwrap().is_some(),
            "entries are never swept"
        );
    }

    #[test]
    fn bad_components_and_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let key = Key::of("t", "1", &()).unwrap();
        for (name, version) in [
            ("..", "1"),
            ("a/b", "1"),
            ("t", "../x"),
            ("", "1"),
            ("t", "."),
        ] {
            let slot = Slot {
                name,
                version,
                key: &key,
            };
            assert!(
                matches!(store.get(&slot), Err(StoreError::InvalidComponent(_))),
                "{name} {version}"
            );
        }
        let file = dir.path().join("plain-file");
        fs::write(&file, b"").unwrap();
        assert!(FileStore::open(&file).is_err());
    }
}
