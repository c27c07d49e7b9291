//! Worker start-up benchmark (`cargo bench -p snakepit-pool --bench
//! startup`): `start_method = "template"` against `"spawn"` and Python's
//! `multiprocessing.Pool`, interleaved round by round (A, B, C, D blocks)
//! because the machine is shared. Prints table rows:
//!
//! * a pool of 4 ready (the preloaded adapter, no preload): template,
//!   spawn, `multiprocessing.Pool(4)` with forkserver and spawn
//!   (`py_startup.py`, a fresh interpreter each), and template with its
//!   workers served by grpc.aio (`SNAKEPIT_NATIVE_CALLS=0`); target
//!   template <= 2x forkserver;
//! * worker restart: SIGKILL the worker of a 1-worker pool, until its
//!   replacement serves (its pid is the pool's); target <= 50 ms with the
//!   template, also scaled by this machine's speed (this run's forkserver
//!   pool against the 77 ms it took where the target was set), spawn and
//!   the grpc.aio-served template beside it;
//! * memory per worker with a preloaded read-only table of
//!   `BENCH_PRELOAD_MB` MiB (default 200): USS (`Private_*` of
//!   `/proc/PID/smaps_rollup`) and PSS, template against spawn; target
//!   template USS <= 20% of spawn's.
//!
//! Env: `SNAKEPIT_PYTHON` (else the workspace venv), `ROUNDS` (default 5),
//! `BENCH_PRELOAD_MB` (200), `SNAKEPIT_BENCH_QUICK=1` (3 rounds, 50 MiB).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig, StartMethod};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::procfs::{kill9, wait_gone};
use snakepit_testkit::stats::{median, spread};
use snakepit_testkit::{env_num, python};

const PRELOADED: &str = "snakepit_bridge.adapters.preloaded:PreloadedAdapter";

/// `multiprocessing.Pool(4)` with forkserver, ready, on the machine where
/// the 50 ms restart target was set (ms): the target scales with the ratio
/// of this run's forkserver figure to it.
const ISSUE_FORKSERVER_MS: f64 = 77.0;

fn quick() -> bool {
    std::env::var_os("SNAKEPIT_BENCH_QUICK").is_some()
}

fn config(name: &str, workers: usize, method: StartMethod) -> PoolConfig {
    let mut config = PoolConfig::new(PRELOADED)
        .python(python())
        .pool_name(name)
        .workers(workers)
        .start_method(method)
        .startup_timeout(Duration::from_secs(60))
        .grace_period(Duration::from_secs(2))
        // The restart figure is the start, not the backoff.
        .restart_backoff(Duration::from_millis(1), Duration::from_millis(50), 100);
    // Every kill is a first crash: a worker killed seconds after it started
    // would otherwise count as a crash in a row, and its backoff double.
    config.restart_stable_after = Duration::from_millis(1);
    config
}

/// Every process of `pool`: its workers and its template.
async fn processes(pool: &Pool) -> Vec<u32> {
    let mut pids = pool.worker_pids();
    pids.extend(pool.template_pid().await);
    pids
}

async fn stop(pool: Pool) {
    let pids = processes(&pool).await;
    pool.shutdown().await;
    wait_gone(&pids, Duration::from_secs(10));
}

/// `config`, with its workers served by grpc.aio (the native server off,
/// as every worker was served before it took the main socket).
fn aio(config: PoolConfig) -> PoolConfig {
    config.env("SNAKEPIT_NATIVE_CALLS", "0")
}

/// Milliseconds until a pool of 4 has started every worker (`grpc_aio`:
/// served by grpc.aio).
async fn pool_ready_ms(round: usize, method: StartMethod, grpc_aio: bool) -> f64 {
    let name = format!(
        "ready{round}{}{}",
        method.as_str(),
        if grpc_aio { "a" } else { "" }
    );
    let mut cfg = config(&name, 4, method);
    if grpc_aio {
        cfg = aio(cfg);
    }
    let t0 = Instant::now();
    let pool = Pool::start(Telemetry::new(), cfg).await.expect("pool of 4");
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    stop(pool).await;
    ms
}

/// `py_startup.py METHOD`: multiprocessing.Pool(4) ready, ms.
fn mp_ready_ms(method: &str) -> f64 {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py_startup.py");
    let out = Command::new(python())
        .arg(script)
        .arg(method)
        .output()
        .expect("run py_startup.py");
    assert!(
        out.status.success(),
        "py_startup.py {method} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("py_startup.py prints milliseconds")
}

/// Milliseconds from SIGKILL of the worker of a 1-worker pool until its
/// replacement is the pool's worker.
async fn restart_ms(pool: &Pool) -> f64 {
    let old = pool.worker_pids()[0];
    let t0 = Instant::now();
    kill9(old);
    loop {
        let pids = pool.worker_pids();
        if pids.len() == 1 && pids[0] != old {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no replacement");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    // Serves before the next kill.
    pool.execute("ping", json!({}), CallOptions::default())
        .await
        .expect("the replacement serves");
    ms
}

/// (USS, PSS) of `pid` in MiB, from `/proc/<pid>/smaps_rollup`.
fn uss_pss_mib(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    let kb = |key: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(key))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum()
    };
    let uss = kb("Private_Clean:") + kb("Private_Dirty:");
    (uss / 1024.0, kb("Pss:") / 1024.0)
}

/// Mean (USS, PSS) per worker of a pool of 2 with a preloaded table, MiB,
/// after every worker read the whole table.
async fn memory_per_worker(round: usize, method: StartMethod, mb: u64) -> (f64, f64) {
    let name = format!("mem{round}{}", method.as_str());
    let cfg = config(&name, 2, method)
        .env("SNAKEPIT_PRELOAD_MB", mb.to_string())
        .concurrency_per_worker(1);
    let pool = Pool::start(Telemetry::new(), cfg).await.expect("pool of 2");
    let touch = (0..2).map(|_| pool.execute("touch_table", json!({}), CallOptions::default()));
    for r in futures_util::future::join_all(touch).await {
        r.expect("touch_table");
    }
    let pids = pool.worker_pids();
    let (uss, pss) = pids
        .iter()
        .map(|&p| uss_pss_mib(p))
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    stop(pool).await;
    (uss / pids.len() as f64, pss / pids.len() as f64)
}

fn row(figure: &str, value: String, baseline: &str, ratio: String) {
    println!("| {figure:<52} | {value:>12} | {baseline:<44} | {ratio:>24} |");
}

/// A ratio against its target: `0.42 [0.40, 0.50] (target <= 2)`, with
/// `MISSED` when the median is over it.
fn against(ratios: &[f64], target: f64) -> String {
    let missed = median(ratios.to_vec()) > target;
    format!(
        "{}{} (target <= {target})",
        spread(ratios),
        if missed { " MISSED" } else { "" }
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_num("ROUNDS", if quick() { 3 } else { 5 }) as usize;
    let mb = env_num("BENCH_PRELOAD_MB", if quick() { 50 } else { 200 });
    {
        let (mut tpl, mut spawn, mut fs, mut mps, mut tpl_aio) =
            (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            // Each round starts with a different one of the five.
            for k in 0..5 {
                match (round + k) % 5 {
                    0 => tpl.push(pool_ready_ms(round, StartMethod::Template, false).await),
                    1 => spawn.push(pool_ready_ms(round, StartMethod::Spawn, false).await),
                    2 => fs.push(mp_ready_ms("forkserver")),
                    3 => mps.push(mp_ready_ms("spawn")),
                    _ => tpl_aio.push(pool_ready_ms(round, StartMethod::Template, true).await),
                }
            }
        }
        let tpl_pool = Pool::start(Telemetry::new(), config("rtpl", 1, StartMethod::Template))
            .await
            .expect("template pool");
        let spawn_pool = Pool::start(Telemetry::new(), config("rspawn", 1, StartMethod::Spawn))
            .await
            .expect("spawn pool");
        let aio_pool = Pool::start(
            Telemetry::new(),
            aio(config("rtplaio", 1, StartMethod::Template)),
        )
        .await
        .expect("template pool served by grpc.aio");
        let (mut rt_tpl, mut rt_spawn, mut rt_aio) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            for k in 0..3 {
                match (round + k) % 3 {
                    0 => rt_tpl.push(restart_ms(&tpl_pool).await),
                    1 => rt_spawn.push(restart_ms(&spawn_pool).await),
                    _ => rt_aio.push(restart_ms(&aio_pool).await),
                }
            }
        }
        stop(tpl_pool).await;
        stop(spawn_pool).await;
        stop(aio_pool).await;
        let (mut mem_tpl, mut mem_spawn) = (vec![], vec![]);
        for round in 0..rounds.min(3) {
            mem_tpl.push(memory_per_worker(round, StartMethod::Template, mb).await);
            mem_spawn.push(memory_per_worker(round, StartMethod::Spawn, mb).await);
        }

        let ratios =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
        println!();
        println!(
            "snakepit-pool start-up: {rounds} rounds interleaved; preload {mb} MiB for memory"
        );
        println!();
        row("figure", "value".into(), "baseline", "ratio".into());
        println!(
            "|{}|{}|{}|{}|",
            "-".repeat(54),
            "-".repeat(14),
            "-".repeat(46),
            "-".repeat(26)
        );
        let fs_ms = median(fs.clone());
        row(
            "pool of 4 ready, template",
            format!("{:.0} ms", median(tpl.clone())),
            &format!("mp.Pool(4) forkserver: {fs_ms:.0} ms"),
            against(&ratios(&tpl, &fs), 2.0),
        );
        row(
            "pool of 4 ready, spawn",
            format!("{:.0} ms", median(spawn.clone())),
            &format!("mp.Pool(4) forkserver: {fs_ms:.0} ms"),
            spread(&ratios(&spawn, &fs)),
        );
        row(
            "pool of 4 ready, template against spawn",
            format!("{:.0} ms", median(tpl.clone())),
            &format!("spawn: {:.0} ms", median(spawn.clone())),
            spread(&ratios(&tpl, &spawn)),
        );
        row(
            "pool of 4 ready, template against grpc.aio-served",
            format!("{:.0} ms", median(tpl.clone())),
            &format!("served by grpc.aio: {:.0} ms", median(tpl_aio.clone())),
            spread(&ratios(&tpl, &tpl_aio)),
        );
        row(
            "mp.Pool(4) ready, spawn",
            format!("{:.0} ms", median(mps.clone())),
            &format!("mp.Pool(4) forkserver: {fs_ms:.0} ms"),
            spread(&ratios(&mps, &fs)),
        );
        let target: Vec<f64> = rt_tpl.iter().map(|ms| ms / 50.0).collect();
        row(
            "worker restart (SIGKILL to serving), template",
            format!("{:.1} ms", median(rt_tpl.clone())),
            "target: 50 ms",
            against(&target, 1.0),
        );
        // The 50 ms target was set on a machine where mp.Pool(4) with
        // forkserver was ready in 77 ms: scaled by this run's forkserver
        // figure, it is the same target on this machine's speed.
        let scaled = 50.0 * fs_ms / ISSUE_FORKSERVER_MS;
        let scaled_target: Vec<f64> = rt_tpl.iter().map(|ms| ms / scaled).collect();
        row(
            "worker restart, template, against the scaled target",
            format!("{:.1} ms", median(rt_tpl.clone())),
            &format!("50 ms x forkserver {fs_ms:.0}/77 ms: {scaled:.0} ms"),
            against(&scaled_target, 1.0),
        );
        row(
            "worker restart, template against spawn",
            format!("{:.1} ms", median(rt_tpl.clone())),
            &format!("spawn: {:.1} ms", median(rt_spawn.clone())),
            spread(&ratios(&rt_tpl, &rt_spawn)),
        );
        row(
            "worker restart, template against grpc.aio-served",
            format!("{:.1} ms", median(rt_tpl.clone())),
            &format!("served by grpc.aio: {:.1} ms", median(rt_aio.clone())),
            spread(&ratios(&rt_tpl, &rt_aio)),
        );
        let uss = |v: &[(f64, f64)]| v.iter().map(|m| m.0).collect::<Vec<_>>();
        let pss = |v: &[(f64, f64)]| v.iter().map(|m| m.1).collect::<Vec<_>>();
        row(
            &format!("USS per worker, {mb} MiB preload, template"),
            format!("{:.1} MiB", median(uss(&mem_tpl))),
            &format!("spawn: {:.1} MiB", median(uss(&mem_spawn))),
            against(&ratios(&uss(&mem_tpl), &uss(&mem_spawn)), 0.2),
        );
        row(
            &format!("PSS per worker, {mb} MiB preload, template"),
            format!("{:.1} MiB", median(pss(&mem_tpl))),
            &format!("spawn: {:.1} MiB", median(pss(&mem_spawn))),
            spread(&ratios(&pss(&mem_tpl), &pss(&mem_spawn))),
        );
    }
}
