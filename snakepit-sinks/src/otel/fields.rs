//! An event's measurements, metadata and correlation id packed into one
//! string allocation, so the hot path allocates once per event.

use snakepit_core::{Field, Value};

/// Fields kept per event; more are dropped (and counted on the span).
pub(crate) const MAX_FIELDS: usize = 12;

#[derive(Clone, Copy, Debug)]
enum Packed {
    Int(i64),
    Float(f64),
    Str(u32, u32),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: (u32, u32),
    value: Packed,
}

const EMPTY: Entry = Entry {
    key: (0, 0),
    value: Packed::Int(0),
};

/// A field value borrowed from [`PackedFields`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FieldValue<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl FieldValue<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Measurements, then metadata, then the correlation id.
#[derive(Debug)]
pub(crate) struct PackedFields {
    text: String,
    entries: [Entry; MAX_FIELDS],
    measurements: u8,
    len: u8,
    correlation: Option<(u32, u32)>,
    /// Fields that did not fit.
    pub dropped: u32,
}

impl PackedFields {
    pub fn new(
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        correlation: Option<&str>,
    ) -> Self {
        let strings: usize = measurements
            .iter()
            .chain(metadata)
            .take(MAX_FIELDS)
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum::<usize>()
            + correlation.map_or(0, str::len);
        let mut p = PackedFields {
            text: String::with_capacity(strings),
            entries: [EMPTY; MAX_FIELDS],
            measurements: 0,
            len: 0,
            correlation: None,
            dropped: 0,
        };
        for (k, v) in measurements {
            p.push(k, v);
        }
        p.measurements = p.len;
        for (k, v) in metadata {
            p.push(k, v);
        }
        p.correlation = correlation.map(|c| p.put(c));
        p
    }

    fn put(&mut self, s: &str) -> (u32, u32) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        (start, s.len() as u32)
    }

    fn push(&mut self, key: &str, value: &Value<'_>) {
        if usize::from(self.len) >= MAX_FIELDS {
            self.dropped += 1;
            return;
        }
        let key = self.put(key);
        let value = match value {
            Value::Int(i) => Packed::Int(*i),
            Value::Float(f) => Packed::Float(*f),
            Value::Str(s) => {
                let (a, b) = self.put(s);
                Packed::Str(a, b)
            }
        };
        self.entries[usize::from(self.len)] = Entry { key, value };
        self.len += 1;
    }

    fn text(&self, (start, len): (u32, u32)) -> &str {
        self.text
            .get(start as usize..(start + len) as usize)
            .unwrap_or("")
    }

    fn entry(&self, e: &Entry) -> (&str, FieldValue<'_>) {
        let value = match e.value {
            Packed::Int(i) => FieldValue::Int(i),
            Packed::Float(f) => FieldValue::Float(f),
            Packed::Str(a, b) => FieldValue::Str(self.text((a, b))),
        };
        (self.text(e.key), value)
    }

    pub fn measurements(&self) -> impl Iterator<Item = (&str, FieldValue<'_>)> {
        self.entries[..usize::from(self.measurements)]
            .iter()
            .map(|e| self.entry(e))
    }

    pub fn metadata(&self) -> impl Iterator<Item = (&str, FieldValue<'_>)> {
        self.entries[usize::from(self.measurements)..usize::from(self.len)]
            .iter()
            .map(|e| self.entry(e))
    }

    pub fn meta(&self, key: &str) -> Option<FieldValue<'_>> {
        self.metadata().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation.map(|c| self.text(c))
    }
}
