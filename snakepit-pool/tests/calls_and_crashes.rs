//! Calls through the pool, streams, and a worker killed with SIGKILL in the
//! middle of a call: a typed error, a restart and the events.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use snakepit_pool::{CallError, CallOptions, Pool, PoolError};
use snakepit_telemetry::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_streams_run_on_workers_and_count_commands() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.terminated");
    let pool = Pool::start(telemetry.clone(), config("calls", 2))
        .await
        .unwrap();

    let out = pool
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));

    let err = pool
        .execute("fail", json!({"message": "nope"}), CallOptions::default())
        .await
        .unwrap_err();
    match err {
        PoolError::Call(CallError::Tool {
            error_type,
            message,
            ..
        }) => {
            assert_eq!(error_type, "ValueError");
            assert!(message.contains("nope"));
        }
        other => panic!("expected a tool error, got {other:?}"),
    }

    let chunks: Vec<_> = pool
        .execute_stream("stream", json!({"n": 3}), CallOptions::default())
        .await
        .unwrap()
        .collect()
        .await;
    let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        chunks,
        vec![json!({"i": 0}), json!({"i": 1}), json!({"i": 2})]
    );
    // The stream gave its slot back.
    assert_eq!(pool.status().in_flight, 0);

    // Many concurrent calls spread over both workers.
    let calls =
        (0..40).map(|i| pool.execute("add", json!({"a": i, "b": 1}), CallOptions::default()));
    for (i, r) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.unwrap().value, json!(i + 1));
    }

    pool.shutdown().await;
    let terminated = rec.named("snakepit.pool.worker.terminated");
    let total: i64 = terminated.iter().map(|e| int(e, "total_commands")).sum();
    assert_eq!(total, 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_call_fails_the_call_with_worker_crashed_and_restarts() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let pool = std::sync::Arc::new(
        Pool::start(telemetry.clone(), config("crash", 1))
            .await
            .unwrap(),
    );
    let victim = pool.worker_pids()[0];

    let p = pool.clone();
    let call = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = p
            .execute("sleep", json!({"ms": 10_000}), CallOptions::default())
            .await;
        (r, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.status().in_flight, 1);
    kill9(victim);

    let (result, took) = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap()
        .unwrap();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    match result {
        Err(PoolError::WorkerCrashed { worker_id, reason }) => {
            assert_eq!(worker_id, "crash_1");
            assert!(reason.contains("SIGKILL"), "{reason}");
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }

    let restarted = rec
        .wait_for("snakepit.pool.worker.restarted", 1, Duration::from_secs(20))
        .await;
    assert_eq!(restarted.len(), 1);
    assert_eq!(meta(&restarted[0], "worker_id"), "crash_1");
    assert_eq!(int(&restarted[0], "restart_count"), 1);
    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert_eq!(terminated.len(), 1);
    assert_eq!(meta(&terminated[0], "planned"), "false");
    assert_eq!(int(&terminated[0], "total_commands"), 1);

    // The restarted worker serves calls.
    let out = pool
        .execute("add", json!({"a": 2, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(4));
    let new_pid = pool.worker_pids()[0];
    assert_ne!(new_pid, victim);

    std::sync::Arc::try_unwrap(pool).unwrap().shutdown().await;
    assert!(wait_gone(&[victim, new_pid], Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_keeps_dying_is_given_up_after_max_restarts() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let cfg = config("giveup", 1).restart_backoff(
        Duration::from_millis(20),
        Duration::from_millis(80),
        2,
    );
    let pool = Pool::start(telemetry.clone(), cfg).await.unwrap();
    for round in 0..3 {
        let pid = loop {
            if let Some(&pid) = pool.worker_pids().first() {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        kill9(pid);
        rec.wait_for(
            "snakepit.pool.worker.terminated",
            round + 1,
            Duration::from_secs(10),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = rec.named("snakepit.pool.worker.restarted");
    let counts: Vec<i64> = restarted.iter().map(|e| int(e, "restart_count")).collect();
    assert_eq!(counts, vec![1, 2]);
    // Backoff doubles: the second downtime is at least the 40 ms wait.
    assert!(int(&restarted[1], "downtime") >= 40_000_000);
    assert_eq!(pool.status().total_workers, 0);
    assert!(pool.worker_pids().is_empty());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_ends_the_stream_with_worker_crashed() {
    let pool = Pool::start(Telemetry::new(), config("streamcrash", 1))
        .await
        .unwrap();
    let victim = pool.worker_pids()[0];
    let mut chunks = pool
        .execute_stream(
            "stream",
            json!({"n": 1000, "delay_ms": 50}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(chunks.next().await.unwrap().unwrap(), json!({"i": 0}));
    kill9(victim);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match chunks.next().await {
                Some(Ok(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .unwrap();
    match end {
        Some(Err(PoolError::WorkerCrashed { worker_id, reason })) => {
            assert_eq!(worker_id, "streamcrash_1");
            assert!(reason.contains("SIGKILL"), "{reason}");
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    assert!(chunks.next().await.is_none());
    pool.shutdown().await;
}
