//! The worker's per-call events of an inline tool travel on the call's reply
//! (CallBatchStream) and reach handlers as the same `python.call.*` /
//! `python.tool.execution.*` events, failures included; the policy still
//! decides which ones are delivered and the worker counts what it filtered.

mod common;

use std::time::Duration;

use common::{connect_recorded, eventually, Worker, SHOWCASE};
use serde_json::json;
use snakepit_grpc::{CallError, CallOptions};
use snakepit_telemetry::CorrelationId;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_inline_call_reports_its_exception_events_on_the_reply() {
    let worker = Worker::start(SHOWCASE, "w-reply");
    let mut opts = worker.options();
    opts.pool_name = "pool-r".to_string();
    let (telemetry, rec, client) =
        connect_recorded(opts, &["snakepit.python.*", "snakepit.grpc.call.start"]).await;
    let call = CallOptions {
        correlation_id: Some(CorrelationId::new("corr-reply")),
        ..CallOptions::default()
    };
    // `add` is an inline tool; a missing argument makes it raise TypeError.
    let err = client
        .execute("add", json!({"a": 1}), call)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Tool { error_type, .. } if error_type == "TypeError"),
        "{err:?}"
    );
    // The events are emitted before the call returns.
    let call_exc = rec.named("snakepit.python.call.exception");
    let tool_exc = rec.named("snakepit.python.tool.execution.exception");
    assert_eq!(call_exc.len(), 1, "{:?}", rec.seen.lock().unwrap());
    assert_eq!(tool_exc.len(), 1);
    let host = rec.named("snakepit.grpc.call.start")[0].clone();
    let call_start = rec.named("snakepit.python.call.start")[0].clone();
    let tool_start = rec.named("snakepit.python.tool.execution.start")[0].clone();
    let (c, t) = (&call_exc[0], &tool_exc[0]);
    let pid = worker.pid.to_string();
    for e in [&call_start, &tool_start, c, t] {
        assert_eq!(e.meta("worker_id"), Some("w-reply"));
        assert_eq!(e.meta("pool_name"), Some("pool-r"));
        assert_eq!(e.meta("python_pid"), Some(pid.as_str()));
        assert!(!e.meta("node").unwrap().is_empty());
        assert_eq!(e.correlation_id.as_deref(), Some("corr-reply"));
        assert_eq!(e.trace_id, host.trace_id);
    }
    assert_eq!(call_start.meta("command"), Some("add"));
    assert_eq!(call_start.parent_span_id, host.span_id);
    assert!(call_start.measurement("system_time").is_some());
    assert_eq!(c.meta("command"), Some("add"));
    assert_eq!(c.meta("error_type"), Some("TypeError"));
    assert_eq!(c.span_id, call_start.span_id);
    assert!(c.measurement("duration").is_some());
    assert_eq!(tool_start.meta("tool"), Some("add"));
    assert_eq!(tool_start.parent_span_id, call_start.span_id);
    assert_eq!(t.meta("tool"), Some("add"));
    assert_eq!(t.meta("error_type"), Some("TypeError"));
    assert!(t.meta("error_message").unwrap().contains('b'));
    assert_eq!(t.span_id, tool_start.span_id);
    assert!(t.timestamp_ns >= tool_start.timestamp_ns);
    assert!(c.timestamp_ns >= t.timestamp_ns);

    // Deny the tool events: the worker filters them (and counts them), the
    // call events still arrive.
    let policy = telemetry
        .control()
        .set_filters(&[], &["python.tool.*"])
        .unwrap();
    let c2 = client.clone();
    eventually("the worker to apply the policy", WAIT, move || {
        c2.telemetry_stats().policy_version >= policy.version
    })
    .await;
    let filtered_before = client.telemetry_stats().worker_drops[2];
    for _ in 0..10 {
        client
            .execute("ping", json!({}), CallOptions::default())
            .await
            .unwrap();
    }
    let pings = |name: &str| {
        rec.named(name)
            .iter()
            .filter(|e| e.meta("tool") == Some("ping") || e.meta("command") == Some("ping"))
            .count()
    };
    assert_eq!(pings("snakepit.python.call.stop"), 10);
    assert_eq!(pings("snakepit.python.tool.execution.start"), 0);
    assert_eq!(pings("snakepit.python.tool.execution.stop"), 0);
    let c3 = client.clone();
    eventually("the worker to report filtered drops", WAIT, move || {
        c3.telemetry_stats().worker_drops[2] >= filtered_before + 20
    })
    .await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_times_out_still_gets_the_calls_events() {
    let worker = Worker::start(SHOWCASE, "w-late");
    let (_telemetry, rec, client) =
        connect_recorded(worker.options(), &["snakepit.python.call.*"]).await;
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(50)),
        correlation_id: Some(CorrelationId::new("corr-late")),
        ..CallOptions::default()
    };
    let err = client
        .execute("inline_sleep", json!({"ms": 400}), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    // The reply comes after the caller gave up; its events are not lost.
    rec.wait_for("late python.call.stop", Duration::from_secs(10), |s| {
        s.iter().any(|e| {
            e.name == "snakepit.python.call.stop" && e.meta("command") == Some("inline_sleep")
        })
    })
    .await;
    let stop = rec.named("snakepit.python.call.stop")[0].clone();
    assert_eq!(stop.correlation_id.as_deref(), Some("corr-late"));
    assert_eq!(stop.meta("worker_id"), Some("w-late"));
    assert!(stop.measurement("duration").is_some());
    assert_eq!(rec.named("snakepit.python.call.start").len(), 1);
    client.close().await;
}
