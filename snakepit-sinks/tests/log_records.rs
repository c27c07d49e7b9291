//! The log sink turns events into `tracing` records at sensible levels,
//! with structured fields, obeying log_level, log_categories and per-worker
//! levels.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use snakepit_core::{builtin, LogCategory, LogLevel, Value};
use snakepit_sinks::log::LogSink;
use snakepit_telemetry::Telemetry;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Debug, Clone)]
struct Record {
    target: String,
    level: tracing::Level,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Record>>>);

struct FieldVisitor<'a>(&'a mut BTreeMap<String, String>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut FieldVisitor(&mut fields));
        self.0.lock().unwrap().push(Record {
            target: event.metadata().target().into(),
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// Runs `f` with a subscriber whose capturing layer is filtered by the
/// telemetry's log config; returns the records.
fn capture(t: &Telemetry, f: impl FnOnce()) -> Vec<Record> {
    let cap = Capture::default();
    let subscriber = tracing_subscriber::registry().with(cap.clone().with_filter(t.log().filter()));
    tracing::subscriber::with_default(subscriber, f);
    let records = cap.0.lock().unwrap().clone();
    records
        .into_iter()
        .filter(|r| r.fields.contains_key("event"))
        .collect()
}

fn setup() -> Telemetry {
    let t = Telemetry::new();
    t.attach_sink("log", &[], Arc::new(LogSink::new(&t)))
        .unwrap();
    t
}

fn call_stop(t: &Telemetry, worker: &str) {
    t.execute(
        builtin::PYTHON_CALL_STOP,
        &[("duration", Value::Int(1_500_000))],
        &[("command", "predict".into()), ("worker_id", worker.into())],
    );
}

#[test]
fn lifecycle_events_are_info_records_with_structured_fields() {
    let t = setup();
    let records = capture(&t, || {
        t.execute(
            builtin::POOL_WORKER_SPAWNED,
            &[("duration", Value::Int(5)), ("python_pid", Value::Int(42))],
            &[("pool_name", "default".into()), ("worker_id", "w1".into())],
        );
        t.execute(
            builtin::POOL_WORKER_SPAWN_FAILED,
            &[("duration", Value::Int(5))],
            &[("worker_id", "w2".into()), ("reason", "ImportError".into())],
        );
        t.execute(
            builtin::PYTHON_CALL_EXCEPTION,
            &[("duration", Value::Int(5))],
            &[
                ("error_type", "ValueError".into()),
                ("worker_id", "w1".into()),
            ],
        );
        // Debug-level at the default info level: not produced.
        call_stop(&t, "w1");
    });
    assert_eq!(records.len(), 3, "{records:#?}");
    let spawned = &records[0];
    assert_eq!(spawned.target, "snakepit::lifecycle");
    assert_eq!(spawned.level, tracing::Level::INFO);
    assert_eq!(spawned.fields["event"], "snakepit.pool.worker.spawned");
    assert_eq!(spawned.fields["worker_id"], "w1");
    assert!(
        spawned.fields["fields"].contains("python_pid=42"),
        "{spawned:?}"
    );
    assert!(
        spawned.fields["fields"].contains(r#"pool_name="default""#),
        "{spawned:?}"
    );
    assert_eq!(records[1].level, tracing::Level::ERROR);
    assert!(records[1].fields["fields"].contains("ImportError"));
    assert_eq!(records[2].target, "snakepit::python");
    assert_eq!(records[2].level, tracing::Level::WARN);
}

#[test]
fn a_template_restart_is_a_warning_of_the_pool() {
    let t = setup();
    let records = capture(&t, || {
        t.execute(
            builtin::POOL_TEMPLATE_RESTARTED,
            &[
                ("duration", Value::Int(40_000_000)),
                ("python_pid", Value::Int(4242)),
            ],
            &[
                ("pool_name", "models".into()),
                ("reason", "killed by signal 9".into()),
            ],
        );
    });
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].level, tracing::Level::WARN);
    assert_eq!(
        records[0].fields["event"],
        "snakepit.pool.template.restarted"
    );
    assert!(
        records[0].fields["fields"].contains("signal 9"),
        "{:?}",
        records[0]
    );
}

#[test]
fn categories_and_per_worker_levels_are_obeyed() {
    let t = setup();
    // Python category at debug: call stops appear, pool status does not.
    t.log()
        .set_category_level(LogCategory::Python, LogLevel::Debug);
    let records = capture(&t, || {
        call_stop(&t, "w1");
        t.execute(builtin::POOL_STATUS, &[("queue_depth", Value::Int(1))], &[]);
    });
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].level, tracing::Level::DEBUG);
    assert!(records[0].fields["fields"].contains("duration=1500000"));

    // Back to info, but worker w2 at debug: only w2's call stops appear.
    t.log().reset_category_level(LogCategory::Python);
    t.log().set_process_level("w2", LogLevel::Debug);
    let records = capture(&t, || {
        call_stop(&t, "w1");
        call_stop(&t, "w2");
    });
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].fields["worker_id"], "w2");

    // A worker can be quieter than the rest, and `none` silences everything.
    t.log().set_process_level("w2", LogLevel::Error);
    let records = capture(&t, || {
        t.execute(
            builtin::PYTHON_CALL_EXCEPTION,
            &[],
            &[("worker_id", "w2".into())],
        );
        t.execute(
            builtin::PYTHON_CALL_EXCEPTION,
            &[],
            &[("worker_id", "w1".into())],
        );
    });
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].fields["worker_id"], "w1");
    t.log().set_level(LogLevel::None);
    t.log().reset_process_level("w2");
    let records = capture(&t, || {
        t.execute(builtin::POOL_WORKER_SPAWN_FAILED, &[], &[]);
    });
    assert!(records.is_empty(), "{records:#?}");
}

#[test]
fn correlation_and_span_ids_become_fields() {
    let t = setup();
    t.log().set_level(LogLevel::Debug);
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    let records = capture(&t, || {
        let _g = snakepit_telemetry::set_correlation_id("corr-9");
        t.span(family, &[("tool", "predict".into())], || ());
    });
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!(r.target, "snakepit::grpc");
        assert_eq!(r.fields["correlation_id"], "corr-9");
        assert!(r.fields.contains_key("span_id"));
    }
}
