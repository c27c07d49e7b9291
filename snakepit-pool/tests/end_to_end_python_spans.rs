//! End to end: a real Python worker runs a tool that opens nested spans;
//! the host's call span, the Python call span, the tool span and the user
//! spans reach an OTLP receiver as one trace with the right parents; a tool
//! that raises gives error status on both sides of the language boundary;
//! the call's duration reaches the Prometheus summary; and the worker's log
//! lines reach `tracing` under `snakepit::python` with their `worker_id`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use snakepit_core::config::OtelSinkConfig;
use snakepit_core::{LogLevel, Sink};
use snakepit_grpc::{CallOptions, ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_sinks::log::LogSink;
use snakepit_sinks::otel::OtelSink;
use snakepit_sinks::prometheus::PrometheusSink;
use snakepit_telemetry::Telemetry;
use snakepit_testkit::otlp::{attr, hex, OtlpReceiver};
use snakepit_testkit::{WorkerProcess, SHOWCASE};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Captures `snakepit::python` records.
#[derive(Clone, Default)]
struct PythonLogs(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);
impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for PythonLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        if event.metadata().target() == "snakepit::python" {
            let mut fields = BTreeMap::new();
            fields.insert("level".into(), event.metadata().level().to_string());
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

#[test]
fn a_python_call_with_nested_spans_is_one_trace_in_otlp() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let otel = Arc::new(
        OtelSink::new(
            &OtelSinkConfig {
                endpoint: receiver.endpoint(),
                export_interval: Duration::from_millis(50),
                ..OtelSinkConfig::default()
            },
            &t,
        )
        .unwrap(),
    );
    t.attach_sink("otel", &[], otel.clone()).unwrap();
    let prometheus = Arc::new(PrometheusSink::builder().build(t.catalog()).unwrap());
    t.attach_sink("prometheus", &[], prometheus.clone())
        .unwrap();
    t.attach_sink("log", &[], Arc::new(LogSink::new(&t)))
        .unwrap();
    t.log().set_level(LogLevel::Info);

    let worker = WorkerProcess::start(SHOWCASE, "w1");
    let logs = PythonLogs::default();
    let subscriber =
        tracing_subscriber::registry().with(logs.clone().with_filter(t.log().filter()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spans = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let client = tokio::time::timeout(
                Duration::from_secs(20),
                WorkerClient::connect(
                    t.clone(),
                    ConnectOptions::new(
                        WorkerAddress::Unix(worker.socket().unwrap().to_path_buf()),
                        "w1",
                    ),
                ),
            )
            .await
            .expect("connect within 20 s")
            .expect("connect");
            let out = client
                .execute(
                    "nested_spans",
                    json!({}),
                    CallOptions::with_timeout(Duration::from_secs(20)),
                )
                .await
                .expect("nested_spans");
            assert!(out.value.get("processed").is_some(), "{:?}", out.value);
            client
                .execute(
                    "log",
                    json!({"level": "warning", "message": "hello from python"}),
                    CallOptions::with_timeout(Duration::from_secs(20)),
                )
                .await
                .expect("log");
            let failed = client
                .execute(
                    "fail",
                    json!({"message": "no good"}),
                    CallOptions::with_timeout(Duration::from_secs(20)),
                )
                .await;
            assert!(failed.is_err(), "{failed:?}");
            // Python events arrive on the telemetry stream: wait for the
            // user spans to be exported.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let spans = receiver.wait_spans(0, Duration::ZERO);
                let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
                let logged = logs.0.lock().unwrap().iter().any(|r| {
                    r.get("message")
                        .is_some_and(|m| m.contains("hello from python"))
                });
                let failed_call = spans.iter().any(|(_, s)| {
                    s.name == "python.call" && attr(s, "command").as_deref() == Some("fail")
                });
                if failed_call
                    && [
                        "grpc.call",
                        "python.call",
                        "tool.execution",
                        "complex_operation",
                        "preprocessing",
                        "inference",
                    ]
                    .iter()
                    .all(|n| names.contains(n))
                    && logged
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out; spans so far: {names:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client.close().await;
            receiver.wait_spans(0, Duration::ZERO)
        })
    });
    otel.shutdown(Duration::from_secs(5)).unwrap();

    // The nested_spans call's spans form one trace.
    let find = |name: &str, parent: Option<&[u8]>| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name && parent.is_none_or(|p| s.parent_span_id == p))
            .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
    };
    let grpc = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "grpc.call" && attr(s, "tool").as_deref() == Some("nested_spans"))
        .expect("host call span of nested_spans");
    let py = find("python.call", Some(&grpc.span_id));
    // The worker wraps the tool function in a tool.execution span.
    let tool = find("tool.execution", Some(&py.span_id));
    let outer = find("complex_operation", Some(&tool.span_id));
    let pre = find("preprocessing", Some(&outer.span_id));
    let inf = find("inference", Some(&outer.span_id));
    for s in [py, tool, outer, pre, inf] {
        assert_eq!(
            hex(&s.trace_id),
            hex(&grpc.trace_id),
            "{} shares the trace",
            s.name
        );
        assert!(
            s.status.as_ref().is_none_or(|st| st.code != 2),
            "{}",
            s.name
        );
        assert!(s.start_time_unix_nano >= grpc.start_time_unix_nano.saturating_sub(5_000_000));
        assert!(s.end_time_unix_nano <= grpc.end_time_unix_nano + 5_000_000);
    }
    assert_ne!(hex(&grpc.trace_id), "0".repeat(32));
    assert_eq!(attr(py, "command").as_deref(), Some("nested_spans"));
    assert_eq!(attr(py, "worker_id").as_deref(), Some("w1"));
    assert_eq!(attr(outer, "worker_id").as_deref(), Some("w1"));
    assert!(attr(py, "snakepit.correlation_id").is_some());
    assert_eq!(
        attr(py, "snakepit.correlation_id"),
        attr(grpc, "snakepit.correlation_id")
    );

    // The call reached the Prometheus summary.
    let text = prometheus.render();
    assert!(
        text.contains(
            r#"snakepit_python_call_stop_duration_seconds_count{command="nested_spans"} 1"#
        ),
        "{text}"
    );
    // The worker's log line reached tracing, tagged with its worker id.
    // An exception in Python sets error status on its call span and on the
    // host's call span, with the error type as an attribute.
    let failed_py = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "python.call" && attr(s, "command").as_deref() == Some("fail"))
        .unwrap();
    let failed_host = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.span_id == failed_py.parent_span_id)
        .expect("the failed call's host span");
    assert_eq!(failed_host.name, "grpc.call");
    for s in [failed_py, failed_host] {
        let status = s.status.as_ref().expect("status");
        assert_eq!(status.code, 2, "{} has error status", s.name);
        assert!(attr(s, "error.type").is_some(), "{s:#?}");
        assert_eq!(s.events[0].name, "exception");
    }
    let logs = logs.0.lock().unwrap();
    let line = logs
        .iter()
        .find(|r| {
            r.get("message")
                .is_some_and(|m| m.contains("hello from python"))
        })
        .unwrap();
    assert_eq!(line["worker_id"], "w1");
    assert_eq!(line["level"], "WARN");
    drop(worker);
}
