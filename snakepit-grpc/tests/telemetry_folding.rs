//! Python events fold into host events: validated against the catalog,
//! enriched, with the Python timestamp, correlation id and span ids kept.
//! Unknown or malformed input is rejected or trimmed, and counted.

mod common;

use std::time::Duration;

use common::{connect_recorded, eventually, Worker, HOSTILE, SHOWCASE};
use serde_json::json;
use snakepit_core::event::unix_now_ns;
use snakepit_grpc::fold::{MAX_METADATA_FIELDS, MAX_METADATA_VALUE_BYTES};
use snakepit_grpc::CallOptions;
use snakepit_telemetry::CorrelationId;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_events_fold_into_host_handlers_with_enrichment() {
    let worker = Worker::start(SHOWCASE, "w-fold");
    let mut opts = worker.options();
    opts.pool_name = "pool-a".to_string();
    let (_telemetry, rec, client) =
        connect_recorded(opts, &["snakepit.python.*", "snakepit.grpc.call.start"]).await;

    let before = unix_now_ns();
    let call = CallOptions {
        correlation_id: Some(CorrelationId::new("corr-fold")),
        ..CallOptions::default()
    };
    client
        .execute("emit_events", json!({"count": 3}), call.clone())
        .await
        .unwrap();
    rec.wait_for("3 folded events", WAIT, |s| {
        s.iter()
            .filter(|e| {
                e.name == "snakepit.python.tool.execution.stop"
                    && e.meta("tool") == Some("emit_events")
                    && e.measurement("duration") == Some("1")
            })
            .count()
            == 3
    })
    .await;
    let folded: Vec<_> = rec
        .named("snakepit.python.tool.execution.stop")
        .into_iter()
        .filter(|e| e.meta("tool") == Some("emit_events") && e.measurement("duration") == Some("1"))
        .collect();
    assert_eq!(folded.len(), 3);
    let pid = worker.pid.to_string();
    for e in &folded {
        assert_eq!(e.measurement("duration"), Some("1"));
        assert_eq!(e.meta("worker_id"), Some("w-fold"));
        assert_eq!(e.meta("pool_name"), Some("pool-a"));
        assert_eq!(e.meta("python_pid"), Some(pid.as_str()));
        assert!(!e.meta("node").unwrap().is_empty());
        assert_eq!(e.correlation_id.as_deref(), Some("corr-fold"));
        // The Python timestamp, not the time of folding.
        assert!(e.timestamp_ns >= before && e.timestamp_ns <= unix_now_ns());
    }
    // The worker's call span is a child of the host's grpc.call span.
    rec.wait_for("python.call.stop", WAIT, |s| {
        s.iter().any(|e| e.name == "snakepit.python.call.stop")
    })
    .await;
    let host = rec.named("snakepit.grpc.call.start")[0].clone();
    let py_start = rec.named("snakepit.python.call.start")[0].clone();
    assert_eq!(py_start.parent_span_id, host.span_id);
    assert_eq!(py_start.trace_id, host.trace_id);
    assert_eq!(py_start.meta("command"), Some("emit_events"));

    // User spans not in the catalog fold into python.span.* and keep nesting.
    client
        .execute("nested_spans", json!({}), CallOptions::default())
        .await
        .unwrap();
    rec.wait_for("3 span stops", WAIT, |s| {
        s.iter()
            .filter(|e| e.name == "snakepit.python.span.stop")
            .count()
            == 3
    })
    .await;
    let starts = rec.named("snakepit.python.span.start");
    let by_name = |n: &str| {
        starts
            .iter()
            .find(|e| e.meta("span_name") == Some(n))
            .unwrap()
            .clone()
    };
    let outer = by_name("complex_operation");
    let inner = by_name("preprocessing");
    assert_eq!(inner.parent_span_id, outer.span_id);
    assert_eq!(inner.meta("worker_id"), Some("w-fold"));
    assert!(client.telemetry_stats().events_folded >= 10);
    assert_eq!(client.telemetry_stats().events_rejected, 0);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_events_are_rejected_and_counted() {
    let worker = Worker::start(HOSTILE, "w-reject");
    let (telemetry, rec, client) = connect_recorded(
        worker.options(),
        &[
            "snakepit.telemetry.*",
            "snakepit.python.tool.execution.stop",
            "snakepit.python.span.*",
        ],
    )
    .await;
    let run = |tool: &'static str, args: serde_json::Value| {
        let c = client.clone();
        async move { c.execute(tool, args, CallOptions::default()).await.unwrap() }
    };

    // Unknown names: rejected, counted, never new series.
    run("unknown_names", json!({"count": 50})).await;
    rec.wait_for("50 rejections", WAIT, |s| {
        s.iter()
            .filter(|e| e.meta("reason") == Some("unknown_event"))
            .count()
            == 50
    })
    .await;
    let rejected = rec.named("snakepit.telemetry.event.rejected");
    assert_eq!(rejected[0].meta("event_name"), Some("hostile.unknown0"));
    assert_eq!(rejected[0].meta("worker_id"), Some("w-reject"));
    assert_eq!(rejected[0].measurement("count"), Some("1"));
    assert!(telemetry
        .event_id("snakepit.python.hostile.unknown0")
        .is_err());

    // Invalid names.
    run("invalid_names", json!({"count": 2})).await;
    rec.wait_for("invalid names", WAIT, |s| {
        s.iter()
            .filter(|e| e.meta("reason") == Some("invalid_name"))
            .count()
            == 4
    })
    .await;

    // Unknown measurement keys are dropped, the event kept.
    run("unknown_measurements", json!({"count": 3})).await;
    rec.wait_for("unknown measurements", WAIT, |s| {
        s.iter()
            .filter(|e| {
                e.name == "snakepit.telemetry.field.dropped"
                    && e.meta("reason") == Some("unknown_measurement")
            })
            .count()
            == 3
    })
    .await;
    let extra: Vec<_> = rec
        .named("snakepit.python.tool.execution.stop")
        .into_iter()
        .filter(|e| e.meta("tool") == Some("extra"))
        .collect();
    assert_eq!(extra.len(), 3);
    assert_eq!(
        extra[0].measurements,
        vec![("duration".to_string(), "5".to_string())]
    );

    // NaN / inf / non-numeric: dropped; an event left with nothing is rejected.
    run("non_finite", json!({"count": 1})).await;
    rec.wait_for("malformed", WAIT, |s| {
        s.iter()
            .filter(|e| e.meta("reason") == Some("malformed"))
            .count()
            == 2
    })
    .await;
    let dropped = rec.named("snakepit.telemetry.field.dropped");
    assert_eq!(
        dropped
            .iter()
            .filter(|e| e.meta("reason") == Some("non_finite"))
            .count(),
        2
    );
    assert_eq!(
        dropped
            .iter()
            .filter(|e| e.meta("reason") == Some("not_a_number"))
            .count(),
        1
    );
    let inf: Vec<_> = rec
        .named("snakepit.python.tool.execution.stop")
        .into_iter()
        .filter(|e| e.meta("tool") == Some("inf"))
        .collect();
    assert_eq!(inf.len(), 1);
    assert_eq!(
        inf[0].measurements,
        vec![("bytes".to_string(), "7".to_string())]
    );

    // Huge metadata values are truncated at the documented bound.
    run("huge_metadata", json!({"count": 2, "size": 1 << 20})).await;
    rec.wait_for("huge metadata", WAIT, |s| {
        s.iter()
            .filter(|e| e.meta("tool").is_some_and(|t| t.starts_with("xxx")))
            .count()
            == 2
    })
    .await;
    for e in rec.named("snakepit.python.tool.execution.stop") {
        if let Some(t) = e.meta("tool").filter(|t| t.starts_with("xxx")) {
            assert_eq!(t.len(), MAX_METADATA_VALUE_BYTES);
            assert!(e.metadata.iter().all(|(k, _)| k.len() <= 64));
        }
    }

    // Too many metadata fields.
    run("many_fields", json!({"fields": 100})).await;
    rec.wait_for("too many fields", WAIT, |s| {
        s.iter()
            .any(|e| e.meta("reason") == Some("too_many_fields"))
    })
    .await;
    let too_many = rec
        .named("snakepit.telemetry.field.dropped")
        .into_iter()
        .find(|e| e.meta("reason") == Some("too_many_fields"))
        .unwrap();
    assert_eq!(
        too_many.measurement("count"),
        Some((100 - MAX_METADATA_FIELDS).to_string().as_str())
    );

    // A user span whose name is not in the catalog is not rejected.
    run("custom_span", json!({"name": "my_inference"})).await;
    rec.wait_for("custom span", WAIT, |s| {
        s.iter().any(|e| {
            e.name == "snakepit.python.span.stop" && e.meta("span_name") == Some("my_inference")
        })
    })
    .await;

    let stats = client.telemetry_stats();
    assert_eq!(stats.events_rejected, 50 + 4 + 2);
    assert!(stats.fields_dropped >= 3 + 3 + 4 + 68, "{stats:?}");
    let c = client.clone();
    eventually("stats", WAIT, move || c.telemetry_stats().batches > 0).await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_span_that_raises_folds_into_python_span_exception() {
    let worker = Worker::start(SHOWCASE, "w-span-fail");
    let (_telemetry, rec, client) =
        connect_recorded(worker.options(), &["snakepit.python.span.*"]).await;
    let err = client
        .execute(
            "span_fail",
            json!({"message": "nope"}),
            CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    rec.wait_for("python.span.exception", WAIT, |s| {
        s.iter().any(|e| e.name == "snakepit.python.span.exception")
    })
    .await;
    let start = rec.named("snakepit.python.span.start")[0].clone();
    let exc = rec.named("snakepit.python.span.exception")[0].clone();
    assert_eq!(exc.meta("span_name"), Some("risky_step"));
    assert_eq!(exc.meta("error_type"), Some("RuntimeError"));
    assert_eq!(exc.meta("stage"), Some("demo"));
    assert_eq!(exc.span_id, start.span_id);
    assert!(exc.measurement("duration").is_some());
    assert!(rec.named("snakepit.python.span.stop").is_empty());
    client.close().await;
}
