//! The contract every [`Store`] backend must pass (feature `contract`); each
//! backend's tests call [`run`], as routine's own backends do:
//!
//! ```toml
//! [dev-dependencies]
//! routine-core = { version = "0.1", features = ["contract"] }
//! ```

use std::io::{Read, Write};

use super::{Found, Slot, Store};
use crate::key::Key;

fn read_all(found: Found) -> Vec<u8> {
    match found {
        Found::Bytes(bytes) => bytes.to_vec(),
        Found::Stream { mut reader, len } => {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(out.len() as u64, len, "a stream must be as long as it says");
            out
        }
    }
}

fn put(store: &dyn Store, slot: &Slot<'_>, bytes: &[u8]) {
    let mut writer = store.create(slot, bytes.len() as u64).unwrap();
    writer.write_all(bytes).unwrap();
    writer.commit().unwrap();
}

/// Runs every check on an empty `store`; panics, saying what broke, at the
/// first check it fails.
pub fn run(store: &dyn Store) {
    let k1 = Key::of("train", "0.0.1", &1u8).unwrap();
    let k2 = Key::of("train", "0.0.1", &2u8).unwrap();
    let k3 = Key::of("train", "0.0.2", &1u8).unwrap();
    let k4 = Key::of("eval", "1.0.0", &1u8).unwrap();
    let s1 = Slot {
        name: "train",
        version: "0.0.1",
        key: &k1,
    };
    let s2 = Slot {
        name: "train",
        version: "0.0.1",
        key: &k2,
    };
    let s3 = Slot {
        name: "train",
        version: "0.0.2",
        key: &k3,
    };
    let s4 = Slot {
        name: "eval",
        version: "1.0.0",
        key: &k4,
    };

    // Empty store: nothing found, nothing listed, nothing removed.
    assert!(store.get(&s1).unwrap().is_none());
    assert!(store.list(None, None).unwrap().is_empty());
    assert!(!store.remove(&s1).unwrap());

    // A writer dropped before commit leaves nothing.
    let mut abandoned = store.create(&s1, 5).unwrap();
    abandoned.write_all(b"parti").unwrap();
    drop(abandoned);
    assert!(store.get(&s1).unwrap().is_none());
    assert!(store.list(None, None).unwrap().is_empty());

    // Nothing is visible until commit.
    let mut pending = store.create(&s1, 5).unwrap();
    pending.write_all(b"first").unwrap();
    assert!(store.get(&s1).unwrap().is_none());
    pending.commit().unwrap();
    assert_eq!(read_all(store.get(&s1).unwrap().unwrap()), b"first");

    // Overwrite replaces.
    put(store, &s1, b"second");
    assert_eq!(read_all(store.get(&s1).unwrap().unwrap()), b"second");

    // A large entry round-trips, streamed or not.
    // Over every backend's threshold for streaming and for multipart upload.
    let large: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    put(store, &s2, &large);
    assert_eq!(read_all(store.get(&s2).unwrap().unwrap()), large);

    put(store, &s3, b"v2");
    put(store, &s4, b"eval");

    // Listing by task and version.
    let all = store.list(None, None).unwrap();
    assert_eq!(all.len(), 4);
    let train = store.list(Some("train"), None).unwrap();
    assert_eq!(train.len(), 3);
    let v1 = store.list(Some("train"), Some("0.0.1")).unwrap();
    assert_eq!(v1.len(), 2);
    let sizes: Vec<u64> = v1.iter().map(|l| l.size).collect();
    let mut expected = vec![6, large.len() as u64];
    expected.sort();
    let mut sizes_sorted = sizes.clone();
    sizes_sorted.sort();
    assert_eq!(sizes_sorted, expected);
    assert!(v1.iter().all(|l| l.name == "train" && l.version == "0.0.1"));
    // Times are those of the write, on the machine's clock (give or take a
    // server's rounding).
    let now = std::time::SystemTime::now();
    for listing in &all {
        let age = |at: std::time::SystemTime| {
            now.duration_since(at)
                .unwrap_or_else(|e| e.duration())
                .as_secs()
        };
        assert!(age(listing.created) < 120, "{listing:?}");
        assert!(listing.accessed >= listing.created, "{listing:?}");
    }
    assert!(store.list(Some("missing"), None).unwrap().is_empty());

    // A slot is name, version and key: the same key under another task is not
    // the same entry.
    let wrong = Slot {
        name: "eval",
        version: "0.0.1",
        key: &k1,
    };
    assert!(store.get(&wrong).unwrap().is_none());

    // Remove.
    assert!(store.remove(&s1).unwrap());
    assert!(store.get(&s1).unwrap().is_none());
    assert!(!store.remove(&s1).unwrap());
    assert_eq!(store.list(None, None).unwrap().len(), 3);

    // Concurrent writers of one slot: readers only ever see a whole entry.
    let a = vec![b'a'; 200_000];
    let b = vec![b'b'; 300_000];
    std::thread::scope(|scope| {
        for round in 0..4 {
            let (a, b) = (&a, &b);
            scope.spawn(move || {
                for _ in 0..5 {
                    put(store, &s1, if round % 2 == 0 { a } else { b });
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..50 {
                if let Some(found) = store.get(&s1).unwrap() {
                    let got = read_all(found);
                    assert!(
                        got == a || got == b,
                        "saw a partial entry of {} bytes",
                        got.len()
                    );
                }
            }
        });
    });
}
