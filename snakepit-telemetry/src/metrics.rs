//! Metric definitions: plain data that metric sinks (Prometheus) turn into
//! series, in the manner of Elixir's `Telemetry.Metrics`.
//!
//! A metric is named `<event name>.<measurement>`; the event is everything
//! before the last segment:
//!
//! ```
//! use snakepit_telemetry::metrics::{summary, counter, MetricUnit};
//! use snakepit_core::Catalog;
//!
//! let m = summary("snakepit.python.call.stop.duration")
//!     .unit(MetricUnit::Native, MetricUnit::Millisecond)
//!     .tags(["command"]);
//! assert_eq!(m.event_name(), "snakepit.python.call.stop");
//! assert_eq!(m.measurement(), "duration");
//! let resolved = m.resolve(&Catalog::builtin()).unwrap();
//! assert_eq!(resolved.convert(2_500_000.0), 2.5);
//! assert!(counter("snakepit.made.up.count").resolve(&Catalog::builtin()).is_err());
//! ```

use std::fmt;
use std::sync::Arc;

use snakepit_core::{Catalog, Event, EventId, Unit, Value};

/// What a metric aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Counts events (the measurement is ignored).
    Counter,
    /// Adds up the measurement.
    Sum,
    /// Keeps the latest value of the measurement (a gauge).
    LastValue,
    /// Quantiles of the measurement.
    Summary,
    /// A histogram of the measurement, with buckets.
    Distribution,
}

impl MetricKind {
    /// The kind's name, as `Telemetry.Metrics` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Sum => "sum",
            MetricKind::LastValue => "last_value",
            MetricKind::Summary => "summary",
            MetricKind::Distribution => "distribution",
        }
    }
}

/// A unit for conversion: `unit(Native, Millisecond)` turns nanoseconds
/// into milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricUnit {
    /// The measurement's catalog unit, unchanged (nanoseconds for durations).
    Native,
    /// Nanoseconds.
    Nanosecond,
    /// Microseconds.
    Microsecond,
    /// Milliseconds.
    Millisecond,
    /// Seconds.
    Second,
    /// Bytes.
    Byte,
    /// Kilobytes (1000 bytes).
    Kilobyte,
    /// Megabytes (1000^2 bytes).
    Megabyte,
}

impl MetricUnit {
    fn scale(self, native: Unit) -> Option<(Dimension, f64)> {
        Some(match self {
            MetricUnit::Native => match native {
                Unit::Nanoseconds | Unit::UnixNanoseconds => (Dimension::Time, 1e-9),
                Unit::Bytes => (Dimension::Size, 1.0),
                Unit::Count | Unit::Percent => return None,
            },
            MetricUnit::Nanosecond => (Dimension::Time, 1e-9),
            MetricUnit::Microsecond => (Dimension::Time, 1e-6),
            MetricUnit::Millisecond => (Dimension::Time, 1e-3),
            MetricUnit::Second => (Dimension::Time, 1.0),
            MetricUnit::Byte => (Dimension::Size, 1.0),
            MetricUnit::Kilobyte => (Dimension::Size, 1e3),
            MetricUnit::Megabyte => (Dimension::Size, 1e6),
        })
    }

    /// The unit's suffix in Prometheus names (`seconds`, `bytes`, ...).
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            MetricUnit::Native => None,
            MetricUnit::Nanosecond => Some("nanoseconds"),
            MetricUnit::Microsecond => Some("microseconds"),
            MetricUnit::Millisecond => Some("milliseconds"),
            MetricUnit::Second => Some("seconds"),
            MetricUnit::Byte => Some("bytes"),
            MetricUnit::Kilobyte => Some("kilobytes"),
            MetricUnit::Megabyte => Some("megabytes"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dimension {
    Time,
    Size,
}

/// Turns a metadata value into a tag value.
pub type TagTransform = Arc<dyn Fn(&str, &Value<'_>) -> String + Send + Sync>;

/// A metric definition. Build one with [`counter`], [`sum`], [`last_value`],
/// [`summary`] or [`distribution`].
#[derive(Clone)]
pub struct MetricDef {
    kind: MetricKind,
    name: String,
    event_name: String,
    measurement: String,
    tags: Vec<String>,
    tag_transform: Option<TagTransform>,
    unit: (MetricUnit, MetricUnit),
    description: String,
    buckets: Vec<f64>,
}

impl fmt::Debug for MetricDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricDef")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("unit", &self.unit)
            .finish()
    }
}

fn def(kind: MetricKind, name: &str) -> MetricDef {
    let (event_name, measurement) = name.rsplit_once('.').unwrap_or((name, ""));
    MetricDef {
        kind,
        name: name.to_string(),
        event_name: event_name.to_string(),
        measurement: measurement.to_string(),
        tags: Vec::new(),
        tag_transform: None,
        unit: (MetricUnit::Native, MetricUnit::Native),
        description: String::new(),
        buckets: Vec::new(),
    }
}

/// Counts events: `counter("snakepit.pool.worker.spawned.count")`.
pub fn counter(name: &str) -> MetricDef {
    def(MetricKind::Counter, name)
}
/// Sums a measurement.
pub fn sum(name: &str) -> MetricDef {
    def(MetricKind::Sum, name)
}
/// Keeps the latest value of a measurement.
pub fn last_value(name: &str) -> MetricDef {
    def(MetricKind::LastValue, name)
}
/// Quantiles of a measurement.
pub fn summary(name: &str) -> MetricDef {
    def(MetricKind::Summary, name)
}
/// A histogram of a measurement; set buckets with [`MetricDef::buckets`].
pub fn distribution(name: &str) -> MetricDef {
    def(MetricKind::Distribution, name)
}

impl MetricDef {
    /// Tags taken from these metadata keys.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Transforms every tag value: `f(tag, metadata value) -> tag value`.
    pub fn tag_values(
        mut self,
        f: impl Fn(&str, &Value<'_>) -> String + Send + Sync + 'static,
    ) -> Self {
        self.tag_transform = Some(Arc::new(f));
        self
    }

    /// Converts the measurement from one unit to another.
    pub fn unit(mut self, from: MetricUnit, to: MetricUnit) -> Self {
        self.unit = (from, to);
        self
    }

    /// A help text.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Histogram bucket bounds (for [`distribution`]), in the converted unit.
    pub fn buckets(mut self, bounds: impl Into<Vec<f64>>) -> Self {
        self.buckets = bounds.into();
        self
    }

    /// The kind.
    pub fn kind(&self) -> MetricKind {
        self.kind
    }
    /// The full dotted name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The event it reads.
    pub fn event_name(&self) -> &str {
        &self.event_name
    }
    /// The measurement it reads.
    pub fn measurement(&self) -> &str {
        &self.measurement
    }
    /// The tag keys.
    pub fn tag_keys(&self) -> &[String] {
        &self.tags
    }
    /// The unit conversion `(from, to)`.
    pub fn unit_conversion(&self) -> (MetricUnit, MetricUnit) {
        self.unit
    }
    /// The help text.
    pub fn help(&self) -> &str {
        &self.description
    }
    /// The histogram buckets.
    pub fn bucket_bounds(&self) -> &[f64] {
        &self.buckets
    }
    /// The tag value transform, if one was set with [`MetricDef::tag_values`].
    pub fn tag_transform(&self) -> Option<&TagTransform> {
        self.tag_transform.as_ref()
    }

    /// Checks the definition against a catalog: the event exists, the
    /// measurement is one of its measurements (except for counters), and the
    /// units convert.
    pub fn resolve(&self, catalog: &Catalog) -> Result<ResolvedMetric, MetricError> {
        let event = catalog
            .id(&self.event_name)
            .ok_or_else(|| MetricError::UnknownEvent {
                metric: self.name.clone(),
                event: self.event_name.clone(),
            })?;
        let spec = catalog.spec(event);
        let mut factor = 1.0;
        if self.kind != MetricKind::Counter {
            let m = spec
                .measurements
                .iter()
                .find(|m| m.key == self.measurement)
                .ok_or_else(|| MetricError::UnknownMeasurement {
                    metric: self.name.clone(),
                    event: self.event_name.clone(),
                    allowed: spec
                        .measurements
                        .iter()
                        .map(|m| m.key.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let (from, to) = self.unit;
            if (from, to) != (MetricUnit::Native, MetricUnit::Native) {
                let bad = || MetricError::BadUnit {
                    metric: self.name.clone(),
                    from,
                    to,
                };
                let (fd, fs) = from.scale(m.unit).ok_or_else(bad)?;
                let (td, ts) = to.scale(m.unit).ok_or_else(bad)?;
                if fd != td {
                    return Err(bad());
                }
                factor = fs / ts;
            }
        }
        Ok(ResolvedMetric {
            def: self.clone(),
            event,
            factor,
        })
    }
}

/// A definition checked against a catalog, ready for a sink.
#[derive(Clone, Debug)]
pub struct ResolvedMetric {
    /// The definition.
    pub def: MetricDef,
    /// The event it reads.
    pub event: EventId,
    factor: f64,
}

impl ResolvedMetric {
    /// Converts a raw measurement into the metric's unit.
    pub fn convert(&self, raw: f64) -> f64 {
        raw * self.factor
    }

    /// The converted measurement of an event (`Some(1.0)` for counters),
    /// `None` when the event lacks it or it is not a finite number.
    pub fn value(&self, event: &Event<'_>) -> Option<f64> {
        if self.def.kind == MetricKind::Counter {
            return Some(1.0);
        }
        let v = event.measurement(&self.def.measurement)?.as_f64()?;
        v.is_finite().then(|| self.convert(v))
    }

    /// The tag values of an event, in tag order (`""` for a missing key).
    pub fn tag_values(&self, event: &Event<'_>) -> Vec<String> {
        self.def
            .tags
            .iter()
            .map(|k| match (event.meta(k), &self.def.tag_transform) {
                (Some(v), Some(f)) => f(k, v),
                (Some(v), None) => v.to_string(),
                (None, _) => String::new(),
            })
            .collect()
    }
}

/// A metric definition does not fit the catalog.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// The event is not in the catalog.
    #[error("metric `{metric}`: unknown event `{event}`")]
    UnknownEvent {
        /// The metric.
        metric: String,
        /// The event it names.
        event: String,
    },
    /// The event has no such measurement.
    #[error("metric `{metric}`: event `{event}` has no such measurement; allowed: {allowed}")]
    UnknownMeasurement {
        /// The metric.
        metric: String,
        /// The event.
        event: String,
        /// Its measurements.
        allowed: String,
    },
    /// The units do not convert.
    #[error("metric `{metric}`: cannot convert {from:?} to {to:?}")]
    BadUnit {
        /// The metric.
        metric: String,
        /// From.
        from: MetricUnit,
        /// To.
        to: MetricUnit,
    },
}

/// The guide's example set, plus the other useful series of the catalog.
pub fn default_metrics() -> Vec<MetricDef> {
    use MetricUnit::{Megabyte, Millisecond, Native};
    vec![
        // The guide's "complete monitoring example".
        last_value("snakepit.pool.status.queue_depth")
            .tags(["pool_name"])
            .description("calls waiting for a worker"),
        last_value("snakepit.pool.status.available_workers")
            .tags(["pool_name"])
            .description("workers that can take a call"),
        summary("snakepit.python.call.stop.duration")
            .unit(Native, Millisecond)
            .tags(["command"])
            .description("time a call spent in the Python worker"),
        counter("snakepit.python.call.exception.count")
            .tags(["error_type"])
            .description("calls that raised in the Python worker"),
        counter("snakepit.pool.worker.spawned.count")
            .tags(["pool_name"])
            .description("worker processes started"),
        // The rest of the catalog's useful series.
        last_value("snakepit.pool.status.busy_workers")
            .tags(["pool_name"])
            .description("workers with every slot taken"),
        last_value("snakepit.pool.status.total_workers")
            .tags(["pool_name"])
            .description("workers alive"),
        distribution("snakepit.pool.queue.dequeued.queue_time")
            .unit(Native, Millisecond)
            .tags(["pool_name"])
            .buckets([0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0])
            .description("time calls waited in the queue"),
        counter("snakepit.pool.queue.timeout.count")
            .tags(["pool_name"])
            .description("calls that timed out in the queue"),
        counter("snakepit.pool.saturated.count")
            .tags(["pool_name"])
            .description("calls rejected because the pool was saturated"),
        counter("snakepit.pool.worker.terminated.count")
            .tags(["pool_name", "reason"])
            .description("worker processes that ended"),
        counter("snakepit.pool.worker.restarted.count")
            .tags(["pool_name"])
            .description("crashed workers replaced"),
        distribution("snakepit.grpc.call.stop.duration")
            .unit(Native, Millisecond)
            .tags(["tool"])
            .buckets([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 50.0, 100.0, 1000.0,
            ])
            .description("round trip time of calls to workers"),
        counter("snakepit.grpc.call.exception.count")
            .tags(["tool", "error_type"])
            .description("calls to workers that failed"),
        summary("snakepit.python.tool.execution.stop.duration")
            .unit(Native, Millisecond)
            .tags(["tool"])
            .description("time in the tool function"),
        last_value("snakepit.python.memory.sampled.rss_bytes")
            .unit(Native, Megabyte)
            .tags(["worker_id"])
            .description("resident memory of each worker"),
        last_value("snakepit.python.cpu.sampled.cpu_percent")
            .tags(["worker_id"])
            .description("CPU use of each worker"),
        counter("snakepit.telemetry.event.rejected.count")
            .tags(["reason"])
            .description("Python events rejected by the host"),
        sum("snakepit.telemetry.events.dropped.count")
            .tags(["where", "reason"])
            .description("events dropped, by place and reason"),
    ]
}
