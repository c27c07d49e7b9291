//! A real Prometheus server scrapes the sink's `/metrics` listener, and its
//! HTTP API returns the guide's series.

mod prometheus_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use snakepit_core::config::PrometheusSinkConfig;
use snakepit_core::{builtin, Value};
use snakepit_sinks::prometheus::PrometheusSink;
use snakepit_telemetry::Telemetry;

use prometheus_server::PrometheusServer;

#[test]
fn a_real_prometheus_scrapes_the_guide_series() {
    let t = Telemetry::new();
    let config = PrometheusSinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..PrometheusSinkConfig::default()
    };
    let sink = Arc::new(PrometheusSink::from_config(&config, t.catalog()).unwrap());
    let target = sink.local_addr().unwrap();
    assert!(target.ip().is_loopback());
    t.attach_sink("prometheus", &[], sink.clone()).unwrap();

    t.execute(
        builtin::POOL_STATUS,
        &[
            ("queue_depth", Value::Int(5)),
            ("available_workers", Value::Int(2)),
        ],
        &[("pool_name", "default".into())],
    );
    for ms in [10, 20, 30] {
        t.execute(
            builtin::PYTHON_CALL_STOP,
            &[("duration", Value::Int(ms * 1_000_000))],
            &[("command", "predict".into())],
        );
    }
    t.execute(
        builtin::PYTHON_CALL_EXCEPTION,
        &[("duration", Value::Int(1))],
        &[("error_type", "KeyError".into())],
    );
    t.execute(
        builtin::POOL_WORKER_SPAWNED,
        &[("duration", Value::Int(1))],
        &[("pool_name", "default".into())],
    );

    let mut prom = PrometheusServer::start(target);
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_eq!(prom.wait_for(r#"up{job="snakepit"}"#, deadline), 1.0);
    assert_eq!(
        prom.wait_for(
            r#"snakepit_pool_status_queue_depth{pool_name="default"}"#,
            deadline
        ),
        5.0
    );
    assert_eq!(
        prom.wait_for(
            r#"snakepit_pool_status_available_workers{pool_name="default"}"#,
            deadline
        ),
        2.0
    );
    let p50 = prom.wait_for(
        r#"snakepit_python_call_stop_duration_seconds{command="predict",quantile="0.5"}"#,
        deadline,
    );
    assert!((0.009..=0.031).contains(&p50), "median {p50}");
    assert_eq!(
        prom.wait_for(
            r#"snakepit_python_call_stop_duration_seconds_count{command="predict"}"#,
            deadline
        ),
        3.0
    );
    assert_eq!(
        prom.wait_for(
            r#"snakepit_python_call_exception_total{error_type="KeyError"}"#,
            deadline
        ),
        1.0
    );
    assert_eq!(
        prom.wait_for(
            r#"snakepit_pool_worker_spawned_total{pool_name="default"}"#,
            deadline
        ),
        1.0
    );
    drop(prom);
    snakepit_core::Sink::shutdown(&*sink, Duration::from_secs(2)).unwrap();
}

#[test]
fn the_listener_serves_only_metrics_and_stops() {
    let t = Telemetry::new();
    let sink = PrometheusSink::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .build(t.catalog())
        .unwrap();
    let addr = sink.local_addr().unwrap();
    let resp = ureq::get(&format!("http://{addr}/metrics")).call().unwrap();
    assert!(resp.content_type().starts_with("text/plain"));
    match ureq::get(&format!("http://{addr}/other")).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("{other:?}"),
    }
    // A second sink cannot take the same address, and says which.
    let e = PrometheusSink::builder()
        .listen(addr)
        .build(t.catalog())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&addr.to_string()), "{e}");
    snakepit_core::Sink::shutdown(&sink, Duration::from_secs(2)).unwrap();
    // The port is closed: it can be bound again at once (before another
    // test's server, which also takes free loopback ports, may take it),
    // or a connect is refused (a connect to a closed loopback port in the
    // ephemeral range can, rarely, succeed as a TCP self-connect, so one
    // refusal in a few tries is the proof).
    assert!(
        std::net::TcpListener::bind(addr).is_ok()
            || (0..20).any(|_| std::net::TcpStream::connect(addr).is_err()),
        "listener still open after shutdown"
    );
}
