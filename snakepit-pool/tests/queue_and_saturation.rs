//! The bounded queue: enqueued / dequeued with queue time, queue timeout,
//! saturation, and status snapshots.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolError};
use snakepit_telemetry::Telemetry;

async fn one_slot_pool(
    name: &str,
    max_queue: usize,
    queue_timeout: Duration,
) -> (Arc<Pool>, Recorder) {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let cfg = config(name, 1)
        .concurrency_per_worker(1)
        .max_queue(max_queue)
        .queue_timeout(queue_timeout)
        .status_interval(Duration::from_millis(50));
    (Arc::new(Pool::start(telemetry, cfg).await.unwrap()), rec)
}

fn occupy(
    pool: &Arc<Pool>,
    ms: u64,
) -> tokio::task::JoinHandle<Result<snakepit_pool::ToolOutput, PoolError>> {
    let p = pool.clone();
    tokio::spawn(async move {
        p.execute("sleep", json!({"ms": ms}), CallOptions::default())
            .await
    })
}

async fn wait_in_flight(pool: &Pool, n: usize) {
    for _ in 0..200 {
        if pool.status().in_flight == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never {n} in flight: {:?}", pool.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_runs_when_a_worker_frees_up() {
    let (pool, rec) = one_slot_pool("dequeue", 10, Duration::from_secs(5)).await;
    let busy = occupy(&pool, 1000);
    wait_in_flight(&pool, 1).await;
    let out = pool
        .execute("add", json!({"a": 1, "b": 1}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(2));
    busy.await.unwrap().unwrap();

    let enq = rec.named("snakepit.pool.queue.enqueued");
    assert_eq!(enq.len(), 1);
    assert_eq!(int(&enq[0], "queue_depth"), 1);
    assert_eq!(meta(&enq[0], "command"), "add");
    assert_eq!(meta(&enq[0], "pool_name"), "dequeue");
    let deq = rec.named("snakepit.pool.queue.dequeued");
    assert_eq!(deq.len(), 1);
    assert!(int(&deq[0], "queue_time") >= 100_000_000, "{:?}", deq[0]);
    assert_eq!(int(&deq[0], "queue_depth"), 0);
    assert_eq!(meta(&deq[0], "command"), "add");
    Arc::try_unwrap(pool).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_past_the_queue_timeout_fails_with_queue_timeout() {
    let (pool, rec) = one_slot_pool("qtimeout", 10, Duration::from_millis(200)).await;
    let busy = occupy(&pool, 1500);
    wait_in_flight(&pool, 1).await;
    let err = pool
        .execute("add", json!({"a": 1, "b": 1}), CallOptions::default())
        .await
        .unwrap_err();
    match err {
        PoolError::QueueTimeout { waited } => assert!(waited >= Duration::from_millis(200)),
        other => panic!("expected QueueTimeout, got {other:?}"),
    }
    let timeouts = rec.named("snakepit.pool.queue.timeout");
    assert_eq!(timeouts.len(), 1);
    assert!(int(&timeouts[0], "queue_time") >= 200_000_000);
    assert_eq!(meta(&timeouts[0], "command"), "add");
    assert_eq!(meta(&timeouts[0], "pool_name"), "qtimeout");
    assert_eq!(pool.status().queue_depth, 0);
    busy.await.unwrap().unwrap();
    Arc::try_unwrap(pool).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_rejects_with_saturated_and_status_shows_it() {
    let (pool, rec) = one_slot_pool("saturate", 1, Duration::from_secs(5)).await;
    let busy = occupy(&pool, 800);
    wait_in_flight(&pool, 1).await;
    let queued = occupy(&pool, 1);
    for _ in 0..200 {
        if pool.status().queue_depth == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = pool
        .execute("add", json!({"a": 1, "b": 1}), CallOptions::default())
        .await
        .unwrap_err();
    match err {
        PoolError::Saturated {
            queue_depth,
            max_queue,
        } => {
            assert_eq!((queue_depth, max_queue), (1, 1));
        }
        other => panic!("expected Saturated, got {other:?}"),
    }
    let sat = rec.named("snakepit.pool.saturated");
    assert_eq!(sat.len(), 1);
    assert_eq!(int(&sat[0], "queue_depth"), 1);
    assert_eq!(int(&sat[0], "max_queue"), 1);
    assert_eq!(meta(&sat[0], "command"), "add");

    // A status snapshot taken while saturated.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let status = rec.named("snakepit.pool.status");
    let busy_snapshot = status
        .iter()
        .rev()
        .find(|e| int(e, "queue_depth") == 1)
        .unwrap_or_else(|| panic!("no status with a queued call: {status:?}"));
    assert_eq!(int(busy_snapshot, "busy_workers"), 1);
    assert_eq!(int(busy_snapshot, "available_workers"), 0);
    assert_eq!(int(busy_snapshot, "total_workers"), 1);
    assert_eq!(meta(busy_snapshot, "pool_name"), "saturate");

    busy.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    let seen = rec.named("snakepit.pool.status").len();
    let after = rec
        .wait_for("snakepit.pool.status", seen + 2, Duration::from_secs(2))
        .await;
    let last = after.last().unwrap();
    assert_eq!(int(last, "queue_depth"), 0);
    assert_eq!(int(last, "available_workers"), 1);
    assert_eq!(int(last, "busy_workers"), 0);
    Arc::try_unwrap(pool).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_that_is_cancelled_leaves_the_queue() {
    let (pool, _rec) = one_slot_pool("cancel", 10, Duration::from_secs(5)).await;
    let busy = occupy(&pool, 300);
    wait_in_flight(&pool, 1).await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        pool.execute("ping", json!({}), CallOptions::default()),
    )
    .await;
    assert!(gave_up.is_err());
    assert_eq!(pool.status().queue_depth, 0);
    busy.await.unwrap().unwrap();
    // The slot is free again for the next call.
    pool.execute("ping", json!({}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(pool.status().in_flight, 0);
    Arc::try_unwrap(pool).unwrap().shutdown().await;
}
