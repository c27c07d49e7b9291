//! A plugin that panics is disabled, not the host: the error is logged,
//! `snakepit.telemetry.sink.failed` is emitted, later events are dropped and
//! reported, and other sinks keep working.

mod plugin_support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use plugin_support::{wait_until, Recorder};
use serde_json::json;
use snakepit_core::{builtin, Sink, Value};
use snakepit_sinks::plugin::PluginSink;
use snakepit_telemetry::Telemetry;
use snakepit_testkit::plugins::{config, plugin};

/// Every log line written through `tracing` in this test binary.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct W(&'static Mutex<Vec<u8>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || W(buf))
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn status(telemetry: &Telemetry, n: i64) {
    telemetry.execute(builtin::POOL_STATUS, &[("queue_depth", Value::Int(n))], &[]);
}

#[test]
fn a_panic_in_emit_disables_the_instance_and_the_host_keeps_running() {
    logs();
    let telemetry = Telemetry::new();
    let failed = Recorder::attach(&telemetry, builtin::TELEMETRY_SINK_FAILED);
    let dropped = Recorder::attach(&telemetry, builtin::TELEMETRY_EVENTS_DROPPED);
    let cfg = config(
        &plugin("panicking"),
        json!({ "panic_in": "emit", "after": 2 }),
        64,
    );
    let sink = Arc::new(PluginSink::load(&cfg, &telemetry).unwrap());
    telemetry
        .attach_sink("panicking", &cfg.events, sink.clone())
        .unwrap();
    // A healthy sink next to it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ok.jsonl");
    let ok_cfg = config(&plugin("jsonl"), json!({ "path": out }), 64);
    let ok = Arc::new(PluginSink::load(&ok_cfg, &telemetry).unwrap());
    telemetry
        .attach_sink("ok", &ok_cfg.events, ok.clone())
        .unwrap();

    for n in 0..5 {
        status(&telemetry, n);
    }
    assert!(
        wait_until(Duration::from_secs(5), || sink.failure().is_some()),
        "the sink is disabled after the panic"
    );
    let reason = sink.failure().unwrap();
    assert!(reason.contains("panicking plugin: emit"), "{reason}");

    // Flushing a disabled sink fails with the reason; it does not hang.
    let err = sink.flush(Duration::from_secs(5)).expect_err("disabled");
    assert!(err.to_string().contains("disabled"), "{err}");
    // Events after the panic are dropped and counted.
    for n in 5..8 {
        status(&telemetry, n);
    }
    sink.flush(Duration::from_secs(5)).ok();
    let stats = sink.stats();
    assert_eq!(stats.delivered, 2, "{stats:?}");
    assert_eq!(stats.failed, 1, "the event it panicked on: {stats:?}");
    assert_eq!(stats.dropped_disabled, 5, "{stats:?}");

    // Reported: one sink.failed event, an error log, the drops.
    let failures = failed.events();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].meta("sink").and_then(Value::as_str),
        Some(sink.name())
    );
    assert!(failures[0]
        .meta("reason")
        .and_then(Value::as_str)
        .is_some_and(|r| r.contains("panicking plugin: emit")));
    let log = log_text();
    assert!(
        log.contains("ERROR")
            && log.contains("snakepit::telemetry")
            && log.contains("plugin sink disabled"),
        "{log}"
    );
    let reported: i64 = dropped
        .events()
        .iter()
        .filter(|e| e.meta("reason").and_then(Value::as_str) == Some("disabled"))
        .filter(|e| e.meta("where").and_then(Value::as_str) == Some("sink"))
        .filter_map(|e| e.measurement("count").and_then(Value::as_i64))
        .sum();
    assert_eq!(reported, 5);

    // The host and the other sink are fine.
    ok.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 8);
    sink.shutdown(Duration::from_secs(1)).ok();
    ok.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_panic_in_flush_disables_the_instance() {
    logs();
    let telemetry = Telemetry::new();
    let failed = Recorder::attach(&telemetry, builtin::TELEMETRY_SINK_FAILED);
    let cfg = config(&plugin("panicking"), json!({ "panic_in": "flush" }), 8);
    let sink = PluginSink::load(&cfg, &telemetry).unwrap();
    let err = sink.flush(Duration::from_secs(5)).expect_err("panicked");
    assert!(err.to_string().contains("flush, as configured"), "{err}");
    assert!(sink.failure().is_some());
    assert_eq!(failed.events().len(), 1);
    assert!(sink.shutdown(Duration::from_secs(1)).is_err());
}
