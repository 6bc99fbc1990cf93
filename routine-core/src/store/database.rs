//! The compact local store: small results in an embedded database (LMDB,
//! through `heed`), large ones as files beside it, in the file store's
//! layout.
//!
//! ```text
//! <root>/.routine-store                   the marker (see `marker`)
//! <root>/.database/data.mdb, lock.mdb     LMDB: entries (name\0version\0key -> created, entry)
//!                                               uses    (name\0version\0key -> last use)
//! <root>/<name>/<version>/<key>           results over `SMALL_MAX`, and those of a file store
//! <root>/.locks                           the keys' cross-process locks
//! ```
//!
//! LMDB is copy-on-write: a transaction commits whole or not at all, so a
//! process killed at any moment leaves the last committed state, and
//! several processes share the database (its own lock file serialises
//! writers). Commits are not synced by themselves; with
//! [`Durability::Fsync`] each write is synced before it returns, and the
//! writers that arrive while one commits join the next commit together
//! (group commit: one transaction and its two syncs for all of them).
//!
//! A folder used as a file store before reads on: its entries are found as
//! files, and new small results go to the database.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions};

use super::{
    access_is_stale, check_name, check_slot, check_version, from_unix_nanos, unix_nanos,
    Durability, EntryWrite, FileStore, Found, KeyLock, Listing, Slot, Store, StoreError,
};
use crate::key::Key;

/// The database's folder, at the store's root.
pub const DATABASE: &str = ".database";

/// Entries up to this size go to the database; larger ones are files.
pub const SMALL_MAX: usize = 256 * 1024;

/// The database may grow to this size (address space, not disk).
const MAP_SIZE: usize = 1 << 40;

/// The compact store; see the module's documentation. Cheap to clone.
///
/// ```
/// use routine_core::store::{DatabaseStore, Store};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = DatabaseStore::open(dir.path()).unwrap();
/// assert!(store.list(None, None).unwrap().is_empty());
/// ```
#[derive(Clone)]
pub struct DatabaseStore {
    files: FileStore,
    durability: Durability,
    shared: Arc<Shared>,
}

/// One open database, shared by every [`DatabaseStore`] of this process on
/// its folder: LMDB forbids opening one environment twice in a process (its
/// locks are per process), and heed refuses to.
struct Shared {
    env: Env<heed::WithoutTls>,
    entries: Database<Bytes, Bytes>,
    uses: Database<Bytes, Bytes>,
    /// Durable writes waiting for a commit (see `DatabaseStore::commit_durably`).
    durable: Mutex<DurableQueue>,
    /// Notified when a durable batch is done.
    durable_done: Condvar,
    /// Syncs run, for the tests of group commit.
    syncs: AtomicU64,
    /// Whether results may be files here: the folder had task folders when
    /// opened (a store used as files before), or this process wrote a large
    /// result or found a file at a slot. Until then a small write has no
    /// file to replace, and skips looking for one. (A file another process
    /// writes later for the same slot is harmless: the database's entry is
    /// read, listed and removed with it.)
    files_possible: AtomicBool,
    /// Uses read but not yet recorded: written with the next write, or
    /// when `USES_PENDING_MAX` gather or `USES_PENDING_AGE` passes, or
    /// when the store closes, so that a run of cold hits costs one commit,
    /// not one each. A crash loses at most these: access times are a hint
    /// for `cache gc`, to within [`super::ACCESS_RESOLUTION`] anyway.
    pending_uses: Mutex<PendingUses>,
}

/// The writes of one change to the database.
enum Change {
    /// An entry (its creation time, then the entry), replacing any entry
    /// and recorded use of its key.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// An entry and its recorded use removed; its outcome says whether the
    /// entry was there.
    Remove { key: Vec<u8> },
}

/// What a batch of durable writes came to, for each writer in it: whether
/// each of its changes changed something, or why the batch failed.
type Outcome = Arc<OnceLock<Result<Vec<bool>, String>>>;

/// Durable writes gathered for the next commit.
#[derive(Default)]
struct DurableQueue {
    /// Whether a writer is committing a batch now.
    leading: bool,
    /// The next batch: each writer's changes and where its outcome goes.
    waiting: Vec<(Vec<Change>, Outcome)>,
}

#[derive(Default)]
struct PendingUses {
    since: Option<Instant>,
    uses: Vec<(Vec<u8>, [u8; 8])>,
}

/// At most this many uses wait to be recorded.
const USES_PENDING_MAX: usize = 256;

/// A use waits at most this long to be recorded (checked at the next use).
const USES_PENDING_AGE: Duration = Duration::from_secs(1);

impl Drop for Shared {
    fn drop(&mut self) {
        let pending = std::mem::take(
            self.pending_uses
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if pending.uses.is_empty() {
            return;
        }
        let recorded = self.env.write_txn().and_then(|mut txn| {
            record_uses(&self.uses, &mut txn, pending.uses)?;
            txn.commit()
        });
        if let Err(e) = recorded {
            tracing::debug!(error = %e, "cannot record the uses of stored entries");
        }
    }
}

fn record_uses(
    uses: &Database<Bytes, Bytes>,
    txn: &mut heed::RwTxn<'_>,
    pending: Vec<(Vec<u8>, [u8; 8])>,
) -> heed::Result<()> {
    for (key, at) in pending {
        uses.put(txn, &key, &at)?;
    }
    Ok(())
}

impl Shared {
    fn open(folder: &Path, files_possible: bool) -> Result<Shared, StoreError> {
        let failed =
            |e: heed::Error| StoreError::io("open the database", folder)(io::Error::other(e));
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(MAP_SIZE).max_dbs(2).max_readers(1024);
        // SAFETY: the flags only skip syncs at commit; a durable commit
        // turns the data's sync back on (see `sync_data_at_commit`).
        // The map is never modified outside LMDB, and this process opens
        // the folder once (see `OPEN`).
        unsafe { options.flags(EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC) };
        let env = match unsafe { options.open(folder) } {
            // The last store on this folder is closing on another thread:
            // wait for it, then open afresh.
            Err(heed::Error::EnvAlreadyOpened) => {
                if let Some(closing) = heed::env_closing_event(folder) {
                    closing.wait();
                }
                // SAFETY: as above.
                unsafe { options.open(folder) }
            }
            opened => opened,
        }
        .map_err(failed)?;
        // A process killed while reading leaves its slot in the readers'
        // table, which would keep the pages it read from being reused.
        let cleared = env.clear_stale_readers().map_err(failed)?;
        if cleared > 0 {
            tracing::debug!(
                cleared,
                "readers of killed processes cleared from the store's database"
            );
        }
        let mut txn = env.write_txn().map_err(failed)?;
        let entries = env
            .create_database(&mut txn, Some("entries"))
            .map_err(failed)?;
        let uses = env
            .create_database(&mut txn, Some("uses"))
            .map_err(failed)?;
        txn.commit().map_err(failed)?;
        Ok(Shared {
            env,
            entries,
            uses,
            durable: Mutex::default(),
            durable_done: Condvar::new(),
            syncs: AtomicU64::new(0),
            files_possible: AtomicBool::new(files_possible),
            pending_uses: Mutex::default(),
        })
    }

    /// Whether the next commit syncs its pages before it writes the meta
    /// page. With durability asked for, it must: were the meta page to
    /// reach the disk before the pages it points at, a power cut would
    /// leave the database broken, not merely without its last write. The
    /// meta page itself is never synced by the commit (`NO_META_SYNC`):
    /// `DatabaseStore::commit` syncs it after. Called with a write
    /// transaction open, so no other thread of this process is in a commit
    /// or here.
    fn sync_data_at_commit(&self, sync: bool) -> heed::Result<()> {
        let skipping = self.env.get_flags()? & EnvFlags::NO_SYNC.bits() != 0;
        if skipping == sync {
            let mode = match sync {
                true => heed::FlagSetMode::Disable,
                false => heed::FlagSetMode::Enable,
            };
            // SAFETY: no other thread sets flags meanwhile (see above).
            unsafe { self.env.set_flags(EnvFlags::NO_SYNC, mode) }?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for DatabaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseStore({})", self.files.root().display())
    }
}

impl DatabaseStore {
    /// Opens the store rooted at `root` (created if missing; refused if it
    /// is not a store, as [`FileStore::open`] does).
    pub fn open(root: impl AsRef<Path>) -> Result<DatabaseStore, StoreError> {
        DatabaseStore::open_with(root.as_ref(), Durability::default())
    }

    /// The same, with `durability`.
    pub fn open_with(root: &Path, durability: Durability) -> Result<DatabaseStore, StoreError> {
        std::fs::create_dir_all(root)
            .map_err(StoreError::io("create the store directory", root))?;
        super::marker::claim(root)?;
        let files = FileStore::beside_database(root).with_durability(durability);
        let folder = root.join(DATABASE);
        std::fs::create_dir_all(&folder).map_err(StoreError::io("create", &folder))?;
        let folder = folder
            .canonicalize()
            .map_err(StoreError::io("resolve", &folder))?;
        static OPEN: Mutex<Vec<(PathBuf, Weak<Shared>)>> = Mutex::new(Vec::new());
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|(_, shared)| shared.strong_count() > 0);
        let found = open
            .iter()
            .find(|(path, _)| *path == folder)
            .and_then(|(_, shared)| shared.upgrade());
        let shared = match found {
            Some(shared) => shared,
            None => {
                let shared = Arc::new(Shared::open(&folder, has_task_folders(root)?)?);
                open.push((folder, Arc::downgrade(&shared)));
                shared
            }
        };
        Ok(DatabaseStore {
            files,
            durability,
            shared,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.files.root()
    }

    fn error(&self, op: &'static str) -> impl Fn(heed::Error) -> StoreError + '_ {
        move |e| StoreError::io(op, self.root().join(DATABASE))(io::Error::other(e))
    }

    /// Makes `changes` in one commit, with the uses noted so far; for each,
    /// whether it changed something. With [`Durability::Fsync`] the commit
    /// is synced before this returns, and writers that arrive while one
    /// commits join the next commit together (group commit).
    fn write(&self, changes: Vec<Change>) -> Result<Vec<bool>, StoreError> {
        match self.durability {
            Durability::Process => self.commit(vec![changes], false).map(|mut o| o.remove(0)),
            Durability::Fsync => self.commit_durably(changes),
        }
    }

    /// Commits the changes of several writers in one transaction; with
    /// `sync`, syncs it (see `sync_data_at_commit` for the order).
    fn commit(&self, writers: Vec<Vec<Change>>, sync: bool) -> Result<Vec<Vec<bool>>, StoreError> {
        let shared = &*self.shared;
        let failed = self.error("write");
        let pending = self.take_pending_uses();
        let mut txn = shared.env.write_txn().map_err(&failed)?;
        shared.sync_data_at_commit(sync).map_err(&failed)?;
        record_uses(&shared.uses, &mut txn, pending).map_err(&failed)?;
        let (entries, uses) = (shared.entries, shared.uses);
        let mut outcomes = Vec::with_capacity(writers.len());
        for changes in writers {
            let mut changed = Vec::with_capacity(changes.len());
            for change in changes {
                changed.push(match change {
                    Change::Put { key, value } => {
                        entries.put(&mut txn, &key, &value).map_err(&failed)?;
                        uses.delete(&mut txn, &key).map_err(&failed)?;
                        true
                    }
                    Change::Remove { key } => {
                        uses.delete(&mut txn, &key).map_err(&failed)?;
                        entries.delete(&mut txn, &key).map_err(&failed)?
                    }
                });
            }
            outcomes.push(changed);
        }
        txn.commit().map_err(self.error("commit"))?;
        if sync {
            // The commit synced its pages before it wrote the meta page
            // that points at them; this makes the meta page durable too.
            shared.env.force_sync().map_err(self.error("sync"))?;
            shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcomes)
    }

    /// A durable write: joins the next batch, and commits it if no other
    /// writer is committing one; else waits for its batch to be done.
    fn commit_durably(&self, changes: Vec<Change>) -> Result<Vec<bool>, StoreError> {
        let shared = &*self.shared;
        let lock = || {
            shared
                .durable
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        let mine = Outcome::default();
        let mut queue = lock();
        queue.waiting.push((changes, Arc::clone(&mine)));
        loop {
            if let Some(outcome) = mine.get() {
                return outcome.clone().map_err(|message| {
                    StoreError::io("commit", self.root().join(DATABASE))(io::Error::other(message))
                });
            }
            if queue.leading {
                queue = shared
                    .durable_done
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Nobody is committing and this writer's batch is not done: it
            // is the waiting batch. Commit it.
            queue.leading = true;
            let batch = std::mem::take(&mut queue.waiting);
            drop(queue);
            let (writers, outcomes): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let committed = self.commit(writers, true);
            match committed {
                Ok(changed) => {
                    for (outcome, changed) in outcomes.iter().zip(changed) {
                        let _ = outcome.set(Ok(changed));
                    }
                }
                Err(e) => {
                    for outcome in &outcomes {
                        let _ = outcome.set(Err(e.to_string()));
                    }
                }
            }
            queue = lock();
            queue.leading = false;
            shared.durable_done.notify_all();
        }
    }

    fn put_small(&self, slot: &Slot<'_>, entry: &[u8]) -> Result<(), StoreError> {
        let key = db_key(slot)?;
        let now = unix_nanos(SystemTime::now());
        let mut value = Vec::with_capacity(8 + entry.len());
        value.extend_from_slice(&now.to_le_bytes());
        value.extend_from_slice(entry);
        self.write(vec![Change::Put { key, value }])?;
        // The entry replaces a file of the same slot, if any.
        if self.shared.files_possible.load(Ordering::Relaxed) {
            self.files.remove(slot)?;
        }
        Ok(())
    }

    /// Notes that results may be files from now on.
    fn files_written(&self) {
        self.shared.files_possible.store(true, Ordering::Relaxed);
    }

    fn remove_small(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        let key = db_key(slot)?;
        Ok(self.write(vec![Change::Remove { key }])?[0])
    }

    fn pending_uses(&self) -> std::sync::MutexGuard<'_, PendingUses> {
        (self.shared.pending_uses.lock()).unwrap_or_else(PoisonError::into_inner)
    }

    fn take_pending_uses(&self) -> Vec<(Vec<u8>, [u8; 8])> {
        let mut pending = self.pending_uses();
        pending.since = None;
        std::mem::take(&mut pending.uses)
    }

    /// Notes a use of the entry at `key`, recorded with the next commit.
    fn record_use(&self, key: Vec<u8>, now: SystemTime) {
        let due = {
            let mut pending = self.pending_uses();
            pending.uses.push((key, unix_nanos(now).to_le_bytes()));
            let since = *pending.since.get_or_insert_with(Instant::now);
            pending.uses.len() >= USES_PENDING_MAX || since.elapsed() >= USES_PENDING_AGE
        };
        if due {
            self.flush_uses();
        }
    }

    /// Records the uses noted so far.
    fn flush_uses(&self) {
        if self.pending_uses().uses.is_empty() {
            return;
        }
        if let Err(e) = self.write(Vec::new()) {
            tracing::debug!(error = %e, "cannot record the uses of stored entries");
        }
    }

    /// The results in the database (not those in files), optionally of one
    /// task, optionally of one version; in slot order.
    fn list_database(
        &self,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<Listing>, StoreError> {
        self.flush_uses();
        let mut prefix = Vec::new();
        if let Some(name) = name {
            check_name(name)?;
            prefix.extend_from_slice(name.as_bytes());
            prefix.push(0);
            if let Some(version) = version {
                check_version(version)?;
                prefix.extend_from_slice(version.as_bytes());
                prefix.push(0);
            }
        }
        let shared = &*self.shared;
        let mut out = Vec::new();
        {
            let txn = shared.env.read_txn().map_err(self.error("list"))?;
            let mut add = |item: heed::Result<(&[u8], &[u8])>| -> Result<(), StoreError> {
                let (db_key, value) = item.map_err(self.error("list"))?;
                let Some((entry_name, entry_version, key)) = parse_db_key(db_key) else {
                    return Ok(());
                };
                // One name and version for all of a task version's results.
                let shared_names = match out.last() {
                    Some(Listing { name, version, .. })
                        if **name == *entry_name && **version == *entry_version =>
                    {
                        (Arc::clone(name), Arc::clone(version))
                    }
                    _ => (Arc::from(entry_name), Arc::from(entry_version)),
                };
                let created = time(value);
                let accessed = match shared.uses.get(&txn, db_key).map_err(self.error("list"))? {
                    Some(used) if used.len() == 8 => time(used).max(created),
                    _ => created,
                };
                out.push(Listing {
                    name: shared_names.0,
                    version: shared_names.1,
                    key,
                    size: value.len().saturating_sub(8) as u64,
                    created,
                    accessed,
                });
                Ok(())
            };
            // LMDB cannot seek to an empty key: all entries are iterated.
            match prefix.is_empty() {
                true => {
                    for item in shared.entries.iter(&txn).map_err(self.error("list"))? {
                        add(item)?;
                    }
                }
                false => {
                    let iter = shared.entries.prefix_iter(&txn, &prefix);
                    for item in iter.map_err(self.error("list"))? {
                        add(item)?;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What a migration moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Results moved.
    pub results: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Moves the store at `root` to `layout`: its small results from files
/// into the database, or from the database back into files (and then the
/// database away). Safe to interrupt and run again: a result is copied
/// before its old copy is removed, and while both exist the database's is
/// read. No other process may use the store meanwhile.
///
/// ```
/// use routine_core::store::{migrate, Layout};
///
/// let dir = tempfile::tempdir().unwrap();
/// let moved = migrate(dir.path(), Layout::Database).unwrap();
/// assert_eq!(moved.results, 0);
/// assert!(dir.path().join(".database").is_dir());
/// migrate(dir.path(), Layout::Files).unwrap();
/// assert!(!dir.path().join(".database").exists());
/// ```
pub fn migrate(root: &Path, layout: super::Layout) -> Result<Migrated, StoreError> {
    let store = DatabaseStore::open(root)?;
    let mut moved = Migrated::default();
    match layout {
        super::Layout::Database => {
            for listing in store.files.list(None, None)? {
                if listing.size as usize > SMALL_MAX {
                    continue;
                }
                let slot = Slot {
                    name: &listing.name,
                    version: &listing.version,
                    key: &listing.key,
                };
                let Some(found) = store.files.get(&slot)? else {
                    continue;
                };
                let bytes = found.into_bytes().map_err(StoreError::io("read", root))?;
                store.put_small(&slot, &bytes)?;
                moved.results += 1;
                moved.bytes += bytes.len() as u64;
            }
        }
        super::Layout::Files => {
            for listing in store.list_database(None, None)? {
                let slot = Slot {
                    name: &listing.name,
                    version: &listing.version,
                    key: &listing.key,
                };
                let Some(found) = store.get(&slot)? else {
                    continue;
                };
                let bytes = found.into_bytes().map_err(StoreError::io("read", root))?;
                super::put_whole(&store.files, &slot, &bytes)?;
                store.remove_small(&slot)?;
                moved.results += 1;
                moved.bytes += bytes.len() as u64;
            }
            drop(store);
            let folder = root.join(DATABASE);
            std::fs::remove_dir_all(&folder).map_err(StoreError::io("remove", &folder))?;
        }
    }
    Ok(moved)
}

/// Whether `root` holds a folder named as a task: results as files.
fn has_task_folders(root: &Path) -> Result<bool, StoreError> {
    let read = std::fs::read_dir(root).map_err(StoreError::io("list", root))?;
    for item in read {
        let item = item.map_err(StoreError::io("list", root))?;
        let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
        if is_dir
            && item
                .file_name()
                .to_str()
                .is_some_and(|n| check_name(n).is_ok())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `name\0version\0key`: names and versions hold no NUL, and sort by name,
/// then version.
fn db_key(slot: &Slot<'_>) -> Result<Vec<u8>, StoreError> {
    check_slot(slot)?;
    let mut key = Vec::with_capacity(slot.name.len() + slot.version.len() + 34);
    key.extend_from_slice(slot.name.as_bytes());
    key.push(0);
    key.extend_from_slice(slot.version.as_bytes());
    key.push(0);
    key.extend_from_slice(slot.key.as_bytes());
    Ok(key)
}

/// The name, version and key a database key holds.
fn parse_db_key(bytes: &[u8]) -> Option<(&str, &str, Key)> {
    let mut parts = bytes.splitn(3, |b| *b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let version = std::str::from_utf8(parts.next()?).ok()?;
    let key: [u8; 32] = parts.next()?.try_into().ok()?;
    Some((name, version, Key::from_bytes(key)))
}

/// The time a stored value starts with; the epoch for a value too short
/// to hold one (a damaged database is read, not trusted).
fn time(bytes: &[u8]) -> SystemTime {
    let nanos = bytes
        .get(..8)
        .and_then(|head| head.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    from_unix_nanos(nanos)
}

impl Store for DatabaseStore {
    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        let key = db_key(slot)?;
        let shared = &*self.shared;
        let now = SystemTime::now();
        let found = {
            let txn = shared.env.read_txn().map_err(self.error("read"))?;
            match shared.entries.get(&txn, &key).map_err(self.error("read"))? {
                Some(value) if value.len() >= 8 => {
                    // A use is at or after its entry's creation: only an
                    // entry created before the resolution has uses to read.
                    let stale = access_is_stale(time(value), now)
                        && match shared.uses.get(&txn, &key).map_err(self.error("read"))? {
                            Some(used) if used.len() == 8 => access_is_stale(time(used), now),
                            _ => true,
                        };
                    Some((value[8..].to_vec(), stale))
                }
                _ => None,
            }
        };
        match found {
            Some((entry, stale)) => {
                if stale {
                    self.record_use(key, now);
                }
                Ok(Some(Found::Bytes(Arc::new(entry))))
            }
            None => {
                let found = self.files.get(slot);
                if !matches!(found, Ok(None)) {
                    // Something is at the slot's path (a result, or what
                    // cannot be read as one): the next write replaces it.
                    self.files_written();
                }
                found
            }
        }
    }

    fn create(&self, slot: &Slot<'_>, len: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        check_slot(slot)?;
        if len as usize > SMALL_MAX {
            return Ok(Box::new(LargeWriter {
                store: self.clone(),
                name: slot.name.to_owned(),
                version: slot.version.to_owned(),
                key: *slot.key,
                file: self.files.create(slot, len)?,
            }));
        }
        Ok(Box::new(SmallWriter {
            store: self.clone(),
            name: slot.name.to_owned(),
            version: slot.version.to_owned(),
            key: *slot.key,
            bytes: Vec::with_capacity(len as usize),
        }))
    }

    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        Ok(self.remove_many(std::slice::from_ref(slot))?[0])
    }

    /// One commit for all of `slots`; then their files, looked for only in
    /// version folders that exist.
    fn remove_many(&self, slots: &[Slot<'_>]) -> Result<Vec<bool>, StoreError> {
        let removals = slots
            .iter()
            .map(|slot| db_key(slot).map(|key| Change::Remove { key }))
            .collect::<Result<Vec<_>, _>>()?;
        let mut removed = self.write(removals)?;
        let mut folders: std::collections::HashMap<(&str, &str), bool> = Default::default();
        for (slot, removed) in slots.iter().zip(&mut removed) {
            let folder_exists = *folders
                .entry((slot.name, slot.version))
                .or_insert_with(|| self.root().join(slot.name).join(slot.version).is_dir());
            if folder_exists && self.files.remove(slot)? {
                *removed = true;
            }
        }
        Ok(removed)
    }

    fn list(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<Listing>, StoreError> {
        let mut out = self.list_database(name, version)?;
        // Large results, and those of an earlier file store, but not a
        // file the database's entry of the same slot shadows.
        out.sort(); // in the database's order already: a linear check
        fn slot_of(l: &Listing) -> (&str, &str, Key) {
            (&l.name, &l.version, l.key)
        }
        let files: Vec<Listing> = (self.files.list(name, version)?.into_iter())
            .filter(|file| {
                out.binary_search_by(|l| slot_of(l).cmp(&slot_of(file)))
                    .is_err()
            })
            .collect();
        if !files.is_empty() {
            out.extend(files);
            out.sort();
        }
        Ok(out)
    }

    fn sweep_abandoned(&self, older_than: Duration) -> Result<u64, StoreError> {
        self.files.sweep_abandoned(older_than)
    }

    fn try_lock(&self, slot: &Slot<'_>) -> Result<KeyLock, StoreError> {
        self.files.try_lock(slot)
    }
}

/// A small entry, kept in memory until it commits to the database.
struct SmallWriter {
    store: DatabaseStore,
    name: String,
    version: String,
    key: Key,
    bytes: Vec<u8>,
}

impl Write for SmallWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl EntryWrite for SmallWriter {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let slot = Slot {
            name: &self.name,
            version: &self.version,
            key: &self.key,
        };
        // An entry larger than announced still has a home: a file.
        if self.bytes.len() > SMALL_MAX {
            self.store.files_written();
            return super::put_whole(&self.store.files, &slot, &self.bytes)
                .and_then(|()| self.store.remove_small(&slot).map(drop));
        }
        self.store.put_small(&slot, &self.bytes)
    }
}

/// A large entry, written as a file; committed, it replaces a small entry
/// of the same slot.
struct LargeWriter {
    store: DatabaseStore,
    name: String,
    version: String,
    key: Key,
    file: Box<dyn EntryWrite>,
}

impl Write for LargeWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.file.write(bytes)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl EntryWrite for LargeWriter {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let LargeWriter {
            store,
            name,
            version,
            key,
            file,
        } = *self;
        store.files_written();
        file.commit()?;
        let slot = Slot {
            name: &name,
            version: &version,
            key: &key,
        };
        store.remove_small(&slot).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::contract::run(&DatabaseStore::open(dir.path()).unwrap());
    }

    #[test]
    fn contract_with_fsync() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::contract::run(
            &DatabaseStore::open_with(dir.path(), Durability::Fsync).unwrap(),
        );
    }

    #[test]
    fn concurrent_durable_writes_share_their_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = DatabaseStore::open_with(dir.path(), Durability::Fsync).unwrap();
        let writers: Vec<_> = (0..8u8)
            .map(|thread| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in 0..20u8 {
                        let key = Key::of("t", "1.0.0", &(thread, n)).unwrap();
                        let slot = Slot {
                            name: "t",
                            version: "1.0.0",
                            key: &key,
                        };
                        super::super::put_whole(&store, &slot, b"durable").unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(store.list(None, None).unwrap().len(), 160);
        let syncs = store.shared.syncs.load(Ordering::Relaxed);
        // Every write is synced before it returns, but writes that commit
        // while a sync runs wait for the next one instead of one each.
        assert!(syncs < 160, "{syncs} syncs for 160 writes");
    }

    #[test]
    fn results_of_an_earlier_file_store_are_read_on() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::of("train", "0.0.1", &1u8).unwrap();
        let slot = Slot {
            name: "train",
            version: "0.0.1",
            key: &key,
        };
        super::super::put_whole(&FileStore::open(dir.path()).unwrap(), &slot, b"from a file")
            .unwrap();
        let store = DatabaseStore::open(dir.path()).unwrap();
        let found = store.get(&slot).unwrap().unwrap().into_bytes().unwrap();
        assert_eq!(found, b"from a file");
        assert_eq!(store.list(None, None).unwrap().len(), 1);
        // Written again, it moves to the database: one listing still.
        super::super::put_whole(&store, &slot, b"in the database").unwrap();
        assert_eq!(store.list(None, None).unwrap().len(), 1);
        let file = dir.path().join("train/0.0.1").join(key.to_hex());
        assert!(!file.exists());
        // A file another process writes meanwhile is shadowed: listed
        // once, read from the database, removed with it.
        std::fs::copy(dir.path().join(".routine-store"), &file).unwrap();
        let listed = store.list(None, None).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].size, b"in the database".len() as u64);
        assert_eq!(store.remove_many(&[slot]).unwrap(), [true]);
        assert!(!file.exists());
        assert!(store.list(None, None).unwrap().is_empty());
    }

    #[test]
    fn a_store_migrates_both_ways_and_keeps_every_result() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::open(dir.path()).unwrap();
        let slots: Vec<Key> = (0..5u8)
            .map(|n| Key::of("t", "1.0.0", &n).unwrap())
            .collect();
        let slot = |key| Slot {
            name: "t",
            version: "1.0.0",
            key,
        };
        for (n, key) in slots.iter().enumerate() {
            super::super::put_whole(&files, &slot(key), &vec![n as u8; 10 + n]).unwrap();
        }
        // A large one stays a file either way.
        let large = Key::of("t", "1.0.0", &99u8).unwrap();
        super::super::put_whole(&files, &slot(&large), &vec![1u8; SMALL_MAX + 1]).unwrap();

        let moved = migrate(dir.path(), super::super::Layout::Database).unwrap();
        assert_eq!(moved.results, 5);
        assert!(!dir.path().join("t/1.0.0").join(slots[0].to_hex()).exists());
        assert!(dir.path().join("t/1.0.0").join(large.to_hex()).exists());
        let store = DatabaseStore::open(dir.path()).unwrap();
        assert_eq!(store.list(None, None).unwrap().len(), 6);
        drop(store);

        let back = migrate(dir.path(), super::super::Layout::Files).unwrap();
        assert_eq!(back.results, 5);
        let files = FileStore::open(dir.path()).unwrap();
        for (n, key) in slots.iter().enumerate() {
            let bytes = files
                .get(&slot(key))
                .unwrap()
                .unwrap()
                .into_bytes()
                .unwrap();
            assert_eq!(bytes, vec![n as u8; 10 + n]);
        }
        assert_eq!(files.list(None, None).unwrap().len(), 6);
    }

    #[test]
    fn a_name_lists_only_its_own_results() {
        let dir = tempfile::tempdir().unwrap();
        let store = DatabaseStore::open(dir.path()).unwrap();
        for name in ["train", "train-2"] {
            let key = Key::of(name, "1.0.0", &1u8).unwrap();
            let slot = Slot {
                name,
                version: "1.0.0",
                key: &key,
            };
            super::super::put_whole(&store, &slot, b"x").unwrap();
        }
        assert_eq!(store.list(Some("train"), None).unwrap().len(), 1);
        assert_eq!(store.list(Some("train"), Some("1.0.0")).unwrap().len(), 1);
    }

    #[test]
    fn stores_on_one_folder_in_one_process_share_its_database() {
        let dir = tempfile::tempdir().unwrap();
        let first = DatabaseStore::open(dir.path()).unwrap();
        let second = DatabaseStore::open_with(dir.path(), Durability::Fsync).unwrap();
        let key = Key::of("train", "1.0.0", &1u8).unwrap();
        let slot = Slot {
            name: "train",
            version: "1.0.0",
            key: &key,
        };
        super::super::put_whole(&first, &slot, b"x").unwrap();
        drop(first);
        assert!(second.get(&slot).unwrap().is_some());
        drop(second);
        let again = DatabaseStore::open(dir.path()).unwrap();
        assert!(again.get(&slot).unwrap().is_some());
    }

    /// Writes an entry created `age` ago, as an older run would have.
    fn put_aged(store: &DatabaseStore, slot: &Slot<'_>, age: Duration) {
        let mut value = unix_nanos(SystemTime::now() - age).to_le_bytes().to_vec();
        value.extend_from_slice(b"x");
        let key = db_key(slot).unwrap();
        store.write(vec![Change::Put { key, value }]).unwrap();
    }

    #[test]
    fn reading_an_old_entry_records_its_use_by_the_next_listing_or_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = DatabaseStore::open(dir.path()).unwrap();
        let day = Duration::from_secs(86_400);
        let keys = [1u8, 2].map(|i| Key::of("train", "1.0.0", &i).unwrap());
        let slots = keys.each_ref().map(|key| Slot {
            name: "train",
            version: "1.0.0",
            key,
        });
        for slot in &slots {
            put_aged(&store, slot, day);
        }
        let recent = |listing: &Listing| {
            listing.accessed.elapsed().unwrap_or_default() < super::super::ACCESS_RESOLUTION
        };
        assert!(store.list(None, None).unwrap().iter().all(|l| !recent(l)));

        store.get(&slots[0]).unwrap().unwrap();
        let listed = store.list(None, None).unwrap();
        let used: Vec<bool> = listed.iter().map(recent).collect();
        let first = listed.iter().position(|l| l.key == keys[0]).unwrap();
        assert!(used[first] && !used[1 - first], "{listed:?}");

        store.get(&slots[1]).unwrap().unwrap();
        drop(store);
        let reopened = DatabaseStore::open(dir.path()).unwrap();
        assert!(reopened.list(None, None).unwrap().iter().all(recent));
    }
}
