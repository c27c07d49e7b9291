//! The one duration dialect of the config file: a string with a unit, as
//! `humantime` reads it (`"250ms"`, `"5s"`, `"1m 30s"`, `"1h"`).
//!
//! Use with `#[serde(with = "snakepit_core::duration")]` on a
//! [`Duration`] field. For the deprecated integer-millisecond keys
//! (`export_interval_ms`) the field takes an alias and [`deserialize`] also
//! accepts an integer of milliseconds; [`crate::Config::from_toml`] then
//! rejects an integer under the new key and warns about the old key.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Reads a duration string (`"5s"`), or an integer of milliseconds (the
/// deprecated `_ms` keys).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// Writes a duration string (`"1s 500ms"`).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// The dialect's spelling of `d`, e.g. `1s 500ms`.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses the dialect: `"250ms"`, `"5s"`, `"1m 30s"`.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write a number and a unit such as \"250ms\", \"5s\" or \"1m\"")
    })
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"250ms\", \"5s\" or \"1m\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| E::custom(format!("{v} is negative; a duration is at least 0ms")))
    }
}
