//! The span helper emits start, stop and exception with a monotonic duration.

use std::sync::{Arc, Mutex};

use snakepit_core::{OwnedEvent, Value};
use snakepit_telemetry::{set_correlation_id, SpanOptions, Telemetry};

fn record(t: &Telemetry) -> Arc<Mutex<Vec<OwnedEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    t.attach("rec", "snakepit.grpc.call.*", move |e| {
        s.lock().unwrap().push(e.to_owned_event());
    })
    .unwrap();
    seen
}

#[test]
fn span_emits_start_then_stop_with_duration() {
    let t = Telemetry::new();
    let seen = record(&t);
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    let _g = set_correlation_id("span-corr");
    let out = t.span(family, &[("tool", Value::from("sleepy"))], || {
        std::thread::sleep(std::time::Duration::from_millis(5));
        7
    });
    assert_eq!(out, 7);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].name, "snakepit.grpc.call.start");
    assert_eq!(seen[1].name, "snakepit.grpc.call.stop");
    assert!(seen[0].measurement("system_time").is_some());
    let duration = seen[1]
        .measurement("duration")
        .and_then(Value::as_i64)
        .unwrap();
    assert!(duration >= 5_000_000, "duration {duration} ns");
    assert_eq!(seen[1].meta("tool"), Some(&Value::from("sleepy")));
    assert_eq!(seen[0].span_id, seen[1].span_id);
    assert_ne!(seen[0].span_id, 0);
    assert_eq!(seen[1].correlation_id.as_deref(), Some("span-corr"));
}

#[test]
fn exception_and_panics_emit_the_exception_event() {
    let t = Telemetry::new();
    let seen = record(&t);
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    let md = [("tool", Value::from("t"))];
    t.start_span_with(
        family,
        &md,
        SpanOptions {
            parent_span_id: 42,
            trace_id: 7,
        },
    )
    .exception("timeout", "took too long");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.span(family, &[], || panic!("inside span"));
    }));
    assert!(r.is_err());
    drop(t.start_span(family, &[]));

    let seen = seen.lock().unwrap();
    let names: Vec<&str> = seen.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(
        names,
        vec![
            "snakepit.grpc.call.start",
            "snakepit.grpc.call.exception",
            "snakepit.grpc.call.start",
            "snakepit.grpc.call.exception",
            "snakepit.grpc.call.start",
            "snakepit.grpc.call.exception",
        ]
    );
    assert_eq!(seen[1].meta("error_type"), Some(&Value::from("timeout")));
    assert_eq!(seen[1].parent_span_id, 42);
    assert_eq!(seen[1].trace_id, 7);
    assert_eq!(seen[3].meta("error_type"), Some(&Value::from("panic")));
    assert_eq!(seen[5].meta("error_type"), Some(&Value::from("dropped")));
    assert!(seen[3].measurement("duration").is_some());
}
