//! The event catalog: a bounded, static table of every event snakepit emits.
//!
//! Events are identified by an [`EventId`], an index into the catalog, so the
//! hot path never compares strings. Names are written dotted
//! (`snakepit.pool.queue.enqueued`). The built-in events are listed in
//! [`builtin`](crate::builtin); an application may add its own with
//! [`CatalogBuilder`] before it builds its telemetry instance, after which the
//! catalog is frozen (it is shared immutably).
//!
//! Python workers name their events relative to `snakepit.python.`: the wire
//! name `tool.execution.stop` is the catalog event
//! `snakepit.python.tool.execution.stop`. A wire name that is not in the
//! catalog is rejected by the host, never turned into a new event.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::error::CatalogError;
use crate::pattern::Pattern;

/// Index of an event in a [`Catalog`]. Cheap to copy and compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(u32);

impl EventId {
    /// Creates an id from a raw index. Only meaningful for the catalog it
    /// came from; built-in ids are the constants in [`crate::builtin`].
    pub const fn from_index(index: u32) -> Self {
        EventId(index)
    }

    /// The index of this event in its catalog.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where an event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Emitted by the Rust host.
    Host,
    /// Emitted by a Python worker and folded into the host's telemetry.
    Python,
}

impl Origin {
    /// `host` or `python`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Host => "host",
            Origin::Python => "python",
        }
    }
}

/// The unit of a measurement. One unit per quantity, everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// A duration in nanoseconds (monotonic clock).
    Nanoseconds,
    /// A point in time: nanoseconds since the unix epoch.
    UnixNanoseconds,
    /// A number of things.
    Count,
    /// A size in bytes.
    Bytes,
    /// A percentage (100 = one full CPU core).
    Percent,
}

impl Unit {
    /// The unit's name as written in the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Nanoseconds => "ns",
            Unit::UnixNanoseconds => "unix ns",
            Unit::Count => "count",
            Unit::Bytes => "bytes",
            Unit::Percent => "percent",
        }
    }
}

/// A measurement an event carries.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasurementSpec {
    /// The key, e.g. `duration`.
    pub key: Cow<'static, str>,
    /// Its unit.
    pub unit: Unit,
    /// What it measures.
    pub description: Cow<'static, str>,
}

/// A metadata key an event carries. Metadata keys are documentation: events
/// may carry other keys (bounded in number and length by the host).
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataSpec {
    /// The key, e.g. `worker_id`.
    pub key: Cow<'static, str>,
    /// What it holds.
    pub description: Cow<'static, str>,
}

/// One catalog entry.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSpec {
    /// Dotted name, e.g. `snakepit.pool.worker.spawned`.
    pub name: Cow<'static, str>,
    /// What the event means and when it is emitted.
    pub description: Cow<'static, str>,
    /// Who emits it.
    pub origin: Origin,
    /// The measurements it carries. For Python events, keys not listed here
    /// are dropped (and counted) by the host.
    pub measurements: Cow<'static, [MeasurementSpec]>,
    /// The metadata keys it usually carries.
    pub metadata: Cow<'static, [MetadataSpec]>,
}

impl EventSpec {
    /// A new spec with no measurements and no metadata.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        origin: Origin,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        EventSpec {
            name: name.into(),
            description: description.into(),
            origin,
            measurements: Cow::Borrowed(&[]),
            metadata: Cow::Borrowed(&[]),
        }
    }

    /// Adds a measurement.
    pub fn measurement(
        mut self,
        key: impl Into<Cow<'static, str>>,
        unit: Unit,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.measurements.to_mut().push(MeasurementSpec {
            key: key.into(),
            unit,
            description: description.into(),
        });
        self
    }

    /// Adds a metadata key.
    pub fn metadata(
        mut self,
        key: impl Into<Cow<'static, str>>,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.metadata.to_mut().push(MetadataSpec {
            key: key.into(),
            description: description.into(),
        });
        self
    }

    /// The name split into its segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.name.split('.')
    }

    /// The position of measurement `key`, if the catalog lists it.
    pub fn measurement_index(&self, key: &str) -> Option<usize> {
        self.measurements.iter().position(|m| m.key == key)
    }
}

/// Role of an event in a start/stop/exception span family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanRole {
    /// `<prefix>.start`
    Start,
    /// `<prefix>.stop`
    Stop,
    /// `<prefix>.exception`
    Exception,
}

/// The three events of a span: `<prefix>.start`, `.stop`, `.exception`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanFamily {
    /// Emitted when the span opens.
    pub start: EventId,
    /// Emitted when the span closes normally, with `duration`.
    pub stop: EventId,
    /// Emitted when the span fails, with `duration` and `error_type`.
    pub exception: EventId,
}

/// The prefix that Python wire names are relative to.
pub const PYTHON_PREFIX: &str = "snakepit.python.";

/// How the reference system's Python adapters begin the names of the
/// worker's events (`python.call.stop`, `python.gc.completed`): the same
/// events as `call.stop` and `gc.completed` (see [`Catalog::python_id`]).
pub const REFERENCE_PYTHON_PREFIX: &str = "python.";

/// A frozen catalog. Build one with [`Catalog::builtin`] or
/// [`Catalog::builder`]; share it behind an `Arc`.
#[derive(Debug)]
pub struct Catalog {
    events: Vec<EventSpec>,
    by_name: HashMap<String, EventId>,
    /// Span role and family of each event, when it is part of a complete family.
    spans: Vec<Option<(SpanRole, SpanFamily)>>,
}

impl Catalog {
    /// The built-in catalog: every event snakepit itself emits.
    pub fn builtin() -> Catalog {
        Catalog::builder().build()
    }

    /// A builder that starts from the built-in events.
    pub fn builder() -> CatalogBuilder {
        CatalogBuilder {
            events: crate::builtin::specs(),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Always false: the built-in events are always present.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The id of the event with this full dotted name.
    pub fn id(&self, name: &str) -> Option<EventId> {
        self.by_name.get(name).copied()
    }

    /// The id for a Python wire name (relative to `snakepit.python.`), e.g.
    /// `call.stop`. A full name starting with `snakepit.python.` is accepted
    /// too, and so is the reference system's spelling, relative to
    /// `snakepit.` ([`REFERENCE_PYTHON_PREFIX`], `python.call.stop`): tried
    /// only when the name does not resolve as it is, so the usual names cost
    /// nothing more. Only Python-origin events resolve.
    pub fn python_id(&self, wire_name: &str) -> Option<EventId> {
        self.python_id_as_is(wire_name).or_else(|| {
            let rest = wire_name.strip_prefix(REFERENCE_PYTHON_PREFIX)?;
            self.python_id_as_is(rest)
        })
    }

    fn python_id_as_is(&self, wire_name: &str) -> Option<EventId> {
        let id = if wire_name.starts_with(PYTHON_PREFIX) {
            self.id(wire_name)?
        } else {
            // Look up without allocating for the common short names.
            let mut buf = [0u8; 160];
            let total = PYTHON_PREFIX.len() + wire_name.len();
            if total <= buf.len() {
                buf[..PYTHON_PREFIX.len()].copy_from_slice(PYTHON_PREFIX.as_bytes());
                buf[PYTHON_PREFIX.len()..total].copy_from_slice(wire_name.as_bytes());
                let full = std::str::from_utf8(&buf[..total]).ok()?;
                self.id(full)?
            } else {
                return None;
            }
        };
        (self.spec(id).origin == Origin::Python).then_some(id)
    }

    /// The spec of an event. Panics if `id` is not from this catalog.
    pub fn spec(&self, id: EventId) -> &EventSpec {
        &self.events[id.index()]
    }

    /// The spec of an event, or `None` if `id` is out of range.
    pub fn get(&self, id: EventId) -> Option<&EventSpec> {
        self.events.get(id.index())
    }

    /// The name of an event.
    pub fn name(&self, id: EventId) -> &str {
        &self.events[id.index()].name
    }

    /// Every event, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (EventId, &EventSpec)> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, s)| (EventId(i as u32), s))
    }

    /// The events whose names match a glob pattern (see [`Pattern`]).
    pub fn matching(&self, pattern: &Pattern) -> Vec<EventId> {
        self.iter()
            .filter(|(_, s)| pattern.matches_event(&s.name))
            .map(|(id, _)| id)
            .collect()
    }

    /// The span family whose events are `<prefix>.start/stop/exception`.
    pub fn span_family(&self, prefix: &str) -> Option<SpanFamily> {
        let start = self.id(&format!("{prefix}.start"))?;
        self.spans[start.index()].map(|(_, family)| family)
    }

    /// The span role and family of an event, if it belongs to a complete family.
    pub fn span_of(&self, id: EventId) -> Option<(SpanRole, SpanFamily)> {
        self.spans.get(id.index()).copied().flatten()
    }

    /// The event sampling decisions are made for: the family's `start` for a
    /// span event (so a span is never split), the event itself otherwise.
    pub fn sampling_anchor(&self, id: EventId) -> EventId {
        match self.span_of(id) {
            Some((_, family)) => family.start,
            None => id,
        }
    }
}

/// Builds a [`Catalog`] from the built-in events plus application events.
#[derive(Debug, Clone)]
pub struct CatalogBuilder {
    events: Vec<EventSpec>,
}

impl CatalogBuilder {
    /// Adds an application event. Fails on an invalid or duplicate name, or a
    /// Python-origin event outside `snakepit.python.`.
    pub fn event(mut self, spec: EventSpec) -> Result<Self, CatalogError> {
        validate_name(&spec.name)?;
        if self.events.iter().any(|e| e.name == spec.name) {
            return Err(CatalogError::Duplicate {
                name: spec.name.into_owned(),
            });
        }
        if spec.origin == Origin::Python && !spec.name.starts_with(PYTHON_PREFIX) {
            return Err(CatalogError::PythonOutsidePrefix {
                name: spec.name.into_owned(),
            });
        }
        for (i, m) in spec.measurements.iter().enumerate() {
            if spec.measurements[..i].iter().any(|o| o.key == m.key) {
                return Err(CatalogError::DuplicateMeasurement {
                    name: spec.name.into_owned(),
                    key: m.key.clone().into_owned(),
                });
            }
        }
        if self.events.len() >= u32::MAX as usize {
            return Err(CatalogError::TooManyEvents);
        }
        self.events.push(spec);
        Ok(self)
    }

    /// Freezes the catalog.
    pub fn build(self) -> Catalog {
        let by_name: HashMap<String, EventId> = self
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.to_string(), EventId(i as u32)))
            .collect();
        let mut spans = vec![None; self.events.len()];
        for (i, e) in self.events.iter().enumerate() {
            let Some(prefix) = e.name.strip_suffix(".start") else {
                continue;
            };
            let stop = by_name.get(&format!("{prefix}.stop"));
            let exception = by_name.get(&format!("{prefix}.exception"));
            if let (Some(&stop), Some(&exception)) = (stop, exception) {
                let family = SpanFamily {
                    start: EventId(i as u32),
                    stop,
                    exception,
                };
                spans[i] = Some((SpanRole::Start, family));
                spans[stop.index()] = Some((SpanRole::Stop, family));
                spans[exception.index()] = Some((SpanRole::Exception, family));
            }
        }
        Catalog {
            events: self.events,
            by_name,
            spans,
        }
    }
}

/// Checks an event name: dotted segments of `[a-z0-9_]`, at least two segments.
pub fn validate_name(name: &str) -> Result<(), CatalogError> {
    let bad = |why: &'static str| CatalogError::InvalidName {
        name: name.to_string(),
        why,
    };
    if name.is_empty() || name.len() > 128 {
        return Err(bad("must be 1 to 128 characters"));
    }
    let mut segments = 0;
    for seg in name.split('.') {
        segments += 1;
        if seg.is_empty() {
            return Err(bad("has an empty segment"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad("segments may hold only a-z, 0-9 and _"));
        }
    }
    if segments < 2 {
        return Err(bad("needs at least two dotted segments"));
    }
    Ok(())
}
