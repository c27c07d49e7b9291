//! Tool-call throughput through real Python workers with every sink on
//! (log, Prometheus with its listener, OTel exporting to a local receiver)
//! against telemetry off (policy disabled: no events on either side), in
//! the same run, alternating. Target: >= 95% (see docs/decisions/0009).
//!
//! Two configurations are lower bounds rather than sinks: one sink that does
//! nothing (what building and dispatching a call's events costs once any
//! sink wants them), and the floor of an exporter (230 bytes per finished
//! span copied into a per-thread batch, batches written to a loopback socket
//! that another thread reads; no encoding, no HTTP). What the floor costs,
//! no OTel sink exporting every span can avoid on this machine.
//!
//! `cargo bench -p snakepit-pool --bench call_throughput` (env
//! `CALLS`, default 100000 per round; `ROUNDS`, default 7, each round
//! starting one configuration later; `PROFILE=<0..7>`
//! runs one configuration once, for a profiler such as `perf record`).
//!
//! One call at a time is not measured here (the pool bench measures its
//! latency): its CPU per call followed the machine's speed, from 104 to
//! 191 µs of wall time per call within one run, far more than the few µs
//! telemetry adds.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_core::config::{OtelSinkConfig, PrometheusSinkConfig};
use snakepit_core::{Catalog, Event, Policy, Sink, SpanRole};
use snakepit_grpc::{CallOptions, ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_sinks::log::LogSink;
use snakepit_sinks::otel::OtelSink;
use snakepit_sinks::prometheus::PrometheusSink;
use snakepit_telemetry::Telemetry;

use snakepit_testkit::otlp::discard_receiver;
use snakepit_testkit::procfs::cpu_us;
use snakepit_testkit::stats::{median, quartiles};
use snakepit_testkit::{env_num, WorkerProcess, SHOWCASE};

const WORKERS: usize = 2;
const IN_FLIGHT_PER_WORKER: usize = 64;

/// CPU µs of the host and of every worker so far.
fn total_cpu_us(workers: &[WorkerProcess]) -> f64 {
    cpu_us(None) + workers.iter().map(|w| cpu_us(Some(w.pid()))).sum::<f64>()
}

/// One measured run: calls/s, CPU µs per call (host + workers), and the
/// host's share of it.
async fn run(telemetry: &Telemetry, workers: &[WorkerProcess], calls: usize) -> (f64, f64, f64) {
    let mut clients = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let c = WorkerClient::connect(
            telemetry.clone(),
            ConnectOptions::new(
                WorkerAddress::Unix(w.socket().expect("a private socket").to_path_buf()),
                format!("w{i}"),
            ),
        )
        .await
        .expect("connect");
        clients.push(Arc::new(c));
    }
    // Warm up.
    for c in &clients {
        for _ in 0..200 {
            c.execute("ping", json!({}), CallOptions::default())
                .await
                .unwrap();
        }
    }
    let cpu0 = total_cpu_us(workers);
    let host0 = cpu_us(None);
    let started = Instant::now();
    let tasks = clients.len() * IN_FLIGHT_PER_WORKER;
    let per_task = calls / tasks;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let c = clients[t % clients.len()].clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                c.execute("ping", json!({}), CallOptions::default())
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
    let cpu = (total_cpu_us(workers) - cpu0) / done;
    let host = (cpu_us(None) - host0) / done;
    for c in clients {
        c.close().await;
    }
    (rate, cpu, host)
}

/// Attaches an OTel sink that exports `sample_ratio` of the traces to a
/// local receiver.
fn attach_otel(t: &Telemetry, sample_ratio: f64) -> Arc<OtelSink> {
    let otel = Arc::new(
        OtelSink::new(
            &OtelSinkConfig {
                endpoint: discard_receiver(),
                sample_ratio,
                ..OtelSinkConfig::default()
            },
            t,
        )
        .unwrap(),
    );
    t.attach_sink("otel", &[], otel.clone()).unwrap();
    otel
}

/// A sink that does nothing: what building and dispatching the events of
/// a call costs once any sink wants them.
struct NoopSink;

impl Sink for NoopSink {
    fn name(&self) -> &str {
        "noop"
    }

    fn handle(&self, _event: &Event<'_>) {}
}

/// Bytes a span of this bench takes in OTLP, as the OTel sink encodes it.
const SPAN_BYTES: usize = 230;
/// Spans a floor batch holds (the OTel sink's default `batch_size`).
const FLOOR_BATCH: usize = 512;

/// The least an exporter of every span must do, with no encoding and no
/// HTTP: for each event that ends a span, `SPAN_BYTES` copied into a batch
/// of the emitting thread (no lock, no shared cache line); full batches
/// handed to a thread that writes them to a loopback TCP socket, which
/// another thread reads. If this alone cost more than 5%, no OTel sink
/// could meet the 95% target on this machine with this tool.
struct FloorSink {
    tx: crossbeam_channel::Sender<Vec<u8>>,
    /// By event id: does the event end a span (the catalog's rule, as the
    /// OTel sink reads it)?
    ends_span: Box<[bool]>,
}

thread_local! {
    static FLOOR_BATCH_BUF: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(SPAN_BYTES * FLOOR_BATCH));
}

impl FloorSink {
    fn new(catalog: &Catalog) -> FloorSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = vec![0u8; 1 << 17];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(64);
        let mut out = TcpStream::connect(addr).unwrap();
        std::thread::spawn(move || {
            for b in rx {
                if out.write_all(&b).is_err() {
                    return;
                }
            }
        });
        let ends_span = catalog
            .iter()
            .map(|(id, _)| {
                matches!(
                    catalog.span_of(id),
                    Some((SpanRole::Stop | SpanRole::Exception, _))
                )
            })
            .collect();
        FloorSink { tx, ends_span }
    }
}

impl Sink for FloorSink {
    fn name(&self) -> &str {
        "floor"
    }

    fn handle(&self, event: &Event<'_>) {
        const SPAN: [u8; SPAN_BYTES] = [7; SPAN_BYTES];
        if !self
            .ends_span
            .get(event.id().index())
            .copied()
            .unwrap_or(false)
        {
            return;
        }
        FLOOR_BATCH_BUF.with_borrow_mut(|batch| {
            batch.extend_from_slice(&SPAN);
            if batch.len() >= SPAN_BYTES * FLOOR_BATCH {
                let full = std::mem::replace(batch, Vec::with_capacity(SPAN_BYTES * FLOOR_BATCH));
                let _ = self.tx.send(full);
            }
        });
    }
}

/// Attaches every sink: log, Prometheus with its listener, and OTel.
fn attach_every_sink(t: &Telemetry, sample_ratio: f64) -> (Arc<PrometheusSink>, Arc<OtelSink>) {
    t.attach_sink("log", &[], Arc::new(LogSink::new(t)))
        .unwrap();
    let prom = Arc::new(
        PrometheusSink::from_config(
            &PrometheusSinkConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..PrometheusSinkConfig::default()
            },
            t.catalog(),
        )
        .unwrap(),
    );
    t.attach_sink("prometheus", &[], prom.clone()).unwrap();
    (prom, attach_otel(t, sample_ratio))
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

    let off = Telemetry::builder()
        .policy(Policy {
            enabled: false,
            ..Policy::default()
        })
        .build();
    let bare = Telemetry::new();
    let on = Telemetry::new();
    let (prom, otel) = attach_every_sink(&on, 1.0);
    let prom_only = Telemetry::new();
    let p2 = Arc::new(
        PrometheusSink::builder()
            .build(prom_only.catalog())
            .unwrap(),
    );
    prom_only.attach_sink("prometheus", &[], p2).unwrap();
    // Every sink again, the OTel sink exporting 10% of the traces.
    let sampled = Telemetry::new();
    let (prom3, otel_sampled) = attach_every_sink(&sampled, 0.1);
    // The OTel sink alone, exporting every span.
    let otel_only = Telemetry::new();
    let otel4 = attach_otel(&otel_only, 1.0);

    // Lower bounds: a sink that does nothing, and the floor of an exporter.
    let noop = Telemetry::new();
    noop.attach_sink("noop", &[], Arc::new(NoopSink)).unwrap();
    let floor = Telemetry::new();
    floor
        .attach_sink("floor", &[], Arc::new(FloorSink::new(floor.catalog())))
        .unwrap();

    const N: usize = 8;
    let configs: [(&str, &Telemetry); N] = [
        ("telemetry off", &off),
        ("telemetry on, no sink", &bare),
        ("one sink that does nothing", &noop),
        ("floor: 230 bytes per span to a socket", &floor),
        ("prometheus sink only", &prom_only),
        ("otel sink only", &otel_only),
        ("every sink on", &on),
        ("every sink on, otel sample_ratio 0.1", &sampled),
    ];
    // Rounds alternate the configurations so that drifts in machine load
    // hit all of them alike; each ratio is taken within one round, then the
    // median over rounds is reported.
    // PROFILE=<index>: run only that configuration, CALLS calls, and stop
    // (for a profiler attached to this process).
    if let Some(i) = std::env::var("PROFILE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let (name, t) = configs[i.min(configs.len() - 1)];
        let (rate, cpu, host) = rt.block_on(run(t, &workers, calls));
        println!("{name}: {rate:.0} calls/s, {cpu:.1} µs CPU per call ({host:.1} on the host)");
        return;
    }
    let mut rates: Vec<[f64; N]> = Vec::new();
    let mut cpus: Vec<[f64; N]> = Vec::new();
    let mut hosts: Vec<[f64; N]> = Vec::new();
    for round in 0..rounds {
        let mut line = format!("round {round}:");
        let (mut r, mut c, mut h) = ([0f64; N], [0f64; N], [0f64; N]);
        // Each round starts one configuration later (a rotation): every N
        // rounds each runs once in every position, and none runs twice in a
        // row across a round boundary (a configuration that does runs warm).
        let order: Vec<usize> = (0..N).map(|i| (i + round) % N).collect();
        for i in order {
            let (_, t) = configs[i];
            (r[i], c[i], h[i]) = rt.block_on(run(t, &workers, calls));
        }
        for (i, (name, _)) in configs.iter().enumerate() {
            line.push_str(&format!(" {name} {:.0}/s {:.1} µs CPU/call;", r[i], c[i]));
        }
        println!("{line}");
        rates.push(r);
        cpus.push(c);
        hosts.push(h);
    }
    let _ = otel.flush(Duration::from_secs(5));
    let _ = otel_sampled.flush(Duration::from_secs(5));
    // A ratio is given as its median over rounds and, in brackets, its
    // lower and upper quartiles: the spread a single run shows.
    let percent = |v: Vec<f64>| -> String {
        let (lo, mid, hi) = quartiles(&v);
        format!("{:.1}% [{:.1}, {:.1}]", 100.0 * mid, 100.0 * lo, 100.0 * hi)
    };
    println!();
    println!(
        "| figure ({WORKERS} workers, ping, median of {rounds} alternating rounds) | value | baseline: telemetry off | ratio [quartiles] |"
    );
    println!("|---|---|---|---|");
    for (i, (name, _)) in configs.iter().enumerate().skip(1) {
        let rate = median(rates.iter().map(|r| r[i]).collect());
        let off = median(rates.iter().map(|r| r[0]).collect());
        let ratio = percent(rates.iter().map(|r| r[i] / r[0]).collect());
        println!("| {name}: calls/s | {rate:.0} | {off:.0} | {ratio} |");
        let cpu = median(cpus.iter().map(|c| c[i]).collect());
        let cpu_off = median(cpus.iter().map(|c| c[0]).collect());
        let ratio = percent(cpus.iter().map(|c| c[0] / c[i]).collect());
        println!(
            "| {name}: CPU µs per call, host + workers (off / on) | {cpu:.1} | {cpu_off:.1} | {ratio} |"
        );
    }
    // The host's CPU per call, and what telemetry adds to it (median of
    // the per-round differences): the figure to weigh against a real
    // tool's own time.
    let host_off = median(hosts.iter().map(|h| h[0]).collect());
    for (i, (name, _)) in configs.iter().enumerate().skip(1) {
        let host = median(hosts.iter().map(|h| h[i]).collect());
        let added = median(hosts.iter().map(|h| h[i] - h[0]).collect());
        println!("| {name}: host CPU µs per call | {host:.1} | {host_off:.1} | {added:+.1} µs |");
    }
    // Target: what every sink adds to the host's CPU per call, at most 1.3x
    // what the floor of an exporter adds (per-round ratio of the two
    // differences, both against telemetry off in that round).
    let (every, floor_at) = (6, 3);
    let added = |i: usize| median(hosts.iter().map(|h| h[i] - h[0]).collect());
    let ratios: Vec<f64> = hosts
        .iter()
        .map(|h| (h[every] - h[0]) / (h[floor_at] - h[0]))
        .collect();
    let (lo, mid, hi) = quartiles(&ratios);
    println!(
        "| every sink on: host CPU added per call / the floor exporter's | {:+.1} µs | floor: {:+.1} µs (target <= 1.3x) | {mid:.2} [{lo:.2}, {hi:.2}] |",
        added(every),
        added(floor_at)
    );
    println!("otel sink: {:?}", otel.stats());
    println!("otel sink, sample_ratio 0.1: {:?}", otel_sampled.stats());
    for o in [&otel, &otel_sampled, &otel4] {
        let _ = o.shutdown(Duration::from_secs(5));
    }
    for p in [&prom, &prom3] {
        let _ = p.shutdown(Duration::from_secs(2));
    }
}
