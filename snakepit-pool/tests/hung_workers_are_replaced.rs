//! Hung workers are found and replaced: a process stopped with SIGSTOP and
//! an event loop blocked by an inline tool fail the heartbeat; sync tools
//! and sync generators that never return trip the stuck-call watchdog (the
//! heartbeat alone still passes there), while a streaming call cancelled
//! and confirmed by its worker does not. Each time: `unhealthy` with the reason, then
//! `terminated` and `restarted`, the calls in flight fail with
//! `WorkerUnhealthy` naming the reason, and no process is left behind.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use snakepit_core::OwnedEvent;
use snakepit_pool::{CallError, CallOptions, Pool, PoolError};
use snakepit_telemetry::Telemetry;

/// Pids of every worker the pool spawned, from the `spawned` events.
fn spawned_pids(rec: &Recorder) -> Vec<u32> {
    rec.named("snakepit.pool.worker.spawned")
        .iter()
        .map(|e| int(e, "python_pid") as u32)
        .collect()
}

/// The names of `worker_id`'s lifecycle events, in order.
fn lifecycle(rec: &Recorder, worker_id: &str) -> Vec<String> {
    rec.all()
        .into_iter()
        .filter(|e| e.meta("worker_id").and_then(|v| v.as_str()) == Some(worker_id))
        .map(|e| {
            e.name
                .trim_start_matches("snakepit.pool.worker.")
                .to_string()
        })
        .collect()
}

/// Waits until the pool reports `n` calls in flight.
async fn wait_in_flight(pool: &Pool, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.status().in_flight < n {
        assert!(Instant::now() < deadline, "never {n} calls in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn expect_unhealthy(result: Result<snakepit_pool::ToolOutput, PoolError>, id: &str, why: &str) {
    match result {
        Err(PoolError::WorkerUnhealthy { worker_id, reason }) => {
            assert_eq!(worker_id, id);
            assert!(reason.starts_with(why), "{reason}");
        }
        other => panic!("expected WorkerUnhealthy ({why}), got {other:?}"),
    }
}

/// A worker's lifecycle events from its first `unhealthy` on, when it is
/// replaced.
const REPLACED: [&str; 5] = [
    "unhealthy",
    "terminated",
    "spawn_started",
    "spawned",
    "restarted",
];

/// Waits for the one `unhealthy` event, checks its `reason` and that it came
/// less than `within` after `since`; returns it and how long after `since`
/// it was seen.
async fn one_unhealthy(
    rec: &Recorder,
    reason: &str,
    since: Instant,
    within: Duration,
) -> (OwnedEvent, Duration) {
    let unhealthy = rec
        .wait_for("snakepit.pool.worker.unhealthy", 1, Duration::from_secs(20))
        .await;
    let seen_after = since.elapsed();
    assert_eq!(unhealthy.len(), 1, "{:?}", rec.all());
    assert_eq!(meta(&unhealthy[0], "reason"), reason);
    assert!(
        seen_after < within,
        "unhealthy {seen_after:?} after the fault"
    );
    (unhealthy[0].clone(), seen_after)
}

/// Waits for the one `restarted` event and for `victim` to be gone, and
/// prints how long detection and replacement took (`case` names the fault).
/// Replaced means detection plus one worker start (generous deadlines for a
/// loaded machine), never a call's own timeout or an endless hang.
async fn replaced(rec: &Recorder, case: &str, victim: u32, since: Instant, seen_after: Duration) {
    let restarted = rec
        .wait_for("snakepit.pool.worker.restarted", 1, Duration::from_secs(30))
        .await;
    assert_eq!(restarted.len(), 1, "{:?}", rec.all());
    eprintln!(
        "{case}: unhealthy after {seen_after:?}, replaced after {:?}",
        since.elapsed()
    );
    assert!(wait_gone(&[victim], Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigstop_fails_its_heartbeat_and_is_replaced() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let (interval, deadline) = (Duration::from_millis(200), Duration::from_secs(2));
    let cfg = config("sigstop", 2)
        .heartbeat(interval, deadline)
        .stuck_call_grace(Duration::from_secs(60));
    let pool = Arc::new(Pool::start(telemetry.clone(), cfg).await.unwrap());
    let victim = pool.worker_pids()[0];

    // With both idle, the first call goes to the first worker.
    let p = pool.clone();
    let call = tokio::spawn(async move {
        p.execute("sleep", json!({"ms": 20_000}), CallOptions::default())
            .await
    });
    wait_in_flight(&pool, 1).await;
    let stopped = Instant::now();
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGSTOP) }, 0);

    // Found within one interval plus the deadline (and room for a loaded
    // machine), not after the call's own 30 s timeout.
    let (unhealthy, seen_after) = one_unhealthy(
        &rec,
        "heartbeat_timeout",
        stopped,
        interval + deadline + Duration::from_secs(5),
    )
    .await;
    assert_eq!(meta(&unhealthy, "worker_id"), "sigstop_1");
    assert!(meta(&unhealthy, "detail").contains("heartbeat"));
    assert_eq!(int(&unhealthy, "in_flight"), 1);

    // The call in flight fails at once, naming the reason.
    let result = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call in flight must end when its worker is killed")
        .unwrap();
    expect_unhealthy(result, "sigstop_1", "heartbeat_timeout");

    // SIGKILL ends even a stopped process.
    replaced(&rec, "SIGSTOP", victim, stopped, seen_after).await;
    assert_eq!(
        lifecycle(&rec, "sigstop_1")[..2],
        ["spawn_started", "spawned"]
    );
    assert_eq!(lifecycle(&rec, "sigstop_1")[2..], REPLACED);
    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert_eq!(
        meta(&terminated[0], "reason"),
        "unhealthy: heartbeat_timeout"
    );
    assert_eq!(meta(&terminated[0], "planned"), "false");

    // Both workers serve again; the other one never missed a beat.
    assert_eq!(pool.status().total_workers, 2);
    for i in 0..20 {
        let out = pool
            .execute("add", json!({"a": i, "b": 1}), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.value, json!(i + 1));
    }
    assert_eq!(rec.named("snakepit.pool.worker.unhealthy").len(), 1);

    Arc::try_unwrap(pool).unwrap().shutdown().await;
    let pids = spawned_pids(&rec);
    assert_eq!(pids.len(), 3);
    assert!(wait_gone(&pids, Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tools_that_never_return_trip_the_stuck_call_watchdog() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let grace = Duration::from_secs(1);
    // Two tool threads, a heartbeat that stays happy: the event loop is free.
    let cfg = config("stuck", 1)
        .worker_arg("--threads")
        .worker_arg("2")
        .heartbeat(Duration::from_millis(200), Duration::from_secs(5))
        .stuck_call_grace(grace);
    let pool = Arc::new(Pool::start(telemetry.clone(), cfg).await.unwrap());
    let victim = pool.worker_pids()[0];

    let timeout = Duration::from_millis(500);
    let hung = (0..2).map(|_| {
        pool.execute(
            "block_forever",
            json!({}),
            CallOptions::with_timeout(timeout),
        )
    });
    for r in futures_util::future::join_all(hung).await {
        assert!(
            matches!(r, Err(PoolError::Call(CallError::Timeout { .. }))),
            "{r:?}"
        );
    }
    let timed_out = Instant::now();
    // The worker still answers on its event loop: it looks healthy.
    let out = pool
        .execute("add", json!({"a": 1, "b": 1}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(2));
    // A sync call now waits for a thread that never comes free.
    let p = pool.clone();
    let waiting = tokio::spawn(async move {
        p.execute("sleep", json!({"ms": 1}), CallOptions::default())
            .await
    });

    let (unhealthy, seen_after) = one_unhealthy(
        &rec,
        "stuck_call",
        timed_out,
        grace + Duration::from_secs(5),
    )
    .await;
    assert!(
        meta(&unhealthy, "detail").contains("2 call(s)"),
        "{}",
        meta(&unhealthy, "detail")
    );
    let result = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    expect_unhealthy(result, "stuck_1", "stuck_call");
    replaced(&rec, "stuck calls", victim, timed_out, seen_after).await;
    assert_eq!(lifecycle(&rec, "stuck_1")[2..], REPLACED);
    // The replacement has its threads free.
    let out = pool
        .execute("sleep", json!({"ms": 1}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!({"slept_ms": 1}));

    Arc::try_unwrap(pool).unwrap().shutdown().await;
    assert!(wait_gone(&spawned_pids(&rec), Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_tool_that_overruns_its_timeout_within_the_grace_is_not_stuck() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let cfg = config("overrun", 1)
        .heartbeat(Duration::from_millis(200), Duration::from_secs(5))
        .stuck_call_grace(Duration::from_secs(5));
    let pool = Pool::start(telemetry.clone(), cfg).await.unwrap();
    // Times out at 200 ms, its thread is free again at 1 s: the worker
    // answers then, well within the grace.
    let r = pool
        .execute(
            "sleep",
            json!({"ms": 1000}),
            CallOptions::with_timeout(Duration::from_millis(200)),
        )
        .await;
    assert!(
        matches!(r, Err(PoolError::Call(CallError::Timeout { .. }))),
        "{r:?}"
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(rec.named("snakepit.pool.worker.unhealthy").is_empty());
    assert!(rec.named("snakepit.pool.worker.terminated").is_empty());
    pool.shutdown().await;
    assert!(wait_gone(&spawned_pids(&rec), Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_tool_blocking_the_event_loop_fails_the_heartbeat() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let (interval, deadline) = (Duration::from_millis(200), Duration::from_secs(2));
    let cfg = config("loopblock", 1)
        .heartbeat(interval, deadline)
        .stuck_call_grace(Duration::from_secs(60));
    let pool = Arc::new(Pool::start(telemetry.clone(), cfg).await.unwrap());
    let victim = pool.worker_pids()[0];

    let p = pool.clone();
    let blocked_at = Instant::now();
    let call = tokio::spawn(async move {
        p.execute(
            "inline_sleep",
            json!({"ms": 600_000}),
            CallOptions::default(),
        )
        .await
    });
    let (_, seen_after) = one_unhealthy(
        &rec,
        "heartbeat_timeout",
        blocked_at,
        interval + deadline + Duration::from_secs(5),
    )
    .await;
    let result = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    expect_unhealthy(result, "loopblock_1", "heartbeat_timeout");
    replaced(&rec, "blocked loop", victim, blocked_at, seen_after).await;
    let out = pool
        .execute("add", json!({"a": 2, "b": 3}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(5));

    Arc::try_unwrap(pool).unwrap().shutdown().await;
    assert!(wait_gone(&spawned_pids(&rec), Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_generator_that_never_stops_trips_the_stuck_call_watchdog() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let grace = Duration::from_secs(1);
    let cfg = config("stuckgen", 1)
        .worker_arg("--threads")
        .worker_arg("2")
        .heartbeat(Duration::from_millis(200), Duration::from_secs(5))
        .stuck_call_grace(grace);
    let pool = Arc::new(Pool::start(telemetry.clone(), cfg).await.unwrap());
    let victim = pool.worker_pids()[0];

    // One chunk, then the generator's thread blocks for good: the timeout
    // ends the stream on the host and cancels the call in the worker (the
    // caller still holds the stream), the cancel cannot stop the thread,
    // so the worker never confirms it.
    let mut chunks = pool
        .execute_stream(
            "stream_block_forever",
            json!({}),
            CallOptions::with_timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert_eq!(chunks.next().await.unwrap().unwrap(), json!({"i": 0}));
    let end = chunks.next().await.unwrap();
    assert!(
        matches!(end, Err(PoolError::Call(CallError::Timeout { .. }))),
        "{end:?}"
    );
    let timed_out = Instant::now();
    // Other calls still work meanwhile: the loop and the other thread are free.
    let out = pool
        .execute("sleep", json!({"ms": 1}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!({"slept_ms": 1}));

    let (unhealthy, seen_after) = one_unhealthy(
        &rec,
        "stuck_call",
        timed_out,
        grace + Duration::from_secs(5),
    )
    .await;
    assert!(
        meta(&unhealthy, "detail").contains("1 call(s)"),
        "{}",
        meta(&unhealthy, "detail")
    );
    assert!(
        chunks.next().await.is_none(),
        "the stream ended at its timeout"
    );
    drop(chunks);
    replaced(&rec, "stuck generator", victim, timed_out, seen_after).await;
    assert_eq!(lifecycle(&rec, "stuckgen_1")[2..], REPLACED);
    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert_eq!(meta(&terminated[0], "reason"), "unhealthy: stuck_call");
    // The replacement streams.
    let chunks: Vec<_> = pool
        .execute_stream("stream", json!({"n": 3}), CallOptions::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert!(chunks.iter().all(Result::is_ok), "{chunks:?}");

    Arc::try_unwrap(pool).unwrap().shutdown().await;
    assert!(wait_gone(&spawned_pids(&rec), Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_call_dropped_early_is_confirmed_and_not_stuck() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let grace = Duration::from_millis(500);
    let cfg = config("cancelled", 1)
        .heartbeat(Duration::from_millis(200), Duration::from_secs(5))
        .stuck_call_grace(grace);
    let pool = Pool::start(telemetry.clone(), cfg).await.unwrap();
    // Sync and async generators that would run for a minute, dropped after
    // their first chunk: each cancel stops the generator at its next item
    // and the worker confirms it.
    for tool in ["stream", "astream"] {
        let args = json!({"n": 1200, "delay_ms": 50});
        let mut chunks = pool
            .execute_stream(tool, args, CallOptions::default())
            .await
            .unwrap();
        assert_eq!(chunks.next().await.unwrap().unwrap(), json!({"i": 0}));
        drop(chunks);
    }
    // Well past the grace: no call counted as stuck.
    tokio::time::sleep(grace * 6).await;
    assert!(
        rec.named("snakepit.pool.worker.unhealthy").is_empty(),
        "{:?}",
        rec.all()
    );
    assert!(rec.named("snakepit.pool.worker.terminated").is_empty());
    let out = pool
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));
    pool.shutdown().await;
    assert!(wait_gone(&spawned_pids(&rec), Duration::from_secs(5)));
}
