//! Pool benchmarks (`cargo bench -p snakepit-pool --bench pool_throughput`).
//!
//! Prints one table: figure, baseline, ratio. Measured in the same run:
//! * calls/s through a pool of 2 workers, trivial tool, telemetry on (every
//!   event enabled, one counting handler on `snakepit.*`), many callers;
//!   baselines: one raw `WorkerClient`, Python's ProcessPoolExecutor and
//!   multiprocessing.Pool (`py_baselines.py`);
//! * one call at a time, round trip p50 and p99, the caller a task on the
//!   runtime: the medians over `BENCH_P50_BLOCKS` blocks of 1,000 calls
//!   (default 8) of the pool, the raw client, the floor (`floor/client.rs`
//!   with `floor_peer.py`: the same request and reply bytes framed by hand
//!   over a Unix socket) and mp.Pool.apply, one block of each in turn, so
//!   that all four are measured in the same minutes; also a caller in
//!   `block_on`, and a pool on a current-thread runtime;
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
//! `BENCH_LATENCY_ONLY=1` (only the one-call-at-a-time blocks),
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
use snakepit_testkit::stats::{median, percentile, spread};
use snakepit_testkit::{env_num, python, WorkerProcess, SHOWCASE};

#[path = "floor/client.rs"]
mod floor;

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
    median(samples_us(n, call).await)
}

/// Round trips of `n` calls one at a time, µs each, measured by a task
/// spawned on the runtime (see [`p50_us`]).
async fn samples_us<F, Fut>(n: usize, call: F) -> Vec<f64>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    tokio::spawn(samples_here(n, call))
        .await
        .expect("latency task")
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
    median(samples_here(n, call).await)
}

/// Round trips of `n` calls one at a time (after 200 unmeasured), µs each,
/// measured where they are awaited.
async fn samples_here<F, Fut>(n: usize, call: F) -> Vec<f64>
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
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    samples
}

/// p50 and p99 of each block of one-call-at-a-time round trips of one
/// kind (pool, raw client, floor, mp.Pool.apply), µs.
#[derive(Default)]
struct Blocks {
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// CPU µs per call of the host process and of the worker processes.
    host_cpu: Vec<f64>,
    worker_cpu: Vec<f64>,
}

impl Blocks {
    fn push(&mut self, samples: &[f64]) {
        self.p50.push(percentile(samples, 0.5));
        self.p99.push(percentile(samples, 0.99));
    }

    /// Measures a block of `calls` calls one at a time (`block`) served by
    /// the worker processes `pids`, with the CPU they and the host used.
    async fn measure<F>(&mut self, pids: &[u32], calls: usize, block: F)
    where
        F: std::future::Future<Output = Vec<f64>>,
    {
        let workers = || pids.iter().map(|p| cpu_us(Some(*p))).sum::<f64>();
        let (h0, w0) = (cpu_us(None), workers());
        let samples = block.await;
        // The block also ran 200 unmeasured calls first.
        let n = (calls + 200) as f64;
        self.host_cpu.push((cpu_us(None) - h0) / n);
        self.worker_cpu.push((workers() - w0) / n);
        self.push(&samples);
    }

    /// Median over blocks of the p50 and of the p99.
    fn medians(&self) -> (f64, f64) {
        (median(self.p50.clone()), median(self.p99.clone()))
    }

    /// Per-block ratios of this kind's p50 to `other`'s.
    fn p50_ratios(&self, other: &Blocks) -> Vec<f64> {
        self.p50
            .iter()
            .zip(&other.p50)
            .map(|(a, b)| a / b)
            .collect()
    }
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

/// `py_baselines.py serve-latency`: multiprocessing.Pool.apply, one call at
/// a time, a block of calls per request.
struct MpApply {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl MpApply {
    fn start() -> Option<MpApply> {
        use std::io::BufRead;
        let mut child = Command::new(python())
            .arg(baselines_script())
            .arg("serve-latency")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut out = std::io::BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        out.read_line(&mut line).ok()?;
        (line.trim() == "ready").then_some(MpApply { child, out })
    }

    /// The p50 and p99 of `n` calls, µs.
    fn latency(&mut self, n: usize) -> Option<(f64, f64)> {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut()?;
        writeln!(stdin, "{n}").ok()?;
        let mut line = String::new();
        self.out.read_line(&mut line).ok()?;
        let mut figures = line.split_whitespace().map(str::parse::<f64>);
        Some((figures.next()?.ok()?, figures.next()?.ok()?))
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

/// The one-call-at-a-time rows: p50 and p99 of each kind (medians over
/// blocks), and the pool's p50 against the floor (target <= 2x) and
/// against mp.Pool.apply (target <= 0.6x), as per-block ratios.
fn latency_rows(pool: &Blocks, raw: &Blocks, floor: &Blocks, mp: &Blocks) {
    let kinds = [
        ("pool", pool),
        ("raw WorkerClient", raw),
        ("floor (hand-framed, same bytes)", floor),
        ("mp.Pool.apply", mp),
    ];
    for (name, blocks) in kinds {
        if blocks.p50.is_empty() {
            continue;
        }
        let (p50, p99) = blocks.medians();
        row(
            &format!("one at a time p50, {name}"),
            format!("{p50:.1} µs"),
            &format!("p99: {p99:.1} µs"),
            format!("{:.2}", p99 / p50),
        );
        if !blocks.host_cpu.is_empty() {
            // Where a round trip goes: CPU per call on either side (the
            // mean, /proc's 10 ms ticks over the block), against the p50:
            // below 1 the rest is waiting; above 1 the wake-ups themselves
            // (switches, runtime threads searching for work) cost CPU.
            let (host, worker) = (
                median(blocks.host_cpu.clone()),
                median(blocks.worker_cpu.clone()),
            );
            row(
                &format!("one at a time CPU per call, {name}: host"),
                format!("{host:.1} µs"),
                &format!("worker: {worker:.1} µs; (host + worker) / p50:"),
                format!("{:.2}", (host + worker) / p50),
            );
        }
    }
    let targets = [("floor", floor, 2.0), ("mp.Pool.apply", mp, 0.6)];
    for (name, base, target) in targets {
        if base.p50.is_empty() {
            continue;
        }
        let (p50, p99) = base.medians();
        row(
            &format!("one at a time p50, pool / {name}"),
            format!("{:.1} µs", pool.medians().0),
            &format!("{name}: {p50:.1} µs, p99 {p99:.1} µs (target <= {target}x)"),
            spread(&pool.p50_ratios(base)),
        );
    }
}

/// One call at a time in blocks of 1,000 (`BENCH_P50_BLOCKS`, default 8):
/// a block of `pool`, of `raw`, of the floor and of mp.Pool.apply in turn.
/// Returns the blocks of each, in that order (floor and mp.Pool.apply
/// empty when they could not start).
async fn one_at_a_time(pool: &Arc<Pool>, raw: &WorkerClient) -> [Blocks; 4] {
    let mut mp = MpApply::start();
    let mut floor = floor::Floor::start(&python(), TOOL);
    let mut out = <[Blocks; 4]>::default();
    let raw_pid: Vec<u32> = raw.python_pid().into_iter().collect();
    for _ in 0..env_num("BENCH_P50_BLOCKS", 8).max(1) {
        let p = pool.clone();
        let block = samples_us(1000, move || {
            let p = p.clone();
            async move {
                p.execute(TOOL, json!({}), CallOptions::default())
                    .await
                    .is_ok()
            }
        });
        out[0].measure(&pool.worker_pids(), 1000, block).await;
        let c = raw.clone();
        let block = samples_us(1000, move || {
            let c = c.clone();
            async move {
                c.execute(TOOL, json!({}), CallOptions::default())
                    .await
                    .is_ok()
            }
        });
        out[1].measure(&raw_pid, 1000, block).await;
        if let Some(f) = floor.as_mut() {
            out[2].push(&f.samples_us(1000));
        }
        if let Some((p50, p99)) = mp.as_mut().and_then(|m| m.latency(1000)) {
            out[3].p50.push(p50);
            out[3].p99.push(p99);
        }
    }
    out
}

/// `BENCH_LATENCY_ONLY=1`: only the one-call-at-a-time blocks and their
/// rows (a pool of 2 with telemetry on, a raw client), for A/B runs.
async fn latency_only() {
    let (telemetry, _) = telemetry_on();
    let pool = Arc::new(
        Pool::start(telemetry, config("bench_latency", 2))
            .await
            .expect("pool"),
    );
    let worker = WorkerProcess::start(SHOWCASE, "raw_latency");
    let address = WorkerAddress::Unix(worker.socket().expect("a private socket").to_path_buf());
    let client = WorkerClient::connect(
        Telemetry::new(),
        ConnectOptions::new(address, "raw_latency"),
    )
    .await
    .expect("connect raw");
    let [ours, raw, floor, mp] = one_at_a_time(&pool, &client).await;
    client.close().await;
    if let Ok(pool) = Arc::try_unwrap(pool) {
        pool.shutdown().await;
    }
    row("figure", "value".into(), "baseline", "ratio".into());
    latency_rows(&ours, &raw, &floor, &mp);
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
    if std::env::var("BENCH_LATENCY_ONLY").is_ok_and(|v| v == "1") {
        rt.block_on(latency_only());
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
        let [ours, raw_blocks, floor_blocks, theirs] = one_at_a_time(&on_pool, &client).await;
        client.close().await;
        drop(raw);
        let pool_p50 = median(ours.p50.clone());
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
        latency_rows(&ours, &raw_blocks, &floor_blocks, &theirs);
        let (lo, hi) = (
            ours.p50.iter().copied().fold(f64::INFINITY, f64::min),
            ours.p50.iter().copied().fold(0.0, f64::max),
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
