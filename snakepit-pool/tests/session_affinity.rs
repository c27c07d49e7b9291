//! Session affinity with real workers: a session's calls stay on the worker
//! that served its first call; hint falls back to another worker when that
//! one is busy, strict waits and fails naming the session; a SIGKILLed
//! worker ends its sessions; idle sessions expire.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig, PoolError, SessionAffinity};
use snakepit_telemetry::Telemetry;

const LIMIT: Duration = Duration::from_secs(20);

/// Two workers of one call slot each.
fn two(name: &str, affinity: SessionAffinity, ttl: Duration, wait: Duration) -> PoolConfig {
    config(name, 2)
        .concurrency_per_worker(1)
        .sessions(affinity, ttl, wait)
}

async fn start(cfg: PoolConfig) -> (Pool, Recorder, Vec<u32>) {
    start_with(Telemetry::new(), cfg).await
}

async fn start_with(telemetry: Telemetry, cfg: PoolConfig) -> (Pool, Recorder, Vec<u32>) {
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.session.*");
    let pool = Pool::start(telemetry, cfg).await.unwrap();
    let pids = pool.worker_pids();
    (pool, rec, pids)
}

/// The pid of the worker that ran a call of `session`.
async fn pid_in(pool: &Pool, session: &str) -> Result<u32, PoolError> {
    let out = pool
        .execute_in_session(session, "pid", json!({}), CallOptions::default())
        .await?;
    Ok(out.value.as_u64().expect("pid is a number") as u32)
}

/// Runs a `sleep` of `ms` in `session` in the background.
fn hold(pool: &Pool, session: &str, ms: u64) -> tokio::task::JoinHandle<()> {
    let (pool, session) = (pool.clone(), session.to_string());
    tokio::spawn(async move {
        pool.execute_in_session(&session, "sleep", json!({"ms": ms}), CallOptions::default())
            .await
            .unwrap();
    })
}

/// Waits until every call slot of the pool but `free` is taken.
async fn wait_busy(pool: &Pool, busy: usize) {
    let deadline = std::time::Instant::now() + LIMIT;
    while pool.status().in_flight < busy {
        assert!(std::time::Instant::now() < deadline, "calls never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn stop(pool: Pool, pids: Vec<u32>) {
    let all: Vec<u32> = pids.into_iter().chain(pool.worker_pids()).collect();
    pool.shutdown().await;
    assert!(wait_gone(&all, Duration::from_secs(5)), "orphan workers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stays_on_its_worker_and_sessions_spread() {
    let cfg = two(
        "sess",
        SessionAffinity::Hint,
        LIMIT,
        Duration::from_millis(100),
    );
    let telemetry = Telemetry::new();
    let calls = Recorder::attach(&telemetry, "calls", "snakepit.python.call.*");
    let (pool, rec, pids) = start_with(telemetry, cfg).await;

    let a = pid_in(&pool, "a").await.unwrap();
    // While a's worker is busy, b's first call binds b to the other worker.
    let busy = hold(&pool, "a", 500);
    wait_busy(&pool, 1).await;
    let b = pid_in(&pool, "b").await.unwrap();
    assert_ne!(a, b, "b started on the only free worker");
    busy.await.unwrap();
    // Both workers idle: each session goes back to its own worker (without
    // affinity both would go to the first, least loaded, slot).
    for _ in 0..5 {
        assert_eq!(pid_in(&pool, "a").await.unwrap(), a);
        assert_eq!(pid_in(&pool, "b").await.unwrap(), b);
    }

    let created = rec.named("snakepit.pool.session.created");
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(meta(&created[0], "session_id"), "a");
    assert_eq!(meta(&created[1], "session_id"), "b");
    assert_ne!(
        meta(&created[0], "worker_id"),
        meta(&created[1], "worker_id")
    );
    assert_eq!(meta(&created[0], "pool_name"), "sess");
    assert_eq!(int(&created[1], "sessions"), 2);

    // The session id reaches the tool, which keeps state per session.
    for (session, n, pid) in [("a", 1, a), ("a", 2, a), ("b", 1, b), ("a", 3, a)] {
        let out = pool
            .execute_in_session(session, "session_calls", json!({}), CallOptions::default())
            .await
            .unwrap();
        let want = json!({"session_id": session, "calls": n, "pid": pid});
        assert_eq!(out.value, want);
    }
    let err = pool
        .execute("session_calls", json!({}), CallOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no session"), "{err}");
    // The worker's call events carry the session: inline tools (`pid`,
    // events folded from the reply) and thread-pool ones (`session_calls`).
    // Thread-pool tools' events come on the telemetry stream: wait for the
    // 5 calls of session_calls (a 3, b 1, one without a session).
    let of = |name: &str, tool: &str| {
        calls
            .named(name)
            .into_iter()
            .filter(|e| meta(e, "command") == tool)
            .count()
    };
    let deadline = std::time::Instant::now() + LIMIT;
    while of("snakepit.python.call.start", "session_calls") < 5
        || of("snakepit.python.call.stop", "session_calls") < 4
    {
        assert!(std::time::Instant::now() < deadline, "{:?}", calls.all());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for tool in ["pid", "session_calls"] {
        for name in ["snakepit.python.call.start", "snakepit.python.call.stop"] {
            let of_tool: Vec<_> = calls
                .named(name)
                .into_iter()
                .filter(|e| meta(e, "command") == tool)
                .collect();
            assert!(
                !of_tool.is_empty(),
                "no {name} of {tool}: {:?}",
                calls.all()
            );
            let without = of_tool
                .iter()
                .filter(|e| e.meta("session_id").is_none())
                .count();
            // One call of session_calls had no session (it failed).
            let plain = usize::from(tool == "session_calls" && name.ends_with("start"));
            assert_eq!(without, plain, "{of_tool:?}");
            for e in of_tool.iter().filter(|e| e.meta("session_id").is_some()) {
                assert!(["a", "b"].contains(&meta(e, "session_id")), "{e:?}");
            }
        }
    }
    let plain = calls
        .wait_for("snakepit.python.call.exception", 1, LIMIT)
        .await;
    assert_eq!(
        plain.len(),
        1,
        "the call without a session failed: {plain:?}"
    );
    assert!(plain[0].meta("session_id").is_none(), "{:?}", plain[0]);
    // Streaming calls follow their session too.
    let chunks: Vec<_> = pool
        .execute_stream_in_session("b", "stream", json!({"n": 2}), CallOptions::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(chunks.len(), 2);
    assert!(chunks.iter().all(Result::is_ok), "{chunks:?}");

    // Session ids: 1 to 256 bytes, else a clear error.
    let long = "x".repeat(257);
    for bad in [long.as_str(), ""] {
        let err = pid_in(&pool, bad).await.unwrap_err();
        assert!(
            matches!(err, PoolError::InvalidSessionId { max: 256, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("1 to 256 bytes"), "{err}");
    }
    assert!(pid_in(&pool, &"y".repeat(256)).await.is_ok());
    stop(pool, pids).await;
    // A shutdown ends the sessions with the pool: none is reported lost.
    assert!(rec.named("snakepit.pool.session.lost").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hint_runs_elsewhere_when_the_worker_is_busy_and_keeps_the_binding() {
    let cfg = two(
        "hint",
        SessionAffinity::Hint,
        LIMIT,
        Duration::from_millis(100),
    );
    let (pool, rec, pids) = start(cfg).await;

    let home = pid_in(&pool, "s").await.unwrap();
    let busy = hold(&pool, "s", 3000);
    wait_busy(&pool, 1).await;
    let elsewhere = pid_in(&pool, "s").await.unwrap();
    assert_ne!(elsewhere, home, "the fallback ran on the other worker");
    assert!(
        !busy.is_finished(),
        "the fallback did not wait for the long call"
    );
    busy.await.unwrap();
    assert_eq!(pid_in(&pool, "s").await.unwrap(), home, "binding kept");
    assert_eq!(rec.named("snakepit.pool.session.created").len(), 1);
    stop(pool, pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_waits_for_its_worker_then_fails_naming_session_and_worker() {
    let cfg = two("strict", SessionAffinity::Strict, LIMIT, Duration::ZERO)
        .queue_timeout(Duration::from_millis(300));
    let (pool, rec, pids) = start(cfg).await;

    pid_in(&pool, "s").await.unwrap();
    let worker_id = meta(&rec.named("snakepit.pool.session.created")[0], "worker_id").to_string();
    let busy = hold(&pool, "s", 4000);
    wait_busy(&pool, 1).await;
    let err = pid_in(&pool, "s").await.unwrap_err();
    match &err {
        PoolError::SessionBusy {
            session_id,
            worker_id: w,
            waited,
        } => {
            assert_eq!(session_id, "s");
            assert_eq!(w, &worker_id);
            assert!(*waited >= Duration::from_millis(300), "{waited:?}");
        }
        other => panic!("expected SessionBusy, got {other:?}"),
    }
    assert!(err.to_string().contains(&worker_id), "{err}");
    // The other worker was free all along: calls without a session run.
    pool.execute("ping", json!({}), CallOptions::default())
        .await
        .unwrap();
    busy.await.unwrap();
    // A strict call that waits less than queue_timeout gets its worker.
    let busy = hold(&pool, "s", 100);
    wait_busy(&pool, 1).await;
    pid_in(&pool, "s").await.unwrap();
    busy.await.unwrap();
    stop(pool, pids).await;
}

/// Binds session `s`, SIGKILLs its worker and waits for `session.lost`.
async fn kill_bound_worker(pool: &Pool, rec: &Recorder) -> (u32, String) {
    let victim = pid_in(pool, "s").await.unwrap();
    let worker_id = meta(&rec.named("snakepit.pool.session.created")[0], "worker_id").to_string();
    kill9(victim);
    let lost = rec.wait_for("snakepit.pool.session.lost", 1, LIMIT).await;
    assert_eq!(lost.len(), 1, "{:?}", rec.all());
    assert_eq!(meta(&lost[0], "session_id"), "s");
    assert_eq!(meta(&lost[0], "worker_id"), worker_id);
    assert_eq!(int(&lost[0], "calls"), 1);
    (victim, worker_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_session_of_a_killed_worker_fails_once_with_session_lost() {
    let cfg = two("lost", SessionAffinity::Strict, LIMIT, Duration::ZERO);
    let (pool, rec, pids) = start(cfg).await;
    let (victim, worker_id) = kill_bound_worker(&pool, &rec).await;

    let err = pid_in(&pool, "s").await.unwrap_err();
    match &err {
        PoolError::SessionLost {
            session_id,
            worker_id: w,
        } => {
            assert_eq!(session_id, "s");
            assert_eq!(w, &worker_id);
        }
        other => panic!("expected SessionLost, got {other:?}"),
    }
    assert!(err.to_string().contains("start the session again"), "{err}");
    // Forgotten: the next call starts the session anew.
    let again = pid_in(&pool, "s").await.unwrap();
    assert_ne!(again, victim);
    assert_eq!(rec.named("snakepit.pool.session.created").len(), 2);
    stop(pool, pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hint_session_of_a_killed_worker_binds_anew() {
    let cfg = two(
        "relost",
        SessionAffinity::Hint,
        LIMIT,
        Duration::from_millis(100),
    );
    let (pool, rec, pids) = start(cfg).await;
    let (victim, _) = kill_bound_worker(&pool, &rec).await;

    let again = pid_in(&pool, "s").await.unwrap();
    assert_ne!(again, victim);
    let created = rec.named("snakepit.pool.session.created");
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(pid_in(&pool, "s").await.unwrap(), again);
    stop(pool, pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_after_the_ttl() {
    let ttl = Duration::from_millis(200);
    let cfg = two("ttl", SessionAffinity::Strict, ttl, Duration::ZERO);
    let (pool, rec, pids) = start(cfg).await;

    pid_in(&pool, "s").await.unwrap();
    pid_in(&pool, "s").await.unwrap();
    let expired = rec
        .wait_for("snakepit.pool.session.expired", 1, LIMIT)
        .await;
    assert_eq!(expired.len(), 1, "{:?}", rec.all());
    assert_eq!(meta(&expired[0], "session_id"), "s");
    assert_eq!(int(&expired[0], "calls"), 2);
    assert!(int(&expired[0], "idle") >= ttl.as_nanos() as i64);
    // Expired, not lost: the next call simply binds again.
    pid_in(&pool, "s").await.unwrap();
    assert_eq!(rec.named("snakepit.pool.session.created").len(), 2);
    assert!(rec.named("snakepit.pool.session.lost").is_empty());
    stop(pool, pids).await;
}

#[test]
fn session_keys_are_read_and_checked() {
    let cfg = PoolConfig::from_toml_str(
        "adapter = \"a.b:C\"\nsession_affinity = \"strict\"\nsession_ttl = \"5m\"\nsession_wait = \"0s\"\n",
    )
    .unwrap();
    assert_eq!(cfg.session_affinity, SessionAffinity::Strict);
    assert_eq!(cfg.session_ttl, Duration::from_secs(300));
    assert_eq!(cfg.session_wait, Duration::ZERO);
    let defaults = PoolConfig::default();
    assert_eq!(defaults.session_affinity, SessionAffinity::Hint);
    assert_eq!(defaults.session_ttl, Duration::from_secs(1800));
    assert_eq!(defaults.session_wait, Duration::from_millis(100));

    let err = PoolConfig::from_toml_str("adapter = \"a.b:C\"\nsession_affinity = \"sticky\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("session_affinity"), "{err}");
    assert!(err.contains("strict"), "{err}");
    let err = PoolConfig::from_toml_str("adapter = \"a.b:C\"\nsession_ttl = \"0s\"\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("session_ttl"), "{err}");
    assert!(err.contains("1ms"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycled_worker_ends_its_sessions() {
    let cfg = config("recyc", 1).max_calls_per_worker(2).sessions(
        SessionAffinity::Hint,
        LIMIT,
        Duration::from_millis(100),
    );
    let (pool, rec, pids) = start(cfg).await;
    let first = pid_in(&pool, "s").await.unwrap();
    assert_eq!(pid_in(&pool, "s").await.unwrap(), first);
    // Its second call reached the limit: the replacement serves, the old
    // worker stops and its session ends.
    let lost = rec.wait_for("snakepit.pool.session.lost", 1, LIMIT).await;
    assert_eq!(lost.len(), 1, "{:?}", rec.all());
    assert_eq!(int(&lost[0], "calls"), 2);
    let again = pid_in(&pool, "s").await.unwrap();
    assert_ne!(again, first);
    assert_eq!(rec.named("snakepit.pool.session.created").len(), 2);
    stop(pool, pids).await;
}
