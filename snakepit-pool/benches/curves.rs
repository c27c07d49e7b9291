//! Benchmark curves (`cargo bench -p snakepit-pool --bench curves`): how the
//! pool's figures move with workers, tool cost and queue depth.
//!
//! Prints `| figure | value | baseline | ratio |` rows (read by `cargo xtask
//! bench`) and writes the same points to `<target dir>/bench/curves.json`,
//! which `cargo xtask bench --plot` draws as SVG charts. Every baseline is
//! measured in the same run, in blocks alternating with the pool's:
//! * calls/s with 1, 2, 4 and 8 workers (trivial tool `ping`, many callers)
//!   against multiprocessing.Pool with as many processes;
//! * a tool doing 1 ms of CPU work (`cpu_spin`, calibrated to 1 ms by the
//!   baseline script) with 1, 2, 8 and 32 callers: the pool's overhead in %
//!   of CPU time per call (host and workers)
//!   against the same function called in-process in Python, by as many
//!   processes as the pool has busy workers;
//! * p50 and p99 latency (submit to reply) with 32, 256 and 2,048 calls in
//!   flight on a pool of 2 workers, against the one-at-a-time p50.
//!
//! Env: `SNAKEPIT_PYTHON` (else the workspace venv), `SNAKEPIT_BENCH_QUICK=1`
//! (2 rounds of 400 ms), `CURVES_ROUNDS` (default 4), `CURVES_ROUND_MS`
//! (per block, default 1000), `BENCH_IN_FLIGHT` (callers of the calls/s
//! curve, default 128).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snakepit_pool::{CallOptions, Pool, PoolConfig};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::procfs::cpu_us;
use snakepit_testkit::stats::{median, percentile, spread};
use snakepit_testkit::{env_num, python, SHOWCASE};

/// The worker counts of the calls/s curve.
const WORKERS: [usize; 4] = [1, 2, 4, 8];
/// The callers of the CPU tool curve.
const CPU_CALLERS: [usize; 4] = [1, 2, 8, 32];
/// The calls in flight of the latency curve.
const DEPTHS: [usize; 3] = [32, 256, 2048];
/// Workers of the CPU tool and latency curves.
const POOL_WORKERS: usize = 2;

/// Rounds and block length, from the environment.
struct Settings {
    rounds: usize,
    block: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("SNAKEPIT_BENCH_QUICK").is_ok_and(|v| v == "1");
        let (rounds, ms) = if quick { (2, 400) } else { (4, 1000) };
        Settings {
            rounds: env_num("CURVES_ROUNDS", rounds).max(1) as usize,
            block: Duration::from_millis(env_num("CURVES_ROUND_MS", ms).max(100)),
        }
    }
}

/// A `py_baselines.py` mode that answers one number per line it is sent.
struct PyServer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl PyServer {
    /// Starts the script with `args`; returns it and the rest of its
    /// `ready` line.
    fn start(args: &[&str]) -> (PyServer, String) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py_baselines.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start py_baselines.py {args:?}: {e}"));
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("the ready line");
        let rest = line
            .trim()
            .strip_prefix("ready")
            .unwrap_or_else(|| panic!("py_baselines.py {args:?} printed {line:?}, not `ready`"));
        (PyServer { child, out }, rest.trim().to_string())
    }

    /// Sends `request`, returns the numbers of the line it answers.
    fn ask(&mut self, request: &str) -> Vec<f64> {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{request}").expect("write to py_baselines.py");
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read py_baselines.py");
        line.split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<Vec<f64>>>()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("py_baselines.py answered {line:?} to {request:?}"))
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the script ends at end of input
        let _ = self.child.wait();
    }
}

fn config(name: &str, workers: usize) -> PoolConfig {
    PoolConfig::new(SHOWCASE)
        .python(python())
        .pool_name(name)
        .workers(workers)
        .concurrency_per_worker(256)
        .max_queue(10_000)
        .status_interval(Duration::from_secs(1))
}

async fn start(name: &str, workers: usize) -> Arc<Pool> {
    let pool = Pool::start(Telemetry::new(), config(name, workers))
        .await
        .unwrap_or_else(|e| panic!("pool {name}: {e}"));
    Arc::new(pool)
}

async fn stop(pool: Arc<Pool>) {
    if let Ok(pool) = Arc::try_unwrap(pool) {
        pool.shutdown().await;
    }
}

/// What `in_flight` callers saw in one block: calls/s after the warm-up,
/// the latency of each call started after it, and the calls completed in
/// all (warm-up included).
struct Block {
    rate: f64,
    total: u64,
    latencies: Vec<Duration>,
}

impl Block {
    /// The `q` quantile of the latencies (nearest rank), ms; NaN for a
    /// block that completed no call.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let ms: Vec<f64> = self
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        percentile(&ms, q)
    }
}

/// Keeps `in_flight` calls of `tool(args)` going for a warm-up of a
/// quarter of `block`, then for `block`.
async fn drive(
    pool: &Arc<Pool>,
    tool: &'static str,
    args: Value,
    in_flight: usize,
    block: Duration,
) -> Block {
    let warm_until = Instant::now() + block / 4;
    let until = warm_until + block;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (pool, args, stop) = (pool.clone(), args.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut done, mut total, mut latencies) = (0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let ok = pool
                        .execute(tool, args.clone(), CallOptions::default())
                        .await
                        .is_ok();
                    let end = Instant::now();
                    assert!(ok, "a call of {tool} failed");
                    total += 1;
                    if t0 >= warm_until && end <= until {
                        done += 1;
                    }
                    if t0 >= warm_until {
                        latencies.push(end - t0);
                    }
                }
                (done, total, latencies)
            })
        })
        .collect();
    tokio::time::sleep_until(until.into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Block {
        rate: 0.0,
        total: 0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (done, total, latencies) = t.await.expect("caller task");
        out.rate += done as f64 / block.as_secs_f64();
        out.total += total;
        out.latencies.extend(latencies);
    }
    out
}

fn row(figure: &str, value: String, baseline: String, ratio: String) {
    println!("| {figure:<52} | {value:>12} | {baseline:<44} | {ratio:>22} |");
}

fn series(label: &str, points: &[(f64, f64)]) -> Value {
    json!({ "label": label, "points": points.iter().map(|(x, y)| [x, y]).collect::<Vec<_>>() })
}

/// calls/s with 1..8 workers against multiprocessing.Pool(n).
async fn workers_curve(s: &Settings, cores: usize) -> Value {
    let in_flight = env_num("BENCH_IN_FLIGHT", 128) as usize;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for n in WORKERS {
        let pool = start(&format!("curve_workers_{n}"), n).await;
        let (mut mp, _) = PyServer::start(&["serve-rate", &n.to_string()]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..s.rounds {
            a.push(
                drive(&pool, "ping", json!({}), in_flight, s.block)
                    .await
                    .rate,
            );
            b.push(mp.ask(&format!("{}", s.block.as_secs_f64()))[0]);
        }
        drop(mp);
        stop(pool).await;
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
        let (rate, base) = (median(a), median(b));
        // A point below the one before says so: more workers than cores
        // only share them.
        let mut figure = format!("calls/s, {n} worker(s), trivial tool");
        if let Some(&(prev, prev_rate)) = ours.last() {
            if rate < prev_rate {
                figure.push_str(&format!(", BELOW {prev} ({cores} cores)"));
            }
        }
        row(
            &figure,
            format!("{rate:.0}/s"),
            format!("mp.Pool({n}) apply_async: {base:.0}/s"),
            spread(&ratios),
        );
        ours.push((n as f64, rate));
        theirs.push((n as f64, base));
    }
    json!({
        "name": "workers",
        "title": format!("Calls/s by workers, trivial tool, {in_flight} callers ({cores} cores)"),
        "x_label": "workers",
        "y_label": "calls/s",
        "x_log": true,
        "series": [series("snakepit pool", &ours), series("multiprocessing.Pool", &theirs)],
    })
}

/// CPU time so far of this process and of `pids` (the workers), µs.
fn cpu_now(pids: &[u32]) -> (f64, f64) {
    let workers = pids.iter().map(|p| cpu_us(Some(*p))).sum::<f64>();
    (cpu_us(None), workers)
}

/// Overhead of a 1 ms CPU tool against calling it in-process: CPU time per
/// call (host and workers) over the in-process CPU time per call, so that
/// what other processes take of the machine does not count; calls/s beside.
async fn cpu_tool_curve(s: &Settings, cores: usize) -> Value {
    let (mut py, iterations) = PyServer::start(&["serve-spin", &POOL_WORKERS.to_string()]);
    let iterations: u64 = iterations
        .parse()
        .expect("serve-spin prints its iterations");
    let args = json!({ "iterations": iterations });
    let pool = start("curve_cpu_tool", POOL_WORKERS).await;
    let pids = pool.worker_pids();
    let mut points = Vec::new();
    for callers in CPU_CALLERS {
        let processes = callers.min(POOL_WORKERS);
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut hosts = Vec::new();
        for _ in 0..s.rounds {
            let c0 = cpu_now(&pids);
            let block = drive(&pool, "cpu_spin", args.clone(), callers, s.block).await;
            let c1 = cpu_now(&pids);
            let calls = block.total.max(1) as f64;
            let (host, cpu) = ((c1.0 - c0.0) / calls, (c1.0 + c1.1 - c0.0 - c0.1) / calls);
            let base = py.ask(&format!("{processes} {}", s.block.as_secs_f64()));
            ratios.push(cpu / base[1]);
            ours.push((block.rate, cpu));
            hosts.push(host);
            theirs.push((base[0], base[1]));
        }
        let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
        let overhead = (median(ratios.clone()) - 1.0) * 100.0;
        let busy = if callers >= POOL_WORKERS {
            "all busy"
        } else {
            "one at a time"
        };
        row(
            &format!("1 ms CPU tool, {callers} caller(s), {busy}: CPU overhead"),
            format!("{overhead:+.1}%"),
            format!(
                "in-process x{processes}: {:.0} µs/call ({:.0}/s); pool {:.0} µs, host {:.0} ({:.0}/s)",
                med(&theirs, |t| t.1),
                med(&theirs, |t| t.0),
                med(&ours, |t| t.1),
                median(hosts),
                med(&ours, |t| t.0),
            ),
            spread(&ratios),
        );
        points.push((callers as f64, overhead));
    }
    drop(py);
    stop(pool).await;
    json!({
        "name": "cpu_tool_overhead",
        "title": format!("CPU overhead of a 1 ms CPU tool, {POOL_WORKERS} workers ({cores} cores)"),
        "x_label": "callers in flight",
        "y_label": "CPU per call over in-process, % more",
        "x_log": true,
        "series": [series("snakepit pool", &points)],
    })
}

/// The median of one-at-a-time round trips, ms.
async fn one_at_a_time_ms(pool: &Arc<Pool>, calls: usize) -> f64 {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut samples = Vec::with_capacity(calls);
        for _ in 0..calls + 100 {
            let t0 = Instant::now();
            pool.execute("ping", json!({}), CallOptions::default())
                .await
                .expect("ping");
            samples.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        median(samples.split_off(100))
    })
    .await
    .expect("one-at-a-time task")
}

/// p50 and p99 latency with 32..2048 calls in flight on 2 workers.
async fn queue_depth_curve(s: &Settings, cores: usize) -> Value {
    let pool = start("curve_queue_depth", POOL_WORKERS).await;
    let mut single = Vec::new();
    let mut by_depth: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); DEPTHS.len()];
    for _ in 0..s.rounds {
        single.push(one_at_a_time_ms(&pool, 500).await);
        for (i, depth) in DEPTHS.into_iter().enumerate() {
            // A deeper queue takes longer to fill and to turn over.
            let length = s.block.mul_f64(1.0 + depth as f64 / 512.0);
            let block = drive(&pool, "ping", json!({}), depth, length).await;
            by_depth[i].0.push(block.quantile_ms(0.5));
            by_depth[i].1.push(block.quantile_ms(0.99));
            by_depth[i].2.push(block.rate);
        }
    }
    stop(pool).await;
    let base = median(single.clone());
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for (depth, (p50, p99, rate)) in DEPTHS.into_iter().zip(by_depth) {
        let ratios =
            |v: &[f64]| -> Vec<f64> { v.iter().zip(&single).map(|(x, b)| x / b).collect() };
        let (r50, r99) = (ratios(&p50), ratios(&p99));
        let (p50, p99, rate) = (median(p50), median(p99), median(rate));
        let little = depth as f64 / rate * 1e3;
        row(
            &format!("p50 latency, {depth} calls in flight, 2 workers"),
            format!("{p50:.2} ms"),
            format!(
                "one at a time p50 {:.0} µs ({depth}/calls/s: {little:.1} ms)",
                base * 1e3
            ),
            spread(&r50),
        );
        row(
            &format!("p99 latency, {depth} calls in flight, 2 workers"),
            format!("{p99:.2} ms"),
            format!("one at a time p50 {:.0} µs", base * 1e3),
            spread(&r99),
        );
        p50s.push((depth as f64, p50));
        p99s.push((depth as f64, p99));
    }
    let flat: Vec<(f64, f64)> = DEPTHS.iter().map(|d| (*d as f64, base)).collect();
    json!({
        "name": "queue_depth_latency",
        "title": format!("Latency by calls in flight, {POOL_WORKERS} workers ({cores} cores)"),
        "x_label": "calls in flight",
        "y_label": "latency, ms",
        "x_log": true,
        "y_log": true,
        "series": [series("p50", &p50s), series("p99", &p99s), series("one at a time p50", &flat)],
    })
}

/// `<target dir>/bench/curves.json`: `CARGO_TARGET_DIR`, else the directory
/// three levels above this binary (`<target>/release/deps/curves-…`).
fn curves_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("the bench binary's path");
            exe.ancestors()
                .nth(3)
                .expect("a binary under <target>/<profile>/deps")
                .to_path_buf()
        });
    target.join("bench/curves.json")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = Settings::from_env();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!();
    println!(
        "snakepit-pool curves: {} rounds of {} ms blocks, pool and baseline alternating, {cores} cores",
        s.rounds,
        s.block.as_millis()
    );
    println!();
    row(
        "figure",
        "value".into(),
        "baseline".into(),
        "ratio [quartiles]".into(),
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(54),
        "-".repeat(14),
        "-".repeat(46),
        "-".repeat(24)
    );
    let curves = rt.block_on(async {
        vec![
            workers_curve(&s, cores).await,
            cpu_tool_curve(&s, cores).await,
            queue_depth_curve(&s, cores).await,
        ]
    });
    let path = curves_path();
    std::fs::create_dir_all(path.parent().expect("bench dir")).expect("create the bench directory");
    let text = serde_json::to_string_pretty(&json!({ "curves": curves })).expect("curves JSON");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    println!("\ncurve data: {}", path.display());
}
