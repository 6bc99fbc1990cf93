//! Several processes on one store: persistence, key stability across process
//! seeds, and processes killed while writing or right after returning.
//!
//! The parent tests re-run this test binary as child processes, selecting the
//! ignored `child_process` entry point with `ROUTINE_CHILD`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use routine::Engine;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};

static HISTOGRAM_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Takes a `HashMap`: each process iterates it in its own random order.
#[routine::task(name = "histogram", version = "1.0.0")]
async fn histogram(counts: HashMap<String, u32>) -> Vec<(String, u32)> {
    HISTOGRAM_RUNS.fetch_add(1, Ordering::SeqCst);
    let mut out: Vec<_> = counts.into_iter().collect();
    out.sort();
    out
}

fn counts() -> HashMap<String, u32> {
    (0..100).map(|i| (format!("word{i}"), i * 3)).collect()
}

/// A large result whose serialization is slow, so that a process can be
/// killed in the middle of writing it.
#[derive(Debug, PartialEq, Deserialize)]
struct SlowBlob(Vec<Vec<u8>>);

const CHUNKS: usize = 160;
const CHUNK: usize = 64 * 1024;

impl Serialize for SlowBlob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for chunk in &self.0 {
            std::thread::sleep(Duration::from_millis(3));
            seq.serialize_element(chunk)?;
        }
        seq.end()
    }
}

fn blob(seed: u8) -> SlowBlob {
    SlowBlob(
        (0..CHUNKS)
            .map(|i| vec![seed.wrapping_add(i as u8); CHUNK])
            .collect(),
    )
}

#[routine::task(name = "blob", version = "1.0.0")]
async fn make_blob(seed: u8) -> SlowBlob {
    blob(seed)
}

/// Notes each run of its body in `<dir>/ran`, then takes a second.
#[routine::task(name = "slow-once", version = "1.0.0")]
async fn slow_once(dir: String) -> u32 {
    use std::io::Write;
    let mut ran = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(&dir).join("ran"))
        .unwrap();
    writeln!(ran, "{}", std::process::id()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    7
}

/// A small result: many of them are written while processes are killed.
#[routine::task(name = "numbered", version = "1.0.0")]
async fn numbered(i: u32) -> Vec<u32> {
    (0..i % 64).map(|j| i ^ j).collect()
}

/// How many `numbered` results the killed writers aim for.
const NUMBERED: u32 = 20_000;

#[test]
#[ignore = "entry point of the child processes started by the other tests"]
fn child_process() {
    let mode = std::env::var("ROUTINE_CHILD").expect("run by the parent tests only");
    let dir = PathBuf::from(std::env::var("ROUTINE_DIR").unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::local(&dir).unwrap();
    runtime.block_on(engine.scope(async {
        match mode.as_str() {
            "histogram" => {
                let result = histogram(counts()).await;
                assert_eq!(result.len(), 100);
            }
            "blob" => {
                let seed = std::env::var("ROUTINE_SEED").unwrap().parse().unwrap();
                assert_eq!(make_blob(seed).await, blob(seed));
                println!("\nCHILD returned");
                std::thread::sleep(Duration::from_secs(60));
            }
            "numbered" => {
                // Each child starts elsewhere, so that they write both
                // their own results and each other's.
                let seed: u32 = std::env::var("ROUTINE_SEED").unwrap().parse().unwrap();
                for i in 0..NUMBERED {
                    numbered((i + seed * 7_919) % NUMBERED).await;
                    if i == 0 {
                        println!("\nCHILD writing");
                    }
                }
            }
            "slow-once" => {
                let ran = std::env::var("ROUTINE_RAN").unwrap();
                assert_eq!(slow_once(ran).await, 7);
            }
            other => panic!("unknown child mode {other}"),
        }
    }));
    let stats = engine.stats();
    // libtest prints "test child_process ... " first: start a line of our own.
    println!("\nCHILD hits={} misses={}", stats.hits, stats.misses);
}

fn child(mode: &str, dir: &Path, seed: u8) -> Child {
    child_command(mode, dir)
        .env("ROUTINE_SEED", seed.to_string())
        .spawn()
        .unwrap()
}

/// This test binary, re-run as a child in `mode` on the store `dir`.
fn child_command(mode: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ROUTINE_CHILD", mode)
        .env("ROUTINE_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The child's `CHILD ...` lines, after it exits.
fn child_report(mode: &str, dir: &Path) -> String {
    let output = child(mode, dir, 0).wait_with_output().unwrap();
    assert!(output.status.success(), "child failed: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines()
        .filter(|l| l.starts_with("CHILD "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two processes starting the same call on one store at once: its body
/// runs in one of them, and the other reads its result.
#[test]
fn two_processes_starting_the_same_call_run_its_body_once() {
    let dir = tempfile::tempdir().unwrap();
    let ran = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..2)
        .map(|_| slow_once_child(dir.path(), ran.path()))
        .collect();
    two_children_report(children, &ran)
}

/// A process killed while it holds a call's lock does not hold it any
/// more: the next process runs the body.
#[test]
fn a_killed_process_releases_its_lock_on_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let ran = tempfile::tempdir().unwrap();
    let start = || slow_once_child(dir.path(), ran.path());
    let mut first = start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ran.path().join("ran").exists() {
        assert!(Instant::now() < deadline, "the first body never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let second = start().wait_with_output().unwrap();
    assert!(second.status.success(), "{second:?}");
    let runs = std::fs::read_to_string(ran.path().join("ran")).unwrap();
    assert_eq!(
        runs.lines().count(),
        2,
        "the second process ran it: {runs:?}"
    );
}

/// A child calling `slow-once` on the store `dir`, noting its runs in
/// `ran`.
fn slow_once_child(dir: &Path, ran: &Path) -> Child {
    child_command("slow-once", dir)
        .env("ROUTINE_RAN", ran)
        .spawn()
        .unwrap()
}

fn two_children_report(children: Vec<Child>, ran: &tempfile::TempDir) {
    let mut reports = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "child failed: {output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        reports.extend(
            text.lines()
                .filter(|l| l.starts_with("CHILD "))
                .map(str::to_owned),
        );
    }
    let runs = std::fs::read_to_string(ran.path().join("ran")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the body ran in {runs:?}");
    reports.sort();
    assert_eq!(reports, ["CHILD hits=0 misses=1", "CHILD hits=1 misses=0"]);
}

#[tokio::test]
async fn results_and_hash_map_keys_are_shared_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        child_report("histogram", dir.path()),
        "CHILD hits=0 misses=1"
    );
    // A second process, with another HashMap seed, finds the same key.
    assert_eq!(
        child_report("histogram", dir.path()),
        "CHILD hits=1 misses=0"
    );
    // And so does this one.
    let engine = Engine::local(dir.path()).unwrap();
    let before = HISTOGRAM_RUNS.load(Ordering::SeqCst);
    assert_eq!(engine.scope(histogram(counts())).await.len(), 100);
    assert_eq!(HISTOGRAM_RUNS.load(Ordering::SeqCst), before);
    assert_eq!(engine.stats().hits, 1);
}

fn version_dir(root: &Path) -> PathBuf {
    root.join("blob").join("1.0.0")
}

/// Waits until the child has written part of a temporary entry file.
fn wait_for_partial_write(root: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(dir) = std::fs::read_dir(version_dir(root)) {
            for item in dir.flatten() {
                let name = item.file_name().to_string_lossy().into_owned();
                let len = item.metadata().map(|m| m.len()).unwrap_or(0);
                if name.ends_with(".tmp") && len > 1 << 20 {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_writing_leaves_no_partial_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = child("blob", dir.path(), 1);
    assert!(
        wait_for_partial_write(dir.path()),
        "never saw the child writing"
    );
    writer.kill().unwrap();
    writer.wait().unwrap();

    // Only the abandoned temporary file is there, and no reader takes it for
    // an entry.
    let store = routine::store::DatabaseStore::open(dir.path()).unwrap();
    use routine::store::Store;
    assert!(store.list(Some("blob"), None).unwrap().is_empty());
    let engine = Engine::local(dir.path()).unwrap();
    assert_eq!(engine.scope(make_blob(1)).await, blob(1));
    assert_eq!(
        (engine.stats().misses, engine.stats().corrupt_entries),
        (1, 0)
    );
    assert_eq!(store.list(Some("blob"), None).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_survives_the_process_being_killed_after_the_call_returned() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = child("blob", dir.path(), 2);
    let stdout = BufReader::new(process.stdout.take().unwrap());
    let returned = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "CHILD returned");
    assert!(returned, "child never returned from the call");
    process.kill().unwrap(); // SIGKILL: no destructors, no flushing
    process.wait().unwrap();

    let engine = Engine::local(dir.path()).unwrap();
    assert_eq!(engine.scope(make_blob(2)).await, blob(2));
    assert_eq!((engine.stats().hits, engine.stats().misses), (1, 0));
}

/// Processes writing many small results to the database at once, killed
/// (SIGKILL) at moments spread over their work, leave a store whose every
/// listed result reads back whole: none is lost half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_killed_while_writing_small_results_leave_every_result_whole() {
    let dir = tempfile::tempdir().unwrap();
    for (round, delay_ms) in [3u64, 17, 40, 90, 150].into_iter().enumerate() {
        let mut writers: Vec<Child> = (0..2u8)
            .map(|k| child("numbered", dir.path(), round as u8 * 2 + k))
            .collect();
        for writer in &mut writers {
            let stdout = BufReader::new(writer.stdout.take().unwrap());
            let started = stdout
                .lines()
                .map_while(Result::ok)
                .any(|l| l == "CHILD writing");
            assert!(started, "a writer never started");
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        for writer in &mut writers {
            writer.kill().unwrap();
            writer.wait().unwrap();
        }
    }

    let engine = Engine::local(dir.path()).unwrap();
    let listed = engine.store().list(Some("numbered"), None).unwrap().len() as u64;
    assert!(listed > 0, "the writers stored nothing before being killed");
    engine
        .scope(async {
            for i in 0..NUMBERED {
                assert_eq!(
                    numbered(i).await,
                    (0..i % 64).map(|j| i ^ j).collect::<Vec<_>>()
                );
            }
        })
        .await;
    let stats = engine.stats();
    assert_eq!(stats.corrupt_entries, 0);
    assert_eq!(stats.store_errors, 0);
    assert_eq!(stats.hits, listed, "every listed result was read back");
    assert_eq!(stats.hits + stats.misses, u64::from(NUMBERED));
}
