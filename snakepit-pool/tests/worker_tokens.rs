//! Every local worker gets its own token through the environment: never on
//! its command line, and required on both of its sockets.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_grpc::{ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_pool::{CallOptions, Pool, PoolError};
use snakepit_telemetry::Telemetry;

/// Connecting without `token` (or with a wrong one) to `path` fails, naming
/// the token; with it, the main socket serves.
async fn refused(path: PathBuf, token: Option<&str>) -> String {
    let mut options = ConnectOptions::new(WorkerAddress::Unix(path), "intruder");
    options.token = token.map(str::to_string);
    options.connect_timeout = Duration::from_secs(10);
    match WorkerClient::connect(Telemetry::new(), options).await {
        Ok(client) => {
            client.close().await;
            panic!("connected without the worker's token");
        }
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_local_worker_has_its_own_token_in_its_environment_only() {
    let pool = Pool::start(Telemetry::new(), config("tokens", 2))
        .await
        .unwrap();
    let out = pool
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));

    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    let mut tokens = Vec::new();
    for &pid in &pids {
        let env = procfs::entries(pid, "environ");
        let token = env
            .iter()
            .find_map(|e| e.strip_prefix("SNAKEPIT_TOKEN="))
            .unwrap_or_else(|| panic!("worker {pid} has no SNAKEPIT_TOKEN"))
            .to_string();
        assert_eq!(token.len(), 64, "32 random bytes as hex: {token}");
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        let cmdline = procfs::cmdline(pid);
        for arg in &cmdline {
            assert!(
                !arg.contains(&token) && !arg.starts_with("--token"),
                "the token is on worker {pid}'s command line: {cmdline:?}"
            );
        }

        // Both sockets refuse a client without the token, or with another
        // worker's: the main one and the native call socket.
        let main = procfs::listen_socket(pid);
        let calls = PathBuf::from(format!("{}.calls", main.display()));
        assert!(calls.exists(), "the native call socket {calls:?} is served");
        for path in [&main, &calls] {
            for wrong in [None, Some("0".repeat(64).as_str())] {
                let e = refused(path.clone(), wrong).await;
                assert!(
                    e.contains("x-snakepit-token") || e.to_lowercase().contains("unauthenticated"),
                    "{path:?} with {wrong:?}: {e}"
                );
            }
        }
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1], "each worker has its own token");

    // Calls went through the native call socket with the token all along.
    for i in 0..20 {
        let out = pool
            .execute("add", json!({"a": i, "b": 1}), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.value, json!(i + 1));
    }
    pool.shutdown().await;
    assert!(wait_gone(&pids, Duration::from_secs(10)));
}

#[tokio::test]
async fn a_token_in_worker_args_is_refused_with_the_reason() {
    for arg in ["--token", "--token=abc"] {
        let cfg = config("tokens_args", 1).worker_arg(arg).worker_arg("abc");
        match Pool::start(Telemetry::new(), cfg).await {
            Err(PoolError::Config { key, message, .. }) => {
                assert_eq!(key, "worker_args[0]");
                assert!(message.contains("SNAKEPIT_TOKEN"), "{message}");
            }
            Err(e) => panic!("{arg}: unexpected error {e}"),
            Ok(_) => panic!("{arg}: a token on the command line was accepted"),
        }
    }
}
