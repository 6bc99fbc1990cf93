//! Corrupt entries are misses; a failing store never costs the caller its
//! value.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::Logs;
use routine::entry::{self, EntryMeta};
use routine::store::{
    open_local, put_whole, Durability, EntryWrite, Found, Layout, Listing, Slot, Store, StoreError,
};
use routine::Fingerprint;
use routine::{Engine, Key};

/// Body runs per argument: the tests run in parallel, each with its own `n`.
static RUNS: Mutex<BTreeMap<u32, usize>> = Mutex::new(BTreeMap::new());

fn runs(n: u32) -> usize {
    RUNS.lock().unwrap().get(&n).copied().unwrap_or(0)
}

#[routine::task(name = "words", version = "1.0.0")]
async fn words(n: u32) -> Vec<String> {
    *RUNS.lock().unwrap().entry(n).or_default() += 1;
    (0..n).map(|i| format!("word-{i}")).collect()
}

fn expected(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("word-{i}")).collect()
}

fn entry_path(root: &Path, n: u32) -> PathBuf {
    let key = Key::of("words", "1.0.0", &(n,)).unwrap();
    root.join("words/1.0.0").join(key.to_hex())
}

const LAYOUTS: [Layout; 2] = [Layout::Files, Layout::Database];

fn store(root: &Path, layout: Layout) -> Arc<dyn Store> {
    open_local(root, Some(layout), Durability::Process).unwrap()
}

fn engine(root: &Path, layout: Layout) -> Engine {
    Engine::builder(store(root, layout)).build().unwrap()
}

/// Stores `words(n)` in each layout, replaces its entry with what `damage`
/// makes of it, and checks that a fresh engine recomputes, warns, counts
/// it, and overwrites it with a good entry.
async fn survives(n: u32, damage: impl Fn(Vec<u8>) -> Vec<u8>) {
    for layout in LAYOUTS {
        RUNS.lock().unwrap().remove(&n);
        let dir = tempfile::tempdir().unwrap();
        engine(dir.path(), layout).scope(words(n)).await;
        let store = store(dir.path(), layout);
        let key = Key::of("words", "1.0.0", &(n,)).unwrap();
        let slot = Slot {
            name: "words",
            version: "1.0.0",
            key: &key,
        };
        let bytes = match store.get(&slot).unwrap().expect("stored") {
            Found::Bytes(bytes) => bytes.to_vec(),
            Found::Stream { mut reader, .. } => {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).unwrap();
                bytes
            }
        };
        put_whole(&store, &slot, &damage(bytes)).unwrap();
        drop(store);

        let logs = Logs::default();
        let _guard = logs.capture();
        let engine = engine(dir.path(), layout);
        assert_eq!(engine.scope(words(n)).await, expected(n));
        assert_eq!(runs(n), 2, "{layout:?}: the body did not run again");
        assert_eq!(engine.stats().corrupt_entries, 1, "{layout:?}");
        assert!(
            logs.text().contains("stored entry is unusable"),
            "{layout:?}: {}",
            logs.text()
        );
        drop(engine);

        // The entry was overwritten with a good one.
        let fresh = self::engine(dir.path(), layout);
        assert_eq!(fresh.scope(words(n)).await, expected(n));
        let stats = fresh.stats();
        assert_eq!((stats.hits, stats.corrupt_entries), (1, 0), "{layout:?}");
    }
}

#[tokio::test]
async fn flipped_byte_in_payload() {
    survives(10, |mut bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        bytes
    })
    .await;
}

#[tokio::test]
async fn truncated_entry() {
    survives(11, |bytes| bytes[..bytes.len() - 7].to_vec()).await;
}

#[tokio::test]
async fn empty_and_garbage_entries() {
    survives(12, |_| Vec::new()).await;
    survives(13, |_| vec![0xAB; 4096]).await;
}

#[tokio::test]
async fn entry_of_another_type_under_the_right_key() {
    survives(14, |_| {
        let key = Key::of("words", "1.0.0", &(14u32,)).unwrap();
        let value = (1u8, 2u8);
        let meta = EntryMeta {
            key,
            fingerprint: Fingerprint::from_bytes([0; 32]),
            created_at: SystemTime::now(),
            run_time: Duration::ZERO,
            payload_len: routine::codec::encoded_len(&value).unwrap(),
            run: None,
            parent: None,
            writer: None,
            arguments: Vec::new(),
        };
        entry::write(Vec::new(), &meta, &value).unwrap()
    })
    .await;
}

#[tokio::test]
async fn large_entry_damaged_in_the_middle() {
    // Over 1 MiB: read as a stream, not whole.
    survives(120_000, |mut bytes| {
        assert!(bytes.len() > 1 << 20);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        bytes
    })
    .await;
}

static SHIFTED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[routine::task(name = "shifted", version = "1.0.0")]
async fn shifted(x: u64) -> u64 {
    SHIFTED_RUNS.fetch_add(1, Ordering::SeqCst);
    x << 1
}

#[tokio::test]
async fn changed_body_with_same_version_warns_once_and_still_hits() {
    let dir = tempfile::tempdir().unwrap();
    let store = routine::store::FileStore::open(dir.path()).unwrap();
    // Results stored by an "older build" whose body had another fingerprint.
    for x in [1u64, 2] {
        let key = Key::of("shifted", "1.0.0", &(x,)).unwrap();
        let value = x << 1;
        let meta = EntryMeta {
            key,
            fingerprint: Fingerprint::from_bytes([9; 32]),
            created_at: SystemTime::now(),
            run_time: Duration::from_millis(1),
            payload_len: routine::codec::encoded_len(&value).unwrap(),
            run: None,
            parent: None,
            writer: None,
            arguments: Vec::new(),
        };
        let slot = Slot {
            name: "shifted",
            version: "1.0.0",
            key: &key,
        };
        entry::write(
            store.create(&slot, meta.entry_len()).unwrap(),
            &meta,
            &value,
        )
        .unwrap()
        .commit()
        .unwrap();
    }
    let logs = Logs::default();
    let _guard = logs.capture();
    let engine = Engine::local(dir.path()).unwrap();
    engine
        .scope(async {
            assert_eq!(shifted(1).await, 2);
            assert_eq!(shifted(2).await, 4);
        })
        .await;
    assert_eq!(
        SHIFTED_RUNS.load(Ordering::SeqCst),
        0,
        "the version is the authority"
    );
    let text = logs.text();
    assert_eq!(
        text.matches("changed but its version 1.0.0 did not")
            .count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn unwritable_task_directory_keeps_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), Layout::Files);
    // A file where the task's directory should be: creating entries fails,
    // even for root.
    fs::write(dir.path().join("words"), b"in the way").unwrap();
    let logs = Logs::default();
    let _guard = logs.capture();
    engine
        .scope(async {
            assert_eq!(words(3).await, expected(3));
            assert_eq!(words(3).await, expected(3));
        })
        .await;
    assert_eq!(runs(3), 2, "nothing could be stored, so both ran");
    assert!(engine.stats().store_errors >= 2);
    assert!(
        logs.text().contains("cannot write the store"),
        "{}",
        logs.text()
    );
}

/// A store whose disk is always full and whose reads always fail.
#[derive(Debug)]
struct BrokenStore;

struct FullDisk;

impl io::Write for FullDisk {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "no space left on device",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl EntryWrite for FullDisk {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        panic!("commit after a failed write")
    }
}

impl Store for BrokenStore {
    fn get(&self, _: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        Err(StoreError::Io {
            op: "read",
            path: "broken".into(),
            source: io::Error::other("I/O error"),
        })
    }
    fn create(&self, _: &Slot<'_>, _: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        Ok(Box::new(FullDisk))
    }
    fn remove(&self, _: &Slot<'_>) -> Result<bool, StoreError> {
        Ok(false)
    }
    fn list(&self, _: Option<&str>, _: Option<&str>) -> Result<Vec<Listing>, StoreError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn full_disk_and_failing_reads_keep_the_value() {
    for capacity in [0, 1 << 20] {
        // With and without the in-process cache (which changes the write path).
        let engine = Engine::builder(BrokenStore)
            .cache_capacity(capacity)
            .build()
            .unwrap();
        assert_eq!(engine.scope(words(5)).await, expected(5));
        assert_eq!(engine.scope(words(5)).await, expected(5));
        let stats = engine.stats();
        assert_eq!(stats.misses, 2);
        assert_eq!(
            stats.store_errors, 4,
            "two failed reads and two failed writes"
        );
    }
}

/// A named pipe where an entry belongs is not opened as one (which would
/// wait for a writer forever): the call runs its body, and its result takes
/// the pipe's place.
#[tokio::test]
async fn a_pipe_at_an_entry_path_does_not_hang_the_call() {
    for layout in LAYOUTS {
        RUNS.lock().unwrap().remove(&41);
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), layout);
        let path = entry_path(dir.path(), 41);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo failed");
        let answer = tokio::time::timeout(Duration::from_secs(10), engine.scope(words(41)))
            .await
            .unwrap_or_else(|_| panic!("{layout:?}: the call hung on a named pipe"));
        assert_eq!(answer, expected(41));
        assert_eq!(
            engine.stats().store_errors,
            1,
            "{layout:?}: the pipe counts as a store error"
        );
        // The result took the pipe's place: as a file, or in the database.
        let pipe_left = fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file());
        assert!(!pipe_left, "{layout:?}: the pipe is still there");
        drop(engine);
        let again = self::engine(dir.path(), layout);
        assert_eq!(again.scope(words(41)).await, expected(41));
        assert_eq!(again.stats().hits, 1, "{layout:?}");
    }
}

/// Folders that are not stores are neither written into nor deleted from.
#[tokio::test]
async fn a_folder_of_other_files_is_not_used_as_a_store() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("build")).unwrap();
    fs::write(dir.path().join("build/.cache.tmp"), b"keep me").unwrap();
    let error = Engine::local(dir.path()).expect_err("refused").to_string();
    assert!(error.contains("is not a routine store"), "{error}");
    assert!(error.contains("--store"), "says how to proceed: {error}");
    assert_eq!(
        fs::read(dir.path().join("build/.cache.tmp")).unwrap(),
        b"keep me"
    );
    assert!(!dir.path().join(routine::store::marker::MARKER).exists());
    let root = Engine::local("/").expect_err("refused").to_string();
    assert!(root.contains("root of a file system"), "{root}");
}
