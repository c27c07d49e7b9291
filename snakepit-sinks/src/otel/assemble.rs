//! Pairing start/stop/exception events into spans, with bounded state.

use std::collections::{HashMap, VecDeque};

use std::hash::{BuildHasherDefault, Hasher};

use snakepit_core::SpanRole;

use super::fields::FieldValue;
use super::proto::{self, any_value, AnyValue, KeyValue};
use super::{SpanEvent, SpanInfo};

/// The span name of a span family prefix: `snakepit.grpc.call` is
/// `grpc.call`, `snakepit.python.call` is `python.call`,
/// `snakepit.python.tool.execution` is `tool.execution`, and a Python user
/// span `snakepit.python.inference` is `inference`.
pub fn span_name_of(prefix: &str) -> String {
    let name = prefix.strip_prefix("snakepit.").unwrap_or(prefix);
    match name.strip_prefix("python.") {
        Some("call") | None => name.to_string(),
        Some(rest) => rest.to_string(),
    }
}

pub(crate) fn span_info(prefix: &str) -> SpanInfo {
    let kind = match prefix {
        "snakepit.grpc.call" => proto::span_kind::CLIENT,
        "snakepit.python.call" => proto::span_kind::SERVER,
        _ => proto::span_kind::INTERNAL,
    };
    SpanInfo {
        name: span_name_of(prefix),
        kind,
        named_by_metadata: prefix == "snakepit.python.span",
    }
}

/// A started span waiting for its end.
struct Open {
    start: SpanEvent,
    trace_id: u128,
}

/// A hasher for span ids, which are random already.
#[derive(Default)]
struct SpanIdHasher(u64);

impl Hasher for SpanIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Spread sequential ids (tests, benchmarks) over the table too.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Open spans by id, bounded: the oldest are evicted first.
pub(crate) struct Pairing {
    open: HashMap<u64, Open, BuildHasherDefault<SpanIdHasher>>,
    order: VecDeque<u64>,
    max_open: usize,
}

impl Pairing {
    pub fn new(max_open: usize) -> Pairing {
        Pairing {
            open: HashMap::default(),
            order: VecDeque::new(),
            max_open: max_open.max(1),
        }
    }

    /// Takes one event; returns a finished span and how many open spans were
    /// evicted to make room (or were unusable).
    pub fn accept(&mut self, event: SpanEvent) -> (Option<proto::Span>, u64) {
        match event.role {
            SpanRole::Start => {
                if event.span_id == 0 {
                    // Nothing can pair with it.
                    return (None, 1);
                }
                let trace_id = self.trace_of(&event);
                let mut evicted = 0;
                while self.open.len() >= self.max_open {
                    match self.order.pop_front() {
                        Some(old) => {
                            if self.open.remove(&old).is_some() {
                                evicted += 1;
                            }
                        }
                        None => break,
                    }
                }
                self.order.push_back(event.span_id);
                // Keep the queue of ids from growing with closed spans.
                if self.order.len() > 2 * self.max_open {
                    let open = &self.open;
                    self.order.retain(|id| open.contains_key(id));
                }
                self.open.insert(
                    event.span_id,
                    Open {
                        start: event,
                        trace_id,
                    },
                );
                (None, evicted)
            }
            SpanRole::Stop | SpanRole::Exception => {
                if event.span_id == 0 {
                    // A span needs an id; a span-less stop is not exportable.
                    return (None, 1);
                }
                let open = self.open.remove(&event.span_id);
                let trace_id = match &open {
                    Some(o) => o.trace_id,
                    None => self.trace_of(&event),
                };
                (Some(build(open.map(|o| o.start), event, trace_id)), 0)
            }
        }
    }

    /// Open spans left at shutdown.
    pub fn abandon(&mut self) -> u64 {
        let n = self.open.len() as u64;
        self.open.clear();
        self.order.clear();
        n
    }

    fn trace_of(&self, event: &SpanEvent) -> u128 {
        if event.trace_id != 0 {
            return event.trace_id;
        }
        if let Some(parent) = self.open.get(&event.parent_span_id) {
            return parent.trace_id;
        }
        // Derived from the span id, so the start and the end agree.
        let id = if event.parent_span_id != 0 {
            event.parent_span_id
        } else {
            event.span_id
        };
        let mixed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (u128::from(mixed) << 64) | u128::from(id.rotate_left(17) | 1)
    }
}

fn value(v: &FieldValue<'_>) -> AnyValue {
    AnyValue {
        value: Some(match v {
            FieldValue::Int(i) => any_value::Value::IntValue(*i),
            FieldValue::Float(f) => any_value::Value::DoubleValue(*f),
            FieldValue::Str(s) => any_value::Value::StringValue(s.to_string()),
        }),
    }
}

fn put(attrs: &mut Vec<KeyValue>, key: &str, v: &FieldValue<'_>) {
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

/// Builds the span from its start (if known) and its end.
fn build(start: Option<SpanEvent>, end: SpanEvent, trace_id: u128) -> proto::Span {
    let info = end.family.clone();
    let end_ns = match (&start, end.duration_ns) {
        (Some(s), Some(d)) => s.timestamp_ns.saturating_add(d),
        _ => end.timestamp_ns,
    };
    let start_ns = match (&start, end.duration_ns) {
        (Some(s), _) => s.timestamp_ns,
        (None, Some(d)) => end.timestamp_ns.saturating_sub(d),
        (None, None) => end.timestamp_ns,
    };
    let parent = match (end.parent_span_id, &start) {
        (0, Some(s)) => s.parent_span_id,
        (p, _) => p,
    };
    let mut attrs: Vec<KeyValue> = Vec::with_capacity(8);
    let mut name = None;
    let correlation = end
        .fields
        .correlation_id()
        .or_else(|| start.as_ref().and_then(|s| s.fields.correlation_id()));
    for ev in start.iter().chain(std::iter::once(&end)) {
        for (k, v) in ev.fields.metadata() {
            match k {
                "span_name" if info.named_by_metadata => {
                    name = v.as_str().map(str::to_string);
                }
                "error_message" => {}
                _ => put(&mut attrs, k, &v),
            }
        }
    }
    for (k, v) in end.fields.measurements() {
        if k != "duration" {
            put(&mut attrs, k, &v);
        }
    }
    if let Some(c) = correlation {
        put(&mut attrs, "snakepit.correlation_id", &FieldValue::Str(c));
    }
    let mut events = Vec::new();
    let status = if end.role == SpanRole::Exception {
        let meta = |key: &str| {
            end.fields
                .meta(key)
                .and_then(|v| v.as_str().map(str::to_string))
        };
        let error_type = meta("error_type").unwrap_or_else(|| "error".to_string());
        let message = meta("error_message").unwrap_or_else(|| error_type.clone());
        put(&mut attrs, "error.type", &FieldValue::Str(&error_type));
        events.push(proto::SpanEvent {
            time_unix_nano: end_ns,
            name: "exception".into(),
            attributes: vec![
                KeyValue::string("exception.type", error_type),
                KeyValue::string("exception.message", message.clone()),
            ],
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
