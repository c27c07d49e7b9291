//! A plugin written in C against the header, compiled by the system `cc`,
//! loads and receives events like a Rust one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use snakepit_core::{builtin, EventContext, Sink, Value};
use snakepit_sinks::plugin::{PluginError, PluginSink};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::plugins::{c_plugin, config};

#[test]
fn the_c_plugin_receives_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.txt");
    let telemetry = Telemetry::new();
    let cfg = config(&c_plugin("text_sink"), json!({ "path": out }), 64);
    let sink = Arc::new(PluginSink::load(&cfg, &telemetry).expect("the C plugin loads"));
    assert_eq!(sink.plugin_name(), "text");
    assert!(!sink.catches_panics());
    telemetry
        .attach_sink("text", &cfg.events, sink.clone())
        .unwrap();

    telemetry.execute_with(
        builtin::POOL_STATUS,
        &[
            ("queue_depth", Value::Int(-3)),
            ("busy_workers", Value::Float(1.5)),
        ],
        &[("pool_name", Value::from("café-池"))],
        EventContext {
            timestamp_ns: 42,
            correlation_id: Some("req-1"),
            ..EventContext::default()
        },
    );
    telemetry.execute_with(
        builtin::POOL_SATURATED,
        &[],
        &[],
        EventContext {
            timestamp_ns: 43,
            ..EventContext::default()
        },
    );
    sink.shutdown(Duration::from_secs(5)).expect("shutdown");

    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text,
        "snakepit.pool.status ts=42 corr=req-1 queue_depth=-3 busy_workers=1.5 pool_name=café-池\n\
         snakepit.pool.saturated ts=43 corr=-\n"
    );
    assert_eq!(sink.stats().delivered, 2);
}

#[test]
fn the_c_plugin_reports_a_bad_config() {
    let cfg = config(&c_plugin("text_sink"), json!({ "file": "x" }), 8);
    let err = PluginSink::load(&cfg, &Telemetry::new()).expect_err("no path");
    assert!(matches!(err, PluginError::Create { .. }), "{err:?}");
    assert!(err.to_string().contains("`path` is missing"), "{err}");
}
