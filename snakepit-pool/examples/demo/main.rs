//! `cargo xtask demo`: a pool of Python workers doing real small work, observed
//! the way the observability guide's "complete monitoring example" does it:
//! a slow-call warning, a queue-depth alert and Prometheus metrics, plus a
//! summary of everything telemetry saw.
//!
//! The screen: a progress bar that log lines cannot break (plain progress
//! lines every 10% when stdout is not a terminal), repeated warnings grouped
//! into one line each with their count, a latency histogram per tool, and the
//! summary printed last, after the pool has shut down.
//!
//! ```text
//! cargo run -p snakepit-pool --example demo -- [--quick] [--serve] [--workers N]
//!     [--calls N] [--config snakepit.toml]
//! ```

mod groups;
mod histogram;
mod progress;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_core::config::{Config, PrometheusListen, PrometheusSinkConfig, SinkConfig};
use snakepit_core::Value;
use snakepit_grpc::CallOptions;
use snakepit_pool::{Pool, PoolConfig, PoolError};
use snakepit_sinks::{telemetry_from_config, SinkSet};
use snakepit_telemetry::Telemetry;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::prelude::*;

use groups::RepeatGroups;
use progress::Screen;

const ADAPTER: &str = "snakepit_bridge.adapters.showcase:ShowcaseAdapter";

struct Args {
    quick: bool,
    serve: bool,
    workers: usize,
    calls: Option<usize>,
    config: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        serve: false,
        workers: 2,
        calls: None,
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--serve" => a.serve = true,
            "--workers" => {
                a.workers = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=64).contains(n))
                    .ok_or("--workers takes a number from 1 to 64")?
            }
            "--calls" => {
                a.calls = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--calls takes a positive number")?,
                )
            }
            "--config" => a.config = Some(it.next().ok_or("--config takes a file path")?),
            "-h" | "--help" => {
                println!(
                    "demo [--quick] [--serve] [--workers N] [--calls N] [--config FILE]\n\n\
                     --quick      a short run\n\
                     --serve      keep serving /metrics after the workload (Ctrl-C to stop)\n\
                     --workers N  worker processes (default 2; a [pool] in --config decides)\n\
                     --calls N    calls in the workload (default 2000, 300 with --quick)\n\
                     --config F   a snakepit TOML file: [telemetry], [[sinks]] and [pool]\n\
                     \x20            (or [[pools]], the first is run; adapter defaults to the demo's)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`; try --help")),
        }
    }
    Ok(a)
}

/// What the demo's own handlers collect.
#[derive(Default)]
struct Seen {
    events: BTreeMap<String, u64>,
    latency_ns: BTreeMap<String, Vec<u64>>,
    errors: BTreeMap<String, u64>,
    queue_ns: Vec<u64>,
    memory: BTreeMap<String, i64>,
    cpu: BTreeMap<String, f64>,
    dropped: BTreeMap<String, i64>,
}

fn attach_observers(t: &Telemetry, seen: &Arc<Mutex<Seen>>, slow: &Arc<AtomicU64>) {
    // The guide's "slow-calls" handler.
    let slow_count = slow.clone();
    t.attach("slow-calls", "snakepit.python.call.stop", move |e| {
        let ms = e
            .measurement("duration")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            / 1e6;
        if ms > 250.0 {
            slow_count.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "demo", command = e.meta_str("command"), ms, "slow call");
        }
    })
    .expect("slow-calls handler");
    // The guide's "queue-depth" handler.
    t.attach("queue-depth", "snakepit.pool.status", |e| {
        let depth = e.measurement("queue_depth").and_then(Value::as_i64).unwrap_or(0);
        if depth > 50 {
            tracing::error!(target: "demo", depth, pool = e.meta_str("pool_name"), "high queue depth");
        }
    })
    .expect("queue-depth handler");
    // Everything, for the summary.
    let s = seen.clone();
    t.attach("demo-summary", "*", move |e| {
        let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
        *s.events.entry(e.name().to_string()).or_default() += 1;
        match e.name() {
            "snakepit.grpc.call.stop" => {
                let tool = e.meta_str("tool").unwrap_or("?").to_string();
                let d = e
                    .measurement("duration")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                s.latency_ns.entry(tool).or_default().push(d.max(0) as u64);
            }
            "snakepit.grpc.call.exception" => {
                let tool = e.meta_str("tool").unwrap_or("?").to_string();
                let d = e
                    .measurement("duration")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                s.latency_ns
                    .entry(tool.clone())
                    .or_default()
                    .push(d.max(0) as u64);
                *s.errors.entry(tool).or_default() += 1;
            }
            "snakepit.pool.queue.dequeued" => {
                let d = e
                    .measurement("queue_time")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                s.queue_ns.push(d.max(0) as u64);
            }
            "snakepit.python.memory.sampled" => {
                let w = e.meta_str("worker_id").unwrap_or("?").to_string();
                let rss = e
                    .measurement("rss_bytes")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                s.memory.insert(w, rss);
            }
            "snakepit.python.cpu.sampled" => {
                let w = e.meta_str("worker_id").unwrap_or("?").to_string();
                let cpu = e
                    .measurement("cpu_percent")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                s.cpu.insert(w, cpu);
            }
            "snakepit.telemetry.events.dropped" => {
                let key = format!(
                    "{}/{}",
                    e.meta_str("where").unwrap_or("?"),
                    e.meta_str("reason").unwrap_or("?")
                );
                let n = e.measurement("count").and_then(Value::as_i64).unwrap_or(0);
                *s.dropped.entry(key).or_default() += n;
            }
            _ => {}
        }
    })
    .expect("summary handler");
}

/// One call of the mixed workload.
async fn one_call(pool: &Pool, i: usize) -> Result<(), PoolError> {
    let opts = CallOptions::default();
    match i % 10 {
        0..=2 => {
            let text = "the quick brown fox jumps over the lazy dog\n".repeat(1 + i % 7);
            pool.execute("text_stats", json!({ "text": text }), opts)
                .await?;
        }
        3..=5 => {
            let x = [i as f64 * 0.1, 1.0, (i % 5) as f64];
            pool.execute("predict", json!({ "x": x }), opts).await?;
        }
        6 => {
            pool.execute("sleep", json!({ "ms": 50 + (i % 4) * 100 }), opts)
                .await?;
        }
        7 => {
            pool.execute("fail", json!({ "message": "a failing call" }), opts)
                .await?;
        }
        8 => {
            let mut chunks = pool
                .execute_stream("stream", json!({ "n": 5 }), opts)
                .await?;
            while let Some(chunk) = futures_util::StreamExt::next(&mut chunks).await {
                chunk?;
            }
        }
        _ => {
            pool.execute("nested_spans", json!({ "data": "demo" }), opts)
                .await?;
        }
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

/// What the summary reports besides the events seen.
struct Outcome {
    elapsed: Duration,
    calls: usize,
    failed: usize,
    slow: u64,
    /// One line per kind of warning or error, with its count.
    warnings: Vec<String>,
}

fn print_summary(seen: &Seen, o: &Outcome) {
    let Outcome {
        elapsed,
        calls,
        failed,
        slow,
        ..
    } = *o;
    println!("\n== summary ==");
    println!(
        "{calls} calls in {:.2}s ({:.0} calls/s), {failed} failed (the `fail` tool fails on purpose), {slow} slow-call warnings",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "\n{:<14} {:>7} {:>7} {:>10} {:>10}",
        "tool", "calls", "errors", "p50 ms", "p99 ms"
    );
    let mut tools: Vec<&String> = seen.latency_ns.keys().chain(seen.errors.keys()).collect();
    tools.sort();
    tools.dedup();
    for tool in tools {
        let mut l = seen.latency_ns.get(tool).cloned().unwrap_or_default();
        l.sort_unstable();
        let errors = seen.errors.get(tool).copied().unwrap_or(0);
        println!(
            "{:<14} {:>7} {:>7} {:>10.3} {:>10.3}",
            tool,
            l.len(),
            errors,
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
    }
    println!("\nlatency by tool, ms:");
    for (tool, l) in &seen.latency_ns {
        println!();
        for line in histogram::render(tool, l) {
            println!("{line}");
        }
    }
    let mut q = seen.queue_ns.clone();
    q.sort_unstable();
    println!(
        "\nqueue: {} calls waited, p50 {:.3} ms, p99 {:.3} ms",
        q.len(),
        percentile(&q, 0.5),
        percentile(&q, 0.99)
    );
    println!("\n{:<14} {:>10} {:>8}", "worker", "rss MB", "cpu %");
    for (w, rss) in &seen.memory {
        let cpu = seen.cpu.get(w).copied().unwrap_or(0.0);
        println!("{:<14} {:>10.1} {:>8.1}", w, *rss as f64 / 1e6, cpu);
    }
    println!("\n{:<44} {:>8}", "telemetry event", "count");
    for (name, n) in &seen.events {
        println!("{name:<44} {n:>8}");
    }
    if o.warnings.is_empty() {
        println!("\nwarnings and errors: none");
    } else {
        println!("\nwarnings and errors (the first of each kind is shown above the summary):");
        for line in &o.warnings {
            println!("  {line}");
        }
    }
    if seen.dropped.values().all(|n| *n == 0) {
        println!("\ndrops: none");
    } else {
        println!("\ndrops:");
        for (k, n) in &seen.dropped {
            println!("  {k:<30} {n}");
        }
    }
}

/// The demo's pool: the config file's `[pool]` (or first `[[pools]]`),
/// whose `adapter` defaults to the demo's, else the demo's own settings.
fn demo_pool(config: &mut Config, args: &Args) -> Result<PoolConfig, PoolError> {
    let tables = config.pool.iter_mut().chain(config.pools.iter_mut());
    for table in tables {
        table
            .entry("adapter")
            .or_insert_with(|| ADAPTER.to_string().into());
    }
    if let Some(first) = PoolConfig::from_config(config)?.into_iter().next() {
        return Ok(first);
    }
    Ok(PoolConfig::new(ADAPTER)
        .pool_name("demo")
        .workers(args.workers)
        .concurrency_per_worker(8)
        .status_interval(Duration::from_millis(500))
        .worker_arg("--telemetry-interval-s")
        .worker_arg("1"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if !config
        .sinks
        .iter()
        .any(|s| matches!(s, SinkConfig::Prometheus(_)))
    {
        config
            .sinks
            .push(SinkConfig::Prometheus(PrometheusSinkConfig::default()));
    }
    let telemetry = telemetry_from_config(&config);
    // snakepit's records obey the file's log_level and log_categories;
    // other libraries' only show warnings.
    let others_quiet = tracing_subscriber::filter::filter_fn(|m| {
        m.target().starts_with("snakepit")
            || m.target() == "demo"
            || *m.level() <= tracing::Level::WARN
    });
    // Log lines go through the screen, around the progress bar; repeated
    // warnings and errors are counted, not printed again.
    let screen = Screen::new();
    let repeats = RepeatGroups::default();
    tracing_subscriber::registry()
        .with(
            telemetry
                .tracing_layer_with_writer(screen.clone())
                .with_filter(others_quiet.and(repeats.clone())),
        )
        .init();
    let pool_config = demo_pool(&mut config, &args)?;

    let sinks = match SinkSet::from_config(&config, &telemetry) {
        Ok(s) => s,
        Err(e) if args.config.is_none() => {
            // The default port is taken: serve on any free port instead.
            eprintln!("demo: {e}; using a free port for /metrics");
            let any = PrometheusSinkConfig {
                listen: PrometheusListen::Addr(([127, 0, 0, 1], 0).into()),
                ..PrometheusSinkConfig::default()
            };
            config.sinks = vec![SinkConfig::Prometheus(any)];
            SinkSet::from_config(&config, &telemetry)?
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(addr) = sinks.prometheus_addr() {
        println!("metrics: http://{addr}/metrics");
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let slow = Arc::new(AtomicU64::new(0));
    attach_observers(&telemetry, &seen, &slow);

    let workers = pool_config.workers;
    println!("starting a pool of {workers} workers ...");
    let started = Instant::now();
    let pool = Pool::start(telemetry.clone(), pool_config).await?;
    println!("pool ready in {:.2}s", started.elapsed().as_secs_f64());

    let calls = args.calls.unwrap_or(if args.quick { 300 } else { 2000 });
    let pool = Arc::new(pool);
    screen.start(calls as u64);
    let t0 = Instant::now();
    // More callers than call slots (2 x 8 per worker), so some calls queue.
    let concurrency = 8 * workers + 8;
    let mut tasks = Vec::new();
    for lane in 0..concurrency {
        let (pool, screen) = (pool.clone(), screen.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = lane;
            while i < calls {
                let ok = one_call(&pool, i).await.is_ok();
                screen.call_done(ok);
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = t0.elapsed();
    screen.finish();
    // Let a last status snapshot and resource sample arrive.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Shut the pool down first, so that the workers' shutdown logs come
    // before the summary, not after it.
    println!("shutting the pool down ...");
    let pool = Arc::try_unwrap(pool).map_err(|_| "pool still shared")?;
    pool.shutdown().await;
    // Without --serve, the sinks' last exports too.
    let sinks = if args.serve {
        Some(sinks)
    } else {
        let _ = sinks.shutdown(Duration::from_secs(2));
        None
    };

    let (_, failed) = screen.counts();
    let outcome = Outcome {
        elapsed,
        calls,
        failed: failed as usize,
        slow: slow.load(Ordering::Relaxed),
        warnings: repeats.report(),
    };
    {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        print_summary(&seen, &outcome);
    }
    if let Some(sinks) = sinks {
        if let Some(addr) = sinks.prometheus_addr() {
            println!("\nserving http://{addr}/metrics; press Ctrl-C to stop");
        }
        tokio::signal::ctrl_c().await?;
        let _ = sinks.shutdown(Duration::from_secs(2));
    }
    Ok(())
}
