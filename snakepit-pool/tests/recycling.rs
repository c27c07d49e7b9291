//! Workers are recycled by calls served, resident memory and age: the
//! replacement starts first, the old worker finishes its calls in flight and
//! stops, `recycled` names the reason, and no call fails (every result is
//! checked).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool};
use snakepit_telemetry::Telemetry;

fn spawned_pids(rec: &Recorder) -> Vec<u32> {
    rec.named("snakepit.pool.worker.spawned")
        .iter()
        .map(|e| int(e, "python_pid") as u32)
        .collect()
}

/// VmRSS of a process in bytes.
fn rss(pid: u32) -> u64 {
    snakepit_testkit::procfs::rss_kb(Some(pid)) * 1024
}

/// `calls` calls from each of `tasks` tasks, `pause` apart, mostly an
/// inline tool and every fourth a sync tool that sleeps (so calls are in
/// flight when a worker retires); panics on any failed or wrong result.
/// Returns how many succeeded.
async fn hammer(pool: &Arc<Pool>, tasks: usize, calls: usize, pause: Duration) -> usize {
    let runs = (0..tasks).map(|t| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..calls {
                if i % 4 == 3 {
                    let out = pool
                        .execute("sleep", json!({"ms": 20}), CallOptions::default())
                        .await
                        .unwrap_or_else(|e| panic!("task {t} call {i}: {e}"));
                    assert_eq!(out.value, json!({"slept_ms": 20}));
                } else {
                    let out = pool
                        .execute("add", json!({"a": t, "b": i}), CallOptions::default())
                        .await
                        .unwrap_or_else(|e| panic!("task {t} call {i}: {e}"));
                    assert_eq!(out.value, json!(t + i));
                }
                tokio::time::sleep(pause).await;
            }
            calls
        })
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_recycled_after_max_calls_without_failing_a_call() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let cfg = config("maxcalls", 2)
        .max_calls_per_worker(40)
        .queue_timeout(Duration::from_secs(60));
    let pool = Arc::new(Pool::start(telemetry.clone(), cfg).await.unwrap());

    let done = hammer(&pool, 6, 60, Duration::from_millis(50)).await;
    assert_eq!(done, 360);

    // 360 calls at most ~40 per worker: several recycles, each named.
    let recycled = rec.named("snakepit.pool.worker.recycled");
    let per_worker: Vec<i64> = recycled.iter().map(|e| int(e, "total_commands")).collect();
    eprintln!("max_calls_per_worker 40: recycled at {per_worker:?} calls");
    assert!(recycled.len() >= 2, "only {} recycled", recycled.len());
    for e in &recycled {
        assert_eq!(meta(e, "reason"), "max_calls");
        assert!(int(e, "total_commands") >= 40);
        assert!(meta(e, "detail").contains("max_calls_per_worker 40"));
    }
    // Recycling is not a crash: nothing restarted, nothing unplanned.
    assert!(rec.named("snakepit.pool.worker.restarted").is_empty());
    // Each recycled worker stops once its replacement is up.
    let by_recycling = || {
        rec.named("snakepit.pool.worker.terminated")
            .iter()
            .filter(|e| meta(e, "reason") == "recycled: max_calls")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while by_recycling() < recycled.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(by_recycling(), recycled.len());

    Arc::try_unwrap(pool).unwrap().shutdown().await;
    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert!(terminated.iter().all(|e| meta(e, "planned") == "true"));
    let served_each: Vec<i64> = terminated
        .iter()
        .map(|e| int(e, "total_commands"))
        .collect();
    eprintln!("max_calls_per_worker 40: calls served per worker {served_each:?}");
    // Every call was served by exactly one worker.
    let served: i64 = terminated.iter().map(|e| int(e, "total_commands")).sum();
    assert_eq!(served, 360);
    let pids = spawned_pids(&rec);
    assert_eq!(pids.len(), 2 + recycled.len());
    assert!(wait_gone(&pids, Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_max_worker_rss_is_recycled_and_its_memory_freed() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let limit: u64 = 200 * 1024 * 1024;
    let cfg = config("maxrss", 1)
        .max_worker_rss(limit)
        .queue_timeout(Duration::from_secs(60));
    let pool = Arc::new(Pool::start(telemetry.clone(), cfg).await.unwrap());
    let fat = pool.worker_pids()[0];
    assert!(rss(fat) < limit);

    // Calls keep coming while the worker grows and is replaced.
    let background = {
        let pool = pool.clone();
        tokio::spawn(async move { hammer(&pool, 2, 150, Duration::from_millis(5)).await })
    };
    let out = pool
        .execute("hold_memory", json!({"mb": 300}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!({"held_mb": 300}));

    let recycled = rec
        .wait_for("snakepit.pool.worker.recycled", 1, Duration::from_secs(20))
        .await;
    assert_eq!(recycled.len(), 1, "{:?}", rec.all());
    assert_eq!(meta(&recycled[0], "worker_id"), "maxrss_1");
    assert_eq!(meta(&recycled[0], "reason"), "max_rss");
    assert!(int(&recycled[0], "rss_bytes") as u64 >= limit);
    assert_eq!(background.await.unwrap(), 300);

    // The old worker and its 300 MB are gone; the new one is small.
    rec.wait_for(
        "snakepit.pool.worker.terminated",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert!(wait_gone(&[fat], Duration::from_secs(5)));
    let fresh = pool.worker_pids()[0];
    assert_ne!(fresh, fat);
    let fresh_rss = rss(fresh);
    eprintln!("max_worker_rss: replacement uses {} MiB", fresh_rss >> 20);
    assert!(fresh_rss < limit);
    let out = pool
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));

    Arc::try_unwrap(pool).unwrap().shutdown().await;
    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert_eq!(meta(&terminated[0], "reason"), "recycled: max_rss");
    assert!(rec.named("snakepit.pool.worker.restarted").is_empty());
    assert!(wait_gone(&spawned_pids(&rec), Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_older_than_max_worker_age_is_recycled() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let cfg = config("maxage", 1).max_worker_age(Duration::from_secs(2));
    let pool = Pool::start(telemetry.clone(), cfg).await.unwrap();
    let first = pool.worker_pids()[0];
    let t0 = Instant::now();
    let recycled = rec
        .wait_for("snakepit.pool.worker.recycled", 1, Duration::from_secs(20))
        .await;
    assert!(!recycled.is_empty());
    assert_eq!(meta(&recycled[0], "reason"), "max_age");
    assert!(int(&recycled[0], "lifetime") >= 2_000_000_000);
    assert!(t0.elapsed() < Duration::from_secs(20));
    rec.wait_for(
        "snakepit.pool.worker.terminated",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert!(wait_gone(&[first], Duration::from_secs(5)));
    let out = pool
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));
    pool.shutdown().await;
    assert!(wait_gone(&spawned_pids(&rec), Duration::from_secs(5)));
}
