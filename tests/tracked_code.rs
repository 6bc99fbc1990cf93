//! Tracked code, as a user meets it: a small crate (tests/tracked/) is
//! built, run, changed (a tracked constant, a constant two calls deep, a
//! method of a tracked `impl`, an untracked helper), built again and run on
//! the same store. The default policy returns the stored results and warns
//! naming each changed item, its file and line; `rerun` computes them
//! again; `why` and `tasks --code` say what changed and what is not seen.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The first build with `greet` at another version.
const BUMPED: Build = Build {
    greet_version: "1.1.0",
    ..FIRST
};

/// The values a build is made with.
struct Build {
    greet_version: &'static str,
    scale: &'static str,
    depth: &'static str,
    apply: &'static str,
    offset: &'static str,
}

const FIRST: Build = Build {
    greet_version: "1.0.0",
    scale: "2.0",
    depth: "10.0",
    apply: "",
    offset: "1.0",
};

const SECOND: Build = Build {
    greet_version: "1.0.0",
    scale: "3.0",
    depth: "20.0",
    apply: "+ 0.5",
    offset: "100.0",
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Held while a test builds and runs the crate: every build writes the
/// same binary.
static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes the crate with `build`'s values and builds it, in this test
/// build's target folder (shared with the workspace: routine and its
/// dependencies are built once, with the workspace's lock file).
fn build(dir: &Path, build: &Build) -> PathBuf {
    let fill = |name: &str| {
        let template = fs::read_to_string(workspace().join("tests/tracked").join(name)).unwrap();
        template
            .replace("@ROUTINE@", &workspace().display().to_string())
            .replace("@GREET_VERSION@", build.greet_version)
            .replace("@SCALE@", build.scale)
            .replace("@DEPTH@", build.depth)
            .replace("@APPLY@", build.apply)
            .replace("@OFFSET@", build.offset)
    };
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("Cargo.toml"), fill("Cargo.toml.in")).unwrap();
    fs::write(dir.join("src/main.rs"), fill("main.rs.in")).unwrap();
    fs::write(dir.join("src/prep.rs"), fill("prep.rs.in")).unwrap();
    fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    // target/debug/deps/tracked_code-<hash> -> target
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_owned();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--offline"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "building the tracked demo failed");
    target.join("debug/tracked-demo")
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(program: &Path, store: &Path, env: &[(&str, &str)], args: &[&str]) -> Ran {
    let ran = try_run(program, store, env, args);
    assert!(ran.ok, "{args:?} failed:\n{}\n{}", ran.stdout, ran.stderr);
    ran
}

fn try_run(program: &Path, store: &Path, env: &[(&str, &str)], args: &[&str]) -> Ran {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(program)
        .args(args)
        .env("ROUTINE_STORE", store)
        .env_remove("ROUTINE_ON_CODE_CHANGE")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .current_dir(store.parent().unwrap())
        .output()
        .unwrap();
    Ran {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A folder of the test's own: the crate's and the store's in it.
fn folders() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let (dir, store) = (work.path().join("demo"), work.path().join("store"));
    (work, dir, store)
}

/// The line of `text` in the crate's file `file`.
fn line_of(dir: &Path, file: &str, text: &str) -> usize {
    let source = fs::read_to_string(dir.join(file)).unwrap();
    1 + source
        .lines()
        .position(|line| line.contains(text))
        .unwrap_or_else(|| panic!("`{text}` is not in {file}"))
}

#[test]
fn changed_tracked_code_is_seen_named_and_explained() {
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let (_work, dir, store) = folders();
    let program = build(&dir, &FIRST);
    let first = run(&program, &store, &[], &[]);
    assert_eq!(first.stdout.trim(), "scaled=2 deep=22 method=3 plain=2");
    assert!(!first.stderr.contains("changed"), "{}", first.stderr);

    // What each fingerprint covers, and what it cannot see.
    let code = run(&program, &store, &[], &["tasks", "--code", "--json"]);
    let tasks: Value = serde_json::from_str(&code.stdout).unwrap();
    let items_of = |id: &str| -> (Vec<String>, Vec<String>) {
        let task = tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {tasks}"));
        let names = |key: &str| -> Vec<String> {
            (task[key].as_array().unwrap().iter())
                .map(|v| v.get("name").unwrap_or(v).as_str().unwrap().to_owned())
                .collect()
        };
        (names("items"), names("untracked"))
    };
    let (scaled, _) = items_of("tname:scaled:1.0.0");
    assert_eq!(
        scaled,
        [
            "task scaled",
            "tracked_demo::prep::SCALE",
            "tracked_demo::prep::normalize"
        ]
    );
    let (deep, _) = items_of("tname:deep:1.0.0");
    assert_eq!(
        deep,
        [
            "task deep",
            "tracked_demo::DEPTH",
            "tracked_demo::inner",
            "tracked_demo::outer"
        ]
    );
    let (method, _) = items_of("tname:method:1.0.0");
    assert_eq!(method, ["task method", "tracked_demo::Scaler::apply"]);
    let (plain, untracked) = items_of("tname:plain:1.0.0");
    assert_eq!(plain, ["task plain"]);
    assert_eq!(untracked, ["untracked_offset"]);

    // The second build: every value changed.
    let program = build(&dir, &SECOND);
    let second = run(&program, &store, &[], &[]);
    assert_eq!(
        second.stdout.trim(),
        "scaled=2 deep=22 method=3 plain=2",
        "the default policy returns the stored results"
    );
    let scale_line = line_of(&dir, "src/prep.rs", "pub const SCALE");
    let depth_line = line_of(&dir, "src/main.rs", "const DEPTH");
    let apply_line = line_of(&dir, "src/main.rs", "fn apply");
    for (task, item) in [
        (
            "scaled",
            format!("tracked_demo::prep::SCALE (src/prep.rs:{scale_line}) changed"),
        ),
        (
            "deep",
            format!("tracked_demo::DEPTH (src/main.rs:{depth_line}) changed"),
        ),
        (
            "method",
            format!("tracked_demo::Scaler::apply (src/main.rs:{apply_line}) changed"),
        ),
    ] {
        let warning = second
            .stderr
            .lines()
            .skip_while(|line| !line.contains(&format!("the code of task `{task}` changed")))
            .take(4)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            warning.contains(&item),
            "{task}: no `{item}` in\n{}",
            second.stderr
        );
    }
    assert!(
        !second.stderr.contains("task `plain`"),
        "an untracked change is not seen, so not warned of:\n{}",
        second.stderr
    );
    // Once per task and process.
    assert_eq!(
        second.stderr.matches("the code of task `scaled`").count(),
        1
    );

    // `why` names the change for a hit, and the untracked calls.
    let why = run(&program, &store, &[], &["why", "scaled", "--arg", "x=1.0"]);
    assert!(why.stdout.contains("  hits: written"), "{}", why.stdout);
    assert!(why.stdout.contains("code: changed since"), "{}", why.stdout);
    assert!(
        why.stdout.contains(&format!(
            "tracked_demo::prep::SCALE (src/prep.rs:{scale_line}) changed"
        )),
        "{}",
        why.stdout
    );
    let why_plain = run(&program, &store, &[], &["why", "plain", "--arg", "x=1.0"]);
    assert!(
        why_plain.stdout.contains("code: unchanged since"),
        "{}",
        why_plain.stdout
    );
    assert!(
        why_plain.stdout.contains("not seen: untracked_offset"),
        "{}",
        why_plain.stdout
    );

    // Under `rerun`, the changed code is a miss: `why` says so first.
    let rerun = [("ROUTINE_ON_CODE_CHANGE", "rerun")];
    let why = run(
        &program,
        &store,
        &rerun,
        &["why", "deep", "--arg", "x=1.0", "--json"],
    );
    let why: Value = serde_json::from_str(&why.stdout).unwrap();
    assert_eq!(
        (why["verdict"].as_str(), why["reason"].as_str()),
        (Some("run"), Some("code_changed"))
    );
    let changed: Vec<&str> = why["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["item"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["tracked_demo::DEPTH"], "{why}");
    assert_eq!(why["changes"][0]["item"]["line"], depth_line);
    let third = run(&program, &store, &rerun, &[]);
    // Changing the policy changes every key (`rerun` puts the code in
    // them): every task runs once again, `plain` too.
    assert_eq!(third.stdout.trim(), "scaled=3 deep=42 method=3.5 plain=101");
    assert!(!third.stderr.contains("changed"), "{}", third.stderr);
    let fourth = run(&program, &store, &rerun, &["why", "deep", "--arg", "x=1.0"]);
    assert!(
        fourth.stdout.contains("  hits: written"),
        "{}",
        fourth.stdout
    );
}

/// `why greet` as JSON.
fn why_greet(program: &Path, store: &Path, times: u32) -> Value {
    let times = format!("times={times}");
    let why = run(
        program,
        store,
        &[],
        &[
            "why", "greet", "--arg", "name=ada", "--arg", &times, "--json",
        ],
    );
    serde_json::from_str(&why.stdout).unwrap()
}

/// `why greet` of the stored call, as text.
fn why_greet_text(program: &Path, store: &Path) -> Ran {
    let times = ["why", "greet", "--arg", "name=ada", "--arg", "times=2"];
    run(program, store, &[], &times)
}

fn reason(why: &Value) -> (&str, &str) {
    (
        why["verdict"].as_str().unwrap(),
        why["reason"].as_str().unwrap_or("-"),
    )
}

#[test]
fn why_explains_each_reason_a_call_runs_or_hits() {
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let (work, dir, store) = folders();
    let program = build(&dir, &FIRST);

    // Never run, then a hit naming the run that wrote it.
    assert_eq!(
        reason(&why_greet(&program, &store, 2)),
        ("run", "never_run")
    );
    run(&program, &store, &[], &[]);
    let runs = run(&program, &store, &[], &["runs", "ls", "--json"]);
    let runs: Value = serde_json::from_str(&runs.stdout).unwrap();
    let run_id = runs[0]["id"].as_str().unwrap().to_owned();
    let hit = why_greet(&program, &store, 2);
    assert_eq!(reason(&hit), ("hit", "-"));
    assert_eq!(hit["written"]["run"], run_id.as_str());
    assert_eq!(hit["written"]["writer"]["program"], "tracked-demo");
    assert_eq!(hit["written"]["writer"]["version"], "0.3.0");
    assert!(hit["ttl_left_secs"].as_u64().unwrap() <= 3);
    let text = why_greet_text(&program, &store);
    assert!(
        text.stdout.contains(&format!("in run {}", &run_id[..12])),
        "{}",
        text.stdout
    );

    // New arguments, naming the one that differs, with its value.
    let new = why_greet(&program, &store, 3);
    assert_eq!(reason(&new), ("run", "new_arguments"));
    assert_eq!(new["nearest"]["differing"], serde_json::json!(["times"]));
    let text = run(
        &program,
        &store,
        &[],
        &["why", "greet", "--arg", "name=ada", "--arg", "times=3"],
    );
    assert!(text.stdout.contains("times = 3 differs"), "{}", text.stdout);

    // The run explained after the fact: each computed call, as of its start.
    let explained = run(&program, &store, &[], &["runs", "why", &run_id, "--json"]);
    let explained: Value = serde_json::from_str(&explained.stdout).unwrap();
    let greet = explained
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["routine"] == "greet@1.0.0")
        .unwrap_or_else(|| panic!("{explained}"));
    assert_eq!(
        (greet["lookup"].as_str(), greet["reason"].as_str()),
        (Some("absent"), Some("never_run"))
    );

    // Removed by `cache rm`.
    run(&program, &store, &[], &["cache", "rm", "greet@1.0.0"]);
    let removed = why_greet(&program, &store, 2);
    assert_eq!(reason(&removed), ("run", "removed"));
    assert_eq!(removed["cause"]["by"], "removed");

    // Collected by `cache gc`, with its reason.
    let greet = ["run", "greet", "--arg", "name=ada", "--arg", "times=2"];
    run(&program, &store, &[], &greet);
    run(&program, &store, &[], &["cache", "gc", "--max-size", "0"]);
    let collected = why_greet(&program, &store, 2);
    assert_eq!(reason(&collected), ("run", "removed"));
    assert_eq!(
        collected["cause"],
        serde_json::json!({"by": "collected", "reason": "over-size"})
    );
    let text = why_greet_text(&program, &store);
    assert!(
        text.stdout.contains("collected by `cache gc` (over-size)"),
        "{}",
        text.stdout
    );

    // Expired: the task's ttl is 3 s.
    run(&program, &store, &[], &greet);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let expired = why_greet(&program, &store, 2);
    assert_eq!(reason(&expired), ("run", "expired"));
    assert_eq!(expired["ttl_secs"], 3);

    // A new version: the older one's results do not answer it.
    let bumped = build(&dir, &BUMPED);
    let version = why_greet(&bumped, &store, 2);
    assert_eq!(reason(&version), ("run", "version_changed"));
    assert_eq!(version["stored_versions"], serde_json::json!(["1.0.0"]));
    assert_eq!(version["same_arguments_in"], "1.0.0");

    // Corrupt: a result file of the files layout, damaged.
    let files = work.path().join("files");
    run(&bumped, &files, &[("ROUTINE_LAYOUT", "files")], &[]);
    let result = fs::read_dir(files.join("greet/1.1.0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().len() == 64)
        .expect("a result file");
    let mut bytes = fs::read(&result).unwrap();
    let last = bytes.len() - 6;
    bytes[last] ^= 0xff;
    fs::write(&result, bytes).unwrap();
    let times = [
        "why", "greet", "--arg", "name=ada", "--arg", "times=2", "--json",
    ];
    let corrupt = run(&bumped, &files, &[("ROUTINE_LAYOUT", "files")], &times);
    let corrupt: Value = serde_json::from_str(&corrupt.stdout).unwrap();
    assert_eq!(reason(&corrupt), ("run", "corrupt"));
    assert!(
        corrupt["error"].as_str().unwrap().contains("checksum"),
        "{corrupt}"
    );

    // A bad argument is a usage error, not a panic.
    let bad = try_run(
        &bumped,
        &store,
        &[],
        &["why", "greet", "--arg", "name=ada", "--arg", "times=many"],
    );
    assert!(!bad.ok && bad.stderr.contains("times"), "{}", bad.stderr);
}
