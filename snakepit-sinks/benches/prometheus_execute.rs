//! Host `execute` cost with the Prometheus sink attached (target: <= 300
//! ns/event), against baselines in the same run: no handler, and one
//! trivial handler. Then the telemetry cost of one tool call's host-side
//! events (grpc.call, python.call, tool.execution start/stop: 6 events)
//! with every sink attached (log, Prometheus, OTel exporting to a local
//! receiver) against telemetry off.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use snakepit_core::config::OtelSinkConfig;
use snakepit_core::{builtin, EventContext, Policy, Sink, Value};
use snakepit_sinks::log::LogSink;
use snakepit_sinks::otel::OtelSink;
use snakepit_sinks::prometheus::PrometheusSink;
use snakepit_telemetry::{SpanOptions, Telemetry};

mod support;

const COMMANDS: [&str; 4] = ["predict", "train", "embed", "score"];

fn call_stop(t: &Telemetry, i: usize) {
    t.execute(
        black_box(builtin::PYTHON_CALL_STOP),
        black_box(&[("duration", Value::Int(1_234_567))]),
        black_box(&[
            ("command", Value::from(COMMANDS[i % 4])),
            ("worker_id", Value::from("w1")),
            ("pool_name", Value::from("default")),
        ]),
    );
}

fn pool_status(t: &Telemetry) {
    t.execute(
        black_box(builtin::POOL_STATUS),
        black_box(&[
            ("queue_depth", Value::Int(3)),
            ("available_workers", Value::Int(2)),
            ("busy_workers", Value::Int(2)),
            ("total_workers", Value::Int(4)),
        ]),
        black_box(&[("pool_name", Value::from("default"))]),
    );
}

fn execute(c: &mut Criterion) {
    let mut g = c.benchmark_group("execute_python_call_stop");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;

    let t = Telemetry::new();
    g.bench_function("baseline_no_handler", |b| {
        b.iter(|| {
            i += 1;
            call_stop(&t, i)
        })
    });

    let t = Telemetry::new();
    let sum = Arc::new(AtomicU64::new(0));
    let s = sum.clone();
    t.attach("trivial", "snakepit.python.call.stop", move |e| {
        if let Some(Value::Int(d)) = e.measurement("duration") {
            s.fetch_add(*d as u64, Ordering::Relaxed);
        }
    })
    .unwrap();
    g.bench_function("baseline_trivial_handler", |b| {
        b.iter(|| {
            i += 1;
            call_stop(&t, i)
        })
    });

    let t = Telemetry::new();
    let prom = Arc::new(PrometheusSink::builder().build(t.catalog()).unwrap());
    t.attach_sink("prometheus", &[], prom.clone()).unwrap();
    g.bench_function("prometheus_sink_summary", |b| {
        b.iter(|| {
            i += 1;
            call_stop(&t, i)
        })
    });
    // Histogram samples are drained by upkeep (the listener thread does it
    // every few seconds); keep memory flat between measurements.
    prom.flush(std::time::Duration::from_secs(1)).unwrap();
    g.finish();

    let mut g = c.benchmark_group("execute_pool_status");
    g.throughput(Throughput::Elements(1));
    g.bench_function("prometheus_sink_4_gauges", |b| b.iter(|| pool_status(&t)));
    g.finish();
}

/// The host-side events of one tool call: the host call span around the
/// folded Python call and tool spans.
fn one_call(t: &Telemetry, n: u64) {
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    let md = [
        ("tool", Value::from("predict")),
        ("worker_id", Value::from("w1")),
    ];
    let host = t.start_span_with(
        family,
        &md,
        SpanOptions {
            parent_span_id: 0,
            trace_id: 0x1234_5678_9abc_def0_1234_5678_9abc_def0,
        },
    );
    let ctx = |span_id: u64, parent: u64| EventContext {
        timestamp_ns: 0,
        correlation_id: Some("c0ffee"),
        span_id,
        parent_span_id: parent,
        trace_id: 0x1234_5678_9abc_def0_1234_5678_9abc_def0,
    };
    let (call, tool) = (2 * n + 1, 2 * n + 2);
    let py_md = [
        ("command", Value::from("predict")),
        ("worker_id", Value::from("w1")),
        ("pool_name", Value::from("default")),
    ];
    t.execute_with(
        builtin::PYTHON_CALL_START,
        &[("system_time", Value::Int(1))],
        &py_md,
        ctx(call, host.span_id()),
    );
    t.execute_with(
        builtin::PYTHON_TOOL_EXECUTION_START,
        &[("system_time", Value::Int(1))],
        &[("tool", Value::from("predict"))],
        ctx(tool, call),
    );
    t.execute_with(
        builtin::PYTHON_TOOL_EXECUTION_STOP,
        &[("duration", Value::Int(50_000))],
        &[
            ("tool", Value::from("predict")),
            ("status", Value::from("success")),
        ],
        ctx(tool, call),
    );
    t.execute_with(
        builtin::PYTHON_CALL_STOP,
        &[("duration", Value::Int(60_000))],
        &py_md,
        ctx(call, host.span_id()),
    );
    host.stop();
}

fn call_dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("call_events_6_per_call");
    g.throughput(Throughput::Elements(1));
    let mut n = 0u64;

    let off = Telemetry::builder()
        .policy(Policy {
            enabled: false,
            ..Policy::default()
        })
        .build();
    g.bench_function("baseline_telemetry_off", |b| {
        b.iter(|| {
            n += 1;
            one_call(&off, n)
        })
    });

    let t = Telemetry::new();
    t.attach_sink("log", &[], Arc::new(LogSink::new(&t)))
        .unwrap();
    g.bench_function("log_sink_only", |b| {
        b.iter(|| {
            n += 1;
            one_call(&t, n)
        })
    });
    let p = Telemetry::new();
    let prom_only = Arc::new(PrometheusSink::builder().build(p.catalog()).unwrap());
    p.attach_sink("prometheus", &[], prom_only.clone()).unwrap();
    g.bench_function("prometheus_sink_only", |b| {
        b.iter(|| {
            n += 1;
            one_call(&p, n)
        })
    });
    let prom = Arc::new(PrometheusSink::builder().build(t.catalog()).unwrap());
    t.attach_sink("prometheus", &[], prom.clone()).unwrap();
    let otel = Arc::new(
        OtelSink::new(
            &OtelSinkConfig {
                endpoint: support::otlp_sink_receiver(),
                ..OtelSinkConfig::default()
            },
            &t,
        )
        .unwrap(),
    );
    t.attach_sink("otel", &[], otel.clone()).unwrap();
    g.bench_function("every_sink_on", |b| {
        b.iter(|| {
            n += 1;
            one_call(&t, n)
        })
    });
    g.finish();
    prom.flush(std::time::Duration::from_secs(1)).unwrap();
    let _ = otel.shutdown(std::time::Duration::from_secs(5));
    eprintln!("otel sink: {:?}", otel.stats());
}

/// The whole cost of one exported span (handler, pairing, encoding, HTTP
/// to a local receiver), amortized: spans are emitted, then flushed.
fn otel_span_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("otel_exported_span");
    g.throughput(Throughput::Elements(1));
    let t = Telemetry::new();
    let otel = Arc::new(
        OtelSink::new(
            &OtelSinkConfig {
                endpoint: support::otlp_sink_receiver(),
                queue_capacity: 1 << 20,
                ..OtelSinkConfig::default()
            },
            &t,
        )
        .unwrap(),
    );
    t.attach_sink("otel", &[], otel.clone()).unwrap();
    let family = t.catalog().span_family("snakepit.python.call").unwrap();
    let md = [
        ("command", Value::from("predict")),
        ("worker_id", Value::from("w1")),
        ("pool_name", Value::from("default")),
    ];
    g.bench_function("emit_and_flush", |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            let mut left = iters;
            while left > 0 {
                // Stay within the queue: flush every 100k spans.
                let n = left.min(100_000);
                for _ in 0..n {
                    t.span(family, &md, || ());
                }
                otel.flush(std::time::Duration::from_secs(60)).unwrap();
                left -= n;
            }
            started.elapsed()
        })
    });
    g.finish();
    let _ = otel.shutdown(std::time::Duration::from_secs(5));
    eprintln!("otel sink: {:?}", otel.stats());
}

criterion_group!(benches, execute, call_dispatch, otel_span_cost);
criterion_main!(benches);
