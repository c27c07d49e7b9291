//! A pool of external workers (TCP plus token): the same telemetry, calls,
//! connection loss and recovery.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig, PoolError};
use snakepit_telemetry::Telemetry;

/// A worker listening on TCP with a token, as someone else would run it.
struct External {
    process: WorkerProcess,
    address: String,
}

impl External {
    fn start(listen: &str, worker_id: &str) -> External {
        let process = WorkerSpec::new(SHOWCASE, worker_id)
            .listen(listen)
            .env("SNAKEPIT_TOKEN", "s3cret")
            .quiet()
            .start();
        let address = process.ready.listen.clone();
        External { process, address }
    }

    fn kill(&mut self) {
        self.process.kill();
    }
}

fn external_config(name: &str, address: &str, token: &str) -> PoolConfig {
    PoolConfig::external([])
        .pool_name(name)
        .external_worker(address, Some(token.to_string()))
        .startup_timeout(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(50), Duration::from_millis(200), 50)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_worker_serves_calls_and_recovers_after_connection_loss() {
    let mut worker = External::start("127.0.0.1:0", "ext_1");
    let address = worker.address.clone();
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let pool = Pool::start(
        telemetry.clone(),
        external_config("ext", &address, "s3cret"),
    )
    .await
    .unwrap();
    assert!(pool.worker_pids().is_empty());

    let spawned = rec.named("snakepit.pool.worker.spawned");
    assert_eq!(spawned.len(), 1);
    assert_eq!(meta(&spawned[0], "worker_id"), "ext_1");
    assert_eq!(meta(&spawned[0], "pool_name"), "ext");
    assert_eq!(
        int(&rec.named("snakepit.pool.initialized")[0], "worker_count"),
        1
    );

    let out = pool
        .execute("add", json!({"a": 20, "b": 22}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(42));

    // The worker goes away: the pool notices, then a new one on the same
    // address is picked up again.
    worker.kill();
    let terminated = rec
        .wait_for(
            "snakepit.pool.worker.terminated",
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(terminated.len(), 1, "{:?}", rec.all());
    assert_eq!(meta(&terminated[0], "reason"), "connection_lost");
    assert_eq!(meta(&terminated[0], "planned"), "false");
    assert_eq!(int(&terminated[0], "total_commands"), 1);
    assert_eq!(pool.status().total_workers, 0);

    let _again = External::start(&address, "ext_1");
    let restarted = rec
        .wait_for("snakepit.pool.worker.restarted", 1, Duration::from_secs(15))
        .await;
    assert_eq!(restarted.len(), 1, "{:?}", rec.all());
    assert_eq!(meta(&restarted[0], "worker_id"), "ext_1");
    assert!(int(&restarted[0], "downtime") > 0);
    let out = pool
        .execute("add", json!({"a": 1, "b": 1}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(2));
    pool.shutdown().await;
    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert_eq!(meta(terminated.last().unwrap(), "planned"), "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_fails_startup_with_spawn_failed() {
    let worker = External::start("127.0.0.1:0", "ext_1");
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.spawn_failed");
    let err = Pool::start(
        telemetry,
        external_config("badtoken", &worker.address, "wrong"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PoolError::Startup { .. }), "{err:?}");
    assert!(err.to_string().contains(&worker.address), "{err}");
    let failed = rec.named("snakepit.pool.worker.spawn_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(meta(&failed[0], "worker_id"), "badtoken_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_external_worker_is_disconnected_as_unhealthy_and_reconnected_when_back() {
    let worker = External::start("127.0.0.1:0", "ext_1");
    let pid = worker.process.pid();
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let cfg = external_config("exthb", &worker.address, "s3cret")
        .heartbeat(Duration::from_millis(200), Duration::from_secs(2));
    let pool = std::sync::Arc::new(Pool::start(telemetry.clone(), cfg).await.unwrap());
    let p = pool.clone();
    let call = tokio::spawn(async move {
        p.execute("sleep", json!({"ms": 20_000}), CallOptions::default())
            .await
    });
    while pool.status().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let unhealthy = rec
        .wait_for("snakepit.pool.worker.unhealthy", 1, Duration::from_secs(20))
        .await;
    assert_eq!(unhealthy.len(), 1);
    assert_eq!(meta(&unhealthy[0], "reason"), "heartbeat_timeout");
    // Not our process to kill: the pool lets go of the connection, and the
    // call learns why.
    match tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap()
    {
        Err(PoolError::WorkerUnhealthy { worker_id, reason }) => {
            assert_eq!(worker_id, "exthb_1");
            assert!(reason.starts_with("heartbeat_timeout"), "{reason}");
        }
        other => panic!("expected WorkerUnhealthy, got {other:?}"),
    }
    assert!(!gone(pid));
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    rec.wait_for("snakepit.pool.worker.restarted", 1, Duration::from_secs(30))
        .await;
    let out = pool
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));
    std::sync::Arc::try_unwrap(pool).unwrap().shutdown().await;
    assert!(rec.named("snakepit.pool.worker.abandoned").is_empty());
}
