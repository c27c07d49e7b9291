//! When the telemetry stream breaks while the worker lives, the client
//! reopens it with backoff: connection.lost, then connection.reconnected,
//! and events flow again.

mod common;

use std::time::Duration;

use common::{Recorder, Worker, SHOWCASE};
use serde_json::json;
use snakepit_grpc::{CallOptions, WorkerClient};
use snakepit_telemetry::Telemetry;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_stream_reconnects_after_a_break() {
    let worker = Worker::start(SHOWCASE, "w-reconnect");
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(
        &telemetry,
        "rec",
        &[
            "snakepit.grpc.connection.*",
            "snakepit.python.tool.execution.stop",
        ],
    );
    let client = WorkerClient::connect(telemetry.clone(), worker.options())
        .await
        .unwrap();

    // Another client takes the worker's one telemetry stream: ours breaks.
    let intruder = WorkerClient::connect(Telemetry::new(), worker.options())
        .await
        .unwrap();
    intruder.close().await;

    rec.wait_for("lost then reconnected", WAIT, |s| {
        let names: Vec<&str> = s.iter().map(|e| e.name.as_str()).collect();
        let lost = names
            .iter()
            .position(|n| *n == "snakepit.grpc.connection.lost");
        let back = names
            .iter()
            .rposition(|n| *n == "snakepit.grpc.connection.reconnected");
        matches!((lost, back), (Some(l), Some(b)) if l < b)
    })
    .await;
    let lost = &rec.named("snakepit.grpc.connection.lost")[0];
    assert_eq!(lost.meta("worker_id"), Some("w-reconnect"));
    assert!(
        lost.meta("reason").unwrap().contains("telemetry"),
        "{lost:?}"
    );
    let back = rec.named("snakepit.grpc.connection.reconnected")[0].clone();
    assert!(
        back.measurement("attempts")
            .unwrap()
            .parse::<i64>()
            .unwrap()
            >= 1
    );
    assert!(
        back.measurement("downtime")
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert!(client.is_connected());
    assert!(client.telemetry_stats().reconnects >= 1);

    // Events flow on the reopened stream.
    client
        .execute("emit_events", json!({"count": 5}), CallOptions::default())
        .await
        .unwrap();
    rec.wait_for("events after reconnect", WAIT, |s| {
        s.iter()
            .filter(|e| {
                e.name == "snakepit.python.tool.execution.stop"
                    && e.measurement("duration") == Some("1")
            })
            .count()
            == 5
    })
    .await;
    client.close().await;
}
