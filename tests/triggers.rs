//! Triggers: when they fire, what they are given, and that nothing they do
//! fails or delays the routine.
//!
//! Triggers are registered for the whole program, so each test uses tasks of
//! its own.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use routine::store::{EntryWrite, Found, Listing, MemoryStore, Slot, Store, StoreError};
use routine::{Completion, Engine};

// Fires once per fresh completion, never for a hit.

static ONCE_FIRED: Mutex<Vec<(u64, bool)>> = Mutex::new(Vec::new());

#[routine::task(name = "trigger-once", version = "1.0.0")]
async fn once(x: u64) -> u64 {
    x * 10
}

#[routine::trigger(on = "trigger-once")]
async fn record_once(done: Completion<u64>) {
    ONCE_FIRED
        .lock()
        .unwrap()
        .push((done.result.unwrap(), done.from_storage));
}

#[tokio::test]
async fn fires_once_per_fresh_completion() {
    let (_dir, engine) = common::local_engine();
    engine
        .scope(async {
            assert_eq!(once(1).await, 10);
            assert_eq!(once(1).await, 10); // a hit: no trigger
            assert_eq!(once(2).await, 20);
        })
        .await;
    engine.settle().await;
    let mut fired = ONCE_FIRED.lock().unwrap().clone();
    fired.sort();
    assert_eq!(fired, [(10, false), (20, false)]);
    assert_eq!(engine.stats().triggers_fired, 2);
}

// What a completion holds.

static SEEN: Mutex<Vec<Completion<String>>> = Mutex::new(Vec::new());

#[routine::task(name = "trigger-describe", version = "2.1.0")]
async fn describe(name: String, times: u32) -> String {
    tokio::time::sleep(Duration::from_millis(5)).await;
    name.repeat(times as usize)
}

#[routine::trigger(on = "trigger-describe@2.1.0")]
async fn keep_completion(done: Completion<String>) {
    SEEN.lock().unwrap().push(done);
}

#[tokio::test]
async fn a_completion_holds_the_call_and_its_result() {
    let (_dir, engine) = common::local_engine();
    engine.scope(describe("ab".into(), 3)).await;
    engine.settle().await;
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let done = &seen[0];
    assert_eq!(done.routine.to_string(), "tname:trigger-describe:2.1.0");
    assert_eq!(
        done.key,
        routine::Key::of("trigger-describe", "2.1.0", &("ab", 3u32)).unwrap()
    );
    assert_eq!(done.arguments["name"], "ab");
    assert_eq!(done.arguments["times"], 3);
    assert_eq!(done.result.as_deref(), Ok("ababab"));
    assert!(!done.from_storage);
    assert!(done.duration >= Duration::from_millis(5));
    assert!(done.run.is_some(), "the call was the root of a run");
}

// Hits and failures, when asked for.

static ALL_OUTCOMES: Mutex<Vec<(Result<u64, String>, bool)>> = Mutex::new(Vec::new());

#[routine::task(name = "trigger-checked", version = "1.0.0")]
async fn checked(x: u64) -> Result<u64, String> {
    match x {
        0 => Err("zero is not allowed".into()),
        x => Ok(x + 1),
    }
}

#[routine::trigger(on = "trigger-checked", hits = true, failures = true)]
async fn record_everything(done: Completion<u64>) {
    ALL_OUTCOMES
        .lock()
        .unwrap()
        .push((done.result, done.from_storage));
}

#[tokio::test]
async fn fires_on_hits_and_failures_when_asked() {
    let (_dir, engine) = common::local_engine();
    engine
        .scope(async {
            assert_eq!(checked(1).await, Ok(2));
            assert_eq!(checked(1).await, Ok(2));
            assert!(checked(0).await.is_err());
        })
        .await;
    engine.settle().await;
    let mut seen = ALL_OUTCOMES.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            (Ok(2), false),
            (Ok(2), true),
            (Err("zero is not allowed".into()), false)
        ]
    );
}

// A result that could not be stored fires nothing.

static UNSTORED_FIRED: AtomicUsize = AtomicUsize::new(0);

#[routine::task(name = "trigger-unstored", version = "1.0.0")]
async fn unstored(x: u64) -> u64 {
    x
}

#[routine::trigger(on = "trigger-unstored")]
async fn count_unstored(_: Completion<u64>) {
    UNSTORED_FIRED.fetch_add(1, Ordering::SeqCst);
}

/// Reads from memory, refuses every write.
#[derive(Debug, Default)]
struct ReadOnly(MemoryStore);

impl Store for ReadOnly {
    fn get(&self, slot: &Slot<'_>) -> Result<Option<Found>, StoreError> {
        self.0.get(slot)
    }
    fn create(&self, _: &Slot<'_>, _: u64) -> Result<Box<dyn EntryWrite>, StoreError> {
        Err(StoreError::Config("this store is read-only".into()))
    }
    fn remove(&self, slot: &Slot<'_>) -> Result<bool, StoreError> {
        self.0.remove(slot)
    }
    fn list(&self, name: Option<&str>, version: Option<&str>) -> Result<Vec<Listing>, StoreError> {
        self.0.list(name, version)
    }
}

#[tokio::test]
async fn does_not_fire_for_a_result_the_store_refused() {
    let engine = Engine::builder(ReadOnly::default()).build().unwrap();
    assert_eq!(
        engine.scope(unstored(5)).await,
        5,
        "the caller still gets its value"
    );
    engine.settle().await;
    assert_eq!(UNSTORED_FIRED.load(Ordering::SeqCst), 0);
    assert!(engine.stats().store_errors >= 1);
}

// A trigger's panic or error is the trigger's, not the routine's.

#[routine::task(name = "trigger-fragile", version = "1.0.0")]
async fn fragile(x: u64) -> u64 {
    x + 100
}

#[routine::trigger(on = "trigger-fragile")]
async fn panicking_trigger(_: Completion<u64>) {
    panic!("the trigger broke");
}

#[routine::trigger(on = "trigger-fragile")]
async fn failing_trigger(_: Completion<u64>) -> Result<(), String> {
    Err("the trigger could not send its mail".into())
}

#[tokio::test]
async fn a_failing_trigger_does_not_fail_the_routine() {
    let logs = common::Logs::default();
    let _guard = logs.capture();
    let (_dir, engine) = common::local_engine();
    assert_eq!(engine.scope(fragile(1)).await, 101);
    engine.settle().await;
    let stats = engine.stats();
    assert_eq!((stats.trigger_failures, stats.triggers_fired), (2, 0));
    assert_eq!(stats.failures, 0, "the routine did not fail");
    let text = logs.text();
    assert!(text.contains("the trigger broke"), "{text}");
    assert!(text.contains("could not send its mail"), "{text}");
}

// A trigger does not delay the caller.

static SLOW_TRIGGER_DONE: AtomicUsize = AtomicUsize::new(0);
static GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[routine::task(name = "trigger-quick", version = "1.0.0")]
async fn quick(x: u64) -> u64 {
    x
}

#[routine::trigger(on = "trigger-quick")]
async fn slow_trigger(_: Completion<u64>) {
    // Held until the test has its result: a caller that waited for its
    // triggers would never get it.
    GATE.notified().await;
    SLOW_TRIGGER_DONE.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_does_not_wait_for_triggers() {
    let (_dir, engine) = common::local_engine();
    let call = tokio::time::timeout(Duration::from_secs(30), engine.scope(quick(3)));
    assert_eq!(call.await.expect("the caller waited for its trigger"), 3);
    assert_eq!(SLOW_TRIGGER_DONE.load(Ordering::SeqCst), 0);
    GATE.notify_one();
    engine.settle().await;
    assert_eq!(SLOW_TRIGGER_DONE.load(Ordering::SeqCst), 1);
}

// A trigger that starts a routine: when training finishes, evaluate.

static EVALUATIONS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

#[routine::task(name = "trigger-train", version = "1.0.0")]
async fn train_model(seed: u64) -> u64 {
    seed * 7
}

#[routine::task(name = "trigger-evaluate", version = "1.0.0")]
async fn evaluate(model: u64) -> u64 {
    model % 5
}

#[routine::trigger(on = "trigger-train")]
async fn evaluate_when_trained(done: Completion<u64>) {
    let model = done.result.unwrap();
    let score = evaluate(model).await;
    EVALUATIONS.lock().unwrap().push((model, score));
}

#[tokio::test]
async fn a_trigger_can_start_routines() {
    let (_dir, engine) = common::local_engine();
    engine.scope(train_model(6)).await;
    engine.settle().await;
    assert_eq!(EVALUATIONS.lock().unwrap().clone(), [(42, 2)]);
    // The evaluation went through the engine: it is stored.
    let stored = engine.store().list(Some("trigger-evaluate"), None).unwrap();
    assert_eq!(stored.len(), 1);
    let stats = engine.stats();
    assert_eq!(stats.misses, 2, "train and evaluate both ran");
}
