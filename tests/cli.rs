//! The command line of `#[routine::main]` programs, used as a person or a
//! script uses it: the example binaries run in a folder of their own, and
//! their exit codes, standard output and standard error are read.
//!
//! The examples are built once per test run, with this test's features.

mod common;

use std::fs::{File, FileTimes};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// The examples' binaries, built with this test's features.
fn example(name: &str) -> PathBuf {
    common::example(name)
}

/// What a run printed and how it ended.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }

    #[track_caller]
    fn ok(self) -> Ran {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn fails_with(self, code: i32, message: &str) -> Ran {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(message),
            "expected `{message}` in stderr:\n{}",
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "bad input must not panic:\n{}",
            self.stderr
        );
        self
    }
}

/// A folder to run the examples in: their default store is `./.routine`.
struct Project {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Project {
    fn new() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// The same folder, with no variables set.
    fn anew(self) -> Project {
        Project {
            dir: self.dir,
            env: Vec::new(),
        }
    }

    fn env(mut self, name: &str, value: &str) -> Project {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join(".routine")
    }

    fn run(&self, program: &str, args: &[&str]) -> Ran {
        let mut command = Command::new(example(program));
        command.args(args).current_dir(self.dir.path());
        // Only what the test sets: never the developer's own settings.
        for (name, _) in std::env::vars() {
            if name.starts_with("ROUTINE_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().expect("cannot start the example");
        Ran {
            code: status.code().expect("the example was killed by a signal"),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// Sets both times of every stored entry of `name` (file store).
fn age_entries(store: &Path, name: &str, age: Duration) {
    let at = SystemTime::now() - age;
    for version in std::fs::read_dir(store.join(name)).unwrap() {
        for entry in std::fs::read_dir(version.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_times(FileTimes::new().set_accessed(at).set_modified(at))
                .unwrap();
        }
    }
}

/// The results one run of the train example stores, by routine name.
const ALL_RESULTS: [&str; 8] = [
    "fit",
    "fit",
    "fit",
    "fit",
    "pick-best",
    "prepare-data",
    "train",
    "train-and-pick",
];

fn names_listed(ran: &Ran) -> Vec<String> {
    let mut names: Vec<String> = ran
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn main_runs_in_an_engine_scope_and_the_second_run_comes_from_storage() {
    let project = Project::new();
    let first = project.run("train", &[]).ok();
    assert!(
        first.stdout.contains("totals: 8 calls, 8 ran"),
        "{}",
        first.stdout
    );
    let second = project.run("train", &[]).ok();
    assert!(second.stdout.contains(", 0 ran,"), "{}", second.stdout);
    // The default layout: small results in the store's database.
    assert!(project.store().join(".database").is_dir());
    assert!(!project.store().join("fit").exists());
}

/// An endpoint set for a program that cannot export is said, not ignored.
#[cfg(not(feature = "telemetry"))]
#[test]
fn an_otlp_endpoint_without_the_telemetry_feature_is_warned_about() {
    let project = Project::new().env("ROUTINE_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    let ran = project.run("train", &[]).ok();
    assert!(
        ran.stderr
            .contains("built without routine's `telemetry` feature"),
        "{}",
        ran.stderr
    );
}

/// A bad endpoint is refused, naming the setting.
#[test]
fn a_bad_otlp_endpoint_exits_2() {
    let project = Project::new().env("ROUTINE_OTLP_ENDPOINT", "collector:4318");
    let ran = project.run("train", &[]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("telemetry.otlp_endpoint"),
        "{}",
        ran.stderr
    );
}

#[test]
fn every_subcommand_has_help_with_examples() {
    let project = Project::new();
    for command in [
        &["--help"][..],
        &["info", "--help"],
        &["tasks", "--help"],
        &["run", "--help"],
        &["worker", "--help"],
        &["status", "--help"],
        &["cache", "--help"],
        &["cache", "ls", "--help"],
        &["cache", "show", "--help"],
        &["cache", "rm", "--help"],
        &["cache", "gc", "--help"],
        &["cache", "stats", "--help"],
        &["cache", "migrate", "--help"],
        &["runs", "--help"],
        &["runs", "ls", "--help"],
        &["runs", "show", "--help"],
    ] {
        let help = project.run("train", command).ok();
        assert!(
            help.stdout.contains("Usage: train"),
            "{command:?}:\n{}",
            help.stdout
        );
        assert!(
            help.stdout.contains("Examples:"),
            "{command:?}:\n{}",
            help.stdout
        );
    }
    // The examples name the program's own routines, runnable as shown.
    let run = project.run("train", &["run", "--help"]).ok().stdout;
    assert!(
        run.contains("train run prepare-data --arg seed=7 --arg n=7"),
        "{run}"
    );
    assert!(!run.contains("greet"), "{run}");
    project
        .run(
            "train",
            &["run", "prepare-data", "--arg", "seed=7", "--arg", "n=7"],
        )
        .ok();
    let ls = project.run("train", &["cache", "ls", "--help"]).ok().stdout;
    assert!(ls.contains("train cache ls prepare-data"), "{ls}");
    let help = project.run("train", &["--help"]).ok();
    assert!(
        help.stdout.contains("Trains one small model"),
        "the doc comment of main is the description"
    );
}

#[test]
fn info_and_tasks_describe_the_program_and_its_store() {
    let project = Project::new();
    project.run("train", &[]).ok();

    let tasks = project.run("train", &["tasks"]).ok();
    for id in [
        "tname:fit:0.0.1",
        "tname:prepare-data:0.1.0",
        "tname:train:0.0.1",
    ] {
        assert!(tasks.stdout.contains(id), "{}", tasks.stdout);
    }
    assert!(tasks
        .stdout
        .contains("fn fit(data: Data, epochs: u32, hyper_params: HyperParams) -> Model"));
    let rows = project.run("train", &["tasks", "--json"]).ok().json();
    let fit = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == "fit")
        .unwrap();
    assert_eq!(fit["stored_results"], 4);
    assert_eq!(fit["fingerprint"].as_str().unwrap().len(), 12);

    let info = project.run("train", &["info", "--json"]).ok().json();
    assert_eq!(info["project"], "train");
    assert_eq!(info["store"], project.store().display().to_string());
    assert_eq!(info["store_from"], "default");
    assert_eq!(info["layout"], "database");
    assert_eq!(
        (info["tasks"].as_u64(), info["stored_results"].as_u64()),
        (Some(5), Some(8))
    );
    let text = project.run("train", &["info"]).ok();
    assert!(
        text.stdout.contains("stored   8 results"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("\nlayout   database\n"),
        "{}",
        text.stdout
    );
    assert_eq!(info["new_store"], false);
    let files = Project::new().env("ROUTINE_LAYOUT", "files");
    let info = files.run("train", &["info", "--json"]).ok().json();
    assert_eq!(
        (&info["layout"], &info["new_store"]),
        (&"files".into(), &true.into())
    );
}

#[test]
fn run_decodes_json_arguments_and_prints_the_result_as_json() {
    let project = Project::new();
    let data = project
        .run(
            "train",
            &["run", "prepare-data", "--arg", "seed=7", "--arg", "n=3"],
        )
        .ok();
    assert!(
        data.stderr.contains("computed (tname:prepare-data:0.1.0)"),
        "{}",
        data.stderr
    );
    let value = data.json();
    assert_eq!(value["features"].as_array().unwrap().len(), 3);

    // The same call by its full ID and one JSON object: from storage.
    let again = project
        .run(
            "train",
            &[
                "run",
                "tname:prepare-data:0.1.0",
                "--args-json",
                r#"{"seed": 7, "n": 3}"#,
            ],
        )
        .ok();
    assert!(again.stderr.contains("from storage"), "{}", again.stderr);
    assert_eq!(again.json(), value);

    // Structured arguments: the data printed above, fed back in.
    let args = serde_json::json!({
        "data": value,
        "epochs": 10,
        "hyper_params": {"learning_rate": 0.1, "l2": 0.0},
    });
    let model = project
        .run(
            "train",
            &["run", "fit@0.0.1", "--args-json", &args.to_string()],
        )
        .ok()
        .json();
    assert_eq!(model["weights"].as_array().unwrap().len(), 3);
    assert!(model["loss"].as_f64().unwrap() >= 0.0);

    // Quiet: the value alone.
    let quiet = project
        .run(
            "train",
            &[
                "--quiet",
                "run",
                "prepare-data",
                "--arg",
                "seed=7",
                "--arg",
                "n=3",
            ],
        )
        .ok();
    assert_eq!(quiet.stderr, "");
}

#[test]
fn bad_input_gets_a_clear_message_and_exit_code_2() {
    let project = Project::new();
    project.run("train", &["run", "trian"]).fails_with(
        2,
        "no routine `trian`; did you mean `train` or `train-and-pick`?",
    );
    project
        .run("train", &["run", "prepare-data", "--arg", "seed=1"])
        .fails_with(2, "missing argument `n` (u32)");
    project
        .run(
            "train",
            &["run", "prepare-data", "--arg", "seed=-3", "--arg", "n=1"],
        )
        .fails_with(
            2,
            "argument `seed` of `tname:prepare-data:0.1.0` expects `u64`",
        );
    project
        .run(
            "train",
            &[
                "run",
                "fit",
                "--args-json",
                r#"{"data": [], "epochs": 1, "hyper_params": {}}"#,
            ],
        )
        .fails_with(2, "argument `data` of `tname:fit:0.0.1` expects `Data`");
    project
        .run("train", &["run", "prepare-data", "--args-json", "{oops"])
        .fails_with(2, "--args-json is not valid JSON");
    project
        .run(
            "train",
            &[
                "run",
                "prepare-data",
                "--arg",
                "seed=1",
                "--arg",
                "n=1",
                "--arg",
                "speed=2",
            ],
        )
        .fails_with(
            2,
            "has no argument `speed`; its arguments are `seed: u64`, `n: u32`",
        );
    project
        .run("train", &["cache", "explode"])
        .fails_with(2, "unrecognized subcommand");
    project
        .run("train", &["cache", "gc", "--older-than", "soon"])
        .fails_with(2, "not a duration");
    project
        .run("train", &["cache", "gc", "--max-size", "lots"])
        .fails_with(2, "not a size");

    // An unreadable store: a file where the store's folder should be.
    std::fs::write(project.dir.path().join("not-a-folder"), b"").unwrap();
    project
        .run("train", &["--store", "not-a-folder", "tasks"])
        .fails_with(2, "not-a-folder");
    project
        .run("train", &["--store", "not-a-folder"])
        .fails_with(2, "not-a-folder");

    // A broken configuration file names the file and the line.
    std::fs::write(project.dir.path().join("routine.toml"), "stroe = 'x'\n").unwrap();
    project
        .run("train", &["info"])
        .fails_with(2, "unknown field `stroe`");
}

#[test]
fn a_broker_that_does_not_answer_is_a_configuration_error() {
    let project = Project::new();
    let ran = project.run(
        "train",
        &[
            "--broker",
            "redis://:secret@127.0.0.1:1",
            "run",
            "prepare-data",
            "--arg",
            "seed=1",
            "--arg",
            "n=1",
        ],
    );
    if cfg!(feature = "distributed") {
        let ran = ran.fails_with(2, "127.0.0.1:1");
        assert!(
            !ran.stderr.contains("secret"),
            "the password is redacted: {}",
            ran.stderr
        );
        project
            .run("train", &["worker"])
            .fails_with(2, "no broker is configured");
    } else {
        ran.fails_with(2, "without routine's `distributed` feature");
        // Said first: a broker would not help.
        for command in ["worker", "status"] {
            project
                .run("train", &[command])
                .fails_with(2, "without routine's `distributed` feature");
        }
    }
}

#[test]
fn a_failing_routine_exits_with_1() {
    let project = Project::new();
    project
        .run("quotes", &["run", "quote", "--arg", "symbol=NOPE"])
        .fails_with(
            1,
            "routine `tname:quote:1.0.0` failed: unknown symbol `NOPE`",
        );
    let rows = project
        .run("quotes", &["cache", "ls", "--json"])
        .ok()
        .json();
    assert_eq!(rows, serde_json::json!([]), "an `Err` is not stored");
}

#[test]
fn cache_ls_show_rm_and_stats() {
    let project = Project::new();
    project.run("train", &["--quiet"]).ok();
    assert_eq!(
        names_listed(&project.run("train", &["cache", "ls", "--json"]).ok()),
        ALL_RESULTS
    );
    let fits = project
        .run("train", &["cache", "ls", "fit@0.0.1", "--json"])
        .ok()
        .json();
    assert_eq!(fits.as_array().unwrap().len(), 4);
    let table = project.run("train", &["cache", "ls"]).ok();
    assert!(table.stdout.contains("8 results"), "{}", table.stdout);

    // Show one by a prefix of its key: its value, decoded with the task's type.
    let key = fits[0]["key"].as_str().unwrap().to_owned();
    let shown = project
        .run("train", &["cache", "show", &key[..8], "--json"])
        .ok()
        .json();
    assert_eq!(shown["key"], key.as_str());
    assert_eq!(shown["fingerprint_matches_build"], true);
    assert!(shown["value"]["loss"].is_number(), "{shown}");
    let text = project.run("train", &["cache", "show", &key[..8]]).ok();
    assert!(
        text.stdout.contains("routine      tname:fit:0.0.1"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("\"weights\""), "{}", text.stdout);
    project
        .run("train", &["cache", "show", "0000000000"])
        .fails_with(2, "no stored result has a key starting with");

    let stats = project
        .run("train", &["cache", "stats", "--json"])
        .ok()
        .json();
    let fit = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "fit")
        .unwrap();
    assert_eq!(fit["results"], 4);

    // Remove by key prefix, then a whole routine; a dry run removes nothing.
    let dry = project
        .run("train", &["cache", "rm", "fit", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(dry["removed"].as_array().unwrap().len(), 4);
    let one = project.run("train", &["cache", "rm", &key[..10]]).ok();
    assert!(one.stdout.contains("removed 1 result "), "{}", one.stdout);
    let rest = project.run("train", &["cache", "rm", "fit@0.0.1"]).ok();
    assert!(rest.stdout.contains("removed 3 results"), "{}", rest.stdout);
    assert_eq!(
        names_listed(&project.run("train", &["cache", "ls", "--json"]).ok()),
        ["pick-best", "prepare-data", "train", "train-and-pick"]
    );
    // The workflow's result is still stored: no fit runs again.
    let rerun = project.run("train", &[]).ok();
    assert!(rerun.stdout.contains(", 0 ran,"), "{}", rerun.stdout);
}

#[test]
fn gc_removes_by_age_and_least_recently_used_by_size() {
    // The files layout: its entries' times are set by hand below.
    let project = Project::new().env("ROUTINE_LAYOUT", "files");
    project.run("train", &["--quiet"]).ok();
    let store = project.store();
    age_entries(&store, "fit", Duration::from_secs(40 * 86_400));
    age_entries(&store, "prepare-data", Duration::from_secs(25 * 86_400));
    for name in ["train", "pick-best", "train-and-pick"] {
        age_entries(&store, name, Duration::from_secs(20 * 86_400));
    }

    // Nothing expired or too old for the default policy.
    let none = project.run("train", &["cache", "gc", "--json"]).ok().json();
    assert_eq!(none["removed"], serde_json::json!([]));

    // By age: the fits, unused for 40 days.
    let dry = project
        .run(
            "train",
            &["cache", "gc", "--older-than", "30d", "--dry-run", "--json"],
        )
        .ok()
        .json();
    assert_eq!(dry["removed"].as_array().unwrap().len(), 4);
    assert_eq!(
        names_listed(&project.run("train", &["cache", "ls", "--json"]).ok()).len(),
        8,
        "a dry run removes nothing"
    );
    let by_age = project
        .run("train", &["cache", "gc", "--older-than", "30d", "--json"])
        .ok()
        .json();
    let removed = by_age["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 4);
    assert!(removed
        .iter()
        .all(|r| r["name"] == "fit" && r["reason"] == "unused"));

    // A hit marks its entry as used: `prepare-data`, written before `train`,
    // becomes the most recently used.
    project
        .run(
            "train",
            &[
                "--quiet",
                "run",
                "prepare-data",
                "--arg",
                "seed=42",
                "--arg",
                "n=5000",
            ],
        )
        .ok();
    let listed = project.run("train", &["cache", "ls", "--json"]).ok().json();
    let row = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(row("prepare-data")["created"].as_u64() < row("train")["created"].as_u64());
    assert!(row("prepare-data")["last_used"].as_u64() > row("train")["last_used"].as_u64());

    // By size: keep what fits, least recently used out first.
    let limit = row("prepare-data")["size"].as_u64().unwrap().to_string();
    let by_size = project
        .run("train", &["cache", "gc", "--max-size", &limit, "--json"])
        .ok()
        .json();
    let mut removed: Vec<&str> = by_size["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    removed.sort();
    // Run records take room too, and may be collected with them.
    removed.retain(|name| *name != "routine.runs");
    assert_eq!(removed, ["pick-best", "train", "train-and-pick"]);
    assert!(by_size["removed"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["reason"] == "over-size"));
    assert_eq!(
        names_listed(&project.run("train", &["cache", "ls", "--json"]).ok()),
        ["prepare-data"]
    );
}

#[test]
fn gc_sweeps_what_killed_writers_left() {
    let project = Project::new().env("ROUTINE_LAYOUT", "files");
    project.run("train", &["--quiet"]).ok();
    let leftover = project.store().join("fit/0.0.1/.abc.999.0.tmp");
    std::fs::write(&leftover, vec![0u8; 2048]).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_times(FileTimes::new().set_modified(hour_ago))
        .unwrap();
    let swept = project.run("train", &["cache", "gc", "--json"]).ok().json();
    assert_eq!(swept["abandoned_bytes"], 2048);
    assert!(!leftover.exists());
}

#[test]
fn ttl_expired_results_are_misses_and_collected() {
    let project = Project::new();
    let run_quote = || {
        project
            .run("quotes", &["run", "quote", "--arg", "symbol=ACME"])
            .ok()
    };
    let first = run_quote();
    assert!(first.stderr.contains("computed"), "{}", first.stderr);
    let second = run_quote();
    assert!(second.stderr.contains("from storage"), "{}", second.stderr);
    assert_eq!(first.json(), second.json());

    let tasks = project.run("quotes", &["tasks", "--json"]).ok().json();
    assert_eq!(tasks[0]["ttl_seconds"], 5);

    std::thread::sleep(Duration::from_millis(5_200));
    let listed = project
        .run("quotes", &["cache", "ls", "--json"])
        .ok()
        .json();
    assert_eq!(listed[0]["expired"], true);
    let third = run_quote();
    assert!(
        third.stderr.contains("computed"),
        "an expired result is a miss: {}",
        third.stderr
    );
    assert!(third.json()["fetched_at"].as_u64() > first.json()["fetched_at"].as_u64());

    std::thread::sleep(Duration::from_millis(5_200));
    let collected = project
        .run("quotes", &["cache", "gc", "--json"])
        .ok()
        .json();
    assert_eq!(collected["removed"][0]["reason"], "expired");
    assert_eq!(
        project
            .run("quotes", &["cache", "ls", "--json"])
            .ok()
            .json(),
        serde_json::json!([])
    );
}

#[test]
fn configuration_layers_file_then_environment_then_flags() {
    let project = Project::new();
    std::fs::write(
        project.dir.path().join("routine.toml"),
        "project = 'ml'\nstore = 'from-file'\n",
    )
    .unwrap();
    let info = project.run("train", &["info", "--json"]).ok().json();
    assert_eq!(info["project"], "ml");
    assert_eq!(info["store_from"], "routine.toml");
    assert!(info["store"].as_str().unwrap().ends_with("from-file"));
    project.run("train", &["--quiet"]).ok();
    assert!(project.dir.path().join("from-file/.database").is_dir());

    let env = project.anew().env("ROUTINE_STORE", "from-env");
    let info = env.run("train", &["info", "--json"]).ok().json();
    assert_eq!(info["store_from"], "environment");
    let info = env
        .run("train", &["--store", "from-flag", "info", "--json"])
        .ok()
        .json();
    assert_eq!(info["store_from"], "flag");
    assert!(info["store"].as_str().unwrap().ends_with("from-flag"));
}

/// The Redis `./scripts/test` starts.
#[cfg(feature = "distributed")]
fn test_redis() -> String {
    std::env::var("ROUTINE_TEST_REDIS_URL").expect(
        "ROUTINE_TEST_REDIS_URL is not set: run the tests with ./scripts/test, which starts Redis",
    )
}

/// Stops a worker however the test ends.
#[cfg(feature = "distributed")]
struct Stopped(std::process::Child);

#[cfg(feature = "distributed")]
impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A train worker in `project`, logging to `worker.log` there, once
/// `status` shows it; and what `status --json` said then.
#[cfg(feature = "distributed")]
fn start_worker(project: &Project, args: &[&str]) -> (Stopped, Value) {
    start_worker_of("train", project, args, 1)
}

/// A worker of the example `program` in `project`, logging to
/// `worker.log` there, once `status` shows `count` workers; and what
/// `status --json` said then.
#[cfg(feature = "distributed")]
fn start_worker_of(
    program: &str,
    project: &Project,
    args: &[&str],
    count: usize,
) -> (Stopped, Value) {
    let mut command = Command::new(example(program));
    command
        .arg("worker")
        .args(args)
        .current_dir(project.dir.path())
        .envs(project.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(File::create(project.dir.path().join("worker.log")).unwrap());
    let worker = Stopped(command.spawn().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let workers = loop {
        let status = project.run(program, &["status", "--json"]).ok().json();
        if status.as_array().unwrap().len() >= count || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (worker, workers)
}

/// Ctrl-C on `run` while a worker runs what it dispatched: the worker is
/// told, and drops the work.
#[cfg(feature = "distributed")]
#[test]
fn ctrl_c_on_run_cancels_the_calls_it_dispatched() {
    let redis = test_redis();
    let project = Project::new()
        .env("ROUTINE_STORE", &fresh_s3_url("run-interrupt"))
        .env("ROUTINE_BROKER", &redis)
        .env(
            "ROUTINE_NAMESPACE",
            &format!("cli-run-interrupt-{}", std::process::id()),
        )
        .env("RUST_LOG", "info");
    let (_worker, workers) = start_worker(&project, &[]);
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
    // Trains for many seconds on the worker.
    let mut run = Command::new(example("train"));
    run.args([
        "run",
        "train-and-pick",
        "--arg",
        "seed=4",
        "--arg",
        "n=5000",
        "--arg",
        "epochs=20000",
        "--arg",
        "learning_rates=[0.1]",
    ])
    .current_dir(project.dir.path())
    .envs(project.env.iter().map(|(k, v)| (k, v)))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let mut child = run.spawn().unwrap();
    let log = || std::fs::read_to_string(project.dir.path().join("worker.log")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !log().contains("tname:fit:0.0.1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never started fit:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log().contains("cancelled by its caller") {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker was not told:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!log().contains("ERROR"), "{}", log());
}

/// A store prefix no other test uses, on the S3 server `./scripts/test`
/// starts.
#[cfg(feature = "distributed")]
fn fresh_s3_url(what: &str) -> String {
    let base = std::env::var("ROUTINE_TEST_S3_URL").expect(
        "ROUTINE_TEST_S3_URL is not set: run the tests with ./scripts/test, which starts an S3 server",
    );
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}/cli-{what}-{}-{nanos}",
        base.trim_end_matches('/'),
        std::process::id()
    )
}

#[cfg(feature = "distributed")]
#[test]
fn the_cache_commands_work_on_the_s3_store() {
    let project = Project::new().env("ROUTINE_STORE", &fresh_s3_url("cache"));
    let first = project.run("train", &["--quiet"]).ok();
    assert!(first.stdout.contains(", 8 ran,"), "{}", first.stdout);
    let second = project.run("train", &["--quiet"]).ok();
    assert!(second.stdout.contains(", 0 ran,"), "{}", second.stdout);

    let info = project.run("train", &["info", "--json"]).ok().json();
    assert!(info["store"].as_str().unwrap().starts_with("s3://"));
    assert_eq!(info["stored_results"], 8);
    let listed = project.run("train", &["cache", "ls", "--json"]).ok();
    assert_eq!(names_listed(&listed), ALL_RESULTS);
    let fit_key = listed.json()[0]["key"].as_str().unwrap().to_owned();
    let shown = project
        .run("train", &["cache", "show", &fit_key[..8], "--json"])
        .ok()
        .json();
    assert!(shown["value"]["weights"].is_array(), "{shown}");
    let stats = project
        .run("train", &["cache", "stats", "--json"])
        .ok()
        .json();
    assert_eq!(stats.as_array().unwrap().len(), 5);

    // By size: what is kept fits under the limit.
    let total: u64 = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["size"].as_u64().unwrap())
        .sum();
    let limit = total - 1;
    let by_size = project
        .run(
            "train",
            &["cache", "gc", "--max-size", &limit.to_string(), "--json"],
        )
        .ok()
        .json();
    assert!(!by_size["removed"].as_array().unwrap().is_empty());
    assert!(by_size["kept_bytes"].as_u64().unwrap() <= limit);

    project.run("train", &["cache", "rm", "fit"]).ok();
    assert!(
        !names_listed(&project.run("train", &["cache", "ls", "--json"]).ok())
            .contains(&"fit".to_owned())
    );

    // By age: nothing was used in the last second after a pause.
    std::thread::sleep(Duration::from_millis(2_100));
    let by_age = project
        .run("train", &["cache", "gc", "--older-than", "1s", "--json"])
        .ok()
        .json();
    assert!(by_age["removed"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["reason"] == "unused"));
    assert_eq!(
        project.run("train", &["cache", "ls", "--json"]).ok().json(),
        serde_json::json!([])
    );
}

#[cfg(feature = "distributed")]
#[test]
fn ttl_expiry_works_on_the_s3_store() {
    let project = Project::new().env("ROUTINE_STORE", &fresh_s3_url("ttl"));
    let run_quote = || {
        project
            .run("quotes", &["run", "quote", "--arg", "symbol=GLOBEX"])
            .ok()
    };
    assert!(run_quote().stderr.contains("computed"));
    assert!(run_quote().stderr.contains("from storage"));
    std::thread::sleep(Duration::from_millis(5_200));
    assert!(run_quote().stderr.contains("computed"));
}

#[cfg(feature = "distributed")]
#[test]
fn worker_and_status_through_the_broker() {
    let redis = test_redis();
    let namespace = format!("cli-{}", std::process::id());
    let project = Project::new()
        .env("ROUTINE_STORE", &fresh_s3_url("cluster"))
        .env("ROUTINE_BROKER", &redis)
        .env("ROUTINE_NAMESPACE", &namespace);

    let none = project.run("train", &["status"]).ok();
    assert!(
        none.stdout.contains("no worker is connected"),
        "{}",
        none.stdout
    );

    // One slot: the workflow is three levels deep, and each level gives its
    // slot back while it waits on the next.
    let (mut worker, workers) = start_worker(&project, &["--concurrency", "1"]);
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
    assert_eq!(workers[0]["routines"].as_array().unwrap().len(), 5);
    let table = project.run("train", &["status"]).ok();
    assert!(table.stdout.contains("WORKER"), "{}", table.stdout);

    // The workflow's sub-routines run on the worker.
    let ran = project.run("train", &["--quiet"]).ok();
    assert!(ran.stdout.contains("3 on workers"), "{}", ran.stdout);

    let _ = Command::new("kill").arg(worker.0.id().to_string()).status();
    let stopped = worker.0.wait().unwrap();
    assert!(
        stopped.success(),
        "a worker stops cleanly on SIGTERM: {stopped:?}"
    );
    // Its start is said plainly, not logged as a warning.
    let log = std::fs::read_to_string(project.dir.path().join("worker.log")).unwrap();
    assert!(log.contains("serving as a worker of"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn runs_show_prints_the_call_tree_of_a_run() {
    let project = Project::new();
    project.run("train", &["--quiet"]).ok();
    project.run("train", &["--quiet"]).ok(); // from storage: no new run
    let runs = project.run("train", &["runs", "ls", "--json"]).ok().json();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["root"], "train-and-pick@0.1.0");
    assert_eq!(
        (
            &runs[0]["computed"],
            &runs[0]["from_storage"],
            &runs[0]["failed"]
        ),
        (
            &serde_json::json!(8),
            &serde_json::json!(0),
            &serde_json::json!(0)
        )
    );
    let id = runs[0]["id"].as_str().unwrap().to_owned();

    let text = project
        .run("train", &["runs", "show", &id[..8]])
        .ok()
        .stdout;
    assert!(
        text.starts_with(&format!("run {id}: train-and-pick@0.1.0")),
        "{text}"
    );
    // Each line's tree drawing, routine and outcome (keys and times vary).
    let shape: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let label = words.iter().position(|w| w.contains('@')).unwrap();
            let mut kept = words[..=label].to_vec();
            kept.push(words.last().unwrap());
            kept.join(" ")
        })
        .collect();
    assert_eq!(
        shape,
        [
            "train-and-pick@0.1.0 computed",
            "├─ prepare-data@0.1.0 computed",
            "├─ train@0.0.1 computed",
            "│ ├─ fit@0.0.1 computed",
            "│ ├─ fit@0.0.1 computed",
            "│ ├─ fit@0.0.1 computed",
            "│ └─ fit@0.0.1 computed",
            "└─ pick-best@0.1.0 computed",
        ],
        "{text}"
    );

    let json = project
        .run("train", &["runs", "show", &id, "--json"])
        .ok()
        .json();
    assert_eq!(json["calls"].as_array().unwrap().len(), 8);
    assert_eq!(json["roots"].as_array().unwrap().len(), 1);
    let dot = project
        .run("train", &["runs", "show", &id, "--dot"])
        .ok()
        .stdout;
    assert!(dot.starts_with("digraph"), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), 7, "{dot}");

    // A result says which run and which call produced it.
    let picked = project
        .run("train", &["cache", "ls", "pick-best", "--json"])
        .ok()
        .json();
    let key = picked[0]["key"].as_str().unwrap().to_owned();
    let shown = project
        .run("train", &["cache", "show", &key[..8]])
        .ok()
        .stdout;
    assert!(shown.contains(&format!("run          {id}")), "{shown}");
    assert!(shown.contains("(train-and-pick@0.1.0)"), "{shown}");
    let json = project
        .run("train", &["cache", "show", &key[..8], "--json"])
        .ok()
        .json();
    assert_eq!(json["run"], id.as_str());
    assert_eq!(json["parent_routine"], "train-and-pick@0.1.0");

    // The trigger on `pick-best` wrote its report, naming the run.
    let report = std::fs::read_to_string(project.dir.path().join("best-model.md")).unwrap();
    assert!(report.contains(&id), "{report}");

    project
        .run("train", &["runs", "show", "ffff0000"])
        .fails_with(2, "no recorded run starts with");
}

/// Ctrl-C on a program whose workflow waits on dispatched calls: it stops
/// within about a second, its calls in flight given up, with exit code 130.
#[cfg(feature = "distributed")]
#[test]
fn ctrl_c_stops_a_distributed_program_with_exit_code_130() {
    let redis = test_redis();
    let project = Project::new()
        .env("ROUTINE_STORE", &fresh_s3_url("interrupt"))
        .env("ROUTINE_BROKER", &redis)
        .env(
            "ROUTINE_NAMESPACE",
            &format!("cli-interrupt-{}", std::process::id()),
        );
    // No worker: the workflow's sub-routines wait for one.
    let mut command = Command::new(example("train"));
    command
        .arg("--quiet")
        .current_dir(project.dir.path())
        .envs(project.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let interrupted = std::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let output = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        if interrupted.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the program did not stop within 10 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped_in = interrupted.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        stopped_in < Duration::from_secs(3),
        "stopped in {stopped_in:?}"
    );
}

/// With a broker, the store is shared with the workers: a bucket that does
/// not exist stops the program at start with exit code 2, naming the store.
#[cfg(feature = "distributed")]
#[test]
fn a_missing_bucket_stops_a_distributed_program_at_start() {
    let redis = test_redis();
    let bucket = format!("no-such-bucket-{}", std::process::id());
    let project = Project::new()
        .env("ROUTINE_STORE", &format!("s3://{bucket}/results"))
        .env("ROUTINE_BROKER", &redis)
        .env(
            "ROUTINE_NAMESPACE",
            &format!("cli-missing-{}", std::process::id()),
        );
    let ran = project
        .run("train", &["--quiet"])
        .fails_with(2, "cannot be used");
    assert!(ran.stderr.contains(&bucket), "{}", ran.stderr);
}

/// An S3 store is checked when the program starts, with or without a
/// broker: a missing bucket is one `error:` line naming it and one `hint:`
/// line, the server's XML only at `-v`; missing credentials say which
/// variables to set.
#[cfg(feature = "distributed")]
#[test]
fn s3_problems_are_one_error_and_a_hint() {
    let bucket = format!("no-such-bucket-{}", std::process::id());
    let project = Project::new().env("ROUTINE_STORE", &format!("s3://{bucket}/x"));
    let ran = project
        .run("train", &["--quiet"])
        .fails_with(2, &format!("the bucket `{bucket}` does not exist"));
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", ran.stderr);
    assert!(
        lines[0].starts_with("error: ") && lines[1].starts_with("hint: "),
        "{lines:?}"
    );
    assert!(
        !ran.stderr.contains('<'),
        "no XML without -v: {}",
        ran.stderr
    );
    let verbose = project.run("train", &["-v"]);
    assert!(
        verbose.stderr.contains("NoSuchBucket"),
        "{}",
        verbose.stderr
    );
    assert!(
        !verbose.stderr.contains("/x/x/"),
        "the prefix is said once: {}",
        verbose.stderr
    );
    // `run` checks it too.
    project
        .run(
            "train",
            &["run", "prepare-data", "--arg", "seed=1", "--arg", "n=1"],
        )
        .fails_with(2, "does not exist");

    let anonymous = Project::new()
        .env("ROUTINE_STORE", &fresh_s3_url("credentials"))
        .env("AWS_ACCESS_KEY_ID", "");
    let ran = anonymous
        .run("train", &["--quiet"])
        .fails_with(2, "no credentials are set");
    assert!(
        ran.stderr.contains("hint: set AWS_ACCESS_KEY_ID"),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("169.254"), "{}", ran.stderr);
}

/// A call no worker serves fails the program with one `error:` line that
/// names the namespace (a mismatch looks like "no workers" otherwise), not
/// a panic's trace; `info` shows the namespace.
#[cfg(feature = "distributed")]
#[test]
fn no_worker_is_one_error_naming_the_namespace() {
    let redis = test_redis();
    let namespace = format!("cli-lonely-{}", std::process::id());
    let project = Project::new()
        .env("ROUTINE_STORE", &fresh_s3_url("lonely"))
        .env("ROUTINE_BROKER", &redis)
        .env("ROUTINE_NAMESPACE", &namespace)
        .env("ROUTINE_NO_WORKER_WAIT", "1s")
        .env("RUST_BACKTRACE", "1");
    let ran = project
        .run("train", &["--quiet"])
        .fails_with(1, "no worker serves");
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", ran.stderr);
    assert!(
        lines[0].starts_with("error: task `tname:prepare-data:0.1.0`"),
        "{lines:?}"
    );
    assert!(
        lines[0].contains(&format!("in namespace `{namespace}`")),
        "{lines:?}"
    );
    let status = project.run("train", &["status"]).ok();
    assert!(status.stdout.contains(&namespace), "{}", status.stdout);
    let info = project.run("train", &["info"]).ok();
    assert!(
        info.stdout.contains(&format!("namespace {namespace}")),
        "{}",
        info.stdout
    );
}

/// `cache show` of a result computed by a one-call `run`: its run keeps no
/// record, and the hint says so instead of naming a `runs show` that fails.
#[test]
fn cache_show_of_a_one_call_run_gives_no_dead_hint() {
    let project = Project::new();
    project
        .run(
            "train",
            &["run", "prepare-data", "--arg", "seed=3", "--arg", "n=2"],
        )
        .ok();
    let listed = project
        .run("train", &["cache", "ls", "prepare-data", "--json"])
        .ok()
        .json();
    let key = listed[0]["key"].as_str().unwrap().to_owned();
    let shown = project.run("train", &["cache", "show", &key[..8]]).ok();
    assert!(
        shown.stdout.contains("this call alone: no record of calls"),
        "{}",
        shown.stdout
    );
    assert!(!shown.stdout.contains("runs show"), "{}", shown.stdout);
}

/// A name known neither to the program nor to the store is a typo: `cache
/// ls` and `cache rm` say so with the nearest names, and exit 2.
#[test]
fn cache_ls_and_rm_of_an_unknown_name_suggest_the_nearest() {
    let project = Project::new();
    project.run("train", &["--quiet"]).ok();
    for command in [["cache", "ls", "trian"], ["cache", "rm", "trian"]] {
        let ran = project.run("train", &command).fails_with(
            2,
            "no routine of this program or stored result is named `trian`",
        );
        assert!(
            ran.stderr.contains("did you mean `train`"),
            "{}",
            ran.stderr
        );
        assert!(!ran.stderr.contains("hex digits"), "{}", ran.stderr);
    }
    // A known routine with nothing stored is an empty list, not an error.
    project.run("train", &["cache", "rm", "fit"]).ok();
    let empty = project.run("train", &["cache", "ls", "fit"]).ok();
    assert!(
        empty.stdout.contains("no stored results"),
        "{}",
        empty.stdout
    );
}

/// A version that could leave the store is a usage error about the
/// version, not a store failure.
#[test]
fn cache_rm_refuses_a_version_that_is_not_one() {
    let project = Project::new();
    project
        .run("train", &["cache", "rm", "name@../../x"])
        .fails_with(2, "`../../x` is not a version");
}

/// `info` names the configuration file a setting came from, whichever it
/// is.
#[test]
fn info_names_the_configuration_file_it_read() {
    let project = Project::new();
    std::fs::write(
        project.dir.path().join("other.toml"),
        "store = 'elsewhere'\n",
    )
    .unwrap();
    let info = project
        .run("train", &["info", "--config", "other.toml"])
        .ok();
    assert!(
        info.stdout.contains("elsewhere (other.toml)"),
        "{}",
        info.stdout
    );
}

/// A folder of other files is not taken for a store: `cache gc` refuses it
/// and deletes nothing; so does running the program on it.
#[test]
fn commands_refuse_a_folder_that_is_not_a_store() {
    let project = Project::new();
    let folder = project.dir.path().join("build");
    std::fs::create_dir_all(folder.join("blobs/sha256")).unwrap();
    std::fs::write(folder.join(".cache.tmp"), b"keep").unwrap();
    std::fs::write(folder.join("blobs/sha256").join("ab".repeat(32)), b"keep").unwrap();
    let store = folder.to_str().unwrap();
    for args in [
        vec!["--store", store, "cache", "gc", "--max-size", "0"],
        vec!["--store", store, "cache", "rm", "fit"],
        vec!["--store", store, "--quiet"],
    ] {
        let ran = project
            .run("train", &args)
            .fails_with(2, "is not a routine store");
        assert!(ran.stderr.contains("--store"), "{}", ran.stderr);
    }
    assert_eq!(std::fs::read(folder.join(".cache.tmp")).unwrap(), b"keep");
    assert!(folder.join("blobs/sha256").join("ab".repeat(32)).exists());
    project
        .run("train", &["--store", "/", "--quiet"])
        .fails_with(2, "root of a file system");
}

/// The database layout: the train example runs on it, its second run comes
/// from storage, `cache` commands see its results, and a file-store opening
/// of the same folder is refused rather than missing them.
#[test]
fn the_database_layout_keeps_results_and_is_not_opened_as_files() {
    let project = Project::new().env("ROUTINE_LAYOUT", "database");
    let first = project.run("train", &["--quiet"]).ok();
    assert!(first.stdout.contains("8 ran"), "{}", first.stdout);
    let second = project.run("train", &["--quiet"]).ok();
    assert!(second.stdout.contains("0 ran"), "{}", second.stdout);
    assert!(project.store().join(".database").is_dir());
    assert_eq!(
        names_listed(&project.run("train", &["cache", "ls", "--json"]).ok()),
        ALL_RESULTS
    );
    let removed = project.run("train", &["cache", "rm", "fit"]).ok();
    assert!(
        removed.stdout.contains("removed 4 results"),
        "{}",
        removed.stdout
    );
    // What is left (the 4 other results and the run's record) is
    // collected as files are.
    let collected = project
        .run("train", &["cache", "gc", "--max-size", "0", "--json"])
        .ok()
        .json();
    assert_eq!(
        collected["removed"].as_array().unwrap().len(),
        5,
        "{collected}"
    );
    let empty = project.run("train", &["cache", "ls"]).ok();
    assert!(
        empty.stdout.contains("no stored results"),
        "{}",
        empty.stdout
    );

    let as_files = project.anew().env("ROUTINE_LAYOUT", "files");
    as_files
        .run("train", &["--quiet"])
        .fails_with(2, "keeps its results in the database layout, not files");
    as_files
        .run("train", &["--quiet"])
        .fails_with(2, "cache migrate --to files");
}

/// `cache migrate` moves a store's small results into its database and
/// back: after each move the program, in the matching layout, finds every
/// result and runs nothing.
#[test]
fn cache_migrate_moves_a_store_between_layouts() {
    let files = Project::new().env("ROUTINE_LAYOUT", "files");
    files.run("train", &["--quiet"]).ok();
    let moved = files
        .run("train", &["cache", "migrate", "--to", "database", "--json"])
        .ok()
        .json();
    // The 8 results, and the run's record.
    assert_eq!(moved["moved"], 9, "{moved}");

    let database = files.anew().env("ROUTINE_LAYOUT", "database");
    let again = database.run("train", &["--quiet"]).ok();
    assert!(again.stdout.contains("0 ran"), "{}", again.stdout);
    assert!(database.store().join(".database").is_dir());

    let back = database
        .run("train", &["cache", "migrate", "--to", "files"])
        .ok();
    assert!(
        back.stdout.contains("to the files layout"),
        "{}",
        back.stdout
    );
    let files = database.anew().env("ROUTINE_LAYOUT", "files");
    let last = files.run("train", &["--quiet"]).ok();
    assert!(last.stdout.contains("0 ran"), "{}", last.stdout);
    assert!(!files.store().join(".database").exists());
    files
        .run("train", &["cache", "migrate", "--to", "sqlite"])
        .fails_with(2, "unknown layout `sqlite`");
}

/// A store on a read-only mount, through the command line: the program's
/// results come back, a miss runs and says once that nothing can be
/// stored, the commands that read work, and those that remove exit 2 with
/// one error line.
#[test]
fn a_read_only_store_is_read_by_the_command_line() {
    let project = Project::new();
    project.run("train", &[]).ok();
    let key = project
        .run("train", &["cache", "ls", "fit", "--json"])
        .ok()
        .json()[0]["key"]
        .as_str()
        .unwrap()[..8]
        .to_owned();
    let run = project.run("train", &["runs", "ls", "--json"]).ok().json()[0]["id"]
        .as_str()
        .unwrap()[..8]
        .to_owned();
    let read_only = common::ReadOnly::of(&project.store());
    let project = project.env("ROUTINE_STORE", read_only.path.to_str().unwrap());

    let hit = project.run("train", &[]).ok();
    assert!(hit.stdout.contains("1 from storage"), "{}", hit.stdout);
    let args = ["run", "prepare-data", "--arg", "seed=99", "--arg", "n=2"];
    let miss = project.run("train", &args).ok();
    assert!(miss.stdout.contains("\"targets\""), "{}", miss.stdout);
    assert_eq!(
        miss.stderr.matches("is read-only here").count(),
        1,
        "said once: {}",
        miss.stderr
    );
    for args in [
        &["cache", "ls"][..],
        &["cache", "stats"],
        &["cache", "show", &key],
        &["runs", "ls"],
        &["runs", "show", &run],
    ] {
        let ran = project.run("train", args).ok();
        assert!(!ran.stdout.is_empty(), "{args:?}");
    }
    for args in [
        &["cache", "rm", "fit"][..],
        &["cache", "gc", "--max-size", "1KiB"],
    ] {
        let ran = project
            .run("train", args)
            .fails_with(2, "is read-only here");
        assert_eq!(ran.stderr.lines().count(), 1, "{args:?}: {}", ran.stderr);
    }
}

#[test]
fn runs_ls_lists_the_newest_run_first() {
    let project = Project::new();
    project.run("train", &["--quiet"]).ok();
    let args = [
        "run",
        "train-and-pick",
        "--arg",
        "seed=3",
        "--arg",
        "n=50",
        "--arg",
        "epochs=5",
        "--arg",
        "learning_rates=[0.1]",
    ];
    project.run("train", &args).ok();
    let runs = project.run("train", &["runs", "ls", "--json"]).ok().json();
    let computed: Vec<&Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["computed"])
        .collect();
    // The later run trained one model: 5 calls; the first, four: 8.
    assert_eq!(
        computed,
        [&serde_json::json!(5), &serde_json::json!(8)],
        "{runs}"
    );
    let table = project.run("train", &["runs", "ls"]).ok().stdout;
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(
        rows[0].contains(" 5 ") && rows[1].contains(" 8 "),
        "{table}"
    );
}

#[test]
fn verbose_prints_a_line_per_call() {
    let project = Project::new();
    let ran = project.run("train", &["-v"]).ok();
    let lines: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.contains("call finished"))
        .collect();
    assert_eq!(lines.len(), 8, "{}", ran.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("fit") && l.contains("computed")),
        "{lines:?}"
    );
    // Without -v, none.
    let quiet = project.anew().run("train", &[]).ok();
    assert!(!quiet.stderr.contains("call finished"), "{}", quiet.stderr);
}

/// Looking at a result (`cache show`) is not a use: it does not keep the
/// result from `cache gc --older-than`.
#[test]
fn cache_show_does_not_count_as_a_use() {
    let project = Project::new().env("ROUTINE_LAYOUT", "files");
    project.run("train", &["--quiet"]).ok();
    // Every result last used two days ago.
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    for name in [
        "fit",
        "pick-best",
        "prepare-data",
        "train",
        "train-and-pick",
    ] {
        for version in std::fs::read_dir(project.store().join(name)).unwrap() {
            for entry in std::fs::read_dir(version.unwrap().path()).unwrap() {
                let file = File::options()
                    .write(true)
                    .open(entry.unwrap().path())
                    .unwrap();
                let times = FileTimes::new()
                    .set_accessed(two_days_ago)
                    .set_modified(two_days_ago);
                file.set_times(times).unwrap();
            }
        }
    }
    let picked = project
        .run("train", &["cache", "ls", "pick-best", "--json"])
        .ok()
        .json();
    let key = picked[0]["key"].as_str().unwrap()[..8].to_owned();
    project.run("train", &["cache", "show", &key]).ok();
    let after = project
        .run("train", &["cache", "ls", "pick-best", "--json"])
        .ok()
        .json();
    assert_eq!(after[0]["last_used"], picked[0]["last_used"], "{after}");
    let gc = project
        .run("train", &["cache", "gc", "--older-than", "1d", "--json"])
        .ok()
        .json();
    assert_eq!(gc["kept_results"], 0, "{gc}");
}

/// `cache gc` counts results as `cache stats` and `info` do: the records
/// of runs apart.
#[test]
fn cache_gc_counts_results_as_stats_does() {
    let project = Project::new();
    project.run("train", &["--quiet"]).ok();
    let info = project.run("train", &["info", "--json"]).ok().json();
    assert_eq!(info["stored_results"], 8);
    let gc = project.run("train", &["cache", "gc"]).ok().stdout;
    assert!(gc.contains("kept 8 results"), "{gc}");
}

/// One rule, whatever the entry point: an existing store is opened in its
/// own layout, a new one in the configured (else the default) layout; a
/// layout asked for that the store does not have is refused, naming
/// `cache migrate`. Commands that only read make no store.
#[test]
fn a_store_keeps_its_layout_whatever_opens_it() {
    let project = Project::new();
    let info = project.run("train", &["info"]).ok().stdout;
    assert!(info.contains("layout   database (a new store)"), "{info}");
    assert!(!project.store().exists(), "`info` made the store");

    let files = project.anew().env("ROUTINE_LAYOUT", "files");
    files.run("train", &["--quiet"]).ok();
    let plain = files.anew();
    for args in [
        &["info"][..],
        &["cache", "ls"],
        &["--quiet"],
        &["runs", "ls"],
    ] {
        plain.run("train", args).ok();
    }
    assert!(
        !plain.store().join(".database").exists(),
        "a store of files stays one"
    );
    let info = plain.run("train", &["info"]).ok().stdout;
    assert!(info.contains("layout   files"), "{info}");
    let url = format!("file://{}", plain.store().display());
    let by_url = plain.anew().env("ROUTINE_STORE", &url);
    let again = by_url.run("train", &["--quiet"]).ok();
    assert!(again.stdout.contains("0 ran"), "{}", again.stdout);
    assert!(!by_url.store().join(".database").exists());
    let by_url = by_url.env("ROUTINE_LAYOUT", "files");
    by_url.run("train", &["--quiet"]).ok();
    by_url
        .anew()
        .env("ROUTINE_STORE", &url)
        .env("ROUTINE_LAYOUT", "database")
        .run("train", &["cache", "ls"])
        .fails_with(2, "keeps its results in the files layout, not database");
}

/// The lines a terminal shows after `output` is written to it: carriage
/// returns go back to the start of the line, `ESC [ 2 K` clears it, other
/// escape sequences draw nothing.
fn screen(output: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let mut column = 0;
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut sequence = String::new();
                for c in chars.by_ref() {
                    sequence.push(c);
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
                if sequence == "2K" {
                    lines.last_mut().unwrap().clear();
                }
            }
            '\r' => column = 0,
            '\n' => {
                lines.push(Vec::new());
                column = 0;
            }
            c => {
                let line = lines.last_mut().unwrap();
                if line.len() <= column {
                    line.resize(column, ' ');
                    line.push(c);
                } else {
                    line[column] = c;
                }
                column += 1;
            }
        }
    }
    lines.into_iter().map(|l| l.into_iter().collect()).collect()
}

/// In a terminal, the progress line is gone before the program prints its
/// own output: the train example's result starts a line of its own.
#[test]
fn the_progress_line_is_cleared_before_main_prints() {
    let project = Project::new();
    let train = example("train");
    let ran = Command::new("script")
        .args(["-qec", train.to_str().unwrap(), "/dev/null"])
        .current_dir(project.dir.path())
        .output()
        .expect("`script` (util-linux) runs the example in a terminal");
    assert!(ran.status.success(), "{ran:?}");
    let shown = screen(&String::from_utf8_lossy(&ran.stdout));
    let result = shown
        .iter()
        .find(|l| l.contains("best model:"))
        .unwrap_or_else(|| panic!("{shown:#?}"));
    assert!(result.starts_with("best model:"), "{shown:#?}");
    assert!(
        shown.iter().any(|l| l.starts_with("totals: 8 calls")),
        "{shown:#?}"
    );
}

/// A command shown in the docs: after `$ `, with the lines shown after it;
/// or alone on its line (`output` is then `None`).
struct Shown {
    file: &'static str,
    command: String,
    output: Option<Vec<String>>,
}

/// Every command of the train example in the `text` blocks of `markdown`.
fn shown_commands(file: &'static str, markdown: &str) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::new();
    let mut in_block = false;
    // Whether the lines that follow are the last command's output.
    let mut collecting = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_block = line == "```text";
            collecting = false;
            continue;
        }
        if !in_block || line.is_empty() {
            continue;
        }
        let settings_then_train = line
            .split_whitespace()
            .find(|w| !w.contains('='))
            .is_some_and(|w| w == "train");
        if let Some(command) = line.strip_prefix("$ ") {
            shown.push(Shown {
                file,
                command: command.to_owned(),
                output: Some(Vec::new()),
            });
            collecting = true;
        } else if collecting {
            if let Some(Some(output)) = shown.last_mut().map(|s| s.output.as_mut()) {
                output.push(line.to_owned());
            }
        } else if settings_then_train && !line.starts_with("train [") {
            shown.push(Shown {
                file,
                command: line.to_owned(),
                output: None,
            });
        }
    }
    shown
}

/// A line's shape: what changes from run to run (hashes, times, ages,
/// floating-point values, column widths) replaced by placeholders; counts,
/// sizes, names and words kept.
fn shape(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let punctuation = |c: char| ",;:()[]\"'`".contains(c);
    let core = |word: &str| word.trim_matches(punctuation).to_owned();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        let bare = core(word);
        let next = words.get(i + 1).map(|w| core(w)).unwrap_or_default();
        let number = bare.parse::<f64>().is_ok();
        let (start, end) = match word.find(bare.as_str()) {
            Some(at) if !bare.is_empty() => (at, at + bare.len()),
            _ => (0, 0),
        };
        let replaced =
            |placeholder: &str| format!("{}{placeholder}{}", &word[..start], &word[end..]);
        if number && ["us", "ms", "s"].contains(&next.as_str()) {
            out.push(format!(
                "{}<time>{}",
                &word[..start],
                &words[i + 1][next.len()..]
            ));
            i += 2;
            continue;
        }
        let age = bare
            .strip_suffix(['s', 'm', 'h', 'd'])
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if age && next == "ago" {
            out.push(format!("<age>{}", &words[i + 1][3..]));
            i += 2;
            continue;
        }
        let hex = bare.len() >= 8 && bare.chars().all(|c| c.is_ascii_hexdigit());
        // `host:pid`, as `why` names the process that wrote a result.
        let process = bare.rsplit_once(':').is_some_and(|(host, pid)| {
            !host.is_empty()
                && !host.contains('/')
                && !pid.is_empty()
                && pid.chars().all(|c| c.is_ascii_digit())
        });
        let timestamp = bare.len() >= 20 && bare.ends_with('Z') && bare.contains('T');
        let size_follows = ["B", "KiB", "MiB", "GiB"].contains(&next.as_str());
        let float = number && (bare.contains('.') || bare.contains('e')) && !size_follows;
        out.push(match () {
            _ if hex => replaced("<hex>"),
            _ if process => replaced("<process>"),
            _ if timestamp => replaced("<timestamp>"),
            _ if float => replaced("<x>"),
            _ => word.to_owned(),
        });
        i += 1;
    }
    out.join(" ")
}

#[test]
fn shape_keeps_what_the_docs_promise_and_drops_what_varies() {
    assert_eq!(
        shape("35a1642bfd07  fit@0.0.1  216 B  2m ago   0s ago"),
        "<hex> fit@0.0.1 216 B <age> <age>"
    );
    assert_eq!(
        shape("run bb550b479072a4e818ec53863a0aeda3: x@0.1.0, started 2026-11-28T21:43:07Z, took 506.8 ms; 8 computed"),
        "run <hex>: x@0.1.0, started <timestamp>, took <time>; 8 computed"
    );
    assert_eq!(shape("      -0.43832989989928106,"), "<x>,");
    assert_eq!(shape("by gpu-1:28400 (train"), "by <process> (train");
    assert_eq!(
        shape("removed 1 result (156.4 KiB); kept 8 results (3.7 KiB)"),
        "removed 1 result (156.4 KiB); kept 8 results (3.7 KiB)"
    );
}

/// Runs a command line as the docs show it, through a shell in which
/// `train` is the train example, in `project`'s folder and settings:
/// its exit code and what it printed, standard error first (as a terminal
/// shows `run`'s report before its result).
fn run_shown(project: &Project, command: &str) -> (i32, Vec<String>) {
    let mut run = Command::new("sh");
    run.arg("-c")
        .arg(format!("train() {{ \"$TRAIN\" \"$@\"; }}\n{command}"))
        .env("TRAIN", example("train"))
        .current_dir(project.dir.path());
    for (name, _) in std::env::vars() {
        if name.starts_with("ROUTINE_") || name == "RUST_LOG" {
            run.env_remove(name);
        }
    }
    run.envs(project.env.iter().map(|(k, v)| (k, v)));
    let output = run.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    (
        output.status.code().unwrap_or(-1),
        text.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Every command of the train example that README.md and docs/cli.md
/// show, run as shown (the README's after the README's two runs of the
/// example, as a newcomer runs them): each with its output shown prints
/// it, line for line but for what varies between runs; each shown alone
/// succeeds. Addresses of the docs' own cluster are this test's Redis and
/// S3 server, in the build with the `distributed` feature (the suite runs
/// this test in both builds).
#[test]
fn the_commands_the_docs_show_print_what_they_show() {
    let readme = shown_commands("README.md", include_str!("../README.md"));
    let cli = shown_commands("docs/cli.md", include_str!("../docs/cli.md"));
    assert!(
        readme.len() >= 5 && cli.len() >= 5,
        "the docs show commands"
    );
    let project = Project::new();
    project.run("train", &[]).ok();
    project.run("train", &[]).ok();
    // The file docs/cli.md says its `run` example reads.
    std::fs::write(
        project.dir.path().join("args.json"),
        r#"{"seed": 42, "n": 100}"#,
    )
    .unwrap();
    let run_id = project.run("train", &["runs", "ls", "--json"]).ok().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for shown in readme.iter().chain(&cli) {
        let mut command = shown.command.clone();
        if let Some(prefix) = command.strip_prefix("train runs show ") {
            // The run shown is this store's.
            command = command.replace(prefix, &run_id[..8]);
        }
        if command.contains("redis://") || command.contains("s3://") {
            if !cfg!(feature = "distributed") {
                continue;
            }
            command = with_test_services(&command);
        }
        #[cfg(feature = "distributed")]
        if command.contains(" worker") {
            let (_worker, workers, _folder) = start_shown_worker(&command);
            assert_eq!(
                workers.as_array().map(Vec::len),
                Some(1),
                "{command}: {workers}"
            );
            continue;
        }
        let (code, printed) = run_shown(&project, &command);
        let Some(output) = &shown.output else {
            assert_eq!(
                code,
                0,
                "{}: `{command}` failed:\n{}",
                shown.file,
                printed.join("\n")
            );
            continue;
        };
        let expected: Vec<String> = output.iter().map(|l| shape(l)).collect();
        let got: Vec<String> = printed.iter().map(|l| shape(l)).collect();
        assert_eq!(
            got,
            expected,
            "{}: `{command}` (exit {code}) printed:\n{}",
            shown.file,
            printed.join("\n")
        );
    }
}

/// `command` with the docs' example cluster replaced by this test's
/// services: its Redis, and a fresh prefix of its S3 server's bucket (a
/// bucket the docs say does not exist stays missing).
#[cfg(feature = "distributed")]
fn with_test_services(command: &str) -> String {
    let redis = test_redis();
    command
        .replace("redis://10.0.0.5:6379", &redis)
        .replace("redis://127.0.0.1:6379", &redis)
        .replace("s3://bucket/results", &fresh_s3_url("docs"))
}

#[cfg(not(feature = "distributed"))]
fn with_test_services(command: &str) -> String {
    command.to_owned()
}

/// Starts the worker a shown command starts, in a folder and namespace of
/// its own, once `status` shows it; it stops when the first value drops.
#[cfg(feature = "distributed")]
fn start_shown_worker(command: &str) -> (Stopped, Value, Project) {
    let broker = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ROUTINE_BROKER="))
        .expect("a worker's command names its broker");
    let store = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ROUTINE_STORE="))
        .expect("a worker's command names its store");
    let args: Vec<&str> = command
        .split(" worker")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    let shown = Project {
        dir: tempfile::tempdir().unwrap(),
        env: vec![
            ("ROUTINE_BROKER".into(), broker.into()),
            ("ROUTINE_STORE".into(), store.into()),
            (
                "ROUTINE_NAMESPACE".into(),
                format!("docs-{}", std::process::id()),
            ),
        ],
    };
    let (worker, workers) = start_worker(&shown, &args);
    (worker, workers, shown)
}

/// The data-parallel example: four units train one model, once; `run`
/// takes the multi-unit task's input as any task's argument.
#[test]
fn the_data_parallel_example_trains_once() {
    let project = Project::new();
    let first = project.run("data_parallel", &[]).ok();
    assert!(
        first
            .stdout
            .contains("weights [2.000, -3.000, 0.500], bias 1.000"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("1 calls, 1 ran"), "{}", first.stdout);
    let second = project.run("data_parallel", &[]).ok();
    assert!(
        second.stdout.contains("1 calls, 0 ran, 1 from storage"),
        "{}",
        second.stdout
    );
    let tasks = project.run("data_parallel", &["tasks"]).ok().stdout;
    assert!(
        tasks.contains("async fn fit(input: Plan) -> Model, 4 units"),
        "{tasks}"
    );
    let input = r#"input={"seed": 7, "rows": 400, "epochs": 50, "learning_rate": 0.1}"#;
    let ran = project
        .run(
            "data_parallel",
            &["run", "data-parallel-fit", "--arg", input],
        )
        .ok();
    assert!(
        ran.stderr
            .contains("computed (tname:data-parallel-fit:1.0.0)"),
        "{}",
        ran.stderr
    );
    assert!(ran.json()["weights"]
        .as_array()
        .is_some_and(|w| w.len() == 3));
}

/// The data-parallel example with a broker: its four units run as one
/// gang on two workers of two slots, `runs show` says where each ran, and
/// the second run trains nothing.
#[cfg(feature = "distributed")]
#[test]
fn the_data_parallel_example_trains_on_two_workers() {
    let project = Project::new()
        .env("ROUTINE_STORE", &fresh_s3_url("data-parallel"))
        .env("ROUTINE_BROKER", &test_redis())
        .env(
            "ROUTINE_NAMESPACE",
            &format!("cli-data-parallel-{}", std::process::id()),
        );
    let (_first, _) = start_worker_of("data_parallel", &project, &["--concurrency", "2"], 1);
    let (_second, workers) = start_worker_of("data_parallel", &project, &["--concurrency", "2"], 2);
    assert_eq!(workers.as_array().unwrap().len(), 2, "{workers}");
    let first = project.run("data_parallel", &[]).ok();
    assert!(
        first
            .stdout
            .contains("weights [2.000, -3.000, 0.500], bias 1.000")
            && first.stdout.contains("1 calls, 1 ran"),
        "{}",
        first.stdout
    );
    let runs = project
        .run("data_parallel", &["runs", "ls", "--json"])
        .ok()
        .json();
    let run = runs[0]["id"].as_str().unwrap().to_owned();
    let shown = project
        .run("data_parallel", &["runs", "show", &run])
        .ok()
        .stdout;
    let ids: Vec<&str> = (workers.as_array().unwrap().iter())
        .map(|w| w["worker"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(shown.contains(id), "no unit on {id}:\n{shown}");
    }
    let second = project.run("data_parallel", &[]).ok();
    assert!(
        second.stdout.contains("1 calls, 0 ran, 1 from storage"),
        "{}",
        second.stdout
    );
}
