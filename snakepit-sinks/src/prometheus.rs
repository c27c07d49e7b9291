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
//! * No global recorder is installed. By default every sink has its own
//!   registry; with [`PrometheusSinkBuilder::global_recorder`] (config
//!   `recorder = "global"`) or [`PrometheusSinkBuilder::into_recorder`] the
//!   series go to the app's recorder instead, described there with the
//!   sink's names and help, so the app's `/metrics` shows both (see
//!   [`PrometheusSink::render_with`]). Histogram samples still wait in the
//!   sink's per-thread buffers and reach that recorder in batches.
//! * A sink may have no listener (`listen = "none"`): an app that serves
//!   `/metrics` itself mounts [`PrometheusSink::render`] (or its own
//!   handle's render) in its router.
//! * `/metrics` is served by hyper on a small runtime owned by the sink's
//!   listener thread, one task per connection, with per-connection
//!   deadlines ([`HEADER_TIMEOUT`], [`CONNECTION_TIMEOUT`]) and at most
//!   [`MAX_CONNECTIONS`] at once, so a slow client never delays a scrape.
//!   The recorder's upkeep runs on a thread of its own.

mod builder;
mod listener;
mod naming;
mod samples;
mod series;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use snakepit_core::config::PrometheusSinkConfig;
use snakepit_core::{Catalog, Event, EventId, Sink, SinkError};
use snakepit_telemetry::metrics::{default_metrics, MetricError};

pub use self::builder::PrometheusSinkBuilder;
use self::builder::RecorderTarget;
use self::listener::Listener;
pub use self::listener::{
    CONNECTION_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_HEAD, UPKEEP_EVERY,
};
pub use self::naming::prometheus_name;
use self::samples::Registry;
use self::series::Group;

/// The `metrics` facade this sink records through (0.24): an app whose
/// recorder the sink records into must use this version (another version
/// of the crate has another process recorder).
pub use metrics;
/// The exporter of the sink's own registry (0.17), for an app that builds
/// its recorder with [`PrometheusSinkBuilder::configure_exporter`].
pub use metrics_exporter_prometheus;

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
    /// A listener was asked for a sink that records into the app's
    /// recorder: that sink has no exposition of its own to serve.
    #[error(
        "a Prometheus sink that records into the app's recorder cannot serve /metrics on \
         {listen}: use listen = \"none\" and serve the app's exposition (see \
         PrometheusSink::render_with)"
    )]
    ListenerWithoutRegistry {
        /// The address asked for.
        listen: SocketAddr,
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

impl PrometheusSink {
    /// A builder with [`default_metrics`], 1000 series per metric, base
    /// units, its own registry, and no listener.
    pub fn builder() -> PrometheusSinkBuilder {
        PrometheusSinkBuilder {
            metrics: default_metrics(),
            max_series_per_metric: 1000,
            base_units: true,
            listen: None,
            recorder: RecorderTarget::Own,
        }
    }

    /// The sink a `kind = "prometheus"` config table describes, with the
    /// default metrics and its listener (if any) started.
    pub fn from_config(
        config: &PrometheusSinkConfig,
        catalog: &Catalog,
    ) -> Result<PrometheusSink, PrometheusError> {
        PrometheusSinkBuilder::from_config(config).build(catalog)
    }

    /// The sink's own exposition (Prometheus text format 0.0.4), as a
    /// scrape of its listener sees it: every sample recorded before the
    /// call is in it.
    ///
    /// With the app's recorder ([`PrometheusSinkBuilder::global_recorder`],
    /// [`PrometheusSinkBuilder::into_recorder`]) the sink has no exposition
    /// of its own: this hands the buffered samples over and returns the
    /// empty string; use [`PrometheusSink::render_with`].
    ///
    /// Mounted in an app's router (here axum; any server works the same
    /// way), for a sink built with `listen = "none"`:
    ///
    /// ```ignore
    /// use std::sync::Arc;
    /// use axum::{routing::get, Router};
    /// use snakepit_sinks::prometheus::PrometheusSink;
    ///
    /// fn metrics_route(sink: Arc<PrometheusSink>) -> Router {
    ///     Router::new().route(
    ///         "/metrics",
    ///         get(move || {
    ///             let sink = sink.clone();
    ///             async move {
    ///                 (
    ///                     [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
    ///                     sink.render(),
    ///                 )
    ///             }
    ///         }),
    ///     )
    /// }
    /// ```
    pub fn render(&self) -> String {
        self.shared.registry.render()
    }

    /// The exposition of the app's recorder `handle`, after handing it every
    /// histogram sample this sink still buffers, so the one exposition shows
    /// the app's series and every snakepit sample recorded before the call.
    /// Serve this from the app's `/metrics` when the sink records into the
    /// app's recorder:
    ///
    /// ```ignore
    /// use axum::{routing::get, Router};
    /// use snakepit_sinks::prometheus::metrics_exporter_prometheus::PrometheusHandle;
    ///
    /// fn metrics_route(sink: Arc<PrometheusSink>, handle: PrometheusHandle) -> Router {
    ///     Router::new().route(
    ///         "/metrics",
    ///         get(move || {
    ///             let body = sink.render_with(&handle);
    ///             async move { ([("content-type", "text/plain; version=0.0.4")], body) }
    ///         }),
    ///     )
    /// }
    /// ```
    ///
    /// Rendering the handle directly works too; buffered samples then reach
    /// it within [`UPKEEP_EVERY`].
    pub fn render_with(&self, handle: &PrometheusHandle) -> String {
        self.shared.registry.drain();
        handle.render()
    }

    /// Hands every buffered histogram sample to the recorder now (the
    /// sink's upkeep thread does so every [`UPKEEP_EVERY`], and
    /// [`PrometheusSink::render`] before it renders). For an app that
    /// renders another kind of recorder.
    pub fn hand_over_samples(&self) {
        self.shared.registry.drain();
    }

    /// The address the `/metrics` listener is bound to (useful with port 0);
    /// `None` for a sink without a listener (`listen = "none"`).
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
