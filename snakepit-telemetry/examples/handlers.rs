//! Handlers, a span, a correlation id and runtime sampling, on host events.
//!
//! ```text
//! cargo run -p snakepit-telemetry --example handlers
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use snakepit_core::{builtin, Value};
use snakepit_telemetry::{set_correlation_id, Telemetry};

fn main() {
    let telemetry = Telemetry::new();
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    telemetry
        .attach("call-stops", "snakepit.grpc.call.stop", move |event| {
            seen.fetch_add(1, Ordering::Relaxed);
            let ms = event
                .measurement("duration")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
                / 1e6;
            println!(
                "{} tool={} {ms:.3} ms correlation={}",
                event.name(),
                event.meta_str("tool").unwrap_or("?"),
                event.correlation_id().unwrap_or("-")
            );
        })
        .expect("attach");

    let family = telemetry
        .catalog()
        .span_family("snakepit.grpc.call")
        .expect("a span family");
    let _id = set_correlation_id("request-1");
    telemetry.span(family, &[("tool", Value::from("predict"))], || {
        std::thread::sleep(std::time::Duration::from_millis(3));
    });

    // Keep a tenth of the spans: whole spans, never halves.
    telemetry
        .control()
        .set_sampling_rate(0.1)
        .expect("a valid rate");
    for i in 0..100 {
        let _id = set_correlation_id(format!("request-{i}"));
        telemetry.span(family, &[("tool", Value::from("sampled"))], || {});
    }
    println!("stop events seen: {}", calls.load(Ordering::Relaxed));
    telemetry.execute(builtin::POOL_STATUS, &[("queue_depth", Value::Int(0))], &[]);
}
