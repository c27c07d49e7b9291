//! The catalog holds the guide's events, resolves Python names, and can be
//! extended before it is frozen.

use snakepit_core::{builtin, Catalog, CatalogError, EventSpec, Origin, Unit};

#[test]
fn every_event_in_the_guide_is_in_the_catalog() {
    let c = Catalog::builtin();
    let guide = [
        "pool.initialized",
        "pool.status",
        "pool.queue.enqueued",
        "pool.queue.dequeued",
        "pool.queue.timeout",
        "pool.saturated",
        "pool.worker.spawn_started",
        "pool.worker.spawned",
        "pool.worker.spawn_failed",
        "pool.worker.terminated",
        "pool.worker.restarted",
        "grpc.call.start",
        "grpc.call.stop",
        "grpc.call.exception",
        "grpc.stream.opened",
        "grpc.stream.message",
        "grpc.stream.closed",
        "grpc.connection.established",
        "grpc.connection.lost",
        "grpc.connection.reconnected",
        "python.call.start",
        "python.call.stop",
        "python.call.exception",
        "python.tool.execution.start",
        "python.tool.execution.stop",
        "python.tool.execution.exception",
        "python.memory.sampled",
        "python.cpu.sampled",
    ];
    for name in guide {
        let full = format!("snakepit.{name}");
        let id = c.id(&full).unwrap_or_else(|| panic!("{full} missing"));
        let spec = c.spec(id);
        assert!(!spec.description.is_empty());
        assert_eq!(
            spec.origin,
            if name.starts_with("python.") {
                Origin::Python
            } else {
                Origin::Host
            }
        );
    }
    for (_, spec) in c.iter() {
        for m in spec.measurements.iter() {
            if m.key == "duration" {
                assert_eq!(m.unit, Unit::Nanoseconds, "{}", spec.name);
            }
        }
    }
}

#[test]
fn python_wire_names_resolve_only_to_python_events() {
    let c = Catalog::builtin();
    assert_eq!(
        c.python_id("tool.execution.stop"),
        Some(builtin::PYTHON_TOOL_EXECUTION_STOP)
    );
    assert_eq!(
        c.python_id("snakepit.python.call.start"),
        Some(builtin::PYTHON_CALL_START)
    );
    assert_eq!(c.python_id("snakepit.pool.status"), None);
    assert_eq!(c.python_id("unknown.thing"), None);
    // The reference system's spelling names the same events.
    assert_eq!(
        c.python_id("python.call.stop"),
        Some(builtin::PYTHON_CALL_STOP)
    );
    assert_eq!(
        c.python_id("python.gc.completed"),
        Some(builtin::PYTHON_GC_COMPLETED)
    );
    assert_eq!(
        c.python_id("python.tool.result_size"),
        Some(builtin::PYTHON_TOOL_RESULT_SIZE)
    );
    assert_eq!(c.python_id("python.python.call.stop"), None);
    assert_eq!(c.python_id("python.pool.status"), None);
    assert_eq!(c.python_id("python."), None);
    assert_eq!(c.python_id(&"x".repeat(10_000)), None);
    let fam = c.span_family("snakepit.python.span").unwrap();
    assert_eq!(fam.stop, builtin::PYTHON_SPAN_STOP);
    assert_eq!(
        c.sampling_anchor(builtin::GRPC_CALL_EXCEPTION),
        builtin::GRPC_CALL_START
    );
    assert_eq!(
        c.sampling_anchor(builtin::POOL_STATUS),
        builtin::POOL_STATUS
    );
}

#[test]
fn applications_extend_the_catalog_before_freezing_it() {
    let c = Catalog::builder()
        .event(
            EventSpec::new(
                "snakepit.python.inference.start",
                Origin::Python,
                "model started",
            )
            .measurement("system_time", Unit::UnixNanoseconds, "start"),
        )
        .unwrap()
        .event(
            EventSpec::new(
                "snakepit.python.inference.stop",
                Origin::Python,
                "model done",
            )
            .measurement("duration", Unit::Nanoseconds, "time"),
        )
        .unwrap()
        .event(EventSpec::new(
            "snakepit.python.inference.exception",
            Origin::Python,
            "failed",
        ))
        .unwrap()
        .event(EventSpec::new(
            "myapp.cache.miss",
            Origin::Host,
            "a cache miss",
        ))
        .unwrap()
        .build();
    assert_eq!(c.len(), Catalog::builtin().len() + 4);
    assert!(c.python_id("inference.stop").is_some());
    assert!(c.span_family("snakepit.python.inference").is_some());

    let dup = Catalog::builder()
        .event(EventSpec::new(
            "snakepit.pool.status",
            Origin::Host,
            "again",
        ))
        .unwrap_err();
    assert_eq!(
        dup,
        CatalogError::Duplicate {
            name: "snakepit.pool.status".into()
        }
    );
    let bad = Catalog::builder()
        .event(EventSpec::new("Bad Name", Origin::Host, ""))
        .unwrap_err();
    assert!(bad.to_string().contains("Bad Name"));
    let outside = Catalog::builder()
        .event(EventSpec::new("myapp.python.thing", Origin::Python, ""))
        .unwrap_err();
    assert!(matches!(outside, CatalogError::PythonOutsidePrefix { .. }));
}
