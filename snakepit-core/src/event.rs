//! The event view handlers receive, and its owned form for queues.

use std::borrow::Cow;
use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::catalog::{EventId, EventSpec};
use crate::value::{find, Field, Value};

/// Where an event sits in time and in a trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventContext<'a> {
    /// Unix-epoch nanoseconds when the event happened; 0 means "now", read
    /// from the clock the first time a handler asks for it.
    pub timestamp_ns: u64,
    /// The correlation id current when it was emitted, if any.
    pub correlation_id: Option<&'a str>,
    /// The span this event belongs to (0 = none).
    pub span_id: u64,
    /// The parent of that span (0 = none).
    pub parent_span_id: u64,
    /// The W3C trace id (0 = none).
    pub trace_id: u128,
}

/// One event, as handlers see it: a borrowed view valid during the call.
///
/// Building one costs no heap allocation when keys are `&'static str` and
/// values are numbers or borrowed strings. The timestamp of an event emitted
/// "now" is read from the clock once, the first time a handler asks for it
/// (during dispatch, on the emitting thread), so handlers that never look at
/// it do not pay for a clock read.
#[derive(Clone, Debug)]
pub struct Event<'a> {
    id: EventId,
    spec: &'a EventSpec,
    measurements: &'a [Field<'a>],
    metadata: &'a [Field<'a>],
    context: EventContext<'a>,
    timestamp: Cell<u64>,
}

/// Unix-epoch nanoseconds from the system clock.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl<'a> Event<'a> {
    /// Assembles a view. `spec` must be the catalog entry of `id`.
    pub fn new(
        id: EventId,
        spec: &'a EventSpec,
        measurements: &'a [Field<'a>],
        metadata: &'a [Field<'a>],
        context: EventContext<'a>,
    ) -> Self {
        Event {
            id,
            spec,
            measurements,
            metadata,
            timestamp: Cell::new(context.timestamp_ns),
            context,
        }
    }

    /// The event's id in its catalog.
    pub fn id(&self) -> EventId {
        self.id
    }
    /// The dotted name, e.g. `snakepit.python.call.stop`.
    pub fn name(&self) -> &'a str {
        &self.spec.name
    }
    /// The catalog entry.
    pub fn spec(&self) -> &'a EventSpec {
        self.spec
    }
    /// The measurements.
    pub fn measurements(&self) -> &'a [Field<'a>] {
        self.measurements
    }
    /// The metadata.
    pub fn metadata(&self) -> &'a [Field<'a>] {
        self.metadata
    }
    /// One measurement by key.
    pub fn measurement(&self, key: &str) -> Option<&'a Value<'a>> {
        find(self.measurements, key)
    }
    /// One metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&'a Value<'a>> {
        find(self.metadata, key)
    }
    /// One metadata value by key, as a string slice when it is a string.
    pub fn meta_str(&self, key: &str) -> Option<&'a str> {
        self.meta(key).and_then(Value::as_str)
    }
    /// Unix-epoch nanoseconds.
    pub fn timestamp_ns(&self) -> u64 {
        match self.timestamp.get() {
            0 => {
                let now = unix_now_ns();
                self.timestamp.set(now);
                now
            }
            t => t,
        }
    }
    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&'a str> {
        self.context.correlation_id
    }
    /// Time, correlation and trace position.
    pub fn context(&self) -> EventContext<'a> {
        EventContext {
            timestamp_ns: self.timestamp_ns(),
            ..self.context
        }
    }
    /// The span this event belongs to (0 = none).
    pub fn span_id(&self) -> u64 {
        self.context.span_id
    }
    /// The parent of that span (0 = none).
    pub fn parent_span_id(&self) -> u64 {
        self.context.parent_span_id
    }
    /// The W3C trace id (0 = none).
    pub fn trace_id(&self) -> u128 {
        self.context.trace_id
    }

    /// Copies the event so it can outlive the call (for queues).
    pub fn to_owned_event(&self) -> OwnedEvent {
        let own = |fields: &[Field<'_>]| {
            fields
                .iter()
                .map(|(k, v)| (Cow::Owned(k.to_string()), v.reborrow().into_owned()))
                .collect()
        };
        OwnedEvent {
            id: self.id,
            name: self.spec.name.clone(),
            measurements: own(self.measurements),
            metadata: own(self.metadata),
            timestamp_ns: self.timestamp_ns(),
            correlation_id: self.context.correlation_id.map(str::to_string),
            span_id: self.context.span_id,
            parent_span_id: self.context.parent_span_id,
            trace_id: self.context.trace_id,
        }
    }
}

/// An event that owns its data, for sinks that queue events.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedEvent {
    /// The event's id in its catalog.
    pub id: EventId,
    /// The dotted name.
    pub name: Cow<'static, str>,
    /// The measurements.
    pub measurements: Vec<(Cow<'static, str>, Value<'static>)>,
    /// The metadata.
    pub metadata: Vec<(Cow<'static, str>, Value<'static>)>,
    /// Unix-epoch nanoseconds.
    pub timestamp_ns: u64,
    /// The correlation id, if any.
    pub correlation_id: Option<String>,
    /// The span (0 = none).
    pub span_id: u64,
    /// The parent span (0 = none).
    pub parent_span_id: u64,
    /// The W3C trace id (0 = none).
    pub trace_id: u128,
}

impl OwnedEvent {
    /// One measurement by key.
    pub fn measurement(&self, key: &str) -> Option<&Value<'static>> {
        self.measurements
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
    /// One metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&Value<'static>> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}
