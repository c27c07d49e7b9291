//! Graceful shutdown: calls in flight finish, queued and new calls fail with
//! `ShuttingDown`, workers are gone and `terminated` is planned.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolError};
use snakepit_telemetry::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_calls_in_flight_and_refuses_the_rest() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.terminated");
    let cfg = config("drain", 1).concurrency_per_worker(1);
    let pool = Pool::start(telemetry.clone(), cfg).await.unwrap();
    let pids = pool.worker_pids();

    let p = pool.clone();
    let in_flight = tokio::spawn(async move {
        p.execute("sleep", json!({"ms": 400}), CallOptions::default())
            .await
    });
    while pool.status().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let p = pool.clone();
    let queued =
        tokio::spawn(async move { p.execute("ping", json!({}), CallOptions::default()).await });
    while pool.status().queue_depth == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let survivor = pool.clone();
    pool.shutdown().await;

    let out = in_flight.await.unwrap().unwrap();
    assert_eq!(out.value["slept_ms"], json!(400), "{:?}", out.value);
    assert!(matches!(
        queued.await.unwrap(),
        Err(PoolError::ShuttingDown)
    ));
    let err = survivor
        .execute("ping", json!({}), CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PoolError::ShuttingDown), "{err:?}");
    assert!(wait_gone(&pids, Duration::from_secs(1)), "{pids:?}");

    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert_eq!(terminated.len(), 1);
    assert_eq!(meta(&terminated[0], "planned"), "true");
    assert_eq!(int(&terminated[0], "total_commands"), 1);
    assert!(int(&terminated[0], "lifetime") >= 400_000_000);
}
