//! An app that serves one `/metrics` for its own series and snakepit's: it
//! installs a `metrics-exporter-prometheus` recorder as the process
//! recorder, counts its requests through the `metrics` macros, and builds
//! the snakepit Prometheus sink from TOML with `recorder = "global"` and
//! `listen = "none"`. Its `/metrics` (hyper, on a loopback port) renders
//! the app's handle; `promtool` accepts the text and a real Prometheus
//! server scrapes it.
//!
//! A test binary of its own: the process recorder can be set once.

mod prometheus_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use snakepit_core::config::SinkConfig;
use snakepit_core::{builtin, Config, Value};
use snakepit_sinks::prometheus::metrics_exporter_prometheus::{
    PrometheusBuilder, PrometheusHandle,
};
use snakepit_sinks::prometheus::{metrics, PrometheusSink, PrometheusSinkBuilder};
use snakepit_sinks::{telemetry_from_config, SinkSet};
use tokio::sync::oneshot;

use prometheus_server::{promtool_check, PrometheusServer};

const APP_TOML: &str = r#"
[[sinks]]
kind = "prometheus"
recorder = "global"
listen = "none"
"#;

const SINK_ID: &str = "sinks[0].prometheus";

/// The app's `/metrics` server: hyper on a loopback port, rendering through
/// `render` for every request; stopped on drop.
struct AppServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AppServer {
    fn start(render: impl Fn() -> String + Send + Sync + 'static) -> AppServer {
        let render = Arc::new(render);
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let socket = tokio::net::TcpListener::from_std(socket).unwrap();
                loop {
                    let stream = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = socket.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    let render = render.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |_request| {
                            let body = render();
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            response.headers_mut().insert(
                                "content-type",
                                "text/plain; version=0.0.4; charset=utf-8".parse().unwrap(),
                            );
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        });
        AppServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn scrape(&self) -> String {
        ureq::get(&format!("http://{}/metrics", self.addr))
            .timeout(Duration::from_secs(5))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The value of the sample line `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn install_app_recorder(config: &Config, t: &snakepit_telemetry::Telemetry) -> PrometheusHandle {
    let SinkConfig::Prometheus(p) = &config.sinks[0] else {
        panic!("{:?}", config.sinks)
    };
    // The app's exporter, with the sink's histogram buckets.
    PrometheusSinkBuilder::from_config(p)
        .configure_exporter(t.catalog(), PrometheusBuilder::new())
        .unwrap()
        .install_recorder()
        .unwrap()
}

#[test]
fn one_app_exposition_holds_the_apps_series_and_snakepits() {
    let config = Config::from_toml(APP_TOML, "app.toml").unwrap();
    let t = telemetry_from_config(&config);
    let handle = install_app_recorder(&config, &t);

    // The app's own series, through the facade.
    metrics::describe_counter!("app_requests_total", "requests the app served");
    metrics::counter!("app_requests_total", "route" => "/predict").increment(3);

    let sinks = Arc::new(SinkSet::from_config(&config, &t).unwrap());
    assert_eq!(
        sinks.prometheus_addr(),
        None,
        "listen = \"none\" binds nothing"
    );

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
        t.execute(
            builtin::GRPC_CALL_STOP,
            &[("duration", Value::Int(ms * 1_000_000))],
            &[("tool", "predict".into())],
        );
    }
    t.execute(
        builtin::PYTHON_CALL_EXCEPTION,
        &[("duration", Value::Int(1))],
        &[("error_type", "KeyError".into())],
    );
    let sink = sinks.get::<PrometheusSink>(SINK_ID).unwrap();
    // The sink has no exposition of its own; its series are the app's.
    assert_eq!(sink.render(), "");

    let server = {
        let (sinks, handle) = (sinks.clone(), handle.clone());
        AppServer::start(move || {
            sinks
                .get::<PrometheusSink>(SINK_ID)
                .unwrap()
                .render_with(&handle)
        })
    };
    let text = server.scrape();
    assert!(
        text.contains("# HELP app_requests_total requests the app served"),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"app_requests_total{route="/predict"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"snakepit_pool_status_queue_depth{pool_name="default"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"snakepit_python_call_stop_duration_seconds_count{command="predict"}"#
        ),
        Some(3.0),
        "every buffered sample is handed over before the render: {text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"snakepit_python_call_exception_total{error_type="KeyError"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // The sink's names, help and buckets, in the app's registry.
    assert!(
        text.contains(
            "# HELP snakepit_grpc_call_stop_duration_seconds round trip time of calls to workers"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE snakepit_grpc_call_stop_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"snakepit_grpc_call_stop_duration_seconds_bucket{tool="predict",le="+Inf"}"#
        ),
        Some(3.0),
        "{text}"
    );
    let buckets = text
        .lines()
        .filter(|l| {
            l.starts_with(r#"snakepit_grpc_call_stop_duration_seconds_bucket{tool="predict""#)
        })
        .count();
    assert_eq!(buckets, 12, "the definition's 11 bounds and +Inf: {text}");
    promtool_check(&text);

    // Rendering the app's handle directly: samples still buffered in the
    // sink reach it through the sink's upkeep.
    t.execute(
        builtin::PYTHON_CALL_STOP,
        &[("duration", Value::Int(40_000_000))],
        &[("command", "predict".into())],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let direct = handle.render();
        let count = sample(
            &direct,
            r#"snakepit_python_call_stop_duration_seconds_count{command="predict"}"#,
        );
        if count == Some(4.0) {
            break;
        }
        assert!(Instant::now() < deadline, "count {count:?}: {direct}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A real Prometheus scrapes the app's one /metrics.
    let mut prom = PrometheusServer::start(server.addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_eq!(prom.wait_for(r#"up{job="snakepit"}"#, deadline), 1.0);
    assert_eq!(
        prom.wait_for(r#"app_requests_total{route="/predict"}"#, deadline),
        3.0
    );
    assert_eq!(
        prom.wait_for(
            r#"snakepit_pool_status_queue_depth{pool_name="default"}"#,
            deadline
        ),
        5.0
    );
    assert_eq!(
        prom.wait_for(
            r#"snakepit_python_call_stop_duration_seconds_count{command="predict"}"#,
            deadline
        ),
        4.0
    );
    drop(prom);
    drop(server);
    let sinks = Arc::try_unwrap(sinks).unwrap_or_else(|_| panic!("server still holds the sinks"));
    sinks.shutdown(Duration::from_secs(2)).unwrap();
}
