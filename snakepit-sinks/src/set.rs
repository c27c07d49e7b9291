//! Building the sinks a config file selects, attaching them, and shutting
//! them down together.
//!
//! ```
//! use snakepit_core::Config;
//! use snakepit_sinks::SinkSet;
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
//! sinks.shutdown(Duration::from_secs(2)).unwrap();
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snakepit_core::config::{ConfigSource, SinkConfig};
use snakepit_core::{Config, Sink, SinkError};
use snakepit_telemetry::{AttachError, LogConfig, Telemetry};

use crate::log::LogSink;
use crate::otel::{OtelError, OtelSink, OtelStats};
use crate::plugin::{PluginSink, PluginStats};
use crate::prometheus::{PrometheusError, PrometheusSink};

/// A configured sink could not be built or attached. Messages name the
/// config file and the line of the sink's entry (when the config came from
/// a file, see `Config::source`) and the key (`sinks[i]`) of the sink at
/// fault: `snakepit.toml, line 12: sinks[1] (prometheus): ...`.
#[derive(Debug, thiserror::Error)]
pub enum SinkSetError {
    /// The Prometheus sink failed (bad metric definition, listener).
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
    Otel(OtelStats),
    /// A plugin sink's counters (delivered, refused, dropped, queued).
    Plugin(PluginStats),
}

/// A sink of the set with its concrete type, for its counters.
enum Typed {
    Log,
    Prometheus,
    Otel(Arc<OtelSink>),
    Plugin(Arc<PluginSink>),
}

impl Typed {
    fn stats(&self) -> SinkStats {
        match self {
            Typed::Log => SinkStats::Log,
            Typed::Prometheus => SinkStats::Prometheus,
            Typed::Otel(s) => SinkStats::Otel(s.stats()),
            Typed::Plugin(s) => SinkStats::Plugin(s.stats()),
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

/// The attached sinks of one config, in config order.
pub struct SinkSet {
    telemetry: Telemetry,
    sinks: Vec<(String, Arc<dyn Sink>)>,
    typed: Vec<Typed>,
    prometheus: Option<Arc<PrometheusSink>>,
    otel: Option<Arc<OtelSink>>,
}

impl std::fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSet").field("ids", &self.ids()).finish()
    }
}

/// A telemetry instance with the config's policy (toggle, sampling,
/// filters) and log levels.
pub fn telemetry_from_config(config: &Config) -> Telemetry {
    Telemetry::builder()
        .policy(config.telemetry.policy())
        .log_config(LogConfig::from_config(&config.telemetry))
        .build()
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
            typed: Vec::new(),
            prometheus: None,
            otel: None,
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
        let t = &self.telemetry;
        let at = || {
            source.map(|s| {
                Box::new(SinkLocation {
                    file: s.file.clone(),
                    line: s.sink_line(index),
                })
            })
        };
        let (kind, sink, typed, patterns): (&str, Arc<dyn Sink>, _, _) = match config {
            SinkConfig::Log(c) => ("log", Arc::new(LogSink::new(t)), Typed::Log, &c.events),
            SinkConfig::Prometheus(c) => {
                let sink = Arc::new(PrometheusSink::from_config(c, t.catalog()).map_err(
                    |source| SinkSetError::Prometheus {
                        at: at(),
                        index,
                        source,
                    },
                )?);
                self.prometheus.get_or_insert_with(|| sink.clone());
                ("prometheus", sink, Typed::Prometheus, &c.events)
            }
            SinkConfig::Otel(c) => {
                let sink = Arc::new(OtelSink::new(c, t).map_err(|source| SinkSetError::Otel {
                    at: at(),
                    index,
                    source,
                })?);
                self.otel.get_or_insert_with(|| sink.clone());
                ("otel", sink.clone(), Typed::Otel(sink), &c.events)
            }
            SinkConfig::Plugin(c) => {
                let sink = Arc::new(PluginSink::load(c, t).map_err(|e| SinkSetError::Plugin {
                    at: at(),
                    index,
                    message: e.to_string(),
                })?);
                ("plugin", sink.clone(), Typed::Plugin(sink), &c.events)
            }
        };
        let id = format!("sinks[{index}].{kind}");
        if let Err(source) = t.attach_sink(id.clone(), patterns, sink.clone()) {
            let _ = sink.shutdown(Duration::from_secs(1));
            return Err(SinkSetError::Attach {
                at: at(),
                index,
                source,
            });
        }
        self.sinks.push((id, sink));
        self.typed.push(typed);
        Ok(())
    }

    /// Each sink's counters with its handler id, in config order.
    pub fn stats(&self) -> Vec<(&str, SinkStats)> {
        self.sinks
            .iter()
            .zip(&self.typed)
            .map(|((id, _), typed)| (id.as_str(), typed.stats()))
            .collect()
    }

    /// The handler ids, in config order.
    pub fn ids(&self) -> Vec<&str> {
        self.sinks.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The sinks, in config order.
    pub fn sinks(&self) -> impl Iterator<Item = &Arc<dyn Sink>> {
        self.sinks.iter().map(|(_, s)| s)
    }

    /// The first Prometheus sink, if any.
    pub fn prometheus(&self) -> Option<&Arc<PrometheusSink>> {
        self.prometheus.as_ref()
    }

    /// Where the first Prometheus sink serves `/metrics`.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus.as_ref().and_then(|p| p.local_addr())
    }

    /// The first OTel sink, if any.
    pub fn otel(&self) -> Option<&Arc<OtelSink>> {
        self.otel.as_ref()
    }

    /// Flushes every sink, sharing one deadline.
    pub fn flush(&self, timeout: Duration) -> Result<(), Vec<SinkError>> {
        within(timeout, self.sinks.iter().map(|(_, s)| s), |s, left| {
            s.flush(left)
        })
    }

    /// Detaches every sink, then flushes and shuts them down, all within
    /// `timeout`. Returns every sink's error, if any failed.
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), Vec<SinkError>> {
        let deadline = Instant::now() + timeout;
        for (id, _) in &self.sinks {
            let _ = self.telemetry.detach(id);
        }
        let sinks: Vec<(String, Arc<dyn Sink>)> = self.sinks.drain(..).collect();
        self.typed.clear();
        within(
            deadline.saturating_duration_since(Instant::now()),
            sinks.iter().map(|(_, s)| s),
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
