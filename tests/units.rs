//! Multi-unit tasks in one process: the design's parallel sort, memoized as
//! one call; ranks, keys and collectives; a unit's failure ending the gang.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use routine::{Engine, Unit};

fn split(all: Vec<u64>, parts: usize) -> Vec<Vec<u64>> {
    let mut out = vec![Vec::new(); parts];
    for (i, x) in all.into_iter().enumerate() {
        out[i % parts].push(x);
    }
    out
}

fn merge(sorted: Vec<Vec<u64>>) -> Vec<u64> {
    let mut all: Vec<u64> = sorted.into_iter().flatten().collect();
    all.sort_unstable();
    all
}

/// Units of `psort` started, over every call.
static PSORT_UNITS: AtomicUsize = AtomicUsize::new(0);

/// The design's example: rank 0 splits the list, every unit sorts a part,
/// rank 0 gathers the sorted parts with `receive_many` and merges them.
#[routine::task(name = "psort", version = "1.0.0", units = 4)]
async fn psort(unit: routine::Unit<Vec<u64>, Vec<u64>>) {
    PSORT_UNITS.fetch_add(1, Ordering::SeqCst);
    if unit.rank() == 0 {
        let all = unit.receive_input().await;
        let parts = split(all, unit.unit_count());
        for (r, part) in parts.iter().enumerate().skip(1) {
            unit.send(r, "part", part).await;
        }
        let mut mine = parts[0].clone();
        mine.sort_unstable();
        let mut sorted = vec![mine];
        sorted.extend(
            unit.receive_many::<Vec<u64>>(1..unit.unit_count(), "sorted")
                .await,
        );
        unit.send_output(merge(sorted));
    } else {
        let mut mine: Vec<u64> = unit.receive(0, "part").await;
        mine.sort_unstable();
        unit.send(0, "sorted", &mine).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parallel_sort_is_right_and_memoized_as_one_call() {
    let engine = Engine::in_memory();
    let input = vec![5, 3, 9, 1, 12, 7, 0, 4, 4, 100, 2];
    let before = PSORT_UNITS.load(Ordering::SeqCst);
    let sorted = engine.scope(psort(input.clone())).await;
    assert_eq!(sorted, [0, 1, 2, 3, 4, 4, 5, 7, 9, 12, 100]);
    assert_eq!(
        PSORT_UNITS.load(Ordering::SeqCst) - before,
        4,
        "each rank once"
    );
    // A hit runs no unit.
    assert_eq!(engine.scope(psort(input)).await, sorted);
    assert_eq!(PSORT_UNITS.load(Ordering::SeqCst) - before, 4);
    let stats = engine.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

/// Ranks each unit saw, per call.
static RANKS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Every unit sends its rank; rank 0 receives them from the ranks in
/// reverse order, then in rank order, and returns both.
#[routine::task(name = "units-order", version = "1.0.0", units = 2..=5)]
async fn order(unit: Unit<u32, (Vec<u32>, Vec<u32>)>) {
    RANKS.lock().unwrap().push(unit.rank());
    let rank = unit.rank() as u32;
    unit.send(0, "rank", &rank).await;
    unit.send(0, "again", &(rank * 10)).await;
    if unit.rank() == 0 {
        let offset = unit.receive_input().await;
        let count = unit.unit_count();
        let reversed: Vec<u32> = unit.receive_many((0..count).rev(), "rank").await;
        let ordered: Vec<u32> = unit.receive_many(0..count, "again").await;
        unit.send_output((reversed.into_iter().map(|r| r + offset).collect(), ordered));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_many_returns_values_in_the_order_of_its_ranks() {
    let engine = Engine::in_memory();
    RANKS.lock().unwrap().clear();
    let (reversed, ordered) = engine.scope(order(100)).await;
    // In one process every unit of a range can start: the most.
    assert_eq!(reversed, [104, 103, 102, 101, 100]);
    assert_eq!(ordered, [0, 10, 20, 30, 40]);
    let mut ranks = RANKS.lock().unwrap().clone();
    ranks.sort_unstable();
    assert_eq!(ranks, [0, 1, 2, 3, 4], "each rank once");
}

/// Rank 1 sends `len` bytes to rank 0, which returns their length and sum.
#[routine::task(name = "units-large", version = "1.0.0", units = 2)]
async fn large(unit: Unit<usize, (usize, u64)>) {
    match unit.rank() {
        0 => {
            let _ = unit.receive_input().await;
            let bytes: serde_bytes::ByteBuf = unit.receive(1, "bytes").await;
            let sum = bytes.iter().map(|b| u64::from(*b)).sum();
            unit.send_output((bytes.len(), sum));
        }
        _ => {
            let len = 64 << 20;
            let bytes =
                serde_bytes::ByteBuf::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            unit.send(0, "bytes", &bytes).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_arrives_whole() {
    let engine = Engine::in_memory();
    let (len, sum) = engine.scope(large(0)).await;
    let expected: u64 = (0..64u64 << 20).map(|i| i % 251).sum();
    assert_eq!((len, sum), (64 << 20, expected));
}

/// Peers dropped while they waited, and when the last one was.
static DROPPED: AtomicUsize = AtomicUsize::new(0);
static LAST_DROP: Mutex<Option<Instant>> = Mutex::new(None);
static PANICKED_AT: Mutex<Option<Instant>> = Mutex::new(None);

struct CountsItsDrop;

impl Drop for CountsItsDrop {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
        *LAST_DROP.lock().unwrap() = Some(Instant::now());
    }
}

/// Rank 2 panics once the others wait for a message that never comes.
#[routine::task(name = "units-panic", version = "1.0.0", units = 4)]
async fn panicking(unit: Unit<u8, u8>) {
    if unit.rank() == 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        *PANICKED_AT.lock().unwrap() = Some(Instant::now());
        panic!("rank 2 gave up");
    }
    let _guard = CountsItsDrop;
    let _: u8 = unit.receive((unit.rank() + 1) % 2, "never").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_units_panic_fails_the_call_naming_its_rank_and_drops_its_peers() {
    let engine = Engine::in_memory();
    let call = tokio::spawn(engine.scope(panicking(1)));
    let failed = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the gang ended")
        .expect_err("the call failed");
    let message = routine::invoke::panic_message(failed.into_panic());
    assert!(
        message.contains("unit 2 of 4 panicked: rank 2 gave up"),
        "{message}"
    );
    // The three waiting peers were dropped, none left waiting (how fast:
    // `cargo bench -p routine-bench --bench units`).
    let deadline = Instant::now() + Duration::from_secs(10);
    while DROPPED.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "peers still waiting");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let panicked = PANICKED_AT.lock().unwrap().unwrap();
    let dropped = LAST_DROP.lock().unwrap().unwrap();
    assert!(dropped >= panicked, "dropped after the panic, not before");
}

/// Rank `input` calls `send_output`; rank 0 does only if `input` is 0.
#[routine::task(name = "units-output", version = "1.0.0", units = 2)]
async fn misplaced_output(unit: Unit<usize, u8>) {
    let chosen = match unit.rank() {
        0 => {
            let chosen = unit.receive_input().await;
            unit.send(1, "chosen", &chosen).await;
            chosen
        }
        _ => unit.receive(0, "chosen").await,
    };
    if unit.rank() == chosen && chosen != 9 {
        unit.send_output(7);
    }
    // Rank 0 returns after rank 1 is done.
    match unit.rank() {
        0 => unit.receive::<()>(1, "done").await,
        _ => unit.send(0, "done", &()).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_rank_0_sends_the_output_and_it_must() {
    let engine = Engine::in_memory();
    assert_eq!(engine.scope(misplaced_output(0)).await, 7);
    for (chosen, said) in [
        (1, "unit 1 called send_output: only rank 0 sends the output"),
        (
            9,
            "unit 0 of 2 returned without its output: rank 0 must call `send_output`",
        ),
    ] {
        let failed = tokio::spawn(engine.scope(misplaced_output(chosen)))
            .await
            .expect_err("the call failed");
        let message = routine::invoke::panic_message(failed.into_panic());
        assert!(message.contains(said), "{message}");
    }
}

/// Attempts of the flaky gang.
static ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

/// Every collective, in every unit; rank 3 panics in the first attempt.
#[routine::task(name = "units-collectives", version = "1.0.0", units = 4, retries = 1)]
async fn collectives(unit: Unit<Vec<i64>, (i64, Vec<i64>, Vec<usize>)>) {
    if unit.rank() == 0 {
        ATTEMPTS.fetch_add(1, Ordering::SeqCst);
    }
    unit.barrier().await;
    if unit.rank() == 3 && ATTEMPTS.load(Ordering::SeqCst) == 1 {
        panic!("the first attempt fails");
    }
    let input = match unit.rank() {
        0 => Some(unit.receive_input().await),
        _ => None,
    };
    let all: Vec<i64> = unit.broadcast(0, input).await;
    let mine = all[unit.rank()];
    let sum = unit.all_reduce(mine, |a, b| a + b).await;
    let every = unit.all_gather(&(mine * 2)).await;
    let ranks = unit.gather(0, &unit.rank()).await;
    unit.barrier().await;
    if let Some(ranks) = ranks {
        unit.send_output((sum, every, ranks));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectives_meet_and_retries_run_the_whole_gang_again() {
    let engine = Engine::in_memory();
    let (sum, every, ranks) = engine.scope(collectives(vec![1, 2, 3, 4])).await;
    assert_eq!(
        (sum, every, ranks),
        (10, vec![2, 4, 6, 8], vec![0, 1, 2, 3])
    );
    assert_eq!(ATTEMPTS.load(Ordering::SeqCst), 2);
    assert_eq!(engine.stats().retried, 1);
}

/// Units started and dropped by the cancelled gang.
static STARTED: AtomicUsize = AtomicUsize::new(0);
static CANCELLED: AtomicUsize = AtomicUsize::new(0);

struct CountsCancel;

impl Drop for CountsCancel {
    fn drop(&mut self) {
        CANCELLED.fetch_add(1, Ordering::SeqCst);
    }
}

#[routine::task(name = "units-slow", version = "1.0.0", units = 3)]
async fn slow(unit: Unit<u8, u8>) {
    let _guard = CountsCancel;
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    if unit.rank() == 0 {
        unit.send_output(unit.receive_input().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_call_drops_every_unit() {
    let engine = Engine::in_memory();
    let call = tokio::spawn(engine.scope(slow(1)));
    while STARTED.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    call.abort();
    let deadline = Instant::now() + Duration::from_secs(5);
    while CANCELLED.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "units still running");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The run record keeps each unit of a multi-unit call: its rank, where
/// and how long it ran, how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_records_every_unit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::local(dir.path()).unwrap();
    engine.scope(psort(vec![8, 6, 7, 5, 3, 0, 9])).await;
    let runs = routine::lineage::runs(engine.store()).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let tree = routine::lineage::run_tree(engine.store(), runs[0].id).unwrap();
    let root = &tree.calls[tree.roots()[0]];
    assert_eq!(root.call.name, "psort");
    let units: Vec<(u32, u32, &str)> = root
        .units
        .iter()
        .map(|u| (u.rank, u.count, u.ended.as_str()))
        .collect();
    assert_eq!(
        units,
        [
            (0, 4, "returned"),
            (1, 4, "returned"),
            (2, 4, "returned"),
            (3, 4, "returned")
        ]
    );
    assert!(root.units.iter().all(|u| u.process == root.call.process));
}
