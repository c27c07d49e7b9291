//! An event's measurements, metadata and correlation id packed into one
//! byte buffer, stored inline in the queued message when it fits, so the
//! hot path usually allocates nothing and the message stays small (it is
//! copied into the queue and read on the other core).
//!
//! Layout: the correlation id's bytes, then one record per field in order
//! (measurements, then metadata): the key's length (LEB128) and bytes, then
//! a tag byte ([`INT`], [`FLOAT`]) and 8 bytes (LE) for numbers, or
//! [`STR`], the length (LEB128) and the bytes for strings.
//!
//! Text is read back as bytes: they were copied from `&str`s and are only
//! ever written out again (protobuf strings are those bytes), so nothing
//! needs to validate them twice.

use snakepit_core::{Field, Value};

/// Fields kept per event; more are dropped.
pub(crate) const MAX_FIELDS: usize = 12;

/// The fields of an event a span keeps: the first [`MAX_FIELDS`],
/// measurements first (they count towards the limit even when a span
/// does not use them).
pub(crate) fn kept<'f, 'a>(
    measurements: &'f [Field<'a>],
    metadata: &'f [Field<'a>],
) -> (&'f [Field<'a>], &'f [Field<'a>]) {
    let measurements = &measurements[..measurements.len().min(MAX_FIELDS)];
    let metadata = &metadata[..metadata.len().min(MAX_FIELDS - measurements.len())];
    (measurements, metadata)
}

/// Bytes stored inside the message; larger events spill to the heap.
const INLINE: usize = 96;

const INT: u8 = 0;
const FLOAT: u8 = 1;
const STR: u8 = 2;

/// A field value borrowed from [`PackedFields`]; text is UTF-8 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FieldValue<'a> {
    Int(i64),
    Float(f64),
    Str(&'a [u8]),
}

impl<'a> FieldValue<'a> {
    pub fn as_str(&self) -> Option<&'a [u8]> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Storage {
    /// Bytes used, and the bytes.
    Inline(u8, [u8; INLINE]),
    /// The bytes when they do not fit inline.
    Heap(Box<[u8]>),
}

/// Measurements, then metadata, then the correlation id.
#[derive(Debug)]
pub(crate) struct PackedFields {
    bytes: Storage,
    measurements: u8,
    len: u8,
    /// Length of the correlation id at the start of the bytes, or
    /// [`NO_CORRELATION`].
    correlation: u32,
}

const NO_CORRELATION: u32 = u32::MAX;

fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

fn record_len(key: &str, value: &Value<'_>) -> usize {
    varint_len(key.len())
        + key.len()
        + 1
        + match value {
            Value::Int(_) | Value::Float(_) => 8,
            Value::Str(s) => varint_len(s.len()) + s.len(),
        }
}

/// Writes into a slice; `full` once something did not fit (the rest is
/// then skipped).
struct Cursor<'b> {
    out: &'b mut [u8],
    at: usize,
    full: bool,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        match self.out.get_mut(self.at..self.at + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.at += bytes.len();
            }
            None => self.full = true,
        }
    }

    fn put_byte(&mut self, b: u8) {
        match self.out.get_mut(self.at) {
            Some(dst) => {
                *dst = b;
                self.at += 1;
            }
            None => self.full = true,
        }
    }

    fn put_str(&mut self, s: &str) {
        let mut n = s.len();
        while n >= 0x80 {
            self.put_byte((n as u8) | 0x80);
            n >>= 7;
        }
        self.put_byte(n as u8);
        self.put(s.as_bytes());
    }

    fn record(&mut self, key: &str, value: &Value<'_>) {
        self.put_str(key);
        match value {
            Value::Int(i) => {
                self.put_byte(INT);
                self.put(&i.to_le_bytes());
            }
            Value::Float(f) => {
                self.put_byte(FLOAT);
                self.put(&f.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                self.put_byte(STR);
                self.put_str(s);
            }
        }
    }
}

impl PackedFields {
    /// Packs the fields of one event. Of the measurements only what a span
    /// can use is kept: none when `with_measurements` is false (a start's
    /// are not exported), never `duration` (it becomes the span's end).
    /// They still count towards [`MAX_FIELDS`].
    pub fn new(
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        correlation: Option<&str>,
        with_measurements: bool,
    ) -> Self {
        Self::pack(measurements, metadata, correlation, |k| {
            with_measurements && k != "duration"
        })
    }

    /// Packs the measurements whose key is `wanted` and the metadata.
    pub(crate) fn pack(
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        correlation: Option<&str>,
        wanted: impl Fn(&str) -> bool,
    ) -> Self {
        let (measurements, metadata) = kept(measurements, metadata);
        let wanted = |(k, _): &&Field<'_>| wanted(k);
        let stored_measurements = measurements.iter().filter(wanted).count();
        let fields = || measurements.iter().filter(wanted).chain(metadata);
        // Returns the bytes written, or None if they did not fit.
        let write = |out: &mut [u8]| {
            let mut c = Cursor {
                out,
                at: 0,
                full: false,
            };
            if let Some(id) = correlation {
                c.put(id.as_bytes());
            }
            for (k, v) in fields() {
                c.record(k, v);
                if c.full {
                    return None;
                }
            }
            (!c.full).then_some(c.at)
        };
        // Most events fit inline: write there first, measure only if not.
        let mut inline = [0u8; INLINE];
        let bytes = match write(&mut inline) {
            Some(n) => Storage::Inline(n as u8, inline),
            None => {
                let size = correlation.map_or(0, str::len)
                    + fields().map(|(k, v)| record_len(k, v)).sum::<usize>();
                let mut buf = vec![0u8; size].into_boxed_slice();
                write(&mut buf);
                Storage::Heap(buf)
            }
        };
        PackedFields {
            bytes,
            measurements: stored_measurements as u8,
            len: (stored_measurements + metadata.len()) as u8,
            correlation: correlation.map_or(NO_CORRELATION, |c| c.len() as u32),
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Storage::Inline(n, buf) => &buf[..usize::from(*n)],
            Storage::Heap(buf) => buf,
        }
    }

    /// Every field in order, measurements first.
    fn fields(&self) -> Fields<'_> {
        let bytes = self.bytes();
        let start = self.correlation_len().unwrap_or(0);
        Fields {
            bytes: bytes.get(start..).unwrap_or(&[]),
            left: self.len,
        }
    }

    /// Every field in order, each with whether it is a measurement (they
    /// come first): one pass where `measurements` and `metadata` make two.
    pub fn all(&self) -> impl Iterator<Item = (bool, &[u8], FieldValue<'_>)> {
        let measurements = usize::from(self.measurements);
        self.fields()
            .enumerate()
            .map(move |(i, (k, v))| (i < measurements, k, v))
    }

    /// The measurements (the exporter reads them with [`PackedFields::all`]).
    #[cfg(test)]
    pub fn measurements(&self) -> impl Iterator<Item = (&[u8], FieldValue<'_>)> {
        self.fields().take(usize::from(self.measurements))
    }

    pub fn metadata(&self) -> impl Iterator<Item = (&[u8], FieldValue<'_>)> {
        self.fields().skip(usize::from(self.measurements))
    }

    /// The first metadata value of `key` (the exporter reads them in order).
    #[cfg(test)]
    pub fn meta(&self, key: &[u8]) -> Option<FieldValue<'_>> {
        self.metadata().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn correlation_len(&self) -> Option<usize> {
        (self.correlation != NO_CORRELATION).then_some(self.correlation as usize)
    }

    pub fn correlation_id(&self) -> Option<&[u8]> {
        let n = self.correlation_len()?;
        Some(self.bytes().get(..n).unwrap_or(&[]))
    }
}

/// Reads records back.
struct Fields<'a> {
    bytes: &'a [u8],
    left: u8,
}

impl<'a> Fields<'a> {
    fn u64(&mut self) -> Option<u64> {
        let (b, rest) = self.bytes.split_first_chunk::<8>()?;
        self.bytes = rest;
        Some(u64::from_le_bytes(*b))
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let (&first, mut rest) = self.bytes.split_first()?;
        let mut n = usize::from(first);
        if first >= 0x80 {
            n = usize::from(first & 0x7f);
            let mut shift = 7;
            loop {
                let (&b, tail) = rest.split_first()?;
                rest = tail;
                n |= usize::from(b & 0x7f).checked_shl(shift)?;
                shift += 7;
                if b < 0x80 {
                    break;
                }
            }
        }
        if rest.len() < n {
            return None;
        }
        let (s, rest) = rest.split_at(n);
        self.bytes = rest;
        Some(s)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], FieldValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let key = self.str()?;
        let (&tag, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        let value = match tag {
            INT => FieldValue::Int(self.u64()? as i64),
            FLOAT => FieldValue::Float(f64::from_bits(self.u64()?)),
            _ => FieldValue::Str(self.str()?),
        };
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_inline_and_spilled_fields() {
        let long = "x".repeat(500);
        let mid = "z".repeat(200);
        for text in ["short", "", mid.as_str(), long.as_str()] {
            let m = [("duration", Value::Int(-5)), ("ratio", Value::Float(0.5))];
            let md = [("tool", Value::from(text)), ("n", Value::Int(3))];
            let p = PackedFields::new(&m, &md, Some("c0ffee"), true);
            let got: Vec<_> = p.measurements().collect();
            assert_eq!(got, [(&b"ratio"[..], FieldValue::Float(0.5))]);
            let all = PackedFields::pack(&m, &md, Some("c0ffee"), |_| true);
            let got: Vec<_> = all.measurements().collect();
            assert_eq!(
                got,
                [
                    (&b"duration"[..], FieldValue::Int(-5)),
                    (&b"ratio"[..], FieldValue::Float(0.5))
                ]
            );
            let got: Vec<_> = p.metadata().collect();
            assert_eq!(
                got,
                [
                    (&b"tool"[..], FieldValue::Str(text.as_bytes())),
                    (&b"n"[..], FieldValue::Int(3))
                ]
            );
            assert_eq!(p.meta(b"n"), Some(FieldValue::Int(3)));
            assert_eq!(p.correlation_id(), Some(&b"c0ffee"[..]));
        }
    }

    #[test]
    fn keeps_at_most_max_fields_measurements_first() {
        let m: Vec<(&str, Value)> = (0..8).map(|i| ("m", Value::Int(i))).collect();
        let md: Vec<(&str, Value)> = (0..8).map(|i| ("d", Value::Int(i))).collect();
        let p = PackedFields::new(&m, &md, None, true);
        assert_eq!(p.measurements().count(), 8);
        assert_eq!(p.metadata().count(), MAX_FIELDS - 8);
        // Measurements left out still count towards the limit.
        let p = PackedFields::new(&m, &md, None, false);
        assert_eq!(p.measurements().count(), 0);
        assert_eq!(p.metadata().count(), MAX_FIELDS - 8);
        assert_eq!(p.correlation_id(), None);
        let p = PackedFields::new(&[], &[], Some(""), true);
        assert_eq!(p.correlation_id(), Some(&b""[..]));
        assert_eq!(p.metadata().count(), 0);
    }
}

#[cfg(test)]
mod size {
    /// The queued message stays small: with the channel's per-slot stamp
    /// it crosses cores once per event.
    #[test]
    fn queued_message_is_small() {
        let size = std::mem::size_of::<super::super::Msg>();
        assert!(size + 8 <= 176, "{size}");
    }
}
