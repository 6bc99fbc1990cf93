//! Traces across workers (features `distributed` and `telemetry`): the
//! train example runs its workflow with its fits on a worker process, both
//! exporting spans over OTLP/HTTP to a receiver in this test; the worker's
//! span of each dispatched call is a child of the caller's span of that
//! call, in the caller's trace, and the run's record names the trace.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on a free loopback port: each `POST /v1/traces`
/// is decoded and its spans kept.
fn receiver() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&spans);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let kept = Arc::clone(&kept);
            std::thread::spawn(move || serve(stream, &kept));
        }
    });
    (port, spans)
}

/// Answers the requests of one connection (kept alive) until it closes.
fn serve(stream: std::net::TcpStream, kept: &Mutex<Vec<Received>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if line.starts_with("POST /v1/traces") {
            let request = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP export");
            let mut kept = kept.lock().unwrap();
            for resource in request.resource_spans {
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        kept.push(Received {
                            name: span.name,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                        });
                    }
                }
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn train(dir: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(common::example("train"));
    command.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("ROUTINE_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

#[test]
fn a_workers_spans_join_the_callers_trace() {
    let redis = std::env::var("ROUTINE_TEST_REDIS_URL").expect(
        "ROUTINE_TEST_REDIS_URL is not set: run the tests with ./scripts/test, which starts Redis",
    );
    let (port, spans) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ROUTINE_BROKER", redis),
        (
            "ROUTINE_NAMESPACE",
            format!("traces-{}", std::process::id()),
        ),
        ("ROUTINE_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}")),
        // Export every 100 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let mut worker = train(dir.path(), &env)
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ran = train(dir.path(), &env).output().unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    // The worker exports what it has left when asked to stop.
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = worker.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let spans = spans.lock().unwrap().clone();
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let on_worker: Vec<&Received> = (spans.iter())
        .filter(|s| s.name == "routine.worker.call")
        .collect();
    assert!(
        on_worker.len() >= 4,
        "the worker's spans of the four fits: {spans:#?}"
    );
    let roots: Vec<&Received> = (spans.iter())
        .filter(|s| s.name == "routine.task" && s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root span, the workflow's: {spans:#?}");
    let trace = &roots[0].trace_id;
    for span in &on_worker {
        assert_eq!(&span.trace_id, trace, "in the caller's trace: {span:?}");
        let parent = by_id
            .get(span.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("its parent is a span the caller exported: {span:?}"));
        assert_eq!(parent.name, "routine.task", "{parent:?}");
    }
    // Spans the worker made inside the call (its own routine.task spans)
    // are children of its span of the call.
    let inside = (spans.iter())
        .filter(|s| {
            by_id
                .get(s.parent_span_id.as_str())
                .is_some_and(|p| p.name == "routine.worker.call")
        })
        .count();
    assert!(inside >= 4, "the worker's task spans under its call spans");

    // The run's record names the trace.
    let store = routine::store::DatabaseStore::open(dir.path().join(".routine")).unwrap();
    let runs = routine::lineage::recorded_runs(&store, None, 0, 10).unwrap();
    assert_eq!(runs.total, 1);
    let tree = routine::lineage::run_tree(&store, runs.runs[0].id).unwrap();
    assert_eq!(tree.trace_id.as_ref(), Some(trace));
}
