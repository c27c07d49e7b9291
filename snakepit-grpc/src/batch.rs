//! A borrowing decoder for `TelemetryBatch`, the message that carries a
//! worker's events.
//!
//! Decoding a batch with the generated prost types costs about ten
//! allocations per event (the name parts, two maps, their keys and values),
//! and that was most of the host's CPU per folded event. Here the batch
//! stays one `Bytes` buffer and the fold reads each event in one pass
//! through an [`EventView`] that borrows its strings from the buffer. The
//! wire rules are prost's: known fields with the right wire type, lengths
//! inside the message, UTF-8 strings; unknown fields (groups too) are
//! skipped. [`BatchCodec`] checks the batch's outer fields when it arrives;
//! a batch that breaks a rule there is refused whole, as prost would refuse
//! it (the stream ends with an `INTERNAL` status naming the problem). An
//! event that breaks a rule is rejected alone (`malformed`) and the rest of
//! its batch is folded.
//!
//! Semantics follow proto3 decoding: for a repeated scalar field the last
//! value wins, map entries may lack their key or value (the default is
//! used), and a repeated map key keeps its last value (the fold applies
//! that rule, see `Folder::fold_event`).

use std::ops::Range;

use bytes::{Buf, Bytes};
use prost::encoding::{decode_key, decode_varint, WireType};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

use crate::proto;

/// What is wrong with a message (a static description: nothing the worker
/// sent is echoed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

type Result<T> = std::result::Result<T, WireError>;

/// One field of a message: its number and its value.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Len(&'a [u8]),
    /// A group (deprecated proto2 encoding), skipped.
    Group,
}

/// The fields of one message, in wire order.
struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let (tag, wire_type) =
            decode_key(&mut self.buf).map_err(|_| WireError("invalid field key"))?;
        let value = match wire_type {
            WireType::Varint => Wire::Varint(varint(&mut self.buf)?),
            WireType::SixtyFourBit => {
                if self.buf.len() < 8 {
                    return Err(WireError("truncated 64-bit field"));
                }
                Wire::Fixed64(self.buf.get_u64_le())
            }
            WireType::ThirtyTwoBit => {
                if self.buf.len() < 4 {
                    return Err(WireError("truncated 32-bit field"));
                }
                self.buf.advance(4);
                Wire::Fixed32
            }
            WireType::LengthDelimited => {
                let len = varint(&mut self.buf)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= self.buf.len())
                    .ok_or(WireError("length past the end of the message"))?;
                let (body, rest) = self.buf.split_at(len);
                self.buf = rest;
                Wire::Len(body)
            }
            WireType::StartGroup => {
                self.skip_group(tag, 0)?;
                Wire::Group
            }
            WireType::EndGroup => return Err(WireError("unexpected end of group")),
        };
        Ok(Some((tag, value)))
    }
}

impl Fields<'_> {
    /// Skips the fields of a group up to its end tag (as prost does).
    fn skip_group(&mut self, tag: u32, depth: u32) -> Result<()> {
        if depth > 100 {
            return Err(WireError("groups nested too deep"));
        }
        loop {
            if self.buf.is_empty() {
                return Err(WireError("unterminated group"));
            }
            let mut look = self.buf;
            let (t, wire_type) =
                decode_key(&mut look).map_err(|_| WireError("invalid field key"))?;
            match wire_type {
                WireType::EndGroup => {
                    self.buf = look;
                    return if t == tag {
                        Ok(())
                    } else {
                        Err(WireError("unexpected end of group"))
                    };
                }
                WireType::StartGroup => {
                    self.buf = look;
                    self.skip_group(t, depth + 1)?;
                }
                _ => {
                    self.next_field()?;
                }
            }
        }
    }
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    decode_varint(buf).map_err(|_| WireError("invalid varint"))
}

fn utf8(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|_| WireError("string field is not UTF-8"))
}

fn string(w: Wire<'_>) -> Result<&str> {
    match w {
        Wire::Len(b) => utf8(b),
        _ => Err(WireError("wrong wire type for a string field")),
    }
}

fn uint(w: Wire<'_>) -> Result<u64> {
    match w {
        Wire::Varint(v) => Ok(v),
        _ => Err(WireError("wrong wire type for an integer field")),
    }
}

fn message(w: Wire<'_>) -> Result<&[u8]> {
    match w {
        Wire::Len(b) => Ok(b),
        _ => Err(WireError("wrong wire type for a message field")),
    }
}

/// A measurement value as sent (`TelemetryValue`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum WireValue<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
}

/// A `TelemetryValue` body: the last member of the oneof that came wins.
fn telemetry_value(b: &[u8]) -> Result<Option<WireValue<'_>>> {
    let mut out = None;
    let mut f = Fields::new(b);
    while let Some((tag, w)) = f.next_field()? {
        out = match (tag, w) {
            // int64: the varint's bits, two's complement.
            (1, Wire::Varint(v)) => Some(WireValue::Int(v as i64)),
            (2, Wire::Fixed64(bits)) => Some(WireValue::Float(f64::from_bits(bits))),
            (3, w) => Some(WireValue::Str(string(w)?)),
            (1..=2, _) => return Err(WireError("wrong wire type in a TelemetryValue")),
            _ => out,
        };
    }
    Ok(out)
}

/// A `measurements` map entry: key ("" if absent) and value (`None` if
/// absent or empty).
fn measurement_entry(b: &[u8]) -> Result<(&str, Option<WireValue<'_>>)> {
    let (mut key, mut value) = ("", None);
    let mut f = Fields::new(b);
    while let Some((tag, w)) = f.next_field()? {
        match tag {
            1 => key = string(w)?,
            2 => value = telemetry_value(message(w)?)?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// A `metadata` map entry: key and value ("" if absent).
fn metadata_entry(b: &[u8]) -> Result<(&str, &str)> {
    let (mut key, mut value) = ("", "");
    let mut f = Fields::new(b);
    while let Some((tag, w)) = f.next_field()? {
        match tag {
            1 => key = string(w)?,
            2 => value = string(w)?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// The repeated fields of one event, decoded in place (reused from one
/// event to the next: cleared by [`EventView::parse`]).
#[derive(Debug, Default)]
pub(crate) struct EventFields<'a> {
    /// `event_parts`, in order.
    pub(crate) parts: Vec<&'a str>,
    /// `measurements` entries in wire order: key ("" if absent) and value
    /// (`None` if absent or empty). A repeated key comes twice.
    pub(crate) measurements: Vec<(&'a str, Option<WireValue<'a>>)>,
    /// `metadata` entries in wire order ("" for an absent key or value).
    pub(crate) metadata: Vec<(&'a str, &'a str)>,
}

impl EventFields<'_> {
    /// Empties the lists (their memory is kept for the next event).
    fn clear(&mut self) {
        self.parts.clear();
        self.measurements.clear();
        self.metadata.clear();
    }
}

/// The scalar fields of one `TelemetryEvent`, read in place.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EventView<'a> {
    pub(crate) timestamp_ns: i64,
    pub(crate) correlation_id: &'a str,
    pub(crate) span_id: u64,
    pub(crate) parent_span_id: u64,
    pub(crate) trace_id: &'a str,
    pub(crate) span_name: &'a str,
}

impl<'a> EventView<'a> {
    /// Checks and reads one serialized `TelemetryEvent` in one pass: the
    /// scalars into the view, the repeated fields into `fields`.
    pub(crate) fn parse(raw: &'a [u8], fields: &mut EventFields<'a>) -> Result<Self> {
        fields.clear();
        let mut ev = EventView::default();
        ev.merge(raw, fields)?;
        Ok(ev)
    }

    /// Reads more bytes of the same message (protobuf merges a message
    /// field sent twice: scalars take the later value, lists grow).
    fn merge(&mut self, raw: &'a [u8], fields: &mut EventFields<'a>) -> Result<()> {
        let ev = self;
        let mut f = Fields::new(raw);
        while let Some((tag, w)) = f.next_field()? {
            match tag {
                1 => fields.parts.push(string(w)?),
                2 => fields.measurements.push(measurement_entry(message(w)?)?),
                3 => fields.metadata.push(metadata_entry(message(w)?)?),
                // int64: the varint's bits, two's complement.
                4 => ev.timestamp_ns = uint(w)? as i64,
                5 => ev.correlation_id = string(w)?,
                6 => ev.span_id = uint(w)?,
                7 => ev.parent_span_id = uint(w)?,
                8 => ev.trace_id = string(w)?,
                9 => ev.span_name = string(w)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads packed or unpacked `sfixed64` values into `out`.
fn sfixed64s(w: Wire<'_>, out: &mut Vec<i64>) -> Result<()> {
    match w {
        Wire::Fixed64(v) => out.push(v as i64),
        Wire::Len(b) => {
            if b.len() % 8 != 0 {
                return Err(WireError("packed sfixed64 list with a partial value"));
            }
            out.extend(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            );
        }
        _ => return Err(WireError("wrong wire type for an sfixed64 field")),
    }
    Ok(())
}

/// The lists of one `EventRun` (reused from one run to the next).
#[derive(Debug, Default)]
pub(crate) struct RunFields<'a> {
    /// The template's bytes (more than one if the field came more than once).
    templates: Vec<&'a [u8]>,
    pub(crate) timestamps: Vec<i64>,
    pub(crate) values: Vec<i64>,
}

/// Checks and reads one serialized `EventRun`: the template into the view
/// and `fields`, the lists into `run`.
pub(crate) fn parse_run<'a>(
    raw: &'a [u8],
    fields: &mut EventFields<'a>,
    run: &mut RunFields<'a>,
) -> Result<EventView<'a>> {
    run.templates.clear();
    run.timestamps.clear();
    run.values.clear();
    let mut f = Fields::new(raw);
    while let Some((tag, w)) = f.next_field()? {
        match tag {
            1 => run.templates.push(message(w)?),
            2 => sfixed64s(w, &mut run.timestamps)?,
            3 => sfixed64s(w, &mut run.values)?,
            _ => {}
        }
    }
    fields.clear();
    let mut ev = EventView::default();
    for t in &run.templates {
        ev.merge(t, fields)?;
    }
    Ok(ev)
}

/// An event or a run of events, as bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Item<'a> {
    /// A `TelemetryEvent`.
    Event(&'a [u8]),
    /// An `EventRun`.
    Run(&'a [u8]),
}

/// A `TelemetryBatch` whose outer fields are checked and read; its events
/// and runs are still bytes in the received buffer, each checked when it is
/// read ([`EventView::parse`], [`parse_run`]), so one damaged event costs
/// only itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawBatch {
    bytes: Bytes,
    /// Where each event (false) or run (true) is, in wire order.
    items: Vec<(bool, Range<usize>)>,
    pub(crate) drops: Option<proto::DropCounts>,
    pub(crate) logs: Vec<proto::LogRecord>,
    pub(crate) policy_version: u64,
    /// Events the worker held, accepted and unsent, after this batch.
    pub(crate) pending: u64,
    /// The worker's batch sequence number (grows for the life of a worker
    /// process, across streams; 0 when not sent).
    pub(crate) seq: u64,
}

impl RawBatch {
    /// Checks the outer fields of a serialized `TelemetryBatch`.
    pub(crate) fn parse(bytes: Bytes) -> Result<RawBatch> {
        let mut out = RawBatch::default();
        let base = bytes.as_ptr() as usize;
        let mut f = Fields::new(&bytes);
        while let Some((tag, w)) = f.next_field()? {
            match tag {
                1 | 7 => {
                    let b = message(w)?;
                    let start = b.as_ptr() as usize - base;
                    out.items.push((tag == 7, start..start + b.len()));
                }
                2 => {
                    // A repeated message field merges into the one before.
                    let d = out.drops.get_or_insert_with(Default::default);
                    d.merge(message(w)?)
                        .map_err(|_| WireError("invalid DropCounts"))?;
                }
                3 => out.logs.push(
                    proto::LogRecord::decode(message(w)?)
                        .map_err(|_| WireError("invalid LogRecord"))?,
                ),
                4 => out.policy_version = uint(w)?,
                5 => {
                    string(w)?;
                }
                6 => out.seq = uint(w)?,
                8 => out.pending = uint(w)?,
                _ => {}
            }
        }
        out.bytes = bytes;
        Ok(out)
    }

    /// The serialized events and runs, in wire order.
    pub(crate) fn items(&self) -> impl Iterator<Item = Item<'_>> {
        self.items.iter().map(|(run, r)| {
            let b = &self.bytes[r.clone()];
            if *run {
                Item::Run(b)
            } else {
                Item::Event(b)
            }
        })
    }
}

/// The codec of `TelemetryStream` on the host: controls out as prost
/// messages, batches in as [`RawBatch`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchCodec;

/// Decodes [`RawBatch`]es.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchDecoder;

impl Decoder for BatchDecoder {
    type Item = RawBatch;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> std::result::Result<Option<RawBatch>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        RawBatch::parse(bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("malformed TelemetryBatch from the worker: {e}")))
    }
}

impl Codec for BatchCodec {
    type Encode = proto::TelemetryControl;
    type Decode = RawBatch;
    type Encoder = ProstEncoder<proto::TelemetryControl>;
    type Decoder = BatchDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BatchDecoder
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::proto::{telemetry_value, EventRun, TelemetryBatch, TelemetryEvent, TelemetryValue};

    fn value(v: telemetry_value::Value) -> TelemetryValue {
        TelemetryValue { value: Some(v) }
    }

    fn sample() -> TelemetryBatch {
        let mut events = Vec::new();
        for i in 0..6u64 {
            let mut measurements = BTreeMap::new();
            measurements.insert(
                "duration".to_string(),
                value(telemetry_value::Value::IntValue(-(i as i64) * 1000)),
            );
            measurements.insert(
                "f".to_string(),
                value(telemetry_value::Value::FloatValue(1.5 * i as f64)),
            );
            measurements.insert(
                "s".to_string(),
                value(telemetry_value::Value::StringValue("2.5".into())),
            );
            measurements.insert("empty".to_string(), TelemetryValue { value: None });
            let mut metadata = BTreeMap::new();
            metadata.insert("tool".to_string(), format!("t{i}"));
            metadata.insert("é".to_string(), "ü".repeat(i as usize));
            events.push(TelemetryEvent {
                event_parts: vec!["tool".into(), "execution".into(), "stop".into()],
                measurements,
                metadata,
                timestamp_ns: 1_700_000_000_000_000_000 + i as i64,
                correlation_id: if i % 2 == 0 {
                    format!("cid-{i}")
                } else {
                    String::new()
                },
                span_id: i * 77,
                parent_span_id: u64::MAX - i,
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_name: "outer".into(),
            });
        }
        TelemetryBatch {
            events,
            drops: Some(proto::DropCounts {
                buffer_full: 1,
                sampled_out: 2,
                filtered: 3,
                disabled: 4,
                encode_error: 5,
                logs_dropped: 6,
            }),
            logs: vec![proto::LogRecord {
                timestamp_ns: 9,
                level: "info".into(),
                logger: "lg".into(),
                message: "hello".into(),
                correlation_id: "c".into(),
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: u64::MAX,
            }],
            policy_version: 42,
            pending: 4000,
            worker_id: "w1".into(),
            seq: 7,
            runs: vec![EventRun {
                template: Some(TelemetryEvent {
                    event_parts: vec!["burst".into()],
                    measurements: [(
                        "duration".to_string(),
                        value(telemetry_value::Value::IntValue(0)),
                    )]
                    .into(),
                    metadata: [("tool".to_string(), "emit".to_string())].into(),
                    correlation_id: "cid-run".into(),
                    ..Default::default()
                }),
                timestamps: vec![1, 2, -3, i64::MAX],
                values: vec![10, -20, 30, i64::MIN],
            }],
        }
    }

    /// What prost decoded, in the view's terms (maps: last value wins).
    type Seen = (
        Vec<String>,
        BTreeMap<String, Option<String>>,
        BTreeMap<String, String>,
        (i64, String, u64, u64, String, String),
    );

    fn from_prost(e: &TelemetryEvent) -> Seen {
        let m = e
            .measurements
            .iter()
            .map(|(k, v)| {
                let v = v.value.as_ref().map(|v| match v {
                    telemetry_value::Value::IntValue(i) => format!("i{i}"),
                    telemetry_value::Value::FloatValue(f) => format!("f{}", f.to_bits()),
                    telemetry_value::Value::StringValue(s) => format!("s{s}"),
                });
                (k.clone(), v)
            })
            .collect();
        let md = e
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (
            e.event_parts.clone(),
            m,
            md,
            (
                e.timestamp_ns,
                e.correlation_id.clone(),
                e.span_id,
                e.parent_span_id,
                e.trace_id.clone(),
                e.span_name.clone(),
            ),
        )
    }

    /// A run as prost reads it: template, timestamps, values.
    type SeenRun = (Seen, Vec<i64>, Vec<i64>);

    fn run_from_prost(r: &EventRun) -> SeenRun {
        (
            from_prost(&r.template.clone().unwrap_or_default()),
            r.timestamps.clone(),
            r.values.clone(),
        )
    }

    fn run_from_view(raw: &[u8]) -> Result<SeenRun> {
        let mut f = EventFields::default();
        let mut run = RunFields::default();
        let e = parse_run(raw, &mut f, &mut run)?;
        Ok((seen(&e, &f), run.timestamps.clone(), run.values.clone()))
    }

    fn from_view(raw: &[u8]) -> Result<Seen> {
        let mut f = EventFields::default();
        let e = EventView::parse(raw, &mut f)?;
        Ok(seen(&e, &f))
    }

    fn seen(e: &EventView<'_>, f: &EventFields<'_>) -> Seen {
        let m = f
            .measurements
            .iter()
            .map(|(k, v)| {
                let v = v.map(|v| match v {
                    WireValue::Int(i) => format!("i{i}"),
                    WireValue::Float(f) => format!("f{}", f.to_bits()),
                    WireValue::Str(s) => format!("s{s}"),
                });
                (k.to_string(), v)
            })
            .collect();
        let md = f
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (
            f.parts.iter().map(|p| p.to_string()).collect(),
            m,
            md,
            (
                e.timestamp_ns,
                e.correlation_id.to_string(),
                e.span_id,
                e.parent_span_id,
                e.trace_id.to_string(),
                e.span_name.to_string(),
            ),
        )
    }

    /// Both decoders accept or refuse `bytes` alike (ours: the batch and
    /// every event in it), and read the same.
    fn agree(bytes: &[u8]) -> bool {
        let prost = TelemetryBatch::decode(bytes);
        let ours = RawBatch::parse(Bytes::copy_from_slice(bytes)).and_then(|b| {
            let (mut events, mut runs) = (Vec::new(), Vec::new());
            for item in b.items() {
                match item {
                    Item::Event(raw) => events.push(from_view(raw)?),
                    Item::Run(raw) => runs.push(run_from_view(raw)?),
                }
            }
            Ok((b, events, runs))
        });
        match (prost, ours) {
            (Ok(p), Ok((o, oe, or))) => {
                let pe: Vec<Seen> = p.events.iter().map(from_prost).collect();
                assert_eq!(pe, oe);
                let pr: Vec<SeenRun> = p.runs.iter().map(run_from_prost).collect();
                assert_eq!(pr, or);
                assert_eq!(p.drops, o.drops);
                assert_eq!(p.logs, o.logs);
                assert_eq!(p.policy_version, o.policy_version);
                assert_eq!(p.pending, o.pending);
                assert_eq!(p.seq, o.seq);
                true
            }
            (Err(_), Err(_)) => false,
            (p, o) => panic!(
                "prost {:?} vs ours {:?} on {bytes:?}",
                p.map(|_| ()),
                o.map(|_| ())
            ),
        }
    }

    #[test]
    fn reads_what_prost_reads() {
        let bytes = sample().encode_to_vec();
        assert!(agree(&bytes));
        let b = RawBatch::parse(Bytes::from(bytes)).unwrap();
        let mut fields = EventFields::default();
        let Some(Item::Event(raw)) = b.items().next() else {
            panic!("the first item is an event")
        };
        let first = EventView::parse(raw, &mut fields).unwrap();
        assert_eq!(fields.parts, ["tool", "execution", "stop"]);
        assert_eq!(fields.measurements.len(), 4);
        assert_eq!(first.correlation_id, "cid-0");
        assert_eq!(b.items().count(), 7);
        let Some(Item::Run(raw)) = b.items().last() else {
            panic!("the last item is the run")
        };
        let (template, timestamps, values) = run_from_view(raw).unwrap();
        assert_eq!(template.0, ["burst"]);
        assert_eq!(timestamps, [1, 2, -3, i64::MAX]);
        assert_eq!(values, [10, -20, 30, i64::MIN]);
        assert_eq!(b.policy_version, 42);
        assert_eq!(b.pending, 4000);
        assert_eq!(b.seq, 7);
    }

    #[test]
    fn an_empty_batch_is_valid() {
        assert!(agree(&[]));
    }

    #[test]
    fn damaged_batches_are_refused_exactly_when_prost_refuses_them() {
        let good = sample().encode_to_vec();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut b = good.clone();
            match round % 4 {
                // Flip one byte.
                0 => {
                    let i = next() as usize % b.len();
                    b[i] = next() as u8;
                }
                // Cut the message.
                1 => b.truncate(next() as usize % b.len()),
                // Flip a few bits.
                2 => {
                    for _ in 0..3 {
                        let i = next() as usize % b.len();
                        b[i] ^= 1 << (next() % 8);
                    }
                }
                // Insert a random byte.
                _ => {
                    let i = next() as usize % b.len();
                    b.insert(i, next() as u8);
                }
            }
            if agree(&b) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both outcomes were exercised.
        assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
    }

    #[test]
    fn hand_made_edge_cases_agree_with_prost() {
        let cases: &[&[u8]] = &[
            // A group field (unknown number 15) around a varint: skipped.
            &[0x7B, 0x08, 0x01, 0x7C],
            // An end-group tag with no start.
            &[0x7C],
            // A group that never ends.
            &[0x7B, 0x08, 0x01],
            // Event with a varint where the name parts go.
            &[0x0A, 0x02, 0x08, 0x01],
            // Event whose name part is not UTF-8.
            &[0x0A, 0x03, 0x0A, 0x01, 0xFF],
            // Measurement entry whose value is a string where an int goes.
            &[0x0A, 0x07, 0x12, 0x05, 0x12, 0x03, 0x0A, 0x01, 0x41],
            // The same measurement key twice: the last value wins.
            &[
                0x0A, 0x0E, 0x12, 0x05, 0x0A, 0x01, 0x61, 0x12, 0x00, 0x12, 0x05, 0x0A, 0x01, 0x61,
                0x12, 0x00,
            ],
            // Field number 0.
            &[0x02, 0x00],
            // A length past the end.
            &[0x0A, 0x7F, 0x00],
        ];
        for c in cases {
            agree(c);
        }
    }
}
