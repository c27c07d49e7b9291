//! A hostile worker whose drop counter jumps between u64::MAX and 0 does
//! not move the exported `snakepit_telemetry_events_dropped_total`: only a
//! plausible step forward reaches Prometheus.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_core::config::PrometheusSinkConfig;
use snakepit_core::Sink;
use snakepit_grpc::{CallOptions, ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_sinks::prometheus::PrometheusSink;
use snakepit_telemetry::Telemetry;
use snakepit_testkit::{WorkerProcess, HOSTILE};

const SERIES: &str =
    r#"snakepit_telemetry_events_dropped_total{where="worker",reason="sampled_out"}"#;

fn scrape(addr: std::net::SocketAddr) -> String {
    ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_counters_flipping_between_max_and_zero_stay_plausible_in_prometheus() {
    let worker = WorkerProcess::start(HOSTILE, "w-flip");
    let telemetry = Telemetry::new();
    let config = PrometheusSinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..PrometheusSinkConfig::default()
    };
    let sink = Arc::new(PrometheusSink::from_config(&config, telemetry.catalog()).unwrap());
    let addr = sink.local_addr().unwrap();
    telemetry
        .attach_sink("prometheus", &[], sink.clone())
        .unwrap();
    let client = WorkerClient::connect(
        telemetry.clone(),
        ConnectOptions::new(
            WorkerAddress::Unix(worker.socket().unwrap().to_path_buf()),
            "w-flip",
        ),
    )
    .await
    .unwrap();

    // sampled_out reads 2**64-1, 0, 2**64-1, ... (40 reports), then 7.
    client
        .execute(
            "flip_drop_counters",
            json!({"flips": 40, "final": 7}),
            CallOptions::with_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = tokio::task::spawn_blocking(move || scrape(addr))
            .await
            .unwrap();
        if client.telemetry_stats().worker_drops[1] == 7 || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stats = client.telemetry_stats();
    assert_eq!(stats.worker_drops[1], 7, "{stats:?}");
    assert_eq!(stats.implausible_counts, 20, "{stats:?}");
    let line = text
        .lines()
        .find(|l| l.starts_with(SERIES))
        .unwrap_or_else(|| panic!("no {SERIES} in:\n{text}"));
    assert_eq!(line, format!("{SERIES} 7"));
    client.close().await;
    sink.shutdown(Duration::from_secs(2)).unwrap();
}
