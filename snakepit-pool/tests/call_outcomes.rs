//! Every call gets its own outcome, whatever it does: an argument or a
//! result over the message limit, a tool raising SystemExit,
//! KeyboardInterrupt or another BaseException, a result JSON cannot carry.
//! Each is that call's error; the worker lives on and the calls beside it
//! succeed.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_pool::{CallError, CallOptions, Pool, PoolError};
use snakepit_telemetry::Telemetry;

const HOSTILE: &str = "snakepit_bridge.adapters.hostile:HostileAdapter";
const LIMIT: usize = 4 << 20;
/// Under the limit, but two of them are over it (and over the limit plus the
/// transport's headroom): they must travel in separate messages.
const LARGE: usize = 3 << 20;

fn with_timeout() -> CallOptions {
    CallOptions::with_timeout(Duration::from_secs(15))
}

/// The tool error of `r`: (type, message).
fn tool_error<T: std::fmt::Debug>(r: Result<T, PoolError>) -> (String, String) {
    match r {
        Err(PoolError::Call(CallError::Tool {
            error_type,
            message,
            ..
        })) => (error_type, message),
        other => panic!("expected a tool error, got {other:?}"),
    }
}

/// Starts `n` calls of the slow thread-pool tool and waits until all run.
async fn slow_calls(
    pool: &Arc<Pool>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<snakepit_pool::ToolOutput, PoolError>>> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move {
                p.execute("sleep", json!({"ms": 2500}), CallOptions::default())
                    .await
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.status().in_flight < n {
        assert!(
            std::time::Instant::now() < deadline,
            "slow calls not started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    calls
}

async fn all_succeed(
    calls: Vec<tokio::task::JoinHandle<Result<snakepit_pool::ToolOutput, PoolError>>>,
) {
    for c in calls {
        let out = c
            .await
            .unwrap()
            .expect("a call beside the large one failed");
        assert_eq!(out.value, json!({"slept_ms": 2500}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argument_over_the_limit_fails_at_once_and_only_its_own_call() {
    let telemetry = Telemetry::new();
    let lost = Recorder::attach(&telemetry, "lost", "snakepit.grpc.connection.lost");
    let exceptions = Recorder::attach(&telemetry, "exc", "snakepit.grpc.call.exception");
    let pool = Arc::new(
        Pool::start(
            telemetry.clone(),
            config("bigarg", 1)
                .max_message_bytes(LIMIT)
                // Inline: shared memory would carry the binary payloads.
                .shm_threshold_bytes(0),
        )
        .await
        .unwrap(),
    );
    let pid = pool.worker_pids()[0];

    let slow = slow_calls(&pool, 4).await;
    let text = "x".repeat(2 * LIMIT);
    let err = pool
        .execute("echo", json!({ "text": text }), CallOptions::default())
        .await
        .unwrap_err();
    // At once: the slow calls beside it are all still running.
    assert_eq!(pool.status().in_flight, 4);
    match &err {
        PoolError::Call(CallError::ArgumentTooLarge { tool, size, limit }) => {
            assert_eq!(tool, "echo");
            assert!(*size > 2 * LIMIT && *size < 2 * LIMIT + 200, "{size}");
            assert_eq!(*limit, LIMIT);
            let message = err.to_string();
            assert!(message.contains(&size.to_string()), "{message}");
            assert!(message.contains(&LIMIT.to_string()), "{message}");
        }
        other => panic!("expected ArgumentTooLarge, got {other:?}"),
    }
    // Binary parameters count too.
    let opts = CallOptions {
        binary: HashMap::from([("data".to_string(), vec![7u8; LIMIT + 1])]),
        ..CallOptions::default()
    };
    match pool.execute("bytes_echo", json!({}), opts).await {
        Err(PoolError::Call(CallError::ArgumentTooLarge { size, limit, .. })) => {
            assert!(size > LIMIT, "{size}");
            assert_eq!(limit, LIMIT);
        }
        other => panic!("expected ArgumentTooLarge, got {other:?}"),
    }
    all_succeed(slow).await;

    // Arguments just under the limit, several at once: batched so that no
    // message is over the limit, every one arrives.
    let text = "y".repeat(LARGE);
    let calls = (0..4).map(|_| pool.execute("echo", json!({ "text": text }), with_timeout()));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap().value["text"].as_str().unwrap().len(), LARGE);
    }

    let exc = exceptions.named("snakepit.grpc.call.exception");
    assert_eq!(exc.len(), 2);
    assert!(exc
        .iter()
        .all(|e| meta(e, "error_type") == "argument_too_large"));
    assert!(lost.all().is_empty(), "{:?}", lost.all());
    assert_eq!(pool.worker_pids(), vec![pid]);
    let pool = Arc::into_inner(pool).unwrap();
    pool.shutdown().await;
    assert!(wait_gone(&[pid], Duration::from_secs(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_is_its_calls_tool_error_only() {
    let telemetry = Telemetry::new();
    let lost = Recorder::attach(&telemetry, "lost", "snakepit.grpc.connection.lost");
    let pool = Arc::new(
        Pool::start(
            telemetry.clone(),
            config("bigresult", 1)
                .max_message_bytes(LIMIT)
                // Inline: shared memory would carry the binary payloads.
                .shm_threshold_bytes(0),
        )
        .await
        .unwrap(),
    );
    let pid = pool.worker_pids()[0];

    let slow = slow_calls(&pool, 4).await;
    for binary in [false, true] {
        let n = 2 * LIMIT;
        let r = pool
            .execute(
                "big_result",
                json!({"n_bytes": n, "binary": binary}),
                with_timeout(),
            )
            .await;
        let (error_type, message) = tool_error(r);
        assert_eq!(error_type, "ResultTooLarge");
        assert!(message.contains(&LIMIT.to_string()), "{message}");
        // JSON `{}` plus the binary result "data".
        let size = if binary { n + 2 + 4 } else { n };
        assert!(message.contains(&size.to_string()), "{message}");
    }
    all_succeed(slow).await;

    // Results just under the limit, several at once: each reply batch stays
    // under the limit, every result arrives.
    let calls =
        (0..4).map(|_| pool.execute("big_result", json!({ "n_bytes": LARGE }), with_timeout()));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap().value.as_str().unwrap().len(), LARGE - 2);
    }

    assert!(lost.all().is_empty(), "{:?}", lost.all());
    assert_eq!(pool.worker_pids(), vec![pid]);
    let pool = Arc::into_inner(pool).unwrap();
    pool.shutdown().await;
    assert!(wait_gone(&[pid], Duration::from_secs(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_raising_a_base_exception_gets_a_tool_error_and_the_worker_lives_on() {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    let pool = Pool::start(telemetry.clone(), config("baseexc", 1).adapter(HOSTILE))
        .await
        .unwrap();
    let pid = pool.worker_pids()[0];

    for tool in ["raise_base", "araise_base", "raise_base_inline"] {
        for kind in ["SystemExit", "KeyboardInterrupt", "HostileExit"] {
            let r = pool
                .execute(tool, json!({ "kind": kind }), with_timeout())
                .await;
            let (error_type, _) = tool_error(r);
            assert_eq!(error_type, kind, "{tool}");
            assert_eq!(pool.worker_pids(), vec![pid], "{tool} {kind}");
            let out = pool.execute("ok", json!({}), with_timeout()).await;
            assert_eq!(out.unwrap().value, json!("ok"), "after {tool} {kind}");
        }
    }
    assert!(rec.named("snakepit.pool.worker.terminated").is_empty());
    assert!(rec.named("snakepit.pool.worker.restarted").is_empty());
    pool.shutdown().await;
    assert!(wait_gone(&[pid], Duration::from_secs(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_json_cannot_carry_is_a_tool_error_naming_the_value() {
    let telemetry = Telemetry::new();
    let pool = Pool::start(telemetry.clone(), config("badjson", 1).adapter(HOSTILE))
        .await
        .unwrap();
    let pid = pool.worker_pids()[0];
    let cases = [
        ("nan", "result['outer']['values'][2] is nan"),
        ("inf", "result['outer']['values'][2] is inf"),
        ("-inf", "result['outer']['values'][2] is -inf"),
        (
            "surrogate",
            "result['outer']['values'][2] is a string with a lone surrogate '\\ud800' at index 2",
        ),
        (
            "surrogate_key",
            "a key of result['outer'] is a string with a lone surrogate '\\udc00'",
        ),
    ];
    for tool in ["bad_result", "bad_result_inline"] {
        for (kind, names) in cases {
            let r = pool
                .execute(tool, json!({ "kind": kind }), with_timeout())
                .await;
            let (error_type, message) = tool_error(r);
            assert_eq!(error_type, "EncodeError", "{tool} {kind}");
            assert!(message.contains(names), "{tool} {kind}: {message}");
        }
    }
    let out = pool.execute("ok", json!({}), with_timeout()).await;
    assert_eq!(out.unwrap().value, json!("ok"));
    assert_eq!(pool.worker_pids(), vec![pid]);
    pool.shutdown().await;
    assert!(wait_gone(&[pid], Duration::from_secs(10)));
}
