//! Lineage: a workflow's call tree rebuilt from the store alone, after the
//! process that ran it has exited; on the file store and on S3.
//!
//! The workflow runs in a child process: this test binary re-run through
//! the ignored `child_process` entry point, with `ROUTINE_LINEAGE_STORE`.

use std::process::Command;

use routine::store::Store;
use routine::{lineage, RunId};
use routine::{Engine, Key};

#[routine::task(name = "lineage-leaf", version = "1.0.0")]
async fn leaf(x: u64) -> u64 {
    x * x
}

#[routine::task(name = "lineage-branch", version = "1.0.0")]
async fn branch(xs: Vec<u64>) -> u64 {
    let mut sum = 0;
    for x in xs {
        sum += leaf(x).await;
    }
    sum
}

/// Three levels: root -> branch -> leaf, and root -> leaf directly; the
/// second call of `leaf(2)` is answered from storage.
#[routine::task(name = "lineage-root", version = "1.0.0")]
async fn root(n: u64) -> (u64, Option<String>) {
    let first = branch((1..=n).collect()).await;
    let again = leaf(2).await;
    let run = Engine::current_run().map(|r| r.to_string());
    (first + again, run)
}

const STORE_VAR: &str = "ROUTINE_LINEAGE_STORE";

/// Runs the workflow on the store `ROUTINE_LINEAGE_STORE` names, prints
/// the run ID the body saw, and exits.
#[test]
#[ignore = "entry point of the child process of the lineage tests"]
fn child_process() {
    let Ok(url) = std::env::var(STORE_VAR) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        #[cfg(feature = "distributed")]
        let store = routine::distributed::open_url(&url).unwrap();
        #[cfg(not(feature = "distributed"))]
        let store = routine::store::open_url(&url).unwrap();
        let engine = Engine::builder(store).build().unwrap();
        let (sum, run) = engine.scope(root(3)).await;
        assert_eq!(sum, 1 + 4 + 9 + 4);
        println!("RUN={}", run.expect("a body runs inside a run"));
    });
}

/// Runs the workflow in a child process on `url`; returns the run ID its
/// body saw.
fn run_in_child(url: &str) -> RunId {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_process", "--nocapture"])
        .env(STORE_VAR, url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RUN="))
        .expect("the child printed its run");
    line.trim().parse().unwrap()
}

fn check_lineage(store: &dyn Store, run: RunId) {
    let runs = lineage::runs(store).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let summary = &runs[0];
    assert_eq!(summary.id, run);
    assert_eq!(summary.root, "lineage-root@1.0.0");
    // root, branch, leaf(1), leaf(2), leaf(3) computed; leaf(2) again a hit.
    assert_eq!(
        (summary.computed, summary.from_storage, summary.failed),
        (5, 1, 0)
    );

    let tree = lineage::run_tree(store, run).unwrap();
    let roots = tree.roots();
    assert_eq!(roots.len(), 1);
    let label = |i: usize| {
        let call = &tree.calls[i].call;
        format!("{}:{}", call.name, call.outcome)
    };
    let root = &tree.calls[roots[0]];
    let children: Vec<String> = root.children.iter().map(|&c| label(c)).collect();
    assert_eq!(children, ["lineage-branch:computed", "lineage-leaf:hit"]);
    let branch = &tree.calls[root.children[0]];
    let leaves: Vec<String> = branch.children.iter().map(|&c| label(c)).collect();
    assert_eq!(leaves, ["lineage-leaf:computed"; 3]);

    // Each stored result names its run and the call that awaited it.
    let branch_key = Key::of("lineage-branch", "1.0.0", &(vec![1u64, 2, 3],)).unwrap();
    let leaf_key = Key::of("lineage-leaf", "1.0.0", &(3u64,)).unwrap();
    let of_leaf = lineage::of(store, "lineage-leaf", "1.0.0", &leaf_key)
        .unwrap()
        .unwrap();
    assert_eq!((of_leaf.run, of_leaf.parent), (Some(run), Some(branch_key)));
    let root_key = Key::of("lineage-root", "1.0.0", &(3u64,)).unwrap();
    let of_root = lineage::of(store, "lineage-root", "1.0.0", &root_key)
        .unwrap()
        .unwrap();
    assert_eq!((of_root.run, of_root.parent), (Some(run), None));
}

#[test]
fn the_call_tree_is_rebuilt_from_a_file_store_after_the_process_exited() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let run = run_in_child(&url);
    let store = routine::store::open_url(&url).unwrap();
    check_lineage(&*store, run);

    // A second run of the same workflow is answered from storage: it
    // records no run.
    let again = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_process", "--nocapture"])
        .env(STORE_VAR, &url)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(lineage::runs(&*store).unwrap().len(), 1);
}

#[cfg(feature = "distributed")]
#[test]
fn the_call_tree_is_rebuilt_from_s3_after_the_process_exited() {
    let base = std::env::var("ROUTINE_TEST_S3_URL").expect(
        "ROUTINE_TEST_S3_URL is not set: run the tests with ./scripts/test, which starts an S3 server",
    );
    let url = format!(
        "{}/lineage-{}-{}",
        base.trim_end_matches('/'),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let run = run_in_child(&url);
    let store = routine::distributed::open_url(&url).unwrap();
    check_lineage(&*store, run);
}

#[tokio::test]
async fn the_current_run_is_known_inside_a_routine_only() {
    assert_eq!(Engine::current_run(), None);
    let engine = Engine::in_memory();
    let (_, seen) = engine.scope(root(2)).await;
    let runs = lineage::runs(engine.store()).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(seen, Some(runs[0].id.to_string()));
    engine
        .scope(async { assert_eq!(Engine::current_run(), None, "main is not a run") })
        .await;
}
