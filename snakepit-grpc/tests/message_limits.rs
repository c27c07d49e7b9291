//! `ConnectOptions::max_message_bytes` on every call path (call stream,
//! one RPC per call, streaming; native call socket and grpc.aio): an
//! argument over the limit fails at once and is never sent, a result over
//! it is that call's `ResultTooLarge`, and the connection stays up.

mod common;

use std::time::Duration;

use common::{Recorder, Worker, SHOWCASE};
use serde_json::json;
use snakepit_grpc::{CallError, CallOptions, WorkerClient};
use snakepit_telemetry::Telemetry;

const LIMIT: usize = 1 << 20;

fn too_large_argument(r: Result<impl std::fmt::Debug, CallError>) {
    match r {
        Err(CallError::ArgumentTooLarge { tool, size, limit }) => {
            assert_eq!(tool, "echo");
            assert!(size > 2 * LIMIT, "{size}");
            assert_eq!(limit, LIMIT);
        }
        other => panic!("expected ArgumentTooLarge, got {other:?}"),
    }
}

fn too_large_result(r: Result<impl std::fmt::Debug, CallError>) {
    match r {
        Err(CallError::Tool {
            error_type,
            message,
            ..
        }) => {
            assert_eq!(error_type, "ResultTooLarge");
            assert!(
                message.contains(&format!("{} bytes", 2 * LIMIT)),
                "{message}"
            );
            assert!(
                message.contains(&format!("limit of {LIMIT} bytes")),
                "{message}"
            );
        }
        other => panic!("expected ResultTooLarge, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_limit_fail_alone_on_every_path() {
    for native in ["1", "0"] {
        let worker = Worker::start_env(
            SHOWCASE,
            "w-limits",
            &["--max-message-bytes", &LIMIT.to_string()],
            &[("SNAKEPIT_NATIVE_CALLS", native)],
        );
        let telemetry = Telemetry::new();
        let rec = Recorder::attach(&telemetry, "rec", &["snakepit.grpc.connection.*"]);
        let mut options = worker.options();
        options.max_message_bytes = LIMIT;
        let client = WorkerClient::connect(telemetry.clone(), options)
            .await
            .unwrap();
        let opts = || CallOptions::with_timeout(Duration::from_secs(15));

        let big = json!({ "text": "x".repeat(2 * LIMIT) });
        too_large_argument(client.execute("echo", big.clone(), opts()).await);
        too_large_argument(client.execute_unary("echo", big.clone(), opts()).await);
        too_large_argument(client.execute_stream("echo", big, opts()).await);

        let big = json!({ "n_bytes": 2 * LIMIT });
        too_large_result(client.execute("big_result", big.clone(), opts()).await);
        too_large_result(client.execute_unary("big_result", big, opts()).await);

        // Just under the limit, both ways, on both paths.
        let text = "y".repeat(LIMIT - 1000);
        for unary in [false, true] {
            let args = json!({ "text": text });
            let out = if unary {
                client.execute_unary("echo", args, opts()).await
            } else {
                client.execute("echo", args, opts()).await
            };
            assert_eq!(
                out.unwrap().value["text"].as_str().unwrap().len(),
                LIMIT - 1000
            );
        }

        assert!(client.is_connected());
        assert_eq!(
            rec.count("snakepit.grpc.connection.lost"),
            0,
            "native={native}"
        );
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_below_1024_bytes_is_refused_at_connect() {
    let worker = Worker::start(SHOWCASE, "w-limit-small");
    let mut options = worker.options();
    options.max_message_bytes = 100;
    match WorkerClient::connect(Telemetry::new(), options).await {
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("max_message_bytes is 100"), "{message}");
            assert!(message.contains("1024"), "{message}");
        }
        Ok(_) => panic!("a 100-byte limit was accepted"),
    }
}
