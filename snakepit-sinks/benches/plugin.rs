//! Plugin sink benchmarks.
//!
//! * `plugin_handle/*`: host-side cost per event of `Telemetry::execute`
//!   into a plugin sink (copy into the bounded queue), against a no-op
//!   closure handler as the baseline. The queue never fills here: each timed
//!   chunk is smaller than the queue and starts when the plugin has drained
//!   the previous one, so the figure is the enqueue path, not the drop path.
//! * `plugin_e2e/*`: events per second delivered end to end (execute ->
//!   queue -> plugin thread -> plugin), producer throttled so nothing is
//!   dropped, ending with a flush: the no-op plugin (`slow` without config)
//!   as baseline, and the JSON-lines plugin writing a file.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use snakepit_core::{builtin, Sink, Value};
use snakepit_sinks::plugin::PluginSink;
use snakepit_telemetry::Telemetry;
use snakepit_testkit::plugins::{config, plugin};

const CAPACITY: usize = 8192;
const CHUNK: u64 = 4096;

fn emit(telemetry: &Telemetry, i: u64) {
    telemetry.execute(
        builtin::POOL_QUEUE_DEQUEUED,
        &[
            ("queue_time", Value::Int(black_box(i as i64))),
            ("queue_depth", Value::Int(3)),
        ],
        &[
            ("pool_name", Value::from("default")),
            ("command", Value::from("predict")),
        ],
    );
}

fn with_plugin(path: &std::path::Path, cfg: serde_json::Value) -> (Telemetry, Arc<PluginSink>) {
    let telemetry = Telemetry::new();
    let cfg = config(path, cfg, CAPACITY);
    let sink = Arc::new(PluginSink::load(&cfg, &telemetry).expect("plugin loads"));
    telemetry
        .attach_sink("bench", &cfg.events, sink.clone())
        .expect("attach");
    (telemetry, sink)
}

fn wait_drained(sink: &PluginSink) {
    while sink.stats().queued > 0 {
        std::thread::yield_now();
    }
}

fn handle_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("plugin_handle");
    g.throughput(Throughput::Elements(1));

    let baseline = Telemetry::new();
    baseline
        .attach("noop", "snakepit.pool.queue.dequeued", |e| {
            black_box(e.name());
        })
        .expect("attach");
    g.bench_function("noop_handler", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            emit(&baseline, i)
        })
    });

    let (telemetry, sink) = with_plugin(&plugin("slow"), json!({}));
    g.bench_function("plugin_sink", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut sent = 0u64;
            while sent < iters {
                let n = CHUNK.min(iters - sent);
                wait_drained(&sink);
                let start = Instant::now();
                for i in 0..n {
                    emit(&telemetry, sent + i);
                }
                total += start.elapsed();
                sent += n;
            }
            total
        })
    });
    g.finish();
    sink.shutdown(Duration::from_secs(10)).expect("shutdown");
    let stats = sink.stats();
    assert_eq!(
        stats.dropped(),
        0,
        "the enqueue benchmark must not drop: {stats:?}"
    );
}

fn end_to_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("plugin_e2e");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bench.jsonl");
    for (name, path, cfg) in [
        ("noop_plugin", plugin("slow"), json!({})),
        (
            "jsonl_plugin",
            plugin("jsonl"),
            json!({ "path": out, "append": false }),
        ),
    ] {
        let (telemetry, sink) = with_plugin(&path, cfg);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters {
                    while sink.stats().queued >= (CAPACITY - 1) as u64 {
                        std::thread::yield_now();
                    }
                    emit(&telemetry, i);
                }
                sink.flush(Duration::from_secs(60)).expect("flush");
                start.elapsed()
            })
        });
        sink.shutdown(Duration::from_secs(10)).expect("shutdown");
        let stats = sink.stats();
        assert_eq!(stats.dropped(), 0, "{name} dropped: {stats:?}");
    }
    g.finish();
}

criterion_group!(benches, handle_cost, end_to_end);
criterion_main!(benches);
