//! A real worker sampling its resources every 100 ms (`--telemetry-interval-s
//! 0.1`): `python.memory.sampled` and `python.cpu.sampled` reach host
//! handlers with the catalog's measurement names and plausible values.

mod common;

use std::time::Duration;

use common::{Recorder, Seen, Worker, REFERENCE_STYLE};
use serde_json::json;
use snakepit_grpc::{CallOptions, WorkerClient};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::procfs;

const MEMORY: &str = "snakepit.python.memory.sampled";
const CPU: &str = "snakepit.python.cpu.sampled";

fn number(e: &Seen, key: &str) -> f64 {
    e.measurement(key)
        .unwrap_or_else(|| panic!("{} has no measurement {key}: {e:?}", e.name))
        .parse()
        .unwrap_or_else(|_| panic!("{} measurement {key} is not a number: {e:?}", e.name))
}

fn keys(e: &Seen) -> Vec<&str> {
    let mut k: Vec<&str> = e.measurements.iter().map(|(k, _)| k.as_str()).collect();
    k.sort_unstable();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_cpu_samples_reach_handlers_with_plausible_values() {
    let worker = Worker::start_with(REFERENCE_STYLE, "w-res", &["--telemetry-interval-s", "0.1"]);
    let pid = worker.pid;
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(
        &telemetry,
        "rec",
        &[MEMORY, CPU, "snakepit.telemetry.field.dropped"],
    );
    let client = WorkerClient::connect(telemetry.clone(), worker.options())
        .await
        .unwrap();
    // One CPU busy in the worker for 600 ms: samples taken meanwhile see it.
    let busy_ms = 600;
    let out = client
        .execute("spin", json!({"ms": busy_ms}), CallOptions::default())
        .await
        .unwrap();
    assert!(out.value["rounds"].as_i64().unwrap() > 0);
    rec.wait_for(
        "memory and busy CPU samples",
        Duration::from_secs(15),
        |s| {
            s.iter().filter(|e| e.name == MEMORY).count() >= 3
                && s.iter()
                    .any(|e| e.name == CPU && number(e, "cpu_percent") >= 10.0)
        },
    )
    .await;
    let host_rss = procfs::rss_kb(Some(pid)) * 1024;

    let memory = rec.named(MEMORY);
    for e in &memory {
        assert_eq!(keys(e), ["rss_bytes", "vms_bytes"], "{e:?}");
        let rss = number(e, "rss_bytes");
        let vms = number(e, "vms_bytes");
        // A Python interpreter with the bridge loaded: megabytes, not bytes.
        assert!(rss >= 1_000_000.0, "{e:?}");
        assert!(vms >= rss, "{e:?}");
        assert_eq!(e.meta("worker_id"), Some("w-res"));
        assert_eq!(e.meta("python_pid"), Some(pid.to_string().as_str()));
        assert_eq!(e.correlation_id, None, "a sample belongs to no call");
    }
    // The same process /proc shows (RSS moves a little between readings).
    let last_rss = number(memory.last().unwrap(), "rss_bytes");
    let ratio = last_rss / host_rss as f64;
    assert!(
        (0.5..2.0).contains(&ratio),
        "sampled rss {last_rss} vs /proc {host_rss}"
    );
    // Samples come every interval: timestamps strictly increase, at least
    // most of an interval apart (the sampler sleeps between them).
    let ts: Vec<u64> = memory.iter().map(|e| e.timestamp_ns).collect();
    for pair in ts.windows(2) {
        assert!(pair[1] > pair[0] + 50_000_000, "{ts:?}");
    }

    let cpu = rec.named(CPU);
    for e in &cpu {
        assert_eq!(keys(e), ["cpu_percent"], "{e:?}");
        let pct = number(e, "cpu_percent");
        // One busy thread holding the GIL: at most about one CPU's worth
        // (clock ticks are coarse, hence the margin).
        assert!((0.0..=250.0).contains(&pct), "{e:?}");
        assert_eq!(e.meta("worker_id"), Some("w-res"));
    }
    assert!(rec.named("snakepit.telemetry.field.dropped").is_empty());

    client.close().await;
    drop(worker);
    assert!(
        procfs::wait_gone(&[pid], Duration::from_secs(10)),
        "worker {pid} still running"
    );
}
