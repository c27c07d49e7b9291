//! Runtime control of one worker (`telemetry.control().worker(id)`):
//! sampling, toggle and filters pushed to that worker alone, on top of the
//! pool-wide policy, and kept across its restart. Real pool, real workers:
//! which worker an event came from is its `worker_id`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool};
use snakepit_telemetry::Telemetry;

const TOOL_STOP: &str = "snakepit.python.tool.execution.stop";
const CALL_STOP: &str = "snakepit.python.call.stop";

/// Runs `n` calls at once (so both workers take some) and waits until the
/// worker events they produce have had time to arrive.
async fn calls(pool: &Arc<Pool>, n: usize) {
    let calls = (0..n).map(|_| {
        let p = pool.clone();
        tokio::spawn(async move {
            p.execute("sleep", json!({"ms": 50}), CallOptions::default())
                .await
                .unwrap()
        })
    });
    // Spawned all at once (collected), then awaited.
    let calls: Vec<_> = calls.collect();
    for c in calls {
        c.await.unwrap();
    }
    // Past the worker's telemetry flush (a few ms) with room for a loaded
    // machine; events of these calls are counted after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// How many events named `name` each worker sent since `from`.
fn per_worker(rec: &Recorder, name: &str, from: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in rec.all().into_iter().skip(from).filter(|e| e.name == name) {
        *out.entry(meta(&e, "worker_id").to_string()).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workers_sampling_toggle_and_filters_apply_to_it_alone_and_survive_its_restart() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.python.*");
    let host = Recorder::attach(&telemetry, "host", "snakepit.grpc.call.stop");
    let lifecycle = Recorder::attach(&telemetry, "life", "snakepit.pool.worker.*");
    let pool = Arc::new(
        Pool::start(telemetry.clone(), config("pw", 2))
            .await
            .unwrap(),
    );
    let control = telemetry.control();

    // Pool-wide: nothing sampled. Worker 1 alone: everything.
    control.set_sampling_rate(0.0).unwrap();
    control.worker("pw_1").set_sampling_rate(1.0).unwrap();
    assert_eq!(telemetry.policy_for_worker("pw_1").sampling_rate, 1.0);
    assert_eq!(telemetry.policy_for_worker("pw_2").sampling_rate, 0.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = rec.all().len();
    calls(&pool, 8).await;
    let seen = per_worker(&rec, TOOL_STOP, from);
    assert!(seen.get("pw_1").copied().unwrap_or(0) > 0, "{seen:?}");
    assert_eq!(seen.get("pw_2"), None, "{seen:?}");
    let seen = per_worker(&rec, CALL_STOP, from);
    assert!(seen.get("pw_1").copied().unwrap_or(0) > 0, "{seen:?}");
    assert_eq!(seen.get("pw_2"), None, "{seen:?}");

    // Pool-wide: everything. Worker 2 switched off; worker 1 denies tool
    // events (its call events still pass).
    control.set_sampling_rate(1.0).unwrap();
    control.worker("pw_2").set_enabled(false);
    control
        .worker("pw_1")
        .set_filters(&[], &["python.tool.*"])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = rec.all().len();
    calls(&pool, 8).await;
    assert_eq!(per_worker(&rec, TOOL_STOP, from), BTreeMap::new());
    let seen = per_worker(&rec, CALL_STOP, from);
    assert!(seen.get("pw_1").copied().unwrap_or(0) > 0, "{seen:?}");
    assert_eq!(seen.get("pw_2"), None, "{seen:?}");

    // Worker 2 is killed and replaced: the replacement runs its policy.
    let victim = pool.worker_pids()[1];
    kill9(victim);
    let restarted = lifecycle
        .wait_for("snakepit.pool.worker.restarted", 1, Duration::from_secs(30))
        .await;
    assert_eq!(meta(&restarted[0], "worker_id"), "pw_2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = rec.all().len();
    calls(&pool, 8).await;
    let seen = per_worker(&rec, CALL_STOP, from);
    assert_eq!(
        seen.get("pw_2"),
        None,
        "still off after the restart: {seen:?}"
    );
    assert!(seen.get("pw_1").copied().unwrap_or(0) > 0, "{seen:?}");

    // Reset: both follow the pool-wide policy again.
    control.worker("pw_1").reset();
    control.worker("pw_2").reset();
    assert!(!telemetry.has_worker_policy("pw_1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = rec.all().len();
    calls(&pool, 8).await;
    let seen = per_worker(&rec, TOOL_STOP, from);
    assert!(
        seen.get("pw_1").copied().unwrap_or(0) > 0 && seen.get("pw_2").copied().unwrap_or(0) > 0,
        "{seen:?} {:?}",
        per_worker(&host, "snakepit.grpc.call.stop", 0)
    );

    let pids: Vec<u32> = lifecycle
        .named("snakepit.pool.worker.spawned")
        .iter()
        .map(|e| int(e, "python_pid") as u32)
        .collect();
    Arc::try_unwrap(pool).unwrap().shutdown().await;
    assert!(wait_gone(&pids, Duration::from_secs(5)));
}

#[test]
fn bad_values_are_refused_and_change_nothing() {
    let telemetry = Telemetry::new();
    let w = telemetry.control().worker("w_1");
    let err = w.set_sampling_rate(1.5).unwrap_err();
    assert!(err.to_string().contains("1.5"), "{err}");
    let err = w.set_filters(&["python.[*"], &[]).unwrap_err();
    assert!(err.to_string().contains("python.[*"), "{err}");
    assert!(!telemetry.has_worker_policy("w_1"));
    w.set_pattern_rate("python.*", 0.5).unwrap();
    let p = telemetry.worker_policy("w_1").unwrap();
    assert_eq!(p.pattern_rates.len(), 1);
    assert_eq!(p.pattern_rates[0].rate, 0.5);
}
