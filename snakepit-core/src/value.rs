//! Measurement and metadata values.

use std::borrow::Cow;
use std::fmt;

/// A measurement or metadata value: an integer, a float or a string, exactly
/// what the wire format (`TelemetryValue`) can carry.
///
/// Strings are borrowed when the event is a view (no allocation on the hot
/// path) and owned when an event has to outlive the emitting call, see
/// [`Value::into_owned`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A signed 64-bit integer (durations in nanoseconds, counts, bytes).
    Int(i64),
    /// A 64-bit float (ratios, percentages).
    Float(f64),
    /// A string (metadata such as a tool name or a worker id).
    Str(Cow<'a, str>),
}

impl Value<'_> {
    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(_) => None,
        }
    }

    /// The value as an integer, if it is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// True for an `Int`, or a `Float` that is finite.
    pub fn is_finite_number(&self) -> bool {
        match self {
            Value::Int(_) => true,
            Value::Float(f) => f.is_finite(),
            Value::Str(_) => false,
        }
    }

    /// Detaches the value from any borrowed data.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Float(f),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        }
    }

    /// A borrowed copy of this value (cheap: strings are not copied).
    pub fn reborrow(&self) -> Value<'_> {
        match self {
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(Cow::Borrowed(s)),
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u64> for Value<'_> {
    /// Saturates at `i64::MAX`.
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Value<'_> {
    /// Saturates at `i64::MAX`.
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value<'_> {
    /// Booleans travel as the strings `"true"` / `"false"`, as on the wire.
    fn from(v: bool) -> Self {
        Value::Str(Cow::Borrowed(if v { "true" } else { "false" }))
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(Cow::Borrowed(v))
    }
}
impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Str(Cow::Owned(v))
    }
}
impl<'a> From<Cow<'a, str>> for Value<'a> {
    fn from(v: Cow<'a, str>) -> Self {
        Value::Str(v)
    }
}

/// One named value of an event: `(key, value)`.
pub type Field<'a> = (&'a str, Value<'a>);

/// Looks up `key` in a field list (linear: field lists are short).
pub fn find<'s, 'a>(fields: &'s [Field<'a>], key: &str) -> Option<&'s Value<'a>> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}
