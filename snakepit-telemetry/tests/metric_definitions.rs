//! Metric definitions resolve against the catalog and convert units.

use snakepit_core::{builtin, Catalog, Value};
use snakepit_telemetry::metrics::{
    default_metrics, distribution, last_value, MetricKind, MetricUnit,
};
use snakepit_telemetry::Telemetry;
use std::sync::{Arc, Mutex};

#[test]
fn the_default_set_is_the_guides_and_resolves() {
    let catalog = Catalog::builtin();
    let defs = default_metrics();
    let names: Vec<&str> = defs.iter().map(|d| d.name()).collect();
    for guide in [
        "snakepit.pool.status.queue_depth",
        "snakepit.pool.status.available_workers",
        "snakepit.python.call.stop.duration",
        "snakepit.python.call.exception.count",
        "snakepit.pool.worker.spawned.count",
    ] {
        assert!(names.contains(&guide), "missing {guide}");
    }
    for d in &defs {
        d.resolve(&catalog).unwrap_or_else(|e| panic!("{e}"));
    }
    let summary = defs
        .iter()
        .find(|d| d.name() == "snakepit.python.call.stop.duration")
        .unwrap();
    assert_eq!(summary.kind(), MetricKind::Summary);
    assert_eq!(summary.tag_keys(), ["command"]);
}

#[test]
fn values_tags_and_conversion_from_real_events() {
    let t = Telemetry::new();
    let m = distribution("snakepit.python.memory.sampled.rss_bytes")
        .unit(MetricUnit::Native, MetricUnit::Megabyte)
        .tags(["worker_id"])
        .tag_values(|_, v| format!("w:{v}"))
        .resolve(t.catalog())
        .unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let m2 = m.clone();
    t.attach_ids("metric", &[m.event], move |e| {
        *g.lock().unwrap() = Some((m2.value(e), m2.tag_values(e)));
    })
    .unwrap();
    t.execute(
        builtin::PYTHON_MEMORY_SAMPLED,
        &[("rss_bytes", Value::Int(25_000_000))],
        &[("worker_id", "pool_1".into())],
    );
    let (v, tags) = got.lock().unwrap().clone().unwrap();
    assert_eq!(v, Some(25.0));
    assert_eq!(tags, vec!["w:pool_1".to_string()]);
}

#[test]
fn bad_definitions_name_the_problem() {
    let c = Catalog::builtin();
    let e = last_value("snakepit.pool.status.nope")
        .resolve(&c)
        .unwrap_err();
    assert!(e.to_string().contains("queue_depth"), "{e}");
    let e = last_value("snakepit.pool.status.queue_depth")
        .unit(MetricUnit::Native, MetricUnit::Millisecond)
        .resolve(&c)
        .unwrap_err();
    assert!(e.to_string().contains("cannot convert"), "{e}");
    let e = last_value("snakepit.python.memory.sampled.rss_bytes")
        .unit(MetricUnit::Native, MetricUnit::Second)
        .resolve(&c)
        .unwrap_err();
    assert!(e.to_string().contains("cannot convert"), "{e}");
}
