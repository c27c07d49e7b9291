//! OTLP protobuf written straight from borrowed span data (text as UTF-8
//! bytes), byte for byte
//! what prost writes for the [`proto`](super::proto) messages, without
//! building them (no owned strings per attribute).

use prost::encoding::{encode_varint, encoded_len_varint};

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

#[inline]
fn put_opt_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_bytes(out, tag, bytes);
    }
}

fn put_opt_fixed64(out: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        put_fixed64(out, tag, v);
    }
}

/// A length-delimited field being written: its length bytes are reserved
/// before its body and filled in by [`end`], which moves the body when the
/// length needs another number of bytes than reserved. The result is the
/// canonical encoding (the shortest varint), as prost writes it, in one
/// pass over the data.
struct Open {
    /// Where the reserved length bytes start.
    at: usize,
    /// How many were reserved.
    reserved: usize,
}

/// Starts field `tag`, reserving `reserved` length bytes (1 holds a body of
/// up to 127 bytes, 2 up to 16,383).
#[inline]
fn begin(out: &mut Vec<u8>, tag: u8, reserved: usize) -> Open {
    out.push(key(tag, LEN));
    let at = out.len();
    out.resize(at + reserved, 0);
    Open { at, reserved }
}

/// Ends a field started with [`begin`]: writes its length.
#[inline(always)]
fn end(out: &mut Vec<u8>, open: Open) {
    let body = open.at + open.reserved;
    let n = out.len() - body;
    if open.reserved == 1 && n < 0x80 {
        out[open.at] = n as u8;
        return;
    }
    end_moving(out, open, n);
}

/// [`end`] when the length takes another number of bytes than reserved:
/// rare for 1-byte reservations (a body over 127 bytes), a short copy for
/// the span's own 2 bytes (a body under 128 bytes).
#[inline(never)]
fn end_moving(out: &mut Vec<u8>, open: Open, n: usize) {
    let body = open.at + open.reserved;
    let need = encoded_len_varint(n as u64);
    if need != open.reserved {
        let old_len = out.len();
        if need > open.reserved {
            out.resize(old_len + need - open.reserved, 0);
        }
        out.copy_within(body..old_len, open.at + need);
        out.truncate(open.at + need + n);
    }
    encode_varint(n as u64, &mut &mut out[open.at..open.at + need]);
}

pub(crate) fn put_attributes(out: &mut Vec<u8>, tag: u8, attrs: &[(&[u8], FieldValue<'_>)]) {
    for (k, v) in attrs {
        let kv = begin(out, tag, 1);
        put_opt_bytes(out, 1, k);
        let any = begin(out, 2, 1);
        match v {
            FieldValue::Str(s) => put_bytes(out, 1, s),
            FieldValue::Int(i) => {
                out.push(key(3, VARINT));
                encode_varint(*i as u64, out);
            }
            FieldValue::Float(f) => put_fixed64(out, 4, f.to_bits()),
        }
        end(out, any);
        end(out, kv);
    }
}

/// The error part of a span: its status message and `exception` event.
pub(crate) struct Exception<'a> {
    /// When it happened (the span's end before clamping to its start).
    pub time_ns: u64,
    pub error_type: &'a [u8],
    pub message: &'a [u8],
    /// The traceback (`exception.stacktrace`), empty when there is none.
    pub stacktrace: &'a [u8],
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
    /// Attributes encoded already (`Span.attributes` entries), written
    /// before `attributes`: a span family's fixed ones.
    pub encoded_attributes: &'a [u8],
    /// The same fixed attributes as values, for outputs that do not write
    /// OTLP bytes (the application's SDK pipeline).
    #[cfg_attr(not(feature = "otel-sdk"), allow(dead_code))]
    pub fixed_attributes: &'a [(&'a [u8], FieldValue<'a>)],
    pub attributes: &'a [(&'a [u8], FieldValue<'a>)],
    pub exception: Option<Exception<'a>>,
}

fn id_bytes(id: u64) -> ([u8; 8], usize) {
    (id.to_be_bytes(), if id == 0 { 0 } else { 8 })
}

impl SpanRef<'_> {
    /// Appends the span as field `tag` (a `ScopeSpans.spans` entry is tag 2).
    pub fn encode(&self, tag: u8, out: &mut Vec<u8>) {
        // A span's body is a few hundred bytes: two length bytes.
        out.reserve(512);
        let span = begin(out, tag, 2);
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
        out.extend_from_slice(self.encoded_attributes);
        put_attributes(out, 9, self.attributes);
        if let Some(e) = &self.exception {
            let event = begin(out, 11, 1);
            put_opt_fixed64(out, 1, e.time_ns);
            put_bytes(out, 2, b"exception");
            let attrs = [
                (&b"exception.type"[..], FieldValue::Str(e.error_type)),
                (&b"exception.message"[..], FieldValue::Str(e.message)),
                (&b"exception.stacktrace"[..], FieldValue::Str(e.stacktrace)),
            ];
            let n = if e.stacktrace.is_empty() { 2 } else { 3 };
            put_attributes(out, 3, &attrs[..n]);
            end(out, event);
            let status = begin(out, 15, 1);
            put_opt_bytes(out, 2, e.message);
            out.push(key(3, VARINT));
            encode_varint(proto::STATUS_ERROR as u64, out);
            end(out, status);
        }
        end(out, span);
    }
}
