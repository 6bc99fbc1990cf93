//! The local engine's contract: hits skip the body, misses run and store it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{local_engine, Logs};
use routine::{CallOutcome, Engine};
use serde::{Deserialize, Serialize};

static SQUARE_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Squares a number.
#[routine::task(name = "square", version = "1.0.0")]
async fn square(x: u64) -> u64 {
    SQUARE_RUNS.fetch_add(1, Ordering::SeqCst);
    x * x
}

#[tokio::test]
async fn second_call_comes_from_storage() {
    let (_dir, engine) = local_engine();
    engine
        .scope(async {
            let before = SQUARE_RUNS.load(Ordering::SeqCst);
            assert_eq!(square(1_000_001).await, 1_000_002_000_001);
            assert_eq!(square(1_000_001).await, 1_000_002_000_001);
            assert_eq!(SQUARE_RUNS.load(Ordering::SeqCst), before + 1);
        })
        .await;
    let stats = engine.stats();
    assert_eq!((stats.misses, stats.hits), (1, 1));
}

#[tokio::test]
async fn results_persist_across_engines_on_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Engine::local(dir.path()).unwrap();
    assert_eq!(first.scope(square(2_000_003)).await, 2_000_003 * 2_000_003);
    let second = Engine::local(dir.path()).unwrap();
    assert_eq!(second.scope(square(2_000_003)).await, 2_000_003 * 2_000_003);
    assert_eq!((second.stats().hits, second.stats().misses), (1, 0));
    let entries = second.store().list(Some("square"), Some("1.0.0")).unwrap();
    assert_eq!(entries.len(), 1);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Params {
    lr: f64,
    tags: Vec<String>,
}

static CONFIG_RUNS: AtomicUsize = AtomicUsize::new(0);

#[routine::task(name = "configured", version = "0.1.0")]
async fn configured(params: Params, extra: HashMap<String, u32>) -> BTreeMap<String, u32> {
    CONFIG_RUNS.fetch_add(1, Ordering::SeqCst);
    extra
        .into_iter()
        .map(|(k, v)| (format!("{k}@{}", params.lr), v))
        .collect()
}

#[tokio::test]
async fn equal_hash_maps_hit_whatever_their_order() {
    let engine = Engine::in_memory();
    let params = Params {
        lr: 0.5,
        tags: vec!["a".into()],
    };
    let forward: HashMap<String, u32> = (0..64).map(|i| (format!("k{i}"), i)).collect();
    let backward: HashMap<String, u32> = (0..64).rev().map(|i| (format!("k{i}"), i)).collect();
    engine
        .scope(async {
            let before = CONFIG_RUNS.load(Ordering::SeqCst);
            let a = configured(params.clone(), forward).await;
            let b = configured(params.clone(), backward).await;
            assert_eq!(a, b);
            assert_eq!(CONFIG_RUNS.load(Ordering::SeqCst), before + 1);
        })
        .await;
}

#[tokio::test]
async fn versions_and_arguments_separate_results() {
    #[routine::task(name = "versioned", version = "1.0.0")]
    async fn v1(x: u32) -> String {
        format!("v1:{x}")
    }
    #[routine::task(name = "versioned", version = "2.0.0")]
    async fn v2(x: u32) -> String {
        format!("v2:{x}")
    }
    let (_dir, engine) = local_engine();
    engine
        .scope(async {
            assert_eq!(v1(1).await, "v1:1");
            assert_eq!(v2(1).await, "v2:1");
            assert_eq!(v1(2).await, "v1:2");
            assert_eq!(v1(1).await, "v1:1");
        })
        .await;
    assert_eq!(engine.stats().misses, 3);
    let listed = engine.store().list(Some("versioned"), None).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        engine
            .store()
            .list(Some("versioned"), Some("2.0.0"))
            .unwrap()
            .len(),
        1
    );
}

static FALLIBLE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[routine::task(name = "fallible", version = "1.0.0")]
async fn fallible(x: i32) -> Result<u32, String> {
    FALLIBLE_RUNS.fetch_add(1, Ordering::SeqCst);
    u32::try_from(x).map_err(|e| format!("{x}: {e}"))
}

#[tokio::test]
async fn ok_is_stored_and_err_is_not() {
    let (_dir, engine) = local_engine();
    engine
        .scope(async {
            let before = FALLIBLE_RUNS.load(Ordering::SeqCst);
            assert_eq!(fallible(7).await, Ok(7));
            assert_eq!(fallible(7).await, Ok(7));
            assert!(fallible(-1).await.is_err());
            assert!(fallible(-1).await.is_err());
            assert_eq!(FALLIBLE_RUNS.load(Ordering::SeqCst), before + 3);
        })
        .await;
    let stats = engine.stats();
    assert_eq!((stats.hits, stats.misses, stats.failures), (1, 3, 2));
    assert_eq!(
        engine.store().list(Some("fallible"), None).unwrap().len(),
        1
    );
}

#[routine::task(name = "sync-sleep", version = "1.0.0")]
fn sync_sleep(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn sync_tasks_run_on_the_blocking_pool() {
    let engine = Engine::in_memory();
    engine
        .scope(async {
            // With one async worker thread, a sync body run inline would block
            // the ticker below for the whole sleep.
            let slow = routine::spawn(sync_sleep(600));
            let started = Instant::now();
            let mut ticks = 0;
            while started.elapsed() < Duration::from_millis(300) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks += 1;
            }
            assert!(ticks >= 5, "the async worker was stalled: {ticks} ticks");
            assert_eq!(slow.await.unwrap(), 600);
        })
        .await;
}

#[tokio::test]
async fn futures_capture_the_engine_when_created() {
    let engine = Engine::in_memory();
    let (by_tokio, by_routine) = engine
        .scope(async {
            // Both futures leave the scope; they must still use `engine`.
            let a = tokio::spawn(square(3));
            let b = routine::spawn(async { square(4).await + square(3).await });
            (a.await.unwrap(), b.await.unwrap())
        })
        .await;
    assert_eq!((by_tokio, by_routine), (9, 25));
    assert_eq!(engine.stats().misses, 2);
    assert_eq!(engine.stats().hits, 1);
}

#[tokio::test]
async fn inner_scope_overrides_outer() {
    let outer = Engine::in_memory();
    let inner = Engine::in_memory();
    outer
        .scope(async {
            square(5).await;
            inner.scope(async { square(5).await }).await;
            square(5).await;
        })
        .await;
    assert_eq!((outer.stats().misses, outer.stats().hits), (1, 1));
    assert_eq!((inner.stats().misses, inner.stats().hits), (1, 0));
}

#[tokio::test]
#[should_panic(expected = "task `square` (version 1.0.0) was called outside an engine scope")]
async fn calling_outside_a_scope_names_the_task() {
    square(1).await;
}

#[tokio::test]
async fn a_future_made_before_the_scope_uses_the_scope_it_runs_in() {
    let engine = Engine::in_memory();
    let pending = square(11);
    assert_eq!(engine.scope(pending).await, 121);
    assert_eq!(engine.stats().misses, 1);
}

#[tokio::test]
async fn observer_sees_every_call() {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let engine = Engine::builder(routine::store::MemoryStore::new())
        .on_call(move |report| {
            sink.lock()
                .unwrap()
                .push((report.task.name(), report.outcome))
        })
        .build()
        .unwrap();
    engine
        .scope(async {
            square(6).await;
            square(6).await;
            let _ = fallible(-6).await;
        })
        .await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("square", CallOutcome::Computed),
            ("square", CallOutcome::Hit),
            ("fallible", CallOutcome::Failed)
        ]
    );
}

#[tokio::test]
async fn every_call_is_a_span_with_outcome() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let engine = Engine::in_memory();
    engine
        .scope(async {
            square(7).await;
            square(7).await;
        })
        .await;
    let text = logs.text();
    let key = routine::Key::of("square", "1.0.0", &(7u64,))
        .unwrap()
        .short();
    let closes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("routine.task") && l.contains("close"))
        .collect();
    assert_eq!(closes.len(), 2, "{text}");
    for line in &closes {
        assert!(
            line.contains("task=\"square\"") || line.contains("task=square"),
            "{line}"
        );
        assert!(line.contains(&key), "{line}");
        assert!(line.contains("elapsed_us="), "{line}");
    }
    assert!(
        closes[0].contains("computed") && closes[1].contains("hit"),
        "{text}"
    );
}

#[test]
fn registry_lists_tasks_with_signature_and_fingerprint() {
    let square = routine::registry::find("square", "1.0.0").expect("square is registered");
    assert_eq!(square.signature(), "async fn square(x: u64) -> u64");
    assert_eq!(square.id().to_string(), "tname:square:1.0.0");
    assert!(square.location().contains("memoization.rs"));
    let sync = routine::registry::find("sync-sleep", "1.0.0").unwrap();
    assert_eq!(sync.signature(), "fn sync_sleep(millis: u64) -> u64");
    let configured = routine::registry::find("configured", "0.1.0").unwrap();
    assert_eq!(
        configured.signature(),
        "async fn configured(params: Params, extra: HashMap<String, u32>) -> BTreeMap<String, u32>"
    );
    assert_ne!(square.fingerprint(), sync.fingerprint());
    let names: Vec<_> = routine::registry::tasks()
        .map(|t| t.id().to_string())
        .collect();
    assert!(
        names.contains(&"tname:versioned:2.0.0".to_string()),
        "{names:?}"
    );
    routine::registry::check().unwrap();
}

/// A progress handle: shared, not serializable, not part of the result.
#[derive(Default, Clone)]
struct Progress(Option<std::sync::Arc<AtomicUsize>>);

static SUMMED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[routine::task(name = "summed", version = "1.0.0", retries = 1)]
async fn summed(xs: Vec<u64>, #[routine(skip)] progress: Progress) -> u64 {
    SUMMED_RUNS.fetch_add(1, Ordering::SeqCst);
    if let Some(done) = &progress.0 {
        done.fetch_add(xs.len(), Ordering::SeqCst);
    }
    xs.iter().sum()
}

#[tokio::test]
async fn a_skipped_parameter_is_not_part_of_the_key() {
    let (_dir, engine) = local_engine();
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let handle = || Progress(Some(std::sync::Arc::clone(&done)));
    engine
        .scope(async {
            let before = SUMMED_RUNS.load(Ordering::SeqCst);
            assert_eq!(summed(vec![1, 2, 3], handle()).await, 6);
            assert_eq!(done.load(Ordering::SeqCst), 3, "the body got the handle");
            // Another handle, or none: the same call.
            assert_eq!(summed(vec![1, 2, 3], Progress::default()).await, 6);
            assert_eq!(summed(vec![1, 2, 3], handle()).await, 6);
            assert_eq!(SUMMED_RUNS.load(Ordering::SeqCst), before + 1);
            assert_eq!(summed(vec![4], handle()).await, 4);
            assert_eq!(SUMMED_RUNS.load(Ordering::SeqCst), before + 2);
        })
        .await;
    // A command line sees only the keyed parameter.
    let task = routine::registry::find("summed", "1.0.0").unwrap();
    let names: Vec<&str> = task.parameters().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["xs"]);
    let mut encoded = Vec::new();
    routine::codec::encode_into(&mut encoded, &vec![1u64, 2, 3]).unwrap();
    let (key, digests) = task.key_of_encoded(&encoded, None).unwrap();
    assert_eq!(digests.len(), 1);
    let stored = routine::store::Slot {
        name: "summed",
        version: "1.0.0",
        key: &key,
    };
    assert!(
        engine.store().get(&stored).unwrap().is_some(),
        "the key a command line computes is the call's"
    );
}
