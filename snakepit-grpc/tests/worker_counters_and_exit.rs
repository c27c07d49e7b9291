//! What a worker's telemetry counters may tell the host: events a worker
//! held unsent when it exited are reported lost (`worker_exited`), even when
//! it died before any batch told the host about them (its shared
//! accepted-events count, `<socket>.counters`), and drop
//! counters that jump between u64::MAX and 0 are not believed.

mod common;

use std::time::Duration;

use common::{connect_recorded, eventually, Recorder, Seen, Worker, HOSTILE};
use serde_json::json;
use snakepit_grpc::{CallError, CallOptions};

const DROPPED: &str = "snakepit.telemetry.events.dropped";

/// The `count` of every `events.dropped` report with this reason.
fn dropped(rec: &Recorder, reason: &str) -> u64 {
    rec.named(DROPPED)
        .iter()
        .filter(|s| s.meta("reason") == Some(reason))
        .map(|s: &Seen| s.measurement("count").unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Events a worker emitted in one call before it died: how many arrived,
/// how many were reported `worker_exited`, and the recorder.
struct Death {
    delivered: u64,
    lost: u64,
    rec: Recorder,
}

/// Runs `tool` (it emits `n` events, then calls `os._exit(3)`) on a new
/// worker, waits for the exit and closes the client, which stops folding
/// as a pool does when its worker exits.
async fn emit_and_die(tool: &str, worker_id: &str, n: u64) -> Death {
    let mut worker = Worker::start(HOSTILE, worker_id);
    let (_telemetry, rec, client) = connect_recorded(
        worker.options(),
        &["snakepit.python.tool.execution.stop", DROPPED],
    )
    .await;
    let result = client
        .execute(
            tool,
            json!({"count": n, "code": 3}),
            CallOptions::with_timeout(Duration::from_secs(30)),
        )
        .await;
    assert!(
        matches!(result, Err(CallError::Unavailable { .. })),
        "{result:?}"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = worker.process.child.wait().unwrap();
        (status, worker)
    });
    let (status, worker) = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("the worker exits")
        .unwrap();
    assert_eq!(status.code(), Some(3));
    client.close().await;
    let delivered = rec
        .named("snakepit.python.tool.execution.stop")
        .iter()
        .filter(|s| s.meta("tool") == Some("doomed"))
        .count() as u64;
    let lost = dropped(&rec, "worker_exited");
    eprintln!("{tool}: delivered {delivered}, reported worker_exited {lost}");
    drop(worker);
    Death {
        delivered,
        lost,
        rec,
    }
}

/// The `worker_exited` report names the worker as its source.
fn assert_reported_by(rec: &Recorder, worker_id: &str) {
    let report = rec
        .named(DROPPED)
        .into_iter()
        .find(|s| s.meta("reason") == Some("worker_exited"))
        .unwrap();
    assert_eq!(report.meta("where"), Some("worker"));
    assert_eq!(report.meta("worker_id"), Some(worker_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_worker_held_when_it_exited_are_reported_dropped() {
    const N: u64 = 5000;
    // The tool emits N events, waits until one batch (1000 events) has told
    // the host how many are still unsent, and calls os._exit. What arrives
    // arrives before the stream breaks; the rest is reported.
    let Death {
        delivered,
        lost,
        rec,
    } = emit_and_die("emit_then_exit", "w-doomed", N).await;
    assert!(delivered < N, "the worker died before sending everything");
    assert_eq!(delivered + lost, N, "every event is delivered or reported");
    assert_reported_by(&rec, "w-doomed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_worker_accepted_just_before_dying_without_a_batch_are_reported() {
    const N: u64 = 5000;
    // N events from a sync tool, then os._exit at once: no batch is sent in
    // between, so no `pending` ever told the host about them. The worker's
    // shared count says what it accepted.
    let Death {
        delivered,
        lost,
        rec,
    } = emit_and_die("emit_then_exit_at_once", "w-sudden", N).await;
    assert!(lost > 0, "the events the worker died holding are reported");
    // A lower bound: the count is rewritten every 64 events.
    assert!(delivered + lost >= N - 63, "{delivered} + {lost}");
    assert!(delivered + lost <= N, "{delivered} + {lost}");
    assert_reported_by(&rec, "w-sudden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_process_at_the_same_address_reports_what_the_old_one_held() {
    const N: u64 = 5000;
    let mut worker = Worker::start(HOSTILE, "w-restarted");
    let (_telemetry, rec, client) = connect_recorded(
        worker.options(),
        &["snakepit.python.tool.execution.stop", DROPPED],
    )
    .await;
    let result = client
        .execute(
            "emit_then_exit",
            json!({"count": N, "code": 3}),
            CallOptions::with_timeout(Duration::from_secs(30)),
        )
        .await;
    assert!(
        matches!(result, Err(CallError::Unavailable { .. })),
        "{result:?}"
    );
    // An external worker restarted behind the same address: the client
    // reopens its telemetry stream to the new process, whose batches start
    // again from sequence number 1.
    worker.respawn(HOSTILE);
    let r = rec.clone();
    eventually(
        "the old process's unsent events to be reported",
        Duration::from_secs(20),
        move || dropped(&r, "worker_exited") > 0,
    )
    .await;
    let delivered = rec
        .named("snakepit.python.tool.execution.stop")
        .iter()
        .filter(|s| s.meta("tool") == Some("doomed"))
        .count() as u64;
    assert_eq!(delivered + dropped(&rec, "worker_exited"), N);
    // The new process holds nothing: closing reports nothing more.
    client.close().await;
    assert_eq!(delivered + dropped(&rec, "worker_exited"), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_counters_alternating_between_max_and_zero_are_not_believed() {
    let worker = Worker::start(HOSTILE, "w-flip");
    let (_telemetry, rec, client) = connect_recorded(worker.options(), &[DROPPED]).await;
    // sampled_out reads 2**64-1, 0, 2**64-1, ... (20 reports), then 5.
    let flips = client
        .execute(
            "flip_drop_counters",
            json!({"flips": 20, "final": 5}),
            CallOptions::with_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(flips.value, json!(20));
    let c = client.clone();
    eventually("the last report", Duration::from_secs(10), move || {
        c.telemetry_stats().worker_drops[1] == 5
    })
    .await;
    let stats = client.telemetry_stats();
    assert_eq!(stats.implausible_counts, 10, "{stats:?}");
    // Only the last step (0 -> 5) is a plausible move forward.
    assert_eq!(dropped(&rec, "sampled_out"), 5);
    client.close().await;
}
