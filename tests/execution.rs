//! Execution options in-process: retries with backoff, timeouts, typed
//! errors, concurrency limits and engine-wide defaults. The same workflows
//! run on workers in `tests/distributed.rs`, with the same answers.

#[path = "shared/execution.rs"]
mod workflows;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use routine::execution::Execution;
use routine::store::MemoryStore;
use routine::{lineage, CallOutcome, Engine};
use workflows::{control, expected, opaque, Opaque, CASES};

/// A unique id per call, so that memoized results of one test never answer
/// another's.
fn id(case: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{case}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a spawned call answered, or its panic's message.
async fn outcome<T: Send + 'static>(call: tokio::task::JoinHandle<T>) -> Result<T, String> {
    call.await.map_err(|e| {
        let payload = e.into_panic();
        routine::invoke::panic_message(payload)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_answers_as_expected_in_process() {
    for case in CASES {
        let engine = Engine::in_memory();
        let answer = outcome(tokio::spawn(engine.scope(control(case.into(), id(case))))).await;
        match (expected(case), answer) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "{case}"),
            (Err(want), Err(got)) => assert!(got.contains(want), "{case}: {got}"),
            (want, got) => panic!("{case}: expected {want:?}, got {got:?}"),
        }
    }
}

#[tokio::test]
async fn retries_are_counted_and_recorded_in_the_run() {
    let engine = Engine::in_memory();
    let answer = engine.scope(control("flaky".into(), id("flaky"))).await;
    assert_eq!(answer, "passed on attempt 3");
    assert_eq!(engine.stats().retried, 2);
    let run = lineage::runs(engine.store())
        .unwrap()
        .pop()
        .expect("one run");
    let tree = lineage::run_tree(engine.store(), run.id).unwrap();
    let flaky = tree
        .calls
        .iter()
        .find(|node| node.call.name == "ctl-flaky")
        .expect("the retried call is in the run");
    assert_eq!(flaky.call.attempts, 3);
    assert_eq!(flaky.call.outcome, CallOutcome::Computed);
}

#[tokio::test]
async fn a_timed_out_call_is_recorded_as_such() {
    let engine = Engine::in_memory();
    let answer = outcome(tokio::spawn(
        engine.scope(control("sleepy-slow".into(), id("sleepy"))),
    ))
    .await;
    let message = answer.unwrap_err();
    assert!(
        message.contains("task `tname:ctl-sleepy:1.0.0` timed out"),
        "{message}"
    );
    assert_eq!(
        engine.stats().failures,
        2,
        "the sub-routine and its workflow"
    );
    let run = lineage::runs(engine.store())
        .unwrap()
        .pop()
        .expect("one run");
    let tree = lineage::run_tree(engine.store(), run.id).unwrap();
    let sleepy = tree
        .calls
        .iter()
        .find(|n| n.call.name == "ctl-sleepy")
        .unwrap();
    assert_eq!(sleepy.call.outcome, CallOutcome::TimedOut);
}

#[tokio::test]
async fn an_error_without_serde_stays_typed_in_process() {
    let engine = Engine::in_memory();
    let answer = engine.scope(opaque(4)).await;
    assert!(
        matches!(answer, Err(Opaque(ref text)) if text == "no 4"),
        "{answer:?}"
    );
}

static RUNNING: AtomicU32 = AtomicU32::new(0);
static MOST: AtomicU32 = AtomicU32::new(0);

#[routine::task(name = "ctl-exclusive", version = "1.0.0", concurrency = 1)]
async fn exclusive(n: u32) -> u32 {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_is_never_exceeded_and_waiters_show() {
    let engine = Engine::in_memory();
    let calls: Vec<_> = (0..4)
        .map(|n| tokio::spawn(engine.scope(exclusive(n))))
        .collect();
    let mut seen_waiting = 0;
    for _ in 0..20 {
        seen_waiting = seen_waiting.max(engine.stats().waiting_for_slot);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), n as u32);
    }
    assert_eq!(MOST.load(Ordering::SeqCst), 1, "two bodies ran at once");
    assert!(
        seen_waiting >= 1,
        "no call was ever seen waiting for its slot"
    );
    assert_eq!(engine.stats().waiting_for_slot, 0);
}

static PLAIN_RUNS: AtomicU32 = AtomicU32::new(0);

/// No options of its own: the engine's defaults apply.
#[routine::task(name = "ctl-plain", version = "1.0.0")]
async fn plain(id: String) -> String {
    let n = PLAIN_RUNS.fetch_add(1, Ordering::SeqCst);
    if n == 0 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    id
}

#[tokio::test]
async fn engine_defaults_apply_to_tasks_that_say_nothing() {
    let engine = Engine::builder(MemoryStore::new())
        .execution(Execution {
            timeout: Some(Duration::from_millis(100)),
            retries: Some(1),
            backoff: Some(Duration::from_millis(10)),
            ..Execution::NONE
        })
        .build()
        .unwrap();
    // The first attempt passes its timeout; the retry answers.
    let answer = engine.scope(plain("default".into())).await;
    assert_eq!(answer, "default");
    assert_eq!(engine.stats().retried, 1);
    // A task's own options win over the defaults.
    let flaky = engine.execution_of(routine::registry::find("ctl-flaky", "1.0.0").unwrap());
    assert_eq!(flaky.retries, Some(3));
    assert_eq!(flaky.timeout, Some(Duration::from_millis(100)));
}
