//! A web application that joins snakepit to its own telemetry: an axum
//! service instrumented with `tracing` and `tracing-opentelemetry` over its
//! own `opentelemetry_sdk` pipeline (its resource, its parent-based
//! sampler, a batch exporter posting OTLP/HTTP), and the `metrics` facade
//! with `metrics-exporter-prometheus` as its recorder. Its `/tool` handler
//! calls a Python tool through a real pool of real workers; snakepit's
//! spans go into the app's pipeline (`OtelSdkSink`, feature `otel-sdk`)
//! and snakepit's series into the app's recorder (the Prometheus sink with
//! `recorder = "global"`).
//!
//! Over real HTTP requests it shows: the request span → grpc.call →
//! python.call → tool.execution → user spans, one trace, as a receiver
//! decodes it; a request whose incoming `traceparent` says not sampled
//! exports nothing, neither the app's span nor snakepit's; and one
//! `/metrics` route serves the app's series and snakepit's. No worker is
//! left at the end.
//!
//! A test binary of its own: the process's tracing subscriber and metrics
//! recorder are set once.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde_json::json;
use snakepit_core::config::SinkConfig;
use snakepit_core::{Config, Sink};
use snakepit_pool::{CallOptions, Pool};
use snakepit_sinks::otel::OtelSdkSink;
use snakepit_sinks::prometheus::metrics_exporter_prometheus::{
    PrometheusBuilder, PrometheusHandle,
};
use snakepit_sinks::prometheus::{metrics, PrometheusSink, PrometheusSinkBuilder};
use snakepit_sinks::{telemetry_from_config, SinkSet};
use snakepit_testkit::otlp::{hex, OtlpReceiver};
use snakepit_testkit::otlp_exporter::OtlpHttpExporter;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

type Span = opentelemetry_proto::tonic::trace::v1::Span;

/// The app's snakepit.toml: Prometheus into the app's recorder, no
/// listener of the sink's own.
const APP_TOML: &str = r#"
[[sinks]]
kind = "prometheus"
recorder = "global"
listen = "none"
"#;

const PROMETHEUS_SINK: &str = "sinks[0].prometheus";

/// What the handlers share.
struct App {
    pool: Pool,
    sinks: Arc<SinkSet>,
    metrics: PrometheusHandle,
}

/// Incoming HTTP headers as an OpenTelemetry propagation carrier.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// `GET /tool`: one request span (a child of the caller's `traceparent`,
/// if any) around a pool call; answers the request's trace id.
async fn tool(State(app): State<Arc<App>>, headers: HeaderMap) -> String {
    let span = tracing::info_span!("GET /tool", http.route = "/tool");
    let parent = TraceContextPropagator::new().extract(&Headers(&headers));
    span.set_parent(parent)
        .expect("a tracing-opentelemetry span");
    metrics::counter!("app_requests_total", "route" => "/tool").increment(1);
    let trace_id = span.context().span().span_context().trace_id();
    let out = app
        .pool
        .execute("nested_spans", json!({}), CallOptions::default())
        .instrument(span)
        .await
        .expect("nested_spans");
    assert!(out.value.get("processed").is_some(), "{:?}", out.value);
    format!("{trace_id:032x}")
}

/// `GET /metrics`: the app's series and snakepit's, in one exposition.
async fn render_metrics(State(app): State<Arc<App>>) -> String {
    app.sinks
        .get::<PrometheusSink>(PROMETHEUS_SINK)
        .expect("the prometheus sink")
        .render_with(&app.metrics)
}

/// The app's recorder, with the snakepit sink's histogram buckets.
fn install_recorder(config: &Config, t: &snakepit_telemetry::Telemetry) -> PrometheusHandle {
    let SinkConfig::Prometheus(p) = &config.sinks[0] else {
        panic!("{:?}", config.sinks)
    };
    PrometheusSinkBuilder::from_config(p)
        .configure_exporter(t.catalog(), PrometheusBuilder::new())
        .unwrap()
        .install_recorder()
        .unwrap()
}

fn fetch(url: &str, traceparent: Option<&str>) -> String {
    let mut request = ureq::get(url).timeout(Duration::from_secs(30));
    if let Some(tp) = traceparent {
        request = request.set("traceparent", tp);
    }
    request.call().unwrap().into_string().unwrap()
}

/// The value of the sample line `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The spans of `trace` (hex), by name.
fn in_trace<'a>(spans: &'a [(String, Span)], trace: &str) -> HashMap<&'a str, Vec<&'a Span>> {
    let mut by_name: HashMap<&str, Vec<&Span>> = HashMap::new();
    for (_, s) in spans.iter().filter(|(_, s)| hex(&s.trace_id) == trace) {
        by_name.entry(s.name.as_str()).or_default().push(s);
    }
    by_name
}

#[test]
fn an_axum_app_sees_snakepit_in_its_own_traces_and_metrics() {
    let receiver = OtlpReceiver::start();
    let config = Config::from_toml(APP_TOML, "snakepit.toml").unwrap();
    let t = telemetry_from_config(&config);
    let handle = install_recorder(&config, &t);
    let sinks = Arc::new(SinkSet::from_config(&config, &t).unwrap());

    // The app's OpenTelemetry pipeline: its resource, a parent-based
    // sampler (an incoming unsampled traceparent is not sampled), and a
    // batch exporter; the same for snakepit's spans.
    let resource = Resource::builder_empty()
        .with_service_name("axum-app")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_batch_exporter(OtlpHttpExporter::new(&receiver.endpoint()))
        .build();
    let otel = Arc::new(
        OtelSdkSink::builder(&t)
            .with_resource(resource)
            .with_batch_exporter(OtlpHttpExporter::new(&receiver.endpoint()))
            .build()
            .unwrap(),
    );
    t.attach_sink("otel", &[], otel.clone()).unwrap();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("axum-app"))),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = rt
        .block_on(Pool::start(t.clone(), common::config("app", 2)))
        .expect("pool");
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    let app = Arc::new(App {
        pool: pool.clone(),
        sinks: sinks.clone(),
        metrics: handle,
    });
    let router = Router::new()
        .route("/tool", get(tool))
        .route("/metrics", get(render_metrics))
        .with_state(app.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    // Not sampled by the caller: the app's sampler drops the request span,
    // and its context (flags 00) reaches the call.
    let unsampled_trace = "5b8efff798038103d269b633813fc60c";
    let answered = fetch(
        &format!("{base}/tool"),
        Some(&format!("00-{unsampled_trace}-eee19b7ec3c1b174-00")),
    );
    assert_eq!(
        answered, unsampled_trace,
        "the request span joined the caller's trace"
    );
    // A request that starts its own, sampled trace.
    let trace = fetch(&format!("{base}/tool"), None);
    assert_ne!(trace, unsampled_trace);

    // The worker's spans reach the host on its telemetry stream: wait for
    // the whole sampled chain, and for every span of the unsampled call to
    // have reached the sink (and been counted, not exported).
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        otel.flush(Duration::from_secs(5)).unwrap();
        provider.force_flush().unwrap();
        let spans = receiver.wait_spans(0, Duration::ZERO);
        let names = in_trace(&spans, &trace);
        if names.len() >= 7 && otel.stats().sampled_out >= 6 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {:?} {:?}",
            names.keys(),
            otel.stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let names = in_trace(&spans, &trace);
    let one = |name: &str| match names.get(name).map(Vec::as_slice) {
        Some([s]) => *s,
        other => panic!("one `{name}` expected in {names:#?}, got {other:?}"),
    };
    let request = one("GET /tool");
    let grpc = one("grpc.call");
    let py = one("python.call");
    let tool_span = one("tool.execution");
    let user = one("complex_operation");
    assert!(request.parent_span_id.is_empty(), "the request is the root");
    assert_eq!(grpc.parent_span_id, request.span_id);
    assert_eq!(py.parent_span_id, grpc.span_id);
    assert_eq!(tool_span.parent_span_id, py.span_id);
    assert_eq!(user.parent_span_id, tool_span.span_id);
    assert_eq!(one("preprocessing").parent_span_id, user.span_id);
    for (service, s) in spans.iter().filter(|(_, s)| hex(&s.trace_id) == trace) {
        assert_eq!(service, "axum-app", "{}: the app's resource", s.name);
    }
    // Nothing of the unsampled request, the app's or snakepit's.
    let leaked = in_trace(&spans, unsampled_trace);
    assert!(leaked.is_empty(), "{leaked:#?}");
    assert_eq!(otel.stats().sampled_out, 6, "{:?}", otel.stats());

    // One /metrics: the app's counter and snakepit's call series.
    let text = fetch(&format!("{base}/metrics"), None);
    assert_eq!(
        sample(&text, r#"app_requests_total{route="/tool"}"#),
        Some(2.0),
        "{text}"
    );
    let calls = text
        .lines()
        .find(|l| {
            l.starts_with("snakepit_grpc_call_stop_duration_seconds_count{")
                && l.contains(r#"tool="nested_spans""#)
        })
        .unwrap_or_else(|| panic!("no snakepit call series in {text}"));
    assert!(calls.ends_with(" 2"), "{calls}");

    let _ = stop.send(());
    rt.block_on(server).unwrap().unwrap();
    rt.block_on(pool.shutdown());
    assert!(
        common::wait_gone(&pids, Duration::from_secs(10)),
        "workers left: {pids:?}"
    );
    otel.shutdown(Duration::from_secs(5)).unwrap();
    provider.shutdown().unwrap();
}
