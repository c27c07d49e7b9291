//! What taking the caller's OpenTelemetry context costs the host per call
//! (feature `opentelemetry`): calls made inside an entered OTel SDK span
//! (each call's future polled with the span's context current, so the call
//! reads it and sends its trace parent to the worker) against calls with
//! no OTel context (the feature built in, nothing to read), through real
//! Python workers, in the same run, alternating. Telemetry is on with no
//! sink, so the figure is the context's alone.
//!
//! `cargo bench -p snakepit-pool --features opentelemetry --bench
//! caller_context` (env `CALLS`, default 100000 per round; `ROUNDS`,
//! default 7).

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::context::FutureExt;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::json;
use snakepit_grpc::{CallOptions, ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::procfs::cpu_us;
use snakepit_testkit::stats::{median, quartiles};
use snakepit_testkit::{env_num, WorkerProcess, SHOWCASE};

const WORKERS: usize = 2;
const IN_FLIGHT_PER_WORKER: usize = 64;

/// The context each call runs in: an entered SDK span of its task, or
/// none.
#[derive(Clone, Copy, PartialEq)]
enum Caller {
    NoContext,
    InSpan,
}

/// One measured run: calls/s and the host's CPU µs per call.
async fn run(
    clients: &[Arc<WorkerClient>],
    provider: &SdkTracerProvider,
    caller: Caller,
    calls: usize,
) -> (f64, f64) {
    let tasks = clients.len() * IN_FLIGHT_PER_WORKER;
    let per_task = calls / tasks;
    let tracer = provider.tracer("bench");
    let host0 = cpu_us(None);
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..tasks {
        let c = clients[i % clients.len()].clone();
        // One request span per task, sampled, open for its calls.
        let cx = match caller {
            Caller::InSpan => Context::new().with_span(tracer.start("request")),
            Caller::NoContext => Context::new(),
        };
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                c.execute("ping", json!({}), CallOptions::default())
                    .with_context(cx.clone())
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let done = (per_task * tasks) as f64;
    let rate = done / started.elapsed().as_secs_f64();
    let host = (cpu_us(None) - host0) / done;
    (rate, host)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let calls = env_num("CALLS", 100_000) as usize;
    let rounds = env_num("ROUNDS", 7) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let workers: Vec<WorkerProcess> = (0..WORKERS)
        .map(|i| WorkerProcess::start(SHOWCASE, &format!("w{i}")))
        .collect();
    let t = Telemetry::new();
    let provider = SdkTracerProvider::builder().build();
    let clients: Vec<Arc<WorkerClient>> = rt.block_on(async {
        let mut clients = Vec::new();
        for (i, w) in workers.iter().enumerate() {
            let address = WorkerAddress::Unix(w.socket().expect("a private socket").into());
            let c = WorkerClient::connect(t.clone(), ConnectOptions::new(address, format!("w{i}")))
                .await
                .expect("connect");
            for _ in 0..200 {
                c.execute("ping", json!({}), CallOptions::default())
                    .await
                    .unwrap();
            }
            clients.push(Arc::new(c));
        }
        clients
    });
    // Rounds alternate which configuration runs first, so that drifts in
    // machine load hit both alike; each ratio is taken within one round.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut order = [Caller::NoContext, Caller::InSpan];
        if round % 2 == 1 {
            order.reverse();
        }
        let mut got = [(0.0, 0.0); 2];
        for caller in order {
            let r = rt.block_on(run(&clients, &provider, caller, calls));
            got[usize::from(caller == Caller::InSpan)] = r;
        }
        println!(
            "round {round}: no context {:.0}/s {:.1} µs host CPU/call; in an OTel span {:.0}/s {:.1} µs host CPU/call",
            got[0].0, got[0].1, got[1].0, got[1].1
        );
        off.push(got[0]);
        on.push(got[1]);
    }
    let ratio = |v: Vec<f64>| -> String {
        let (lo, mid, hi) = quartiles(&v);
        format!("{mid:.3}x [{lo:.3}, {hi:.3}]")
    };
    println!();
    println!(
        "| figure ({WORKERS} workers, ping, median of {rounds} alternating rounds) | value | baseline: no OTel context | ratio [quartiles] |"
    );
    println!("|---|---|---|---|");
    let host_on = median(on.iter().map(|r| r.1).collect());
    let host_off = median(off.iter().map(|r| r.1).collect());
    let host_ratio = ratio(on.iter().zip(&off).map(|(a, b)| a.1 / b.1).collect());
    println!(
        "| caller in an OTel span (feature opentelemetry): host CPU µs per call | {host_on:.2} | {host_off:.2} | {host_ratio} |"
    );
    let rate_on = median(on.iter().map(|r| r.0).collect());
    let rate_off = median(off.iter().map(|r| r.0).collect());
    let rate_ratio = ratio(on.iter().zip(&off).map(|(a, b)| a.0 / b.0).collect());
    println!(
        "| caller in an OTel span (feature opentelemetry): calls/s | {rate_on:.0} | {rate_off:.0} | {rate_ratio} |"
    );
    rt.block_on(async {
        for c in &clients {
            c.close().await;
        }
    });
}
