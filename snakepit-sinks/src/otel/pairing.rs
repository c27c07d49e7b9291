//! Pairing user span start/stop/exception events into spans, with bounded
//! state, and encoding each finished span (call spans too) into OTLP bytes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use snakepit_core::{Event, SpanRole, Value};

use super::fields::{kept, FieldValue, MAX_FIELDS};
use super::proto;
use super::semconv::{self, Key};
use super::span_out::SpanOut;
use super::wire::{put_attributes, Exception, SpanRef};
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
    let family = semconv::Family::of(prefix);
    let mut fixed = Vec::new();
    put_attributes(&mut fixed, 9, semconv::fixed(family));
    SpanInfo {
        name: span_name_of(prefix),
        kind,
        named_by_metadata: prefix == "snakepit.python.span",
        family,
        fixed: fixed.into_boxed_slice(),
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

/// Open spans by id, bounded: the oldest are evicted first. Starts stay in
/// place in `slots` (the map holds their index) until their end is encoded.
pub(crate) struct Pairing {
    open: HashMap<u64, u32, BuildHasherDefault<SpanIdHasher>>,
    slots: Vec<Open>,
    /// Indexes of `slots` no open span uses.
    free: Vec<u32>,
    order: VecDeque<u64>,
    max_open: usize,
    /// Span families by [`SpanEvent::family`].
    families: Arc<[SpanInfo]>,
}

impl Pairing {
    pub fn new(max_open: usize, families: Arc<[SpanInfo]>) -> Pairing {
        Pairing {
            open: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            max_open: max_open.max(1),
            families,
        }
    }

    /// Takes one event; a finished span is appended to `out` as a
    /// `ScopeSpans.spans` entry. Returns whether a span finished and how
    /// many open spans were evicted to make room (or were unusable).
    pub fn accept(&mut self, event: SpanEvent, out: &mut impl SpanOut) -> (bool, u64) {
        match event.role {
            SpanRole::Start => {
                if event.span_id == 0 {
                    // Nothing can pair with it.
                    return (false, 1);
                }
                let trace_id = self.trace_of(&event);
                let mut evicted = 0;
                while self.open.len() >= self.max_open {
                    match self.order.pop_front() {
                        Some(old) => {
                            if let Some(slot) = self.open.remove(&old) {
                                self.free.push(slot);
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
                let span_id = event.span_id;
                let open = Open {
                    start: event,
                    trace_id,
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = open;
                        slot
                    }
                    None => {
                        self.slots.push(open);
                        (self.slots.len() - 1) as u32
                    }
                };
                if let Some(replaced) = self.open.insert(span_id, slot) {
                    self.free.push(replaced);
                }
                (false, evicted)
            }
            SpanRole::Stop | SpanRole::Exception => {
                if event.span_id == 0 {
                    // A span needs an id; a span-less stop is not exportable.
                    return (false, 1);
                }
                let slot = self.open.remove(&event.span_id);
                let open = slot.and_then(|i| self.slots.get(i as usize));
                let trace_id = match open {
                    Some(o) => o.trace_id,
                    None => self.trace_of(&event),
                };
                let info = self.families.get(usize::from(event.family));
                if let Some(info) = info {
                    encode(info, open.map(|o| &o.start), &event, trace_id, out);
                }
                if let Some(slot) = slot {
                    self.free.push(slot);
                }
                (info.is_some(), 0)
            }
        }
    }

    /// Open spans left at shutdown.
    pub fn abandon(&mut self) -> u64 {
        let n = self.open.len() as u64;
        self.open.clear();
        self.slots.clear();
        self.free.clear();
        self.order.clear();
        n
    }

    fn trace_of(&self, event: &SpanEvent) -> u128 {
        if event.trace_id() != 0 {
            return event.trace_id();
        }
        if let Some(parent) = self
            .open
            .get(&event.parent_span_id)
            .and_then(|&i| self.slots.get(i as usize))
        {
            return parent.trace_id;
        }
        derived_trace(event.span_id, event.parent_span_id)
    }
}

/// The trace id of a span that has none (and no open parent to take one
/// from): derived from its parent's id, else its own, so its start and its
/// end agree.
pub(crate) fn derived_trace(span_id: u64, parent_span_id: u64) -> u128 {
    let id = if parent_span_id != 0 {
        parent_span_id
    } else {
        span_id
    };
    let mixed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (u128::from(mixed) << 64) | u128::from(id.rotate_left(17) | 1)
}

/// Attributes of one span in first-seen order; a later value for a key
/// replaces the earlier one in place.
struct Attrs<'a, const N: usize> {
    items: [(&'a [u8], FieldValue<'a>); N],
    len: usize,
}

/// Start metadata, end metadata and measurements (an address is 3
/// attributes), correlation id, error type.
const MAX_ATTRS: usize = 2 * MAX_FIELDS + 6;

/// The same for a span built from its end alone.
const MAX_END_ATTRS: usize = MAX_FIELDS + 6;

impl<'a, const N: usize> Attrs<'a, N> {
    fn new() -> Self {
        Attrs {
            items: [(&b""[..], FieldValue::Int(0)); N],
            len: 0,
        }
    }

    fn put(&mut self, key: &'a [u8], value: FieldValue<'a>) {
        // Length, first and last byte rule out most keys before a full
        // compare (many keys share the `snakepit.` prefix).
        let same = |k: &[u8]| {
            k.len() == key.len() && k.last() == key.last() && k.first() == key.first() && k == key
        };
        if let Some(slot) = self.items[..self.len].iter_mut().find(|(k, _)| same(k)) {
            slot.1 = value;
        } else if let Some(slot) = self.items.get_mut(self.len) {
            *slot = (key, value);
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[(&'a [u8], FieldValue<'a>)] {
        &self.items[..self.len]
    }
}

/// Encodes the span from its start (if known) and its end.
pub(crate) fn encode(
    info: &SpanInfo,
    start: Option<&SpanEvent>,
    end: &SpanEvent,
    trace_id: u128,
    out: &mut impl SpanOut,
) {
    let (start_ns, end_ns, parent) = span_bounds(start, end);
    let correlation = end
        .fields
        .correlation_id()
        .or_else(|| start.and_then(|s| s.fields.correlation_id()));
    let ids = SpanIds {
        trace_id,
        span_id: end.span_id,
        parent_span_id: parent,
    };
    encode_span::<MAX_ATTRS>(
        info,
        end.role,
        ids,
        (start_ns, end_ns),
        start.into_iter().flat_map(|s| s.fields.metadata()),
        end.fields.all(),
        correlation,
        out,
    );
}

/// Encodes the span a stop or exception event carries alone (its family's
/// end carries the start's metadata and context, and its `duration` places
/// the start), straight from the event: what [`encode`] writes for the
/// same event queued as a [`SpanEvent`] with no start, byte for byte.
pub(crate) fn encode_event(
    info: &SpanInfo,
    role: SpanRole,
    event: &Event<'_>,
    trace_id: u128,
    out: &mut impl SpanOut,
) {
    let end_ns = event.timestamp_ns();
    let start_ns = duration_of(event).map_or(end_ns, |d| end_ns.saturating_sub(d));
    // The same fields a queued copy keeps (see `PackedFields::new`).
    let (measurements, metadata) = kept(event.measurements(), event.metadata());
    let ends = measurements
        .iter()
        .filter(|(k, _)| *k != "duration")
        .map(|(k, v)| (true, k.as_bytes(), field_value(v)))
        .chain(
            metadata
                .iter()
                .map(|(k, v)| (false, k.as_bytes(), field_value(v))),
        );
    let ids = SpanIds {
        trace_id,
        span_id: event.span_id(),
        parent_span_id: event.parent_span_id(),
    };
    encode_span::<MAX_END_ATTRS>(
        info,
        role,
        ids,
        (start_ns, end_ns),
        std::iter::empty(),
        ends,
        event.correlation_id().map(str::as_bytes),
        out,
    );
}

/// An event's `duration` measurement in nanoseconds, if it has a usable one.
pub(crate) fn duration_of(event: &Event<'_>) -> Option<u64> {
    event
        .measurement("duration")
        .and_then(Value::as_i64)
        .and_then(|d| u64::try_from(d).ok())
}

fn field_value<'a>(v: &'a Value<'_>) -> FieldValue<'a> {
    match v {
        Value::Int(i) => FieldValue::Int(*i),
        Value::Float(f) => FieldValue::Float(*f),
        Value::Str(s) => FieldValue::Str(s.as_bytes()),
    }
}

struct SpanIds {
    trace_id: u128,
    span_id: u64,
    parent_span_id: u64,
}

/// Writes one span: the family's fixed attributes, start metadata, end
/// metadata, then end measurements (read in the same pass as its metadata,
/// put after them), the correlation id, and the error of an exception,
/// each field under its key by the conventions ([`semconv`]).
#[allow(clippy::too_many_arguments)]
fn encode_span<'a, const N: usize>(
    info: &'a SpanInfo,
    role: SpanRole,
    ids: SpanIds,
    (start_ns, end_ns): (u64, u64),
    starts: impl Iterator<Item = (&'a [u8], FieldValue<'a>)>,
    ends: impl Iterator<Item = (bool, &'a [u8], FieldValue<'a>)>,
    correlation: Option<&'a [u8]>,
    out: &mut impl SpanOut,
) {
    // The family's fixed attributes are encoded already (no field of the
    // call spans' events maps onto them).
    let mut attrs = Attrs::<N>::new();
    let mut name = None;
    let mut measurements = [(&b""[..], FieldValue::Int(0)); MAX_FIELDS];
    let mut n = 0;
    let failed = role == SpanRole::Exception;
    // The first `error_type`, `error_message` and `traceback` of the end's
    // metadata.
    let (mut error_type, mut error_message, mut traceback) = (None, None, None);
    let starts = starts.map(|(k, v)| (false, false, k, v));
    for (is_end, is_measurement, k, v) in starts.chain(ends.map(|(m, k, v)| (true, m, k, v))) {
        if is_measurement {
            if k != b"duration" {
                if let Some(slot) = measurements.get_mut(n) {
                    *slot = (k, v);
                    n += 1;
                }
            }
            continue;
        }
        match semconv::key_of(info.family, info.named_by_metadata, failed, k) {
            Key::Exception => {
                if is_end {
                    let first = match k {
                        b"error_type" => &mut error_type,
                        b"error_message" => &mut error_message,
                        _ => &mut traceback,
                    };
                    first.get_or_insert(v);
                }
            }
            key => put_field(&mut attrs, &mut name, key, k, v),
        }
    }
    for &(k, v) in &measurements[..n] {
        let key = semconv::key_of(info.family, false, false, k);
        put_field(&mut attrs, &mut name, key, k, v);
    }
    if let Some(c) = correlation {
        attrs.put(semconv::CORRELATION_ID, FieldValue::Str(c));
    }
    let exception = failed.then(|| {
        let error_type = error_type.and_then(|v| v.as_str()).unwrap_or(b"error");
        let message = error_message.and_then(|v| v.as_str()).unwrap_or(error_type);
        attrs.put(semconv::ERROR_TYPE, FieldValue::Str(error_type));
        Exception {
            time_ns: end_ns,
            error_type,
            message,
            stacktrace: traceback.and_then(|v| v.as_str()).unwrap_or(b""),
        }
    });
    out.put(&SpanRef {
        trace_id: ids.trace_id,
        span_id: ids.span_id,
        parent_span_id: ids.parent_span_id,
        name: name.unwrap_or(info.name.as_bytes()),
        kind: info.kind,
        start_ns,
        end_ns: end_ns.max(start_ns),
        encoded_attributes: &info.fixed,
        fixed_attributes: semconv::fixed(info.family),
        attributes: attrs.as_slice(),
        exception,
    });
}

/// Puts one field as the conventions say (`key`, from
/// [`semconv::key_of`]).
fn put_field<'a, const N: usize>(
    attrs: &mut Attrs<'a, N>,
    name: &mut Option<&'a [u8]>,
    key: Key,
    k: &'a [u8],
    v: FieldValue<'a>,
) {
    match key {
        Key::To(key) => attrs.put(key, v),
        Key::Same => attrs.put(k, v),
        Key::Name => *name = v.as_str(),
        Key::StatusCode => attrs.put(
            semconv::RPC_STATUS_CODE,
            FieldValue::Int(semconv::status_code(v)),
        ),
        Key::Address => {
            if let Some(a) = v.as_str() {
                let (net, n) = semconv::address(a);
                for &(k, v) in &net[..n] {
                    attrs.put(k, v);
                }
            }
        }
        Key::Exception | Key::Skip => {}
    }
}

/// A span's start and end times and its parent: the start event's time, or
/// the end's minus its duration; the end's time, or the start's plus the
/// duration; the end's parent, else the start's.
pub(crate) fn span_bounds(start: Option<&SpanEvent>, end: &SpanEvent) -> (u64, u64, u64) {
    let end_ns = match (start, end.duration_ns()) {
        (Some(s), Some(d)) => s.timestamp_ns.saturating_add(d),
        _ => end.timestamp_ns,
    };
    let start_ns = match (start, end.duration_ns()) {
        (Some(s), _) => s.timestamp_ns,
        (None, Some(d)) => end.timestamp_ns.saturating_sub(d),
        (None, None) => end.timestamp_ns,
    };
    let parent = match (end.parent_span_id, start) {
        (0, Some(s)) => s.parent_span_id,
        (p, _) => p,
    };
    (start_ns, end_ns, parent)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use snakepit_core::Value;

    use super::super::encode_reference::event;
    use super::*;

    fn decoded(out: &[u8]) -> Vec<proto::Span> {
        proto::ScopeSpans::decode(out).unwrap().spans
    }

    /// Evicted and replaced starts are not reused; slots are.
    #[test]
    fn pairing_evicts_oldest_and_reuses_slots() {
        let infos: Arc<[SpanInfo]> = vec![span_info("snakepit.python.call")].into();
        let mut p = Pairing::new(3, infos);
        let mut out = Vec::new();
        let start = |id: u64, parent: u64, trace: u128, ts: u64| {
            event(
                false,
                SpanRole::Start,
                id,
                parent,
                trace,
                ts,
                None,
                &[],
                &[],
                None,
            )
        };
        let stop = |id: u64, ts: u64| {
            event(
                false,
                SpanRole::Stop,
                id,
                0,
                0,
                ts,
                Some(5),
                &[("duration", Value::Int(5))],
                &[],
                None,
            )
        };
        assert_eq!(p.accept(start(1, 0, 77, 100), &mut out), (false, 0));
        assert_eq!(p.accept(start(2, 1, 0, 200), &mut out), (false, 0));
        assert_eq!(p.accept(stop(2, 2_000), &mut out), (true, 0));
        assert_eq!(p.accept(start(3, 0, 9, 300), &mut out), (false, 0));
        // A second start for an open span replaces the first.
        assert_eq!(p.accept(start(3, 0, 9, 350), &mut out), (false, 0));
        assert_eq!(p.accept(start(4, 0, 9, 400), &mut out), (false, 0));
        // Full: the oldest open span (1) is evicted.
        assert_eq!(p.accept(start(5, 0, 9, 500), &mut out), (false, 1));
        for (id, ts) in [(1, 1_000), (3, 3_000), (4, 4_000), (5, 5_000)] {
            assert_eq!(p.accept(stop(id, ts), &mut out), (true, 0));
        }
        let spans = decoded(&out);
        let times: Vec<_> = spans
            .iter()
            .map(|s| (s.start_time_unix_nano, s.end_time_unix_nano))
            .collect();
        // Span 1 lost its start: its start comes from its duration.
        assert_eq!(
            times,
            [(200, 205), (995, 1_000), (350, 355), (400, 405), (500, 505)]
        );
        // Span 2 took its open parent's trace.
        assert_eq!(spans[0].trace_id, 77u128.to_be_bytes());
        assert_eq!(spans[0].parent_span_id, 1u64.to_be_bytes());
        assert_eq!(spans[2].trace_id, 9u128.to_be_bytes());
        assert!(p.slots.len() <= 3, "{}", p.slots.len());
        assert_eq!(p.accept(start(4, 0, 1, 1), &mut out), (false, 0));
        assert_eq!(p.abandon(), 1);
    }
}
