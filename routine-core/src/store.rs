//! Stores: where results live, laid out by task name and version.
//!
//! A [`Store`] moves whole entries (see [`crate::entry`]) in and out; it knows
//! nothing of keys' meaning or of values. Every backend passes one contract
//! test suite (`store/contract.rs`), and the engine relies on that contract
//! alone:
//!
//! - an entry becomes visible whole, at [`EntryWrite::commit`], or not at all;
//! - a writer dropped without commit leaves nothing behind;
//! - `put` of an existing slot replaces it;
//! - a `get` that finds an entry records the use, so that listings tell
//!   when each entry was last used (to within [`ACCESS_RESOLUTION`]).

use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use crate::key::Key;

mod counting;
mod database;
mod fs;
pub mod gc;
mod locks;
pub mod marker;
mod memory;

#[cfg(any(test, feature = "contract"))]
pub mod contract;

pub use self::counting::Counting;
pub use self::database::{
    migrate, set_aside_databases, DatabaseStore, Migrated, Reason, SetAside, DATABASE, SMALL_MAX,
};
pub use self::fs::{Durability, FileStore};
pub use self::memory::MemoryStore;

/// Where one result lives: task name, task version and key.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// Task name; matches `[A-Za-z0-9][A-Za-z0-9_.-]*`.
    pub name: &'a str,
    /// Task version (semver).
    pub version: &'a str,
    /// The call's key.
    pub key: &'a Key,
}

/// An entry found by [`Store::get`].
pub enum Found {
    /// The whole entry, already in memory.
    Bytes(Arc<Vec<u8>>),
    /// A large entry, to be read as a stream of `len` bytes.
    Stream {
        /// The entry's bytes, from the start.
        reader: Box<dyn Read + Send>,
        /// Total length of the entry.
        len: u64,
    },
}

impl Found {
    /// The whole entry in memory, a stream read to its end.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            Found::Bytes(bytes) => {
                Ok(Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.to_vec()))
            }
            Found::Stream { mut reader, len } => {
                // The length comes from the store: trust it for a first
                // allocation only up to a bound.
                let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 26));
                reader.read_to_end(&mut bytes)?;
                Ok(bytes)
            }
        }
    }
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Bytes(bytes) => write!(f, "Found::Bytes({} bytes)", bytes.len()),
            Found::Stream { len, .. } => write!(f, "Found::Stream({len} bytes)"),
        }
    }
}

/// An entry being written; it becomes visible at [`commit`](Self::commit).
/// Dropping it uncommitted discards it.
pub trait EntryWrite: Write + Send {
    /// Publishes the entry atomically.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// One stored entry, as listed. Listings sort by task name, version, key.
/// The listings of one task version share their name and version (a
/// store may hold millions of results).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listing {
    /// Task name.
    pub name: Arc<str>,
    /// Task version.
    pub version: Arc<str>,
    /// The call's key.
    pub key: Key,
    /// Size of the whole entry in bytes.
    pub size: u64,
    /// When the entry was written.
    pub created: SystemTime,
    /// When it was last read or written, to within [`ACCESS_RESOLUTION`]:
    /// what `cache gc` evicts by, least recently used first.
    pub accessed: SystemTime,
}

/// What a store holds of one task version: how many results, their bytes,
/// and when the newest was written. [`Store::tallies`] answers these
/// without listing every result where the store keeps them (the database
/// layout does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Task name.
    pub name: Arc<str>,
    /// Task version.
    pub version: Arc<str>,
    /// Results stored.
    pub results: u64,
    /// Their bytes, entries whole.
    pub bytes: u64,
    /// When the newest was written. (A store that keeps tallies may
    /// still count a newest result since removed here.)
    pub newest: SystemTime,
}

/// A page of one task's versions, most recently written first (see
/// [`Store::newest_versions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionsPage {
    /// The versions of the page.
    pub versions: Vec<Tally>,
    /// How many versions there are in all (written since the time asked).
    pub total: usize,
}

/// The names routine keeps its own records under (run records, the store
/// probe): not tasks, and left out of [`Store::tallies`].
pub const OWN_RECORDS: &str = "routine.";

/// Tallies of `listings` (sorted by task, as [`Store::list`] returns them).
pub fn tally(listings: &[Listing]) -> Vec<Tally> {
    let mut out: Vec<Tally> = Vec::new();
    for listing in listings {
        match out.last_mut() {
            Some(last) if *last.name == *listing.name && *last.version == *listing.version => {
                last.results += 1;
                last.bytes += listing.size;
                last.newest = last.newest.max(listing.created);
            }
            _ => out.push(Tally {
                name: Arc::clone(&listing.name),
                version: Arc::clone(&listing.version),
                results: 1,
                bytes: listing.size,
                newest: listing.created,
            }),
        }
    }
    out
}

/// Tallies of the tasks among `listings`: routine's own records
/// ([`OWN_RECORDS`]) left out.
pub fn task_tallies(listings: &[Listing]) -> Vec<Tally> {
    let mut tallies = tally(listings);
    tallies.retain(|t| !t.name.starts_with(OWN_RECORDS));
    tallies
}

/// The page `skip..skip + take` of `tallies`, newest first, of those
/// written at or after `since`.
pub fn page_of_versions(
    mut tallies: Vec<Tally>,
    since: Option<SystemTime>,
    skip: usize,
    take: usize,
) -> VersionsPage {
    if let Some(since) = since {
        tallies.retain(|t| t.newest >= since);
    }
    tallies.sort_by(|a, b| {
        b.newest
            .cmp(&a.newest)
            .then_with(|| a.version.cmp(&b.version))
    });
    let total = tallies.len();
    let versions = tallies.into_iter().skip(skip).take(take).collect();
    VersionsPage { versions, total }
}

/// How stale a recorded access time may be. A read records its time only
/// when the recorded one is older than this, so that a hot entry costs at
/// most one write a minute; `cache gc` keeps entries used within it for
/// last, as their order is not known more precisely.
pub const ACCESS_RESOLUTION: Duration = Duration::from_secs(60);

/// `at` as nanoseconds since the Unix epoch, as stores that keep times as
/// numbers hold them (0 before the epoch).
pub(crate) fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time [`unix_nanos`] made `nanos` of.
pub(crate) fn from_unix_nanos(nanos: u64) -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// True when an entry last used at `recorded` should have its use recorded
/// again at `now`.
pub fn access_is_stale(recorded: SystemTime, now: SystemTime) -> bool {
    now.duration_since(recorded)
        .is_ok_and(|age| age > ACCESS_RESOLUTION)
}

/// Whether an I/O error means the file system will not let this process
/// write there (a read-only mount, permissions), rather than that
/// something failed.
pub(crate) fn is_read_only(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
    )
}

/// A store request the engine awaits: answered at once by a local store
/// (no allocation, no hand-off to another thread), or a future for a remote
/// one, which then ties up no runtime thread while it waits.
///
/// ```
/// use routine_core::store::StoreFuture;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(StoreFuture::ready(Ok(7)).await.unwrap(), 7);
/// assert_eq!(StoreFuture::new(async { Ok(8) }).await.unwrap(), 8);
/// # }
/// ```
#[must_use = "a store request does nothing unless awaited"]
pub struct StoreFuture<'a, T>(Request<'a, T>);

enum Request<'a, T> {
    Ready(Option<Result<T, StoreError>>),
    Waiting(Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>),
}

impl<'a, T> StoreFuture<'a, T> {
    /// A request already answered.
    pub fn ready(result: Result<T, StoreError>) -> Self {
        StoreFuture(Request::Ready(Some(result)))
    }

    /// A request answered when `request` completes.
    pub fn new(request: impl Future<Output = Result<T, StoreError>> + Send + 'a) -> Self {
        StoreFuture(Request::Waiting(Box::pin(request)))
    }
}

// The answer is moved out, never pinned in place.
impl<T> Unpin for StoreFuture<'_, T> {}

impl<T> Future for StoreFuture<'_, T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Request::Ready(answer) => {
                Poll::Ready(answer.take().expect("a store request is awaited once"))
            }
            Request::Waiting(request) => request.as_mut().poll(cx),
        }
    }
}

/// Writes a whole entry through [`Store::create`]: what
/// [`Store::put_async`] does unless a backend has a better way.
pub fn put_whole(
    store: &(impl Store + ?Sized),
    slot: &Slot<'_>,
    entry: &[u8],
) -> Result<(), StoreError> {
    let mut writer = store.create(slot, entry.len() as u64)?;
    writer.write_all(entry).map_err(StoreError::io(
        "write",
        format!("{}/{}/{}", slot.name, slot.version, slot.key),
    ))?;
    writer.commit()
}

/// Storage for entries. Implement it to add a backend; run the contract suite
/// against it.
///
/// The engine reads and writes small entries through [`get_async`] and
/// [`put_async`]: a backend whose requests cross a network implements them
/// with real futures, so that a workflow awaiting a hundred lookups holds no
/// thread per lookup; a local backend keeps the defaults, which call the
/// synchronous methods and answer at once. Large entries stream through
/// the synchronous [`get`] and [`create`].
///
/// [`get_async`]: Store::get_async
/// [`put_async`]: Store::put_async
/// [`get`]: Store::get
/// [`create`]: Store::create
///
/// ```
/// use routine_core::store::{MemoryStore, Slot, Store};
/// use routine_core::Key;
/// use std::io::Write;
///
/// let store = MemoryStore::new();
/// let key = Key::of("train", "0.0.1", &1u32).unwrap();
/// let slot = Slot { name: "train", version: "0.0.1", key: &key };
/// let mut writer = store.create(&slot, 3).unwrap();
/// writer.write_all(b"abc").unwrap();
/// writer.commit().unwrap();
/// assert_eq!(store.list(Some("train"), None).unwrap().len(), 1);
/// assert!(store.get(&slot).unwrap().is_some());
/// ```
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The entry in `slot`, if any; its use is recorded (see the
    /// contract above).
    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError>;

    /// The entry in `slot`, if any, without recording a use: for looking at
    /// an entry (`cache show`), which must not keep it from `cache gc`.
    /// Stores whose reads record nothing keep this default.
    fn peek(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        self.get(slot)
    }

    /// Starts writing the entry for `slot`; `len` is its exact size, a hint
    /// for buffering and uploads.
    fn create(&self, slot: &Slot<'_>, len: u64) -> Result<Box<dyn EntryWrite>, StoreError>;

    /// Removes the entry in `slot`; false if there was none.
    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError>;

    /// Removes the entries in `slots`: for each, whether it was there.
    /// Stores that can remove many at once (in one database commit, say)
    /// override this; the default removes them one by one.
    fn remove_many(&self, slots: &[Slot<'_>]) -> Result<Vec<bool>, StoreError> {
        slots.iter().map(|slot| self.remove(slot)).collect()
    }

    /// Lists entries, optionally of one task, optionally of one version.
    fn list(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<Listing>, StoreError>;

    /// Removes what writers killed mid-write left behind, if it is older
    /// than `older_than` (younger leftovers may belong to a live writer);
    /// returns the bytes freed. Backends whose writes leave nothing behind
    /// keep this default.
    fn sweep_abandoned(&self, older_than: Duration) -> Result<u64, StoreError> {
        let _ = older_than;
        Ok(0)
    }

    /// [`get`](Store::get), to be awaited.
    fn get_async<'a>(&'a self, slot: &Slot<'a>) -> StoreFuture<'a, Option<Found>> {
        StoreFuture::ready(self.get(slot))
    }

    /// Writes the whole entry `entry` in `slot`, to be awaited; visible
    /// whole once the future resolves to `Ok`, as after a commit.
    fn put_async<'a>(&'a self, slot: &Slot<'a>, entry: Arc<Vec<u8>>) -> StoreFuture<'a, ()> {
        StoreFuture::ready(put_whole(self, slot, &entry))
    }

    /// Tries to take the lock of `slot` that every process using this
    /// store shares, held until the returned guard is dropped and released
    /// if its process dies: how two processes starting the same call run
    /// its body once. Stores without such locks say
    /// [`KeyLock::Unsupported`] (the default).
    fn try_lock(&self, slot: &Slot<'_>) -> Result<KeyLock, StoreError> {
        let _ = slot;
        Ok(KeyLock::Unsupported)
    }

    /// Keeps a record that explains entries: the code a code fingerprint
    /// stands for (see [`crate::code::Code`]), written once per task by
    /// each process that stores its results, so that a later build can name
    /// what changed; or the process a writer ID stands for. A record of a
    /// kind and ID never changes, so keeping the first is enough. Stores
    /// that keep no records keep this default (`why` then says less).
    fn put_record(&self, kind: RecordKind, id: &[u8], record: &[u8]) -> Result<(), StoreError> {
        let _ = (kind, id, record);
        Ok(())
    }

    /// The record of `kind` and `id`, if the store keeps it.
    fn get_record(&self, kind: RecordKind, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = (kind, id);
        Ok(None)
    }

    /// Notes that the entries in `slots` were removed, and why, so that
    /// `why` can tell a removed result from one never computed. Stores
    /// that keep no such notes keep this default.
    fn note_removals(&self, slots: &[Slot<'_>], cause: &RemovalCause) -> Result<(), StoreError> {
        let _ = (slots, cause);
        Ok(())
    }

    /// The last removal noted of the entry in `slot`.
    fn removal(&self, slot: &Slot<'_>) -> Result<Option<Removal>, StoreError> {
        let _ = slot;
        Ok(None)
    }

    /// Each task version's results, bytes and newest, sorted by task,
    /// routine's own records ([`OWN_RECORDS`]) left out. This default lists
    /// every result; the database layout keeps tallies as it writes and
    /// answers without reading the results.
    fn tallies(&self) -> Result<Vec<Tally>, StoreError> {
        Ok(task_tallies(&self.list(None, None)?))
    }

    /// The versions of task `name`, most recently written first: those
    /// written at or after `since`, `take` of them after the first `skip`.
    /// (Run records are a task whose versions are runs: the web view pages
    /// through 100,000 runs with this.)
    fn newest_versions(
        &self,
        name: &str,
        since: Option<SystemTime>,
        skip: usize,
        take: usize,
    ) -> Result<VersionsPage, StoreError> {
        let tallies = tally(&self.list(Some(name), None)?);
        Ok(page_of_versions(tallies, since, skip, take))
    }
}

/// What a record of [`Store::put_record`] explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The code of a code fingerprint (JSON of [`crate::code::Code`]).
    Code,
    /// The process of a writer ID (JSON of [`crate::engine::Writer`]).
    Writer,
}

impl RecordKind {
    /// Its name, as stores keep it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Code => "code",
            RecordKind::Writer => "writer",
        }
    }
}

/// Why an entry was removed, as [`Store::note_removals`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum RemovalCause {
    /// `cache rm`.
    Removed,
    /// `cache gc`, with the reason it gave (too old, unused, over the size
    /// limit, expired).
    Collected {
        /// The collector's reason.
        reason: String,
    },
    /// The engine found the entry damaged and computes it again.
    Corrupt {
        /// What was wrong with it.
        error: String,
    },
}

impl fmt::Display for RemovalCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemovalCause::Removed => f.write_str("removed by `cache rm`"),
            RemovalCause::Collected { reason } => write!(f, "collected by `cache gc` ({reason})"),
            RemovalCause::Corrupt { error } => write!(f, "found corrupt ({error})"),
        }
    }
}

/// A removal [`Store::note_removals`] kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// When it was noted.
    pub at: SystemTime,
    /// Why.
    pub cause: RemovalCause,
}

/// What [`Store::try_lock`] got.
pub enum KeyLock {
    /// The lock, held until this is dropped.
    Held(Box<dyn Send>),
    /// Another process holds it.
    Busy,
    /// The store has no cross-process locks.
    Unsupported,
}

impl fmt::Debug for KeyLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyLock::Held(_) => "KeyLock::Held",
            KeyLock::Busy => "KeyLock::Busy",
            KeyLock::Unsupported => "KeyLock::Unsupported",
        })
    }
}

/// A shared handle to a store is a store.
impl<S: Store + ?Sized> Store for Arc<S> {
    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        (**self).get(slot)
    }
    fn peek(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        (**self).peek(slot)
    }
    fn create(&self, slot: &Slot<'_>, len: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        (**self).create(slot, len)
    }
    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        (**self).remove(slot)
    }
    fn remove_many(&self, slots: &[Slot<'_>]) -> Result<Vec<bool>, StoreError> {
        (**self).remove_many(slots)
    }
    fn list(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<Listing>, StoreError> {
        (**self).list(name, version)
    }
    fn sweep_abandoned(&self, older_than: Duration) -> Result<u64, StoreError> {
        (**self).sweep_abandoned(older_than)
    }
    fn get_async<'a>(&'a self, slot: &Slot<'a>) -> StoreFuture<'a, Option<Found>> {
        (**self).get_async(slot)
    }
    fn put_async<'a>(&'a self, slot: &Slot<'a>, entry: Arc<Vec<u8>>) -> StoreFuture<'a, ()> {
        (**self).put_async(slot, entry)
    }
    fn try_lock(&self, slot: &Slot<'_>) -> Result<KeyLock, StoreError> {
        (**self).try_lock(slot)
    }
    fn put_record(&self, kind: RecordKind, id: &[u8], record: &[u8]) -> Result<(), StoreError> {
        (**self).put_record(kind, id, record)
    }
    fn get_record(&self, kind: RecordKind, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get_record(kind, id)
    }
    fn note_removals(&self, slots: &[Slot<'_>], cause: &RemovalCause) -> Result<(), StoreError> {
        (**self).note_removals(slots, cause)
    }
    fn removal(&self, slot: &Slot<'_>) -> Result<Option<Removal>, StoreError> {
        (**self).removal(slot)
    }
    fn tallies(&self) -> Result<Vec<Tally>, StoreError> {
        (**self).tallies()
    }
    fn newest_versions(
        &self,
        name: &str,
        since: Option<SystemTime>,
        skip: usize,
        take: usize,
    ) -> Result<VersionsPage, StoreError> {
        (**self).newest_versions(name, since, skip, take)
    }
}

/// Checks that `store` can be used: an entry written under the reserved
/// name `routine.probe` reads back whole and is removed. A program that
/// shares a store with other processes calls it when it connects, so that a
/// missing bucket or a read-only folder fails at once, naming the store,
/// rather than as a warning at every call.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use routine_core::store::{probe, MemoryStore, Store};
///
/// let store = MemoryStore::new();
/// probe(&store).await.unwrap();
/// assert!(store.list(None, None).unwrap().is_empty());
/// # }
/// ```
pub async fn probe(store: &dyn Store) -> Result<(), StoreError> {
    // `FileStore(/data)` or `ObjectStoreBackend(s3://b/x)`: the part in
    // brackets names it for people.
    let debug = format!("{store:?}");
    let name = match debug.split_once('(') {
        Some((_, inner)) if inner.ends_with(')') => format!("`{}`", &inner[..inner.len() - 1]),
        _ => debug.clone(),
    };
    let unusable = |what: &str, reason: String| StoreError::Unusable {
        store: name.clone(),
        reason: format!("{what}: {reason}"),
        hint: None,
    };
    // A remote store's error says what is wrong with the store itself (a
    // missing bucket): that, and how to fix it, is the message.
    let failed = |what: &str, e: StoreError| match e {
        StoreError::Remote { problem, hint, .. } => StoreError::Unusable {
            store: name.clone(),
            reason: problem,
            hint,
        },
        e => unusable(what, e.to_string()),
    };
    let nonce = format!("{:?}{}", SystemTime::now(), std::process::id());
    let key = Key::of("routine.probe", "1", &nonce)
        .map_err(|e| unusable("a probe key", e.to_string()))?;
    let slot = Slot {
        name: "routine.probe",
        version: "1",
        key: &key,
    };
    let written = Arc::new(nonce.into_bytes());
    store
        .put_async(&slot, Arc::clone(&written))
        .await
        .map_err(|e| failed("a probe entry cannot be written", e))?;
    let read = match store.get_async(&slot).await {
        Ok(Some(found)) => found
            .into_bytes()
            .map_err(|e| unusable("the probe entry cannot be read", e.to_string()))?,
        Ok(None) => {
            return Err(unusable(
                "the probe entry",
                "it was written but is not found".into(),
            ))
        }
        Err(e) => return Err(failed("the probe entry cannot be read", e)),
    };
    if read != *written {
        return Err(unusable("the probe entry", "it reads back changed".into()));
    }
    store
        .remove(&slot)
        .map_err(|e| failed("the probe entry cannot be removed", e))?;
    Ok(())
}

/// Opens the local store a URL names: `file:///absolute/folder` (or a plain
/// path), by the rule of [`open_local`] with no layout asked for: an
/// existing store in its own layout, a new one in the default. Object
/// stores (`s3://`, `gs://`, `az://`, `memory://`) are opened by the
/// distributed crate's `open_url`, which falls back on this one.
///
/// ```
/// use routine_core::store::{open_local, open_url, Durability, Layout};
///
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("file://{}", dir.path().display());
/// let store = open_url(&url).unwrap();
/// assert!(format!("{store:?}").starts_with("DatabaseStore"), "a new store: the default");
///
/// // A store of files, with a result: it stays one.
/// let other = tempfile::tempdir().unwrap();
/// let files = open_local(other.path(), Some(Layout::Files), Durability::Process).unwrap();
/// let key = routine_core::Key::of("train", "0.0.1", &1u8).unwrap();
/// let slot = routine_core::store::Slot { name: "train", version: "0.0.1", key: &key };
/// routine_core::store::put_whole(&files, &slot, b"a result").unwrap();
/// let store = open_url(&format!("file://{}", other.path().display())).unwrap();
/// assert!(format!("{store:?}").starts_with("FileStore"));
/// ```
pub fn open_url(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match (local_path(url), url.split_once("://")) {
        (Some(path), _) => open_local(Path::new(path), None, Durability::default()),
        (None, scheme) => Err(StoreError::Config(format!(
            "the `{}://` store needs routine's `distributed` feature",
            scheme.map_or(url, |(scheme, _)| scheme)
        ))),
    }
}

/// How a local store keeps its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// One file per result ([`FileStore`]): for a folder on a network file
    /// system, which the database cannot share between machines.
    Files,
    /// Small results in an embedded database, large ones as files
    /// ([`DatabaseStore`]): compact, and faster on cold hits. The default
    /// for a new store.
    #[default]
    Database,
}

impl fmt::Display for Layout {
    /// As configured: `files` or `database`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Files => "files",
            Layout::Database => "database",
        })
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(text: &str) -> Result<Layout, String> {
        match text {
            "files" => Ok(Layout::Files),
            "database" => Ok(Layout::Database),
            other => Err(format!(
                "unknown layout `{other}`: use `files` or `database`"
            )),
        }
    }
}

/// Opens the local store at `root`, with `durability`, by the one rule
/// every entry point follows (the engine, the command line, `file://` URLs
/// of the distributed crate): a store that has a layout (see
/// [`layout_of`]) is opened in it; a new or empty one in `asked`, else in
/// the default ([`Layout::Database`]). A store asked for in a layout it
/// does not have is refused ([`StoreError::OtherLayout`]): `cache migrate`
/// moves it.
///
/// ```
/// use routine_core::store::{layout_of, open_local, Durability, Layout};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = open_local(dir.path(), None, Durability::Process).unwrap();
/// assert_eq!(layout_of(dir.path()), Some(Layout::Database));
/// assert!(open_local(dir.path(), Some(Layout::Files), Durability::Process).is_err());
/// ```
pub fn open_local(
    root: &Path,
    asked: Option<Layout>,
    durability: Durability,
) -> Result<Arc<dyn Store>, StoreError> {
    let layout = match (layout_of(root), asked) {
        (Some(found), Some(asked)) if found != asked => {
            return Err(StoreError::OtherLayout {
                path: root.to_owned(),
                found,
                asked,
            })
        }
        (Some(found), _) => found,
        (None, asked) => asked.unwrap_or_default(),
    };
    Ok(match layout {
        Layout::Files => Arc::new(FileStore::open(root)?.with_durability(durability)),
        Layout::Database => Arc::new(DatabaseStore::open_with(root, durability)?),
    })
}

/// The layout of the local store at `root`, if it has one yet: a database
/// makes it [`Layout::Database`]; results as files and no database,
/// [`Layout::Files`]; a missing, new or empty folder has none.
///
/// ```
/// use routine_core::store::{layout_of, open_local, Durability, Layout};
///
/// let dir = tempfile::tempdir().unwrap();
/// assert_eq!(layout_of(dir.path()), None);
/// open_local(dir.path(), Some(Layout::Files), Durability::Process).unwrap();
/// assert_eq!(layout_of(dir.path()), None, "no results yet");
/// ```
pub fn layout_of(root: &Path) -> Option<Layout> {
    if root.join(database::DATABASE).is_dir() {
        return Some(Layout::Database);
    }
    let has_task_folders = std::fs::read_dir(root).ok()?.flatten().any(|item| {
        item.file_type().is_ok_and(|t| t.is_dir())
            && item
                .file_name()
                .to_str()
                .is_some_and(|n| check_name(n).is_ok())
    });
    has_task_folders.then_some(Layout::Files)
}

/// The folder a store URL names, if it names one: `file:///folder` or a
/// plain path.
///
/// ```
/// use routine_core::store::local_path;
/// assert_eq!(local_path("file:///data/results"), Some("/data/results"));
/// assert_eq!(local_path(".routine"), Some(".routine"));
/// assert_eq!(local_path("s3://bucket/results"), None);
/// ```
pub fn local_path(url: &str) -> Option<&str> {
    match url.split_once("://") {
        None => Some(url),
        Some(("file", path)) => Some(path),
        Some(_) => None,
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system or network said no.
    #[error("cannot {op} `{}`: {source}", .path.display())]
    Io {
        /// What was being done: "read", "create", "rename", ...
        op: &'static str,
        /// The path or object involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The store is misconfigured: a bad URL, a missing bucket name.
    #[error("{0}")]
    Config(String),
    /// A name or version that could leave the store's layout.
    #[error("`{0}` is not a valid task name or version in a store path")]
    InvalidComponent(String),
    /// A folder that is not a store (see [`marker`]): not written into, not
    /// deleted from.
    #[error(
        "`{}` is not a routine store: {reason}. Give the store an empty or new folder of its own \
         (--store, ROUTINE_STORE or `store` in routine.toml)",
        .path.display()
    )]
    NotAStore {
        /// The folder.
        path: PathBuf,
        /// Why it is not one.
        reason: String,
    },
    /// The store can be read here, not written: a read-only mount, a
    /// folder this user may not write.
    #[error("the store `{}` is read-only here ({why}): its results are read, not written", .path.display())]
    ReadOnly {
        /// What cannot be written.
        path: PathBuf,
        /// What the system said.
        why: String,
    },
    /// A local store asked for in a layout it does not have.
    #[error(
        "the store `{}` keeps its results in the {found} layout, not {asked}: use it as it is \
         (leave `layout` and ROUTINE_LAYOUT unset), or move it with `cache migrate --to {asked}`",
        .path.display()
    )]
    OtherLayout {
        /// The store's folder.
        path: PathBuf,
        /// Its layout.
        found: Layout,
        /// The layout asked for.
        asked: Layout,
    },
    /// A remote store (an object store) answered with an error, or could
    /// not be reached; its own words are logged at info level (`-v`).
    #[error("cannot {op} `{path}`: {problem}")]
    Remote {
        /// What was being done: "read", "write", ...
        op: &'static str,
        /// The object, as a URL (credentials redacted).
        path: String,
        /// What went wrong, for people.
        problem: String,
        /// How to fix it, when that can be told.
        hint: Option<String>,
    },
    /// The store answers, but cannot be used (see [`probe`]).
    #[error("the store {store} cannot be used: {reason}")]
    Unusable {
        /// The store, as it prints itself (credentials redacted).
        store: String,
        /// What failed.
        reason: String,
        /// How to fix it, when that can be told.
        hint: Option<String>,
    },
}

impl StoreError {
    /// How to fix the problem, when the store can tell (a missing bucket,
    /// missing credentials).
    ///
    /// ```
    /// use routine_core::store::StoreError;
    /// let e = StoreError::Remote {
    ///     op: "write",
    ///     path: "s3://results/x".into(),
    ///     problem: "the bucket `results` does not exist".into(),
    ///     hint: Some("create it".into()),
    /// };
    /// assert_eq!(e.hint(), Some("create it"));
    /// ```
    pub fn hint(&self) -> Option<&str> {
        match self {
            StoreError::Remote { hint, .. } | StoreError::Unusable { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }

    /// Maps an I/O error of `op` on `path`: `.map_err(StoreError::io("read", &path))`.
    /// A read-only file system is [`StoreError::ReadOnly`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| match source.kind() {
            io::ErrorKind::ReadOnlyFilesystem => StoreError::ReadOnly {
                path,
                why: source.to_string(),
            },
            _ => StoreError::Io { op, path, source },
        }
    }
}

/// Rejects a name that is not a task name: `[A-Za-z0-9][A-Za-z0-9_.-]*`,
/// the alphabet `#[task]` allows at compile time (which also refuses the
/// `routine.` prefix of routine's own records). So no slot, whatever its
/// origin (a command line, a message), can point outside the store.
///
/// ```
/// use routine_core::store::check_name;
/// assert!(check_name("prepare-data.v2_x").is_ok());
/// assert!(check_name("a+b").is_err() && check_name("..").is_err() && check_name("a/b").is_err());
/// ```
pub fn check_name(text: &str) -> Result<(), StoreError> {
    check_characters(text, &['_', '.', '-'])
}

/// Rejects a version that is not made of a semver version's characters
/// (`+` included), starting with a letter or digit.
///
/// ```
/// use routine_core::store::check_version;
/// assert!(check_version("1.2.3-rc.1+build.7").is_ok());
/// assert!(check_version("../x").is_err());
/// ```
pub fn check_version(text: &str) -> Result<(), StoreError> {
    check_characters(text, &['_', '.', '-', '+'])
}

fn check_characters(text: &str, punctuation: &[char]) -> Result<(), StoreError> {
    let mut chars = text.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || punctuation.contains(&c));
    match first_ok && rest_ok {
        true => Ok(()),
        false => Err(StoreError::InvalidComponent(text.to_owned())),
    }
}

/// Checks a slot's name and version (see [`check_name`], [`check_version`]).
pub fn check_slot(slot: &Slot<'_>) -> Result<(), StoreError> {
    check_name(slot.name)?;
    check_version(slot.version)
}
