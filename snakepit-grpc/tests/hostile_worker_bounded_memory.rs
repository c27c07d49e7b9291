//! A hostile worker (unknown names, 1 MB metadata values, NaN, 100,000
//! distinct metadata values) neither crashes the host nor grows its memory
//! without bound.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Worker, HOSTILE};
use serde_json::json;
use snakepit_grpc::{CallOptions, WorkerClient};
use snakepit_telemetry::Telemetry;

async fn hostile_round(client: &WorkerClient) {
    let opts = CallOptions::with_timeout(Duration::from_secs(60));
    for (tool, args) in [
        ("unknown_names", json!({"count": 20_000})),
        ("huge_metadata", json!({"count": 30, "size": 1 << 20})),
        ("non_finite", json!({"count": 1000})),
        ("distinct_metadata", json!({"count": 100_000, "fields": 2})),
    ] {
        client.execute(tool, args, opts.clone()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_worker_cannot_crash_the_host_or_grow_its_memory() {
    let worker = Worker::start_with(HOSTILE, "w-hostile", &["--telemetry-buffer", "200000"]);
    let telemetry = Telemetry::new();
    // Handlers that keep nothing but counts, like a metrics sink would.
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    telemetry
        .attach_many(
            "count",
            &["snakepit.python.*", "snakepit.telemetry.*"],
            move |_| {
                s.fetch_add(1, Ordering::Relaxed);
            },
        )
        .unwrap();
    let client = WorkerClient::connect(telemetry.clone(), worker.options())
        .await
        .unwrap();

    // Round 1 warms up allocator pools and buffers.
    let mut expected_folded = 0;
    let mut expected_rejected = 0;
    let mut rss_after_first = 0;
    for round in 1..=3u64 {
        hostile_round(&client).await;
        // Per round: 30 huge + 1000 inf events + 100,000 distinct folded
        // (+ the worker's own call events, which vary by timing).
        expected_folded += 30 + 1000 + 100_000;
        expected_rejected += 20_000 + 2000;
        let c = client.clone();
        eventually(
            "the round to be folded",
            Duration::from_secs(60),
            move || {
                let s = c.telemetry_stats();
                s.events_folded >= expected_folded && s.events_rejected >= expected_rejected
            },
        )
        .await;
        let rss = Worker::host_rss_kb();
        eprintln!(
            "round {round}: host VmRSS {rss} kB, stats {:?}",
            client.telemetry_stats()
        );
        if round == 1 {
            rss_after_first = rss;
        }
    }
    let rss_end = Worker::host_rss_kb();
    let stats = client.telemetry_stats();
    assert_eq!(stats.events_rejected, expected_rejected);
    assert!(stats.fields_dropped >= 3 * (30 * 2 + 2000), "{stats:?}");
    assert_eq!(
        stats.worker_drops[0], 0,
        "the worker buffer overflowed: {stats:?}"
    );
    assert!(seen.load(Ordering::Relaxed) >= expected_folded);
    // Two more rounds (~250,000 events, 60 MB of metadata) may not grow
    // the host by more than a few batches' worth.
    let growth_kb = rss_end.saturating_sub(rss_after_first);
    assert!(
        growth_kb < 24 * 1024,
        "host RSS grew by {growth_kb} kB over two hostile rounds"
    );
    // And the connection is still healthy.
    assert!(client.is_connected());
    client.ping().await.unwrap();
    client.close().await;
}
