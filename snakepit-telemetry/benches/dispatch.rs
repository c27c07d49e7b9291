//! `execute` cost: no handler, 1 handler, 4 handlers, a filtered-out event,
//! and a sampled event. Baseline in the same run: a direct call of the same
//! handler closure (what a hand-wired callback would cost).
//!
//! Target: <= 50 ns/event with one handler.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use snakepit_core::{builtin, Value};
use snakepit_telemetry::Telemetry;

fn handler(sum: Arc<AtomicU64>) -> impl Fn(&snakepit_core::Event<'_>) + Send + Sync {
    move |e| {
        if let Some(Value::Int(d)) = e.measurement("duration") {
            sum.fetch_add(*d as u64, Ordering::Relaxed);
        }
    }
}

fn emit(t: &Telemetry) {
    t.execute(
        black_box(builtin::PYTHON_CALL_STOP),
        black_box(&[("duration", Value::Int(1234))]),
        black_box(&[("command", Value::from("predict"))]),
    );
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("execute");
    g.throughput(Throughput::Elements(1));

    let sum = Arc::new(AtomicU64::new(0));
    let direct = handler(sum.clone());
    let spec = snakepit_core::Catalog::builtin();
    let spec = spec.spec(builtin::PYTHON_CALL_STOP).clone();
    g.bench_function("baseline_direct_closure_call", |b| {
        b.iter(|| {
            let m = [("duration", Value::Int(1234))];
            let md = [("command", Value::from("predict"))];
            let e = snakepit_core::Event::new(
                builtin::PYTHON_CALL_STOP,
                &spec,
                black_box(&m),
                black_box(&md),
                Default::default(),
            );
            direct(black_box(&e));
        })
    });

    let t = Telemetry::new();
    g.bench_function("0_handlers", |b| b.iter(|| emit(&t)));

    t.attach("h0", "snakepit.python.call.stop", handler(sum.clone()))
        .unwrap();
    g.bench_function("1_handler", |b| b.iter(|| emit(&t)));

    for i in 1..4 {
        t.attach(
            format!("h{i}"),
            "snakepit.python.call.stop",
            handler(sum.clone()),
        )
        .unwrap();
    }
    g.bench_function("4_handlers", |b| b.iter(|| emit(&t)));

    let filtered = Telemetry::new();
    filtered
        .attach("h", "snakepit.python.call.stop", handler(sum.clone()))
        .unwrap();
    filtered.control().set_filters(&[], &["python.*"]).unwrap();
    g.bench_function("1_handler_filtered_out", |b| b.iter(|| emit(&filtered)));

    let sampled = Telemetry::new();
    sampled
        .attach("h", "snakepit.python.call.stop", handler(sum.clone()))
        .unwrap();
    sampled.control().set_sampling_rate(0.5).unwrap();
    g.bench_function("1_handler_sampled_0.5", |b| b.iter(|| emit(&sampled)));
    g.finish();
    black_box(sum.load(Ordering::Relaxed));
}

criterion_group!(benches, bench);
criterion_main!(benches);
