//! Spawn, readiness, spawn failures, crash and restart, shutdown: the worker
//! lifecycle events with their measurements and metadata.

mod common;

use std::time::Duration;

use common::*;
use snakepit_pool::{Pool, PoolError};
use snakepit_telemetry::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_emits_spawn_events_and_initialized_then_shutdown_leaves_no_process() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let conn = Recorder::attach(&telemetry, "conn", "snakepit.grpc.connection.*");
    let pool = Pool::start(telemetry.clone(), config("life", 2))
        .await
        .unwrap();

    let started = rec.named("snakepit.pool.worker.spawn_started");
    assert_eq!(started.len(), 2);
    for e in &started {
        assert_eq!(meta(e, "pool_name"), "life");
        assert!(int(e, "system_time") > 1_600_000_000_000_000_000);
    }
    let spawned = rec.named("snakepit.pool.worker.spawned");
    assert_eq!(spawned.len(), 2);
    let mut ids: Vec<&str> = spawned.iter().map(|e| meta(e, "worker_id")).collect();
    ids.sort();
    assert_eq!(ids, ["life_1", "life_2"]);
    let mut pids = pool.worker_pids();
    pids.sort();
    let mut event_pids: Vec<u32> = spawned
        .iter()
        .map(|e| int(e, "python_pid") as u32)
        .collect();
    event_pids.sort();
    assert_eq!(pids, event_pids);
    for e in &spawned {
        assert!(int(e, "duration") > 0);
    }
    let init = rec.named("snakepit.pool.initialized");
    assert_eq!(init.len(), 1);
    assert_eq!(int(&init[0], "worker_count"), 2);
    assert!(int(&init[0], "duration") >= int(&spawned[0], "duration"));
    assert_eq!(meta(&init[0], "pool_name"), "life");
    assert!(pids.iter().all(|&p| !gone(p)));

    let status = pool.status();
    assert_eq!(status.total_workers, 2);
    assert_eq!(status.available_workers, 2);

    pool.shutdown().await;
    assert!(
        wait_gone(&pids, Duration::from_secs(1)),
        "workers left after shutdown: {pids:?}"
    );
    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert_eq!(terminated.len(), 2);
    for e in &terminated {
        assert_eq!(meta(e, "planned"), "true");
        assert_eq!(meta(e, "reason"), "shutdown");
        assert_eq!(meta(e, "pool_name"), "life");
        assert!(int(e, "lifetime") > 0);
        assert!(int(e, "total_commands") >= 0);
    }
    // A planned stop is not a lost connection.
    assert_eq!(conn.named("snakepit.grpc.connection.established").len(), 2);
    assert!(conn.named("snakepit.grpc.connection.lost").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_adapter_fails_startup_with_the_python_traceback() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let cfg = config("badadapter", 1).adapter("snakepit_bridge.adapters.no_such_module:Nope");
    let err = Pool::start(telemetry.clone(), cfg).await.unwrap_err();
    let PoolError::Startup { worker_id, reason } = &err else {
        panic!("expected a startup error, got {err:?}");
    };
    assert_eq!(worker_id, "badadapter_1");
    assert!(reason.contains("exit status 3"), "{reason}");
    assert!(reason.contains("SNAKEPIT_ADAPTER_ERROR"), "{reason}");
    assert!(reason.contains("Traceback"), "{reason}");
    assert!(reason.contains("no_such_module"), "{reason}");

    let failed = rec.named("snakepit.pool.worker.spawn_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(meta(&failed[0], "worker_id"), "badadapter_1");
    assert_eq!(meta(&failed[0], "pool_name"), "badadapter");
    assert!(meta(&failed[0], "reason").contains("Traceback"));
    assert!(int(&failed[0], "duration") > 0);
    assert!(rec.named("snakepit.pool.initialized").is_empty());
    assert!(processes_with("--worker-id badadapter_").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_interpreter_fails_startup_naming_it() {
    let cfg = config("nopython", 1).python("/nonexistent/python3");
    let err = Pool::start(Telemetry::new(), cfg).await.unwrap_err();
    assert!(matches!(err, PoolError::Startup { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/python3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_restarted_with_events() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let pool = Pool::start(telemetry.clone(), config("restart", 2))
        .await
        .unwrap();
    let victim = pool.worker_pids()[0];
    kill9(victim);

    let restarted = rec
        .wait_for("snakepit.pool.worker.restarted", 1, Duration::from_secs(20))
        .await;
    assert_eq!(restarted.len(), 1, "no restart: {:?}", rec.all());
    let r = &restarted[0];
    assert_eq!(int(r, "restart_count"), 1);
    assert!(int(r, "downtime") > 0);
    assert_eq!(meta(r, "pool_name"), "restart");
    let victim_id = meta(r, "worker_id").to_string();

    let terminated = rec.named("snakepit.pool.worker.terminated");
    assert_eq!(terminated.len(), 1);
    let t = &terminated[0];
    assert_eq!(meta(t, "planned"), "false");
    assert_eq!(meta(t, "worker_id"), victim_id);
    assert!(meta(t, "reason").contains("SIGKILL"), "{t:?}");
    assert!(int(t, "lifetime") > 0);
    // spawn_started and spawned again for the restarted worker.
    assert_eq!(rec.named("snakepit.pool.worker.spawned").len(), 3);

    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    assert!(!pids.contains(&victim));
    assert_eq!(pool.status().total_workers, 2);
    pool.shutdown().await;
    assert!(wait_gone(&pids, Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pool_stops_its_workers() {
    let pool = Pool::start(Telemetry::new(), config("dropped", 2))
        .await
        .unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    drop(pool);
    assert!(wait_gone(&pids, Duration::from_secs(3)), "left: {pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_get_env_working_dir_and_a_private_socket_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("envwd", 1)
        .env("SNAKEPIT_TEST_MARKER", "hello-42")
        .working_dir(dir.path());
    let pool = Pool::start(Telemetry::new(), cfg).await.unwrap();
    let pid = pool.worker_pids()[0];

    assert!(procfs::entries(pid, "environ")
        .iter()
        .any(|kv| kv == "SNAKEPIT_TEST_MARKER=hello-42"));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, dir.path().canonicalize().unwrap());

    let args = procfs::cmdline(pid);
    let socket = procfs::listen_socket(pid);
    let socket_dir = socket.parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", socket_dir.display());
    for flag in ["--watch-stdin", "--parent-pid", "--worker-id"] {
        assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
    }
    pool.shutdown().await;
    assert!(!socket_dir.exists(), "socket directory left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_gets_ready_fails_after_the_startup_timeout_and_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("silent-python");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'starting slowly' >&2\nexec sleep 30\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.spawn_failed");
    let cfg = config("silent", 1)
        .python(&script)
        .startup_timeout(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    let err = Pool::start(telemetry, cfg).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    let reason = err.to_string();
    assert!(reason.contains("startup timeout"), "{reason}");
    assert!(reason.contains("starting slowly"), "{reason}");
    assert_eq!(rec.named("snakepit.pool.worker.spawn_failed").len(), 1);
    assert!(processes_with(&script.display().to_string()).is_empty());
}
