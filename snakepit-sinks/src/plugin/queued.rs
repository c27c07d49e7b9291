//! The owned copy of an event that waits in a plugin's queue, and the ABI
//! view built from it on the plugin's thread.
//!
//! One copy costs two allocations (all text in one buffer, all fields in
//! one vector); the view borrows from it and reuses a per-thread field
//! buffer, so delivering allocates nothing.

use std::borrow::Cow;

use snakepit_core::{Event, Field, Value};
use snakepit_sink_abi as abi;

#[derive(Clone, Copy)]
enum Slot {
    Int(i64),
    Float(f64),
    /// Byte range in `text`.
    Str(u32, u32),
}

#[derive(Clone, Copy)]
struct QueuedField {
    key: (u32, u32),
    value: Slot,
}

/// An event copied out of the emitting call.
pub(crate) struct QueuedEvent {
    name: Cow<'static, str>,
    timestamp_ns: u64,
    span_id: u64,
    parent_span_id: u64,
    trace_id: u128,
    /// Correlation id first (`correlation_len` bytes), then keys and strings.
    text: String,
    correlation_len: u32,
    /// Measurements first (`measurements_len`), then metadata.
    fields: Vec<QueuedField>,
    measurements_len: u32,
}

fn text_len(fields: &[Field<'_>]) -> usize {
    fields
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum()
}

fn push(text: &mut String, s: &str) -> (u32, u32) {
    let start = text.len() as u32;
    text.push_str(s);
    (start, s.len() as u32)
}

impl QueuedEvent {
    /// Copies `event`.
    pub(crate) fn new(event: &Event<'_>) -> Self {
        let correlation = event.correlation_id().unwrap_or("");
        let (ms, md) = (event.measurements(), event.metadata());
        let mut text = String::with_capacity(correlation.len() + text_len(ms) + text_len(md));
        text.push_str(correlation);
        let mut fields = Vec::with_capacity(ms.len() + md.len());
        for (key, value) in ms.iter().chain(md) {
            let key = push(&mut text, key);
            let value = match value {
                Value::Int(i) => Slot::Int(*i),
                Value::Float(f) => Slot::Float(*f),
                Value::Str(s) => {
                    let (start, len) = push(&mut text, s);
                    Slot::Str(start, len)
                }
            };
            fields.push(QueuedField { key, value });
        }
        QueuedEvent {
            name: event.spec().name.clone(),
            timestamp_ns: event.timestamp_ns(),
            span_id: event.span_id(),
            parent_span_id: event.parent_span_id(),
            trace_id: event.trace_id(),
            text,
            correlation_len: correlation.len() as u32,
            fields,
            measurements_len: ms.len() as u32,
        }
    }

    fn str_at(&self, (start, len): (u32, u32)) -> abi::Str {
        let s = &self.text[start as usize..(start + len) as usize];
        abi::Str::new(s)
    }

    /// Fills `buf` with the fields and returns the view. The view points
    /// into `self` and `buf`; it is valid while both are untouched.
    pub(crate) fn view(&self, buf: &mut Vec<abi::Field>) -> abi::EventView {
        buf.clear();
        buf.extend(self.fields.iter().map(|f| abi::Field {
            key: self.str_at(f.key),
            value: match f.value {
                Slot::Int(i) => abi::Value {
                    tag: abi::VALUE_INT,
                    payload: abi::ValuePayload { int: i },
                },
                Slot::Float(x) => abi::Value {
                    tag: abi::VALUE_FLOAT,
                    payload: abi::ValuePayload { float: x },
                },
                Slot::Str(start, len) => abi::Value {
                    tag: abi::VALUE_STR,
                    payload: abi::ValuePayload {
                        str: self.str_at((start, len)),
                    },
                },
            },
        }));
        let split = self.measurements_len as usize;
        let (ms, md) = buf.split_at(split);
        let ptr = |s: &[abi::Field]| {
            if s.is_empty() {
                std::ptr::null()
            } else {
                s.as_ptr()
            }
        };
        abi::EventView {
            name: abi::Str::new(&self.name),
            timestamp_ns: self.timestamp_ns,
            correlation_id: self.str_at((0, self.correlation_len)),
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            trace_id_hi: (self.trace_id >> 64) as u64,
            trace_id_lo: self.trace_id as u64,
            measurements: ptr(ms),
            measurements_len: ms.len(),
            metadata: ptr(md),
            metadata_len: md.len(),
        }
    }
}
