//! The compact local store: small results in an embedded SQLite database
//! (WAL mode), large ones as files beside it, in the file store's layout.
//!
//! ```text
//! <root>/.routine-store                          the marker (see `marker`)
//! <root>/.database/results.sqlite3, -wal, -shm   small results (see `sqlite`)
//! <root>/.database.damaged-<time>-<pid>/         a damaged database, set aside
//! <root>/<name>/<version>/<key>                  results over `SMALL_MAX`, and those of a file store
//! <root>/.locks                                  the keys' cross-process locks
//! ```
//!
//! What the store promises, and how:
//!
//! - **A bad database costs its results, never the program.** SQLite
//!   reports damage as an error (the file is never mapped): the damaged
//!   database is set aside (see `set_aside`), a fresh one started, and
//!   the call goes on as a miss. A database that cannot be opened at all
//!   is a warning, and the store keeps its files.
//! - **Read-only stores are read**: the database is opened read-only (as
//!   an immutable file on a read-only mount); writes fail as store errors.
//! - **A removed or replaced database is noticed** before each write and
//!   at each miss, and made again: results computed after `rm -rf` of the
//!   store are kept.
//! - **Crashes**: a commit is whole or absent after a process is killed.
//!   With the default durability, commits are not synced, and a power cut
//!   loses those since the last checkpoint (SQLite's WAL, synced at each
//!   checkpoint), never the rest; [`Durability::Fsync`] syncs each commit,
//!   and the writers that arrive while one commits join the next commit
//!   together (group commit: one transaction and one sync for all).
//!
//! A folder used as a file store before reads on: its entries are found as
//! files, and new small results go to the database.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use self::set_aside::set_aside;
use self::sqlite::{is_damage, Access, Change, Database, FileId, OpenError, Use};
use super::{
    access_is_stale, check_name, check_slot, check_version, is_read_only, page_of_versions, tally,
    task_tallies, Durability, EntryWrite, FileStore, Found, KeyLock, Listing, RecordKind, Removal,
    RemovalCause, Slot, Store, StoreError, Tally, VersionsPage,
};
use crate::key::Key;

mod checkpoint;
mod migrate;
mod set_aside;
mod sqlite;

pub use self::migrate::{migrate, Migrated};
pub use self::set_aside::{set_aside_databases, Reason, SetAside};

/// The database's folder, at the store's root.
pub const DATABASE: &str = ".database";

/// Entries up to this size go to the database; larger ones are files.
pub const SMALL_MAX: usize = 256 * 1024;

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
    shared: Arc<Shared>,
}

/// What the clones of one [`DatabaseStore`] share.
struct Shared {
    root: PathBuf,
    durability: Durability,
    /// The database in use; replaced when it is set aside or made again.
    current: Mutex<Arc<Database>>,
    /// Durable writes waiting for a commit (see `DatabaseStore::commit_durably`).
    durable: Mutex<DurableQueue>,
    /// Notified when a durable batch is done.
    durable_done: Condvar,
    /// Durable commits made, for the tests of group commit.
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
    uses: Vec<Use>,
}

/// At most this many uses wait to be recorded.
const USES_PENDING_MAX: usize = 256;

/// A use waits at most this long to be recorded (checked at the next use).
const USES_PENDING_AGE: Duration = Duration::from_secs(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Shared {
    fn drop(&mut self) {
        let pending = std::mem::take(
            &mut self
                .pending_uses
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .uses,
        );
        if pending.is_empty() {
            return;
        }
        let database = lock(&self.current).clone();
        if let Some(Err(e)) = database.commit(&[], &pending) {
            tracing::debug!(error = %e, "cannot record the uses of stored entries");
        }
    }
}

impl std::fmt::Debug for DatabaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseStore({})", self.files.root().display())
    }
}

impl DatabaseStore {
    /// Opens the store rooted at `root` (created if missing; refused if it
    /// is not a store, as [`FileStore::open`] does). A database that is
    /// damaged is set aside and a fresh one started; one that cannot be
    /// written is read; one that cannot be opened at all leaves the store
    /// its files, with a warning.
    pub fn open(root: impl AsRef<Path>) -> Result<DatabaseStore, StoreError> {
        DatabaseStore::open_with(root.as_ref(), Durability::default())
    }

    /// The same, with `durability`.
    pub fn open_with(root: &Path, durability: Durability) -> Result<DatabaseStore, StoreError> {
        if let Err(e) = std::fs::create_dir_all(root) {
            if !root.is_dir() {
                return Err(StoreError::io("create the store directory", root)(e));
            }
        }
        super::marker::claim(root)?;
        let files = FileStore::beside_database(root).with_durability(durability);
        let database = open_database(root, durability)?;
        Ok(DatabaseStore {
            files,
            shared: Arc::new(Shared {
                root: root.to_owned(),
                durability,
                current: Mutex::new(Arc::new(database)),
                durable: Mutex::default(),
                durable_done: Condvar::new(),
                syncs: AtomicU64::new(0),
                files_possible: AtomicBool::new(has_task_folders(root)?),
                pending_uses: Mutex::default(),
            }),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.files.root()
    }

    /// Whether this process can write the store's database; if not, why
    /// (a read-only mount, say).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = routine_core::store::DatabaseStore::open(dir.path()).unwrap();
    /// assert_eq!(store.read_only(), None);
    /// ```
    pub fn read_only(&self) -> Option<String> {
        match &self.database().access {
            Access::Writable => None,
            Access::ReadOnly(why) | Access::Absent(why) => Some(why.clone()),
        }
    }

    fn database(&self) -> Arc<Database> {
        lock(&self.shared.current).clone()
    }

    fn database_error(&self, op: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::io(op, self.root().join(DATABASE))(io::Error::other(e.to_string()))
    }

    /// Replaces the database `stale`, unless another thread did already:
    /// sets it aside first if it is damaged (`damage` says how), or makes
    /// the store's folder again if it was removed.
    fn replace(&self, stale: &Arc<Database>, damage: Option<&str>) -> Result<(), StoreError> {
        let shared = &*self.shared;
        let mut current = lock(&shared.current);
        if !Arc::ptr_eq(&current, stale) {
            return Ok(());
        }
        let root = &shared.root;
        match damage {
            Some(detail) => set_aside_damaged(root, stale.identity, detail).map_err(
                StoreError::io("set aside the damaged database", root.join(DATABASE)),
            )?,
            None => {
                tracing::warn!(
                    store = %root.display(),
                    "the store's database was removed or replaced while in use: opened again"
                );
                std::fs::create_dir_all(root)
                    .map_err(StoreError::io("create the store directory", root))?;
                super::marker::claim(root)?;
            }
        }
        *current = Arc::new(open_database(root, shared.durability)?);
        // Uses noted were of the old database's rows.
        lock(&shared.pending_uses).uses.clear();
        Ok(())
    }

    /// Runs the read `read` on the database; if the database turns out
    /// damaged, sets it aside and runs `read` on the fresh one.
    fn read<T>(
        &self,
        op: &'static str,
        mut read: impl FnMut(&Database) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let database = self.database();
        match read(&database) {
            Ok(value) => Ok(value),
            Err(e) if is_damage(&e) => {
                self.replace(&database, Some(&e.to_string()))?;
                read(&self.database()).map_err(|e| self.database_error(op, e))
            }
            Err(e) => Err(self.database_error(op, e)),
        }
    }

    /// The database to write to: opened again first if its file was
    /// removed or replaced since it was opened.
    fn writable(&self) -> Result<Arc<Database>, StoreError> {
        let database = self.database();
        if database.access == Access::Writable && database.moved() {
            self.replace(&database, None)?;
            return Ok(self.database());
        }
        Ok(database)
    }

    /// Makes each writer's `changes` in one commit, with the uses noted so
    /// far; for each, whether each change changed something. A damaged
    /// database is set aside and the commit made in a fresh one.
    fn commit(&self, writers: &[Vec<Change>]) -> Result<Vec<Vec<bool>>, StoreError> {
        let mut database = self.writable()?;
        let mut uses = self.take_pending_uses();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match database.commit(writers, &uses) {
                Some(Ok(outcomes)) => {
                    if self.shared.durability == Durability::Fsync {
                        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(outcomes);
                }
                None => {
                    let why = match &database.access {
                        Access::ReadOnly(why) | Access::Absent(why) => why.clone(),
                        Access::Writable => "its database is not open for writing".into(),
                    };
                    return Err(StoreError::ReadOnly {
                        path: self.root().to_owned(),
                        why,
                    });
                }
                Some(Err(e)) if is_damage(&e) && attempts == 1 => {
                    self.replace(&database, Some(&e.to_string()))?;
                    database = self.database();
                    uses.clear();
                }
                Some(Err(e)) => return Err(self.database_error("write", e)),
            }
        }
    }

    /// Makes `changes` in one commit: with [`Durability::Fsync`], synced
    /// before this returns, joined by the writers that arrive while
    /// another commits (group commit).
    fn write(&self, changes: Vec<Change>) -> Result<Vec<bool>, StoreError> {
        match self.shared.durability {
            Durability::Process => self.commit(&[changes]).map(|mut o| o.remove(0)),
            Durability::Fsync => self.commit_durably(changes),
        }
    }

    /// A durable write: joins the next batch, and commits it if no other
    /// writer is committing one; else waits for its batch to be done.
    fn commit_durably(&self, changes: Vec<Change>) -> Result<Vec<bool>, StoreError> {
        let shared = &*self.shared;
        let mine = Outcome::default();
        let mut queue = lock(&shared.durable);
        queue.waiting.push((changes, Arc::clone(&mine)));
        loop {
            if let Some(outcome) = mine.get() {
                return outcome
                    .clone()
                    .map_err(|message| self.database_error("commit", message));
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
            match self.commit(&writers) {
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
            queue = lock(&shared.durable);
            queue.leading = false;
            shared.durable_done.notify_all();
        }
    }

    fn put_small(&self, slot: &Slot<'_>, entry: &[u8]) -> Result<(), StoreError> {
        check_slot(slot)?;
        self.write(vec![Change::Put {
            name: slot.name.to_owned(),
            version: slot.version.to_owned(),
            key: *slot.key,
            created: SystemTime::now(),
            entry: entry.to_vec(),
        }])?;
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
        Ok(self.write(vec![removal(slot)?])?[0])
    }

    fn take_pending_uses(&self) -> Vec<Use> {
        let mut pending = lock(&self.shared.pending_uses);
        pending.since = None;
        std::mem::take(&mut pending.uses)
    }

    /// Notes a use of the entry of `task` and `key`, recorded with the
    /// next commit.
    fn record_use(&self, task: i64, key: Key, now: SystemTime) {
        let due = {
            let mut pending = lock(&self.shared.pending_uses);
            pending.uses.push((task, key, now));
            let since = *pending.since.get_or_insert_with(Instant::now);
            pending.uses.len() >= USES_PENDING_MAX || since.elapsed() >= USES_PENDING_AGE
        };
        if due {
            self.flush_uses();
        }
    }

    /// Records the uses noted so far.
    fn flush_uses(&self) {
        if lock(&self.shared.pending_uses).uses.is_empty() {
            return;
        }
        if let Err(e) = self.commit(&[]) {
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
        if let Some(name) = name {
            check_name(name)?;
        }
        if let Some(version) = version {
            check_version(version)?;
        }
        self.flush_uses();
        let mut out: Vec<Listing> = Vec::new();
        self.read("list", |database| {
            out.clear();
            database.list(name, version, |task, task_version, listed| {
                // One name and version for all of a task version's results.
                let (name, version) = match out.last() {
                    Some(last) if *last.name == *task && *last.version == *task_version => {
                        (Arc::clone(&last.name), Arc::clone(&last.version))
                    }
                    _ => (Arc::from(task), Arc::from(task_version)),
                };
                let created = listed.created;
                let accessed = listed.used.map_or(created, |used| used.max(created));
                out.push(Listing {
                    name,
                    version,
                    key: listed.key,
                    size: listed.size,
                    created,
                    accessed,
                });
            })
        })?;
        out.sort();
        Ok(out)
    }
}

/// The change that removes a slot's entry.
fn removal(slot: &Slot<'_>) -> Result<Change, StoreError> {
    check_slot(slot)?;
    Ok(Change::Remove {
        name: slot.name.to_owned(),
        version: slot.version.to_owned(),
        key: *slot.key,
    })
}

/// Opens the database of the store at `root`: sets aside one an earlier
/// routine wrote in another format, and one found damaged (then opens a
/// fresh one). A database that cannot be opened otherwise leaves the store
/// without one (its files are still read), with a warning; only a database
/// of a newer routine is refused.
fn open_database(root: &Path, durability: Durability) -> Result<Database, StoreError> {
    let folder = root.join(DATABASE);
    if folder.join("data.mdb").exists() && !folder.join(sqlite::FILE).exists() {
        match set_aside(
            root,
            None,
            Reason::EarlierFormat,
            "an LMDB database (data.mdb), which this routine does not read",
        ) {
            Ok(Some(path)) => warn_set_aside(&path, Reason::EarlierFormat, "an earlier format"),
            Ok(None) => {}
            Err(e) => {
                return Ok(without_database(
                    &folder,
                    format!("it is in an earlier format and cannot be set aside: {e}"),
                ))
            }
        }
    }
    // A fresh database may be damaged again at once only by something
    // still at work on the folder: after two tries the store goes on
    // without one. A database busy at opening (another process making it
    // at the same moment: SQLite answers a change of journal mode under
    // contention with "busy" at once) is tried again for a while: going
    // on without it would hide the other process's results.
    let mut busy_until: Option<std::time::Instant> = None;
    let mut damaged = 0;
    while damaged < 2 {
        match Database::open(&folder, durability) {
            Ok(database) => {
                if let Access::ReadOnly(why) = &database.access {
                    tracing::info!(store = %root.display(), %why, "the store is read-only here: results are read, not written");
                }
                return Ok(database);
            }
            Err(OpenError::Damaged { identity, reason }) => {
                damaged += 1;
                match set_aside_damaged(root, identity, &reason) {
                    Ok(()) => {}
                    Err(e) if is_read_only(&e) => {
                        return Ok(without_database(
                            &folder,
                            format!("it is damaged ({reason}) and cannot be set aside: {e}"),
                        ))
                    }
                    Err(e) => {
                        return Err(StoreError::io("set aside the damaged database", &folder)(e))
                    }
                }
            }
            Err(OpenError::Newer(version)) => {
                return Err(StoreError::Unusable {
                    store: root.display().to_string(),
                    reason: format!(
                        "its database has schema {version}, newer than this build's: use the \
                         routine that made it"
                    ),
                    hint: None,
                })
            }
            Err(OpenError::Io(op, path, e)) => {
                return Ok(without_database(
                    &folder,
                    StoreError::io(op, path)(e).to_string(),
                ))
            }
            Err(OpenError::Sqlite(e)) if sqlite::is_busy(&e) => {
                let until = *busy_until.get_or_insert_with(|| {
                    std::time::Instant::now() + std::time::Duration::from_secs(10)
                });
                if std::time::Instant::now() >= until {
                    return Ok(without_database(&folder, e.to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(OpenError::Sqlite(e)) => return Ok(without_database(&folder, e.to_string())),
        }
    }
    Ok(without_database(
        &folder,
        "it was found damaged again right after a fresh one was made".into(),
    ))
}

/// A store that cannot use its database: said once, loudly.
fn without_database(folder: &Path, why: String) -> Database {
    tracing::warn!(
        database = %folder.display(),
        %why,
        "the store's database cannot be used: its results are not read, and small results are \
         not stored"
    );
    Database::absent(folder, why)
}

/// Sets the damaged database opened from the file `identity` aside, with
/// a warning, unless another process did.
fn set_aside_damaged(root: &Path, identity: Option<FileId>, detail: &str) -> io::Result<()> {
    if let Some(path) = set_aside(root, identity, Reason::Damaged, detail)? {
        warn_set_aside(&path, Reason::Damaged, detail);
    }
    Ok(())
}

fn warn_set_aside(path: &Path, reason: Reason, detail: &str) {
    let advice = SetAside {
        path: path.to_owned(),
        reason,
        size: 0,
        at: SystemTime::now(),
    }
    .advice();
    tracing::warn!(%detail, "{advice}; a fresh database is started");
}

impl DatabaseStore {
    /// Reads the entry in `slot`; with `record`, records its use.
    fn read_entry(&self, slot: &Slot<'_>, record: bool) -> Result<Option<Found>, StoreError> {
        check_slot(slot)?;
        let now = SystemTime::now();
        let read = |database: &Database| database.get(slot.name, slot.version, slot.key);
        let mut row = self.read("read", read)?;
        if row.is_none() {
            // A miss: if the database was removed or replaced (by `rm -rf`
            // of the store, or set aside by another process), the result
            // may be in the one now at its path.
            let database = self.database();
            if database.access == Access::Writable && database.moved() {
                self.replace(&database, None)?;
                row = self.read("read", read)?;
            }
        }
        match row {
            Some(row) => {
                let last = row.used.map_or(row.created, |used| used.max(row.created));
                if record && access_is_stale(last, now) {
                    self.record_use(row.task, *slot.key, now);
                }
                Ok(Some(Found::Bytes(Arc::new(row.entry))))
            }
            None => {
                let found = match record {
                    true => self.files.get(slot),
                    false => self.files.peek(slot),
                };
                if !matches!(found, Ok(None)) {
                    // Something is at the slot's path (a result, or what
                    // cannot be read as one): the next write replaces it.
                    self.files_written();
                }
                found
            }
        }
    }
}

impl Store for DatabaseStore {
    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        self.read_entry(slot, true)
    }

    fn peek(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        self.read_entry(slot, false)
    }

    fn create(&self, slot: &Slot<'_>, len: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        check_slot(slot)?;
        let (name, version, key) = (slot.name.to_owned(), slot.version.to_owned(), *slot.key);
        if len as usize > SMALL_MAX {
            return Ok(Box::new(LargeWriter {
                store: self.clone(),
                name,
                version,
                key,
                file: self.files.create(slot, len)?,
            }));
        }
        Ok(Box::new(SmallWriter {
            store: self.clone(),
            name,
            version,
            key,
            bytes: Vec::with_capacity(len as usize),
        }))
    }

    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        Ok(self.remove_many(std::slice::from_ref(slot))?[0])
    }

    /// One commit for all of `slots`; then their files, looked for only in
    /// version folders that exist.
    fn remove_many(&self, slots: &[Slot<'_>]) -> Result<Vec<bool>, StoreError> {
        let removals = slots.iter().map(removal).collect::<Result<Vec<_>, _>>()?;
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

    // Explaining records are best kept: their failures are errors for the
    // caller to log, never a reason to set the database aside.
    fn put_record(&self, kind: RecordKind, id: &[u8], record: &[u8]) -> Result<(), StoreError> {
        match self.writable()?.put_record(kind.as_str(), id, record) {
            None | Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(self.database_error("write a record", e)),
        }
    }

    fn get_record(&self, kind: RecordKind, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (self.database().get_record(kind.as_str(), id))
            .map_err(|e| self.database_error("read a record", e))
    }

    fn note_removals(&self, slots: &[Slot<'_>], cause: &RemovalCause) -> Result<(), StoreError> {
        let cause = serde_json::to_string(cause).unwrap_or_default();
        let slots: Vec<(&str, &str, &Key)> =
            slots.iter().map(|s| (s.name, s.version, s.key)).collect();
        match self
            .writable()?
            .note_removals(&slots, SystemTime::now(), &cause)
        {
            None | Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(self.database_error("note a removal", e)),
        }
    }

    fn tallies(&self) -> Result<Vec<Tally>, StoreError> {
        let Some(mut tallies) =
            (self.database().tallies()).map_err(|e| self.database_error("read the tallies", e))?
        else {
            return Ok(task_tallies(&self.list(None, None)?));
        };
        // Large results live in files beside the database.
        let files = task_tallies(&self.files.list(None, None)?);
        if !files.is_empty() {
            tallies.extend(files);
            tallies.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
            tallies.dedup_by(|later, earlier| {
                let same = (&later.name, &later.version) == (&earlier.name, &earlier.version);
                if same {
                    earlier.results += later.results;
                    earlier.bytes += later.bytes;
                    earlier.newest = earlier.newest.max(later.newest);
                }
                same
            });
        }
        Ok(tallies)
    }

    fn newest_versions(
        &self,
        name: &str,
        since: Option<SystemTime>,
        skip: usize,
        take: usize,
    ) -> Result<VersionsPage, StoreError> {
        check_name(name)?;
        let files = self.files.list(Some(name), None)?;
        if files.is_empty() {
            let found = (self.database().newest_versions(name, since, skip, take))
                .map_err(|e| self.database_error("read the tallies", e))?;
            if let Some(page) = found {
                return Ok(page);
            }
        }
        // Versions with large results in files, or a database without
        // tallies: from the whole listing.
        let tallies = tally(&self.list(Some(name), None)?);
        Ok(page_of_versions(tallies, since, skip, take))
    }

    fn removal(&self, slot: &Slot<'_>) -> Result<Option<Removal>, StoreError> {
        let found = (self.database().removal(slot.name, slot.version, slot.key))
            .map_err(|e| self.database_error("read a removal", e))?;
        Ok(found.and_then(|(at, cause)| {
            let cause = serde_json::from_str(&cause).ok()?;
            Some(Removal { at, cause })
        }))
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
    fn tallies_are_made_and_counted_when_first_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let put = |store: &DatabaseStore, n: u32| {
            let key = Key::of("t", "1.0.0", &n).unwrap();
            let slot = Slot {
                name: "t",
                version: "1.0.0",
                key: &key,
            };
            super::super::put_whole(store, &slot, &[7; 100]).unwrap();
        };
        let store = DatabaseStore::open(dir.path()).unwrap();
        for n in 0..3 {
            put(&store, n);
        }
        // Nobody asked: the writes paid for no tallies.
        let file = dir.path().join(DATABASE).join(sqlite::FILE);
        let has_tallies = || {
            rusqlite::Connection::open(&file)
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name = 'tallies'",
                    [],
                    |row| row.get::<_, i64>(0),
                )
                .unwrap()
        };
        assert_eq!(has_tallies(), 0);
        let tallies = store.tallies().unwrap();
        assert_eq!(has_tallies(), 1);
        assert_eq!(
            (tallies[0].results, tallies[0].bytes),
            (3, 300),
            "{tallies:?}"
        );
        put(&store, 3);
        let tallies = store.tallies().unwrap();
        assert_eq!(
            (tallies[0].results, tallies[0].bytes),
            (4, 400),
            "{tallies:?}"
        );
        // Another process opening it keeps them up to date too.
        drop(store);
        let store = DatabaseStore::open(dir.path()).unwrap();
        put(&store, 4);
        assert_eq!(store.tallies().unwrap()[0].results, 5);
    }

    #[test]
    fn the_wal_stays_small_under_writes_that_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let store = DatabaseStore::open(dir.path()).unwrap();
        let wal = dir.path().join(DATABASE).join("results.sqlite3-wal");
        let mut largest = 0;
        for n in 0..4_000u32 {
            let key = Key::of("t", "1.0.0", &n).unwrap();
            let slot = Slot {
                name: "t",
                version: "1.0.0",
                key: &key,
            };
            super::super::put_whole(&store, &slot, &[7; 300]).unwrap();
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        // About 10,000 pages were written: the WAL started over, at most
        // `BACKSTOP_PAGES` (4 MiB) plus a commit's pages long.
        let bound = (checkpoint::BACKSTOP_PAGES as u64 + 64) * (4096 + 24);
        assert!(largest <= bound, "the WAL grew to {largest} bytes");
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
        store
            .write(vec![Change::Put {
                name: slot.name.to_owned(),
                version: slot.version.to_owned(),
                key: *slot.key,
                created: SystemTime::now() - age,
                entry: b"x".to_vec(),
            }])
            .unwrap();
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
