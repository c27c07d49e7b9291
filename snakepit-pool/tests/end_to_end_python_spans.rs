//! End to end: a real Python worker runs a tool that opens nested spans;
//! the host's call span, the Python call span, the tool span and the user
//! spans reach an OTLP receiver as one trace with the right parents; a tool
//! that raises gives error status on both sides of the language boundary;
//! the call's duration reaches the Prometheus summary; and the worker's log
//! lines reach `tracing` under `snakepit::python` with their `worker_id`,
//! and, when logged inside a call, its trace id, span id and correlation id,
//! as children of the `tracing` span the call was made in.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use snakepit_core::{LogLevel, Sink};
use snakepit_grpc::{CallOptions, ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_sinks::log::LogSink;
use snakepit_sinks::prometheus::PrometheusSink;
use snakepit_telemetry::Telemetry;
use snakepit_testkit::otlp::{
    assert_rpc, attr, attr_keys, event_attr, hex, int_attr, keys, OtlpReceiver, RPC_KEYS,
    UNIX_KEYS, WORKER_KEYS,
};
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

impl<S> Layer<S> for PythonLogs
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, cx: Context<'_, S>) {
        if event.metadata().target() == "snakepit::python" {
            let mut fields = BTreeMap::new();
            fields.insert("level".into(), event.metadata().level().to_string());
            if let Some(parent) = cx.event_span(event) {
                fields.insert("parent".into(), parent.name().to_string());
            }
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

#[test]
fn a_python_call_with_nested_spans_is_one_trace_in_otlp() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let otel = common::otel_sink_to(&receiver, &t);
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
        // The application's span the calls are made in.
        let caller = tracing::warn_span!("caller");
        let _entered = caller.enter();
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
                    // Held open past the worker's flush: the record reaches
                    // the host while the call (and its parent span) runs.
                    json!({"level": "warning", "message": "hello from python", "hold_ms": 300}),
                    CallOptions::with_timeout(Duration::from_secs(20)),
                )
                .await
                .expect("log");
            client
                .execute(
                    "log",
                    json!({"level": "warning", "message": "hello from a thread", "detached": true}),
                    CallOptions::with_timeout(Duration::from_secs(20)),
                )
                .await
                .expect("log detached");
            let failed = client
                .execute(
                    "fail",
                    json!({"message": "no good"}),
                    CallOptions::with_timeout(Duration::from_secs(20)),
                )
                .await;
            assert!(failed.is_err(), "{failed:?}");
            // An inline tool that raises: its telemetry rides on the reply.
            let failed = client
                .execute(
                    "add",
                    json!({"a": "x", "b": 1}),
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
                let logged = ["hello from python", "hello from a thread"]
                    .iter()
                    .all(|text| {
                        logs.0
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|r| r.get("message").is_some_and(|m| m.contains(text)))
                    });
                let failed_call = |tool: &str| {
                    spans.iter().any(|(_, s)| {
                        s.name == "python.call"
                            && attr(s, "snakepit.tool.name").as_deref() == Some(tool)
                    })
                };
                if failed_call("fail")
                    && failed_call("add")
                    && failed_call("log")
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
        .find(|s| {
            s.name == "grpc.call"
                && attr(s, "snakepit.tool.name").as_deref() == Some("nested_spans")
        })
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
    let socket = worker.socket().unwrap().to_str().unwrap().to_string();
    let call = CallSpans {
        grpc,
        py,
        tool,
        tool_name: "nested_spans",
    };
    call.check_attributes(&socket, worker.pid());
    assert_eq!(outer.kind, 1, "user spans are internal");
    assert_eq!(attr(outer, "snakepit.worker.id").as_deref(), Some("w1"));
    assert!(attr(py, "snakepit.correlation_id").is_some());
    for s in [tool, outer, pre, inf] {
        assert_eq!(
            attr(s, "snakepit.correlation_id"),
            attr(grpc, "snakepit.correlation_id")
        );
    }

    // The call reached the Prometheus summary.
    let text = prometheus.render();
    assert!(
        text.contains(
            r#"snakepit_python_call_stop_duration_seconds_count{command="nested_spans"} 1"#
        ),
        "{text}"
    );
    // A tool that raises, run by the worker's thread pool (its Python
    // events on the telemetry stream) and inline (its events on the reply):
    // error status on the three spans of the call, each with its
    // `exception` event, the tool's carrying the Python traceback.
    for (tool_name, error_type, message, raised) in [
        ("fail", "ValueError", "no good", "raise ValueError(message)"),
        ("add", "TypeError", "", "return a + b"),
    ] {
        let failed = CallSpans::find(&spans, tool_name);
        failed.check_attributes(&socket, worker.pid());
        for s in [failed.grpc, failed.py, failed.tool] {
            let status = s.status.as_ref().expect("status");
            assert_eq!(status.code, 2, "{} has error status", s.name);
            assert!(!status.message.is_empty(), "{s:#?}");
            assert_eq!(s.events.len(), 1, "{s:#?}");
            assert_eq!(s.events[0].name, "exception");
        }
        let exception = |s, key| event_attr(s, "exception", key).unwrap_or_default();
        // The tool and worker spans name the Python exception.
        for s in [failed.py, failed.tool] {
            assert_eq!(attr(s, "error.type").as_deref(), Some(error_type));
            assert_eq!(exception(s, "exception.type"), error_type);
        }
        assert!(exception(failed.tool, "exception.message").contains(message));
        let stack = exception(failed.tool, "exception.stacktrace");
        assert!(
            stack.contains("Traceback") && stack.contains(raised),
            "{stack}"
        );
        assert!(stack.contains(&format!("{error_type}: ")), "{stack}");
        // The host's: the kind of failure, the message, the traceback.
        assert_eq!(
            attr(failed.grpc, "error.type").as_deref(),
            Some("tool_error")
        );
        assert_eq!(exception(failed.grpc, "exception.type"), "tool_error");
        let host_message = exception(failed.grpc, "exception.message");
        assert!(
            host_message.starts_with(&format!("{error_type}: ")),
            "{host_message}"
        );
        assert!(exception(failed.grpc, "exception.stacktrace").contains(raised));
    }
    let logs = logs.0.lock().unwrap();
    let line = |text: &str| {
        logs.iter()
            .find(|r| r.get("message").is_some_and(|m| m.contains(text)))
            .unwrap_or_else(|| panic!("no log line {text:?} in {logs:#?}"))
    };
    // The worker's log line reached tracing, tagged with its worker id and
    // the context it was logged in: the log tool's tool.execution span, in
    // its call's trace, with its correlation id, as a child of the span the
    // call was made in.
    let inside = line("hello from python");
    assert_eq!(inside["worker_id"], "w1");
    assert_eq!(inside["level"], "WARN");
    let tool_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| hex(&s.span_id) == inside["span_id"])
        .unwrap_or_else(|| panic!("no span {} in {spans:#?}", inside["span_id"]));
    assert_eq!(tool_span.name, "tool.execution");
    assert_eq!(
        attr(tool_span, "snakepit.tool.name").as_deref(),
        Some("log")
    );
    assert_eq!(inside["trace_id"], hex(&tool_span.trace_id));
    let call = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.span_id == tool_span.parent_span_id)
        .expect("the log call's python.call");
    let host = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.span_id == call.parent_span_id)
        .expect("the log call's grpc.call");
    assert_eq!(host.name, "grpc.call");
    assert_eq!(inside["trace_id"], hex(&host.trace_id));
    assert_eq!(
        Some(inside["correlation_id"].as_str()),
        attr(host, "snakepit.correlation_id").as_deref()
    );
    assert_eq!(inside["parent"], "caller");
    // Logged outside any call (a thread of its own): no ids, no parent.
    let outside = line("hello from a thread");
    assert_eq!(outside["worker_id"], "w1");
    for key in ["trace_id", "span_id", "correlation_id", "parent"] {
        assert!(!outside.contains_key(key), "{key} in {outside:?}");
    }
    drop(worker);
}

/// The three spans of one call.
struct CallSpans<'a> {
    grpc: &'a Span,
    py: &'a Span,
    tool: &'a Span,
    tool_name: &'a str,
}

impl<'a> CallSpans<'a> {
    /// The spans of the call of `tool_name` (the only one).
    fn find(spans: &'a [(String, Span)], tool_name: &'a str) -> CallSpans<'a> {
        let find = |name: &str, parent: Option<&[u8]>| {
            spans
                .iter()
                .map(|(_, s)| s)
                .find(|s| {
                    s.name == name
                        && attr(s, "snakepit.tool.name").as_deref() == Some(tool_name)
                        && parent.is_none_or(|p| s.parent_span_id == p)
                })
                .unwrap_or_else(|| panic!("no span {name} of {tool_name} in {spans:#?}"))
        };
        let grpc = find("grpc.call", None);
        let py = find("python.call", Some(&grpc.span_id));
        let tool = find("tool.execution", Some(&py.span_id));
        CallSpans {
            grpc,
            py,
            tool,
            tool_name,
        }
    }

    /// Every attribute of the three spans, by the semantic conventions,
    /// for a worker `w1` of the default pool listening on `socket`.
    fn check_attributes(&self, socket: &str, pid: u32) {
        let failed = self.tool.status.as_ref().is_some_and(|s| s.code == 2);
        let error: &[&str] = if failed { &["error.type"] } else { &[] };
        let (grpc, py, tool) = (self.grpc, self.py, self.tool);
        assert_eq!(
            (grpc.kind, py.kind, tool.kind),
            (3, 2, 1),
            "client, server, internal"
        );
        let correlation = ["snakepit.correlation_id"];
        let host = ["snakepit.tool.name", "snakepit.worker.id"];
        assert_eq!(
            attr_keys(grpc),
            keys(&[&RPC_KEYS, &UNIX_KEYS, &host, &correlation, error])
        );
        assert_eq!(
            attr_keys(py),
            keys(&[&RPC_KEYS, &WORKER_KEYS, &correlation, error])
        );
        assert_eq!(attr_keys(tool), keys(&[&WORKER_KEYS, &correlation, error]));
        for s in [grpc, py] {
            // A raising tool is answered with status OK: the error is in the reply.
            assert_rpc(s, "CallBatchStream", 0);
        }
        for s in [grpc, py, tool] {
            assert_eq!(
                attr(s, "snakepit.tool.name").as_deref(),
                Some(self.tool_name)
            );
            assert_eq!(attr(s, "snakepit.worker.id").as_deref(), Some("w1"));
            assert_eq!(
                attr(s, "snakepit.correlation_id"),
                attr(grpc, "snakepit.correlation_id")
            );
        }
        assert!(attr(grpc, "snakepit.correlation_id").is_some_and(|c| !c.is_empty()));
        assert_eq!(attr(grpc, "network.transport").as_deref(), Some("unix"));
        // The main socket, or the native call socket next to it.
        let server = attr(grpc, "server.address").unwrap();
        assert!(
            server == socket || server == format!("{socket}.calls"),
            "{server} is not {socket}"
        );
        for s in [py, tool] {
            assert_eq!(attr(s, "snakepit.pool").as_deref(), Some("default"));
            assert_eq!(int_attr(s, "snakepit.worker.pid"), Some(i64::from(pid)));
            assert!(attr(s, "snakepit.node").is_some_and(|n| !n.is_empty()));
        }
    }
}
