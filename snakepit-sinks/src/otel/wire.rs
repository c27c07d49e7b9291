//! OTLP protobuf written straight from borrowed span data (text as UTF-8
//! bytes), byte for byte
//! what prost writes for the [`proto`](super::proto) messages, without
//! building them (no owned strings per attribute).

use prost::encoding::encoded_len_varint;

use super::fields::FieldValue;
use super::proto;

/// Wire type of length-delimited fields.
const LEN: u8 = 2;
/// Wire type of varint fields.
const VARINT: u8 = 0;
/// Wire type of fixed64 fields.
const FIXED64: u8 = 1;

/// A field key; every tag used here is below 16, so it is one byte.
const fn key(tag: u8, wire: u8) -> u8 {
    (tag << 3) | wire
}

/// Appends a LEB128 varint (most here are one byte).
#[inline]
fn encode_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of a length-delimited field holding `n` bytes.
pub(crate) fn delimited_len(n: usize) -> usize {
    1 + encoded_len_varint(n as u64) + n
}

/// Writes the key and length of a length-delimited field.
#[inline]
pub(crate) fn put_delimited_header(out: &mut Vec<u8>, tag: u8, n: usize) {
    out.push(key(tag, LEN));
    encode_varint(n as u64, out);
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    put_delimited_header(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

#[inline]
fn put_fixed64(out: &mut Vec<u8>, tag: u8, v: u64) {
    out.push(key(tag, FIXED64));
    out.extend_from_slice(&v.to_le_bytes());
}

/// prost leaves out proto3 fields with their default value.
fn opt_bytes_len(bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        delimited_len(bytes.len())
    }
}

#[inline]
fn put_opt_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_bytes(out, tag, bytes);
    }
}

fn opt_fixed64_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        9
    }
}

fn put_opt_fixed64(out: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        put_fixed64(out, tag, v);
    }
}

/// `AnyValue` body.
fn any_value_len(v: &FieldValue<'_>) -> usize {
    match v {
        FieldValue::Str(s) => delimited_len(s.len()),
        FieldValue::Int(i) => 1 + encoded_len_varint(*i as u64),
        FieldValue::Float(_) => 9,
    }
}

/// `KeyValue` body.
fn key_value_len(k: &[u8], v: &FieldValue<'_>) -> usize {
    opt_bytes_len(k) + delimited_len(any_value_len(v))
}

/// A repeated `KeyValue` field `tag`.
fn attributes_len(attrs: &[(&[u8], FieldValue<'_>)]) -> usize {
    attrs
        .iter()
        .map(|(k, v)| delimited_len(key_value_len(k, v)))
        .sum()
}

fn put_attributes(out: &mut Vec<u8>, tag: u8, attrs: &[(&[u8], FieldValue<'_>)]) {
    for (k, v) in attrs {
        put_delimited_header(out, tag, key_value_len(k, v));
        put_opt_bytes(out, 1, k);
        put_delimited_header(out, 2, any_value_len(v));
        match v {
            FieldValue::Str(s) => put_bytes(out, 1, s),
            FieldValue::Int(i) => {
                out.push(key(3, VARINT));
                encode_varint(*i as u64, out);
            }
            FieldValue::Float(f) => put_fixed64(out, 4, f.to_bits()),
        }
    }
}

/// The error part of a span: its status message and `exception` event.
pub(crate) struct Exception<'a> {
    /// When it happened (the span's end before clamping to its start).
    pub time_ns: u64,
    pub error_type: &'a [u8],
    pub message: &'a [u8],
}

/// One finished span, borrowed.
pub(crate) struct SpanRef<'a> {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: u64,
    pub name: &'a [u8],
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: &'a [(&'a [u8], FieldValue<'a>)],
    pub exception: Option<Exception<'a>>,
}

/// `Span.Event` body of an exception.
fn exception_event_len(e: &Exception<'_>) -> usize {
    opt_fixed64_len(e.time_ns)
        + delimited_len("exception".len())
        + attributes_len(&exception_attributes(e))
}

fn exception_attributes<'a>(e: &Exception<'a>) -> [(&'a [u8], FieldValue<'a>); 2] {
    [
        (&b"exception.type"[..], FieldValue::Str(e.error_type)),
        (&b"exception.message"[..], FieldValue::Str(e.message)),
    ]
}

/// `Status` body of an error.
fn status_len(message: &[u8]) -> usize {
    opt_bytes_len(message) + 1 + encoded_len_varint(proto::STATUS_ERROR as u64)
}

fn id_bytes(id: u64) -> ([u8; 8], usize) {
    (id.to_be_bytes(), if id == 0 { 0 } else { 8 })
}

impl SpanRef<'_> {
    /// `Span` body.
    fn body_len(&self) -> usize {
        let (span_id, n) = id_bytes(self.span_id);
        let (parent, p) = id_bytes(self.parent_span_id);
        let mut len = delimited_len(16)
            + opt_bytes_len(&span_id[..n])
            + opt_bytes_len(&parent[..p])
            + opt_bytes_len(self.name)
            + if self.kind == 0 {
                0
            } else {
                1 + encoded_len_varint(self.kind as u64)
            }
            + opt_fixed64_len(self.start_ns)
            + opt_fixed64_len(self.end_ns)
            + attributes_len(self.attributes);
        if let Some(e) = &self.exception {
            len += delimited_len(exception_event_len(e));
            len += delimited_len(status_len(e.message));
        }
        len
    }

    /// Appends the span as field `tag` (a `ScopeSpans.spans` entry is tag 2).
    pub fn encode(&self, tag: u8, out: &mut Vec<u8>) {
        let body = self.body_len();
        out.reserve(delimited_len(body));
        put_delimited_header(out, tag, body);
        put_bytes(out, 1, &self.trace_id.to_be_bytes());
        let (span_id, n) = id_bytes(self.span_id);
        put_opt_bytes(out, 2, &span_id[..n]);
        let (parent, p) = id_bytes(self.parent_span_id);
        put_opt_bytes(out, 4, &parent[..p]);
        put_opt_bytes(out, 5, self.name);
        if self.kind != 0 {
            out.push(key(6, VARINT));
            encode_varint(self.kind as u64, out);
        }
        put_opt_fixed64(out, 7, self.start_ns);
        put_opt_fixed64(out, 8, self.end_ns);
        put_attributes(out, 9, self.attributes);
        if let Some(e) = &self.exception {
            put_delimited_header(out, 11, exception_event_len(e));
            put_opt_fixed64(out, 1, e.time_ns);
            put_bytes(out, 2, b"exception");
            put_attributes(out, 3, &exception_attributes(e));
            put_delimited_header(out, 15, status_len(e.message));
            put_opt_bytes(out, 2, e.message);
            out.push(key(3, VARINT));
            encode_varint(proto::STATUS_ERROR as u64, out);
        }
    }
}
