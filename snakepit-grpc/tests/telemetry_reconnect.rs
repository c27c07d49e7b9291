//! When the telemetry stream breaks while the worker lives, the client
//! reopens it with backoff: connection.lost, then connection.reconnected,
//! and events flow again.

mod common;

use std::time::Duration;

use common::{connect_recorded, eventually, Worker, SHOWCASE};
use serde_json::json;
use snakepit_grpc::{CallOptions, WorkerClient};
use snakepit_telemetry::Telemetry;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_stream_reconnects_after_a_break() {
    let worker = Worker::start(SHOWCASE, "w-reconnect");
    let (_telemetry, rec, client) = connect_recorded(
        worker.options(),
        &[
            "snakepit.grpc.connection.*",
            "snakepit.python.tool.execution.stop",
        ],
    )
    .await;

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

/// Events emitted while no host holds the telemetry stream wait in the
/// worker's bounded buffer; what exceeds it is counted as `buffer_full` and
/// reported (as `telemetry.events.dropped`) to the next host that attaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_emitted_while_disconnected_wait_in_the_bounded_buffer() {
    const CAPACITY: usize = 100;
    const EMITTED: usize = 150;
    let worker = Worker::start_with(
        SHOWCASE,
        "w-buffered",
        &["--telemetry-buffer", &CAPACITY.to_string()],
    );
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("emitted");

    // First host: starts a background emitter that waits until no host is
    // attached, then goes away.
    let first = WorkerClient::connect(Telemetry::new(), worker.options())
        .await
        .unwrap();
    first
        .execute(
            "emit_when_detached",
            json!({"count": EMITTED, "marker": marker.display().to_string()}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    first.close().await;
    let m = marker.clone();
    eventually("the detached emitter to finish", WAIT, move || m.exists()).await;
    let note = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(note.trim(), format!("{CAPACITY} buffered"));

    // Second host: gets the buffer, then the count of what did not fit.
    let (_telemetry, rec, second) = connect_recorded(
        worker.options(),
        &["snakepit.python.*", "snakepit.telemetry.events.dropped"],
    )
    .await;
    let full_drops = |s: &[common::Seen]| -> usize {
        s.iter()
            .filter(|e| {
                e.name == "snakepit.telemetry.events.dropped"
                    && e.meta("reason") == Some("buffer_full")
            })
            .map(|e| e.measurement("count").unwrap().parse::<usize>().unwrap())
            .sum()
    };
    rec.wait_for("the buffered events and the drop count", WAIT, |s| {
        let python = s
            .iter()
            .filter(|e| e.name.starts_with("snakepit.python."))
            .count();
        python >= CAPACITY && full_drops(s) > 0
    })
    .await;
    let seen = rec.seen.lock().unwrap().clone();
    // The buffer was full: exactly its capacity arrived (the first call's
    // own late events, if any were still buffered, count against it too).
    let python: Vec<_> = seen
        .iter()
        .filter(|e| e.name.starts_with("snakepit.python."))
        .collect();
    assert_eq!(python.len(), CAPACITY);
    let ours = python
        .iter()
        .filter(|e| e.meta("tool") == Some("emit_when_detached"))
        .count();
    let dropped = full_drops(&seen);
    // Every one of ours that did not arrive was counted (other events the
    // worker emitted meanwhile, such as the first call's own, may be
    // counted too).
    assert!(ours + dropped >= EMITTED, "ours {ours}, dropped {dropped}");
    assert!(ours >= CAPACITY - 10, "ours {ours}");
    let drop = seen
        .iter()
        .find(|e| e.name == "snakepit.telemetry.events.dropped")
        .unwrap();
    assert_eq!(drop.meta("where"), Some("worker"));
    assert_eq!(drop.meta("worker_id"), Some("w-buffered"));
    assert_eq!(second.telemetry_stats().worker_drops[0], dropped as u64);
    second.close().await;
}
