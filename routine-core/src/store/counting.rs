//! A store that counts the requests made of it: how a test or a benchmark
//! tells how many round trips to a remote store one call costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    EntryWrite, Found, KeyLock, Listing, RecordKind, Removal, RemovalCause, Slot, Store,
    StoreError, StoreFuture, Tally, VersionsPage,
};

/// Wraps a store and counts the reads (`get`) and writes (`create`, `put`)
/// of entries made through it, and apart from them the requests about the
/// records that explain entries (`put_record`, `get_record`,
/// `note_removals`, `removal`), which stores that keep none answer without a
/// round trip. Clones share the counts.
///
/// ```
/// use routine_core::store::{Counting, MemoryStore, Slot, Store};
/// use routine_core::Key;
///
/// let store = Counting::over(MemoryStore::new());
/// let key = Key::of("train", "1.0.0", &7_u32).unwrap();
/// let slot = Slot { name: "train", version: "1.0.0", key: &key };
/// assert!(store.get(&slot).unwrap().is_none());
/// assert_eq!(store.counts(), (1, 0));
/// ```
#[derive(Debug, Clone)]
pub struct Counting<S> {
    inner: S,
    /// Entry reads, entry writes, record requests.
    counts: Arc<[AtomicU64; 3]>,
}

impl<S: Store> Counting<S> {
    /// Counts the requests made of `inner`, from zero.
    pub fn over(inner: S) -> Counting<S> {
        Counting {
            inner,
            counts: Arc::default(),
        }
    }

    /// (reads, writes) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts[0].load(Ordering::Relaxed),
            self.counts[1].load(Ordering::Relaxed),
        )
    }

    /// Requests about explaining records so far.
    pub fn record_requests(&self) -> u64 {
        self.counts[2].load(Ordering::Relaxed)
    }

    fn count_record(&self) {
        self.counts[2].fetch_add(1, Ordering::Relaxed);
    }

    fn count_read(&self) {
        self.counts[0].fetch_add(1, Ordering::Relaxed);
    }

    fn count_write(&self) {
        self.counts[1].fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: Store> Store for Counting<S> {
    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        self.count_read();
        self.inner.get(slot)
    }
    fn peek(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        self.count_read();
        self.inner.peek(slot)
    }
    fn create(&self, slot: &Slot<'_>, len: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        self.count_write();
        self.inner.create(slot, len)
    }
    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        self.inner.remove(slot)
    }
    fn list(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<Listing>, StoreError> {
        self.inner.list(name, version)
    }
    fn tallies(&self) -> Result<Vec<Tally>, StoreError> {
        self.inner.tallies()
    }
    fn newest_versions(
        &self,
        name: &str,
        since: Option<SystemTime>,
        skip: usize,
        take: usize,
    ) -> Result<VersionsPage, StoreError> {
        self.inner.newest_versions(name, since, skip, take)
    }
    fn sweep_abandoned(&self, older_than: Duration) -> Result<u64, StoreError> {
        self.inner.sweep_abandoned(older_than)
    }
    fn get_async<'a>(&'a self, slot: &Slot<'a>) -> StoreFuture<'a, Option<Found>> {
        self.count_read();
        self.inner.get_async(slot)
    }
    fn put_async<'a>(&'a self, slot: &Slot<'a>, entry: Arc<Vec<u8>>) -> StoreFuture<'a, ()> {
        self.count_write();
        self.inner.put_async(slot, entry)
    }
    fn try_lock(&self, slot: &Slot<'_>) -> Result<KeyLock, StoreError> {
        self.inner.try_lock(slot)
    }
    fn put_record(&self, kind: RecordKind, id: &[u8], record: &[u8]) -> Result<(), StoreError> {
        self.count_record();
        self.inner.put_record(kind, id, record)
    }
    fn get_record(&self, kind: RecordKind, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.count_record();
        self.inner.get_record(kind, id)
    }
    fn note_removals(&self, slots: &[Slot<'_>], cause: &RemovalCause) -> Result<(), StoreError> {
        self.count_record();
        self.inner.note_removals(slots, cause)
    }
    fn removal(&self, slot: &Slot<'_>) -> Result<Option<Removal>, StoreError> {
        self.count_record();
        self.inner.removal(slot)
    }
}
