//! Building the sinks a config file selects, attaching them, and shutting
//! them down together.
//!
//! ```
//! # #[cfg(all(feature = "log", feature = "prometheus"))]
//! # fn main() {
//! use snakepit_core::Config;
//! use snakepit_sinks::prometheus::PrometheusSink;
//! use snakepit_sinks::{SinkKind, SinkSet};
//! use std::time::Duration;
//!
//! let config = Config::from_toml(
//!     "[[sinks]]\nkind = \"log\"\nevents = [\"pool.*\"]\n\n\
//!      [[sinks]]\nkind = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n",
//!     "snakepit.toml",
//! ).unwrap();
//! let telemetry = snakepit_sinks::telemetry_from_config(&config);
//! let sinks = SinkSet::from_config(&config, &telemetry).unwrap();
//! assert_eq!(sinks.ids(), ["sinks[0].log", "sinks[1].prometheus"]);
//! assert!(sinks.prometheus_addr().is_some());
//! // Typed lookups, by id or by kind.
//! let prometheus = sinks.get::<PrometheusSink>("sinks[1].prometheus").unwrap();
//! assert_eq!(prometheus.local_addr(), sinks.prometheus_addr());
//! assert_eq!(sinks.sinks_of_kind(SinkKind::Log).count(), 1);
//! sinks.shutdown(Duration::from_secs(2)).unwrap();
//! # }
//! # #[cfg(not(all(feature = "log", feature = "prometheus")))]
//! # fn main() {}
//! ```

#[cfg(feature = "prometheus")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snakepit_core::config::{ConfigSource, SinkConfig};
use snakepit_core::{Config, Pattern, Sink, SinkError};
use snakepit_telemetry::{AttachError, Telemetry};

use crate::built::{BuiltSink, SinkKind};
#[cfg(feature = "log")]
use crate::log::LogSink;
#[cfg(feature = "otel")]
use crate::otel::{OtelError, OtelSink, OtelStats};
#[cfg(feature = "plugin")]
use crate::plugin::{PluginSink, PluginStats};
#[cfg(feature = "prometheus")]
use crate::prometheus::{PrometheusError, PrometheusSink};

/// A configured sink could not be built or attached. Messages name the
/// config file and the line of the sink's entry (when the config came from
/// a file, see `Config::source`) and the key (`sinks[i]`) of the sink at
/// fault: `snakepit.toml, line 12: sinks[1] (prometheus): ...`. The variants
/// of kinds whose feature is off are left out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkSetError {
    /// The entry's kind is left out of this build: the crate's Cargo
    /// feature of that name is off.
    #[error(
        "{}sinks[{index}] ({kind}): this build of snakepit-sinks leaves out {kind} sinks; \
         enable its Cargo feature `{feature}` (snakepit-sinks = {{ features = [\"{feature}\"] }}) \
         or remove the entry",
        in_file(at.as_deref())
    )]
    Disabled {
        /// Where the sink is written, when the config came from a file.
        at: Option<Box<SinkLocation>>,
        /// Position in `[[sinks]]`.
        index: usize,
        /// The entry's kind.
        kind: SinkKind,
        /// The feature to enable.
        feature: &'static str,
    },
    /// The Prometheus sink failed (bad metric definition, listener).
    #[cfg(feature = "prometheus")]
    #[error("{}sinks[{index}] (prometheus): {source}", in_file(at.as_deref()))]
    Prometheus {
        /// Where the sink is written, when the config came from a file.
        at: Option<Box<SinkLocation>>,
        /// Position in `[[sinks]]`.
        index: usize,
        /// What failed.
        source: PrometheusError,
    },
    /// The OTel sink failed.
    #[cfg(feature = "otel")]
    #[error("{}sinks[{index}] (otel): {source}", in_file(at.as_deref()))]
    Otel {
        /// Where the sink is written, when the config came from a file.
        at: Option<Box<SinkLocation>>,
        /// Position in `[[sinks]]`.
        index: usize,
        /// What failed.
        source: OtelError,
    },
    /// The plugin could not be loaded.
    #[cfg(feature = "plugin")]
    #[error("{}sinks[{index}] (plugin): {message}", in_file(at.as_deref()))]
    Plugin {
        /// Where the sink is written, when the config came from a file.
        at: Option<Box<SinkLocation>>,
        /// Position in `[[sinks]]`.
        index: usize,
        /// What failed.
        message: String,
    },
    /// The sink's event patterns match nothing, or the id is taken.
    #[error("{}sinks[{index}].events: {source}", in_file(at.as_deref()))]
    Attach {
        /// Where the sink is written, when the config came from a file.
        at: Option<Box<SinkLocation>>,
        /// Position in `[[sinks]]`.
        index: usize,
        /// What failed.
        source: AttachError,
    },
}

/// The counters of one sink of a [`SinkSet`], by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkStats {
    /// The log sink keeps no counters.
    Log,
    /// The Prometheus sink's figures are its `/metrics` exposition.
    Prometheus,
    /// An OTel sink's counters.
    #[cfg(feature = "otel")]
    Otel(OtelStats),
    /// A plugin sink's counters (delivered, refused, dropped, queued).
    #[cfg(feature = "plugin")]
    Plugin(PluginStats),
}

impl SinkStats {
    /// The counters of `built`, by its kind.
    fn of(built: &BuiltSink) -> SinkStats {
        match built.kind() {
            #[cfg(feature = "otel")]
            SinkKind::Otel => built
                .downcast::<OtelSink>()
                .map_or(SinkStats::Log, |s| SinkStats::Otel(s.stats())),
            #[cfg(feature = "plugin")]
            SinkKind::Plugin => built
                .downcast::<PluginSink>()
                .map_or(SinkStats::Log, |s| SinkStats::Plugin(s.stats())),
            SinkKind::Prometheus => SinkStats::Prometheus,
            _ => SinkStats::Log,
        }
    }
}

/// Where a sink is written in its config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkLocation {
    /// The config file.
    pub file: PathBuf,
    /// The line of the sink's `[[sinks]]` entry, when known.
    pub line: Option<usize>,
}

/// `<file>, line <n>: `, or nothing for a config made in code.
fn in_file(at: Option<&SinkLocation>) -> String {
    match at {
        Some(SinkLocation {
            file,
            line: Some(l),
        }) => format!("{}, line {l}: ", file.display()),
        Some(SinkLocation { file, line: None }) => format!("{}: ", file.display()),
        None => String::new(),
    }
}

/// The attached sinks of one config, in config order: each with its
/// handler id and kind, looked up by id and concrete type with
/// [`get`](SinkSet::get), or by kind with
/// [`sinks_of_kind`](SinkSet::sinks_of_kind).
pub struct SinkSet {
    telemetry: Telemetry,
    sinks: Vec<BuiltSink>,
}

impl std::fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSet").field("ids", &self.ids()).finish()
    }
}

/// A telemetry instance with the config's policy (toggle, sampling,
/// filters) and log levels: [`Telemetry::from_config`]. Add
/// [`Telemetry::tracing_layer`] to the application's `tracing` subscriber
/// (or call [`Telemetry::try_init_tracing`]) so that the log levels apply.
pub fn telemetry_from_config(config: &Config) -> Telemetry {
    Telemetry::from_config(config)
}

impl SinkSet {
    /// Builds every `[[sinks]]` entry and attaches it to `telemetry` under
    /// the id `sinks[i].<kind>`, for the events its `events` patterns match
    /// (all events when empty). On error, the sinks attached so far are
    /// detached and shut down.
    pub fn from_config(config: &Config, telemetry: &Telemetry) -> Result<SinkSet, SinkSetError> {
        let mut set = SinkSet {
            telemetry: telemetry.clone(),
            sinks: Vec::new(),
        };
        for (index, sink) in config.sinks.iter().enumerate() {
            if let Err(e) = set.add(index, sink, config.source.as_ref()) {
                let _ = set.shutdown(Duration::from_secs(2));
                return Err(e);
            }
        }
        Ok(set)
    }

    fn add(
        &mut self,
        index: usize,
        config: &SinkConfig,
        source: Option<&ConfigSource>,
    ) -> Result<(), SinkSetError> {
        let kind = SinkKind::of(config);
        let id = format!("sinks[{index}].{kind}");
        let at = || {
            source.map(|s| {
                Box::new(SinkLocation {
                    file: s.file.clone(),
                    line: s.sink_line(index),
                })
            })
        };
        let (built, patterns) = self.build(index, id, config, &at)?;
        let sink = built.sink().clone();
        if let Err(source) =
            self.telemetry
                .attach_sink(built.id().to_string(), patterns, sink.clone())
        {
            let _ = sink.shutdown(Duration::from_secs(1));
            return Err(SinkSetError::Attach {
                at: at(),
                index,
                source,
            });
        }
        self.sinks.push(built);
        Ok(())
    }

    /// Builds the sink of one entry (not attached yet), with its event
    /// patterns; an entry whose kind's feature is off is refused.
    fn build<'c>(
        &self,
        index: usize,
        id: String,
        config: &'c SinkConfig,
        at: &dyn Fn() -> Option<Box<SinkLocation>>,
    ) -> Result<(BuiltSink, &'c [Pattern]), SinkSetError> {
        let t = &self.telemetry;
        let kind = SinkKind::of(config);
        match config {
            #[cfg(feature = "log")]
            SinkConfig::Log(c) => Ok((
                BuiltSink::new(id, kind, Arc::new(LogSink::new(t))),
                &c.events,
            )),
            #[cfg(feature = "prometheus")]
            SinkConfig::Prometheus(c) => {
                let sink = PrometheusSink::from_config(c, t.catalog()).map_err(|source| {
                    SinkSetError::Prometheus {
                        at: at(),
                        index,
                        source,
                    }
                })?;
                Ok((BuiltSink::new(id, kind, Arc::new(sink)), &c.events))
            }
            #[cfg(feature = "otel")]
            SinkConfig::Otel(c) => {
                let sink = OtelSink::new(c, t).map_err(|source| SinkSetError::Otel {
                    at: at(),
                    index,
                    source,
                })?;
                Ok((BuiltSink::new(id, kind, Arc::new(sink)), &c.events))
            }
            #[cfg(feature = "plugin")]
            SinkConfig::Plugin(c) => {
                let sink = PluginSink::load(c, t).map_err(|e| SinkSetError::Plugin {
                    at: at(),
                    index,
                    message: e.to_string(),
                })?;
                Ok((BuiltSink::new(id, kind, Arc::new(sink)), &c.events))
            }
            #[allow(unreachable_patterns)]
            _ => {
                let _ = (t, id);
                Err(SinkSetError::Disabled {
                    at: at(),
                    index,
                    kind,
                    feature: kind.feature(),
                })
            }
        }
    }

    /// Each sink's counters with its handler id, in config order.
    pub fn stats(&self) -> Vec<(&str, SinkStats)> {
        self.sinks
            .iter()
            .map(|b| (b.id(), SinkStats::of(b)))
            .collect()
    }

    /// The handler ids, in config order.
    pub fn ids(&self) -> Vec<&str> {
        self.sinks.iter().map(BuiltSink::id).collect()
    }

    /// The sinks, in config order.
    pub fn sinks(&self) -> impl Iterator<Item = &Arc<dyn Sink>> {
        self.sinks.iter().map(BuiltSink::sink)
    }

    /// The built sinks with their ids and kinds, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &BuiltSink> {
        self.sinks.iter()
    }

    /// The sinks of one kind, in config order.
    pub fn sinks_of_kind(&self, kind: SinkKind) -> impl Iterator<Item = &BuiltSink> {
        self.sinks.iter().filter(move |b| b.kind() == kind)
    }

    /// The sink attached under handler `id` (`sinks[i].<kind>`) as its
    /// concrete type `T`, e.g.
    /// `set.get::<PrometheusSink>("sinks[1].prometheus")`; `None` when no
    /// sink has that id or it is of another type.
    pub fn get<T: std::any::Any + Send + Sync>(&self, id: &str) -> Option<&T> {
        self.sinks
            .iter()
            .find(|b| b.id() == id)
            .and_then(BuiltSink::downcast::<T>)
    }

    /// Where the first Prometheus sink serves `/metrics`.
    #[cfg(feature = "prometheus")]
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.sinks_of_kind(SinkKind::Prometheus)
            .find_map(BuiltSink::downcast::<PrometheusSink>)
            .and_then(PrometheusSink::local_addr)
    }

    /// Flushes every sink, sharing one deadline.
    pub fn flush(&self, timeout: Duration) -> Result<(), Vec<SinkError>> {
        within(timeout, self.sinks(), |s, left| s.flush(left))
    }

    /// Detaches every sink, then flushes and shuts them down, all within
    /// `timeout`. Returns every sink's error, if any failed.
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), Vec<SinkError>> {
        let deadline = Instant::now() + timeout;
        for built in &self.sinks {
            let _ = self.telemetry.detach(built.id());
        }
        let sinks: Vec<BuiltSink> = self.sinks.drain(..).collect();
        within(
            deadline.saturating_duration_since(Instant::now()),
            sinks.iter().map(BuiltSink::sink),
            |s, left| s.shutdown(left),
        )
    }
}

/// Runs `f` on each sink with what is left of one shared deadline, and
/// collects the errors.
fn within<'a>(
    timeout: Duration,
    sinks: impl Iterator<Item = &'a Arc<dyn Sink>>,
    f: impl Fn(&dyn Sink, Duration) -> Result<(), SinkError>,
) -> Result<(), Vec<SinkError>> {
    let deadline = Instant::now() + timeout;
    let errors: Vec<SinkError> = sinks
        .filter_map(|s| {
            f(
                s.as_ref(),
                deadline.saturating_duration_since(Instant::now()),
            )
            .err()
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal `[[sinks]]` entry of each kind.
    fn entry(kind: SinkKind) -> &'static str {
        match kind {
            SinkKind::Log => "[[sinks]]\nkind = \"log\"\n",
            SinkKind::Prometheus => "[[sinks]]\nkind = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n",
            SinkKind::Otel => "[[sinks]]\nkind = \"otel\"\nendpoint = \"http://127.0.0.1:9\"\n",
            SinkKind::Plugin => {
                "[[sinks]]\nkind = \"plugin\"\npath = \"/nonexistent/libnope.so\"\n"
            }
        }
    }

    const KINDS: [SinkKind; 4] = [
        SinkKind::Log,
        SinkKind::Prometheus,
        SinkKind::Otel,
        SinkKind::Plugin,
    ];

    #[test]
    fn the_disabled_error_names_the_entry_the_kind_and_the_feature() {
        let e = SinkSetError::Disabled {
            at: None,
            index: 3,
            kind: SinkKind::Otel,
            feature: SinkKind::Otel.feature(),
        }
        .to_string();
        assert!(e.starts_with("sinks[3] (otel): "), "{e}");
        assert!(e.contains("feature `otel`"), "{e}");
        assert!(e.contains("features = [\"otel\"]"), "{e}");
    }

    /// Run by `cargo xtask features` (a build with the `log` feature
    /// alone): an entry whose kind's feature is off is refused by name, and
    /// the sink built before it is detached again.
    #[test]
    #[cfg_attr(
        all(
            feature = "log",
            feature = "prometheus",
            feature = "otel",
            feature = "plugin"
        ),
        ignore = "every kind's feature is on in this build"
    )]
    fn an_entry_whose_feature_is_off_is_refused_by_kind_and_feature() {
        let off: Vec<SinkKind> = KINDS.into_iter().filter(|k| !k.is_enabled()).collect();
        assert!(!off.is_empty());
        // A sink built before the refused entry (a plugin needs a library).
        let on = KINDS
            .into_iter()
            .find(|k| k.is_enabled() && *k != SinkKind::Plugin);
        for kind in off {
            let text = format!("{}\n{}", on.map_or("", entry), entry(kind));
            let config = Config::from_toml(&text, "snakepit.toml").unwrap();
            let t = telemetry_from_config(&config);
            let e = SinkSet::from_config(&config, &t).unwrap_err();
            let index = usize::from(on.is_some());
            // The refused entry's `[[sinks]]` line, after the one built before.
            let line = on.map_or(0, |k| entry(k).lines().count()) + 2;
            assert!(
                matches!(e, SinkSetError::Disabled { index: i, kind: k, feature, .. }
                    if i == index && k == kind && feature == kind.name()),
                "{e:?}"
            );
            let message = e.to_string();
            assert!(
                message.starts_with(&format!(
                    "snakepit.toml, line {line}: sinks[{index}] ({kind})"
                )) && message.contains(&format!("feature `{kind}`")),
                "{message}"
            );
            assert!(t.list().is_empty(), "the sink built before was detached");
        }
    }
}
