//! The OTel sink turns start/stop/exception pairs into spans and exports
//! them over OTLP/HTTP; a receiver decodes them with `opentelemetry-proto`.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use snakepit_core::config::OtelSinkConfig;
use snakepit_core::{builtin, EventContext, Sink, Value};
use snakepit_sinks::otel::OtelSink;
use snakepit_telemetry::{SpanOptions, Telemetry};
use support::otlp::{
    assert_rpc, attr, attr_keys, event_attr, hex, int_attr, keys, OtlpReceiver, RPC_KEYS,
    WORKER_KEYS,
};

fn config(endpoint: String) -> OtelSinkConfig {
    OtelSinkConfig {
        endpoint,
        service_name: "snakepit-test".into(),
        export_interval: std::time::Duration::from_millis(50),
        ..OtelSinkConfig::default()
    }
}

/// An OTel sink built from `config` and attached to `t` for every event.
fn attached(t: &Telemetry, config: OtelSinkConfig) -> Arc<OtelSink> {
    let sink = Arc::new(OtelSink::new(&config, t).unwrap());
    t.attach_sink("otel", &[], sink.clone()).unwrap();
    sink
}

fn ctx(span_id: u64, parent_span_id: u64, trace_id: u128) -> EventContext<'static> {
    EventContext {
        timestamp_ns: 0,
        correlation_id: Some("corr-1"),
        span_id,
        parent_span_id,
        trace_id,
    }
}

#[test]
fn nested_spans_keep_trace_parents_names_status_and_attributes() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let sink = attached(&t, config(receiver.endpoint()));

    let trace_id: u128 = 0x0af7651916cd43dd8448eb211c80319c;
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    let md = [
        ("rpc_method", Value::from("CallBatchStream")),
        ("tool", Value::from("nested_spans")),
        ("worker_id", Value::from("w1")),
        ("address", Value::from("[::1]:50051")),
        ("grpc_status", Value::from("OK")),
    ];
    let host = t.start_span_with(
        family,
        &md,
        SpanOptions {
            parent_span_id: 0,
            trace_id,
        },
    );
    let host_id = host.span_id();
    // What a worker sends back, folded by the host: the Python call span is a
    // child of the host span, user spans children of it.
    let (call, outer, inner, tool) = (0x11, 0x22, 0x33, 0x44);
    let call_md = [
        ("command", Value::from("nested_spans")),
        ("rpc_method", Value::from("CallBatchStream")),
        ("worker_id", Value::from("w1")),
        ("pool_name", Value::from("default")),
        ("python_pid", Value::Int(4242)),
        ("node", Value::from("host-a")),
    ];
    t.execute_with(
        builtin::PYTHON_CALL_START,
        &[("system_time", Value::Int(1))],
        &call_md,
        ctx(call, host_id, trace_id),
    );
    let outer_md = [
        ("span_name", Value::from("complex_operation")),
        ("worker_id", Value::from("w1")),
    ];
    t.execute_with(
        builtin::PYTHON_SPAN_START,
        &[],
        &outer_md,
        ctx(outer, call, trace_id),
    );
    let inner_md = [
        ("span_name", Value::from("inference")),
        ("model", Value::from("gpt-4")),
    ];
    t.execute_with(
        builtin::PYTHON_SPAN_START,
        &[],
        &inner_md,
        ctx(inner, outer, trace_id),
    );
    t.execute_with(
        builtin::PYTHON_SPAN_STOP,
        &[("duration", Value::Int(1_000))],
        &inner_md,
        ctx(inner, outer, trace_id),
    );
    t.execute_with(
        builtin::PYTHON_SPAN_STOP,
        &[("duration", Value::Int(2_000))],
        &outer_md,
        ctx(outer, call, trace_id),
    );
    t.execute_with(
        builtin::PYTHON_TOOL_EXECUTION_START,
        &[],
        &[("tool", Value::from("nested_spans"))],
        ctx(tool, call, trace_id),
    );
    t.execute_with(
        builtin::PYTHON_TOOL_EXECUTION_EXCEPTION,
        &[("duration", Value::Int(500))],
        &[
            ("tool", Value::from("nested_spans")),
            ("error_type", Value::from("ValueError")),
            ("error_message", Value::from("bad input")),
            (
                "traceback",
                Value::from("Traceback ...\nValueError: bad input\n"),
            ),
            ("worker_id", Value::from("w1")),
        ],
        ctx(tool, call, trace_id),
    );
    t.execute_with(
        builtin::PYTHON_CALL_STOP,
        &[("duration", Value::Int(5_000))],
        &call_md,
        ctx(call, host_id, trace_id),
    );
    host.stop();

    sink.shutdown(Duration::from_secs(5)).unwrap();
    let spans = receiver.wait_spans(5, Duration::from_secs(5));
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let by_name = |name: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span `{name}` in {spans:#?}"))
    };
    let grpc = by_name("grpc.call");
    let py = by_name("python.call");
    let outer_s = by_name("complex_operation");
    let inner_s = by_name("inference");
    let tool_s = by_name("tool.execution");
    for (service, s) in &spans {
        assert_eq!(service, "snakepit-test");
        assert_eq!(hex(&s.trace_id), format!("{trace_id:032x}"), "{}", s.name);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
        if s.name != "grpc.call" {
            let correlation = attr(s, "snakepit.correlation_id");
            assert_eq!(correlation.as_deref(), Some("corr-1"), "{}", s.name);
        }
    }
    assert!(grpc.parent_span_id.is_empty(), "the host span is the root");
    assert_eq!(hex(&grpc.span_id), format!("{host_id:016x}"));
    assert_eq!(py.parent_span_id, grpc.span_id);
    assert_eq!(outer_s.parent_span_id, py.span_id);
    assert_eq!(inner_s.parent_span_id, outer_s.span_id);
    assert_eq!(tool_s.parent_span_id, py.span_id);
    assert_eq!(grpc.kind, 3, "client");
    assert_eq!(py.kind, 2, "server");
    // Every attribute, by the OpenTelemetry semantic conventions.
    let tcp = ["network.transport", "server.address", "server.port"];
    let host = ["snakepit.tool.name", "snakepit.worker.id"];
    assert_eq!(attr_keys(grpc), keys(&[&RPC_KEYS, &tcp, &host]));
    for s in [grpc, py] {
        assert_rpc(s, "CallBatchStream", 0);
        assert_eq!(
            attr(s, "snakepit.tool.name").as_deref(),
            Some("nested_spans")
        );
        assert_eq!(attr(s, "snakepit.worker.id").as_deref(), Some("w1"));
    }
    assert_eq!(attr(grpc, "network.transport").as_deref(), Some("tcp"));
    assert_eq!(attr(grpc, "server.address").as_deref(), Some("::1"));
    assert_eq!(int_attr(grpc, "server.port"), Some(50051));
    let correlation = ["snakepit.correlation_id"];
    assert_eq!(
        attr_keys(py),
        keys(&[&RPC_KEYS, &WORKER_KEYS, &correlation])
    );
    assert_eq!(attr(py, "snakepit.pool").as_deref(), Some("default"));
    assert_eq!(int_attr(py, "snakepit.worker.pid"), Some(4242));
    assert_eq!(attr(py, "snakepit.node").as_deref(), Some("host-a"));
    assert_eq!(
        attr_keys(tool_s),
        keys(&[&host, &correlation, &["error.type"]])
    );
    // A user span's own metadata keep their keys; the host's are namespaced.
    assert_eq!(attr(inner_s, "model").as_deref(), Some("gpt-4"));
    assert_eq!(attr(outer_s, "snakepit.worker.id").as_deref(), Some("w1"));
    assert_eq!(
        attr_keys(outer_s),
        ["snakepit.correlation_id", "snakepit.worker.id"]
    );
    for s in [outer_s, inner_s, tool_s] {
        assert_eq!(s.kind, 1, "internal: {}", s.name);
    }
    assert_eq!(
        attr(inner_s, "span_name"),
        None,
        "the name is the span's name"
    );
    assert_eq!(
        inner_s.end_time_unix_nano - inner_s.start_time_unix_nano,
        1_000,
        "duration from the stop event"
    );
    // The exception: error status with the message, an exception event.
    let status = tool_s.status.as_ref().unwrap();
    assert_eq!(status.code, 2);
    assert_eq!(status.message, "bad input");
    assert_eq!(attr(tool_s, "error.type").as_deref(), Some("ValueError"));
    assert_eq!(tool_s.events.len(), 1);
    assert_eq!(tool_s.events[0].name, "exception");
    let exception = |key| event_attr(tool_s, "exception", key);
    assert_eq!(exception("exception.type").as_deref(), Some("ValueError"));
    assert_eq!(exception("exception.message").as_deref(), Some("bad input"));
    assert_eq!(
        exception("exception.stacktrace").as_deref(),
        Some("Traceback ...\nValueError: bad input\n")
    );
    for s in [grpc, py, outer_s, inner_s] {
        assert!(
            s.status.as_ref().is_none_or(|st| st.code != 2),
            "{}",
            s.name
        );
    }
    let requests = receiver.received.lock().unwrap().requests.clone();
    assert!(requests
        .iter()
        .all(|(path, ct)| path == "/v1/traces" && ct == "application/x-protobuf"));
    assert_eq!(sink.stats().exported, 5);
}

#[test]
fn a_full_queue_drops_and_counts_and_reports_overflow() {
    // A collector that refuses everything, and a queue of 4.
    let receiver = OtlpReceiver::start();
    *receiver.status.lock().unwrap() = 503;
    let t = Telemetry::new();
    let overflow = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let o = overflow.clone();
    t.attach("overflow", "snakepit.telemetry.sink.overflow", move |e| {
        assert_eq!(e.meta_str("sink"), Some("otel"));
        o.fetch_add(
            e.measurement("dropped")
                .and_then(Value::as_i64)
                .unwrap_or(0) as u64,
            Ordering::Relaxed,
        );
    })
    .unwrap();
    let d = dropped.clone();
    t.attach("dropped", "snakepit.telemetry.events.dropped", move |e| {
        if e.meta_str("where") == Some("sink") && e.meta_str("reason") == Some("queue_full") {
            d.fetch_add(
                e.measurement("count").and_then(Value::as_i64).unwrap_or(0) as u64,
                Ordering::Relaxed,
            );
        }
    })
    .unwrap();
    let sink = attached(
        &t,
        OtelSinkConfig {
            queue_capacity: 4,
            ..config(receiver.endpoint())
        },
    );
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    for _ in 0..5_000 {
        t.span(family, &[], || ());
    }
    sink.shutdown(Duration::from_secs(5)).unwrap();
    let stats = sink.stats();
    assert!(stats.dropped_queue_full > 0, "{stats:?}");
    assert!(stats.export_failed > 0, "a 503 loses the batch: {stats:?}");
    assert_eq!(overflow.load(Ordering::Relaxed), stats.dropped_queue_full);
    assert_eq!(dropped.load(Ordering::Relaxed), stats.dropped_queue_full);
    // Events after shutdown are dropped and counted, not blocking.
    t.span(family, &[], || ());
    assert_eq!(
        sink.stats().dropped_queue_full,
        stats.dropped_queue_full + 1
    );
}

#[test]
fn a_collector_that_is_briefly_unavailable_loses_nothing() {
    // 503, then 429 with Retry-After: 1, then 200: the batch is sent again.
    let receiver = OtlpReceiver::start();
    receiver.script.lock().unwrap().extend([503, 429]);
    let t = Telemetry::new();
    let sink = attached(&t, config(receiver.endpoint()));
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    for _ in 0..10 {
        t.span(family, &[], || ());
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let spans = receiver.wait_spans(10, Duration::from_secs(5));
    assert_eq!(spans.len(), 10);
    let stats = sink.stats();
    assert_eq!(receiver.refused.load(Ordering::SeqCst), 2);
    assert_eq!(stats.retries, 2, "{stats:?}");
    assert_eq!((stats.exported, stats.export_failed), (10, 0), "{stats:?}");

    // A refusal that is not retryable (400) loses the batch at once.
    receiver.script.lock().unwrap().push_back(400);
    for _ in 0..3 {
        t.span(family, &[], || ());
    }
    sink.shutdown(Duration::from_secs(5)).unwrap();
    let stats = sink.stats();
    assert_eq!(receiver.refused.load(Ordering::SeqCst), 3);
    assert_eq!((stats.retries, stats.export_failed), (2, 3), "{stats:?}");
}

#[test]
fn exports_reuse_one_connection() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let sink = attached(&t, config(receiver.endpoint()));
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    // Five exports, one span each.
    for i in 1..=5 {
        t.span(family, &[], || ());
        sink.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(receiver.wait_spans(i, Duration::from_secs(5)).len(), i);
    }
    assert_eq!(receiver.received.lock().unwrap().requests.len(), 5);
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 1);
    sink.shutdown(Duration::from_secs(5)).unwrap();
}

/// Emits `traces` traces of two spans each (a host call span and the
/// Python call span inside it) with random trace ids.
fn two_span_traces(t: &Telemetry, traces: usize) {
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    for i in 0..traces {
        let trace_id = snakepit_telemetry::new_trace_id();
        let host_md = [("tool", Value::from("ping"))];
        let host = t.start_span_with(
            family,
            &host_md,
            SpanOptions {
                parent_span_id: 0,
                trace_id,
            },
        );
        let call = 0x1000 + i as u64;
        let md = [("command", Value::from("ping"))];
        t.execute_with(
            builtin::PYTHON_CALL_START,
            &[("system_time", Value::Int(1))],
            &md,
            ctx(call, host.span_id(), trace_id),
        );
        t.execute_with(
            builtin::PYTHON_CALL_STOP,
            &[("duration", Value::Int(1000))],
            &md,
            ctx(call, host.span_id(), trace_id),
        );
        drop(host);
    }
}

#[test]
fn trace_sampling_exports_whole_traces_at_the_configured_ratio() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let sink = attached(
        &t,
        OtelSinkConfig {
            sample_ratio: 0.25,
            ..config(receiver.endpoint())
        },
    );
    let traces = 800;
    two_span_traces(&t, traces);
    sink.flush(Duration::from_secs(10)).unwrap();
    let stats = sink.stats();
    let spans = receiver.wait_spans(stats.exported as usize, Duration::from_secs(5));
    assert_eq!(spans.len() as u64, stats.exported);
    // Every exported trace is whole: its host span and the Python span in it.
    let mut by_trace = std::collections::HashMap::<String, Vec<String>>::new();
    for (_, span) in &spans {
        by_trace
            .entry(hex(&span.trace_id))
            .or_default()
            .push(span.name.clone());
    }
    for names in by_trace.values_mut() {
        names.sort();
        assert_eq!(*names, ["grpc.call", "python.call"]);
    }
    // About a quarter of the traces (200 expected; the bounds are 7 standard
    // deviations wide), and every span of the others is counted.
    let kept = by_trace.len();
    assert!(
        (120..=280).contains(&kept),
        "{kept} traces of {traces} kept"
    );
    assert_eq!(stats.sampled_out, 2 * (traces - kept) as u64, "{stats:?}");
    assert_eq!(stats.dropped_queue_full, 0);
    sink.shutdown(Duration::from_secs(5)).unwrap();

    // Ratio 0: nothing is exported, everything is counted.
    let t = Telemetry::new();
    let sink = attached(
        &t,
        OtelSinkConfig {
            sample_ratio: 0.0,
            ..config(receiver.endpoint())
        },
    );
    two_span_traces(&t, 50);
    sink.flush(Duration::from_secs(10)).unwrap();
    let stats = sink.stats();
    assert_eq!((stats.exported, stats.sampled_out), (0, 100), "{stats:?}");
    sink.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(receiver.received.lock().unwrap().spans.len(), kept * 2);
}

#[test]
fn unmatched_starts_are_bounded_and_counted() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let sink = attached(
        &t,
        OtelSinkConfig {
            max_open_spans: 10,
            ..config(receiver.endpoint())
        },
    );
    // User spans pair their start and end (the call spans need no pairing,
    // see the next test).
    for i in 1..=100u64 {
        t.execute_with(builtin::PYTHON_SPAN_START, &[], &[], ctx(i, 0, 7));
    }
    // A stop whose start was evicted still makes a span, from its duration.
    t.execute_with(
        builtin::PYTHON_SPAN_STOP,
        &[("duration", Value::Int(1_000_000))],
        &[],
        ctx(1, 0, 7),
    );
    sink.shutdown(Duration::from_secs(5)).unwrap();
    let stats = sink.stats();
    assert_eq!(
        stats.evicted, 100,
        "90 evicted + 10 open at shutdown: {stats:?}"
    );
    let spans = receiver.wait_spans(1, Duration::from_secs(2));
    assert_eq!(spans.len(), 1);
    let s = &spans[0].1;
    assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_000_000);
}

/// The three spans of every call are built from their end alone: their
/// starts are not held (so never evicted), the span starts `duration` before
/// its end, and its attributes are the end's metadata, which for these
/// families repeats the start's. A user span still pairs: metadata only its
/// start carried is kept.
#[test]
fn call_spans_are_built_from_their_end_and_user_spans_from_both_events() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let sink = attached(
        &t,
        OtelSinkConfig {
            max_open_spans: 1,
            ..config(receiver.endpoint())
        },
    );
    let at = |span_id, parent, ts| EventContext {
        timestamp_ns: ts,
        ..ctx(span_id, parent, 7)
    };
    let tool = [("tool", Value::from("predict"))];
    for (id, start, stop) in [
        (1, builtin::GRPC_CALL_START, builtin::GRPC_CALL_STOP),
        (2, builtin::PYTHON_CALL_START, builtin::PYTHON_CALL_STOP),
        (
            3,
            builtin::PYTHON_TOOL_EXECUTION_START,
            builtin::PYTHON_TOOL_EXECUTION_STOP,
        ),
    ] {
        // The start says 1,000 ns; the end says it began 5,000 ns before
        // 10,000 ns. The end wins.
        t.execute_with(start, &[], &tool, at(id, id - 1, 1_000));
        t.execute_with(
            stop,
            &[("duration", Value::Int(5_000))],
            &tool,
            at(id, id - 1, 10_000),
        );
    }
    // A user span: `phase` is only on its start.
    t.execute_with(
        builtin::PYTHON_SPAN_START,
        &[],
        &[
            ("span_name", Value::from("load")),
            ("phase", Value::from("warm")),
        ],
        at(4, 3, 2_000),
    );
    t.execute_with(
        builtin::PYTHON_SPAN_STOP,
        &[("duration", Value::Int(3_000))],
        &[("span_name", Value::from("load"))],
        at(4, 3, 9_000),
    );
    sink.flush(Duration::from_secs(5)).unwrap();
    let spans = receiver.wait_spans(4, Duration::from_secs(5));
    let by_name = |n: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no span {n}: {spans:?}"))
    };
    for name in ["grpc.call", "python.call", "tool.execution"] {
        let s = by_name(name);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (5_000, 10_000),
            "{name}"
        );
        assert_eq!(
            attr(s, "snakepit.tool.name").as_deref(),
            Some("predict"),
            "{name}"
        );
    }
    let user = by_name("load");
    // Paired: the start's timestamp and metadata.
    assert_eq!(
        (user.start_time_unix_nano, user.end_time_unix_nano),
        (2_000, 5_000)
    );
    assert_eq!(attr(user, "phase").as_deref(), Some("warm"));
    assert_eq!(hex(&user.parent_span_id), format!("{:016x}", 3));
    sink.shutdown(Duration::from_secs(5)).unwrap();
    // Three call starts with room for one open span: none was held.
    assert_eq!(sink.stats().evicted, 0, "{:?}", sink.stats());
}

#[test]
fn shutdown_meets_its_deadline_with_a_dead_collector_and_on_a_current_thread_runtime() {
    // A port nobody listens on: connection refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let t = Telemetry::new();
    let sink = attached(&t, config(endpoint));
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    for _ in 0..100 {
        t.span(family, &[], || ());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let result = rt.block_on(async {
        sink.flush(Duration::from_secs(2)).unwrap();
        sink.shutdown(Duration::from_secs(2))
    });
    assert!(result.is_ok(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sink.stats().export_failed, 100);
}

#[test]
fn endpoints_are_checked() {
    let t = Telemetry::new();
    for bad in [
        "collector:4318",
        "ftp://collector:4318",
        "http://",
        "https://",
    ] {
        let e = OtelSink::new(&config(bad.into()), &t)
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad), "{e}");
    }
}

/// Call spans are encoded on the emitting threads into per-thread chunks:
/// from many threads at once, every span is exported exactly once, full
/// chunks as their own requests and partly filled ones when the export
/// interval comes, with no flush.
#[test]
fn call_spans_from_many_threads_are_each_exported_once_without_a_flush() {
    let receiver = OtlpReceiver::start();
    let t = Telemetry::new();
    let sink = attached(
        &t,
        OtelSinkConfig {
            batch_size: 64,
            ..config(receiver.endpoint())
        },
    );
    let (threads, per_thread) = (4, 1_001);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
                for _ in 0..per_thread {
                    t.span(family, &[("tool", Value::from("ping"))], || ());
                }
            });
        }
    });
    let total = threads * per_thread;
    let spans = receiver.wait_spans(total, Duration::from_secs(10));
    let mut ids: Vec<_> = spans.iter().map(|(_, s)| s.span_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((spans.len(), ids.len()), (total, total));
    assert!(spans
        .iter()
        .all(|(_, s)| s.name == "grpc.call"
            && attr(s, "snakepit.tool.name").as_deref() == Some("ping")));
    // Batched: full chunks of 64, then the partly filled ones (one per
    // thread at most) when the interval comes.
    let requests = receiver.received.lock().unwrap().requests.len();
    assert!(
        (total / 64..=total / 64 + threads + 1).contains(&requests),
        "{requests} requests"
    );
    sink.flush(Duration::from_secs(5)).unwrap();
    let stats = sink.stats();
    assert_eq!(
        (stats.exported, stats.dropped_queue_full),
        (total as u64, 0)
    );
    sink.shutdown(Duration::from_secs(5)).unwrap();
}
