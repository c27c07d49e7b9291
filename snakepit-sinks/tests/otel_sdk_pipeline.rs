//! `OtelSdkSink` hands snakepit's spans to the application's own
//! `opentelemetry_sdk` pipeline: a `BatchSpanProcessor` whose exporter
//! posts OTLP/HTTP (converted with opentelemetry-proto's transform, as the
//! opentelemetry-rust OTLP exporters do) to a receiver that decodes every
//! request. The spans carry the application's resource, the `snakepit`
//! scope, and join the application's own span's trace; an unsampled trace
//! gives nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use snakepit_core::{builtin, EventContext, Sink, Value};
use snakepit_sinks::otel::{OtelError, OtelSdkSink};
use snakepit_telemetry::{SpanOptions, Telemetry};
use snakepit_testkit::otlp_exporter::OtlpHttpExporter;
use support::otlp::{attr, hex, OtlpReceiver};

fn ctx(span_id: u64, parent_span_id: u64, trace_id: u128) -> EventContext<'static> {
    EventContext {
        timestamp_ns: 0,
        correlation_id: Some("corr-1"),
        span_id,
        parent_span_id,
        trace_id,
    }
}

/// A call's spans as the host sees them: `grpc.call` under `parent`, the
/// worker's `python.call`, a user span `complex_operation` (paired from
/// start and stop) and a failing `tool.execution`.
fn one_call(t: &Telemetry, trace_id: u128, parent: u64, ids: u64) -> u64 {
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    let host_md = [("tool", Value::from("nested_spans"))];
    let host = t.start_span_with(
        family,
        &host_md,
        SpanOptions {
            parent_span_id: parent,
            trace_id,
        },
    );
    let host_id = host.span_id();
    let (call, user, tool) = (ids + 1, ids + 2, ids + 3);
    let user_md = [
        ("span_name", Value::from("complex_operation")),
        ("model", Value::from("m-7")),
    ];
    t.execute_with(
        builtin::PYTHON_SPAN_START,
        &[],
        &user_md,
        ctx(user, call, trace_id),
    );
    t.execute_with(
        builtin::PYTHON_SPAN_STOP,
        &[("duration", Value::Int(2_000))],
        &user_md,
        ctx(user, call, trace_id),
    );
    t.execute_with(
        builtin::PYTHON_TOOL_EXECUTION_EXCEPTION,
        &[("duration", Value::Int(500))],
        &[
            ("tool", Value::from("nested_spans")),
            ("error_type", Value::from("ValueError")),
            ("error_message", Value::from("bad input")),
        ],
        ctx(tool, call, trace_id),
    );
    t.execute_with(
        builtin::PYTHON_CALL_STOP,
        &[("duration", Value::Int(5_000))],
        &[("command", Value::from("nested_spans"))],
        ctx(call, host_id, trace_id),
    );
    host.stop();
    host_id
}

#[test]
fn snakepit_spans_go_through_the_applications_pipeline() {
    let receiver = OtlpReceiver::start();
    // The application's pipeline: its resource, its exporter.
    let resource = Resource::builder_empty()
        .with_service_name("checkout-app")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(OtlpHttpExporter::new(&receiver.endpoint()))
        .build();
    let t = Telemetry::new();
    let sink = Arc::new(
        OtelSdkSink::builder(&t)
            .with_resource(resource)
            .with_batch_exporter(OtlpHttpExporter::new(&receiver.endpoint()))
            .build()
            .unwrap(),
    );
    t.attach_sink("otel", &[], sink.clone()).unwrap();

    // A call made inside the application's own span.
    let (app_trace, app_span, host_id) = provider.tracer("app").in_span("app-request", |cx| {
        let sc = cx.span().span_context().clone();
        let trace = u128::from_be_bytes(sc.trace_id().to_bytes());
        let span = u64::from_be_bytes(sc.span_id().to_bytes());
        (trace, span, one_call(&t, trace, span, 0x100))
    });
    // A call in a trace its caller marked not sampled: nothing of it.
    let unsampled: u128 = 0x5b8efff798038103d269b633813fc60c;
    t.unsampled_traces().mark(unsampled);
    one_call(&t, unsampled, 0xeee19b7ec3c1b174, 0x200);

    sink.flush(Duration::from_secs(5)).unwrap();
    provider.force_flush().unwrap();
    let spans = receiver.wait_spans(5, Duration::from_secs(10));
    let scopes = receiver.received.lock().unwrap().scopes.clone();
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let by_name = |name: &str| {
        let i = spans
            .iter()
            .position(|(_, s)| s.name == name)
            .unwrap_or_else(|| panic!("no span `{name}` in {spans:#?}"));
        (&spans[i].1, scopes[i].as_str())
    };
    let (app, app_scope) = by_name("app-request");
    let (grpc, scope) = by_name("grpc.call");
    let (py, _) = by_name("python.call");
    let (user, _) = by_name("complex_operation");
    let (tool, _) = by_name("tool.execution");
    assert_eq!(app_scope, "app");
    assert_eq!(scope, "snakepit");
    for (i, (service, s)) in spans.iter().enumerate() {
        assert_eq!(service, "checkout-app", "{}: the app's resource", s.name);
        assert_eq!(hex(&s.trace_id), format!("{app_trace:032x}"), "{}", s.name);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{}", s.name);
        if s.name != "app-request" {
            assert_eq!(scopes[i], "snakepit", "{}", s.name);
            assert_eq!(s.flags & 0xff, 1, "{}: sampled", s.name);
        }
    }
    assert_eq!(hex(&app.span_id), format!("{app_span:016x}"));
    assert_eq!(grpc.parent_span_id, app.span_id);
    assert_eq!(hex(&grpc.span_id), format!("{host_id:016x}"));
    assert_eq!(py.parent_span_id, grpc.span_id);
    assert_eq!(user.parent_span_id, py.span_id);
    assert_eq!(tool.parent_span_id, py.span_id);
    assert_eq!(
        (grpc.kind, py.kind, user.kind),
        (3, 2, 1),
        "client, server, internal"
    );
    // The semantic conventions, the family's fixed attributes included.
    assert_eq!(
        attr(grpc, "snakepit.tool.name").as_deref(),
        Some("nested_spans")
    );
    assert_eq!(attr(grpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(grpc, "rpc.service").as_deref(),
        Some("snakepit.bridge.BridgeService")
    );
    assert_eq!(attr(user, "model").as_deref(), Some("m-7"));
    assert_eq!(
        attr(user, "snakepit.correlation_id").as_deref(),
        Some("corr-1")
    );
    assert_eq!(user.end_time_unix_nano - user.start_time_unix_nano, 2_000);
    let status = tool.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "bad input"));
    assert_eq!(attr(tool, "error.type").as_deref(), Some("ValueError"));
    assert_eq!(tool.events.len(), 1);
    assert_eq!(tool.events[0].name, "exception");
    for s in [grpc, py, user] {
        assert!(
            s.status.as_ref().is_none_or(|st| st.code != 2),
            "{}",
            s.name
        );
        assert!(s.events.is_empty(), "{}", s.name);
    }

    let stats = sink.stats();
    assert_eq!((stats.exported, stats.sampled_out), (4, 4), "{stats:?}");
    sink.shutdown(Duration::from_secs(5)).unwrap();
    // After shutdown a span is refused and counted.
    one_call(&t, app_trace, app_span, 0x300);
    assert_eq!(sink.stats().exported, 4);
    assert!(sink.stats().dropped_queue_full >= 3, "{:?}", sink.stats());
    provider.shutdown().unwrap();
}

/// Open user spans beyond `max_open_spans` are evicted, counted and
/// reported as dropped (`unmatched_span`) on flush; their ends still give
/// spans (their start from the duration).
#[test]
fn evicted_starts_are_counted_and_reported() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let reported = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r = reported.clone();
    t.attach("dropped", "snakepit.telemetry.events.dropped", move |e| {
        let count = e.measurement("count").and_then(Value::as_i64).unwrap_or(0);
        let what = (
            e.meta_str("where"),
            e.meta_str("sink"),
            e.meta_str("reason"),
        );
        let what = (
            what.0.map(String::from),
            what.1.map(String::from),
            what.2.map(String::from),
        );
        r.lock().unwrap().push((what, count));
    })
    .unwrap();
    let sink = Arc::new(
        OtelSdkSink::builder(&t)
            .with_batch_exporter(OtlpHttpExporter::new(&receiver.endpoint()))
            .with_max_open_spans(2)
            .build()
            .unwrap(),
    );
    t.attach_sink("otel", &[], sink.clone()).unwrap();
    let md = [("span_name", Value::from("step"))];
    for id in 1..=5 {
        t.execute_with(builtin::PYTHON_SPAN_START, &[], &md, ctx(id, 0, 7));
    }
    for id in 1..=5 {
        let stop = [("duration", Value::Int(10))];
        t.execute_with(builtin::PYTHON_SPAN_STOP, &stop, &md, ctx(id, 0, 7));
    }
    sink.flush(Duration::from_secs(5)).unwrap();
    let stats = sink.stats();
    assert_eq!((stats.evicted, stats.exported), (3, 5), "{stats:?}");
    let want = (
        Some("sink".into()),
        Some("otel".into()),
        Some("unmatched_span".into()),
    );
    assert_eq!(*reported.lock().unwrap(), [(want, 3)]);
    assert_eq!(receiver.wait_spans(5, Duration::from_secs(10)).len(), 5);
    sink.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_sink_without_a_pipeline_is_refused() {
    let err = OtelSdkSink::builder(&Telemetry::new()).build().unwrap_err();
    assert!(matches!(err, OtelError::NoSdkPipeline));
    assert!(err.to_string().contains("with_span_processor"), "{err}");
}
