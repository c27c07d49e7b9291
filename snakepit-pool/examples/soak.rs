//! `cargo xtask soak`: a pool under steady load and real faults, with every
//! sink on, for minutes. Not a test: it prints figures over time.
//!
//! * calls at a steady rate (a mix of quick and 20 ms tools), telemetry on,
//!   the log, Prometheus, OTel and jsonl plugin sinks on, `/metrics` scraped
//!   every second;
//! * a worker killed with SIGKILL every 30 s, and one stopped with SIGSTOP
//!   every 60 s (the heartbeat finds it and the pool replaces it).
//!
//! Every 10 s it prints calls done and failed, host RSS, open descriptors and
//! threads; at the end, every failed call with its error, grouped, and
//! whether each is explained by a fault it injected.
//!
//! ```text
//! cargo run --release -p snakepit-pool --example soak -- [--quick] [--minutes N]
//!     [--rate CALLS_PER_S] [--workers N] [--plugin PATH]
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_core::config::Config;
use snakepit_grpc::CallOptions;
use snakepit_pool::{Pool, PoolConfig, PoolError};
use snakepit_sinks::{telemetry_from_config, SinkSet};

const ADAPTER: &str = "snakepit_bridge.adapters.showcase:ShowcaseAdapter";

struct Args {
    minutes: f64,
    rate: u64,
    workers: usize,
    plugin: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        minutes: 10.0,
        rate: 200,
        workers: 4,
        plugin: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{arg} takes {what}"));
        match arg.as_str() {
            "--quick" => a.minutes = 2.0,
            "--minutes" => {
                a.minutes = value("a number of minutes")?
                    .parse()
                    .ok()
                    .filter(|m: &f64| *m > 0.0 && *m <= 24.0 * 60.0)
                    .ok_or("--minutes takes a number from 0 to 1440")?
            }
            "--rate" => {
                a.rate = value("calls per second")?
                    .parse()
                    .ok()
                    .filter(|r| (1..=100_000).contains(r))
                    .ok_or("--rate takes calls per second, 1 to 100000")?
            }
            "--workers" => {
                a.workers = value("a number of workers")?
                    .parse()
                    .ok()
                    .filter(|n| (2..=64).contains(n))
                    .ok_or("--workers takes a number from 2 to 64")?
            }
            "--plugin" => a.plugin = Some(PathBuf::from(value("a library path")?)),
            "-h" | "--help" => {
                println!(
                    "soak [--quick] [--minutes N] [--rate R] [--workers N] [--plugin PATH]\n\n\
                     --quick      2 minutes instead of 10\n\
                     --minutes N  how long to run\n\
                     --rate R     calls started per second (default 200)\n\
                     --workers N  worker processes (default 4)\n\
                     --plugin P   the jsonl sink plugin library (cargo xtask soak builds it)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`; try --help")),
        }
    }
    Ok(a)
}

/// A stand-in OTLP/HTTP collector on loopback: reads each request whole and
/// answers 200, counting bodies.
fn otlp_receiver(stop: Arc<AtomicBool>) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
    let addr = listener.local_addr().expect("receiver address");
    let requests = Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let count = count.clone();
                    std::thread::spawn(move || serve_otlp(stream, &count));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, requests)
}

fn serve_otlp(stream: TcpStream, count: &AtomicU64) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::Relaxed);
        let reply =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if reader.get_mut().write_all(reply).is_err() {
            return;
        }
    }
}

/// One GET /metrics; true when it answered 200 with a body.
fn scrape(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200") && out.len() > 100
}

/// `VmRSS` (kB), `Threads` of this process, and its open descriptors.
fn host_resources() -> (u64, u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (field("VmRSS:"), field("Threads:"), fds)
}

/// What the run saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    /// Failed calls by error text (numbers blanked, so alike errors group).
    failed: BTreeMap<String, u64>,
    /// Failed calls whose error names no fault this run injected.
    unexplained: u64,
    scrapes_ok: u64,
    scrapes_failed: u64,
    kills: u64,
    stops: u64,
    samples: Vec<(f64, u64, u64, usize)>,
}

/// Is this error what a call in flight on a killed or stopped worker gets?
fn explained(e: &PoolError) -> bool {
    let text = e.to_string().to_lowercase();
    [
        "crashed",
        "killed",
        "signal",
        "unhealthy",
        "heartbeat",
        "unavailable",
        "lost",
    ]
    .iter()
    .any(|w| text.contains(w))
}

fn blank_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_number = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out.chars().take(160).collect()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (otlp, otlp_requests) = otlp_receiver(stop.clone());
    let out_dir = PathBuf::from(std::env::var("SOAK_DIR").unwrap_or_else(|_| "target/soak".into()));
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("cannot create {out_dir:?}: {e}"))?;
    let mut toml = format!(
        "[telemetry]\nlog_level = \"warning\"\n\n\
         [[sinks]]\nkind = \"log\"\n\n\
         [[sinks]]\nkind = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[sinks]]\nkind = \"otel\"\nendpoint = \"http://{otlp}\"\n"
    );
    if let Some(plugin) = &args.plugin {
        toml.push_str(&format!(
            "\n[[sinks]]\nkind = \"plugin\"\npath = {:?}\nconfig = {{ path = {:?} }}\n",
            plugin.display().to_string(),
            out_dir.join("events.jsonl").display().to_string()
        ));
    }
    let config = Config::from_toml(&toml, "soak.toml").map_err(|e| e.to_string())?;
    let telemetry = telemetry_from_config(&config);
    let sinks = SinkSet::from_config(&config, &telemetry).map_err(|e| e.to_string())?;
    let metrics = sinks
        .prometheus_addr()
        .ok_or("the Prometheus sink has no listener")?;

    let mut pool_config = PoolConfig::new(ADAPTER)
        .pool_name("soak")
        .workers(args.workers)
        .max_queue(100_000)
        .queue_timeout(Duration::from_secs(30))
        .call_timeout(Duration::from_secs(10))
        .restart_backoff(Duration::from_millis(100), Duration::from_secs(2), 1000);
    pool_config.heartbeat_interval = Duration::from_secs(1);
    pool_config.heartbeat_timeout = Duration::from_secs(3);
    pool_config.stuck_call_grace = Duration::from_secs(3);
    let pool = Pool::start(telemetry.clone(), pool_config)
        .await
        .map_err(|e| e.to_string())?;

    let total = Duration::from_secs_f64(args.minutes * 60.0);
    println!(
        "soak: {:.1} min, {} calls/s, {} workers, every sink on (/metrics on {metrics}, OTLP to {otlp}{})",
        args.minutes,
        args.rate,
        args.workers,
        if args.plugin.is_some() { ", jsonl plugin" } else { "" }
    );
    println!(
        "{:>6} {:>9} {:>7} {:>9} {:>8} {:>5} {:>7} {:>6}",
        "t (s)", "calls ok", "failed", "in flight", "RSS MB", "fds", "threads", "kills"
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    // The scraper: one GET every second, on a thread of its own.
    let scraper = {
        let tally = tally.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = scrape(metrics);
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                if ok {
                    t.scrapes_ok += 1;
                } else {
                    t.scrapes_failed += 1;
                }
                drop(t);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_kill = Duration::from_secs(30);
    let mut next_stop = Duration::from_secs(60);
    let mut next_print = Duration::from_secs(10);
    let mut stopped: Vec<u32> = Vec::new();
    let mut i: u64 = 0;
    while started.elapsed() < total {
        ticker.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= next_kill {
            next_kill += Duration::from_secs(30);
            let pids = pool.worker_pids();
            if let Some(&pid) = pids.get((i as usize / 7) % pids.len().max(1)) {
                // SAFETY: kill(2) with plain integers.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                tally.lock().unwrap_or_else(|p| p.into_inner()).kills += 1;
            }
        }
        if elapsed >= next_stop {
            next_stop += Duration::from_secs(60);
            let pids = pool.worker_pids();
            if let Some(&pid) = pids.last() {
                // SAFETY: kill(2) with plain integers.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                stopped.push(pid);
                tally.lock().unwrap_or_else(|p| p.into_inner()).stops += 1;
            }
        }
        if elapsed >= next_print {
            next_print += Duration::from_secs(10);
            let (rss_kb, threads, fds) = host_resources();
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            t.samples
                .push((elapsed.as_secs_f64(), rss_kb, threads, fds));
            let failed: u64 = t.failed.values().sum();
            println!(
                "{:>6.0} {:>9} {:>7} {:>9} {:>8.1} {:>5} {:>7} {:>6}",
                elapsed.as_secs_f64(),
                t.ok,
                failed,
                in_flight.load(Ordering::Relaxed),
                rss_kb as f64 / 1024.0,
                fds,
                threads,
                t.kills + t.stops
            );
        }
        i += 1;
        let (tool, call_args) = if i.is_multiple_of(10) {
            ("sleep", json!({ "ms": 20 }))
        } else {
            ("add", json!({ "a": i, "b": 1 }))
        };
        let pool = pool.clone();
        let tally = tally.clone();
        let in_flight = in_flight.clone();
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let result = pool.execute(tool, call_args, CallOptions::default()).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(_) => t.ok += 1,
                Err(e) => {
                    if !explained(&e) {
                        t.unexplained += 1;
                    }
                    *t.failed.entry(blank_numbers(&e.to_string())).or_default() += 1;
                }
            }
        });
    }
    // Let the last calls finish, then stop everything.
    let drain = Instant::now();
    while in_flight.load(Ordering::Relaxed) > 0 && drain.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in &stopped {
        // SAFETY: kill(2) with plain integers; a stopped worker still alive
        // is let go so that it can exit.
        unsafe { libc::kill(*pid as i32, libc::SIGCONT) };
    }
    let pids = pool.worker_pids();
    pool.shutdown().await;
    stop.store(true, Ordering::Relaxed);
    let _ = scraper.join();
    let _ = sinks.shutdown(Duration::from_secs(5));

    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    let failed: u64 = t.failed.values().sum();
    println!(
        "\nsoak: {} calls ok, {failed} failed ({} not explained by an injected fault)",
        t.ok, t.unexplained
    );
    println!(
        "faults: {} workers killed, {} stopped; scrapes: {} ok, {} failed; OTLP requests: {}",
        t.kills,
        t.stops,
        t.scrapes_ok,
        t.scrapes_failed,
        otlp_requests.load(Ordering::Relaxed)
    );
    for (error, n) in &t.failed {
        println!("  {n:>6} x {error}");
    }
    if let (Some(first), Some(last)) = (t.samples.first(), t.samples.last()) {
        let rss: Vec<u64> = t.samples.iter().map(|s| s.1).collect();
        let threads: Vec<u64> = t.samples.iter().map(|s| s.2).collect();
        let fds: Vec<usize> = t.samples.iter().map(|s| s.3).collect();
        println!(
            "host RSS: {:.1} MB at {:.0} s, {:.1} MB at {:.0} s (min {:.1}, max {:.1}); \
             threads {}..{}; fds {}..{}",
            first.1 as f64 / 1024.0,
            first.0,
            last.1 as f64 / 1024.0,
            last.0,
            *rss.iter().min().unwrap_or(&0) as f64 / 1024.0,
            *rss.iter().max().unwrap_or(&0) as f64 / 1024.0,
            threads.iter().min().unwrap_or(&0),
            threads.iter().max().unwrap_or(&0),
            fds.iter().min().unwrap_or(&0),
            fds.iter().max().unwrap_or(&0),
        );
    }
    let alive: Vec<u32> = pids
        .into_iter()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    if !alive.is_empty() {
        return Err(format!("workers still alive after shutdown: {alive:?}"));
    }
    if t.unexplained > 0 {
        return Err(format!(
            "{} calls failed with no injected fault to explain them",
            t.unexplained
        ));
    }
    Ok(())
}
