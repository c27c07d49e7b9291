//! One built sink of a [`SinkSet`](crate::SinkSet): its handler id, its
//! kind, and the sink itself, both as a [`Sink`] and as its concrete type.

use std::any::Any;
use std::sync::Arc;

use snakepit_core::config::SinkConfig;
use snakepit_core::Sink;

/// The kind of a sink: the `kind` of its `[[sinks]]` entry, and the Cargo
/// feature of this crate that builds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SinkKind {
    /// `kind = "log"`: [`LogSink`](crate::log::LogSink), feature `log`.
    Log,
    /// `kind = "prometheus"`: [`PrometheusSink`](crate::prometheus::PrometheusSink),
    /// feature `prometheus`.
    Prometheus,
    /// `kind = "otel"`: [`OtelSink`](crate::otel::OtelSink), feature `otel`.
    Otel,
    /// `kind = "plugin"`: [`PluginSink`](crate::plugin::PluginSink),
    /// feature `plugin`.
    Plugin,
}

impl SinkKind {
    /// The kind of a `[[sinks]]` entry.
    pub fn of(config: &SinkConfig) -> SinkKind {
        match config {
            SinkConfig::Log(_) => SinkKind::Log,
            SinkConfig::Prometheus(_) => SinkKind::Prometheus,
            SinkConfig::Otel(_) => SinkKind::Otel,
            SinkConfig::Plugin(_) => SinkKind::Plugin,
        }
    }

    /// The `kind` value in a config file: `log`, `prometheus`, `otel`,
    /// `plugin`.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Log => "log",
            SinkKind::Prometheus => "prometheus",
            SinkKind::Otel => "otel",
            SinkKind::Plugin => "plugin",
        }
    }

    /// The Cargo feature of `snakepit-sinks` that builds sinks of this kind
    /// (named like the kind).
    pub fn feature(self) -> &'static str {
        self.name()
    }

    /// Whether this build of the crate has the kind's feature on.
    pub fn is_enabled(self) -> bool {
        match self {
            SinkKind::Log => cfg!(feature = "log"),
            SinkKind::Prometheus => cfg!(feature = "prometheus"),
            SinkKind::Otel => cfg!(feature = "otel"),
            SinkKind::Plugin => cfg!(feature = "plugin"),
        }
    }
}

impl std::fmt::Display for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One sink of a [`SinkSet`](crate::SinkSet), as built from its
/// `[[sinks]]` entry and attached under [`id`](BuiltSink::id).
pub struct BuiltSink {
    id: String,
    kind: SinkKind,
    sink: Arc<dyn Sink>,
    /// The same sink, for lookups by concrete type.
    concrete: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for BuiltSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltSink")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish()
    }
}

impl BuiltSink {
    /// A built sink of concrete type `T`.
    #[cfg_attr(
        not(any(
            feature = "log",
            feature = "prometheus",
            feature = "otel",
            feature = "plugin"
        )),
        allow(dead_code)
    )]
    pub(crate) fn new<T: Sink + Any>(id: String, kind: SinkKind, sink: Arc<T>) -> BuiltSink {
        BuiltSink {
            id,
            kind,
            sink: sink.clone(),
            concrete: sink,
        }
    }

    /// The handler id it is attached under: `sinks[i].<kind>`, `i` its
    /// position in `[[sinks]]`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its kind.
    pub fn kind(&self) -> SinkKind {
        self.kind
    }

    /// The sink, as the telemetry instance sees it.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// The sink as its concrete type `T` (e.g.
    /// [`PrometheusSink`](crate::prometheus::PrometheusSink)), or `None`
    /// when it is of another type.
    pub fn downcast<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.concrete.downcast_ref::<T>()
    }
}
