//! `start_method = "template"`: workers forked from the pool's preloaded
//! template process, restarted from it, the template itself restarted
//! (`snakepit.pool.template.restarted`), the fork-safety rules checked on
//! real processes, and no orphan when the host is killed with SIGKILL.
//!
//! The host of the orphan test is this test binary, re-run in a helper mode
//! (env `SNAKEPIT_TEMPLATE_HOST_HELPER=1`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use snakepit_pool::{CallOptions, Pool, PoolConfig, PoolError, StartMethod};
use snakepit_telemetry::Telemetry;

const PRELOADED: &str = "snakepit_bridge.adapters.preloaded:PreloadedAdapter";
const HELPER_ENV: &str = "SNAKEPIT_TEMPLATE_HOST_HELPER";

/// A template pool of the preloaded adapter, one call at a time per worker.
fn template_config(pool_name: &str, workers: usize) -> PoolConfig {
    config(pool_name, workers)
        .adapter(PRELOADED)
        .start_method(StartMethod::Template)
        .concurrency_per_worker(1)
}

/// The parent pid of `pid` (`/proc/<pid>/stat`).
fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The threads of `pid` (`/proc/<pid>/task`).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// `identity` from every worker at once: with one call per worker, the
/// calls land on distinct workers. Sorted by pid.
async fn identities(pool: &Pool, n: usize) -> Vec<Value> {
    let calls =
        (0..n).map(|_| pool.execute("identity", json!({"hold_ms": 300}), CallOptions::default()));
    let mut out: Vec<Value> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().value)
        .collect();
    out.sort_by_key(|v| v["pid"].as_u64());
    out
}

/// The pids that answer `identity` from every worker at once, sorted.
async fn serving_pids(pool: &Pool, n: usize) -> Vec<u32> {
    identities(pool, n)
        .await
        .iter()
        .map(|v| v["pid"].as_u64().unwrap() as u32)
        .collect()
}

/// Waits until the pool has `n` live workers other than `old`.
async fn wait_replaced(pool: &Pool, n: usize, old: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = pool.worker_pids();
        if pids.len() == n && !pids.contains(&old) {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "no replacement for {old}: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Shuts `pool` down and checks that its workers, its template and the
/// processes in `also` are all gone.
async fn shutdown_leaving_nothing(pool: Pool, also: &[u32]) {
    let mut all = pool.worker_pids();
    all.extend(pool.template_pid().await);
    all.extend_from_slice(also);
    pool.shutdown().await;
    assert!(
        wait_gone(&all, Duration::from_secs(5)),
        "processes left after shutdown: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_forked_from_the_template_and_restarted_from_it() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let pool = Pool::start(telemetry.clone(), template_config("tpl", 2))
        .await
        .unwrap();
    let template = pool.template_pid().await.expect("a template process");
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    for &pid in &pids {
        assert_eq!(
            ppid(pid),
            template,
            "worker {pid} is not the template's child"
        );
    }
    let spawned = rec.named("snakepit.pool.worker.spawned");
    assert_eq!(spawned.len(), 2);
    for e in &spawned {
        assert_eq!(meta(e, "start_method"), "template");
    }
    // Every worker serves its own process.
    let mut expected = pids.clone();
    expected.sort();
    assert_eq!(serving_pids(&pool, 2).await, expected);

    // A crashed worker is replaced by a fork of the same template.
    kill9(pids[0]);
    let after = wait_replaced(&pool, 2, pids[0]).await;
    let new = *after.iter().find(|p| !pids.contains(p)).unwrap();
    assert_eq!(ppid(new), template);
    assert_eq!(pool.template_pid().await, Some(template));
    rec.wait_for("snakepit.pool.worker.restarted", 1, Duration::from_secs(10))
        .await;
    let ids = identities(&pool, 2).await;
    assert!(ids
        .iter()
        .any(|v| v["pid"].as_u64() == Some(u64::from(new))));

    let mut all = after;
    all.push(template);
    shutdown_leaving_nothing(pool, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_template_is_restarted_and_the_workers_keep_serving() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.template.*");
    let pool = Pool::start(telemetry.clone(), template_config("tplre", 2))
        .await
        .unwrap();
    let first = pool.template_pid().await.unwrap();
    let pids = pool.worker_pids();

    kill9(first);
    let restarted = rec
        .wait_for(
            "snakepit.pool.template.restarted",
            1,
            Duration::from_secs(20),
        )
        .await;
    let e = &restarted[0];
    assert_eq!(meta(e, "pool_name"), "tplre");
    assert!(
        meta(e, "reason").contains("SIGKILL"),
        "{}",
        meta(e, "reason")
    );
    let second = int(e, "python_pid") as u32;
    assert_ne!(second, first);
    assert!(int(e, "duration") > 0);
    assert_eq!(pool.template_pid().await, Some(second));
    assert!(gone(first));

    // The workers forked by the first template still serve.
    let mut expected = pids.clone();
    expected.sort();
    assert_eq!(serving_pids(&pool, 2).await, expected);

    // A replacement comes from the new template.
    kill9(pids[1]);
    let after = wait_replaced(&pool, 2, pids[1]).await;
    let new = *after.iter().find(|p| !pids.contains(p)).unwrap();
    assert_eq!(ppid(new), second);

    let mut all = after;
    all.push(second);
    shutdown_leaving_nothing(pool, &all).await;
}

/// Does `pid` have a shared object whose path contains `name` mapped
/// (`/proc/<pid>/maps`)?
fn maps_library(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .any(|l| l.contains(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_loads_grpc_only_for_workers_that_serve_with_grpc_aio() {
    // Workers on the pool's Unix sockets serve every RPC natively: the
    // template preloads the native module, not grpc.
    let pool = Pool::start(Telemetry::new(), template_config("tplnat", 1))
        .await
        .unwrap();
    let template = pool.template_pid().await.unwrap();
    assert!(
        maps_library(template, "_native"),
        "native module not preloaded"
    );
    assert!(
        !maps_library(template, "cygrpc"),
        "grpc loaded in the template"
    );
    let worker = pool.worker_pids()[0];
    assert!(!maps_library(worker, "cygrpc"), "grpc loaded in the worker");
    assert_eq!(serving_pids(&pool, 1).await, vec![worker]);
    shutdown_leaving_nothing(pool, &[]).await;

    // With the native server off, grpc.aio serves: grpc is imported in the
    // template (which still runs no thread) and shared by its forks.
    let cfg = template_config("tplaio", 1).env("SNAKEPIT_NATIVE_CALLS", "0");
    let pool = Pool::start(Telemetry::new(), cfg).await.unwrap();
    let template = pool.template_pid().await.unwrap();
    assert!(maps_library(template, "cygrpc"), "grpc not preloaded");
    assert_eq!(threads(template), 1, "the template runs threads");
    let worker = pool.worker_pids()[0];
    assert_eq!(serving_pids(&pool, 1).await, vec![worker]);
    shutdown_leaving_nothing(pool, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_runs_one_thread_and_refuses_to_fork_with_another() {
    let pool = Pool::start(Telemetry::new(), template_config("tplthr", 1))
        .await
        .unwrap();
    let template = pool.template_pid().await.unwrap();
    assert_eq!(threads(template), 1, "the template runs threads");
    shutdown_leaving_nothing(pool, &[]).await;

    let cfg = template_config("tplthr2", 1).env("SNAKEPIT_PRELOAD_THREAD", "model-loader");
    let err = Pool::start(Telemetry::new(), cfg).await.unwrap_err();
    let PoolError::Startup { reason, .. } = &err else {
        panic!("expected a startup error, got {err:?}");
    };
    assert!(reason.contains("model-loader"), "{reason}");
    assert!(reason.contains("threads"), "{reason}");
    // The refused template is gone (its control socket is in the pool's
    // directory, named after the pool).
    let left = processes_with("-tplthr2-");
    assert!(wait_gone(&left, Duration::from_secs(5)), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_workers_share_no_descriptor_socket_random_stream_or_ids() {
    let kept = tempfile::NamedTempFile::new().unwrap();
    let kept_path = kept.path().to_string_lossy().into_owned();
    let cfg = template_config("tplfd", 2).env("SNAKEPIT_PRELOAD_OPEN", &kept_path);
    let pool = Pool::start(Telemetry::new(), cfg).await.unwrap();
    let template = pool.template_pid().await.unwrap();
    // The template holds the file open; no worker inherited it.
    let links = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        links(template).contains(&kept_path),
        "{:?}",
        links(template)
    );
    let pids = pool.worker_pids();
    for &pid in &pids {
        let fds = links(pid);
        assert!(
            !fds.contains(&kept_path),
            "worker {pid} inherited {kept_path}: {fds:?}"
        );
        for fd in 0..3 {
            let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
            assert!(
                link.to_string_lossy().starts_with("pipe:"),
                "fd {fd} of {pid} is {link:?}"
            );
        }
    }
    // The three pipes of each worker are its own.
    let pipes = |pid: u32| -> BTreeSet<String> {
        (0..3)
            .map(|fd| {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    assert!(pipes(pids[0]).is_disjoint(&pipes(pids[1])));

    let a = identities(&pool, 2).await;
    let b = identities(&pool, 2).await;
    let (w1, w2) = (&a[0], &a[1]);
    assert_ne!(w1["pid"], w2["pid"]);
    for key in ["random", "correlation_id", "span_id", "trace_prefix"] {
        assert_ne!(w1[key], w2[key], "both workers drew the same {key}");
    }
    // Each worker's own sockets: distinct listen paths in the pool's dir.
    let sockets = pool.describe().await;
    let addresses: BTreeSet<String> = sockets
        .into_iter()
        .map(|d| d.unwrap().call_address)
        .collect();
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    // A random stream, not a repeated value.
    assert_ne!(a[0]["random"], b[0]["random"]);

    shutdown_leaving_nothing(pool, &pids).await;
}

/// Only does something when run as the helper: a host with a template pool
/// that prints the pids of its template and workers, then waits to be
/// killed.
#[test]
fn template_host_helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = Pool::start(Telemetry::new(), template_config("tplorphans", 2))
            .await
            .unwrap();
        let mut pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
        pids.push(pool.template_pid().await.unwrap().to_string());
        println!("PIDS {}", pids.join(" "));
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(pool);
    });
}

#[test]
fn template_and_workers_exit_when_the_host_is_killed_with_sigkill() {
    if std::env::var_os(HELPER_ENV).is_some() {
        return;
    }
    let mut host = child_host("template_host_helper", HELPER_ENV);
    let pids = pids_after(&mut host, "PIDS ");
    assert_eq!(pids.len(), 3, "the helper printed no pids");
    assert!(pids.iter().all(|&p| !gone(p)));

    kill9(host.id());
    host.wait().unwrap();
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "template or workers still alive 5 s after the host was killed: {pids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_template_pool_stops_the_template_and_its_workers() {
    let pool = Pool::start(Telemetry::new(), template_config("tpldrop", 2))
        .await
        .unwrap();
    let mut pids = pool.worker_pids();
    pids.push(pool.template_pid().await.unwrap());
    drop(pool);
    assert!(wait_gone(&pids, Duration::from_secs(5)), "left: {pids:?}");
}

#[test]
fn start_method_is_read_from_toml_and_a_bad_one_is_named() {
    let cfg =
        PoolConfig::from_toml_str("adapter = \"a.b:C\"\nstart_method = \"template\"\n").unwrap();
    assert_eq!(cfg.start_method, StartMethod::Template);
    assert_eq!(
        PoolConfig::from_toml_str("adapter = \"a.b:C\"\n")
            .unwrap()
            .start_method,
        StartMethod::Spawn
    );
    let err = PoolConfig::from_toml_str("adapter = \"a.b:C\"\nstart_method = \"zygote\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("start_method"), "{err}");
    assert!(err.contains("zygote") || err.contains("template"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycled_worker_is_replaced_by_a_fork_of_the_template() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let cfg = template_config("tplrecycle", 1).max_calls_per_worker(2);
    let pool = Pool::start(telemetry.clone(), cfg).await.unwrap();
    let template = pool.template_pid().await.unwrap();
    let first = pool.worker_pids()[0];
    for _ in 0..3 {
        pool.execute("ping", json!({}), CallOptions::default())
            .await
            .unwrap();
    }
    rec.wait_for("snakepit.pool.worker.recycled", 1, Duration::from_secs(20))
        .await;
    let after = wait_replaced(&pool, 1, first).await;
    assert_eq!(ppid(after[0]), template);
    let spawned = rec.named("snakepit.pool.worker.spawned");
    assert!(spawned
        .iter()
        .all(|e| meta(e, "start_method") == "template"));
    shutdown_leaving_nothing(pool, &[after[0], first]).await;
}
