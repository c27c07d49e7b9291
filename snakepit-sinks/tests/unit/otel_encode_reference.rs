//! The reference the OTel sink's span encoding is checked against: spans
//! built as prost messages the way the sink built them before it encoded
//! spans directly, and cases the direct encoding must match byte for byte.
//!
//! Test-only: compiled into the crate's unit tests as
//! `otel::encode_reference` (see `src/otel.rs`), since it reaches the
//! sink's private encoder.

use prost::Message;
use snakepit_core::{SpanRole, Value};

use super::fields::{FieldValue, PackedFields};
use super::pairing::{encode, encode_event, span_info};
use super::proto::{self, any_value, AnyValue, KeyValue};
use super::semconv::{self, Key};
use super::{SpanEvent, SpanInfo};

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn value(v: &FieldValue<'_>) -> AnyValue {
    AnyValue {
        value: Some(match v {
            FieldValue::Int(i) => any_value::Value::IntValue(*i),
            FieldValue::Float(f) => any_value::Value::DoubleValue(*f),
            FieldValue::Str(s) => any_value::Value::StringValue(text(s).to_string()),
        }),
    }
}

fn put(attrs: &mut Vec<KeyValue>, key: &[u8], v: &FieldValue<'_>) {
    let key = text(key);
    if let Some(kv) = attrs.iter_mut().find(|kv| kv.key == key) {
        kv.value = Some(value(v));
    } else {
        attrs.push(KeyValue {
            key: key.to_string(),
            value: Some(value(v)),
        });
    }
}

fn bytes_of_id(id: u64) -> Vec<u8> {
    if id == 0 {
        Vec::new()
    } else {
        id.to_be_bytes().to_vec()
    }
}

/// The span as prost messages, the way the sink built it before encoding
/// spans directly: the reference the direct encoding must match.
fn build(
    info: &SpanInfo,
    start: Option<&SpanEvent>,
    end: &SpanEvent,
    trace_id: u128,
) -> proto::Span {
    let (start_ns, end_ns, parent) = super::pairing::span_bounds(start, end);
    let mut attrs: Vec<KeyValue> = Vec::with_capacity(8);
    let mut name = None;
    let correlation = end
        .fields
        .correlation_id()
        .or_else(|| start.and_then(|s| s.fields.correlation_id()));
    for (k, v) in semconv::fixed(info.family) {
        put(&mut attrs, k, v);
    }
    let failed = end.role == SpanRole::Exception;
    let mut put_mapped = |attrs: &mut Vec<KeyValue>, key, k: &[u8], v: FieldValue<'_>| match key {
        Key::To(key) => put(attrs, key, &v),
        Key::Same => put(attrs, k, &v),
        Key::Name => name = v.as_str().map(|s| text(s).to_string()),
        Key::StatusCode => put(
            attrs,
            b"rpc.grpc.status_code",
            &FieldValue::Int(semconv::status_code(v)),
        ),
        Key::Address => {
            let (net, n) = semconv::address(v.as_str().unwrap_or(b""));
            if v.as_str().is_some() {
                for (k, v) in &net[..n] {
                    put(attrs, k, v);
                }
            }
        }
        Key::Exception | Key::Skip => {}
    };
    for ev in start.iter().copied().chain(std::iter::once(end)) {
        for (k, v) in ev.fields.metadata() {
            let key = semconv::key_of(info.family, info.named_by_metadata, failed, k);
            put_mapped(&mut attrs, key, k, v);
        }
    }
    for (k, v) in end.fields.measurements() {
        if k != b"duration" {
            let key = semconv::key_of(info.family, false, false, k);
            put_mapped(&mut attrs, key, k, v);
        }
    }
    if let Some(c) = correlation {
        put(&mut attrs, b"snakepit.correlation_id", &FieldValue::Str(c));
    }
    let mut events = Vec::new();
    let status = if failed {
        let meta = |key: &[u8]| {
            end.fields
                .meta(key)
                .and_then(|v| v.as_str().map(|s| text(s).to_string()))
        };
        let error_type = meta(b"error_type").unwrap_or_else(|| "error".to_string());
        let message = meta(b"error_message").unwrap_or_else(|| error_type.clone());
        put(
            &mut attrs,
            b"error.type",
            &FieldValue::Str(error_type.as_bytes()),
        );
        let mut attributes = vec![
            KeyValue::string("exception.type", error_type),
            KeyValue::string("exception.message", message.clone()),
        ];
        if let Some(tb) = meta(b"traceback").filter(|t| !t.is_empty()) {
            attributes.push(KeyValue::string("exception.stacktrace", tb));
        }
        events.push(proto::SpanEvent {
            time_unix_nano: end_ns,
            name: "exception".into(),
            attributes,
        });
        Some(proto::Status {
            message,
            code: proto::STATUS_ERROR,
        })
    } else {
        None
    };
    proto::Span {
        trace_id: trace_id.to_be_bytes().to_vec(),
        span_id: bytes_of_id(end.span_id),
        parent_span_id: bytes_of_id(parent),
        name: name.unwrap_or_else(|| info.name.clone()),
        kind: info.kind,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: end_ns.max(start_ns),
        attributes: attrs,
        events,
        status,
    }
}

/// An event with every field packed (`full`) or as the sink packs it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn event(
    full: bool,
    role: SpanRole,
    span_id: u64,
    parent_span_id: u64,
    trace_id: u128,
    timestamp_ns: u64,
    duration_ns: Option<u64>,
    measurements: &[(&str, Value<'_>)],
    metadata: &[(&str, Value<'_>)],
    correlation: Option<&str>,
) -> SpanEvent {
    SpanEvent {
        role,
        family: 0,
        span_id,
        parent_span_id,
        trace: [(trace_id >> 64) as u64, trace_id as u64],
        timestamp_ns,
        duration: duration_ns.unwrap_or(super::NO_DURATION),
        fields: if full {
            PackedFields::pack(measurements, metadata, correlation, |_| true)
        } else {
            PackedFields::new(measurements, metadata, correlation, role != SpanRole::Start)
        },
    }
}

type Cases = ([Option<SpanEvent>; 4], [SpanEvent; 5]);

/// The fields of an end event (span id 7).
pub(crate) struct RawEnd<'a> {
    role: SpanRole,
    parent_span_id: u64,
    trace_id: u128,
    timestamp_ns: u64,
    duration_ns: Option<u64>,
    measurements: Vec<(&'a str, Value<'a>)>,
    metadata: Vec<(&'a str, Value<'a>)>,
    correlation: Option<&'a str>,
}

/// Ends covering exceptions, duplicates, value types, spilled and dropped
/// fields.
fn end_cases<'a>(
    many_m: &[(&'a str, Value<'a>)],
    many_md: &[(&'a str, Value<'a>)],
    long: &'a str,
) -> [RawEnd<'a>; 5] {
    let raw = |role, parent_span_id, trace_id, timestamp_ns, duration_ns| RawEnd {
        role,
        parent_span_id,
        trace_id,
        timestamp_ns,
        duration_ns,
        measurements: Vec::new(),
        metadata: Vec::new(),
        correlation: None,
    };
    [
        RawEnd {
            measurements: many_m.to_vec(),
            metadata: many_md.to_vec(),
            ..raw(SpanRole::Stop, 0, 1, 20, Some(7))
        },
        RawEnd {
            measurements: vec![("duration", Value::Int(2_500)), ("bytes", Value::Int(10))],
            metadata: vec![
                ("tool", Value::from("other")),
                ("ratio", Value::Float(0.25)),
                ("status", Value::from(long)),
                ("address", Value::from("127.0.0.1:50051")),
                ("worker_id", Value::from("w1")),
                ("rpc_method", Value::from("CallBatchStream")),
                ("grpc_status", Value::from("OK")),
            ],
            ..raw(SpanRole::Stop, 0, 0, 9_000, Some(2_500))
        },
        RawEnd {
            measurements: vec![("duration", Value::Int(10_000))],
            metadata: vec![
                ("error_type", Value::from("ValueError")),
                ("error_message", Value::from("bad input")),
                (
                    "traceback",
                    Value::from("Traceback (most recent call last):"),
                ),
                ("span_name", Value::from("renamed")),
                ("grpc_status", Value::from("DEADLINE_EXCEEDED")),
                ("address", Value::from("unix:/tmp/w.sock")),
            ],
            correlation: Some("corr-end"),
            ..raw(SpanRole::Exception, 9, u128::MAX, 500, Some(10_000))
        },
        RawEnd {
            metadata: vec![("error_type", Value::Int(1))],
            ..raw(SpanRole::Exception, 0, 0, 3, None)
        },
        raw(SpanRole::Stop, 0, 0, 1, None),
    ]
}

/// Starts and ends covering names, kinds, ids, exceptions, duplicates,
/// value types and spilled fields.
fn cases(full: bool, long: &str) -> Cases {
    // More fields than kept: measurements count towards the limit.
    let many_m: Vec<(&str, Value)> = [("duration", Value::Int(7))]
        .into_iter()
        .chain((0..10).map(|i| ("m", Value::Int(i))))
        .collect();
    let many_md: Vec<(&str, Value)> = (0..5).map(|i| ("md", Value::Int(i))).collect();
    let mut starts = [
        None,
        Some(event(
            full,
            SpanRole::Start,
            7,
            3,
            0,
            1_000,
            None,
            &[("system_time", Value::Int(1))],
            &[
                ("span_name", Value::from("inference")),
                ("tool", Value::from("predict")),
                ("error_message", Value::from("hidden")),
                ("n", Value::Int(-4)),
            ],
            Some("corr-start"),
        )),
        Some(event(
            full,
            SpanRole::Start,
            7,
            0,
            5,
            0,
            None,
            &[],
            &[("span_name", Value::Int(3)), ("", Value::from(""))],
            None,
        )),
    ];
    let starts = [
        starts[0].take(),
        starts[1].take(),
        starts[2].take(),
        Some(event(
            full,
            SpanRole::Start,
            7,
            0,
            1,
            10,
            None,
            &many_m,
            &many_md,
            None,
        )),
    ];
    let ends = end_cases(&many_m, &many_md, long).map(|r| {
        event(
            full,
            r.role,
            7,
            r.parent_span_id,
            r.trace_id,
            r.timestamp_ns,
            r.duration_ns,
            &r.measurements,
            &r.metadata,
            r.correlation,
        )
    });
    (starts, ends)
}

/// Direct encoding equals prost's encoding of the built messages.
#[test]
fn direct_encoding_matches_prost_messages() {
    let long = "y".repeat(20_000);
    let infos = [
        span_info("snakepit.grpc.call"),
        span_info("snakepit.python.call"),
        span_info("snakepit.python.span"),
        span_info("snakepit.python.tool.execution"),
    ];
    let (starts, ends) = cases(false, &long);
    // The reference sees every field, as the sink once packed them.
    let (full_starts, full_ends) = cases(true, &long);
    let mut cases = 0;
    for info in &infos {
        for (start, full_start) in starts.iter().zip(&full_starts) {
            for (end, full_end) in ends.iter().zip(&full_ends) {
                for trace_id in [0, 1, u128::MAX] {
                    let mut direct = Vec::new();
                    encode(info, start.as_ref(), end, trace_id, &mut direct);
                    let built = build(info, full_start.as_ref(), full_end, trace_id);
                    let expected = proto::ScopeSpans {
                        scope: None,
                        spans: vec![built],
                    }
                    .encode_to_vec();
                    assert_eq!(direct, expected, "{info:?}");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 4 * 4 * 5 * 3);
}

/// A span encoded on the emitting thread straight from its end event equals
/// the one the export thread encodes from the event's queued copy.
#[test]
fn span_from_the_event_matches_span_from_its_queued_copy() {
    use snakepit_core::{builtin, Catalog, Event, EventContext};

    let catalog = Catalog::builtin();
    let spec = catalog.spec(builtin::PYTHON_CALL_STOP);
    let long = "y".repeat(20_000);
    let many_m: Vec<(&str, Value)> = [("duration", Value::Int(7))]
        .into_iter()
        .chain((0..10).map(|i| ("m", Value::Int(i))))
        .collect();
    let many_md: Vec<(&str, Value)> = (0..5).map(|i| ("md", Value::Int(i))).collect();
    let mut cases = 0;
    for info in [
        span_info("snakepit.grpc.call"),
        span_info("snakepit.python.call"),
        span_info("snakepit.python.tool.execution"),
    ] {
        for r in end_cases(&many_m, &many_md, &long) {
            let event = Event::new(
                builtin::PYTHON_CALL_STOP,
                spec,
                &r.measurements,
                &r.metadata,
                EventContext {
                    timestamp_ns: r.timestamp_ns,
                    correlation_id: r.correlation,
                    span_id: 7,
                    parent_span_id: r.parent_span_id,
                    trace_id: r.trace_id,
                },
            );
            let queued = self::event(
                false,
                r.role,
                7,
                r.parent_span_id,
                r.trace_id,
                r.timestamp_ns,
                super::pairing::duration_of(&event),
                &r.measurements,
                &r.metadata,
                r.correlation,
            );
            for trace_id in [1, u128::MAX] {
                let mut from_event = Vec::new();
                encode_event(&info, r.role, &event, trace_id, &mut from_event);
                let mut from_copy = Vec::new();
                encode(&info, None, &queued, trace_id, &mut from_copy);
                assert_eq!(from_event, from_copy, "{info:?}");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 3 * 5 * 2);
}
