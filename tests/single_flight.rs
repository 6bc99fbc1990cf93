//! Identical calls in flight run the body once; nobody hangs when it fails.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use routine::Engine;

static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[routine::task(name = "slow-double", version = "1.0.0")]
async fn slow_double(x: u32) -> u32 {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    x * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_calls_run_the_body_once() {
    let (_dir, engine) = common::local_engine();
    let results = engine
        .scope(async {
            let calls: Vec<_> = (0..16).map(|_| routine::spawn(slow_double(21))).collect();
            let mut out = Vec::new();
            for call in calls {
                out.push(call.await.unwrap());
            }
            out
        })
        .await;
    assert!(results.iter().all(|&r| r == 42));
    assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), 1);
    let stats = engine.stats();
    assert_eq!((stats.misses, stats.hits), (1, 15));
}

static FLAKY_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Panics on its first run only.
#[routine::task(name = "panics-first", version = "1.0.0")]
async fn panics_first(x: u32) -> u32 {
    let run = FLAKY_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    if run == 0 {
        panic!("first run fails");
    }
    x + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_do_not_hang_when_the_leader_panics() {
    let engine = Engine::in_memory();
    let outcomes = engine
        .scope(async {
            let calls: Vec<_> = (0..8).map(|_| routine::spawn(panics_first(1))).collect();
            let mut outcomes = Vec::new();
            for call in calls {
                outcomes.push(
                    tokio::time::timeout(Duration::from_secs(10), call)
                        .await
                        .expect("a caller hung"),
                );
            }
            outcomes
        })
        .await;
    let panicked = outcomes.iter().filter(|o| o.is_err()).count();
    let ok: Vec<u32> = outcomes.into_iter().filter_map(Result::ok).collect();
    // The leader's caller sees the panic; a follower then leads and succeeds,
    // and everyone else gets its stored result.
    assert_eq!(panicked, 1);
    assert_eq!(ok, vec![2; 7]);
    assert_eq!(FLAKY_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(engine.stats().failures, 1);
}

static CANCELLED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[routine::task(name = "cancellable", version = "1.0.0")]
async fn cancellable(x: u32) -> u32 {
    CANCELLED_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_when_the_leader_is_dropped() {
    let engine = Engine::in_memory();
    engine
        .scope(async {
            let leader = routine::spawn(cancellable(5));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let follower = routine::spawn(cancellable(5));
            tokio::time::sleep(Duration::from_millis(50)).await;
            leader.abort();
            let value = tokio::time::timeout(Duration::from_secs(10), follower)
                .await
                .expect("follower hung");
            assert_eq!(value.unwrap(), 5);
        })
        .await;
    assert_eq!(CANCELLED_RUNS.load(Ordering::SeqCst), 2);
}

static ERR_RUNS: AtomicUsize = AtomicUsize::new(0);

#[routine::task(name = "always-err", version = "1.0.0")]
async fn always_err(x: u32) -> Result<u32, String> {
    ERR_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Err(format!("no {x}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_err_is_not_shared_so_each_waiter_gets_its_own() {
    let engine = Engine::in_memory();
    let results = engine
        .scope(async {
            let calls: Vec<_> = (0..3).map(|_| routine::spawn(always_err(9))).collect();
            let mut out = Vec::new();
            for call in calls {
                out.push(call.await.unwrap());
            }
            out
        })
        .await;
    assert!(results.iter().all(|r| *r == Err("no 9".to_string())));
    // Errors are not memoized: each waiter reruns the body, one at a time.
    assert_eq!(ERR_RUNS.load(Ordering::SeqCst), 3);
}
