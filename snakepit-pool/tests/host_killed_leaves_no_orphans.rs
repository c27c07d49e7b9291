//! A host killed with SIGKILL leaves no worker behind: the workers see EOF
//! on their stdin and exit by themselves. The socket directory it leaves is
//! removed by the next pool that starts.
//!
//! The host is this test binary, re-run in a helper mode (env
//! `SNAKEPIT_POOL_HOST_HELPER=1`): it starts a pool, prints the worker pids
//! and waits to be killed.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use snakepit_pool::Pool;
use snakepit_telemetry::Telemetry;

const HELPER_ENV: &str = "SNAKEPIT_POOL_HOST_HELPER";

/// Only does something when run as the helper.
#[test]
fn host_helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = Pool::start(Telemetry::new(), config("orphans", 2))
            .await
            .unwrap();
        let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
        println!("PIDS {}", pids.join(" "));
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(pool);
    });
}

/// The socket directory of a worker: its `--listen unix:<dir>/wN.sock`.
fn socket_dir_of(pid: u32) -> PathBuf {
    let socket = procfs::listen_socket(pid);
    socket.parent().unwrap().to_path_buf()
}

#[test]
fn workers_exit_when_the_host_is_killed_with_sigkill() {
    if std::env::var_os(HELPER_ENV).is_some() {
        return;
    }
    let mut host = child_host("host_helper", HELPER_ENV);
    let pids = pids_after(&mut host, "PIDS ");
    assert_eq!(pids.len(), 2, "the helper printed no pids");
    assert!(pids.iter().all(|&p| !gone(p)));
    let dir = socket_dir_of(pids[0]);
    assert!(dir.is_dir(), "{}", dir.display());

    kill9(host.id());
    host.wait().unwrap();
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "workers still alive 5 s after the host was killed: {pids:?}"
    );

    assert!(
        dir.is_dir(),
        "the killed host could not remove {}",
        dir.display()
    );

    // The next pool removes it: its owner is gone.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = Pool::start(Telemetry::new(), config("orphans_next", 1))
            .await
            .unwrap();
        assert!(
            !dir.exists(),
            "{} is still there after the next pool started",
            dir.display()
        );
        let next = pool.worker_pids();
        pool.shutdown().await;
        assert!(wait_gone(&next, Duration::from_secs(10)));
    });
}
