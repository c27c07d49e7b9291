//! A slow or stuck plugin never blocks the producer: the bounded queue
//! drops and counts, every event is either delivered or counted as dropped,
//! drops are reported, and a stuck plugin cannot hold up shutdown.

mod plugin_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_support::Recorder;
use serde_json::json;
use snakepit_core::{builtin, Sink, SinkError, Value};
use snakepit_sinks::plugin::PluginSink;
use snakepit_telemetry::Telemetry;
use snakepit_testkit::plugins::{config, plugin};

const SENT: usize = 2000;
const CAPACITY: usize = 16;

#[test]
fn a_stuck_plugin_never_blocks_the_producer_and_every_event_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, out) = (dir.path().join("gate"), dir.path().join("seen.txt"));
    let telemetry = Telemetry::new();
    let overflow = Recorder::attach(&telemetry, builtin::TELEMETRY_SINK_OVERFLOW);
    let dropped = Recorder::attach(&telemetry, builtin::TELEMETRY_EVENTS_DROPPED);
    let cfg = config(
        &plugin("slow"),
        json!({ "gate": gate, "out": out }),
        CAPACITY,
    );
    let sink = Arc::new(PluginSink::load(&cfg, &telemetry).unwrap());
    telemetry
        .attach_sink("slow", &cfg.events, sink.clone())
        .unwrap();

    // The plugin is stuck on its gate for the whole burst. If handle()
    // blocked, the producer thread would not finish until the gate opens.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let producer = {
        let telemetry = telemetry.clone();
        std::thread::spawn(move || {
            for seq in 0..SENT {
                telemetry.execute(
                    builtin::POOL_QUEUE_ENQUEUED,
                    &[("queue_depth", Value::from(seq))],
                    &[("seq", Value::from(seq))],
                );
            }
            done_tx.send(()).unwrap();
        })
    };
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the producer finished while the plugin was stuck");
    producer.join().unwrap();
    assert!(!gate.exists());
    let stats = sink.stats();
    assert!(
        stats.delivered == 0 && stats.queued <= CAPACITY as u64,
        "{stats:?}"
    );
    assert!(
        stats.dropped_queue_full >= (SENT - CAPACITY - 1) as u64,
        "{stats:?}"
    );

    std::fs::write(&gate, b"open").unwrap();
    sink.flush(Duration::from_secs(10))
        .expect("flush once unstuck");
    let stats = sink.stats();
    assert_eq!(stats.delivered + stats.dropped(), SENT as u64, "{stats:?}");
    assert_eq!(stats.failed, 0);
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lines.lines().count() as u64, stats.delivered);
    // The first event was taken before the queue filled: it is delivered.
    assert_eq!(lines.lines().next(), Some("0"));

    // Drops are reported: overflow with the capacity, events.dropped with
    // where = sink and the sink's name; each drop once.
    let overflow = overflow.events();
    let reported: i64 = overflow
        .iter()
        .map(|e| e.measurement("dropped").and_then(Value::as_i64).unwrap())
        .sum();
    assert_eq!(reported as u64, stats.dropped_queue_full);
    assert!(overflow.iter().all(|e| {
        e.measurement("capacity").and_then(Value::as_i64) == Some(CAPACITY as i64)
            && e.meta("sink").and_then(Value::as_str) == Some(sink.name())
    }));
    let counted: i64 = dropped
        .events()
        .iter()
        .filter(|e| e.meta("where").and_then(Value::as_str) == Some("sink"))
        .filter(|e| e.meta("reason").and_then(Value::as_str) == Some("queue_full"))
        .filter(|e| e.meta("sink").and_then(Value::as_str) == Some(sink.name()))
        .map(|e| e.measurement("count").and_then(Value::as_i64).unwrap())
        .sum();
    assert_eq!(counted as u64, stats.dropped_queue_full);
    sink.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_stuck_plugin_cannot_stop_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let telemetry = Telemetry::new();
    let cfg = config(&plugin("slow"), json!({ "gate": gate }), CAPACITY);
    let sink = Arc::new(PluginSink::load(&cfg, &telemetry).unwrap());
    telemetry
        .attach_sink("stuck", &cfg.events, sink.clone())
        .unwrap();
    for _ in 0..CAPACITY * 2 {
        telemetry.execute(builtin::POOL_SATURATED, &[], &[]);
    }

    let deadline = Duration::from_millis(200);
    let started = Instant::now();
    let flush = sink.flush(deadline);
    assert!(matches!(flush, Err(SinkError::Timeout { .. })), "{flush:?}");
    let shutdown = sink.shutdown(deadline);
    // Generous bound: it must return near its deadline, not when the plugin
    // gets unstuck (never, until the gate below).
    assert!(started.elapsed() < Duration::from_secs(5));
    match shutdown {
        Err(SinkError::Timeout { pending, .. }) => assert!(pending > 0),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Once shut down, events are dropped at once.
    telemetry.execute(builtin::POOL_SATURATED, &[], &[]);
    assert!(sink.stats().dropped_disabled >= 1);
    // Let the abandoned thread finish.
    std::fs::write(&gate, b"open").unwrap();
}
