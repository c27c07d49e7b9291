//! Several pools in one process, tagged by `pool_name`; the telemetry policy
//! reaches restarted workers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool};
use snakepit_telemetry::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_in_one_process_tag_their_events() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let python_rec = Recorder::attach(&telemetry, "py", "snakepit.python.call.stop");
    let (a, b) = tokio::join!(
        Pool::start(telemetry.clone(), config("alpha", 1)),
        Pool::start(telemetry.clone(), config("beta", 2)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    a.execute("ping", json!({}), CallOptions::default())
        .await
        .unwrap();
    b.execute("ping", json!({}), CallOptions::default())
        .await
        .unwrap();

    let init = rec.named("snakepit.pool.initialized");
    let mut names: Vec<(&str, i64)> = init
        .iter()
        .map(|e| (meta(e, "pool_name"), int(e, "worker_count")))
        .collect();
    names.sort();
    assert_eq!(names, [("alpha", 1), ("beta", 2)]);
    let mut ids: Vec<String> = rec
        .named("snakepit.pool.worker.spawned")
        .iter()
        .map(|e| format!("{}/{}", meta(e, "pool_name"), meta(e, "worker_id")))
        .collect();
    ids.sort();
    assert_eq!(ids, ["alpha/alpha_1", "beta/beta_1", "beta/beta_2"]);
    assert_eq!(a.worker_ids(), ["alpha_1"]);

    // Python events folded from each pool's workers carry its pool name.
    let stops = python_rec
        .wait_for("snakepit.python.call.stop", 2, Duration::from_secs(5))
        .await;
    let mut pools: Vec<&str> = stops.iter().map(|e| meta(e, "pool_name")).collect();
    pools.sort();
    pools.dedup();
    assert_eq!(pools, ["alpha", "beta"]);

    a.shutdown().await;
    assert_eq!(b.status().total_workers, 2);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_gets_the_current_policy() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.restarted");
    let drops = Recorder::attach(&telemetry, "drops", "snakepit.telemetry.events.dropped");
    let stops = Recorder::attach(&telemetry, "stops", "snakepit.python.call.stop");
    let pool = Pool::start(telemetry.clone(), config("policy", 1))
        .await
        .unwrap();
    // Changed after start, then the worker is replaced.
    telemetry
        .control()
        .set_filters(&[], &["python.call.*"])
        .unwrap();
    kill9(pool.worker_pids()[0]);
    rec.wait_for("snakepit.pool.worker.restarted", 1, Duration::from_secs(20))
        .await;
    for _ in 0..5 {
        pool.execute("ping", json!({}), CallOptions::default())
            .await
            .unwrap();
    }
    // The new worker filtered the events itself (it counts them as dropped
    // for reason `filtered`), so the policy reached it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let filtered = loop {
        let n: i64 = drops
            .all()
            .iter()
            .filter(|e| meta(e, "reason") == "filtered" && meta(e, "where") == "worker")
            .map(|e| int(e, "count"))
            .sum();
        if n >= 5 || std::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        filtered >= 5,
        "worker-side filtered drops: {filtered}; {:?}",
        drops.all()
    );
    assert!(stops.all().is_empty());
    pool.shutdown().await;
}
