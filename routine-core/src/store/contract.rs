//! The contract every [`Store`] backend must pass (feature `contract`): small
//! named checks, each on task names of its own, each leaving nothing behind,
//! and [`run`], which runs them all. routine's own backends run it in their
//! tests; so should yours:
//!
//! ```toml
//! [dev-dependencies]
//! routine-core = { version = "0.1", features = ["contract"] }
//! ```
//!
//! ```
//! routine_core::store::contract::run(&routine_core::store::MemoryStore::new());
//! ```

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Found, Slot, Store};
use crate::key::Key;

/// Runs every check on `store`; panics, saying what broke, at the first
/// check it fails.
pub fn run(store: &dyn Store) {
    absent_entries_are_not_found(store);
    uncommitted_writes_are_invisible(store);
    puts_replace_whole_entries(store);
    large_entries_round_trip(store);
    listings_go_by_name_and_version(store);
    a_slot_is_name_version_and_key(store);
    removal_is_reported_once(store);
    removing_many_says_which_were_there(store);
    async_access_sees_what_sync_access_sees(store);
    concurrent_writers_publish_whole_entries(store);
    a_peek_reads_what_a_get_reads(store);
    tallies_agree_with_the_listing(store);
}

/// A key of the check's own task.
fn key(task: &str, n: u8) -> Key {
    Key::of(task, "1.0.0", &n).expect("a key")
}

fn slot<'a>(task: &'a str, version: &'a str, key: &'a Key) -> Slot<'a> {
    Slot {
        name: task,
        version,
        key,
    }
}

fn read_all(found: Found) -> Vec<u8> {
    match found {
        Found::Bytes(bytes) => bytes.to_vec(),
        Found::Stream { mut reader, len } => {
            let mut out = Vec::new();
            reader
                .read_to_end(&mut out)
                .expect("a stream reads to its end");
            assert_eq!(out.len() as u64, len, "a stream must be as long as it says");
            out
        }
    }
}

fn put(store: &dyn Store, slot: &Slot<'_>, bytes: &[u8]) {
    let mut writer = store.create(slot, bytes.len() as u64).expect("create");
    writer.write_all(bytes).expect("write");
    writer.commit().expect("commit");
}

fn get(store: &dyn Store, slot: &Slot<'_>) -> Option<Vec<u8>> {
    store.get(slot).expect("get").map(read_all)
}

/// Removes what a check wrote, checking that it is gone.
fn clean(store: &dyn Store, task: &str) {
    for listing in store.list(Some(task), None).expect("list") {
        let slot = slot(&listing.name, &listing.version, &listing.key);
        store.remove(&slot).expect("remove");
    }
    assert!(store.list(Some(task), None).expect("list").is_empty());
}

/// Nothing is found, listed or removed where nothing was written.
pub fn absent_entries_are_not_found(store: &dyn Store) {
    let k = key("contract-absent", 1);
    let s = slot("contract-absent", "1.0.0", &k);
    assert!(get(store, &s).is_none());
    assert!(store
        .list(Some("contract-absent"), None)
        .unwrap()
        .is_empty());
    assert!(!store.remove(&s).unwrap());
}

/// An entry is visible whole at commit, or not at all: a writer dropped
/// before commit leaves nothing.
pub fn uncommitted_writes_are_invisible(store: &dyn Store) {
    let task = "contract-commit";
    let k = key(task, 1);
    let s = slot(task, "1.0.0", &k);
    let mut abandoned = store.create(&s, 5).unwrap();
    abandoned.write_all(b"parti").unwrap();
    drop(abandoned);
    assert!(get(store, &s).is_none(), "an abandoned write is visible");
    assert!(store.list(Some(task), None).unwrap().is_empty());

    let mut pending = store.create(&s, 5).unwrap();
    pending.write_all(b"first").unwrap();
    assert!(get(store, &s).is_none(), "a write is visible before commit");
    pending.commit().unwrap();
    assert_eq!(get(store, &s).unwrap(), b"first");
    clean(store, task);
}

/// A put to an existing slot replaces its entry.
pub fn puts_replace_whole_entries(store: &dyn Store) {
    let task = "contract-replace";
    let k = key(task, 1);
    let s = slot(task, "1.0.0", &k);
    put(store, &s, b"first");
    put(store, &s, b"second");
    assert_eq!(get(store, &s).unwrap(), b"second");
    clean(store, task);
}

/// An entry over every backend's thresholds for streaming and multipart
/// upload reads back as written.
pub fn large_entries_round_trip(store: &dyn Store) {
    let task = "contract-large";
    let k = key(task, 1);
    let s = slot(task, "1.0.0", &k);
    let large: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    put(store, &s, &large);
    assert!(
        get(store, &s).unwrap() == large,
        "a large entry came back changed"
    );
    clean(store, task);
}

/// Listings filter by task name and version, with sizes and times.
pub fn listings_go_by_name_and_version(store: &dyn Store) {
    let (task, other) = ("contract-list", "contract-list-other");
    let keys = [key(task, 1), key(task, 2), key(task, 3), key(other, 1)];
    put(store, &slot(task, "1.0.0", &keys[0]), b"one");
    put(store, &slot(task, "1.0.0", &keys[1]), b"two!");
    put(store, &slot(task, "2.0.0", &keys[2]), b"v2");
    put(store, &slot(other, "1.0.0", &keys[3]), b"other");

    let all = store.list(None, None).unwrap();
    let ours = |name: &str| all.iter().filter(|l| &*l.name == name).count();
    assert_eq!((ours(task), ours(other)), (3, 1), "{all:?}");
    assert_eq!(store.list(Some(task), None).unwrap().len(), 3);
    let v1 = store.list(Some(task), Some("1.0.0")).unwrap();
    let mut sizes: Vec<u64> = v1.iter().map(|l| l.size).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [3, 4]);
    assert!(v1
        .iter()
        .all(|l| &*l.name == task && &*l.version == "1.0.0"));
    // Times are those of the write, on the machine's clock (give or take a
    // server's rounding).
    let now = SystemTime::now();
    for listing in &v1 {
        let age = now
            .duration_since(listing.created)
            .unwrap_or_else(|e| e.duration());
        assert!(age.as_secs() < 120, "{listing:?}");
        assert!(listing.accessed >= listing.created, "{listing:?}");
    }
    assert!(store
        .list(Some("contract-missing"), None)
        .unwrap()
        .is_empty());
    clean(store, task);
    clean(store, other);
}

/// The same key under another task or version is another entry.
pub fn a_slot_is_name_version_and_key(store: &dyn Store) {
    let task = "contract-slot";
    let k = key(task, 1);
    put(store, &slot(task, "1.0.0", &k), b"x");
    assert!(get(store, &slot("contract-slot-other", "1.0.0", &k)).is_none());
    assert!(get(store, &slot(task, "1.0.1", &k)).is_none());
    clean(store, task);
}

/// Removing an entry says true once, then false.
pub fn removal_is_reported_once(store: &dyn Store) {
    let task = "contract-remove";
    let k = key(task, 1);
    let s = slot(task, "1.0.0", &k);
    put(store, &s, b"x");
    assert!(store.remove(&s).unwrap());
    assert!(get(store, &s).is_none());
    assert!(!store.remove(&s).unwrap());
}

/// `remove_many` removes small and large entries of several versions at
/// once, says which were there, and leaves the others.
pub fn removing_many_says_which_were_there(store: &dyn Store) {
    let task = "contract-remove-many";
    let keys: Vec<Key> = (0..4).map(|n| key(task, n)).collect();
    let slots: Vec<Slot<'_>> = keys
        .iter()
        .enumerate()
        .map(|(n, k)| slot(task, if n % 2 == 0 { "1.0.0" } else { "2.0.0" }, k))
        .collect();
    put(store, &slots[0], b"small");
    put(store, &slots[1], &vec![7u8; 3 << 20]);
    put(store, &slots[3], b"kept");
    let removed = store.remove_many(&slots[..3]).unwrap();
    assert_eq!(removed, [true, true, false]);
    for s in &slots[..3] {
        assert!(get(store, s).is_none());
    }
    assert_eq!(get(store, &slots[3]).as_deref(), Some(&b"kept"[..]));
    assert_eq!(store.list(Some(task), None).unwrap().len(), 1);
    assert!(store.remove_many(&[]).unwrap().is_empty());
    clean(store, task);
}

/// `get_async` and `put_async` see and make the same entries as `get` and
/// `create`.
pub fn async_access_sees_what_sync_access_sees(store: &dyn Store) {
    let task = "contract-async";
    let (k1, k2) = (key(task, 1), key(task, 2));
    let (s1, s2) = (slot(task, "1.0.0", &k1), slot(task, "1.0.0", &k2));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime for the check");
    runtime.block_on(async {
        assert!(store.get_async(&s1).await.unwrap().is_none());
        store
            .put_async(&s1, Arc::new(b"async".to_vec()))
            .await
            .unwrap();
        put(store, &s2, b"sync");
        let read = store.get_async(&s2).await.unwrap().map(read_all);
        assert_eq!(read.as_deref(), Some(&b"sync"[..]));
    });
    assert_eq!(get(store, &s1).unwrap(), b"async");
    clean(store, task);
}

/// Concurrent writers of one slot: readers only ever see a whole entry.
pub fn concurrent_writers_publish_whole_entries(store: &dyn Store) {
    let task = "contract-race";
    let k = key(task, 1);
    let s = slot(task, "1.0.0", &k);
    let a = vec![b'a'; 200_000];
    let b = vec![b'b'; 300_000];
    std::thread::scope(|scope| {
        for round in 0..4 {
            let (a, b, s) = (&a, &b, &s);
            scope.spawn(move || {
                for _ in 0..5 {
                    put(store, s, if round % 2 == 0 { a } else { b });
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..50 {
                if let Some(got) = get(store, &s) {
                    assert!(
                        got == a || got == b,
                        "saw a partial entry of {} bytes",
                        got.len()
                    );
                }
            }
        });
    });
    clean(store, task);
}

/// [`Store::peek`] reads the same entries as [`Store::get`] (it only
/// records no use), small and large.
pub fn a_peek_reads_what_a_get_reads(store: &dyn Store) {
    let task = "contract-peek";
    for (n, len) in [(1, 7), (2, 300 * 1024)] {
        let k = key(task, n);
        let s = slot(task, "1.0.0", &k);
        assert!(store.peek(&s).unwrap().is_none());
        let bytes = vec![n; len];
        super::put_whole(store, &s, &bytes).unwrap();
        let peeked = store.peek(&s).unwrap().map(read_all);
        assert_eq!(peeked.as_deref(), Some(&bytes[..]), "peek of {len} bytes");
        assert!(store.remove(&s).unwrap());
    }
}

/// A store's tallies and pages of versions say what its listing says,
/// through writes, a replacing write and removals.
fn tallies_agree_with_the_listing(store: &dyn Store) {
    let agree = |when: &str| {
        let listed = crate::store::task_tallies(&store.list(None, None).expect("list"));
        assert_eq!(store.tallies().expect("tallies"), listed, "{when}");
        let all = crate::store::tally(&store.list(Some("contract-tally"), None).expect("list"));
        for (skip, take) in [(0, 10), (1, 1), (2, 5)] {
            assert_eq!(
                store
                    .newest_versions("contract-tally", None, skip, take)
                    .expect("versions"),
                crate::store::page_of_versions(all.clone(), None, skip, take),
                "{when}: versions {skip}+{take}"
            );
        }
    };
    clean(store, "contract-tally");
    agree("before");
    for (version, n) in [("1", 1u8), ("1", 2), ("2", 3), ("3", 4)] {
        let key = key("contract-tally", n);
        put(
            store,
            &slot("contract-tally", version, &key),
            &vec![n; 10 * n as usize],
        );
    }
    agree("after four writes");
    let replaced = key("contract-tally", 2);
    put(store, &slot("contract-tally", "1", &replaced), b"shorter");
    agree("after a write that replaced an entry");
    store
        .remove(&slot("contract-tally", "1", &key("contract-tally", 1)))
        .expect("remove");
    store
        .remove(&slot("contract-tally", "3", &key("contract-tally", 4)))
        .expect("remove");
    agree("after removals");
    clean(store, "contract-tally");
}
