//! A worker killed mid-call fails its calls promptly with Unavailable, and
//! a closed client fails calls in flight and later calls.

mod common;

use std::time::{Duration, Instant};

use common::{connect_recorded, Worker, SHOWCASE};
use futures_core::Stream;
use serde_json::json;
use snakepit_grpc::{CallError, CallOptions, WorkerClient};
use snakepit_telemetry::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_call_fails_promptly_with_unavailable() {
    let mut worker = Worker::start(SHOWCASE, "w-kill");
    let (_telemetry, rec, client) =
        connect_recorded(worker.options(), &["snakepit.grpc.connection.*"]).await;
    assert!(client.is_connected());

    let c1 = client.clone();
    let on_stream = tokio::spawn(async move {
        c1.execute("sleep", json!({"ms": 20000}), CallOptions::default())
            .await
    });
    let c2 = client.clone();
    let on_rpc = tokio::spawn(async move {
        c2.execute_unary("async_sleep", json!({"ms": 20000}), CallOptions::default())
            .await
    });
    let c3 = client.clone();
    let streaming = tokio::spawn(async move {
        let mut s = c3
            .execute_stream(
                "stream",
                json!({"n": 1000, "delay_ms": 50}),
                CallOptions::default(),
            )
            .await?;
        loop {
            match std::future::poll_fn(|cx| std::pin::Pin::new(&mut s).poll_next(cx)).await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    worker.kill9();
    for (what, handle) in [("call stream", on_stream), ("unary rpc", on_rpc)] {
        let r = tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap_or_else(|_| panic!("{what} call hung after kill -9"))
            .unwrap();
        assert!(
            matches!(r, Err(CallError::Unavailable { .. })),
            "{what}: {r:?}"
        );
    }
    let r = tokio::time::timeout(Duration::from_secs(5), streaming)
        .await
        .expect("streaming call hung after kill -9")
        .unwrap();
    assert!(
        matches!(r, Err(CallError::Unavailable { .. })),
        "stream: {r:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );

    rec.wait_for("connection.lost", Duration::from_secs(5), |s| {
        s.iter().any(|e| e.name == "snakepit.grpc.connection.lost")
    })
    .await;
    assert!(!client.is_connected());
    let lost = &rec.named("snakepit.grpc.connection.lost")[0];
    assert_eq!(lost.meta("worker_id"), Some("w-kill"));
    assert!(lost.meta("address").unwrap().starts_with("unix:"));

    // Later calls fail fast, too.
    let started = Instant::now();
    let r = client
        .execute("ping", json!({}), CallOptions::default())
        .await;
    assert!(matches!(r, Err(CallError::Unavailable { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_calls_in_flight_and_later_calls() {
    let worker = Worker::start(SHOWCASE, "w-close");
    let (_telemetry, rec, client) =
        connect_recorded(worker.options(), &["snakepit.grpc.connection.*"]).await;
    let c1 = client.clone();
    let in_flight = tokio::spawn(async move {
        c1.execute("sleep", json!({"ms": 20000}), CallOptions::default())
            .await
    });
    let c2 = client.clone();
    let in_flight_rpc = tokio::spawn(async move {
        c2.execute_unary("sleep", json!({"ms": 20000}), CallOptions::default())
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    client.close().await;
    for h in [in_flight, in_flight_rpc] {
        let r = tokio::time::timeout(Duration::from_secs(3), h)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(CallError::Unavailable { .. })), "{r:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!client.is_connected());
    for r in [
        client
            .execute("ping", json!({}), CallOptions::default())
            .await,
        client
            .execute_unary("ping", json!({}), CallOptions::default())
            .await,
    ] {
        match r {
            Err(CallError::Unavailable { message }) => assert!(message.contains("closed")),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert!(client.ping().await.is_err());
    // A deliberate close is not a lost connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rec.count("snakepit.grpc.connection.lost"), 0);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = snakepit_grpc::ConnectOptions::new(
        snakepit_grpc::WorkerAddress::Unix(dir.path().join("none.sock")),
        "w-none",
    );
    opts.connect_timeout = Duration::from_secs(1);
    let r = WorkerClient::connect(Telemetry::new(), opts).await;
    match r {
        Err(CallError::Unavailable { message }) => {
            assert!(message.contains("none.sock"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
