//! Large binary payloads (`cargo bench -p snakepit-pool --bench large_payloads`).
//!
//! Prints table rows: the round trip of one call whose binary argument is
//! echoed back as a binary result, one call at a time, 1 KB to 100 MB,
//! through a pool of one worker (shared memory from 64 KiB), against
//! multiprocessing.Pool(1).apply pickling the same bytes over its pipes
//! (`py_large_payloads.py`). Blocks of calls alternate with the baseline's
//! (A, B, A, B), each figure the median of the blocks' medians. Also a
//! small call (`ping`) with shared memory on against off, so nothing else
//! got slower.
//!
//! Env: `SNAKEPIT_PYTHON` (else the workspace venv), `BENCH_ROUNDS`
//! (alternating blocks per figure, default 6), `SNAKEPIT_BENCH_QUICK`
//! (fewer calls per block, no 100 MB row).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::stats::median;
use snakepit_testkit::{env_num, python, SHOWCASE};

/// Payload sizes and calls per block.
const SIZES: [(&str, usize, usize); 5] = [
    ("1 KB", 1_000, 200),
    ("64 KB", 64 << 10, 100),
    ("1 MB", 1 << 20, 30),
    ("10 MB", 10 << 20, 8),
    ("100 MB", 100 << 20, 2),
];

fn config(name: &str) -> PoolConfig {
    PoolConfig::new(SHOWCASE)
        .python(python())
        .pool_name(name)
        .workers(1)
        .startup_timeout(Duration::from_secs(30))
        .max_message_bytes(256 << 20)
}

/// `py_large_payloads.py`: blocks of multiprocessing.Pool.apply round trips.
struct MpEcho {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl MpEcho {
    fn start() -> MpEcho {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py_large_payloads.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start py_large_payloads.py");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready", "py_large_payloads.py did not start");
        MpEcho { child, out }
    }

    /// The median of `n` round trips of `size` bytes, µs.
    fn block(&mut self, size: usize, n: usize) -> f64 {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{size} {n}").expect("write");
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read");
        line.trim().parse().expect("a number")
    }
}

impl Drop for MpEcho {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The median of `n` echo round trips of `data` through `pool`, µs.
async fn block(pool: &Pool, tool: &str, data: &[u8], n: usize) -> f64 {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let mut opts = CallOptions::default();
        if !data.is_empty() {
            opts.binary = HashMap::from([("data".to_string(), data.to_vec())]);
        }
        let t0 = Instant::now();
        let out = pool.execute(tool, json!({}), opts).await.expect("call");
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
        if !data.is_empty() {
            assert_eq!(out.binary["data"].len(), data.len());
        }
    }
    median(samples)
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
    let quick = std::env::var_os("SNAKEPIT_BENCH_QUICK").is_some();
    let rounds = env_num("BENCH_ROUNDS", 6).max(1) as usize;
    rt.block_on(async {
        let pool = Pool::start(Telemetry::new(), config("large"))
            .await
            .expect("pool");
        let mut mp = MpEcho::start();
        println!("| figure | value | baseline | ratio |");
        println!("|---|---|---|---|");
        for (name, size, calls) in SIZES {
            if quick && size > 10 << 20 {
                continue;
            }
            let calls = if quick { calls.div_ceil(4) } else { calls };
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            // Warm: the worker's first segments, the host's first pages.
            block(&pool, "shm_echo", &data, 1).await;
            mp.block(size, 1);
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                ours.push(block(&pool, "shm_echo", &data, calls).await);
                theirs.push(mp.block(size, calls));
            }
            let (a, b) = (median(ours), median(theirs));
            let target = match size {
                s if s == 1 << 20 || s == 10 << 20 => " (target <= 0.5)",
                _ => "",
            };
            row(
                &format!("echo {name} p50 round trip, us{target}"),
                format!("{a:.0}"),
                &format!("mp.Pool.apply pickle {b:.0} us"),
                format!("{:.2}", a / b),
            );
        }
        drop(mp);
        // A small call: shared memory on (the default) against off.
        let off = Pool::start(Telemetry::new(), config("large_off").shm_threshold_bytes(0))
            .await
            .expect("pool");
        let (mut on_p50, mut off_p50) = (Vec::new(), Vec::new());
        let n = if quick { 300 } else { 2000 };
        for _ in 0..rounds {
            on_p50.push(block(&pool, "ping", &[], n).await);
            off_p50.push(block(&off, "ping", &[], n).await);
        }
        let (a, b) = (median(on_p50), median(off_p50));
        row(
            "ping p50, shared memory on, us",
            format!("{a:.1}"),
            &format!("shared memory off {b:.1} us"),
            format!("{:.2}", a / b),
        );
        off.shutdown().await;
        pool.shutdown().await;
    });
}
