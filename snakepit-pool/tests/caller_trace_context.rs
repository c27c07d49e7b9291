//! The parent of a call's `grpc.call` span, checked end to end through a
//! real worker, the OTel sink and an OTLP receiver that decodes with
//! opentelemetry-proto: the caller's current OpenTelemetry span (an SDK
//! tracer's, or a `tracing` span's under a `tracing-opentelemetry` layer),
//! else `CallOptions::parent`, else a new root. Below it the chain is
//! always grpc.call → python.call → tool.execution → user spans, in one
//! trace; an unsampled parent (flags 00) reaches the worker, and nothing of
//! its call is exported.

mod common;

use std::time::{Duration, Instant};

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::json;
use snakepit_core::Sink;
use snakepit_grpc::{CallOptions, ConnectOptions, TraceParent, WorkerAddress, WorkerClient};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::otlp::{assert_rpc, hex, OtlpReceiver};
use snakepit_testkit::{WorkerProcess, SHOWCASE};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

type Span = opentelemetry_proto::tonic::trace::v1::Span;

/// The ids of an OTel span context as a [`TraceParent`].
fn of(sc: &opentelemetry::trace::SpanContext) -> TraceParent {
    TraceParent::new(
        u128::from_be_bytes(sc.trace_id().to_bytes()),
        u64::from_be_bytes(sc.span_id().to_bytes()),
    )
}

/// Checks the chain of the `nested_spans` call in `trace`, whose
/// `grpc.call` has `parent` (`None`: a root), and returns its spans' names.
fn check_chain(spans: &[Span], trace: u128, parent: Option<u64>) {
    let trace = format!("{trace:032x}");
    let in_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace).collect();
    let find = |name: &str, parent: &[u8]| {
        *in_trace
            .iter()
            .find(|s| s.name == name && s.parent_span_id == parent)
            .unwrap_or_else(|| panic!("no {name} under {} in {in_trace:#?}", hex(parent)))
    };
    let want_parent = parent
        .map(u64::to_be_bytes)
        .map(Vec::from)
        .unwrap_or_default();
    let grpc = find("grpc.call", &want_parent);
    let py = find("python.call", &grpc.span_id);
    let tool = find("tool.execution", &py.span_id);
    let user = find("complex_operation", &tool.span_id);
    let pre = find("preprocessing", &user.span_id);
    assert_eq!(in_trace.len(), 6, "{in_trace:#?}");
    // Span kinds by the semantic conventions: the host's call is the
    // client, the worker's the server, the rest internal.
    let kinds: Vec<i32> = [grpc, py, tool, user, pre].iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [3, 2, 1, 1, 1]);
    for s in [grpc, py] {
        assert_rpc(s, "CallBatchStream", 0);
    }
}

#[test]
fn grpc_call_is_a_child_of_the_callers_context() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let otel = common::otel_sink_to(&receiver, &t);
    let worker = WorkerProcess::start(SHOWCASE, "w-parent");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(WorkerClient::connect(
            t.clone(),
            ConnectOptions::new(
                WorkerAddress::Unix(worker.socket().unwrap().to_path_buf()),
                "w-parent",
            ),
        ))
        .expect("connect");
    let call = |opts: CallOptions| {
        let out = rt
            .block_on(client.execute("nested_spans", json!({}), opts))
            .expect("nested_spans");
        assert!(out.value.get("processed").is_some(), "{:?}", out.value);
    };
    let provider = SdkTracerProvider::builder().build();

    // (a) Inside an active span of an OpenTelemetry SDK tracer.
    let tracer = provider.tracer("caller");
    let otel_parent = tracer.in_span("caller-otel", |cx| {
        call(CallOptions::default());
        of(cx.span().span_context())
    });

    // (b) Inside a `tracing` span under a tracing-opentelemetry layer; it
    // wins over an explicit parent.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tracing")));
    let explicit = TraceParent::new(0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331);
    let tracing_parent = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("caller-tracing");
        let _entered = span.enter();
        call(CallOptions::default().parent(explicit));
        of(span.context().span().span_context())
    });
    assert_ne!(tracing_parent.trace_id, otel_parent.trace_id);

    // (c) An explicit parent, no OpenTelemetry context.
    call(CallOptions::default().parent(explicit));

    // (e) An unsampled parent (flags 00): the worker sees the flags, and no
    // span of the call is exported, host or worker (all 9 reach the sink
    // and are counted as sampled out).
    let unsampled: TraceParent = "00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-00"
        .parse()
        .unwrap();
    call(CallOptions::default().parent(unsampled));
    let seen = rt
        .block_on(client.execute(
            "whoami",
            json!({}),
            CallOptions::default().parent(unsampled),
        ))
        .expect("whoami")
        .value;
    let current = seen["current_traceparent"].as_str().unwrap();
    assert!(
        current.starts_with("00-5b8efff798038103d269b633813fc60c-") && current.ends_with("-00"),
        "{seen}"
    );

    // (d) No parent at all: a new root.
    call(CallOptions::default());

    // The worker's events reach the host on its telemetry stream, which
    // this runtime drives: wait inside it.
    let spans = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Span> = receiver
                .wait_spans(0, Duration::ZERO)
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            if spans.iter().filter(|s| s.name == "preprocessing").count() >= 4
                && otel.stats().sampled_out >= 9
            {
                break spans;
            }
            let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            assert!(Instant::now() < deadline, "timed out: {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    check_chain(&spans, otel_parent.trace_id, Some(otel_parent.span_id));
    check_chain(
        &spans,
        tracing_parent.trace_id,
        Some(tracing_parent.span_id),
    );
    check_chain(&spans, explicit.trace_id, Some(explicit.span_id));
    let known = [
        otel_parent.trace_id,
        tracing_parent.trace_id,
        explicit.trace_id,
    ]
    .map(|t| format!("{t:032x}"));
    let root = spans
        .iter()
        .find(|s| s.name == "grpc.call" && !known.contains(&hex(&s.trace_id)))
        .expect("the root call's grpc.call");
    assert!(root.parent_span_id.is_empty(), "{root:#?}");
    let root_trace = u128::from_str_radix(&hex(&root.trace_id), 16).unwrap();
    check_chain(&spans, root_trace, None);

    rt.block_on(client.close());
    otel.shutdown(Duration::from_secs(5)).unwrap();
    let unsampled_trace = format!("{:032x}", unsampled.trace_id);
    let exported: Vec<Span> = receiver
        .wait_spans(0, Duration::ZERO)
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == unsampled_trace)
        .collect();
    assert!(exported.is_empty(), "{exported:#?}");
    assert_eq!(otel.stats().sampled_out, 9, "{:?}", otel.stats());
    drop(worker);
}
