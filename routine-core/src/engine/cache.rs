//! The in-process result cache: verified entries kept in memory, so a repeated
//! call in one process costs a hash and a decode, not a file read.
//!
//! Bounded by bytes; when full it drops the least recently used eighth.
//! Entries are immutable (a key names one deterministic result), so a cached
//! entry is never stale.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::id::Fingerprint;
use crate::key::{Key, KeyMap};

pub(crate) struct ResultCache {
    capacity: usize,
    used: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: KeyMap<Slot>,
    clock: u64,
}

struct Slot {
    hit: CachedEntry,
    last_used: u64,
}

/// A verified entry: its bytes, where its payload lies, and who made it.
#[derive(Clone)]
pub(crate) struct CachedEntry {
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) payload: Range<usize>,
    pub(crate) fingerprint: Fingerprint,
    /// When the result was computed: a task's `ttl` runs from here.
    pub(crate) created_at: SystemTime,
}

impl CachedEntry {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[self.payload.clone()]
    }
}

impl ResultCache {
    pub(crate) fn new(capacity: usize) -> ResultCache {
        ResultCache {
            capacity,
            used: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether an entry of `size` bytes would be kept.
    pub(crate) fn admits(&self, size: u64) -> bool {
        self.capacity > 0 && size <= (self.capacity / 8) as u64
    }

    pub(crate) fn get(&self, key: &Key) -> Option<CachedEntry> {
        if self.capacity == 0 {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.clock += 1;
        let now = state.clock;
        let slot = state.entries.get_mut(key)?;
        slot.last_used = now;
        Some(slot.hit.clone())
    }

    pub(crate) fn insert(&self, key: Key, hit: CachedEntry) {
        let size = hit.bytes.len();
        if !self.admits(size as u64) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.clock += 1;
        let last_used = state.clock;
        let mut used = self.used() + size;
        if let Some(old) = state.entries.insert(key, Slot { hit, last_used }) {
            used -= old.hit.bytes.len();
        }
        if used > self.capacity {
            used = evict(&mut state, used, self.capacity - self.capacity / 8);
        }
        self.used.store(used, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, key: &Key) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = state.entries.remove(key) {
            self.used.fetch_sub(old.hit.bytes.len(), Ordering::Relaxed);
        }
    }
}

/// Drops least recently used entries until `used` is at most `target`;
/// returns the new `used`. Evicting a whole eighth at once keeps the cost of
/// sorting rare.
fn evict(state: &mut State, mut used: usize, target: usize) -> usize {
    let mut by_age: Vec<(u64, Key)> = state
        .entries
        .iter()
        .map(|(k, s)| (s.last_used, *k))
        .collect();
    by_age.sort_unstable();
    for (_, key) in by_age {
        if used <= target {
            break;
        }
        if let Some(old) = state.entries.remove(&key) {
            used -= old.hit.bytes.len();
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: usize) -> CachedEntry {
        CachedEntry {
            bytes: Arc::new(vec![0; size]),
            payload: 0..size,
            fingerprint: Fingerprint::from_bytes([0; 32]),
            created_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn key(i: u32) -> Key {
        Key::of("t", "1", &i).unwrap()
    }

    #[test]
    fn stays_within_capacity_and_evicts_least_recently_used() {
        let cache = ResultCache::new(8000);
        for i in 0..8 {
            cache.insert(key(i), entry(1000));
        }
        assert_eq!(cache.used(), 8000);
        // Touch 0 so that 1 is the oldest.
        assert!(cache.get(&key(0)).is_some());
        cache.insert(key(100), entry(1000));
        assert!(cache.used() <= 8000);
        assert!(
            cache.get(&key(0)).is_some(),
            "recently used entry was evicted"
        );
        assert!(
            cache.get(&key(1)).is_none(),
            "least recently used entry was kept"
        );
        for i in 0..1000 {
            cache.insert(key(1000 + i), entry(700));
            assert!(cache.used() <= 8000);
        }
    }

    #[test]
    fn refuses_large_entries_and_zero_capacity() {
        let cache = ResultCache::new(8000);
        cache.insert(key(1), entry(1001));
        assert!(cache.get(&key(1)).is_none());
        assert_eq!(cache.used(), 0);
        let off = ResultCache::new(0);
        off.insert(key(1), entry(0));
        assert!(off.get(&key(1)).is_none());
    }

    #[test]
    fn replace_and_remove_keep_the_count() {
        let cache = ResultCache::new(8000);
        cache.insert(key(1), entry(500));
        cache.insert(key(1), entry(300));
        assert_eq!(cache.used(), 300);
        cache.remove(&key(1));
        assert_eq!(cache.used(), 0);
    }
}
