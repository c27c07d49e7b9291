//! A worker killed with SIGKILL leaves its sockets behind; the restarted
//! worker binds them again and serves calls on its native call socket
//! (`Describe` reports `call_address`), instead of falling back to grpc.aio.
//! The host removes the sockets and the worker's counters file
//! (`<socket>.counters`) when the worker is gone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, WorkerInfo};
use snakepit_telemetry::Telemetry;

async fn describe_one(pool: &Pool) -> WorkerInfo {
    let mut infos = pool.describe().await;
    assert_eq!(infos.len(), 1, "one live worker");
    infos.pop().unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_serves_calls_on_its_native_socket_again() {
    let pool = Pool::start(Telemetry::new(), config("restartsock", 1))
        .await
        .unwrap();
    let first = describe_one(&pool).await;
    assert!(
        first.call_address.starts_with("unix:") && first.call_address.ends_with(".calls"),
        "the first worker serves no native call socket ({:?}); is the native module built \
         (`cargo xtask setup`)?",
        first.call_address
    );
    let socket = first.call_address.trim_start_matches("unix:").to_string();
    // Next to its sockets the worker keeps its shared accepted-events count,
    // readable by its owner only.
    let counters = format!("{}.counters", socket.trim_end_matches(".calls"));
    let mode = std::fs::metadata(&counters)
        .unwrap_or_else(|e| panic!("no counters file {counters}: {e}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{counters}");

    kill9(first.pid);
    assert!(wait_gone(&[first.pid], Duration::from_secs(5)));
    // SIGKILL: the worker could not remove its call socket.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let pids = pool.worker_pids();
        if pids.len() == 1 && pids[0] != first.pid && pool.worker_ids().len() == 1 {
            break describe_one(&pool).await;
        }
        assert!(Instant::now() < deadline, "no restarted worker after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(second.pid, first.pid);
    assert!(
        second.call_address.starts_with("unix:") && second.call_address.ends_with(".calls"),
        "the restarted worker fell back to grpc.aio: {:?}",
        second.call_address
    );
    let second_socket = second.call_address.trim_start_matches("unix:");
    assert!(std::path::Path::new(second_socket).exists());
    // The killed worker's sockets were removed by the host.
    assert!(
        second_socket == socket || !std::path::Path::new(&socket).exists(),
        "the killed worker's call socket {socket} is left behind"
    );
    for i in 0..20 {
        let out = pool
            .execute("add", json!({"a": i, "b": 1}), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.value, json!(i + 1));
    }

    pool.shutdown().await;
    assert!(wait_gone(&[second.pid], Duration::from_secs(10)));
    let second_counters = format!("{}.counters", second_socket.trim_end_matches(".calls"));
    for left in [
        socket.as_str(),
        second_socket,
        counters.as_str(),
        &second_counters,
    ] {
        assert!(
            !std::path::Path::new(left).exists(),
            "{left} is left after shutdown"
        );
    }
}
