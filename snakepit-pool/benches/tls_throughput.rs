//! TLS against plain TCP (`cargo bench -p snakepit-pool --bench
//! tls_throughput`), as root: 4 workers in a network namespace behind a
//! veth pair (snakepit-testkit `netns`), 2 serving TLS and 2 plain TCP,
//! both with the token; a pool of 2 external workers on each. Measured in
//! the same run, the pools alternating round by round (each round starts
//! with the other one):
//! * calls/s from many callers, trivial tool (median of the rounds);
//! * one call at a time, round trip p50 (median of the rounds' medians).
//!
//! Prints `| figure | value | baseline | ratio |` rows, the baseline plain
//! TCP. Env: `SNAKEPIT_PYTHON` (else the workspace venv), `BENCH_ROUNDS`
//! (default 6), `BENCH_ROUND_SECONDS` (per pool per round, default 2),
//! `BENCH_IN_FLIGHT` (default 64), `BENCH_P50_CALLS` (per round, default
//! 1000).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig, WorkerTls};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::netns::NetNs;
use snakepit_testkit::stats::{median, spread};
use snakepit_testkit::tls::Pki;
use snakepit_testkit::{env_num, WorkerProcess, WorkerSpec, SHOWCASE};

const TOKEN: &str = "bench-s3cret";

/// Calls/s from `in_flight` callers for `secs`.
async fn throughput(pool: &Arc<Pool>, in_flight: usize, secs: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (pool, stop, done) = (pool.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if pool
                        .execute("ping", json!({}), CallOptions::default())
                        .await
                        .is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
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
    done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

/// Median round trip of `n` calls one at a time, µs.
async fn p50_us(pool: &Pool, n: usize) -> f64 {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        pool.execute("ping", json!({}), CallOptions::default())
            .await
            .expect("ping");
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    median(samples)
}

fn worker(ns: &NetNs, id: &str, tls: Option<(&str, &str)>) -> WorkerProcess {
    let mut spec = WorkerSpec::new(SHOWCASE, id)
        .wrap(ns.exec_prefix())
        .listen(&format!("{}:0", ns.worker_ip))
        .env("SNAKEPIT_TOKEN", TOKEN)
        .quiet();
    if let Some((cert, key)) = tls {
        spec = spec.args(["--tls-cert", cert, "--tls-key", key]);
    }
    spec.start()
}

fn row(figure: &str, value: String, baseline: &str, ratio: String) {
    println!("| {figure:<48} | {value:>14} | {baseline:<40} | {ratio:>8} |");
}

fn main() {
    let rounds = env_num("BENCH_ROUNDS", 6) as usize;
    let secs = env_num("BENCH_ROUND_SECONDS", 2);
    let in_flight = env_num("BENCH_IN_FLIGHT", 64) as usize;
    let p50_calls = env_num("BENCH_P50_CALLS", 1000) as usize;
    let ns = NetNs::create("b", 201);
    let pki = Pki::new("bench");
    let server = pki.server("worker", &[&ns.worker_ip]);
    let (cert, key) = (server.cert.display().to_string(), server.key.display());
    let key = key.to_string();
    let tls_workers = [
        worker(&ns, "tls_1", Some((&cert, &key))),
        worker(&ns, "tls_2", Some((&cert, &key))),
    ];
    let plain_workers = [worker(&ns, "plain_1", None), worker(&ns, "plain_2", None)];

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let base = |name: &str| {
            PoolConfig::external([])
                .pool_name(name)
                .concurrency_per_worker(256)
                .max_queue(10_000)
        };
        let mut tls_config = base("tls");
        for w in &tls_workers {
            tls_config = tls_config.external_worker_tls(
                &w.ready.listen,
                Some(TOKEN.to_string()),
                WorkerTls::new(pki.ca()),
            );
        }
        let mut plain_config = base("plain");
        for w in &plain_workers {
            plain_config = plain_config.external_worker(&w.ready.listen, Some(TOKEN.to_string()));
        }
        let tls = Arc::new(
            Pool::start(Telemetry::new(), tls_config)
                .await
                .expect("tls pool"),
        );
        let plain = Arc::new(
            Pool::start(Telemetry::new(), plain_config)
                .await
                .expect("plain pool"),
        );
        // Warm up both.
        throughput(&tls, in_flight, 1).await;
        throughput(&plain, in_flight, 1).await;
        let (mut tls_rate, mut plain_rate) = (Vec::new(), Vec::new());
        let (mut tls_p50, mut plain_p50) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [(&tls, true), (&plain, false)]
            } else {
                [(&plain, false), (&tls, true)]
            };
            for (pool, is_tls) in order {
                let rate = throughput(pool, in_flight, secs).await;
                let p50 = p50_us(pool, p50_calls).await;
                if is_tls {
                    tls_rate.push(rate);
                    tls_p50.push(p50);
                } else {
                    plain_rate.push(rate);
                    plain_p50.push(p50);
                }
            }
        }
        eprintln!(
            "calls/s TLS {} | plain {}",
            spread(&tls_rate),
            spread(&plain_rate)
        );
        eprintln!(
            "p50 µs TLS {} | plain {}",
            spread(&tls_p50),
            spread(&plain_p50)
        );
        let (tr, pr) = (median(tls_rate), median(plain_rate));
        let (tp, pp) = (median(tls_p50), median(plain_p50));
        row("figure", "value".into(), "baseline", "ratio".into());
        println!(
            "|{}|{}|{}|{}|",
            "-".repeat(50),
            "-".repeat(16),
            "-".repeat(42),
            "-".repeat(10)
        );
        row(
            "netns pool calls/s, 2 workers, TCP+TLS+token",
            format!("{tr:.0}/s"),
            &format!("plain TCP+token: {pr:.0}/s"),
            format!("{:.2}", tr / pr),
        );
        row(
            "netns pool round trip p50, TCP+TLS+token",
            format!("{tp:.1} µs"),
            &format!("plain TCP+token: {pp:.1} µs"),
            format!("{:.2}", tp / pp),
        );
        for pool in [tls, plain] {
            if let Ok(pool) = Arc::try_unwrap(pool) {
                pool.shutdown().await;
            }
        }
    });
    drop(tls_workers);
    drop(plain_workers);
    drop(ns);
}
