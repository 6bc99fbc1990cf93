//! Workflows that exercise the execution options (`retries`, `backoff`,
//! `retry_errors`, `timeout`, `concurrency`) and typed errors: run
//! in-process by `tests/execution.rs` and on worker processes by
//! `tests/distributed.rs`, which expect the same answers from both.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Attempts made so far in this process for `id`, counting this one.
fn attempt(id: &str) -> u32 {
    static ATTEMPTS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    let mut attempts = ATTEMPTS.get_or_init(Default::default).lock().unwrap();
    let n = attempts.entry(id.to_owned()).or_default();
    *n += 1;
    *n
}

/// Panics on its first `fails` attempts; returns the attempt that passed.
#[routine::task(name = "ctl-flaky", version = "1.0.0", retries = 3, backoff = "20ms")]
pub async fn flaky(id: String, fails: u32) -> u32 {
    let n = attempt(&id);
    if n <= fails {
        panic!("flaky {id} failed attempt {n}");
    }
    n
}

/// Panics on every attempt.
#[routine::task(
    name = "ctl-hopeless",
    version = "1.0.0",
    retries = 1,
    backoff = "20ms"
)]
pub async fn hopeless(id: String) -> u32 {
    let n = attempt(&id);
    panic!("hopeless {id} failed attempt {n}")
}

/// Sleeps for `ms`: past its timeout when `ms` is large.
#[routine::task(name = "ctl-sleepy", version = "1.0.0", timeout = "300ms")]
pub async fn sleepy(id: String, ms: u64) -> String {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("{id} slept {ms} ms")
}

/// A refusal that crosses the wire typed: it has serde's traits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Refusal {
    Negative(i64),
    Attempt(u32),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Negative(n) => write!(f, "{n} is negative"),
            Refusal::Attempt(n) => write!(f, "refused attempt {n}"),
        }
    }
}

#[routine::task(name = "ctl-checked", version = "1.0.0")]
pub async fn checked(n: i64) -> Result<i64, Refusal> {
    if n < 0 {
        Err(Refusal::Negative(n))
    } else {
        Ok(n * 2)
    }
}

/// Returns `Err` on its first `fails` attempts, and is retried for it.
#[routine::task(
    name = "ctl-stubborn",
    version = "1.0.0",
    retries = 2,
    backoff = "20ms",
    retry_errors
)]
pub async fn stubborn(id: String, fails: u32) -> Result<u32, Refusal> {
    let n = attempt(&id);
    if n <= fails {
        return Err(Refusal::Attempt(n));
    }
    Ok(n)
}

/// Returns `Err` without `retry_errors`: tried once.
#[routine::task(name = "ctl-once", version = "1.0.0", retries = 2, backoff = "20ms")]
pub async fn refused_once(id: String) -> Result<u32, Refusal> {
    Err(Refusal::Attempt(attempt(&id)))
}

/// An error type without serde's traits: across the wire, only its message
/// travels.
#[derive(Debug)]
pub struct Opaque(pub String);

impl fmt::Display for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "opaque: {}", self.0)
    }
}

#[routine::task(name = "ctl-opaque", version = "1.0.0")]
pub async fn opaque(n: i64) -> Result<i64, Opaque> {
    Err(Opaque(format!("no {n}")))
}

/// The workflow: awaits `case`'s sub-routine and says what came back,
/// matching typed errors as a workflow would.
#[routine::task(name = "ctl-workflow", version = "1.0.0")]
pub async fn control(case: String, id: String) -> String {
    match case.as_str() {
        "flaky" => format!("passed on attempt {}", flaky(id, 2).await),
        "hopeless" => hopeless(id).await.to_string(),
        "sleepy-slow" => sleepy(id, 5_000).await,
        "checked" => match (checked(5).await, checked(-3).await) {
            (Ok(ten), Err(Refusal::Negative(n))) => format!("ok {ten}, refused {n}"),
            other => format!("unexpected {other:?}"),
        },
        "stubborn" => format!("{:?}", stubborn(id, 1).await),
        "stubborn-out" => format!("{:?}", stubborn(id, 9).await),
        "once" => format!("{:?}", refused_once(id).await),
        "opaque" => format!("{:?}", opaque(1).await.map_err(|e| e.to_string())),
        other => panic!("no case {other}"),
    }
}

/// What each case answers, the same in-process and on workers (`Err`: the
/// workflow panics, with a message containing the text given).
pub fn expected(case: &str) -> Result<&'static str, &'static str> {
    match case {
        "flaky" => Ok("passed on attempt 3"),
        "hopeless" => Err("failed on each of its 2 attempts; the last panicked: hopeless"),
        "sleepy-slow" => Err("attempt 1 of 1 ran past its timeout of 300ms"),
        "checked" => Ok("ok 10, refused -3"),
        "stubborn" => Ok("Ok(2)"),
        "stubborn-out" => Ok("Err(Attempt(3))"),
        "once" => Ok("Err(Attempt(1))"),
        other => panic!("no expectation for {other}"),
    }
}

/// The cases whose answers match in-process and on workers.
pub const CASES: [&str; 7] = [
    "flaky",
    "hopeless",
    "sleepy-slow",
    "checked",
    "stubborn",
    "stubborn-out",
    "once",
];
