//! Tool calls against a real Python worker: unary and streaming, over the
//! persistent call stream and over one RPC per call, with typed errors and
//! the grpc.call / grpc.stream events.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{connect_recorded, Worker, SHOWCASE};
use futures_core::Stream;
use serde_json::json;
use snakepit_grpc::{CallError, CallOptions, ChunkStream, WorkerClient};
use snakepit_telemetry::Telemetry;

const WAIT: Duration = Duration::from_secs(10);

async fn collect(mut s: ChunkStream) -> Vec<Result<serde_json::Value, CallError>> {
    let mut out = Vec::new();
    while let Some(item) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut s).poll_next(cx)).await
    {
        out.push(item);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_round_trip_on_both_paths() {
    let worker = Worker::start(SHOWCASE, "w-calls");
    let (_telemetry, rec, client) = connect_recorded(worker.options(), &["snakepit.grpc.*"]).await;
    assert_eq!(rec.count("snakepit.grpc.connection.established"), 1);

    // Unary tool, both paths.
    let out = client
        .execute("add", json!({"a": 2, "b": 3}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(5));
    let out = client
        .execute_unary("add", json!({"a": 2.5, "b": 3}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(5.5));

    // Streaming tool, both paths.
    for stream in [
        client
            .execute_stream("stream", json!({"n": 4}), CallOptions::default())
            .await
            .unwrap(),
        client
            .execute_stream_unary("astream", json!({"n": 4}), CallOptions::default())
            .await
            .unwrap(),
    ] {
        let chunks: Vec<_> = collect(stream)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(chunks, (0..4).map(|i| json!({"i": i})).collect::<Vec<_>>());
    }

    // A failing stream yields its chunks, then the tool error, then ends.
    let items = collect(
        client
            .execute_stream(
                "stream_fail",
                json!({"fail_after": 2}),
                CallOptions::default(),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(items.len(), 3);
    match &items[2] {
        Err(CallError::Tool {
            error_type,
            message,
            ..
        }) => {
            assert_eq!(error_type, "RuntimeError");
            assert!(message.contains("after 2 chunks"), "{message}");
        }
        other => panic!("expected a tool error, got {other:?}"),
    }

    // Binary payloads both ways.
    let mut binary = HashMap::new();
    binary.insert("data".to_string(), vec![0u8, 1, 2, 255]);
    let out = client
        .execute(
            "bytes_echo",
            json!({}),
            CallOptions {
                binary,
                ..CallOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.value, json!({"size": 4}));
    assert_eq!(out.binary["data"], vec![0u8, 1, 2, 255]);

    // Many calls in flight on the one stream.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.execute("add", json!({"a": i, "b": 1}), CallOptions::default())
                .await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap().value, json!(i + 1));
    }

    // Events: start/stop for every call, stream open/message/close.
    let stops = rec.named("snakepit.grpc.call.stop");
    assert!(stops.len() >= 205, "{}", stops.len());
    let first = &stops[0];
    // `rpc_method` is the RPC that carried the call.
    assert_eq!(first.meta("rpc_method"), Some("CallBatchStream"));
    assert_eq!(first.meta("tool"), Some("add"));
    assert_eq!(first.meta("worker_id"), Some("w-calls"));
    assert_eq!(first.meta("grpc_status"), Some("OK"));
    assert!(
        first
            .measurement("duration")
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert!(stops
        .iter()
        .any(|s| s.meta("rpc_method") == Some("ExecuteTool")));
    let opened: Vec<_> = rec
        .named("snakepit.grpc.stream.opened")
        .iter()
        .map(|e| e.meta("rpc_method").unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        opened,
        ["CallBatchStream", "ExecuteStreamingTool", "CallBatchStream"]
    );
    assert_eq!(rec.count("snakepit.grpc.stream.message"), 10);
    let closed = rec.named("snakepit.grpc.stream.closed");
    assert_eq!(closed.len(), 3);
    assert_eq!(closed[0].meta("reason"), Some("completed"));
    assert_eq!(closed[0].measurement("message_count"), Some("4"));
    assert_eq!(closed[2].meta("reason"), Some("error"));
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed() {
    let worker = Worker::start(SHOWCASE, "w-errors");
    let (_telemetry, rec, client) =
        connect_recorded(worker.options(), &["snakepit.grpc.call.exception"]).await;

    for unary in [false, true] {
        let call = |tool: &'static str, args: serde_json::Value, opts: CallOptions| {
            let c = client.clone();
            async move {
                if unary {
                    c.execute_unary(tool, args, opts).await
                } else {
                    c.execute(tool, args, opts).await
                }
            }
        };
        match call("fail", json!({"message": "nope"}), CallOptions::default()).await {
            Err(CallError::Tool {
                error_type,
                message,
                traceback,
            }) => {
                assert_eq!(error_type, "ValueError");
                assert_eq!(message, "nope");
                assert!(traceback.contains("Traceback"), "{traceback}");
            }
            other => panic!("expected a tool error, got {other:?}"),
        }
        match call("no_such_tool", json!({}), CallOptions::default()).await {
            Err(CallError::Tool {
                error_type,
                message,
                ..
            }) => {
                assert_eq!(error_type, "UnknownTool");
                assert!(message.contains("no_such_tool"), "{message}");
            }
            other => panic!("expected UnknownTool, got {other:?}"),
        }
        let started = std::time::Instant::now();
        match call(
            "sleep",
            json!({"ms": 3000}),
            CallOptions::with_timeout(Duration::from_millis(100)),
        )
        .await
        {
            Err(CallError::Timeout { .. }) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    match client
        .execute("add", json!([1, 2]), CallOptions::default())
        .await
    {
        Err(CallError::Tool {
            error_type,
            message,
            ..
        }) => {
            assert_eq!(error_type, "InvalidArguments");
            assert!(message.contains("\"add\""), "{message}");
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
    let exceptions = rec.named("snakepit.grpc.call.exception");
    assert!(exceptions
        .iter()
        .any(|e| e.meta("error_type") == Some("tool_error")));
    assert!(exceptions
        .iter()
        .any(|e| e.meta("error_type") == Some("timeout")));

    // Health and identity.
    assert!(client.ping().await.unwrap() < Duration::from_secs(1));
    let info = client.describe().await.unwrap();
    assert_eq!(info.worker_id, "w-errors");
    assert_eq!(info.pid, worker.pid);
    assert_eq!(client.python_pid(), Some(worker.pid));
    assert!(info
        .tools
        .iter()
        .any(|t| t.name == "stream" && t.supports_streaming));
    client.close().await;
}

/// Dropping a `ChunkStream` before its end cancels the call in the worker:
/// a sync generator is closed at its next item, an async one is cancelled,
/// and the Python call span ends with `error_type = Cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_cancels_the_tool_in_the_worker() {
    let worker = Worker::start(SHOWCASE, "w-cancel");
    let (_telemetry, rec, client) = connect_recorded(
        worker.options(),
        &["snakepit.python.call.*", "snakepit.grpc.stream.closed"],
    )
    .await;
    for (tool, args) in [
        ("stream", json!({"n": 1_000_000_000u64, "delay_ms": 2})),
        ("astream", json!({"n": 1_000_000_000u64})),
    ] {
        let mut s = client
            .execute_stream(tool, args, CallOptions::default())
            .await
            .unwrap();
        for _ in 0..2 {
            let item = std::future::poll_fn(|cx| std::pin::Pin::new(&mut s).poll_next(cx))
                .await
                .expect("a chunk");
            item.unwrap();
        }
        drop(s);
        rec.wait_for(&format!("{tool} cancelled in the worker"), WAIT, |seen| {
            seen.iter().any(|e| {
                e.name == "snakepit.python.call.exception"
                    && e.meta("command") == Some(tool)
                    && e.meta("error_type") == Some("Cancelled")
            })
        })
        .await;
        // The worker confirmed the cancel: the client keeps nothing for it.
        wait_no_abandoned(&client).await;
    }
    // A sync generator busy in its thread (2 s per item): the call is kept
    // abandoned until that thread returns and the worker confirms.
    let mut s = client
        .execute_stream(
            "stream",
            json!({"n": 100, "delay_ms": 2000}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut s).poll_next(cx))
        .await
        .expect("a chunk")
        .unwrap();
    drop(s);
    assert_eq!(client.abandoned_calls(), 1);
    wait_no_abandoned(&client).await;
    let closed = rec.named("snakepit.grpc.stream.closed");
    assert_eq!(closed.len(), 3);
    assert!(closed.iter().all(|e| e.meta("reason") == Some("cancelled")));
    // The call stream is still good.
    let out = client
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));
    client.close().await;
}

/// Waits until the client keeps no abandoned call (every cancel confirmed).
async fn wait_no_abandoned(client: &WorkerClient) {
    let deadline = std::time::Instant::now() + WAIT;
    while client.abandoned_calls() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} abandoned call(s) never confirmed",
            client.abandoned_calls()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Under load the client paces request batches to the worker's replies;
/// calls that run long must not hold up a quick call sent after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_call_is_not_held_behind_long_running_ones() {
    let worker = Worker::start(SHOWCASE, "w-pacing");
    let client = WorkerClient::connect(Telemetry::new(), worker.options())
        .await
        .unwrap();
    let slow: Vec<_> = (0..12)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                c.execute("sleep", json!({"ms": 3000}), CallOptions::default())
                    .await
            })
        })
        .collect();
    // Let the slow calls reach the worker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        let out = client
            .execute("add", json!({"a": i, "b": 1}), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.value, json!(i + 1));
    }
    assert!(
        slow.iter().all(|h| !h.is_finished()),
        "the quick calls finished only after the slow ones"
    );
    for h in slow {
        h.await.unwrap().unwrap();
    }
    client.close().await;
}

/// Connections accepted on the Unix socket `path`, from /proc/net/unix (the
/// listener is one entry; each accepted connection shows the same path).
fn unix_entries(path: &std::path::Path) -> usize {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let path = path.to_str().unwrap();
    table
        .lines()
        .filter(|l| l.split_whitespace().nth(7) == Some(path))
        .count()
}

/// A local worker serves its call streams natively on `<socket>.calls`
/// (`snakepit_bridge._native`, built by `cargo xtask setup`) and the client
/// sends its calls there; with `SNAKEPIT_NATIVE_CALLS=0` the worker serves
/// them with grpc.aio on its socket, and the same calls behave the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_to_the_native_call_socket_and_work_without_it() {
    for native in [true, false] {
        let env: &[(&str, &str)] = if native {
            &[]
        } else {
            &[("SNAKEPIT_NATIVE_CALLS", "0")]
        };
        let worker = Worker::start_env(SHOWCASE, "w-native", &[], env);
        let snakepit_grpc::WorkerAddress::Unix(sock) = &worker.address else {
            unreachable!()
        };
        let calls_sock = std::path::PathBuf::from(format!("{}.calls", sock.display()));
        let client = WorkerClient::connect(Telemetry::new(), worker.options())
            .await
            .unwrap();
        let info = client.describe().await.unwrap();
        if native {
            assert_eq!(
                info.call_address,
                format!("unix:{}", calls_sock.display()),
                "the worker serves no native call socket: is snakepit_bridge._native built (cargo xtask setup)?"
            );
            // The listener, and the connection it accepted from us.
            assert_eq!(unix_entries(&calls_sock), 2);
        } else {
            assert_eq!(info.call_address, "");
            assert!(!calls_sock.exists());
        }
        let out = client
            .execute("add", json!({"a": 2, "b": 3}), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.value, json!(5));
        // A task (not inline), an error and a stream on the same call stream.
        let slept = client
            .execute("sleep", json!({"ms": 20}), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(slept.value, json!({"slept_ms": 20}));
        match client
            .execute("fail", json!({"message": "bad"}), CallOptions::default())
            .await
        {
            Err(CallError::Tool { error_type, .. }) => assert_eq!(error_type, "ValueError"),
            other => panic!("expected a tool error, got {other:?}"),
        }
        let chunks: Vec<_> = collect(
            client
                .execute_stream("stream", json!({"n": 3}), CallOptions::default())
                .await
                .unwrap(),
        )
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        assert_eq!(chunks.len(), 3);
        // Many calls in flight share the stream and are matched to their replies.
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move {
                    c.execute("add", json!({"a": i, "b": 1}), CallOptions::default())
                        .await
                        .unwrap()
                        .value
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), json!(i + 1));
        }
        client.close().await;
    }
}
