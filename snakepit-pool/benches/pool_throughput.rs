//! Pool benchmarks (`cargo bench -p snakepit-pool --bench pool_throughput`).
//!
//! Prints one table: figure, baseline, ratio. Measured in the same run:
//! * calls/s through a pool of 2 workers, trivial tool, telemetry on (every
//!   event enabled, one counting handler on `snakepit.*`), many callers;
//!   baselines: one raw `WorkerClient`, Python's ProcessPoolExecutor and
//!   multiprocessing.Pool (`py_baselines.py`);
//! * one call at a time, round trip p50, the caller a task on the runtime:
//!   the median of `BENCH_P50_BLOCKS` blocks of 1,000 calls (default 8),
//!   alternating with blocks of mp.Pool.apply (its baseline, measured in the
//!   same minutes); also the raw client, a caller in `block_on`, and a pool
//!   on a current-thread runtime;
//! * throughput with telemetry off vs on;
//! * time until a pool of 4 is ready.
//!
//! Env: `SNAKEPIT_PYTHON` (else the workspace venv), `BENCH_SECONDS` (per
//! throughput figure, default 3), `BENCH_IN_FLIGHT` (default 128),
//! `BENCH_ROUNDS` (alternating on / no-handler / off / off-again rounds,
//! default 12; each round starts one pool later, so that every four rounds
//! each pool runs once in every position),
//! `BENCH_ROUND_SECONDS` (per pool per round, default 2),
//! `BENCH_PROFILE=on|nohandler|off` (run that pool only, `BENCH_SECONDS`, for
//! a profiler),
//! `BENCH_CALL_STREAMS` (per worker, default 1), `BENCH_CONCURRENCY` (per
//! worker, default 256).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_grpc::{ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_pool::{CallOptions, Pool, PoolConfig};
use snakepit_telemetry::Telemetry;

use snakepit_testkit::procfs::cpu_us;
use snakepit_testkit::stats::{median, spread};
use snakepit_testkit::{env_num, python, WorkerProcess, SHOWCASE};

const TOOL: &str = "ping";

fn config(name: &str, workers: usize) -> PoolConfig {
    PoolConfig::new(SHOWCASE)
        .python(python())
        .pool_name(name)
        .workers(workers)
        .concurrency_per_worker(env_num("BENCH_CONCURRENCY", 256) as usize)
        .call_streams_per_worker(env_num("BENCH_CALL_STREAMS", 1) as usize)
        .max_queue(10_000)
        .status_interval(Duration::from_secs(1))
}

/// Telemetry on: every event enabled and counted by a handler.
fn telemetry_on() -> (Telemetry, Arc<AtomicU64>) {
    let t = Telemetry::new();
    let n = Arc::new(AtomicU64::new(0));
    let seen = n.clone();
    t.attach("count-all", "snakepit.*", move |_| {
        seen.fetch_add(1, Ordering::Relaxed);
    })
    .expect("attach");
    (t, n)
}

fn telemetry_off() -> Telemetry {
    let t = Telemetry::new();
    t.control().set_enabled(false);
    t
}

/// Calls/s from `in_flight` concurrent callers for `secs`.
async fn throughput<F, Fut>(in_flight: usize, secs: u64, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    // Warm up.
    let warm: Vec<_> = (0..in_flight)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    call().await;
                }
            })
        })
        .collect();
    for w in warm {
        let _ = w.await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (call, stop, done, failed) =
                (call.clone(), stop.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if call().await {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("  ({failed} calls failed)");
    }
    done.load(Ordering::Relaxed) as f64 / elapsed
}

/// Median round trip of one call at a time, µs, measured by a task
/// spawned on the runtime: the way a tokio service calls the pool (from a
/// request handler, itself a task).
async fn p50_us<F, Fut>(n: usize, call: F) -> f64
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    tokio::spawn(p50_here(n, call)).await.expect("p50 task")
}

/// Median round trip of one call at a time, µs, measured where it is
/// awaited. From `block_on` (a thread outside the runtime's workers) every
/// call adds two wake-ups across threads: the call's tasks run on a worker
/// thread, and the reply wakes the blocked thread.
async fn p50_here<F, Fut>(n: usize, call: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        call().await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        call().await;
        samples.push(t0.elapsed());
    }
    samples.sort();
    samples[n / 2].as_secs_f64() * 1e6
}

/// `py_baselines.py`, beside this file.
fn baselines_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py_baselines.py")
}

fn baselines() -> Option<serde_json::Value> {
    let out = Command::new(python())
        .arg(baselines_script())
        .arg("50000")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "py_baselines.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// `py_baselines.py serve-p50`: multiprocessing.Pool.apply, one call at a
/// time, a block of calls per request.
struct MpApply {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl MpApply {
    fn start() -> Option<MpApply> {
        use std::io::BufRead;
        let mut child = Command::new(python())
            .arg(baselines_script())
            .arg("serve-p50")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut out = std::io::BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        out.read_line(&mut line).ok()?;
        (line.trim() == "ready").then_some(MpApply { child, out })
    }

    /// The p50 of `n` calls, µs.
    fn p50(&mut self, n: usize) -> Option<f64> {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut()?;
        writeln!(stdin, "{n}").ok()?;
        let mut line = String::new();
        self.out.read_line(&mut line).ok()?;
        line.trim().parse().ok()
    }
}

impl Drop for MpApply {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the script ends at end of input
        let _ = self.child.wait();
    }
}

/// Calls/s from `in_flight` callers on `pool` for `secs`, and CPU µs per
/// call (this process plus the pool's workers).
async fn rate_and_cpu(pool: &Arc<Pool>, in_flight: usize, secs: u64) -> (f64, f64) {
    let pids = pool.worker_pids();
    let cpu = || cpu_us(None) + pids.iter().map(|p| cpu_us(Some(*p))).sum::<f64>();
    let calls = Arc::new(AtomicU64::new(0));
    let (p, n) = (pool.clone(), calls.clone());
    let c0 = cpu();
    let rate = throughput(in_flight, secs, move || {
        let (p, n) = (p.clone(), n.clone());
        async move {
            n.fetch_add(1, Ordering::Relaxed);
            p.execute(TOOL, json!({}), CallOptions::default())
                .await
                .is_ok()
        }
    })
    .await;
    let used = cpu() - c0;
    (rate, used / calls.load(Ordering::Relaxed).max(1) as f64)
}

fn row(figure: &str, value: String, baseline: &str, ratio: String) {
    println!("| {figure:<48} | {value:>14} | {baseline:<40} | {ratio:>8} |");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let secs = env_num("BENCH_SECONDS", 3);
    let in_flight = env_num("BENCH_IN_FLIGHT", 128) as usize;
    if let Ok(which) = std::env::var("BENCH_PROFILE") {
        // One pool only, for a profiler or an A/B run in fresh processes.
        rt.block_on(async {
            let telemetry = match which.as_str() {
                "on" => telemetry_on().0,
                "nohandler" => Telemetry::new(),
                _ => telemetry_off(),
            };
            let pool = Arc::new(
                Pool::start(telemetry, config("bench_profile", 2))
                    .await
                    .expect("pool"),
            );
            let (rate, cpu) = rate_and_cpu(&pool, in_flight, secs).await;
            println!("{which}: {rate:.0} calls/s, {cpu:.1} µs CPU per call");
            if let Ok(pool) = Arc::try_unwrap(pool) {
                pool.shutdown().await;
            }
        });
        return;
    }
    let py = baselines();
    rt.block_on(async move {
        let args = json!({});
        // Raw single client.
        let raw = WorkerProcess::start(SHOWCASE, "raw_1");
        let client = WorkerClient::connect(
            Telemetry::new(),
            ConnectOptions::new(WorkerAddress::Unix(raw.socket().expect("a private socket").to_path_buf()), "raw_1"),
        )
        .await
        .expect("connect raw");
        let c = client.clone();
        let a = args.clone();
        let raw_rate = throughput(in_flight, secs, move || {
            let (c, a) = (c.clone(), a.clone());
            async move { c.execute(TOOL, a, CallOptions::default()).await.is_ok() }
        })
        .await;
        let c = client.clone();
        let raw_p50 = p50_us(3000, move || {
            let c = c.clone();
            async move { c.execute(TOOL, json!({}), CallOptions::default()).await.is_ok() }
        })
        .await;
        let c = client.clone();
        let raw_p50_timeout = p50_us(3000, move || {
            let c = c.clone();
            async move {
                let opts = CallOptions::with_timeout(Duration::from_secs(30));
                c.execute(TOOL, json!({}), opts).await.is_ok()
            }
        })
        .await;
        client.close().await;
        drop(raw);

        // Pool of 1 worker with the raw client's telemetry: the pool's own cost.
        let pool = Arc::new(
            Pool::start(Telemetry::new(), config("bench_one", 1))
                .await
                .expect("pool of 1"),
        );
        let p = pool.clone();
        let a = args.clone();
        let one_rate = throughput(in_flight, secs, move || {
            let (p, a) = (p.clone(), a.clone());
            async move { p.execute(TOOL, a, CallOptions::default()).await.is_ok() }
        })
        .await;
        let p = pool.clone();
        let one_p50 = p50_us(3000, move || {
            let p = p.clone();
            async move { p.execute(TOOL, json!({}), CallOptions::default()).await.is_ok() }
        })
        .await;
        if let Ok(pool) = Arc::try_unwrap(pool) {
            pool.shutdown().await;
        }

        // Telemetry on (every event, counting handler), enabled with no
        // handler (Python still emits, the host still folds, nothing is
        // delivered), off, and off again (an A/A control: what two identical
        // pools differ by is the machine's noise). Four pools side by side,
        // measured in short alternating rounds so that drifts in machine load
        // hit all four alike; ratios are taken within a round, medians and
        // quartiles over rounds reported. Besides calls/s, each round reads
        // the CPU time per call (host + that pool's workers): while every
        // core is busy throughput is CPU per call, and CPU time does not count
        // the seconds another tenant of the machine takes away.
        let (t_on, counted) = telemetry_on();
        let on_pool = Arc::new(Pool::start(t_on.clone(), config("bench_on", 2)).await.expect("pool on"));
        let nohandler_pool = Arc::new(
            Pool::start(Telemetry::new(), config("bench_nohandler", 2))
                .await
                .expect("pool no handler"),
        );
        let off_pool = Arc::new(Pool::start(telemetry_off(), config("bench_off", 2)).await.expect("pool off"));
        let off2_pool = Arc::new(Pool::start(telemetry_off(), config("bench_off2", 2)).await.expect("pool off 2"));
        let pools = [&on_pool, &nohandler_pool, &off_pool, &off2_pool];
        let rounds = env_num("BENCH_ROUNDS", 12).max(1) as usize;
        let round_secs = env_num("BENCH_ROUND_SECONDS", 2).max(1);
        let mut rates: [Vec<f64>; 4] = Default::default();
        let mut cpus: [Vec<f64>; 4] = Default::default();
        for round in 0..rounds {
            // Each round starts one pool later (a rotation): over four
            // rounds every pool runs once in every position, and no pool
            // runs twice in a row across a round boundary (a pool that does
            // runs warm, which favoured it by up to 9% in an A/A pair when
            // odd rounds simply ran in reverse).
            let order: [usize; 4] = std::array::from_fn(|i| (i + round) % 4);
            for k in order {
                let (rate, cpu) = rate_and_cpu(pools[k], in_flight, round_secs).await;
                rates[k].push(rate);
                cpus[k].push(cpu);
            }
            eprintln!(
                "round {round}: on {:.0}/s {:.1} µs, no handler {:.0}/s {:.1} µs, off {:.0}/s {:.1} µs, off again {:.0}/s {:.1} µs",
                rates[0][round], cpus[0][round], rates[1][round], cpus[1][round],
                rates[2][round], cpus[2][round], rates[3][round], cpus[3][round]
            );
        }
        // Per-round ratios against `off`: calls/s k / off, CPU off / k (so
        // that for both, 1.0 is no cost and below 1.0 is slower).
        let ratios = |k: usize| -> (Vec<f64>, Vec<f64>) {
            (
                (0..rounds).map(|r| rates[k][r] / rates[2][r]).collect(),
                (0..rounds).map(|r| cpus[2][r] / cpus[k][r]).collect(),
            )
        };
        let (on_ratio, on_cpu_ratio) = ratios(0);
        let (nh_ratio, nh_cpu_ratio) = ratios(1);
        let (aa_ratio, aa_cpu_ratio) = ratios(3);
        let on_rate = median(rates[0].clone());
        let nohandler_rate = median(rates[1].clone());
        let off_rate = median(rates[2].clone());
        let (on_cpu, off_cpu) = (median(cpus[0].clone()), median(cpus[2].clone()));
        // The other pools go first: the round trip is measured with one
        // pool in the process, as for the raw client.
        for pool in [nohandler_pool, off_pool, off2_pool] {
            if let Ok(pool) = Arc::try_unwrap(pool) {
                pool.shutdown().await;
            }
        }
        // One call at a time, in blocks alternating with blocks of
        // multiprocessing.Pool.apply, so that both are measured in the same
        // minutes (the machine's speed drifts by 2x over minutes).
        let mut mp = MpApply::start();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..env_num("BENCH_P50_BLOCKS", 8).max(1) {
            let p = on_pool.clone();
            ours.push(
                p50_us(1000, move || {
                    let p = p.clone();
                    async move { p.execute(TOOL, json!({}), CallOptions::default()).await.is_ok() }
                })
                .await,
            );
            if let Some(p50) = mp.as_mut().and_then(|m| m.p50(1000)) {
                theirs.push(p50);
            }
        }
        drop(mp);
        let pool_p50 = median(ours.clone());
        let pool_p50_block_on = p50_here(3000, || async {
            on_pool.execute(TOOL, json!({}), CallOptions::default()).await.is_ok()
        })
        .await;
        let events = counted.load(Ordering::Relaxed);
        if let Ok(pool) = Arc::try_unwrap(on_pool) {
            pool.shutdown().await;
        }

        // The same round trip with the pool on a current-thread runtime: every
        // task of a call runs on the caller's thread, no wake-up crosses
        // threads on the host.
        let ct_p50 = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("current-thread runtime");
            rt.block_on(async {
                let (t, _) = telemetry_on();
                let pool = Pool::start(t, config("bench_current_thread", 1))
                    .await
                    .expect("pool on a current-thread runtime");
                let p50 = p50_here(3000, || async {
                    pool.execute(TOOL, json!({}), CallOptions::default()).await.is_ok()
                })
                .await;
                pool.shutdown().await;
                p50
            })
        })
        .join()
        .expect("current-thread runtime thread");

        // Pool of 4 ready.
        let mut ready = Vec::new();
        for i in 0..5 {
            let t0 = Instant::now();
            let pool = Pool::start(Telemetry::new(), config(&format!("bench_ready{i}"), 4))
                .await
                .expect("pool of 4");
            ready.push(t0.elapsed());
            pool.shutdown().await;
        }
        ready.sort();
        let ready_ms = ready[ready.len() / 2].as_secs_f64() * 1e3;

        println!();
        println!("snakepit-pool benchmark: 2 workers, tool `{TOOL}`, {in_flight} callers, {secs} s per throughput figure");
        println!("telemetry on: {events} events delivered to the counting handler");
        println!();
        row("figure", "value".into(), "baseline", "ratio".into());
        println!("|{}|{}|{}|{}|", "-".repeat(50), "-".repeat(16), "-".repeat(42), "-".repeat(10));
        row(
            "pool of 1 worker calls/s (pool overhead)",
            format!("{one_rate:.0}/s"),
            &format!("raw WorkerClient, 1 worker: {raw_rate:.0}/s"),
            format!("{:.2}", one_rate / raw_rate),
        );
        row(
            "pool of 1 worker round trip p50",
            format!("{one_p50:.1} µs"),
            &format!("raw WorkerClient: {raw_p50:.1} µs"),
            format!("{:.2}", one_p50 / raw_p50),
        );
        row(
            "pool calls/s, 2 workers, telemetry on (median)",
            format!("{on_rate:.0}/s"),
            &format!("raw WorkerClient, 1 worker: {raw_rate:.0}/s"),
            format!("{:.2}", on_rate / raw_rate),
        );
        if let Some(py) = &py {
            let ppe = py["ppe_calls_per_s"].as_f64().unwrap_or(f64::NAN);
            let mp = py["mp_calls_per_s"].as_f64().unwrap_or(f64::NAN);
            row(
                "pool calls/s vs ProcessPoolExecutor(2)",
                format!("{on_rate:.0}/s"),
                &format!("ProcessPoolExecutor: {ppe:.0}/s"),
                format!("{:.2}", on_rate / ppe),
            );
            row(
                "pool calls/s vs multiprocessing.Pool(2)",
                format!("{on_rate:.0}/s"),
                &format!("multiprocessing.Pool: {mp:.0}/s"),
                format!("{:.2}", on_rate / mp),
            );
        }
        row(
            "pool calls/s vs target 40,000/s",
            format!("{on_rate:.0}/s"),
            "target: 40000/s",
            format!("{:.2}", on_rate / 40_000.0),
        );
        row(
            "round trip p50, one at a time, pool",
            format!("{pool_p50:.1} µs"),
            &format!("raw WorkerClient: {raw_p50:.1} µs"),
            format!("{:.2}", pool_p50 / raw_p50),
        );
        row(
            "round trip p50, one at a time, caller in block_on",
            format!("{pool_p50_block_on:.1} µs"),
            &format!("caller a task on the runtime: {pool_p50:.1} µs"),
            format!("{:.2}", pool_p50_block_on / pool_p50),
        );
        row(
            "round trip p50, pool on a current-thread runtime",
            format!("{ct_p50:.1} µs"),
            &format!("multi-thread runtime: {pool_p50:.1} µs"),
            format!("{:.2}", ct_p50 / pool_p50),
        );
        row(
            "raw p50 with a 30 s call timeout",
            format!("{raw_p50_timeout:.1} µs"),
            &format!("raw WorkerClient, no timeout: {raw_p50:.1} µs"),
            format!("{:.2}", raw_p50_timeout / raw_p50),
        );
        if !theirs.is_empty() {
            let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| a / b).collect();
            row(
                "round trip p50 vs multiprocessing.Pool.apply",
                format!("{pool_p50:.1} µs"),
                &format!("mp.Pool.apply, same blocks: {:.1} µs", median(theirs.clone())),
                spread(&ratios),
            );
        }
        let (lo, hi) = (
            ours.iter().copied().fold(f64::INFINITY, f64::min),
            ours.iter().copied().fold(0.0, f64::max),
        );
        row(
            "round trip p50 vs target 120 µs",
            format!("{pool_p50:.1} µs"),
            &format!("target: 120 µs (blocks {lo:.0}-{hi:.0} µs)"),
            format!("{:.2}", pool_p50 / 120.0),
        );
        row(
            "throughput telemetry on / off (median ratio)",
            format!("{on_rate:.0}/s"),
            &format!("telemetry off: {off_rate:.0}/s (target >= 0.95)"),
            spread(&on_ratio),
        );
        row(
            "CPU per call telemetry off / on (median ratio)",
            format!("{on_cpu:.1} µs"),
            &format!("telemetry off: {off_cpu:.1} µs"),
            spread(&on_cpu_ratio),
        );
        row(
            "throughput no handler / off (median ratio)",
            format!("{nohandler_rate:.0}/s"),
            &format!("telemetry off: {off_rate:.0}/s"),
            spread(&nh_ratio),
        );
        row(
            "CPU per call off / no handler (median ratio)",
            format!("{:.1} µs", median(cpus[1].clone())),
            &format!("telemetry off: {off_cpu:.1} µs"),
            spread(&nh_cpu_ratio),
        );
        row(
            "A/A control: throughput off again / off",
            format!("{:.0}/s", median(rates[3].clone())),
            &format!("telemetry off: {off_rate:.0}/s"),
            spread(&aa_ratio),
        );
        row(
            "A/A control: CPU per call off / off again",
            format!("{:.1} µs", median(cpus[3].clone())),
            &format!("telemetry off: {off_cpu:.1} µs"),
            spread(&aa_cpu_ratio),
        );
        row(
            "pool of 4 ready (median of 5)",
            format!("{ready_ms:.0} ms"),
            "target: 1500 ms",
            format!("{:.2}", ready_ms / 1500.0),
        );
    });
}
