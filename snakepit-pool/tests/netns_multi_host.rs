//! Two hosts without a second machine: the workers run in a network
//! namespace of their own ("the worker machine"), reached over a veth pair
//! with private addresses through TCP, TLS and the token; the pool runs in
//! the test's own namespace, where the other end of the veth lives ("the
//! host machine"). That layout needs no `setns` in the test process (tokio
//! runtimes and their threads stay where they are), and the host's end of
//! the link is a device the test can set down and up like a cable pulled
//! and plugged back.
//!
//! Needs root and `ip` (iproute2, installed by `cargo xtask setup`). The
//! namespace, the veth and every process inside are removed at the end,
//! even when the test fails (`NetNs`'s drop).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig, PoolError, WorkerTls};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::netns::NetNs;
use snakepit_testkit::tls::Pki;

const TOKEN: &str = "netns-s3cret";

/// Runs rounds of 8 concurrent short calls until `n` distinct workers ran
/// one (as their folded python events say), within `limit`.
async fn workers_answering(
    pool: &std::sync::Arc<Pool>,
    rec: &Recorder,
    n: usize,
    limit: Duration,
) -> BTreeSet<String> {
    let deadline = Instant::now() + limit;
    let from = rec.all().len();
    let mut seen = BTreeSet::new();
    while seen.len() < n && Instant::now() < deadline {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let p = pool.clone();
                tokio::spawn(async move {
                    p.execute("sleep", json!({"ms": 100}), CallOptions::default())
                        .await
                })
            })
            .collect();
        for c in calls {
            let _ = c.await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = rec.all()[from..]
            .iter()
            .filter(|e| e.name == "snakepit.python.tool.execution.stop")
            .filter(|e| meta(e, "tool") == "sleep")
            .map(|e| meta(e, "worker_id").to_string())
            .collect();
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_in_another_namespace_serve_over_tls_are_lost_with_the_link_and_come_back() {
    let ns = NetNs::create("t", 200);
    let pki = Pki::new("netns");
    let server = pki.server("worker", &["worker.test", &ns.worker_ip]);
    let workers: Vec<WorkerProcess> = ["netns_1", "netns_2"]
        .iter()
        .map(|id| {
            WorkerSpec::new(SHOWCASE, id)
                .wrap(ns.exec_prefix())
                .listen(&format!("{}:0", ns.worker_ip))
                .env("SNAKEPIT_TOKEN", TOKEN)
                .args([
                    "--tls-cert",
                    &server.cert.display().to_string(),
                    "--tls-key",
                    &server.key.display().to_string(),
                ])
                .quiet()
                .start()
        })
        .collect();
    let pids: Vec<u32> = workers.iter().map(|w| w.pid()).collect();
    assert_eq!(ns.pids().len(), 2, "both workers run in the namespace");

    let mut config = PoolConfig::external([])
        .pool_name("netns")
        .startup_timeout(Duration::from_secs(5))
        .heartbeat(Duration::from_millis(200), Duration::from_millis(1500))
        .restart_backoff(Duration::from_millis(100), Duration::from_millis(500), 50);
    for (i, w) in workers.iter().enumerate() {
        let mut tls = WorkerTls::new(pki.ca());
        // One by the IP address in its certificate, one by its DNS name.
        if i == 1 {
            tls.server_name = Some("worker.test".to_string());
        }
        config = config.external_worker_tls(&w.ready.listen, Some(TOKEN.to_string()), tls);
    }
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.*");
    let pool = std::sync::Arc::new(Pool::start(telemetry.clone(), config).await.unwrap());

    // Calls reach both workers across the link; their python events come
    // back folded.
    let seen = workers_answering(&pool, &rec, 2, Duration::from_secs(20)).await;
    assert_eq!(seen, BTreeSet::from(["netns_1".into(), "netns_2".into()]));
    pool.execute("emit_events", json!({"count": 10}), CallOptions::default())
        .await
        .unwrap();
    let folded = rec
        .wait_for(
            "snakepit.python.tool.execution.stop",
            10,
            Duration::from_secs(20),
        )
        .await;
    assert!(folded.len() >= 10, "{} python events folded", folded.len());
    assert!(folded
        .iter()
        .all(|e| meta(e, "worker_id").starts_with("netns_")));

    // Pull the cable: a call in flight fails naming its worker, and both
    // workers are seen as lost.
    let p = pool.clone();
    let call = tokio::spawn(async move {
        p.execute("sleep", json!({"ms": 30_000}), CallOptions::default())
            .await
    });
    while pool.status().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ns.link(false);
    match tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call in flight fails once its worker is lost")
        .unwrap()
    {
        Err(PoolError::WorkerUnhealthy { worker_id, reason })
        | Err(PoolError::WorkerCrashed { worker_id, reason }) => {
            assert!(seen.contains(&worker_id), "{worker_id}: {reason}");
        }
        other => panic!("expected the call to fail naming its worker, got {other:?}"),
    }
    let lost = rec
        .wait_for(
            "snakepit.pool.worker.terminated",
            2,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        lost.len(),
        2,
        "{:?}",
        rec.named("snakepit.pool.worker.terminated")
    );
    assert!(lost.iter().all(|e| meta(e, "planned") == "false"));
    // A link down fails no socket call at once: the heartbeat sees it.
    let unhealthy = rec.named("snakepit.pool.worker.unhealthy");
    assert_eq!(unhealthy.len(), 2);
    assert!(unhealthy
        .iter()
        .all(|e| meta(e, "reason") == "heartbeat_timeout"));

    // Plug it back: both reconnect and serve again.
    ns.link(true);
    let restarted = rec
        .wait_for("snakepit.pool.worker.restarted", 2, Duration::from_secs(60))
        .await;
    assert_eq!(restarted.len(), 2, "reconnected after the link came back");
    let seen = workers_answering(&pool, &rec, 2, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 2, "{seen:?}");

    let Ok(pool) = std::sync::Arc::try_unwrap(pool) else {
        panic!("another handle to the pool is left");
    };
    pool.shutdown().await;
    drop(workers);
    assert!(wait_gone(&pids, Duration::from_secs(10)), "{pids:?}");
    let name = ns.name.clone();
    drop(ns);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&name),
        "namespace {name} left behind"
    );
}
