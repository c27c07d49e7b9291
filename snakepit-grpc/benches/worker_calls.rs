//! Benchmarks against a real Python worker (release build, one worker):
//!
//! * calls/s and p50/p99 round trip of a trivial tool: unary `ExecuteTool`
//!   (the compatibility path, baseline) vs the persistent `CallBatchStream`,
//!   sequential and with N in flight;
//! * events/s from one worker to a host handler, burst and sustained, with
//!   the worker's drop counts.
//!
//! Run: `cargo bench -p snakepit-grpc --bench worker_calls`. Prints one table
//! (figure, baseline, ratio).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_grpc::{CallOptions, ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::{WorkerSpec, SHOWCASE};

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Unary,
    Stream,
}

struct CallFigures {
    calls_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn one(client: &WorkerClient, path: Path) {
    let r = match path {
        Path::Unary => {
            client
                .execute_unary("ping", json!({}), CallOptions::default())
                .await
        }
        Path::Stream => {
            client
                .execute("ping", json!({}), CallOptions::default())
                .await
        }
    };
    r.expect("bench call failed");
}

async fn calls(client: &WorkerClient, path: Path, in_flight: usize, total: usize) -> CallFigures {
    // Warm up.
    for _ in 0..200 {
        one(client, path).await;
    }
    let started = Instant::now();
    let per_task = total / in_flight;
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                one(&c, path).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    CallFigures {
        calls_per_s: all.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
    }
}

/// CPU seconds (user + system) used so far by a process.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    snakepit_testkit::procfs::cpu_us(pid) / 1e6
}

struct EventFigures {
    host_cpu_us_per_event: f64,
    worker_cpu_us_per_event: f64,
    delivered: u64,
    emitted: u64,
    per_s: f64,
    worker_drops: [u64; 6],
}

/// Three `emit_events` bursts: the slowest rate, the median burst, the
/// fastest rate.
async fn three_bursts(
    client: &WorkerClient,
    seen: &AtomicU64,
    args: serde_json::Value,
    n: u64,
) -> (f64, EventFigures, f64) {
    let mut bursts = Vec::new();
    for _ in 0..3 {
        bursts.push(events(client, seen, "emit_events", args.clone(), n).await);
    }
    bursts.sort_by(|a, b| a.per_s.total_cmp(&b.per_s));
    let (slowest, fastest) = (bursts[0].per_s, bursts[2].per_s);
    (slowest, bursts.swap_remove(1), fastest)
}

async fn events(
    client: &WorkerClient,
    seen: &AtomicU64,
    tool: &str,
    args: serde_json::Value,
    expected: u64,
) -> EventFigures {
    let drops_before = client.telemetry_stats().worker_drops;
    let base = seen.load(Ordering::Relaxed);
    let pid = client.python_pid();
    let (host_cpu, worker_cpu) = (cpu_seconds(None), cpu_seconds(pid));
    let started = Instant::now();
    client
        .execute(
            tool,
            args,
            CallOptions::with_timeout(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    // Wait for delivery (or for the counters to stop moving).
    let mut last = (u64::MAX, Instant::now());
    loop {
        let now = seen.load(Ordering::Relaxed) - base;
        if now >= expected {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = started.elapsed();
    let delivered = seen.load(Ordering::Relaxed) - base;
    let host_cpu = cpu_seconds(None) - host_cpu;
    let worker_cpu = cpu_seconds(pid) - worker_cpu;
    // Let the next batch carry fresh drop counters.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = client.telemetry_stats().worker_drops;
    EventFigures {
        host_cpu_us_per_event: host_cpu * 1e6 / delivered.max(1) as f64,
        worker_cpu_us_per_event: worker_cpu * 1e6 / delivered.max(1) as f64,
        delivered,
        emitted: expected,
        per_s: delivered as f64 / elapsed.as_secs_f64(),
        worker_drops: std::array::from_fn(|i| after[i] - drops_before[i]),
    }
}

fn row(figure: &str, value: String, baseline: String, ratio: String) {
    println!("| {figure:<52} | {value:>22} | {baseline:>22} | {ratio:>7} |");
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` only
    // check that the benchmark builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("worker_calls: run with `cargo bench -p snakepit-grpc --bench worker_calls`");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("SNAKEPIT_BENCH_QUICK").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let worker = WorkerSpec::new(SHOWCASE, "w-bench")
            .args(["--telemetry-interval-s", "0", "--telemetry-buffer", "1000000"])
            .start();
        let telemetry = Telemetry::new();
        let seen = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        telemetry
            .attach("bench", "snakepit.python.tool.execution.stop", move |_| {
                s.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        let socket = worker.socket().expect("a private socket").to_path_buf();
        let opts = ConnectOptions::new(WorkerAddress::Unix(socket), "w-bench");
        let client = WorkerClient::connect(telemetry.clone(), opts.clone()).await.unwrap();
        let n = if quick { 1000 } else { 5000 };

        println!("| {:<52} | {:>22} | {:>22} | {:>7} |", "figure", "value", "baseline", "ratio");
        println!("|{}|{}|{}|{}|", "-".repeat(54), "-".repeat(24), "-".repeat(24), "-".repeat(9));
        for in_flight in [1usize, 8, 32] {
            let unary = calls(&client, Path::Unary, in_flight, n).await;
            let stream = calls(&client, Path::Stream, in_flight, n).await;
            row(
                &format!("calls/s, trivial tool, {in_flight} in flight (stream vs unary)"),
                format!("{:.0}", stream.calls_per_s),
                format!("{:.0}", unary.calls_per_s),
                format!("{:.2}x", stream.calls_per_s / unary.calls_per_s),
            );
            row(
                &format!("p50 round trip µs, {in_flight} in flight"),
                format!("{:.0}", stream.p50_us),
                format!("{:.0}", unary.p50_us),
                format!("{:.2}x", unary.p50_us / stream.p50_us),
            );
            row(
                &format!("p99 round trip µs, {in_flight} in flight"),
                format!("{:.0}", stream.p99_us),
                format!("{:.0}", unary.p99_us),
                format!("{:.2}x", unary.p99_us / stream.p99_us),
            );
        }
        // More call streams to the same worker.
        let mut opts2 = opts.clone();
        opts2.call_streams = 4;
        let multi = WorkerClient::connect(Telemetry::new(), opts2).await.unwrap();
        let one_stream = calls(&client, Path::Stream, 32, n).await;
        let four = calls(&multi, Path::Stream, 32, n).await;
        row(
            "calls/s, 32 in flight, 4 call streams vs 1",
            format!("{:.0}", four.calls_per_s),
            format!("{:.0}", one_stream.calls_per_s),
            format!("{:.2}x", four.calls_per_s / one_stream.calls_per_s),
        );
        multi.close().await;

        // Events: a burst, as fast as the worker can emit.
        let burst_n: u64 = if quick { 100_000 } else { 500_000 };
        // Three bursts each; the median one is reported (the machine is shared).
        let burst_args = json!({"count": burst_n, "vary_duration": true});
        let (slowest, burst, fastest) = three_bursts(&client, &seen, burst_args, burst_n).await;
        row(
            "events/s delivered to a host handler, burst (median of 3)",
            format!("{:.0}", burst.per_s),
            "300000 (target)".to_string(),
            format!("{:.2}x", burst.per_s / 300_000.0),
        );
        row(
            "  burst: slowest / fastest of the 3",
            format!("{slowest:.0}"),
            format!("{fastest:.0}"),
            format!("{:.2}", slowest / fastest),
        );
        row(
            "  burst: delivered / emitted",
            format!("{}/{}", burst.delivered, burst.emitted),
            format!("drops {:?}", burst.worker_drops),
            format!("{:.3}", burst.delivered as f64 / burst.emitted as f64),
        );
        row(
            "  burst: CPU µs per event, host (fold+dispatch) / worker",
            format!("{:.2}", burst.host_cpu_us_per_event),
            format!("{:.2}", burst.worker_cpu_us_per_event),
            format!("{:.2}x", burst.worker_cpu_us_per_event / burst.host_cpu_us_per_event.max(1e-9)),
        );
        // The same with two metadata dicts in turn: no two events in a row
        // share a shape, so none travels in a run (EventRun).
        let mixed_args =
            json!({"count": burst_n, "vary_duration": true, "alternate_metadata": true});
        let (_, mixed, _) = three_bursts(&client, &seen, mixed_args, burst_n).await;
        row(
            "events/s, burst of alternating shapes (no runs; median of 3)",
            format!("{:.0}", mixed.per_s),
            "300000 (target)".to_string(),
            format!("{:.2}x", mixed.per_s / 300_000.0),
        );
        row(
            "  alternating: delivered / emitted; CPU µs per event host / worker",
            format!("{}/{}", mixed.delivered, mixed.emitted),
            format!(
                "{:.2} / {:.2}",
                mixed.host_cpu_us_per_event, mixed.worker_cpu_us_per_event
            ),
            format!("{:.3}", mixed.delivered as f64 / mixed.emitted as f64),
        );
        // Sustained 100,000 events/s for a few seconds.
        let secs = if quick { 1.0 } else { 3.0 };
        let sustained_n = (100_000.0 * secs) as u64;
        let sustained = events(
            &client,
            &seen,
            "emit_paced",
            json!({"rate": 100_000, "seconds": secs}),
            sustained_n,
        )
        .await;
        row(
            "events sustained at 100,000/s: delivered / emitted",
            format!("{}/{}", sustained.delivered, sustained.emitted),
            format!("drops {:?}", sustained.worker_drops),
            format!("{:.3}", sustained.delivered as f64 / sustained.emitted as f64),
        );
        let stats = client.telemetry_stats();
        println!(
            "\nworker drops are cumulative per reason: [buffer_full, sampled_out, filtered, disabled, encode_error, logs_dropped]; batches received: {}",
            stats.batches
        );
        client.close().await;
    });
}
