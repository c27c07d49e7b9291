//! Prometheus names of metric definitions.

use snakepit_core::Unit;
use snakepit_telemetry::metrics::{MetricDef, MetricKind, MetricUnit};

/// The Prometheus name of a definition, and the factor that turns the
/// definition's values into the exported unit.
///
/// Dots become underscores. Counters and sums end in `_total` (a trailing
/// `count` measurement is dropped: `x.count` -> `x_total`). Durations and
/// sizes carry their unit: with `base_units` the value is scaled to seconds
/// or bytes and the name ends in `_seconds` / `_bytes`; otherwise the
/// definition's target unit names it (`_milliseconds`). A measurement whose
/// key already ends in the unit (`rss_bytes`) is not suffixed twice.
pub fn prometheus_name(def: &MetricDef, native: Option<Unit>, base_units: bool) -> (String, f64) {
    let mut base: String = def
        .name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let counting = matches!(def.kind(), MetricKind::Counter | MetricKind::Sum);
    if counting && def.measurement() == "count" {
        base.truncate(base.len() - "_count".len());
    }
    let (_, to) = def.unit_conversion();
    // The unit the definition's values are in, as (dimension, size in base units).
    let unit = match (to, native) {
        (MetricUnit::Native, Some(Unit::Nanoseconds | Unit::UnixNanoseconds)) => {
            Some(("seconds", 1e-9, "nanoseconds"))
        }
        (MetricUnit::Native, Some(Unit::Bytes)) => Some(("bytes", 1.0, "bytes")),
        (MetricUnit::Native, _) => None,
        (MetricUnit::Nanosecond, _) => Some(("seconds", 1e-9, "nanoseconds")),
        (MetricUnit::Microsecond, _) => Some(("seconds", 1e-6, "microseconds")),
        (MetricUnit::Millisecond, _) => Some(("seconds", 1e-3, "milliseconds")),
        (MetricUnit::Second, _) => Some(("seconds", 1.0, "seconds")),
        (MetricUnit::Byte, _) => Some(("bytes", 1.0, "bytes")),
        (MetricUnit::Kilobyte, _) => Some(("bytes", 1e3, "kilobytes")),
        (MetricUnit::Megabyte, _) => Some(("bytes", 1e6, "megabytes")),
    };
    let counter_of_events = def.kind() == MetricKind::Counter;
    let mut scale = 1.0;
    if let (Some((base_name, factor, own_name)), false) = (unit, counter_of_events) {
        let suffix = if base_units {
            scale = factor;
            base_name
        } else {
            own_name
        };
        for unit_word in ["_bytes", "_seconds", "_ns", "_ms"] {
            if base.ends_with(unit_word) {
                base.truncate(base.len() - unit_word.len());
                break;
            }
        }
        base.push('_');
        base.push_str(suffix);
    }
    if counting {
        base.push_str("_total");
    }
    (base, scale)
}
