//! The web view in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver) with fantoccini. The store holds a run
//! of the train example, a run whose step failed with `<script>` in its
//! error, and a workflow whose steps ran on a worker; the test clicks
//! through the pages as a person would, watches the workers page change
//! without reloading, and writes a screenshot of each page (to
//! `ROUTINE_SCREENSHOTS`, by default `target/ui-screenshots`).
//!
//! `./scripts/test` installs Chromium and chromedriver when missing and
//! names them in `ROUTINE_TEST_CHROMEDRIVER` and `ROUTINE_TEST_CHROMIUM`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use routine::distributed::worker::WorkerConfig;
use routine::distributed::DistributedConfig;

use super::{careful, free_port, serve_with, train};

/// Each step of the relay takes this long on the worker: long enough for
/// the workers page (a heartbeat every 200 ms, an event every second) to
/// show it.
const STEP: Duration = Duration::from_millis(2500);

#[routine::task(name = "web-first", version = "1.0.0")]
async fn first(x: u32) -> u32 {
    tokio::time::sleep(STEP).await;
    x + 1
}

#[routine::task(name = "web-second", version = "1.0.0")]
async fn second(x: u32) -> u32 {
    tokio::time::sleep(STEP).await;
    x * 2
}

/// A workflow whose two steps run, one after the other, on a worker.
#[routine::task(name = "web-relay", version = "1.0.0")]
async fn relay(x: u32) -> u32 {
    second(first(x).await).await
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with ./scripts/test, which sets it up")
    })
}

fn distributed_config(namespace: &str, store: &Path) -> DistributedConfig {
    let mut config =
        DistributedConfig::new(env("ROUTINE_TEST_REDIS_URL"), store.display().to_string());
    config.namespace = namespace.to_owned();
    config
}

#[test]
#[ignore = "entry point of the worker process the browser test starts"]
fn web_worker_process() {
    let namespace = env("ROUTINE_WEB_WORKER_NAMESPACE");
    let store = PathBuf::from(env("ROUTINE_WEB_WORKER_STORE"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = routine::distributed::connect(distributed_config(&namespace, &store))
            .await
            .unwrap();
        let config = WorkerConfig {
            heartbeat: Duration::from_millis(200),
            ..WorkerConfig::default()
        };
        routine::distributed::worker::serve_until_signalled(engine, config)
            .await
            .unwrap();
    });
}

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, and a session of headless Chromium with a
/// profile of its own.
async fn browser(profile: &Path) -> (Running, Client) {
    let port = free_port();
    let driver = Running(
        Command::new(env("ROUTINE_TEST_CHROMEDRIVER"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let options = serde_json::json!({
        "binary": env("ROUTINE_TEST_CHROMIUM"),
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--window-size=1280,900",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    let folder = std::env::var_os("ROUTINE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots"));
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The page's body.
const BODY: &str = "body";
/// The workers table's first row's `routine` cell: what the worker runs.
const RUNNING: &str = "#cluster table tr:nth-child(2) td:nth-child(3)";

/// The text of what `css` selects on the page as it is now, as a person
/// reads it; empty when nothing is there (between two swaps of a live
/// table, or before a worker appears).
async fn text_of(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(found) => found.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The text of the page's body.
async fn text(client: &Client) -> String {
    text_of(client, BODY).await
}

/// Waits until what `css` selects holds `wanted`, reading it again every
/// 50 ms without reloading; what it held last otherwise.
async fn shows(client: &Client, css: &str, wanted: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let now = text_of(client, css).await;
        if now.contains(wanted) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_pages_show_runs_lineage_errors_and_live_workers() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".routine");
    let namespace = format!("web-browser-{}", std::process::id());
    let redis = env("ROUTINE_TEST_REDIS_URL");

    // The store: a run of the train example, and a run whose step failed
    // with markup in its error.
    assert!(train(dir.path()).output().unwrap().status.success());
    {
        let engine = routine::Engine::local(&store).unwrap();
        let handled = engine
            .scope(careful("<script>window.pwned=1</script>".into()))
            .await;
        assert!(handled.starts_with("handled:"), "{handled}");
    }
    let broker_env = [
        ("ROUTINE_BROKER", redis.as_str()),
        ("ROUTINE_NAMESPACE", namespace.as_str()),
    ];
    let served = serve_with(dir.path(), &[], &broker_env);
    let base = format!("http://127.0.0.1:{}", served.port);
    let profile = tempfile::tempdir().unwrap();
    let (_driver, client) = browser(profile.path()).await;

    // The workers page, before any worker: it is then kept open, and a
    // mark set in it shows that it is never reloaded.
    client.goto(&format!("{base}/workers")).await.unwrap();
    shows(&client, BODY, "0 workers", Duration::from_secs(10))
        .await
        .unwrap();
    client
        .execute("window.stayed = true; return null;", vec![])
        .await
        .unwrap();
    let _worker = Running(
        Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "browser::web_worker_process"])
            .env("ROUTINE_WEB_WORKER_NAMESPACE", &namespace)
            .env("ROUTINE_WEB_WORKER_STORE", &store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    if let Err(seen) = shows(&client, BODY, "1 worker", Duration::from_secs(30)).await {
        panic!("the worker never appeared: {seen}");
    }

    // A workflow whose two steps run on the worker, one after the other:
    // the page shows the routine it runs change.
    let caller = routine::distributed::connect(distributed_config(&namespace, &store))
        .await
        .unwrap();
    // The routine cell, not the page: the page lists every routine the
    // worker serves, these two among them, from the start.
    assert!(
        !text_of(&client, RUNNING).await.contains("web-"),
        "not running yet"
    );
    let relayed = tokio::spawn(caller.scope(relay(20)));
    if let Err(seen) = shows(&client, RUNNING, "web-first", 2 * STEP).await {
        panic!("the first step never showed as running: {seen:?}");
    }
    screenshot(&client, "workers").await;
    if let Err(seen) = shows(&client, RUNNING, "web-second", 3 * STEP).await {
        panic!("the second step never showed as running: {seen:?}");
    }
    let stayed = client
        .execute("return window.stayed === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        stayed,
        serde_json::Value::Bool(true),
        "the page was reloaded"
    );
    assert_eq!(relayed.await.unwrap(), 42);

    // The runs page lists the three runs; one click opens the train
    // example's run and its lineage.
    client.goto(&base).await.unwrap();
    let runs = text(&client).await;
    for root in [
        "train-and-pick@0.1.0",
        "web-careful@1.0.0",
        "web-relay@1.0.0",
    ] {
        assert!(runs.contains(root), "{root} in {runs}");
    }
    screenshot(&client, "runs").await;
    client
        .find(Locator::XPath(
            "//tr[contains(., 'train-and-pick')]//a[starts-with(@href, '/runs/')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let run = text(&client).await;
    for task in [
        "prepare-data@0.1.0",
        "train@0.0.1",
        "fit@0.0.1",
        "pick-best@0.1.0",
    ] {
        assert!(run.contains(task), "{task} in {run}");
    }
    let drawn = client.find(Locator::Css("svg")).await.unwrap();
    assert!(drawn.text().await.unwrap().contains("fit@0.0.1"));
    screenshot(&client, "run").await;

    // The failed step's page: its error, `<script>` and all, as text.
    client.goto(&base).await.unwrap();
    client
        .find(Locator::XPath(
            "//tr[contains(., 'web-careful')]//a[starts-with(@href, '/runs/')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .find(Locator::Css("a[href^='/calls/web-step/']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let call = text(&client).await;
    assert!(call.contains("failed"), "{call}");
    assert!(
        call.contains("bad input <script>window.pwned=1</script>"),
        "the error, as text: {call}"
    );
    assert!(
        call.contains("argument 1") && call.contains("\"<script>window.pwned=1</script>\""),
        "the argument, as text: {call}"
    );
    let ran = client
        .execute("return window.pwned === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(ran, serde_json::Value::Bool(true), "the user's script ran");
    screenshot(&client, "call").await;

    client.goto(&format!("{base}/tasks")).await.unwrap();
    assert!(text(&client).await.contains("web-relay"));
    screenshot(&client, "tasks").await;
    client.close().await.unwrap();
}
