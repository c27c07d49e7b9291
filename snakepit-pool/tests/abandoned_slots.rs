//! A slot whose worker cannot be restarted is given up: `abandoned` with the
//! last failure, counted in `status()` and the status event, and once no
//! slot is left, calls (queued ones too) fail at once with `NoLiveWorker`
//! naming the failure instead of waiting out the queue timeout.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolError};
use snakepit_telemetry::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_restarts_are_exhausted_calls_fail_at_once_with_the_last_failure() {
    // An adapter module that disappears after the first start: every
    // restart fails to import it.
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("vanishing_adapter.py");
    std::fs::write(
        &module,
        "from snakepit_bridge.adapters.showcase import ShowcaseAdapter as Vanishing\n",
    )
    .unwrap();
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let cfg = config("abandon", 1)
        .adapter("vanishing_adapter:Vanishing")
        .working_dir(dir.path())
        .env("PYTHONPATH", dir.path().to_str().unwrap())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .restart_backoff(Duration::from_millis(50), Duration::from_millis(200), 2)
        .queue_timeout(Duration::from_secs(120))
        .status_interval(Duration::from_millis(100));
    let pool = Arc::new(Pool::start(telemetry.clone(), cfg).await.unwrap());
    let out = pool
        .execute("add", json!({"a": 1, "b": 1}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(2));
    assert_eq!(pool.status().abandoned_workers, 0);
    assert_eq!(pool.status().last_failure, None);

    std::fs::remove_file(&module).unwrap();
    let victim = pool.worker_pids()[0];
    kill9(victim);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.status().total_workers > 0 {
        assert!(Instant::now() < deadline, "the crash was never noticed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A call made now waits for the restart, in the queue.
    let p = pool.clone();
    let queued = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = p
            .execute("add", json!({"a": 2, "b": 2}), CallOptions::default())
            .await;
        (r, t0.elapsed())
    });

    let abandoned = rec
        .wait_for("snakepit.pool.worker.abandoned", 1, Duration::from_secs(60))
        .await;
    assert_eq!(
        abandoned.len(),
        1,
        "{:?}",
        rec.named("snakepit.pool.worker.spawn_failed")
    );
    assert_eq!(meta(&abandoned[0], "worker_id"), "abandon_1");
    assert_eq!(int(&abandoned[0], "restarts"), 2);
    let reason = meta(&abandoned[0], "reason");
    assert!(reason.contains("restart failed"), "{reason}");
    assert!(reason.contains("vanishing_adapter"), "{reason}");

    // The queued call failed when the slot was given up, long before its
    // 120 s queue timeout, with the reason.
    let (result, waited) = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the queued call must fail once no worker is left")
        .unwrap();
    assert!(waited < Duration::from_secs(60), "waited {waited:?}");
    match result {
        Err(e @ PoolError::NoLiveWorker { .. }) => {
            let text = e.to_string();
            assert!(text.contains("no live worker"), "{text}");
            assert!(text.contains("vanishing_adapter"), "{text}");
        }
        other => panic!("expected NoLiveWorker, got {other:?}"),
    }

    // Later calls fail at once, and status says why.
    let t0 = Instant::now();
    let result = pool
        .execute("add", json!({"a": 3, "b": 3}), CallOptions::default())
        .await;
    assert!(
        matches!(result, Err(PoolError::NoLiveWorker { ref reason }) if reason.contains("vanishing_adapter")),
        "{result:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    let status = pool.status();
    assert_eq!(status.total_workers, 0);
    assert_eq!(status.abandoned_workers, 1);
    assert!(status
        .last_failure
        .as_deref()
        .is_some_and(|f| f.contains("vanishing_adapter")));
    // No queue timeout was ever waited out.
    assert!(rec.named("snakepit.pool.queue.timeout").is_empty());
    let status_events = rec
        .wait_for("snakepit.pool.status", 1, Duration::from_secs(5))
        .await;
    rec.wait_for(
        "snakepit.pool.status",
        status_events.len() + 1,
        Duration::from_secs(5),
    )
    .await;
    let last = rec.named("snakepit.pool.status").pop().unwrap();
    assert_eq!(int(&last, "abandoned_workers"), 1);
    assert_eq!(int(&last, "total_workers"), 0);

    Arc::try_unwrap(pool).unwrap().shutdown().await;
    let pids: Vec<u32> = rec
        .named("snakepit.pool.worker.spawned")
        .iter()
        .map(|e| int(e, "python_pid") as u32)
        .collect();
    assert_eq!(pids, [victim]);
    assert!(wait_gone(&pids, Duration::from_secs(5)));
    assert!(processes_with("vanishing_adapter").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_slot_given_up_the_other_keeps_serving() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let cfg = config("halfgone", 2).restart_backoff(
        Duration::from_millis(20),
        Duration::from_millis(80),
        0,
    );
    let pool = Pool::start(telemetry.clone(), cfg).await.unwrap();
    let pids = pool.worker_pids();
    kill9(pids[0]);
    let abandoned = rec
        .wait_for("snakepit.pool.worker.abandoned", 1, Duration::from_secs(20))
        .await;
    assert_eq!(abandoned.len(), 1);
    assert!(meta(&abandoned[0], "reason").contains("SIGKILL"));
    assert_eq!(int(&abandoned[0], "restarts"), 0);
    let status = pool.status();
    assert_eq!((status.total_workers, status.abandoned_workers), (1, 1));
    for i in 0..10 {
        let out = pool
            .execute("add", json!({"a": i, "b": 1}), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.value, json!(i + 1));
    }
    pool.shutdown().await;
    assert!(wait_gone(&pids, Duration::from_secs(5)));
}
