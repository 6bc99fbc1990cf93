//! A store in the process's memory: for tests, and for programs that want
//! single-flight and memoization within one run only.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use super::{
    access_is_stale, check_slot, from_unix_nanos, unix_nanos, EntryWrite, Found, Listing, Slot,
    Store, StoreError,
};
use crate::key::{Key, KeyMap};

type Entries = KeyMap<Stored>;

struct Stored {
    name: Arc<str>,
    version: Arc<str>,
    bytes: Arc<Vec<u8>>,
    created: SystemTime,
    /// Nanoseconds since the Unix epoch of the last use.
    accessed: AtomicU64,
}

/// The in-memory store. Clones share the same entries.
///
/// ```
/// use routine_core::store::{MemoryStore, Store};
/// let store = MemoryStore::new();
/// assert!(store.list(None, None).unwrap().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    // Keys already commit to name and version, so one flat map serves lookups.
    entries: Arc<RwLock<Entries>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Total bytes held.
    pub fn size(&self) -> u64 {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.values().map(|s| s.bytes.len() as u64).sum()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        write!(f, "MemoryStore({} entries)", entries.len())
    }
}

impl MemoryStore {
    fn read(&self, slot: &Slot<'_>, record_use: bool) -> Option<Found> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(slot.key)
            .filter(|s| *s.name == *slot.name && *s.version == *slot.version)
            .map(|s| {
                let now = SystemTime::now();
                let accessed = from_unix_nanos(s.accessed.load(Ordering::Relaxed));
                if record_use && access_is_stale(accessed, now) {
                    s.accessed.store(unix_nanos(now), Ordering::Relaxed);
                }
                Found::Bytes(Arc::clone(&s.bytes))
            })
    }
}

impl Store for MemoryStore {
    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        Ok(self.read(slot, true))
    }

    fn peek(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        Ok(self.read(slot, false))
    }

    fn create(&self, slot: &Slot<'_>, len: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        check_slot(slot)?;
        Ok(Box::new(MemoryWriter {
            entries: Arc::clone(&self.entries),
            name: slot.name.into(),
            version: slot.version.into(),
            key: *slot.key,
            bytes: Vec::with_capacity(usize::try_from(len).unwrap_or(0)),
        }))
    }

    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        Ok(entries.remove(slot.key).is_some())
    }

    fn list(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<Listing>, StoreError> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Listing> = entries
            .iter()
            .filter(|(_, s)| {
                name.is_none_or(|n| *s.name == *n) && version.is_none_or(|v| *s.version == *v)
            })
            .map(|(key, s)| Listing {
                name: Arc::clone(&s.name),
                version: Arc::clone(&s.version),
                key: *key,
                size: s.bytes.len() as u64,
                created: s.created,
                accessed: from_unix_nanos(s.accessed.load(Ordering::Relaxed)),
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

struct MemoryWriter {
    entries: Arc<RwLock<Entries>>,
    name: Arc<str>,
    version: Arc<str>,
    key: Key,
    bytes: Vec<u8>,
}

impl Write for MemoryWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl EntryWrite for MemoryWriter {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let MemoryWriter {
            entries,
            name,
            version,
            key,
            bytes,
        } = *self;
        let now = SystemTime::now();
        let stored = Stored {
            name,
            version,
            bytes: Arc::new(bytes),
            created: now,
            accessed: AtomicU64::new(unix_nanos(now)),
        };
        entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, stored);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn contract() {
        super::super::contract::run(&super::MemoryStore::new());
    }
}
