//! An adapter written as the reference system's are, in a real worker:
//! events it names from `python.` (`python.call.stop`) fold into the
//! catalog's events with their `count`; the worker's own `gc.completed`,
//! `error.occurred` and `tool.result_size` reach host handlers with their
//! measurements; `@tool("...")` and bare `@tool` describe their tools.

mod common;

use std::time::Duration;

use common::{Recorder, Seen, Worker, REFERENCE_STYLE};
use serde_json::json;
use snakepit_grpc::{CallError, CallOptions, WorkerClient};
use snakepit_telemetry::{CorrelationId, Telemetry};
use snakepit_testkit::procfs;

const WAIT: Duration = Duration::from_secs(10);

fn int(e: &Seen, key: &str) -> i64 {
    e.measurement(key)
        .unwrap_or_else(|| panic!("{} has no measurement {key}: {e:?}", e.name))
        .parse()
        .unwrap_or_else(|_| panic!("{} measurement {key} is not an integer: {e:?}", e.name))
}

fn one(rec: &Recorder, name: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
    let found: Vec<Seen> = rec.named(name).into_iter().filter(pred).collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_named_events_and_the_workers_own_events_reach_handlers() {
    let worker = Worker::start(REFERENCE_STYLE, "w-ref");
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(
        &telemetry,
        "rec",
        &["snakepit.python.*", "snakepit.telemetry.*"],
    );
    let client = WorkerClient::connect(telemetry.clone(), worker.options())
        .await
        .unwrap();

    // `@tool("description")` and bare `@tool` (the docstring's first line).
    let info = client.describe().await.unwrap();
    let described: Vec<(&str, &str)> = info
        .tools
        .iter()
        .map(|t| (t.name.as_str(), t.description.as_str()))
        .collect();
    assert_eq!(
        described,
        [
            (
                "collect",
                "Makes ``cycles`` reference cycles and runs a full collection."
            ),
            (
                "echo",
                "Returns its text, and its UTF-8 bytes as a binary result"
            ),
            ("fail", "Raises ValueError(message)."),
            (
                "predict",
                "Upper-cases text, with the reference system's call events around it"
            ),
            ("spin", "Keeps one CPU busy for ``ms`` milliseconds."),
        ]
    );

    let call = |cid: &str| CallOptions {
        correlation_id: Some(CorrelationId::new(cid)),
        ..CallOptions::default()
    };
    let out = client
        .execute("predict", json!({"text": "hi"}), call("corr-predict"))
        .await
        .unwrap();
    assert_eq!(out.value, json!({"label": "HI"}));
    // An inline tool: its call's events ride on the reply, and the host
    // emits tool.result_size from the reply it received.
    let out = client
        .execute("echo", json!({"text": "hello"}), call("corr-echo"))
        .await
        .unwrap();
    assert_eq!(out.value, json!({"text": "hello"}));
    assert_eq!(out.binary["raw"], b"hello");
    match client
        .execute("fail", json!({"message": "no model"}), call("corr-fail"))
        .await
    {
        Err(CallError::Tool { error_type, .. }) => assert_eq!(error_type, "ValueError"),
        other => panic!("expected the tool's ValueError, got {other:?}"),
    }
    let out = client
        .execute("collect", json!({"cycles": 200}), call("corr-gc"))
        .await
        .unwrap();
    assert!(out.value["collected"].as_i64().unwrap() >= 200, "{out:?}");

    rec.wait_for("the reference and own events", WAIT, |s| {
        let has = |name: &str| s.iter().any(|e| e.name == name);
        has("snakepit.python.error.occurred")
            && has("snakepit.python.gc.completed")
            && s.iter()
                .filter(|e| e.name == "snakepit.python.tool.result_size")
                .count()
                >= 3
            && s.iter()
                .any(|e| e.name == "snakepit.python.call.stop" && e.measurement("count").is_some())
    })
    .await;

    // `python.call.start` / `python.call.stop` from the adapter: the
    // catalog's events (not rejected), `count` kept beside the others.
    let start = one(&rec, "snakepit.python.call.start", |e| {
        e.measurement("count").is_some()
    });
    assert_eq!(int(&start, "count"), 1);
    assert!(int(&start, "system_time") > 1_600_000_000_000_000_000);
    assert_eq!(start.meta("command"), Some("predict"));
    assert_eq!(start.correlation_id.as_deref(), Some("corr-predict"));
    let stop = one(&rec, "snakepit.python.call.stop", |e| {
        e.measurement("count").is_some()
    });
    assert_eq!(int(&stop, "count"), 1);
    assert!(int(&stop, "duration") >= 0);
    assert_eq!(stop.meta("command"), Some("predict"));
    assert_eq!(stop.meta("worker_id"), Some("w-ref"));
    // The host's own call events for the same call (no `count`) still come.
    assert!(rec
        .named("snakepit.python.call.stop")
        .iter()
        .any(|e| e.measurement("count").is_none() && e.meta("command") == Some("predict")));

    // tool.result_size: the encoded JSON result, in the call's trace.
    let size = one(&rec, "snakepit.python.tool.result_size", |e| {
        e.meta("tool") == Some("predict")
    });
    assert_eq!(
        int(&size, "message_size"),
        br#"{"label":"HI"}"#.len() as i64,
        "{size:?}"
    );
    assert_eq!(size.correlation_id.as_deref(), Some("corr-predict"));
    assert_eq!(size.meta("worker_id"), Some("w-ref"));
    let echo = one(&rec, "snakepit.python.tool.result_size", |e| {
        e.meta("tool") == Some("echo")
    });
    assert_eq!(
        int(&echo, "message_size"),
        (br#"{"text":"hello"}"#.len() + b"hello".len()) as i64,
        "{echo:?}"
    );
    assert_eq!(echo.correlation_id.as_deref(), Some("corr-echo"));
    assert_eq!(echo.meta("worker_id"), Some("w-ref"));
    let echo_call = one(&rec, "snakepit.python.call.stop", |e| {
        e.meta("command") == Some("echo")
    });
    assert_eq!(echo.span_id, echo_call.span_id, "in the call's span");
    assert!(rec
        .named("snakepit.python.tool.result_size")
        .iter()
        .all(|e| e.meta("tool") != Some("fail")));

    // error.occurred: the tool's exception, with the failed call's id.
    let err = one(&rec, "snakepit.python.error.occurred", |_| true);
    assert_eq!(int(&err, "count"), 1);
    assert_eq!(err.meta("tool"), Some("fail"));
    assert_eq!(err.meta("error_type"), Some("ValueError"));
    assert_eq!(err.meta("error_message"), Some("no model"));
    assert_eq!(err.correlation_id.as_deref(), Some("corr-fail"));

    // gc.completed: the full collection the tool ran, outside any trace.
    let gcs = rec.named("snakepit.python.gc.completed");
    let full = gcs
        .iter()
        .find(|e| int(e, "generation") == 2 && int(e, "collected") >= 200)
        .unwrap_or_else(|| panic!("no full collection of the 200 cycles: {gcs:?}"));
    assert_eq!(int(full, "count"), 1);
    assert_eq!(int(full, "uncollectable"), 0);
    assert!(int(full, "duration") > 0);
    assert_eq!(full.correlation_id, None);
    assert_eq!(full.span_id, 0);
    assert_eq!(full.meta("worker_id"), Some("w-ref"));

    // Nothing was rejected or trimmed on the way.
    let trouble: Vec<Seen> = rec
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            e.name == "snakepit.telemetry.event.rejected"
                || e.name == "snakepit.telemetry.field.dropped"
        })
        .cloned()
        .collect();
    assert!(trouble.is_empty(), "{trouble:?}");

    client.close().await;
    let pid = worker.pid;
    drop(worker);
    assert!(
        procfs::wait_gone(&[pid], WAIT),
        "worker {pid} still running"
    );
}
