//! The `ui` subcommand (feature `ui`), used over HTTP as a browser would:
//! the train example fills a store, `train ui` serves it, and the pages are
//! read back. The access rules: loopback needs no token; any other address
//! needs one (exit 2 without), and every request must then carry it.
#![cfg(feature = "ui")]

mod common;

#[cfg(feature = "distributed")]
#[path = "web_view/browser.rs"]
mod browser;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `train ui` process, stopped when dropped.
struct Served {
    child: Child,
    port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn train(dir: &Path) -> Command {
    let mut command = Command::new(common::example("train"));
    command.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("ROUTINE_") {
            command.env_remove(name);
        }
    }
    command
}

fn serve(dir: &Path, args: &[&str]) -> Served {
    serve_with(dir, args, &[])
}

/// `train ui` in `dir`, with `args` and the environment `env`, once it
/// listens.
fn serve_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let child = train(dir)
        .envs(env.iter().copied())
        .args(["ui", "--bind", &bind])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "`train ui` did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

/// What follows `prefix` in the first link of `page` that starts with it,
/// unescaped as a browser would follow it.
fn link(page: &str, prefix: &str) -> String {
    page.split(&format!("href=\"{prefix}"))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no link to {prefix} in {page}"))
        .replace("&amp;", "&")
}

/// A GET of `path`: the status and the whole response (headers and body).
fn get(served: &Served, path: &str, headers: &[&str]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", served.port)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[test]
fn the_pages_show_the_runs_their_calls_and_one_call() {
    let dir = tempfile::tempdir().unwrap();
    assert!(train(dir.path()).output().unwrap().status.success());
    let served = serve(dir.path(), &[]);

    let (status, runs) = get(&served, "/", &[]);
    assert_eq!(status, 200, "{runs}");
    assert!(runs.contains("train-and-pick@0.1.0"), "{runs}");
    let run = link(&runs, "/runs/");

    let (status, page) = get(&served, &format!("/runs/{run}"), &[]);
    assert_eq!(status, 200, "{page}");
    for task in [
        "prepare-data@0.1.0",
        "train@0.0.1",
        "fit@0.0.1",
        "pick-best@0.1.0",
    ] {
        assert!(page.contains(task), "{task} not in {page}");
    }
    assert!(page.contains("4 computed"), "the fits grouped: {page}");
    // The lineage, drawn on the server: one node per task.
    let svg = page.split("<svg").nth(1).expect("a graph");
    for task in ["train-and-pick@0.1.0", "fit@0.0.1", "pick-best@0.1.0"] {
        assert!(svg.contains(task), "{task} not drawn: {svg}");
    }
    let call = link(&page, "/calls/fit/");
    let fit_key = call
        .split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (status, around) = get(&served, &format!("/runs/{run}?call={fit_key}"), &[]);
    assert_eq!(status, 200, "{around}");
    let svg = around.split("<svg").nth(1).expect("a graph");
    assert!(
        svg.contains(&fit_key[..12]) && svg.contains("train@0.0.1"),
        "the call and its caller: {svg}"
    );
    let (status, page) = get(&served, &format!("/calls/fit/{call}"), &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("hits: written"), "{page}");
    assert!(page.contains("(train 0.1.0)"), "its writer: {page}");
    assert!(
        page.contains("&quot;loss&quot;") || page.contains("\"loss\""),
        "the value: {page}"
    );

    let (status, tasks) = get(&served, "/tasks", &[]);
    assert_eq!(status, 200);
    assert!(tasks.contains("fit@0.0.1"), "{tasks}");
    let (status, metrics) = get(&served, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("routine_stored_results{task=\"fit\",version=\"0.0.1\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("routine_recorded_runs 1"), "{metrics}");

    // Filters: no run failed.
    let (_, failed) = get(&served, "/?outcome=failed", &[]);
    assert!(failed.contains("No run fits."), "{failed}");
    let (status, _) = get(&served, "/?outcome=sometimes", &[]);
    assert_eq!(status, 400);
}

#[test]
fn user_data_is_shown_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &[]);
    let script = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let key = "0".repeat(64);
    for path in [
        format!("/?task={script}"),
        format!("/calls/{script}/1.0.0/{key}"),
    ] {
        let (_, page) = get(&served, &path, &[]);
        assert!(!page.contains("<script>"), "{path}: {page}");
        assert!(page.contains("&lt;script&gt;"), "{path}: {page}");
    }
}

#[test]
fn a_token_is_needed_off_loopback_and_checked_on_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let refused = train(dir.path())
        .args(["ui", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs a token"), "{stderr}");

    let served = serve(dir.path(), &["--token", "s3cret"]);
    assert_eq!(get(&served, "/", &[]).0, 401);
    assert_eq!(
        get(&served, "/metrics", &["Authorization: Bearer wrong"]).0,
        401
    );
    assert_eq!(get(&served, "/", &["Authorization: Bearer s3cret"]).0, 200);
    let (status, response) = get(&served, "/tasks?token=s3cret", &[]);
    assert_eq!(status, 200);
    assert!(
        response.contains("routine_ui_token=s3cret"),
        "the token becomes a cookie: {response}"
    );
    assert_eq!(
        get(&served, "/tasks", &["Cookie: routine_ui_token=s3cret"]).0,
        200
    );
}

/// What arrives on `path` within `wait`: for a stream of events.
fn read_for(served: &Served, path: &str, wait: Duration, until: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", served.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains(until) {
        if let Ok(n) = stream.read(&mut buffer) {
            seen.extend_from_slice(&buffer[..n]);
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[cfg(feature = "distributed")]
#[test]
fn the_workers_page_shows_a_worker_arrive_live() {
    let redis = std::env::var("ROUTINE_TEST_REDIS_URL").expect(
        "ROUTINE_TEST_REDIS_URL is not set: run the tests with ./scripts/test, which starts Redis",
    );
    let dir = tempfile::tempdir().unwrap();
    let namespace = format!("web-view-{}", std::process::id());
    let env = [
        ("ROUTINE_BROKER", redis.as_str()),
        ("ROUTINE_NAMESPACE", namespace.as_str()),
    ];
    let served = serve_with(dir.path(), &[], &env);
    let (status, page) = get(&served, "/workers", &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("0 workers"), "{page}");
    assert!(page.contains("sse-connect=\"/workers/events\""), "{page}");
    let script = page
        .split("src=\"/assets/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads htmx");
    let (status, response) = get(&served, &format!("/assets/{script}"), &[]);
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("htmx"), "the vendored script");

    // A worker starts: the event stream the page listens to shows it.
    let metrics_port = free_port();
    let metrics_bind = format!("127.0.0.1:{metrics_port}");
    let mut worker = train(dir.path())
        .envs(env)
        .args(["worker", "--metrics", &metrics_bind])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let events = read_for(
        &served,
        "/workers/events",
        Duration::from_secs(20),
        "1 worker<",
    );
    // The workflow runs its sub-calls on the worker (the same store
    // folder): the worker's metrics count them.
    let ran = train(dir.path()).envs(env).output().unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let metrics = Served {
        child: Command::new("true").spawn().unwrap(),
        port: metrics_port,
    };
    let (status, text) = get(&metrics, "/metrics", &[]);
    // The view's own /metrics, with a broker: the cluster's gauges.
    let (_, cluster) = get(&served, "/metrics", &[]);
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("routine_calls_total{task=\"tname:fit:0.0.1\",outcome=\"computed\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("routine_call_seconds_count{task=\"tname:fit:0.0.1\"} 8"),
        "{text}"
    );
    assert!(text.contains("routine_misses_total"), "{text}");
    assert!(cluster.contains("\nroutine_workers 1\n"), "{cluster}");
    assert!(
        cluster.contains("routine_queue_depth{routine=\"tname:fit:0.0.1\"} 0"),
        "every request answered: {cluster}"
    );
    assert!(events.contains("text/event-stream"), "{events}");
    assert!(events.contains("data: <p>1 worker</p>"), "{events}");
    assert!(
        ["INITIALIZING", "IDLE", "WORKING"]
            .iter()
            .any(|state| events.contains(state)),
        "its state: {events}"
    );
}

/// A step that fails, its error naming its input (user data, markup and
/// all).
#[routine::task(name = "web-step", version = "1.0.0")]
async fn step(input: String) -> Result<u32, String> {
    Err(format!("bad input {input}"))
}

/// A workflow that handles its step's failure: one run of two calls.
#[routine::task(name = "web-careful", version = "1.0.0")]
async fn careful(input: String) -> String {
    match step(input).await {
        Ok(y) => y.to_string(),
        Err(e) => format!("handled: {e}"),
    }
}

#[test]
fn a_failed_calls_page_shows_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = routine::Engine::local(dir.path().join(".routine")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(engine.scope(careful("<b>7</b>".into())));
    drop(engine);
    let served = serve(dir.path(), &[]);

    let (_, runs) = get(&served, "/", &[]);
    let run = link(&runs, "/runs/");
    let (status, page) = get(&served, &format!("/runs/{run}"), &[]);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("bad input &lt;b&gt;7&lt;/b&gt;"),
        "the error, as text: {page}"
    );
    let call = link(&page, "/calls/web-step/");
    let (status, page) = get(&served, &format!("/calls/web-step/{call}"), &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("class=\"failed\">failed"), "{page}");
    assert!(page.contains("bad input &lt;b&gt;7&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<b>7"), "{page}");
    // Its argument, from the run's record, as text (by place: `train ui`
    // does not have this test's tasks).
    assert!(page.contains("argument 1"), "{page}");
    assert!(
        page.contains("&quot;&lt;b&gt;7&lt;/b&gt;&quot;"),
        "the argument's value: {page}"
    );
    // Why it would run is worked out on demand (it lists the task's
    // stored calls).
    assert!(page.contains("It would run."), "{page}");
    let separator = if call.contains('?') { '&' } else { '?' };
    let (status, page) = get(
        &served,
        &format!("/calls/web-step/{call}{separator}why=true"),
        &[],
    );
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("runs: nothing was stored for this task"),
        "{page}"
    );
}

#[test]
fn the_runs_page_shows_a_new_run_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".routine");
    fn run_careful(store: &Path, input: &str) {
        let engine = routine::Engine::local(store).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(engine.scope(careful(input.into())));
    }
    run_careful(&store, "first");
    let served = serve(dir.path(), &[]);
    let (status, page) = get(&served, "/", &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("1 run<"), "{page}");
    assert!(
        page.contains("sse-connect=\"/events/runs?total=1&amp;newest="),
        "the table follows the store: {page}"
    );
    // A second run lands while the page's event stream is open.
    let second = std::thread::spawn({
        let store = store.clone();
        move || {
            std::thread::sleep(Duration::from_millis(500));
            run_careful(&store, "second");
        }
    });
    let events = read_for(&served, "/events/runs", Duration::from_secs(20), "2 runs<");
    second.join().unwrap();
    assert!(
        events.contains("data: <p>1 run</p>"),
        "first the page as it was: {events}"
    );
    assert!(
        events.contains("data: <p>2 runs</p>"),
        "then the new run: {events}"
    );
}
