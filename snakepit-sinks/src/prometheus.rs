//! The Prometheus sink: metric definitions turned into series on a
//! `metrics-exporter-prometheus` recorder, served on an HTTP listener.
//!
//! * Each [`MetricDef`] is resolved against the catalog once, when the sink
//!   is built. `counter` and `sum` become Prometheus counters, `last_value` a
//!   gauge, `summary` a summary with quantiles (0, 0.5, 0.9, 0.95, 0.99,
//!   0.999, 1) over a sliding window, `distribution` a histogram with the
//!   definition's buckets.
//! * Names follow Prometheus conventions, see [`prometheus_name`]:
//!   `snakepit.python.call.exception.count` (counter) is exported as
//!   `snakepit_python_call_exception_total`, and
//!   `snakepit.python.call.stop.duration` converted to milliseconds as
//!   `snakepit_python_call_stop_duration_seconds` (with `base_units`, the
//!   default, values are scaled to seconds and bytes) or
//!   `..._duration_milliseconds` (with `base_units = false`).
//! * Per metric, at most `max_series_per_metric` distinct label sets are
//!   created; later label sets go to one overflow series whose labels are all
//!   `other`, and `snakepit_prometheus_series_overflow_total{metric}` counts
//!   the events that went there.
//! * The hot path (`handle`) looks up cached handles by the event's tag
//!   values and does not allocate when the label set was seen before (unless
//!   the definition has a tag transform, which returns owned strings).
//! * No global recorder is installed: every sink has its own registry.
//! * `/metrics` is served by hyper on a small runtime owned by the sink's
//!   listener thread, one task per connection, with per-connection
//!   deadlines ([`HEADER_TIMEOUT`], [`CONNECTION_TIMEOUT`]) and at most
//!   [`MAX_CONNECTIONS`] at once, so a slow client never delays a scrape.
//!   The recorder's upkeep runs on a thread of its own.

mod listener;
mod naming;
mod samples;
mod series;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::Recorder;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use snakepit_core::config::PrometheusSinkConfig;
use snakepit_core::{Catalog, Event, EventId, Sink, SinkError};
use snakepit_telemetry::metrics::{
    default_metrics, MetricDef, MetricError, MetricKind, ResolvedMetric,
};

use self::listener::Listener;
pub use self::listener::{
    CONNECTION_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_HEAD, UPKEEP_EVERY,
};
pub use self::naming::prometheus_name;
use self::samples::Registry;
use self::series::{Group, Member};

/// Label value of the overflow series.
pub const OVERFLOW_LABEL: &str = "other";

/// Name of the counter of events that went to an overflow series.
pub const OVERFLOW_METRIC: &str = "snakepit_prometheus_series_overflow_total";

/// The Prometheus sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// A metric definition does not fit the catalog.
    #[error(transparent)]
    Metric(#[from] MetricError),
    /// Two definitions map to the same Prometheus name.
    #[error("metrics `{first}` and `{second}` are both exported as `{name}`; rename one")]
    DuplicateName {
        /// The Prometheus name.
        name: String,
        /// The first definition.
        first: String,
        /// The second definition.
        second: String,
    },
    /// Histogram buckets were rejected.
    #[error("metric `{metric}`: invalid buckets: {message}")]
    Buckets {
        /// The definition.
        metric: String,
        /// Why.
        message: String,
    },
    /// The listener could not bind.
    #[error("cannot listen on {listen} for /metrics: {source}")]
    Listen {
        /// The address.
        listen: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

struct Shared {
    registry: Arc<Registry>,
    by_event: Box<[Box<[Group]>]>,
}

/// The Prometheus sink. Attach it with
/// `telemetry.attach_sink(id, &patterns, Arc::new(sink))`; build it with
/// [`PrometheusSink::builder`] or [`PrometheusSink::from_config`].
pub struct PrometheusSink {
    shared: Arc<Shared>,
    listener: Mutex<Option<Listener>>,
    local_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for PrometheusSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSink")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Builds a [`PrometheusSink`].
#[derive(Debug)]
pub struct PrometheusSinkBuilder {
    metrics: Vec<MetricDef>,
    max_series_per_metric: usize,
    base_units: bool,
    listen: Option<SocketAddr>,
}

impl PrometheusSink {
    /// A builder with [`default_metrics`], 1000 series per metric, base
    /// units, and no listener.
    pub fn builder() -> PrometheusSinkBuilder {
        PrometheusSinkBuilder {
            metrics: default_metrics(),
            max_series_per_metric: 1000,
            base_units: true,
            listen: None,
        }
    }

    /// The sink a `kind = "prometheus"` config table describes, with the
    /// default metrics and its listener started.
    pub fn from_config(
        config: &PrometheusSinkConfig,
        catalog: &Catalog,
    ) -> Result<PrometheusSink, PrometheusError> {
        PrometheusSink::builder()
            .max_series_per_metric(config.max_series_per_metric)
            .base_units(config.base_units)
            .listen(config.listen)
            .build(catalog)
    }

    /// The exposition text (Prometheus text format 0.0.4), as a scrape sees it.
    pub fn render(&self) -> String {
        self.shared.registry.render()
    }

    /// The address the `/metrics` listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The Prometheus names of the exported metrics, in definition order per event.
    pub fn metric_names(&self) -> Vec<String> {
        self.shared
            .by_event
            .iter()
            .flat_map(|groups| groups.iter().flat_map(|g| g.names().map(str::to_string)))
            .collect()
    }
}

impl PrometheusSinkBuilder {
    /// Uses these metric definitions instead of the defaults.
    pub fn metrics(mut self, metrics: Vec<MetricDef>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Caps distinct label sets per metric (at least 1).
    pub fn max_series_per_metric(mut self, cap: usize) -> Self {
        self.max_series_per_metric = cap.max(1);
        self
    }

    /// Exports in base units (seconds, bytes) when true.
    pub fn base_units(mut self, on: bool) -> Self {
        self.base_units = on;
        self
    }

    /// Serves `GET /metrics` on this address.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Resolves every definition, registers the series and starts the listener.
    pub fn build(self, catalog: &Catalog) -> Result<PrometheusSink, PrometheusError> {
        struct Planned {
            resolved: ResolvedMetric,
            name: String,
            scale: f64,
        }
        let mut planned = Vec::with_capacity(self.metrics.len());
        let mut names: HashMap<String, String> = HashMap::new();
        let mut builder = PrometheusBuilder::new();
        for def in &self.metrics {
            let resolved = def.resolve(catalog)?;
            let native = catalog
                .spec(resolved.event)
                .measurements
                .iter()
                .find(|m| m.key == def.measurement())
                .map(|m| m.unit);
            let (name, scale) = prometheus_name(def, native, self.base_units);
            if let Some(first) = names.insert(name.clone(), def.name().to_string()) {
                return Err(PrometheusError::DuplicateName {
                    name,
                    first,
                    second: def.name().to_string(),
                });
            }
            if def.kind() == MetricKind::Distribution {
                let buckets: Vec<f64> = if def.bucket_bounds().is_empty() {
                    vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]
                } else {
                    def.bucket_bounds().iter().map(|b| b * scale).collect()
                };
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.clone()), &buckets)
                    .map_err(|e| PrometheusError::Buckets {
                        metric: def.name().to_string(),
                        message: e.to_string(),
                    })?;
            }
            planned.push(Planned {
                resolved,
                name,
                scale,
            });
        }
        let registry = Arc::new(Registry::new(builder.build_recorder()));
        let recorder = &registry.recorder;
        recorder.describe_counter(
            OVERFLOW_METRIC.into(),
            None,
            "events recorded into a metric's overflow series (label set cap reached)".into(),
        );
        let mut by_event: Vec<Vec<Group>> = (0..catalog.len()).map(|_| Vec::new()).collect();
        for p in planned {
            let def = &p.resolved.def;
            let kind = def.kind();
            let help = if def.help().is_empty() {
                def.name().to_string()
            } else {
                def.help().to_string()
            };
            let name = p.name.clone();
            match kind {
                MetricKind::Counter | MetricKind::Sum => {
                    recorder.describe_counter(name.into(), None, help.into())
                }
                MetricKind::LastValue => recorder.describe_gauge(name.into(), None, help.into()),
                MetricKind::Summary | MetricKind::Distribution => {
                    recorder.describe_histogram(name.into(), None, help.into())
                }
            }
            let tags = def.tag_keys();
            let transform = def.tag_transform().is_some();
            let groups = &mut by_event[p.resolved.event.index()];
            let member = Member {
                kind,
                name: p.name,
                scale: p.scale,
                resolved: p.resolved.clone(),
            };
            match groups.iter_mut().find(|g| g.accepts(tags, transform)) {
                Some(g) => g.push(member),
                None => groups.push(Group::new(
                    tags.to_vec().into_boxed_slice(),
                    vec![member],
                    self.max_series_per_metric,
                )),
            }
        }
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            by_event: by_event.into_iter().map(Vec::into_boxed_slice).collect(),
        });
        let listener = Listener::start(self.listen, registry)?;
        let local_addr = listener.addr;
        Ok(PrometheusSink {
            shared,
            listener: Mutex::new(Some(listener)),
            local_addr,
        })
    }
}

impl Sink for PrometheusSink {
    fn name(&self) -> &str {
        "prometheus"
    }

    #[inline]
    fn handle(&self, event: &Event<'_>) {
        let shared = &*self.shared;
        if let Some(groups) = shared.by_event.get(event.id().index()) {
            for group in groups.iter() {
                group.record(event, &shared.registry);
            }
        }
    }

    fn flush(&self, _timeout: Duration) -> Result<(), SinkError> {
        self.shared.registry.upkeep();
        Ok(())
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), SinkError> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match listener {
            Some(l) => l.stop(timeout),
            None => Ok(()),
        }
    }
}

impl PrometheusSink {
    /// The series of an event id (for tests and tools): their Prometheus names.
    pub fn series_for(&self, event: EventId) -> Vec<&str> {
        self.shared
            .by_event
            .get(event.index())
            .map(|groups| groups.iter().flat_map(|g| g.names()).collect())
            .unwrap_or_default()
    }
}

impl Drop for PrometheusSink {
    fn drop(&mut self) {
        let listener = self
            .listener
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(l) = listener {
            let _ = l.stop(Duration::from_secs(2));
        }
    }
}
