//! Building a Prometheus sink: metric definitions resolved into names,
//! scales and buckets, described to the chosen recorder.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use metrics::Recorder;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use snakepit_core::config::{PrometheusRecorderChoice, PrometheusSinkConfig};
use snakepit_core::Catalog;
use snakepit_telemetry::metrics::{MetricDef, MetricKind, ResolvedMetric};

use super::listener::Listener;
use super::samples::{Registry, Target};
use super::series::{Group, Member};
use super::{prometheus_name, PrometheusError, PrometheusSink, Shared, OVERFLOW_METRIC};

/// Builds a [`PrometheusSink`].
pub struct PrometheusSinkBuilder {
    pub(super) metrics: Vec<MetricDef>,
    pub(super) max_series_per_metric: usize,
    pub(super) base_units: bool,
    pub(super) listen: Option<SocketAddr>,
    pub(super) recorder: RecorderTarget,
}

/// Which recorder a builder registers into.
pub(super) enum RecorderTarget {
    Own,
    Global,
    Given(Box<dyn Recorder + Send + Sync>),
}

impl std::fmt::Debug for PrometheusSinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let recorder = match self.recorder {
            RecorderTarget::Own => "own",
            RecorderTarget::Global => "global",
            RecorderTarget::Given(_) => "given",
        };
        f.debug_struct("PrometheusSinkBuilder")
            .field("metrics", &self.metrics.len())
            .field("max_series_per_metric", &self.max_series_per_metric)
            .field("base_units", &self.base_units)
            .field("listen", &self.listen)
            .field("recorder", &recorder)
            .finish()
    }
}

impl PrometheusSinkBuilder {
    /// The builder a `kind = "prometheus"` config table describes (default
    /// metrics): its cap, units, listener and recorder.
    pub fn from_config(config: &PrometheusSinkConfig) -> PrometheusSinkBuilder {
        let mut builder = PrometheusSink::builder()
            .max_series_per_metric(config.max_series_per_metric)
            .base_units(config.base_units);
        if let Some(addr) = config.listen.addr() {
            builder = builder.listen(addr);
        }
        match config.recorder {
            PrometheusRecorderChoice::Own => builder,
            PrometheusRecorderChoice::Global => builder.global_recorder(),
        }
    }

    /// Records into the process's `metrics` recorder (the one the
    /// `metrics::counter!` macros of the app use, e.g. installed with
    /// `PrometheusBuilder::install_recorder`) instead of a registry of the
    /// sink's own. Install that recorder before building the sink: the
    /// sink describes its metrics when built, and registers each series
    /// when an event first needs it, through [`metrics::with_recorder`] (on
    /// the emitting thread, so a thread-local recorder set there with
    /// `metrics::with_local_recorder` takes them instead). Such a sink has
    /// no exposition of its own, and so no listener.
    pub fn global_recorder(mut self) -> Self {
        self.recorder = RecorderTarget::Global;
        self
    }

    /// Records into `recorder` (any [`metrics::Recorder`], e.g. an
    /// `Arc<PrometheusRecorder>` the app also installed or renders) instead
    /// of a registry of the sink's own; as
    /// [`PrometheusSinkBuilder::global_recorder`] otherwise.
    pub fn into_recorder(mut self, recorder: impl Recorder + Send + Sync + 'static) -> Self {
        self.recorder = RecorderTarget::Given(Box::new(recorder));
        self
    }

    /// Applies the sink's histogram buckets (of its `distribution` metrics,
    /// by their Prometheus names) to the app's exporter `builder`, so that a
    /// recorder built from it exports them as histograms with the sink's
    /// buckets, as the sink's own registry does (without them the exporter
    /// renders them as summaries).
    pub fn configure_exporter(
        &self,
        catalog: &Catalog,
        builder: PrometheusBuilder,
    ) -> Result<PrometheusBuilder, PrometheusError> {
        self.plan(catalog, builder).map(|(_, builder)| builder)
    }

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

    /// Serves `GET /metrics` on this address (port 0: any free port; see
    /// [`PrometheusSink::local_addr`]). Only for the sink's own registry:
    /// with the app's recorder, [`PrometheusSinkBuilder::build`] refuses it
    /// ([`PrometheusError::ListenerWithoutRegistry`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Resolves every definition: the Prometheus name and scale of each,
    /// and `builder` with the buckets of the distributions.
    fn plan(
        &self,
        catalog: &Catalog,
        mut builder: PrometheusBuilder,
    ) -> Result<(Vec<Planned>, PrometheusBuilder), PrometheusError> {
        let mut planned = Vec::with_capacity(self.metrics.len());
        let mut names: HashMap<String, String> = HashMap::new();
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
        Ok((planned, builder))
    }

    /// Resolves every definition, describes the metrics to the recorder,
    /// and starts the listener (if any) and the upkeep thread. Series are
    /// registered when an event first needs them.
    pub fn build(self, catalog: &Catalog) -> Result<PrometheusSink, PrometheusError> {
        let (planned, exporter) = self.plan(catalog, PrometheusBuilder::new())?;
        let target = match self.recorder {
            RecorderTarget::Own => {
                let recorder = exporter.build_recorder();
                Target::Own {
                    handle: recorder.handle(),
                    recorder,
                }
            }
            RecorderTarget::Global => Target::Global,
            RecorderTarget::Given(recorder) => Target::Given(recorder),
        };
        if let (false, Some(listen)) = (matches!(target, Target::Own { .. }), self.listen) {
            return Err(PrometheusError::ListenerWithoutRegistry { listen });
        }
        let registry = Arc::new(Registry::new(target));
        registry.with_recorder(|recorder| describe(recorder, &planned));
        let mut by_event: Vec<Vec<Group>> = (0..catalog.len()).map(|_| Vec::new()).collect();
        for p in planned {
            let def = &p.resolved.def;
            let kind = def.kind();
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

/// One resolved definition, before its series exist.
struct Planned {
    resolved: ResolvedMetric,
    name: String,
    scale: f64,
}

/// Describes the overflow counter and every planned metric (name, help) to
/// `recorder`.
fn describe(recorder: &dyn Recorder, planned: &[Planned]) {
    recorder.describe_counter(
        OVERFLOW_METRIC.into(),
        None,
        "events recorded into a metric's overflow series (label set cap reached)".into(),
    );
    for p in planned {
        let def = &p.resolved.def;
        let help = if def.help().is_empty() {
            def.name().to_string()
        } else {
            def.help().to_string()
        };
        let name = p.name.clone();
        match def.kind() {
            MetricKind::Counter | MetricKind::Sum => {
                recorder.describe_counter(name.into(), None, help.into())
            }
            MetricKind::LastValue => recorder.describe_gauge(name.into(), None, help.into()),
            MetricKind::Summary | MetricKind::Distribution => {
                recorder.describe_histogram(name.into(), None, help.into())
            }
        }
    }
}
