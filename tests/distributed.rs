//! Distributed execution against a real Redis server and a real S3 server
//! (`./scripts/test` starts both), with real worker processes: this test
//! binary re-run as workers through the ignored `worker_process` entry point.
//!
//! Each test has its own broker namespace and store prefix, so tests running
//! in parallel never share workers or results.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use routine::dispatch::Policy;
use routine::distributed::broker::{Broker, Retry};
use routine::distributed::worker::WorkerConfig;
use routine::distributed::{DispatchSettings, DistributedConfig};
use routine::RoutineId;

#[path = "shared/execution.rs"]
mod workflows;

/// Which process computed a value: the tests check that work spread.
fn pid() -> u32 {
    std::process::id()
}

#[routine::task(name = "square-on", version = "1.0.0")]
async fn square_on(x: u64) -> (u64, u32) {
    (x * x, pid())
}

#[routine::task(name = "fan-out", version = "1.0.0")]
async fn fan_out(n: u64) -> Vec<(u64, u32)> {
    let calls: Vec<_> = (0..n).map(|x| routine::spawn(square_on(x))).collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.expect("a sub-routine failed"));
    }
    out
}

#[routine::task(name = "slow-square", version = "1.0.0")]
async fn slow_square(x: u64) -> (u64, u32) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    (x * x, pid())
}

#[routine::task(name = "slow-fan-out", version = "1.0.0")]
async fn slow_fan_out(n: u64) -> Vec<u64> {
    let calls: Vec<_> = (0..n).map(|x| routine::spawn(slow_square(x))).collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.expect("a sub-routine failed").0);
    }
    out
}

#[routine::task(name = "boom", version = "1.0.0")]
async fn boom(x: u64) -> u64 {
    panic!("boom {x}")
}

#[routine::task(name = "refuses", version = "1.0.0")]
async fn refuses(x: u64) -> Result<u64, String> {
    Err(format!("refusing {x}"))
}

/// Kills whichever worker runs it.
#[routine::task(name = "deadly", version = "1.0.0")]
async fn deadly(x: u64) -> u64 {
    if x > 0 {
        std::process::abort();
    }
    x
}

/// Twelve MiB: stored with a multipart upload, read back streamed.
#[routine::task(name = "large-result", version = "1.0.0")]
async fn large_result(seed: u8) -> Vec<u8> {
    (0..12u32 << 20)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

/// Counts its runs in Redis (a side effect, for the test only).
#[routine::task(name = "counted", version = "1.0.0")]
async fn counted(counter: String) -> u64 {
    let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let mut connection = client.get_connection().unwrap();
    let runs: u64 = redis::cmd("INCR")
        .arg(&counter)
        .query(&mut connection)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    runs
}

#[routine::task(name = "count-once", version = "1.0.0")]
async fn count_once(counter: String) -> u64 {
    counted(counter).await
}

/// Sets `{counter}:dropped` to the time (ms) its body's future is dropped.
struct MarkDropped(String);

impl Drop for MarkDropped {
    fn drop(&mut self) {
        let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
        let mut connection = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{}:dropped", self.0))
            .arg(now_millis())
            .query(&mut connection)
            .unwrap();
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Marks its start, then waits a minute, marking when it is dropped.
#[routine::task(name = "patient", version = "1.0.0")]
async fn patient(counter: String) -> u64 {
    let _dropped = MarkDropped(counter.clone());
    let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let mut connection = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{counter}:started"))
        .arg(1)
        .query(&mut connection)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    1
}

/// `patient`, with a timeout its worker enforces unless it is stuck.
#[routine::task(name = "stuck", version = "1.0.0", timeout = "1s")]
async fn stuck(counter: String) -> u64 {
    patient(counter).await
}

#[routine::task(name = "wait-stuck", version = "1.0.0")]
async fn wait_stuck(counter: String) -> u64 {
    stuck(counter).await
}

#[routine::task(name = "wait-patiently", version = "1.0.0")]
async fn wait_patiently(counter: String) -> u64 {
    patient(counter).await
}

/// Runs alone in the whole cluster: records when it started and ended.
#[routine::task(name = "exclusive", version = "1.0.0", concurrency = 1)]
async fn exclusive(log: String, i: u32) -> u32 {
    let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let mut connection = client.get_connection().unwrap();
    let started = now_millis();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _: () = redis::cmd("RPUSH")
        .arg(&log)
        .arg(format!("{started}-{}-{}", now_millis(), pid()))
        .query(&mut connection)
        .unwrap();
    i
}

#[routine::task(name = "exclusive-fan-out", version = "1.0.0")]
async fn exclusive_fan_out(log: String, n: u32) -> u32 {
    let calls: Vec<_> = (0..n)
        .map(|i| routine::spawn(exclusive(log.clone(), i)))
        .collect();
    let mut sum = 0;
    for call in calls {
        sum += call.await.expect("a sub-routine failed");
    }
    sum
}

/// A workflow `level` levels deep: each level dispatches the next.
#[routine::task(name = "deep", version = "1.0.0")]
async fn deep(level: u32, tag: String) -> (u32, Vec<u32>) {
    if level == 0 {
        return (0, vec![pid()]);
    }
    // A task that awaits itself boxes the call, as any recursive async fn.
    let (below, mut pids) = Box::pin(deep(level - 1, tag)).await;
    pids.push(pid());
    (below + 1, pids)
}

#[routine::task(name = "lonely", version = "1.0.0")]
async fn lonely(x: u64) -> u64 {
    x
}

#[routine::task(name = "which", version = "1.0.0")]
async fn which_v1(x: u64) -> (String, u32) {
    (format!("v1:{x}"), pid())
}

#[routine::task(name = "which", version = "2.0.0")]
async fn which_v2(x: u64) -> (String, u32) {
    (format!("v2:{x}"), pid())
}

/// The root routine of most tests: it runs in the test process and awaits
/// one sub-routine, which is dispatched.
#[routine::task(name = "call-one", version = "1.0.0")]
async fn call_one(kind: String, x: u64) -> String {
    match kind.as_str() {
        "boom" => boom(x).await.to_string(),
        "refuses" => format!("{:?}", refuses(x).await),
        "lonely" => lonely(x).await.to_string(),
        "deadly" => deadly(x).await.to_string(),
        "large" => {
            let bytes = large_result(x as u8).await;
            format!(
                "{} {}",
                bytes.len(),
                bytes.iter().map(|b| u64::from(*b)).sum::<u64>()
            )
        }
        "v1" => format!("{:?}", which_v1(x).await),
        "v2" => format!("{:?}", which_v2(x).await),
        other => panic!("unknown kind {other}"),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with ./scripts/test, which starts Redis and an S3 server")
    })
}

/// A namespace (and store prefix) of its own for each test.
fn namespace(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t{}-{}-{test}", pid(), N.fetch_add(1, Ordering::Relaxed))
}

fn config(namespace: &str) -> DistributedConfig {
    let mut config = DistributedConfig::new(
        env("ROUTINE_TEST_REDIS_URL"),
        format!("{}/{namespace}", env("ROUTINE_TEST_S3_URL")),
    );
    config.namespace = namespace.to_owned();
    config.dispatch = DispatchSettings {
        no_worker_wait: Duration::from_secs(20),
        ..DispatchSettings::default()
    };
    config
}

#[test]
#[ignore = "entry point of the worker processes started by the other tests"]
fn worker_process() {
    if std::env::var_os("ROUTINE_TEST_WORKER_LOGS").is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .init();
    }
    let namespace = env("ROUTINE_WORKER_NAMESPACE");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = routine::distributed::connect(config(&namespace))
            .await
            .unwrap();
        let mut worker = WorkerConfig {
            concurrency: 8,
            heartbeat: Duration::from_millis(300),
            claim_idle: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            ..WorkerConfig::default()
        };
        if let Ok(folder) = std::env::var("ROUTINE_WORKER_BLOB_CACHE") {
            worker.blob_cache = folder.into();
        }
        if let Ok(n) = std::env::var("ROUTINE_WORKER_CONCURRENCY") {
            worker.concurrency = n.parse().unwrap();
        }
        if let Ok(seconds) = std::env::var("ROUTINE_WORKER_CLAIM_IDLE_SECS") {
            worker.claim_idle = Duration::from_secs(seconds.parse().unwrap());
        }
        if let Ok(millis) = std::env::var("ROUTINE_WORKER_HEARTBEAT_MS") {
            worker.heartbeat = Duration::from_millis(millis.parse().unwrap());
        }
        if let Ok(deliveries) = std::env::var("ROUTINE_WORKER_MAX_DELIVERIES") {
            worker.max_deliveries = deliveries.parse().unwrap();
        }
        if let Ok(only) = std::env::var("ROUTINE_WORKER_ROUTINES") {
            worker.routines = Some(
                only.split(',')
                    .map(|id| id.parse::<RoutineId>().unwrap())
                    .collect(),
            );
        }
        routine::distributed::worker::serve_until_signalled(engine, worker)
            .await
            .unwrap();
    });
}

/// Worker processes, killed when dropped.
struct Workers(Vec<Child>);

impl Workers {
    fn start(namespace: &str, count: usize, routines: Option<&str>) -> Workers {
        Workers::start_with(namespace, count, routines, &[])
    }

    fn start_with(
        namespace: &str,
        count: usize,
        routines: Option<&str>,
        env: &[(&str, &str)],
    ) -> Workers {
        let children = (0..count)
            .map(|_| {
                let mut command = Command::new(std::env::current_exe().unwrap());
                command
                    .args([
                        "--ignored",
                        "--exact",
                        "worker_process",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("ROUTINE_WORKER_NAMESPACE", namespace)
                    .stdout(Stdio::null())
                    .stderr(if std::env::var_os("ROUTINE_TEST_WORKER_LOGS").is_some() {
                        Stdio::inherit()
                    } else {
                        Stdio::null()
                    });
                if let Some(routines) = routines {
                    command.env("ROUTINE_WORKER_ROUTINES", routines);
                }
                command.envs(env.iter().copied());
                command.spawn().unwrap()
            })
            .collect();
        Workers(children)
    }

    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }

    fn kill(&mut self, pid: u32) {
        let child = self
            .0
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("one of ours");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first worker to report a heartbeat on `broker`.
async fn first_report(broker: &Broker) -> routine::distributed::broker::WorkerInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(info) = broker.workers().await.unwrap().pop() {
            return info;
        }
        assert!(Instant::now() < deadline, "no worker ever reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The panic message of a failed spawned call.
async fn panic_of<T: Send + 'static>(call: tokio::task::JoinHandle<T>) -> String {
    let error = call.await.err().expect("the call should have failed");
    let payload = error.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_of_200_tasks_over_two_workers() {
    let ns = namespace("fan");
    let workers = Workers::start(&ns, 2, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let results = engine.scope(fan_out(200)).await;
    assert_eq!(results.len(), 200);
    for (x, (square, _)) in results.iter().enumerate() {
        assert_eq!(*square, (x * x) as u64);
    }
    let by: std::collections::BTreeSet<u32> = results.iter().map(|(_, pid)| *pid).collect();
    assert!(
        by.iter().all(|p| workers.pids().contains(p)),
        "computed outside the workers: {by:?}"
    );
    assert_eq!(by.len(), 2, "both workers should have taken work");
    assert_eq!(engine.stats().dispatched, 200);

    // Everything is in the shared store now: a second engine finds the root
    // result without dispatching anything.
    let again = routine::distributed::connect(config(&ns)).await.unwrap();
    assert_eq!(again.scope(fan_out(200)).await, results);
    assert_eq!((again.stats().hits, again.stats().dispatched), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_loses_nothing() {
    let ns = namespace("kill");
    let mut workers = Workers::start(&ns, 2, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let run = tokio::spawn(engine.scope(slow_fan_out(4)));
    kill_a_busy_worker(&engine, &mut workers).await;
    let results = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the workflow hung after a worker died")
        .unwrap();
    assert_eq!(results, vec![0, 1, 4, 9]);
}

/// Kills, with SIGKILL, a worker while it runs something.
async fn kill_a_busy_worker(engine: &routine::Engine, workers: &mut Workers) {
    let broker = routine::distributed::broker_of(engine).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        assert!(Instant::now() < deadline, "no worker ever started working");
        let busy = broker
            .workers()
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.routine.is_some());
        if let Some(worker) = busy {
            let pid: u32 = worker.id.split('-').rev().nth(1).unwrap().parse().unwrap();
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    workers.kill(victim);
}

/// A dead worker's work resumes once its heartbeat lapses (three beats of
/// 300 ms here), not after the claim-idle fallback (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_work_resumes_when_its_heartbeat_lapses() {
    let ns = namespace("liveness");
    let mut workers =
        Workers::start_with(&ns, 2, None, &[("ROUTINE_WORKER_CLAIM_IDLE_SECS", "30")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let run = tokio::spawn(engine.scope(slow_fan_out(4)));
    kill_a_busy_worker(&engine, &mut workers).await;
    let killed = Instant::now();
    let results = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the workflow hung after a worker died")
        .unwrap();
    assert_eq!(results, vec![0, 1, 4, 9]);
    // The slow task takes 3 s; its takeover must not wait for claim_idle.
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "resumed {took:?} after the kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_reaches_the_caller_with_the_worker_id() {
    let ns = namespace("boom");
    let workers = Workers::start(&ns, 1, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let message = panic_of(tokio::spawn(engine.scope(call_one("boom".into(), 7)))).await;
    assert!(
        message.contains("task `tname:boom:1.0.0` failed on worker"),
        "{message}"
    );
    assert!(message.contains("panicked: boom 7"), "{message}");
    assert!(
        message.contains(&format!("-{}-", workers.pids()[0])),
        "no worker id: {message}"
    );
    // Nothing was stored for the failed call.
    let store = routine::distributed::ObjectStoreBackend::from_url(&config(&ns).store_url).unwrap();
    use routine::store::Store;
    assert!(store.list(Some("boom"), None).unwrap().is_empty());
}

/// Dropping a call's future cancels its dispatched work: the worker drops
/// the body's future (within a second or two) and frees its slot for the
/// next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_drops_its_body_on_the_worker() {
    let ns = namespace("cancel");
    let _workers = Workers::start_with(&ns, 1, None, &[("ROUTINE_WORKER_CONCURRENCY", "1")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let markers = Markers::of(&ns).await;

    let call = tokio::spawn(engine.scope(wait_patiently(ns.clone())));
    markers.wait_for("started", Duration::from_secs(30)).await;
    call.abort();
    let dropped_at = now_millis();
    let _ = call.await;
    let dropped = markers.wait_for("dropped", Duration::from_secs(5)).await;
    let took = dropped.saturating_sub(dropped_at);
    assert!(
        took < 2_000,
        "the body was dropped {took} ms after its caller gave up"
    );

    // Its slot is free: the worker's one slot runs the next request now.
    let next = tokio::time::timeout(
        Duration::from_secs(20),
        engine.scope(call_one("lonely".into(), 5)),
    )
    .await
    .expect("the worker's slot was not freed");
    assert_eq!(next, "5");
    markers.clear().await;
}

/// The marks a task body leaves in Redis under `{tag}:{what}`.
struct Markers {
    tag: String,
    redis: redis::aio::MultiplexedConnection,
}

impl Markers {
    async fn of(tag: &str) -> Markers {
        let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
        Markers {
            tag: tag.to_owned(),
            redis: client.get_multiplexed_async_connection().await.unwrap(),
        }
    }

    /// The value of mark `what`, once it is set.
    async fn wait_for(&self, what: &str, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let value: Option<u64> = redis::cmd("GET")
                .arg(format!("{}:{what}", self.tag))
                .query_async(&mut self.redis.clone())
                .await
                .unwrap();
            if let Some(value) = value {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "no `{what}` mark after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn clear(&self) {
        let _: () = redis::cmd("DEL")
            .arg(format!("{}:started", self.tag))
            .arg(format!("{}:dropped", self.tag))
            .query_async(&mut self.redis.clone())
            .await
            .unwrap();
    }
}

/// `concurrency = 1` holds across the cluster: six calls over two workers
/// of four slots each never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_holds_across_workers() {
    let ns = namespace("exclusive");
    let workers = Workers::start_with(&ns, 2, None, &[("ROUTINE_WORKER_CONCURRENCY", "4")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let log = format!("{ns}:log");
    let sum = engine.scope(exclusive_fan_out(log.clone(), 6)).await;
    assert_eq!(sum, 15);
    let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(&log)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&log)
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut spans: Vec<(u64, u64, u32)> = entries
        .iter()
        .map(|entry| {
            let parts: Vec<u64> = entry.split('-').map(|n| n.parse().unwrap()).collect();
            (parts[0], parts[1], parts[2] as u32)
        })
        .collect();
    assert_eq!(spans.len(), 6, "{entries:?}");
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two bodies overlapped: {pair:?}");
    }
    // Every body ran on a worker (each of which has four slots).
    let ran_on: std::collections::HashSet<u32> = spans.iter().map(|s| s.2).collect();
    assert!(
        ran_on.iter().all(|p| workers.pids().contains(p)),
        "{spans:?}"
    );
}

/// A worker that stops answering (here: stopped by SIGSTOP after the body
/// started) does not keep its caller forever: the caller gives up once the
/// task's timeout, and a margin, have passed since the worker started it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gives_up_on_a_stuck_worker_after_the_tasks_timeout() {
    let ns = namespace("stuck");
    let workers = Workers::start(&ns, 1, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let markers = Markers::of(&ns).await;

    let call = tokio::spawn(engine.scope(wait_stuck(ns.clone())));
    markers.wait_for("started", Duration::from_secs(30)).await;
    let worker = workers.pids()[0].to_string();
    let _ = Command::new("kill").args(["-STOP", &worker]).status();
    let stopped = Instant::now();
    let message = tokio::time::timeout(Duration::from_secs(20), panic_of(call))
        .await
        .expect("the caller still waits on a stuck worker");
    let _ = Command::new("kill").args(["-CONT", &worker]).status();
    assert!(
        message.contains("task `tname:stuck:1.0.0` failed on worker"),
        "{message}"
    );
    assert!(
        message.contains("timed out: the worker started it"),
        "{message}"
    );
    // A 1 s timeout and a 5 s margin from the start, checked every second.
    assert!(
        stopped.elapsed() < Duration::from_secs(9),
        "{:?}",
        stopped.elapsed()
    );
    markers.clear().await;
}

/// A routine waiting on its dispatched sub-routine gives its worker's slot
/// back: a workflow five levels deep completes on two workers that run one
/// routine at a time each (without that, the third level would wait
/// forever for a slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_workflow_completes_on_workers_of_concurrency_one() {
    let ns = namespace("deep");
    let workers = Workers::start_with(&ns, 2, None, &[("ROUTINE_WORKER_CONCURRENCY", "1")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let run = engine.scope(deep(5, ns.clone()));
    let (depth, pids) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the workflow hung: a waiting routine kept its slot");
    assert_eq!(depth, 5);
    // Levels 4 to 0 ran on the workers; level 5, the root, here.
    assert_eq!(pids.len(), 6);
    assert_eq!(pids[5], pid());
    assert!(
        pids[..5].iter().all(|p| workers.pids().contains(p)),
        "{pids:?}"
    );
    assert_eq!(engine.stats().dispatched, 1, "the root dispatched one call");
}

/// `refuses` returns `Result<u64, String>`: its `Err` has serde's traits,
/// so it reaches the workflow typed, as it would in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_err_on_a_worker_reaches_the_caller_typed() {
    let ns = namespace("err");
    let _workers = Workers::start(&ns, 1, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let answer = engine.scope(call_one("refuses".into(), 3)).await;
    assert_eq!(answer, r#"Err("refusing 3")"#);
    assert_eq!(
        engine.stats().dispatched,
        0,
        "a failure is not a stored result"
    );
}

/// The workflows of `tests/execution.rs`, their sub-routines on two worker
/// processes: the same answers, attempt counts, typed errors and timeouts
/// as in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_options_behave_on_workers_as_in_process() {
    let ns = namespace("control");
    let _workers = Workers::start(&ns, 2, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    for case in workflows::CASES {
        let call = engine.scope(workflows::control(case.into(), format!("{ns}-{case}")));
        let answer = match tokio::spawn(call).await {
            Ok(answer) => Ok(answer),
            Err(e) => Err(routine::invoke::panic_message(e.into_panic())),
        };
        match (workflows::expected(case), answer) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "{case}"),
            (Err(want), Err(got)) => {
                assert!(got.contains(want), "{case}: {got}");
                assert!(got.contains("failed on worker"), "{case}: {got}");
            }
            (want, got) => panic!("{case}: expected {want:?}, got {got:?}"),
        }
    }
    // An error type without serde's traits crosses as its message, in a
    // panic naming the worker.
    let call = engine.scope(workflows::control("opaque".into(), ns.clone()));
    let message = panic_of(tokio::spawn(call)).await;
    assert!(
        message.contains("task `tname:ctl-opaque:1.0.0` failed on worker"),
        "{message}"
    );
    assert!(message.contains("opaque: no 1"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_no_worker_serves_fails_after_the_configured_wait() {
    let ns = namespace("lonely");
    let _workers = Workers::start(&ns, 1, Some("tname:square-on:1.0.0"));
    let mut config = config(&ns);
    config.dispatch.no_worker_wait = Duration::from_secs(2);
    let engine = routine::distributed::connect(config).await.unwrap();
    let started = Instant::now();
    let message = panic_of(tokio::spawn(engine.scope(call_one("lonely".into(), 1)))).await;
    assert!(
        message.contains("no worker serves `tname:lonely:1.0.0`"),
        "{message}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_clear_error_without_the_password() {
    let mut config = config(&namespace("down"));
    config.broker_url = "redis://:hunter2@127.0.0.1:1/0".into();
    config.retry = Retry {
        attempts: 3,
        first_pause: Duration::from_millis(10),
    };
    let error = routine::distributed::connect(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot reach the broker at redis://:***@127.0.0.1:1/0 after 3 attempts"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
    let direct = Broker::connect(
        "redis://127.0.0.1:1",
        "x",
        Retry {
            attempts: 1,
            first_pause: Duration::ZERO,
        },
    )
    .await;
    assert!(direct.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_of_different_versions_share_a_broker() {
    let ns = namespace("versions");
    let old = Workers::start(&ns, 1, Some("tname:which:1.0.0"));
    let new = Workers::start(&ns, 1, Some("tname:which:2.0.0"));
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let v1 = engine.scope(call_one("v1".into(), 5)).await;
    let v2 = engine.scope(call_one("v2".into(), 5)).await;
    assert!(
        v1.contains("v1:5") && v1.contains(&old.pids()[0].to_string()),
        "{v1}"
    );
    assert!(
        v2.contains("v2:5") && v2.contains(&new.pids()[0].to_string()),
        "{v2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_policy_dispatches_nothing() {
    let ns = namespace("local");
    let mut config = config(&ns);
    config.policy = Policy::Local;
    let engine = routine::distributed::connect(config).await.unwrap();
    let results = engine.scope(fan_out(5)).await;
    assert!(results.iter().all(|(_, p)| *p == pid()));
    assert_eq!(engine.stats().dispatched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_readable() {
    let ns = namespace("status");
    let workers = Workers::start(&ns, 1, Some("tname:square-on:1.0.0"));
    let broker = Broker::connect(&env("ROUTINE_TEST_REDIS_URL"), &ns, Retry::default())
        .await
        .unwrap();
    let info = first_report(&broker).await;
    assert_eq!(info.routines, vec!["tname:square-on:1.0.0".to_string()]);
    assert!(
        matches!(info.status.as_str(), "INITIALIZING" | "IDLE"),
        "{info:?}"
    );
    assert!(info.id.contains(&format!("-{}-", workers.pids()[0])));
    assert!(info.last_seen.elapsed().unwrap_or_default() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_keeps_killing_workers_is_dead_lettered() {
    let ns = namespace("deadly");
    let _workers = Workers::start_with(&ns, 3, None, &[("ROUTINE_WORKER_MAX_DELIVERIES", "2")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let call = tokio::spawn(engine.scope(call_one("deadly".into(), 1)));
    let message = tokio::time::timeout(Duration::from_secs(60), panic_of(call))
        .await
        .expect("the caller hung while workers died");
    assert!(message.contains("delivered 3 times"), "{message}");
    assert!(message.contains(&format!("{ns}:dead")), "{message}");
    let broker = Broker::connect(&env("ROUTINE_TEST_REDIS_URL"), &ns, Retry::default())
        .await
        .unwrap();
    let letters = broker.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    assert_eq!(letters[0].task, "deadly@1.0.0");
    assert_eq!(letters[0].deliveries, 3);
    assert_eq!(letters[0].key.len(), 64, "the call's key: {letters:?}");
    let age = SystemTime::now().duration_since(letters[0].at).unwrap();
    assert!(
        age < Duration::from_secs(120),
        "set aside just now: {age:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_travel_through_the_store_not_the_broker() {
    let ns = namespace("large");
    let _workers = Workers::start(&ns, 1, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let summary = engine.scope(call_one("large".into(), 3)).await;
    let expected: Vec<u8> = (0..12u32 << 20)
        .map(|i| 3u8.wrapping_add((i % 251) as u8))
        .collect();
    let sum: u64 = expected.iter().map(|b| u64::from(*b)).sum();
    assert_eq!(summary, format!("{} {sum}", expected.len()));
    assert_eq!(engine.stats().dispatched, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_cleanly() {
    let ns = namespace("term");
    let mut workers = Workers::start(&ns, 1, Some("tname:square-on:1.0.0"));
    let broker = Broker::connect(&env("ROUTINE_TEST_REDIS_URL"), &ns, Retry::default())
        .await
        .unwrap();
    first_report(&broker).await;
    let exited = terminate(&mut workers.0[0], Duration::from_secs(20));
    assert!(exited
        .expect("the worker did not stop on SIGTERM")
        .success());
    assert!(
        broker.workers().await.unwrap().is_empty(),
        "a stopped worker still reports"
    );
}

/// Sends SIGTERM to `child`; its exit status if it exits within `limit`.
fn terminate(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An idle worker whose broker is gone still exits within its grace (5 s
/// in `worker_process`) after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_within_its_grace_when_the_broker_is_gone() {
    let redis = PrivateRedis::start(free_port());
    let ns = namespace("term-gone");
    let mut workers =
        Workers::start_with(&ns, 1, None, &[("ROUTINE_TEST_REDIS_URL", &redis.url())]);
    let broker = Broker::connect(&redis.url(), &ns, Retry::default())
        .await
        .unwrap();
    first_report(&broker).await;
    drop(redis);
    // Long enough for the worker to find its reads failing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let exited = terminate(&mut workers.0[0], Duration::from_secs(5));
    assert!(
        exited.is_some(),
        "the worker was still running {:?} after SIGTERM",
        started.elapsed()
    );
}

/// A request whose reply cannot be written (its reply stream is a plain
/// string key) is dead-lettered once and acknowledged; the work beside it
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_be_answered_is_dead_lettered_once() {
    let ns = namespace("poison");
    let _workers = Workers::start_with(&ns, 1, None, &[("ROUTINE_WORKER_MAX_DELIVERIES", "1")]);
    let broker = Broker::connect(&env("ROUTINE_TEST_REDIS_URL"), &ns, Retry::default())
        .await
        .unwrap();
    first_report(&broker).await;
    let mut connection = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let poisoned = format!("{ns}:poisoned-reply");
    redis::cmd("SET")
        .arg(&poisoned)
        .arg("not a stream")
        .query::<()>(&mut connection)
        .unwrap();
    let mut arguments = Vec::new();
    routine::codec::encode_into(&mut arguments, &7u64).unwrap();
    let key = routine::Key::of("square-on", "1.0.0", &(7u64,)).unwrap();
    let work = format!("{ns}:work:square-on:1.0.0");
    redis::cmd("XADD")
        .arg(&work)
        .arg("*")
        .arg("request")
        .arg("poisoned-1")
        .arg("key")
        .arg(key.to_hex())
        .arg("task")
        .arg("square-on")
        .arg("version")
        .arg("1.0.0")
        .arg("args")
        .arg(arguments)
        .arg("reply")
        .arg(&poisoned)
        .query::<String>(&mut connection)
        .unwrap();

    let dead_letters = |connection: &mut redis::Client| -> u64 {
        redis::cmd("XLEN")
            .arg(format!("{ns}:dead"))
            .query(connection)
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead_letters(&mut connection) == 0 {
        assert!(
            Instant::now() < deadline,
            "the request was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several claim rounds later (claim_idle is 1 s), still one dead
    // letter, and nothing left pending.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        dead_letters(&mut connection),
        1,
        "dead-lettered more than once"
    );
    let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(&work)
        .arg("workers")
        .query(&mut connection)
        .unwrap();
    assert_eq!(
        pending.count(),
        0,
        "the poisoned request was never acknowledged"
    );

    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    assert!(engine
        .scope(call_one("v1".into(), 3))
        .await
        .contains("v1:3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_calls_from_two_processes_are_dispatched_once() {
    let ns = namespace("dedup");
    let _workers = Workers::start(&ns, 2, None);
    // Two engines share nothing in memory: as two caller processes would.
    let first = routine::distributed::connect(config(&ns)).await.unwrap();
    let second = routine::distributed::connect(config(&ns)).await.unwrap();
    let counter = format!("{ns}:runs");
    let a = tokio::spawn(first.scope(count_once(counter.clone())));
    let b = tokio::spawn(second.scope(count_once(counter.clone())));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a, b), (1, 1), "both callers get the one run's result");
    let mut connection = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let runs: u64 = redis::cmd("GET")
        .arg(&counter)
        .query(&mut connection)
        .unwrap();
    assert_eq!(runs, 1, "the body ran on a worker once");
    assert_eq!(first.stats().dispatched + second.stats().dispatched, 1);
}

/// A Redis server of this test's own, to restart.
struct PrivateRedis {
    port: u16,
    process: Child,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let process = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed (./scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { port, process }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_resumes_after_the_broker_restarts() {
    let port = free_port();
    let redis = PrivateRedis::start(port);
    let ns = namespace("restart");
    let mut workers =
        Workers::start_with(&ns, 1, None, &[("ROUTINE_TEST_REDIS_URL", &redis.url())]);
    let mut config = config(&ns);
    config.broker_url = redis.url();
    let engine = routine::distributed::connect(config).await.unwrap();
    assert!(engine
        .scope(call_one("v1".into(), 1))
        .await
        .contains("v1:1"));

    // The broker dies and comes back empty (no persistence).
    drop(redis);
    let _redis = PrivateRedis::start(port);
    let resumed = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::spawn(engine.scope(call_one("v1".into(), 2))),
    )
    .await
    .expect("the call hung after the broker restarted")
    .unwrap();
    assert!(resumed.contains("v1:2"), "{resumed}");
    assert!(
        workers.0[0].try_wait().unwrap().is_none(),
        "the worker died with the broker"
    );
    workers.kill(workers.pids()[0]);
}

#[routine::task(name = "traced-square", version = "1.0.0")]
async fn traced_square(counter: String, x: u64) -> u64 {
    let _ = counter;
    x * x
}

/// Counts each completion of `traced-square` in Redis, with the process it
/// fired in.
#[routine::trigger(on = "traced-square")]
async fn count_completion(done: routine::Completion<u64>) -> Result<(), String> {
    let counter = done.arguments["counter"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).map_err(|e| e.to_string())?;
    let mut connection = client.get_connection().map_err(|e| e.to_string())?;
    redis::cmd("RPUSH")
        .arg(&counter)
        .arg(format!("{}:{}", pid(), done.key.short()))
        .query::<()>(&mut connection)
        .map_err(|e| e.to_string())
}

/// Runs on a worker, and calls two squares of its own (dispatched again).
#[routine::task(name = "traced-pair", version = "1.0.0")]
async fn traced_pair(counter: String, x: u64) -> u64 {
    traced_square(counter.clone(), x).await + traced_square(counter, x + 1).await
}

#[routine::task(name = "traced-fan", version = "1.0.0")]
async fn traced_fan(counter: String, n: u64) -> u64 {
    let calls: Vec<_> = (0..n)
        .step_by(2)
        .map(|x| routine::spawn(traced_pair(counter.clone(), x)))
        .collect();
    let mut sum = 0;
    for call in calls {
        sum += call.await.expect("a sub-routine failed");
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_fire_on_workers_and_lineage_spans_processes() {
    let ns = namespace("traced");
    let workers = Workers::start(&ns, 2, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let counter = format!("{ns}:completions");
    assert_eq!(
        engine.scope(traced_fan(counter.clone(), 4)).await,
        1 + 4 + 9
    );

    // Each completion fired once, on a worker (the caller only dispatched).
    let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let mut connection = client.get_connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let fired: Vec<String> = loop {
        let fired: Vec<String> = redis::cmd("LRANGE")
            .arg(&counter)
            .arg(0)
            .arg(-1)
            .query(&mut connection)
            .unwrap();
        if fired.len() >= 4 || Instant::now() > deadline {
            break fired;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(fired.len(), 4, "{fired:?}");
    let keys: std::collections::BTreeSet<&str> =
        fired.iter().map(|f| f.split(':').nth(1).unwrap()).collect();
    assert_eq!(keys.len(), 4, "one completion per key: {fired:?}");
    assert!(
        fired.iter().all(|f| workers
            .pids()
            .contains(&f.split(':').next().unwrap().parse().unwrap())),
        "fired outside the workers: {fired:?}"
    );
    assert_eq!(engine.stats().triggers_fired, 0);

    // The run's tree joins the caller's part and the workers' parts: each
    // pair as the worker that ran it recorded it, each square (a worker ran
    // it alone, so no part of its own) as the pair's dispatch.
    let runs = routine::lineage::runs(engine.store()).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let tree = routine::lineage::run_tree(engine.store(), runs[0].id).unwrap();
    let root = &tree.calls[tree.roots()[0]];
    assert_eq!(root.call.name, "traced-fan");
    assert_eq!(root.children.len(), 2);
    for &pair in &root.children {
        let node = &tree.calls[pair];
        assert_eq!(
            (node.call.name.as_str(), node.call.outcome.as_str()),
            ("traced-pair", "computed")
        );
        assert!(node.on_worker, "{node:?}");
        assert_ne!(node.call.process, root.call.process);
        let squares: Vec<(&str, &str)> = node
            .children
            .iter()
            .map(|&c| {
                (
                    tree.calls[c].call.name.as_str(),
                    tree.calls[c].call.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(squares, [("traced-square", "dispatched"); 2]);
    }
    // Its totals count every call computed, here or on a worker: the
    // root, two pairs, four squares (as `runs show` draws them).
    assert_eq!(tree.calls.len(), 7);
    assert_eq!(
        (runs[0].computed, runs[0].from_storage, runs[0].failed),
        (7, 0, 0),
        "{runs:?}"
    );
}

/// Creates or deletes a bucket of the test's S3 server (moto takes unsigned
/// requests), through Python's standard library.
fn bucket(method: &str, name: &str) {
    let url = format!("{}/{name}", env("AWS_ENDPOINT"));
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method=sys.argv[2]))",
            &url,
            method,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "{method} {url}");
}

/// A store URL whose bucket does not exist fails at connect, naming the
/// store, before any work is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_fails_at_connect() {
    let ns = namespace("missing-bucket");
    let mut config = config(&ns);
    config.store_url = format!("s3://no-such-bucket-{ns}/results");
    let error = routine::distributed::connect(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot be used"), "{error}");
    assert!(error.contains(&format!("no-such-bucket-{ns}")), "{error}");
}

/// A worker whose store stops taking results reports a failure that names
/// the store; the caller does not run the work itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_store_reports_it() {
    let ns = namespace("lost-bucket");
    let lost = format!("lost-{}", ns.to_lowercase());
    bucket("PUT", &lost);
    let _workers = Workers::start_with(
        &ns,
        1,
        None,
        &[("ROUTINE_TEST_S3_URL", &format!("s3://{lost}"))],
    );
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    first_report(&routine::distributed::broker_of(&engine).unwrap()).await;
    // The worker connected (its probe passed); now its bucket goes away.
    bucket("DELETE", &lost);
    let call = tokio::spawn(engine.scope(call_one("v1".into(), 5)));
    let message = tokio::time::timeout(Duration::from_secs(60), panic_of(call))
        .await
        .expect("the caller hung");
    assert!(message.contains("could not be stored"), "{message}");
    assert!(message.contains(&lost), "{message}");
    assert_eq!(engine.stats().misses, 1, "only the workflow ran here");
}

/// A fresh dispatched call costs two store requests: the caller's lookup
/// and the worker's write. The worker trusts the caller's miss, and a small
/// result comes back with the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_dispatched_call_makes_two_store_requests() {
    let ns = namespace("two-requests");
    let config = config(&ns);
    let open = || {
        routine::store::Counting::over(routine::distributed::open_url(&config.store_url).unwrap())
    };
    let (caller_store, worker_store) = (open(), open());

    // A worker in this process, on a store of its own that counts.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let (config, store) = (config.clone(), worker_store.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let engine = routine::distributed::attach(routine::Engine::builder(store), &config)
                    .await
                    .unwrap();
                let settings = WorkerConfig {
                    routines: Some(vec!["tname:which:1.0.0".parse().unwrap()]),
                    ..WorkerConfig::default()
                };
                routine::distributed::worker::serve(engine, settings, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        })
    };
    let engine =
        routine::distributed::attach(routine::Engine::builder(caller_store.clone()), &config)
            .await
            .unwrap();
    first_report(&routine::distributed::broker_of(&engine).unwrap()).await;
    let worker_before = worker_store.counts();

    let answer = engine.scope(call_one("v1".into(), 11)).await;
    assert!(answer.contains("v1:11"), "{answer}");
    assert_eq!(engine.stats().dispatched, 1);
    // The caller: its lookups of `call-one` and of `which`, and the writes
    // of `call-one`'s own result and of the run's record; no read of the
    // dispatched result.
    assert_eq!(caller_store.counts(), (2, 2), "caller (reads, writes)");
    // The worker: the write of the result, no lookup.
    let (reads, writes) = worker_store.counts();
    assert_eq!(
        (reads - worker_before.0, writes - worker_before.1),
        (0, 1),
        "worker (reads, writes)"
    );
    let _ = stop.send(());
    worker.join().unwrap();
}

/// Redis killed and restarted empty while a workflow's sub-calls are in
/// flight (16 running on two workers, 8 queued): the caller notices the
/// lost claims, sends again what the broker lost, and the workflow
/// completes with correct results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_in_flight_survives_a_broker_restart() {
    let port = free_port();
    let redis = PrivateRedis::start(port);
    let ns = namespace("restart-mid");
    let _workers = Workers::start_with(&ns, 2, None, &[("ROUTINE_TEST_REDIS_URL", &redis.url())]);
    let mut config = config(&ns);
    config.broker_url = redis.url();
    // Claims renewed every second: a lost one is noticed within a second.
    config.dispatch.claim_ttl = Duration::from_secs(3);
    let engine = routine::distributed::connect(config).await.unwrap();
    let broker = routine::distributed::broker_of(&engine).unwrap();
    while broker.workers().await.unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = tokio::spawn(engine.scope(slow_fan_out(24)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(redis);
    let _redis = PrivateRedis::start(port);
    let results = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the workflow hung after the broker restarted")
        .unwrap();
    assert_eq!(results, (0..24u64).map(|x| x * x).collect::<Vec<_>>());
}

#[routine::task(name = "checksum", version = "1.0.0")]
async fn checksum(data: serde_bytes::ByteBuf, salt: u64) -> u64 {
    data.iter().map(|b| u64::from(*b)).sum::<u64>() + salt
}

#[routine::task(name = "checksums", version = "1.0.0")]
async fn checksums(data: serde_bytes::ByteBuf) -> Vec<u64> {
    let calls: Vec<_> = (0..4)
        .map(|salt| routine::spawn(checksum(data.clone(), salt)))
        .collect();
    let mut sums = Vec::new();
    for call in calls {
        sums.push(call.await.expect("a sub-routine failed"));
    }
    sums
}

/// Bytes Redis has read from its clients so far.
fn redis_input_bytes(url: &str) -> u64 {
    let mut connection = redis::Client::open(url).unwrap();
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut connection)
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_net_input_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_net_input_bytes")
}

/// A 100 MB argument given to four sub-calls crosses the broker not at all:
/// it is uploaded once to the shared store, and each worker downloads it at
/// most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_argument_travels_by_reference() {
    let redis = PrivateRedis::start(free_port());
    let ns = namespace("large-argument");
    let cache = tempfile::tempdir().unwrap();
    let _workers = Workers::start_with(
        &ns,
        2,
        None,
        &[
            ("ROUTINE_TEST_REDIS_URL", &redis.url()),
            ("ROUTINE_WORKER_BLOB_CACHE", cache.path().to_str().unwrap()),
            // Liveness is not what this test is about: a worker decoding
            // 100 MB on a loaded two-core machine may miss a 300 ms beat
            // three times, and see its work taken over.
            ("ROUTINE_WORKER_HEARTBEAT_MS", "1000"),
            ("ROUTINE_WORKER_CLAIM_IDLE_SECS", "30"),
        ],
    );
    let mut config = config(&ns);
    config.broker_url = redis.url();
    let engine = routine::distributed::connect(config).await.unwrap();
    let broker = routine::distributed::broker_of(&engine).unwrap();
    while broker.workers().await.unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data: Vec<u8> = (0..100_000_000u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let before = redis_input_bytes(&redis.url());
    let sums = engine
        .scope(checksums(serde_bytes::ByteBuf::from(data)))
        .await;
    let through_redis = redis_input_bytes(&redis.url()) - before;
    assert_eq!(sums, (0..4).map(|salt| sum + salt).collect::<Vec<_>>());
    // Four copies of the argument would be 400 MB; what went through is
    // the requests, replies and the cluster's background chatter
    // (heartbeats, claim rounds), which grows with the test's length.
    assert!(
        through_redis < 4 << 20,
        "{through_redis} bytes went through Redis"
    );
    // Heartbeats report the downloads (every second here).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let downloads: Vec<u64> = broker
        .workers()
        .await
        .unwrap()
        .iter()
        .map(|w| w.downloads)
        .collect();
    assert!(
        downloads.iter().all(|&d| d <= 1) && downloads.iter().sum::<u64>() >= 1,
        "downloads per worker: {downloads:?}"
    );
}

/// Sums a list with three units: each sums a third, `all_reduce` adds them.
#[routine::task(name = "gang-sum", version = "1.0.0", units = 3)]
async fn gang_sum(unit: routine::Unit<Vec<u64>, u64>) {
    let all = match unit.rank() {
        0 => Some(unit.receive_input().await),
        _ => None,
    };
    let all: Vec<u64> = unit.broadcast(0, all).await;
    let mine: u64 = all
        .iter()
        .skip(unit.rank())
        .step_by(unit.unit_count())
        .sum();
    let total = unit.all_reduce(mine, |a, b| a + b).await;
    if unit.rank() == 0 {
        unit.send_output(total);
    }
}

/// A workflow awaiting a multi-unit call: the call is dispatched.
#[routine::task(name = "gang-workflow", version = "1.0.0")]
async fn gang_workflow(n: u64) -> u64 {
    gang_sum((1..=n).collect()).await
}

/// A multi-unit call awaited by a workflow on a worker: its units run as a
/// gang on the workers' slots, right, memoized, and recorded with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatched_multi_unit_call_runs_its_units_on_workers() {
    let ns = namespace("gang");
    let _workers = Workers::start(&ns, 2, None);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    assert_eq!(engine.scope(gang_workflow(100)).await, 5050);
    assert_eq!(engine.stats().dispatched, 1);
    let runs = routine::lineage::runs(engine.store()).unwrap();
    let tree = routine::lineage::run_tree(engine.store(), runs[0].id).unwrap();
    let gang = tree
        .calls
        .iter()
        .find(|n| n.call.name == "gang-sum")
        .expect("the gang's call is in the run");
    let ranks: Vec<u32> = gang.units.iter().map(|u| u.rank).collect();
    assert_eq!(ranks, [0, 1, 2], "{tree:?}");
    assert!(
        gang.units.iter().all(|u| u.ended == "returned"),
        "{:?}",
        gang.units
    );
    let root = &tree.calls[tree.roots()[0]];
    assert!(
        gang.units
            .iter()
            .all(|u| !u.process.starts_with(&root.call.process)),
        "the units ran on workers: {:?}",
        gang.units
    );
    // A hit everywhere the second time.
    let again = routine::distributed::connect(config(&ns)).await.unwrap();
    assert_eq!(again.scope(gang_workflow(100)).await, 5050);
    assert_eq!(again.stats().hits, 1);
    assert_eq!(gang_keys_left(&ns).await, Vec::<String>::new());
}

fn append_line(path: &str, line: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

/// A list to sort, and the file where each unit logs its start.
type LoggedList = (String, Vec<u64>);
/// The sorted list, and the ranks rank 0 heard from, in the order heard.
type SortedAndRanks = (Vec<u64>, Vec<usize>);

/// The design's parallel sort, on workers: rank 0 splits the list, every
/// unit sorts a part (logging its rank and process), rank 0 gathers the
/// parts and the ranks with `receive_many`.
#[routine::task(name = "gang-sort", version = "1.0.0", units = 4)]
async fn gang_sort(unit: routine::Unit<LoggedList, SortedAndRanks>) {
    let n = unit.unit_count();
    let (log, parts) = match unit.rank() {
        0 => {
            let (log, all) = unit.receive_input().await;
            let mut parts = vec![Vec::new(); n];
            for (i, x) in all.into_iter().enumerate() {
                parts[i % n].push(x);
            }
            (Some(log), parts)
        }
        _ => (None, Vec::new()),
    };
    let log: String = unit.broadcast(0, log).await;
    append_line(&log, &format!("{} {}", unit.rank(), std::process::id()));
    if unit.rank() == 0 {
        for (r, part) in parts.iter().enumerate().skip(1) {
            unit.send(r, "part", part).await;
        }
        let mut all = parts[0].clone();
        for part in unit.receive_many::<Vec<u64>>(1..n, "sorted").await {
            all.extend(part);
        }
        all.sort_unstable();
        let ranks = unit.receive_many::<usize>((1..n).rev(), "rank").await;
        unit.send_output((all, ranks));
    } else {
        let mut mine: Vec<u64> = unit.receive(0, "part").await;
        mine.sort_unstable();
        unit.send(0, "sorted", &mine).await;
        unit.send(0, "rank", &unit.rank()).await;
    }
}

/// The ranks and processes a gang's log holds, one line per unit started,
/// in the order they started.
fn logged_units(log: &std::path::Path) -> Vec<(usize, u32)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (rank, pid) = line.split_once(' ').unwrap();
            (rank.parse().unwrap(), pid.parse().unwrap())
        })
        .collect()
}

/// What a namespace keeps in Redis of its gangs: its reservations, and its
/// workers' unit streams holding entries.
async fn gang_keys_left(ns: &str) -> Vec<String> {
    let client = redis::Client::open(env("ROUTINE_TEST_REDIS_URL")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // The coordinator ends an attempt off the caller's path: a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = Vec::new();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{ns}:*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        for key in keys {
            if key.ends_with(":gang-slots")
                || key.ends_with(":gangs")
                || key.ends_with(":gangs-waiting")
            {
                left.push(key);
            } else if key.contains(":units:") {
                let entries: u64 = redis::cmd("XLEN")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                if entries > 0 {
                    left.push(format!("{key} ({entries} entries)"));
                }
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The parallel sort runs its four units on two workers of two slots: the
/// right answer, each rank once, on both workers, values in rank order;
/// then a hit that runs no unit; nothing of the gang left in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parallel_sort_runs_as_one_gang_across_two_workers() {
    let ns = namespace("gang-sort");
    let workers = Workers::start_with(&ns, 2, None, &[("ROUTINE_WORKER_CONCURRENCY", "2")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("units.log");
    let input: Vec<u64> = (0..1000).map(|i| (i * 7919) % 1009).collect();
    let mut expected = input.clone();
    expected.sort_unstable();
    let (sorted, ranks) = engine
        .scope(gang_sort((log.display().to_string(), input.clone())))
        .await;
    assert_eq!(sorted, expected);
    assert_eq!(
        ranks,
        [3, 2, 1],
        "receive_many gives the values in the order of its ranks"
    );
    let mut units = logged_units(&log);
    units.sort_unstable();
    assert_eq!(
        units.iter().map(|u| u.0).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "each rank once: {units:?}"
    );
    let mut pids: Vec<u32> = units.iter().map(|u| u.1).collect();
    pids.sort_unstable();
    pids.dedup();
    let mut expected_pids = workers.pids();
    expected_pids.sort_unstable();
    assert_eq!(pids, expected_pids, "two units on each worker");
    // A hit runs no unit.
    let again = engine
        .scope(gang_sort((log.display().to_string(), input)))
        .await;
    assert_eq!(again.0, expected);
    assert_eq!(logged_units(&log).len(), 4);
    assert_eq!(engine.stats().hits, 1);
    assert_eq!(gang_keys_left(&ns).await, Vec::<String>::new());
}

/// Rank 1 sends rank 0 a message of `n` bytes.
#[routine::task(name = "gang-big", version = "1.0.0", units = 2)]
async fn gang_big(unit: routine::Unit<u64, (u64, u64)>) {
    if unit.rank() == 0 {
        let n = unit.receive_input().await;
        unit.send(1, "n", &n).await;
        let big: serde_bytes::ByteBuf = unit.receive(1, "big").await;
        let sum = big.iter().map(|&b| u64::from(b)).sum();
        unit.send_output((big.len() as u64, sum));
    } else {
        let n: u64 = unit.receive(0, "n").await;
        let big: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        unit.send(0, "big", &serde_bytes::ByteBuf::from(big)).await;
    }
}

/// A 64 MiB message between units on two workers arrives whole (through
/// the shared store), and the store keeps no copy of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_between_workers_arrives_whole() {
    let ns = namespace("gang-big");
    let _workers = Workers::start_with(&ns, 2, None, &[("ROUTINE_WORKER_CONCURRENCY", "1")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let n: u64 = 64 << 20;
    let expected: u64 = (0..n).map(|i| i % 251).sum();
    assert_eq!(engine.scope(gang_big(n)).await, (n, expected));
    let parcels = engine
        .store()
        .list(Some(routine::distributed::PARCELS), None)
        .unwrap();
    assert!(parcels.is_empty(), "parcels left: {parcels:?}");
    assert_eq!(gang_keys_left(&ns).await, Vec::<String>::new());
}

/// Two gangs of three on two workers of two slots: four slots, so one
/// gang runs, then the other; neither holds slots waiting for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gangs_of_three_on_four_slots_both_complete() {
    let ns = namespace("gang-pair");
    let _workers = Workers::start_with(&ns, 2, None, &[("ROUTINE_WORKER_CONCURRENCY", "2")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let (a, b) = engine
        .scope(async { tokio::join!(gang_sum((1..=10).collect()), gang_sum((1..=20).collect())) })
        .await;
    assert_eq!((a, b), (55, 210));
    assert_eq!(gang_keys_left(&ns).await, Vec::<String>::new());
}

/// Rank 2 panics; the others wait for a message that never comes.
#[routine::task(name = "gang-panic", version = "1.0.0", units = 3)]
async fn gang_panic(unit: routine::Unit<u64, u64>) {
    if unit.rank() == 2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        panic!("unit two gives up");
    }
    let never: u64 = unit.receive(2, "never").await;
    if unit.rank() == 0 {
        unit.send_output(never);
    }
}

/// A unit's panic fails the call, naming the rank and the worker, and its
/// peers are dropped at once: the workers are idle again, nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_units_panic_on_a_worker_fails_the_call_and_drops_its_peers() {
    let ns = namespace("gang-panic");
    let _workers = Workers::start_with(&ns, 2, None, &[("ROUTINE_WORKER_CONCURRENCY", "2")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let started = Instant::now();
    let message = panic_of(tokio::spawn(engine.clone().scope(gang_panic(1)))).await;
    assert!(
        message.contains("unit 2 of 3 panicked on worker") && message.contains("unit two gives up"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    workers_idle(&ns, 2, Duration::from_secs(5)).await;
    assert_eq!(gang_keys_left(&ns).await, Vec::<String>::new());
}

/// Waits for ever: a gang only a timeout or its caller ends.
#[routine::task(name = "gang-forever", version = "1.0.0", units = 2, timeout = "2s")]
async fn gang_forever(unit: routine::Unit<u64, u64>) {
    let never: u64 = unit.receive(1 - unit.rank(), "never").await;
    if unit.rank() == 0 {
        unit.send_output(never);
    }
}

/// Waits until no worker of `ns` runs anything, or fails after `limit`.
async fn workers_idle(ns: &str, count: usize, limit: Duration) {
    let broker = Broker::connect(&env("ROUTINE_TEST_REDIS_URL"), ns, Retry::default())
        .await
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let workers = broker.workers().await.unwrap();
        if workers.len() == count && workers.iter().all(|w| w.routine.is_none()) {
            return;
        }
        assert!(Instant::now() < deadline, "units still run: {workers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gang's `timeout` bounds the whole gang on workers, and dropping the
/// caller's future drops every unit: the workers are idle again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gangs_timeout_and_its_callers_drop_end_every_unit() {
    let ns = namespace("gang-forever");
    let _workers = Workers::start_with(&ns, 2, None, &[("ROUTINE_WORKER_CONCURRENCY", "1")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let started = Instant::now();
    let message = panic_of(tokio::spawn(engine.clone().scope(gang_forever(1)))).await;
    assert!(message.contains("timed out"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    workers_idle(&ns, 2, Duration::from_secs(5)).await;
    // Dropped by its caller once its units run.
    let call = tokio::spawn(engine.clone().scope(gang_forever(2)));
    let broker = Broker::connect(&env("ROUTINE_TEST_REDIS_URL"), &ns, Retry::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.gangs().await.unwrap().running.is_empty() {
        assert!(Instant::now() < deadline, "the gang did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    let _ = call.await;
    workers_idle(&ns, 2, Duration::from_secs(5)).await;
    assert_eq!(gang_keys_left(&ns).await, Vec::<String>::new());
}

/// Both units log their start, wait until the test has killed a worker
/// (a file says so), then meet: the first attempt loses a unit with its
/// worker, the second completes.
#[routine::task(name = "gang-survivor", version = "1.0.0", units = 2)]
async fn gang_survivor(unit: routine::Unit<String, u32>) {
    let dir = match unit.rank() {
        0 => Some(unit.receive_input().await),
        _ => None,
    };
    let dir: String = unit.broadcast(0, dir).await;
    let dir = std::path::Path::new(&dir);
    append_line(
        &dir.join("units.log").display().to_string(),
        &format!("{} {}", unit.rank(), std::process::id()),
    );
    while !dir.join("killed").exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let met = unit.all_reduce(1u32, |a, b| a + b).await;
    if unit.rank() == 0 {
        unit.send_output(met);
    }
}

/// A worker SIGKILLed mid-gang: the attempt ends when its heartbeat
/// lapses, and the gang runs again on the workers left (three workers of
/// one slot: two remain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_whose_worker_is_killed_runs_again_on_the_workers_left() {
    let ns = namespace("gang-kill");
    let mut workers = Workers::start_with(&ns, 3, None, &[("ROUTINE_WORKER_CONCURRENCY", "1")]);
    let engine = routine::distributed::connect(config(&ns)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("units.log");
    let call = tokio::spawn(
        engine
            .clone()
            .scope(gang_survivor(dir.path().display().to_string())),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while logged_units(&log).len() < 2 {
        assert!(Instant::now() < deadline, "the gang did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The broker shows the gang, and where its units run.
    let broker = Broker::connect(&env("ROUTINE_TEST_REDIS_URL"), &ns, Retry::default())
        .await
        .unwrap();
    let gangs = broker.gangs().await.unwrap();
    assert_eq!(gangs.running.len(), 1, "{gangs:?}");
    assert_eq!(gangs.running[0].task, "gang-survivor:1.0.0");
    let ranks: Vec<usize> = gangs.running[0].units.iter().map(|u| u.0).collect();
    assert_eq!(ranks, [0, 1], "{gangs:?}");
    let victim = logged_units(&log)[1].1;
    workers.kill(victim);
    std::fs::write(dir.path().join("killed"), "").unwrap();
    assert_eq!(call.await.unwrap(), 2);
    let units = logged_units(&log);
    assert_eq!(units.len(), 4, "two attempts of two units: {units:?}");
    assert!(
        units[2..].iter().all(|u| u.1 != victim),
        "the second attempt ran on the workers left: {units:?}"
    );
    assert_eq!(gang_keys_left(&ns).await, Vec::<String>::new());
}

/// A gang larger than the cluster fails after the start timeout, saying
/// how many units it needs and how many slots there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_larger_than_the_cluster_fails_saying_why() {
    let ns = namespace("gang-large");
    let _workers = Workers::start_with(&ns, 1, None, &[("ROUTINE_WORKER_CONCURRENCY", "2")]);
    let mut config = config(&ns);
    config.dispatch.gang_start_timeout = Duration::from_secs(2);
    let engine = routine::distributed::connect(config).await.unwrap();
    let call = tokio::spawn(engine.clone().scope(gang_sum(vec![1, 2, 3])));
    // While it waits, the broker shows it waiting.
    let broker = Broker::connect(&env("ROUTINE_TEST_REDIS_URL"), &ns, Retry::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let waiting = loop {
        let gangs = broker.gangs().await.unwrap();
        if !gangs.waiting.is_empty() || Instant::now() > deadline {
            break gangs.waiting;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(
        (waiting[0].task.as_str(), waiting[0].least),
        ("gang-sum:1.0.0", 3)
    );
    let message = panic_of(call).await;
    assert!(
        message.contains("it needs 3 units") && message.contains("have 2 slot(s)"),
        "{message}"
    );
    assert_eq!(gang_keys_left(&ns).await, Vec::<String>::new());
}
