//! Events go through the JSON-lines plugin and come back intact: empty
//! maps, non-ASCII text, no correlation id, ids and numbers at their limits;
//! and two instances of one plugin stay independent.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use snakepit_core::{builtin, EventContext, Sink, Value};
use snakepit_sinks::plugin::PluginSink;
use snakepit_telemetry::Telemetry;
use snakepit_testkit::plugins::{config, plugin};

fn read_lines(path: &std::path::Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .expect("output file exists")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn events_round_trip_through_the_jsonl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let telemetry = Telemetry::new();
    let cfg = config(&plugin("jsonl"), json!({ "path": out }), 64);
    let sink = Arc::new(PluginSink::load(&cfg, &telemetry).expect("jsonl loads"));
    assert_eq!(sink.plugin_name(), "jsonl");
    assert!(sink.catches_panics(), "the SDK sets FLAG_CATCHES_PANICS");
    telemetry
        .attach_sink("jsonl", &cfg.events, sink.clone())
        .unwrap();

    // 1: empty measurements and metadata, no correlation id, no span.
    telemetry.execute_with(
        builtin::POOL_QUEUE_ENQUEUED,
        &[],
        &[],
        EventContext {
            timestamp_ns: 1,
            ..EventContext::default()
        },
    );
    // 2: non-ASCII text everywhere, ids at their limits.
    let trace = u128::MAX - 1;
    telemetry.execute_with(
        builtin::POOL_STATUS,
        &[
            ("queue_depth", Value::Int(i64::MIN)),
            ("available_workers", Value::Float(0.25)),
            ("total_workers", Value::Int(i64::MAX)),
        ],
        &[("pool_name", Value::from("päärynä-池-🐍 \"quoted\"\n"))],
        EventContext {
            timestamp_ns: 1_700_000_000_123_456_789,
            correlation_id: Some("req-ünïcødé-✓"),
            span_id: u64::MAX,
            parent_span_id: 7,
            trace_id: trace,
        },
    );
    // 3: emitted now, with an empty string value and the current clock.
    telemetry.execute(
        builtin::POOL_SATURATED,
        &[("queue_depth", Value::Int(0))],
        &[("command", Value::from(""))],
    );
    sink.flush(Duration::from_secs(5)).expect("flush");

    let lines = read_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines[0],
        json!({
            "name": "snakepit.pool.queue.enqueued",
            "timestamp_ns": 1,
            "correlation_id": null,
            "span_id": 0,
            "parent_span_id": 0,
            "trace_id": null,
            "measurements": {},
            "metadata": {},
        })
    );
    assert_eq!(
        lines[1],
        json!({
            "name": "snakepit.pool.status",
            "timestamp_ns": 1_700_000_000_123_456_789u64,
            "correlation_id": "req-ünïcødé-✓",
            "span_id": u64::MAX,
            "parent_span_id": 7,
            "trace_id": format!("{trace:032x}"),
            "measurements": {
                "queue_depth": i64::MIN,
                "available_workers": 0.25,
                "total_workers": i64::MAX,
            },
            "metadata": { "pool_name": "päärynä-池-🐍 \"quoted\"\n" },
        })
    );
    assert_eq!(lines[2]["name"], "snakepit.pool.saturated");
    assert_eq!(lines[2]["metadata"], json!({ "command": "" }));
    assert!(lines[2]["timestamp_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000);

    let stats = sink.stats();
    assert_eq!((stats.delivered, stats.dropped(), stats.failed), (3, 0, 0));
    sink.shutdown(Duration::from_secs(5)).expect("shutdown");
    // After shutdown, events are dropped and counted, never delivered.
    telemetry.execute(builtin::POOL_SATURATED, &[], &[]);
    assert_eq!(sink.stats().dropped_disabled, 1);
    assert_eq!(read_lines(&out).len(), 3);
}

#[test]
fn two_instances_of_one_plugin_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let (a_out, b_out) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let telemetry = Telemetry::new();
    let path = plugin("jsonl");
    let a = Arc::new(
        PluginSink::load(&config(&path, json!({ "path": a_out }), 16), &telemetry).unwrap(),
    );
    let b = Arc::new(
        PluginSink::load(&config(&path, json!({ "path": b_out }), 16), &telemetry).unwrap(),
    );
    assert_ne!(a.name(), b.name(), "drop reports must tell instances apart");

    let status = |n: i64| [("queue_depth", Value::Int(n))];
    a.handle(&event(&telemetry, &status(1)));
    b.handle(&event(&telemetry, &status(2)));
    b.handle(&event(&telemetry, &status(3)));
    a.shutdown(Duration::from_secs(5)).unwrap();
    // b keeps working after a is gone.
    b.handle(&event(&telemetry, &status(4)));
    b.shutdown(Duration::from_secs(5)).unwrap();

    let depths = |p: &std::path::Path| -> Vec<i64> {
        read_lines(p)
            .iter()
            .map(|l| l["measurements"]["queue_depth"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(depths(&a_out), vec![1]);
    assert_eq!(depths(&b_out), vec![2, 3, 4]);
}

/// A `snakepit.pool.status` event view with these measurements.
fn event<'a>(
    telemetry: &'a Telemetry,
    measurements: &'a [(&'a str, Value<'a>)],
) -> snakepit_core::Event<'a> {
    let spec = telemetry.catalog().get(builtin::POOL_STATUS).unwrap();
    snakepit_core::Event::new(
        builtin::POOL_STATUS,
        spec,
        measurements,
        &[],
        EventContext::default(),
    )
}
