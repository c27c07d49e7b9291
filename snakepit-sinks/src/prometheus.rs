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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use snakepit_core::config::PrometheusSinkConfig;
use snakepit_core::{Catalog, Event, EventId, Sink, SinkError, Unit, Value};
use snakepit_telemetry::metrics::{
    default_metrics, MetricDef, MetricError, MetricKind, MetricUnit, ResolvedMetric,
};

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

/// A cached series handle.
#[derive(Clone)]
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Handle {
    #[inline]
    fn record(&self, kind: MetricKind, value: f64) {
        match (self, kind) {
            (Handle::Counter(c), MetricKind::Counter) => c.increment(1),
            (Handle::Counter(c), _) => {
                // Prometheus counters only go up; sums of negative values are
                // not representable and are skipped.
                if value >= 0.0 {
                    c.increment(value.round() as u64)
                }
            }
            (Handle::Gauge(g), _) => g.set(value),
            (Handle::Histogram(h), _) => h.record(value),
        }
    }
}

/// The label sets of one metric seen so far, keyed by a hash of the values.
#[derive(Default)]
struct LabelCache {
    by_hash: HashMap<u64, LabelSets, BuildHasherDefault<PreHashed>>,
    len: usize,
}

/// The label values and handles of the label sets sharing one hash.
type LabelSets = Vec<(Box<[String]>, Handle)>;

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Tags read without allocating, up to this many per metric.
const INLINE_TAGS: usize = 8;

/// One metric definition, ready to record.
struct Series {
    resolved: ResolvedMetric,
    kind: MetricKind,
    name: String,
    /// Multiplies the definition's value (base unit scaling).
    scale: f64,
    tags: Box<[String]>,
    cap: usize,
    cache: RwLock<LabelCache>,
    /// The one series of a metric without tags, registered up front.
    single: Option<Handle>,
    /// The `other` series and its counter, registered when first needed.
    overflow: OnceLock<(Handle, Counter)>,
}

struct Shared {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    by_event: Box<[Box<[Series]>]>,
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
        self.shared.handle.render()
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
            .flat_map(|s| s.iter().map(|s| s.name.clone()))
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
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let meta = metadata();
        recorder.describe_counter(
            OVERFLOW_METRIC.into(),
            None,
            "events recorded into a metric's overflow series (label set cap reached)".into(),
        );
        let mut by_event: Vec<Vec<Series>> = (0..catalog.len()).map(|_| Vec::new()).collect();
        for p in planned {
            let def = &p.resolved.def;
            let kind = def.kind();
            let help = if def.help().is_empty() {
                def.name().to_string()
            } else {
                def.help().to_string()
            };
            match kind {
                MetricKind::Counter | MetricKind::Sum => {
                    recorder.describe_counter(p.name.clone().into(), None, help.into())
                }
                MetricKind::LastValue => {
                    recorder.describe_gauge(p.name.clone().into(), None, help.into())
                }
                MetricKind::Summary | MetricKind::Distribution => {
                    recorder.describe_histogram(p.name.clone().into(), None, help.into())
                }
            }
            let tags: Box<[String]> = def.tag_keys().to_vec().into_boxed_slice();
            let single = tags
                .is_empty()
                .then(|| register(&recorder, kind, &p.name, Vec::new(), &meta));
            let event = p.resolved.event;
            by_event[event.index()].push(Series {
                kind,
                name: p.name,
                scale: p.scale,
                tags,
                cap: self.max_series_per_metric,
                cache: RwLock::new(LabelCache::default()),
                single,
                overflow: OnceLock::new(),
                resolved: p.resolved,
            });
        }
        let shared = Arc::new(Shared {
            recorder,
            handle,
            by_event: by_event.into_iter().map(Vec::into_boxed_slice).collect(),
        });
        let listener = Listener::start(self.listen, shared.clone())?;
        let local_addr = listener.addr;
        Ok(PrometheusSink {
            shared,
            listener: Mutex::new(Some(listener)),
            local_addr,
        })
    }
}

fn register(
    recorder: &PrometheusRecorder,
    kind: MetricKind,
    name: &str,
    labels: Vec<Label>,
    meta: &Metadata<'_>,
) -> Handle {
    let key = Key::from_parts(name.to_string(), labels);
    match kind {
        MetricKind::Counter | MetricKind::Sum => {
            Handle::Counter(recorder.register_counter(&key, meta))
        }
        MetricKind::LastValue => Handle::Gauge(recorder.register_gauge(&key, meta)),
        MetricKind::Summary | MetricKind::Distribution => {
            Handle::Histogram(recorder.register_histogram(&key, meta))
        }
    }
}

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

impl Series {
    #[inline]
    fn record(&self, event: &Event<'_>, recorder: &PrometheusRecorder) {
        let Some(value) = self.resolved.value(event) else {
            return;
        };
        let value = value * self.scale;
        if let Some(single) = &self.single {
            single.record(self.kind, value);
            return;
        }
        // A definition with a tag transform yields owned values; otherwise
        // the values are borrowed from the event, read once.
        let transformed;
        let mut inline: [Option<&Value<'_>>; INLINE_TAGS] = [None; INLINE_TAGS];
        let many;
        let values = if self.resolved.def.tag_transform().is_some() {
            transformed = self.resolved.tag_values(event);
            TagValues::Owned(&transformed)
        } else if self.tags.len() <= INLINE_TAGS {
            for (slot, key) in inline.iter_mut().zip(self.tags.iter()) {
                *slot = event.meta(key);
            }
            TagValues::Event(&inline[..self.tags.len()])
        } else {
            many = self.tags.iter().map(|k| event.meta(k)).collect::<Vec<_>>();
            TagValues::Event(&many)
        };
        let hash = values.hash();
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, h)) = cache.find(hash, &values) {
                h.record(self.kind, value);
                return;
            }
            if cache.len >= self.cap {
                drop(cache);
                self.record_overflow(value, recorder);
                return;
            }
        }
        self.insert(hash, &values, value, recorder);
    }

    fn record_overflow(&self, value: f64, recorder: &PrometheusRecorder) {
        let (series, events) = self.overflow.get_or_init(|| {
            let labels = self
                .tags
                .iter()
                .map(|t| Label::new(t.clone(), OVERFLOW_LABEL))
                .collect();
            let series = register(recorder, self.kind, &self.name, labels, &metadata());
            let key = Key::from_parts(
                OVERFLOW_METRIC,
                vec![Label::new("metric", self.name.clone())],
            );
            (series, recorder.register_counter(&key, &metadata()))
        });
        series.record(self.kind, value);
        events.increment(1);
    }

    #[cold]
    fn insert(
        &self,
        hash: u64,
        values: &TagValues<'_, '_>,
        value: f64,
        recorder: &PrometheusRecorder,
    ) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, h)) = cache.find(hash, values) {
            h.record(self.kind, value);
            return;
        }
        if cache.len >= self.cap {
            drop(cache);
            self.record_overflow(value, recorder);
            return;
        }
        let owned = values.to_owned();
        let labels = self
            .tags
            .iter()
            .zip(owned.iter())
            .map(|(k, v)| Label::new(k.clone(), v.clone()))
            .collect();
        let h = register(recorder, self.kind, &self.name, labels, &metadata());
        h.record(self.kind, value);
        cache.by_hash.entry(hash).or_default().push((owned, h));
        cache.len += 1;
    }
}

impl LabelCache {
    #[inline]
    fn find(&self, hash: u64, values: &TagValues<'_, '_>) -> Option<&(Box<[String]>, Handle)> {
        self.by_hash
            .get(&hash)?
            .iter()
            .find(|(labels, _)| values.equals(labels))
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new("snakepit::prometheus", Level::INFO, None)
}

/// The tag values of one event, read without allocating.
enum TagValues<'e, 'a> {
    /// Straight from the event's metadata, in tag order (missing keys are "").
    Event(&'e [Option<&'e Value<'a>>]),
    /// Already transformed.
    Owned(&'e [String]),
}

/// Writes a value's text form into a stack buffer (numbers) or borrows it
/// (strings), and hands it to `f`.
#[inline]
fn with_text<R>(value: Option<&Value<'_>>, f: impl FnOnce(&str) -> R) -> R {
    match value {
        None => f(""),
        Some(Value::Str(s)) => f(s),
        Some(v) => {
            let mut buf = StackText::default();
            if std::fmt::Write::write_fmt(&mut buf, format_args!("{v}")).is_ok() {
                f(buf.as_str())
            } else {
                f(&v.to_string())
            }
        }
    }
}

/// A small fixed buffer for the text of numbers.
struct StackText {
    buf: [u8; 40],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 40],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// FNV-1a over the values, with a separator between them.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    *hash ^= 0xff;
    *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
}

impl TagValues<'_, '_> {
    fn hash(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325;
        match self {
            TagValues::Event(values) => {
                for v in values.iter() {
                    with_text(*v, |t| fnv(&mut hash, t.as_bytes()));
                }
            }
            TagValues::Owned(values) => {
                for v in values.iter() {
                    fnv(&mut hash, v.as_bytes());
                }
            }
        }
        hash
    }

    fn equals(&self, labels: &[String]) -> bool {
        match self {
            TagValues::Event(values) => values
                .iter()
                .zip(labels)
                .all(|(v, l)| with_text(*v, |t| t == l)),
            TagValues::Owned(values) => *values == labels,
        }
    }

    fn to_owned(&self) -> Box<[String]> {
        match self {
            TagValues::Event(values) => values
                .iter()
                .map(|v| with_text(*v, str::to_string))
                .collect(),
            TagValues::Owned(values) => values.to_vec().into_boxed_slice(),
        }
    }
}

impl Sink for PrometheusSink {
    fn name(&self) -> &str {
        "prometheus"
    }

    #[inline]
    fn handle(&self, event: &Event<'_>) {
        let shared = &*self.shared;
        if let Some(list) = shared.by_event.get(event.id().index()) {
            for series in list.iter() {
                series.record(event, &shared.recorder);
            }
        }
    }

    fn flush(&self, _timeout: Duration) -> Result<(), SinkError> {
        self.shared.handle.run_upkeep();
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
            .map(|l| l.iter().map(|s| s.name.as_str()).collect())
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

/// The sink's thread: serves `/metrics` when a listen address is set,
/// polling a non-blocking socket (so it can stop without a wake-up
/// connection), and runs the recorder's upkeep every second: histogram
/// samples are buffered until then, so memory stays bounded even when
/// nobody scrapes.
struct Listener {
    addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

const POLL: Duration = Duration::from_millis(10);
const UPKEEP_EVERY: Duration = Duration::from_secs(1);
const MAX_REQUEST_HEAD: usize = 8 * 1024;

impl Listener {
    fn start(addr: Option<SocketAddr>, shared: Arc<Shared>) -> Result<Listener, PrometheusError> {
        let unspecified = SocketAddr::from(([127, 0, 0, 1], 0));
        let err = |source| PrometheusError::Listen {
            listen: addr.unwrap_or(unspecified),
            source,
        };
        let (socket, local) = match addr {
            Some(addr) => {
                let socket = TcpListener::bind(addr).map_err(err)?;
                socket.set_nonblocking(true).map_err(err)?;
                let local = socket.local_addr().map_err(err)?;
                (Some(socket), Some(local))
            }
            None => (None, None),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("snakepit-prometheus".into())
            .spawn(move || serve(socket, shared, flag))
            .map_err(err)?;
        Ok(Listener {
            addr: local,
            stop,
            thread,
        })
    }

    fn stop(self, timeout: Duration) -> Result<(), SinkError> {
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(SinkError::Timeout {
                    sink: "prometheus".into(),
                    timeout,
                    pending: 0,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.thread.join();
        Ok(())
    }
}

fn serve(socket: Option<TcpListener>, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut last_upkeep = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let Some(socket) = &socket else {
            std::thread::sleep(POLL * 5);
            if last_upkeep.elapsed() >= UPKEEP_EVERY {
                shared.handle.run_upkeep();
                last_upkeep = Instant::now();
            }
            continue;
        };
        match socket.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &shared.handle) {
                    tracing::debug!(target: "snakepit::telemetry", error = %e, "prometheus scrape failed");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                tracing::warn!(target: "snakepit::telemetry", error = %e, "prometheus listener accept failed");
                std::thread::sleep(POLL);
            }
        }
        if last_upkeep.elapsed() >= UPKEEP_EVERY {
            shared.handle.run_upkeep();
            last_upkeep = Instant::now();
        }
    }
}

/// Answers one HTTP/1.x request: `GET /metrics` gets the exposition, anything
/// else a 404 (or 405). The connection is closed afterwards.
fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            );
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = handle.render();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
        }
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "text/plain", b""),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"try /metrics\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}
