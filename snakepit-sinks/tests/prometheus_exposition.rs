//! The Prometheus sink's exposition: the guide's series with Prometheus
//! names, summaries with real quantiles, a label cap with an overflow series,
//! and `promtool check metrics` accepting the text.

mod prometheus_server;

use std::sync::Arc;

use snakepit_core::{builtin, Pattern, Value};
use snakepit_sinks::prometheus::{PrometheusSink, OVERFLOW_METRIC};
use snakepit_telemetry::metrics::{counter, summary, MetricUnit};
use snakepit_telemetry::Telemetry;

use prometheus_server::promtool_check;

fn emit_guide_events(t: &Telemetry) {
    t.execute(
        builtin::POOL_STATUS,
        &[
            ("queue_depth", Value::Int(7)),
            ("available_workers", Value::Int(3)),
            ("busy_workers", Value::Int(1)),
            ("total_workers", Value::Int(4)),
        ],
        &[("pool_name", "default".into())],
    );
    for (i, ms) in [1.0f64, 2.0, 3.0, 4.0, 250.0].iter().enumerate() {
        let command = if i % 2 == 0 { "predict" } else { "train" };
        t.execute(
            builtin::PYTHON_CALL_STOP,
            &[("duration", Value::Int((ms * 1e6) as i64))],
            &[("command", command.into()), ("worker_id", "w1".into())],
        );
    }
    t.execute(
        builtin::PYTHON_CALL_EXCEPTION,
        &[("duration", Value::Int(1000))],
        &[
            ("command", "predict".into()),
            ("error_type", "ValueError".into()),
        ],
    );
    t.execute(
        builtin::POOL_WORKER_SPAWNED,
        &[
            ("duration", Value::Int(5_000_000)),
            ("python_pid", Value::Int(42)),
        ],
        &[("pool_name", "default".into()), ("worker_id", "w1".into())],
    );
    t.execute(
        builtin::GRPC_CALL_STOP,
        &[("duration", Value::Int(300_000))],
        &[("tool", "predict".into())],
    );
}

fn line_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn guide_series_are_exported_with_prometheus_names_and_pass_promtool() {
    let t = Telemetry::new();
    let sink = Arc::new(PrometheusSink::builder().build(t.catalog()).unwrap());
    t.attach_sink("prometheus", &[], sink.clone()).unwrap();
    emit_guide_events(&t);
    let text = sink.render();

    assert_eq!(
        line_value(
            &text,
            r#"snakepit_pool_status_queue_depth{pool_name="default"}"#
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            r#"snakepit_pool_status_available_workers{pool_name="default"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            r#"snakepit_python_call_exception_total{error_type="ValueError"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            r#"snakepit_pool_worker_spawned_total{pool_name="default"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // The summary is really exported: type, quantiles, sum and count.
    assert!(
        text.contains("# TYPE snakepit_python_call_stop_duration_seconds summary"),
        "{text}"
    );
    let q = r#"snakepit_python_call_stop_duration_seconds{command="predict",quantile="1"}"#;
    let max = line_value(&text, q).unwrap_or_else(|| panic!("no {q} in\n{text}"));
    assert!((max - 0.25).abs() < 0.01, "max of predict is 250 ms: {max}");
    assert!(text.contains(r#"command="train",quantile="0.5""#), "{text}");
    assert_eq!(
        line_value(
            &text,
            r#"snakepit_python_call_stop_duration_seconds_count{command="predict"}"#
        ),
        Some(3.0)
    );
    // A distribution is a histogram with the definition's buckets (ms -> s).
    assert!(
        text.contains("# TYPE snakepit_grpc_call_stop_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(r#"le="0.00025""#) || text.contains(r#"le="0.0005""#),
        "{text}"
    );
    promtool_check(&text);
}

#[test]
fn defined_units_are_kept_without_base_units() {
    let t = Telemetry::new();
    let sink = Arc::new(
        PrometheusSink::builder()
            .base_units(false)
            .build(t.catalog())
            .unwrap(),
    );
    t.attach_sink("prometheus", &[], sink.clone()).unwrap();
    emit_guide_events(&t);
    let text = sink.render();
    let q = r#"snakepit_python_call_stop_duration_milliseconds{command="predict",quantile="1"}"#;
    let max = line_value(&text, q).unwrap_or_else(|| panic!("no {q} in\n{text}"));
    assert!((max - 250.0).abs() < 5.0, "{max}");
}

#[test]
fn label_sets_over_the_cap_go_to_one_other_series() {
    let t = Telemetry::new();
    let sink = Arc::new(
        PrometheusSink::builder()
            .metrics(vec![
                counter("snakepit.python.call.exception.count").tags(["error_type"]),
                summary("snakepit.python.call.stop.duration")
                    .unit(MetricUnit::Native, MetricUnit::Millisecond)
                    .tags(["command", "worker_id"]),
            ])
            .max_series_per_metric(3)
            .build(t.catalog())
            .unwrap(),
    );
    let only_python = [Pattern::new("python.*").unwrap()];
    t.attach_sink("prometheus", &only_python, sink.clone())
        .unwrap();
    for i in 0..50 {
        let error_type = format!("Error{i}");
        t.execute(
            builtin::PYTHON_CALL_EXCEPTION,
            &[("duration", Value::Int(1))],
            &[("error_type", error_type.as_str().into())],
        );
        // A numeric tag value works like its text.
        t.execute(
            builtin::PYTHON_CALL_STOP,
            &[("duration", Value::Int(1_000_000))],
            &[
                ("command", "predict".into()),
                ("worker_id", Value::Int(i % 2)),
            ],
        );
    }
    let text = sink.render();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("snakepit_python_call_exception_total{"))
        .collect();
    assert_eq!(series.len(), 4, "3 label sets + other: {series:#?}");
    assert_eq!(
        line_value(
            &text,
            r#"snakepit_python_call_exception_total{error_type="other"}"#
        ),
        Some(47.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            &format!(r#"{OVERFLOW_METRIC}{{metric="snakepit_python_call_exception_total"}}"#)
        ),
        Some(47.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            r#"snakepit_python_call_stop_duration_seconds_count{command="predict",worker_id="1"}"#
        ),
        Some(25.0),
        "{text}"
    );
    promtool_check(&text);
}

#[test]
fn bad_definitions_and_duplicate_names_are_refused() {
    let t = Telemetry::new();
    let e = PrometheusSink::builder()
        .metrics(vec![counter("snakepit.made.up.count")])
        .build(t.catalog())
        .unwrap_err()
        .to_string();
    assert!(e.contains("snakepit.made.up"), "{e}");
    let e = PrometheusSink::builder()
        .metrics(vec![
            counter("snakepit.pool.saturated.count"),
            counter("snakepit.pool.saturated.count"),
        ])
        .build(t.catalog())
        .unwrap_err()
        .to_string();
    assert!(e.contains("snakepit_pool_saturated_total"), "{e}");
}

#[test]
fn metrics_sharing_tags_only_get_series_for_measurements_present() {
    let t = Telemetry::new();
    let sink = Arc::new(PrometheusSink::builder().build(t.catalog()).unwrap());
    t.attach_sink("prometheus", &[], sink.clone()).unwrap();
    t.execute(
        builtin::POOL_STATUS,
        &[("queue_depth", Value::Int(2))],
        &[("pool_name", "p2".into())],
    );
    let text = sink.render();
    assert_eq!(
        line_value(&text, r#"snakepit_pool_status_queue_depth{pool_name="p2"}"#),
        Some(2.0)
    );
    assert!(
        !text.contains("snakepit_pool_status_busy_workers{"),
        "{text}"
    );
}

#[test]
fn tag_transforms_apply_and_are_capped_too() {
    let t = Telemetry::new();
    let sink = Arc::new(
        PrometheusSink::builder()
            .metrics(vec![counter("snakepit.python.call.exception.count")
                .tags(["error_type"])
                .tag_values(|_, v| v.to_string().to_lowercase())])
            .max_series_per_metric(2)
            .build(t.catalog())
            .unwrap(),
    );
    t.attach_sink("prometheus", &[], sink.clone()).unwrap();
    for e in ["KeyError", "KEYERROR", "ValueError", "OSError"] {
        t.execute(
            builtin::PYTHON_CALL_EXCEPTION,
            &[],
            &[("error_type", e.into())],
        );
    }
    let text = sink.render();
    for (labels, n) in [("keyerror", 2.0), ("valueerror", 1.0), ("other", 1.0)] {
        let series = format!(r#"snakepit_python_call_exception_total{{error_type="{labels}"}}"#);
        assert_eq!(line_value(&text, &series), Some(n), "{series}\n{text}");
    }
}
