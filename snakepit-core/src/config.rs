//! Configuration types, read from one TOML file plus environment overrides.
//!
//! ```toml
//! [telemetry]
//! log_level = "info"                 # debug | info | warning | error | none
//! log_categories = { pool = "debug", worker = "info", grpc = "warning" }
//! # or the list form: debug and info records of these categories only
//! # log_categories = ["lifecycle", "grpc"]
//!
//! [[sinks]]
//! kind = "prometheus"                # log | prometheus | otel | plugin
//! listen = "127.0.0.1:9568"           # or "none": no listener
//! recorder = "own"                   # or "global": the app's metrics recorder
//!
//! [[sinks]]
//! kind = "otel"
//! export_interval = "1s"             # every duration: "250ms", "5s", "1m"
//!
//! [pool]                             # or several [[pools]], read by snakepit-pool
//! adapter = "my_app.adapters:Model"
//! workers = 4
//! queue_timeout = "5s"
//! ```
//!
//! Every duration is a string with a unit (`"250ms"`, `"5s"`, `"1m"`). The
//! old integer-millisecond keys `export_interval_ms` and
//! `export_timeout_ms` are still read, each with a [`ConfigWarning`]
//! naming its replacement.
//!
//! Unknown keys are rejected. Every error names the file, the key and what is
//! allowed, see [`ConfigError`].
//!
//! Environment overrides (applied by [`Config::apply_env`]):
//!
//! | variable | key |
//! |---|---|
//! | `SNAKEPIT_TELEMETRY_ENABLED` | `telemetry.enabled` (`true`/`false`) |
//! | `SNAKEPIT_LOG_LEVEL` | `telemetry.log_level` |
//! | `SNAKEPIT_SAMPLING_RATE` | `telemetry.sampling_rate` |
//! | `SNAKEPIT_PROMETHEUS_LISTEN` | `listen` of every `prometheus` sink with `recorder = "own"` (`host:port` or `none`) |
//! | `SNAKEPIT_OTEL_ENDPOINT` | `endpoint` of every `otel` sink (`http://host:port`) |
//! | `SNAKEPIT_OTEL_SERVICE_NAME` | `service_name` of every `otel` sink |
//! | `SNAKEPIT_OTEL_SAMPLE_RATIO` | `sample_ratio` of every `otel` sink (`0.0` to `1.0`) |
//!
//! The OpenTelemetry SDK's own variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, …) apply to every `otel` sink too, before
//! these: see [`crate::otel_env`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

pub use crate::deprecated::ConfigWarning;
use crate::error::ConfigError;
pub use crate::log_category::{LogCategories, LogCategory, LogLevel};
pub use crate::otel_section::{ConsoleExporter, Exporters, OpenTelemetrySection, OtlpExporter};
use crate::pattern::Pattern;
use crate::policy::{PatternRate, Policy};
pub use crate::toml_lines::{line_at, line_of_key};

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[telemetry]`: levels, toggle, sampling and filters.
    pub telemetry: TelemetryConfig,
    /// `[[sinks]]`: where events go. After loading, also one `otel` sink
    /// per exporter of `[opentelemetry]`, after those written here.
    pub sinks: Vec<SinkConfig>,
    /// `[opentelemetry]`: the guide's OpenTelemetry section (see
    /// [`OpenTelemetrySection`]); its exporters are in `sinks` once loaded.
    pub opentelemetry: Option<OpenTelemetrySection>,
    /// `[pool]`: the settings of one pool, kept as written. snakepit-pool
    /// reads and checks them (`PoolConfig::from_config`), with errors that
    /// name this file, the line and the key (`pool.workers`).
    pub pool: Option<toml::Table>,
    /// `[[pools]]`: several pools, each kept as written, read like
    /// [`Config::pool`] (keys `pools[1].workers`). Not together with
    /// `[pool]`.
    pub pools: Vec<toml::Table>,
    /// Deprecated keys this config was read with, each with its
    /// replacement (also logged with `tracing::warn!` at load).
    #[serde(skip)]
    pub warnings: Vec<ConfigWarning>,
    /// Where this config was read from (set by [`Config::load`] and
    /// [`Config::from_toml`]), for the errors of what is built from it
    /// later, such as sinks; `None` for a config made in code.
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

/// The file a [`Config`] was read from, and where its sinks are written in
/// it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// The file (or `<string>`, see [`inline_source`]).
    pub file: PathBuf,
    /// The line (from 1) of each `[[sinks]]` entry, in config order.
    pub sink_lines: Vec<usize>,
    /// The text that was read, so that what is built from the config later
    /// (the `[pool]` tables) can name the line of a bad key (see
    /// [`line_of_key`]).
    pub text: String,
}

impl ConfigSource {
    /// The line of `sinks[index]`, when known.
    pub fn sink_line(&self, index: usize) -> Option<usize> {
        self.sink_lines.get(index).copied().filter(|&l| l > 0)
    }
}

/// `[telemetry]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Deliver events at all (default true).
    pub enabled: bool,
    /// Level for snakepit's own log records (default `info`).
    pub log_level: LogLevel,
    /// Per-category levels (`{ pool = "debug", grpc = "warning" }`), or
    /// the list form (`["lifecycle", "grpc"]`), see [`LogCategories`].
    pub log_categories: LogCategories,
    /// Per-worker levels, e.g. `{ worker_1 = "debug" }`.
    pub worker_log_levels: BTreeMap<String, LogLevel>,
    /// Fraction of events kept (default 1.0).
    pub sampling_rate: f64,
    /// Per-pattern rates, first match wins: `[{ pattern = "python.*", rate = 0.1 }]`.
    pub sampling: Vec<PatternRate>,
    /// Only these events pass, when non-empty.
    pub allow: Vec<Pattern>,
    /// These events never pass.
    pub deny: Vec<Pattern>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            log_level: LogLevel::Info,
            log_categories: LogCategories::default(),
            worker_log_levels: BTreeMap::new(),
            sampling_rate: 1.0,
            sampling: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

impl TelemetryConfig {
    /// The runtime policy this section describes.
    pub fn policy(&self) -> Policy {
        Policy {
            enabled: self.enabled,
            sampling_rate: self.sampling_rate,
            pattern_rates: self.sampling.clone(),
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            version: 0,
        }
    }
}

/// `[[sinks]]`: one sink, chosen by `kind`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkConfig {
    /// `kind = "log"`: events as `tracing` records.
    Log(LogSinkConfig),
    /// `kind = "prometheus"`: metrics on an HTTP endpoint.
    Prometheus(PrometheusSinkConfig),
    /// `kind = "otel"`: spans exported over OTLP/HTTP.
    Otel(OtelSinkConfig),
    /// `kind = "plugin"`: a sink from a dynamic library.
    Plugin(PluginSinkConfig),
}

impl SinkConfig {
    /// The allowed kinds, for error messages.
    pub const KINDS: &'static str = "log, prometheus, otel, plugin";
}

/// `kind = "log"`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSinkConfig {
    /// Which events; empty means all.
    pub events: Vec<Pattern>,
}

/// `kind = "prometheus"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusSinkConfig {
    /// Address of the sink's own `/metrics` listener (default
    /// `127.0.0.1:9568`; port 0 takes any free port), or `"none"` for a sink
    /// that only records, in an app that serves `/metrics` itself.
    pub listen: PrometheusListen,
    /// Which `metrics` recorder the series go to: `"own"` (default), a
    /// registry of this sink's, or `"global"`, the process's recorder (the
    /// app's, e.g. installed with `PrometheusBuilder::install_recorder`), so
    /// one exposition holds the app's series and snakepit's. `"global"`
    /// needs `listen = "none"`: the app serves its recorder's exposition.
    pub recorder: PrometheusRecorderChoice,
    /// Which events; empty means all.
    pub events: Vec<Pattern>,
    /// Distinct label sets per metric before overflow goes to `other`.
    pub max_series_per_metric: usize,
    /// Export in Prometheus base units (default true): durations in seconds
    /// (`_seconds`), sizes in bytes (`_bytes`), whatever unit a metric
    /// definition converts to. With `false` the definition's unit is kept
    /// (e.g. `_milliseconds`), which `promtool check metrics` flags.
    pub base_units: bool,
}

impl Default for PrometheusSinkConfig {
    fn default() -> Self {
        PrometheusSinkConfig {
            listen: PrometheusListen::Addr(SocketAddr::from(([127, 0, 0, 1], 9568))),
            recorder: PrometheusRecorderChoice::Own,
            events: Vec::new(),
            max_series_per_metric: 1000,
            base_units: true,
        }
    }
}

/// `listen` of a Prometheus sink: a socket address, or `"none"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrometheusListen {
    /// Serve `GET /metrics` on this address (port 0: any free port).
    Addr(SocketAddr),
    /// No listener: the sink only records (`listen = "none"`).
    None,
}

impl PrometheusListen {
    /// The address to bind, if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            PrometheusListen::Addr(a) => Some(*a),
            PrometheusListen::None => None,
        }
    }
}

impl FromStr for PrometheusListen {
    type Err = String;

    /// `"none"`, or `host:port` with a numeric host (`127.0.0.1:9568`,
    /// `[::1]:9568`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "none" => Ok(PrometheusListen::None),
            "" => Err(
                "empty address: write \"none\" for a sink without a /metrics \
                       listener, or an address such as \"127.0.0.1:9568\""
                    .into(),
            ),
            a => a.parse().map(PrometheusListen::Addr).map_err(|_| {
                format!(
                    "`{a}` is not a socket address: allowed: an address such as \
                     \"127.0.0.1:9568\", or \"none\" for no listener"
                )
            }),
        }
    }
}

impl fmt::Display for PrometheusListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrometheusListen::Addr(a) => a.fmt(f),
            PrometheusListen::None => f.write_str("none"),
        }
    }
}

impl<'de> Deserialize<'de> for PrometheusListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `recorder` of a Prometheus sink: which `metrics` recorder its series go
/// to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrometheusRecorderChoice {
    /// A registry of the sink's own, rendered by its listener and
    /// `PrometheusSink::render` (`recorder = "own"`, the default).
    #[default]
    Own,
    /// The process's recorder, as the `metrics` macros see it
    /// (`recorder = "global"`): install it before building the sink.
    Global,
}

/// `kind = "otel"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtelSinkConfig {
    /// OTLP/HTTP base URL, e.g. `http://collector:4318`.
    pub endpoint: String,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Where spans go: `"otlp"` (default) to `endpoint`, or `"console"`:
    /// each finished span as one line of text, to `console_path` or
    /// standard output.
    pub exporter: OtelExporterKind,
    /// The file the `console` exporter appends to (standard output when
    /// unset).
    pub console_path: Option<PathBuf>,
    /// HTTP headers sent with every export request, e.g.
    /// `{ authorization = "Bearer …" }`.
    pub headers: BTreeMap<String, String>,
    /// Resource attributes besides `service.name`, e.g.
    /// `{ "deployment.environment" = "prod" }`.
    pub resource_attributes: BTreeMap<String, String>,
    /// `"gzip"` compresses request bodies; `"none"` (default) does not.
    pub compression: OtelCompression,
    /// For an `https://` endpoint: a PEM file of the CA(s) to trust instead
    /// of the system's roots.
    pub ca: Option<PathBuf>,
    /// Which events; empty means all.
    pub events: Vec<Pattern>,
    /// Spans queued before drops begin.
    pub queue_capacity: usize,
    /// Spans per export request (default 512).
    pub batch_size: usize,
    /// Longest time a finished span waits before export (default `"1s"`;
    /// the sink's thread checks every 25 ms). At least 1ms. The deprecated
    /// `export_interval_ms` (an integer of milliseconds) is still read,
    /// with a [`ConfigWarning`].
    #[serde(with = "crate::duration", alias = "export_interval_ms")]
    pub export_interval: Duration,
    /// Timeout of one export request, retries included (default `"5s"`).
    /// At least 1ms. The deprecated `export_timeout_ms` is still read, with
    /// a [`ConfigWarning`].
    #[serde(with = "crate::duration", alias = "export_timeout_ms")]
    pub export_timeout: Duration,
    /// Started user spans waiting for their stop event before the oldest are
    /// evicted (and counted as dropped); default 10000. The three spans of
    /// every call are built from their end alone and take no room here.
    pub max_open_spans: usize,
    /// Fraction of traces exported, 0.0 to 1.0 (default 1.0: every span).
    /// The decision is taken per trace id (its low 56 bits, which W3C trace
    /// ids keep random), so a trace is exported whole or not at all, and
    /// every process sampling at the same ratio keeps the same traces.
    /// Unlike `telemetry.sampling_rate`, the other sinks still see every
    /// event: metrics and logs count all calls.
    pub sample_ratio: f64,
}

impl Default for OtelSinkConfig {
    fn default() -> Self {
        OtelSinkConfig {
            endpoint: "http://127.0.0.1:4318".to_string(),
            service_name: "snakepit".to_string(),
            exporter: OtelExporterKind::Otlp,
            console_path: None,
            headers: BTreeMap::new(),
            resource_attributes: BTreeMap::new(),
            compression: OtelCompression::None,
            ca: None,
            events: Vec::new(),
            queue_capacity: 8192,
            batch_size: 512,
            export_interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(5),
            max_open_spans: 10_000,
            sample_ratio: 1.0,
        }
    }
}

/// Compression of OTLP request bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtelCompression {
    /// Bodies as they are.
    #[default]
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// Where an OTel sink sends its spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtelExporterKind {
    /// OTLP over HTTP to `endpoint`.
    #[default]
    Otlp,
    /// One line of text per finished span.
    Console,
}

/// `kind = "plugin"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSinkConfig {
    /// Path of the dynamic library.
    pub path: PathBuf,
    /// Table handed to the plugin's `create` as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Which events; empty means all.
    #[serde(default)]
    pub events: Vec<Pattern>,
    /// Events queued before drops begin.
    #[serde(default = "default_plugin_queue")]
    pub queue_capacity: usize,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn default_plugin_queue() -> usize {
    8192
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let file = file.as_ref().to_path_buf();
        let de = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut key = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().to_string();
            // `kind` selects the sink type, which hides the field path of an
            // error inside a sink table: find it by reading that table alone.
            if let Some((k, m)) = sink_field_error(text, &key) {
                (key, message) = (k, m);
            }
            if message.contains("kind") && message.contains("missing field") {
                message = format!("{message}; allowed kinds: {}", SinkConfig::KINDS);
            }
            if let Some(span) = inner.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("{message} (line {line})");
            }
            ConfigError::Invalid {
                file: file.clone(),
                key: if key == "." { "<root>".into() } else { key },
                message,
            }
        })?;
        let warnings = crate::deprecated::check(text, &file)?;
        config.validate(&file).map_err(|e| match e {
            ConfigError::Invalid { file, key, message } => {
                // A value written under a deprecated key is named by that key.
                let old = format!("{key}_ms");
                let key = if warnings.iter().any(|w| w.key == old) {
                    old
                } else {
                    key
                };
                let message = match line_of_key(text, &key) {
                    Some(line) => format!("{message} (line {line})"),
                    None => message,
                };
                ConfigError::Invalid { file, key, message }
            }
            other => other,
        })?;
        config.warnings = warnings;
        for w in &config.warnings {
            tracing::warn!(target: "snakepit::telemetry", file = %w.file.display(), key = %w.key, "{w}");
        }
        let sink_lines = (0..config.sinks.len())
            .map(|i| line_of_key(text, &format!("sinks[{i}]")).unwrap_or(0))
            .collect();
        config.source = Some(ConfigSource {
            file,
            sink_lines,
            text: text.to_string(),
        });
        if let Some(section) = &config.opentelemetry {
            let sinks = section.sinks();
            config.sinks.extend(sinks.into_iter().map(SinkConfig::Otel));
        }
        Ok(config)
    }

    /// Checks values that the types alone cannot.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            message,
        };
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if self.pool.is_some() && !self.pools.is_empty() {
            return Err(invalid(
                "pools".into(),
                "`[pool]` and `[[pools]]` are both written; keep one: `[pool]` for one pool, \
                 or `[[pools]]` with a `pool_name` each"
                    .into(),
            ));
        }
        if let Some(o) = &self.opentelemetry {
            if !rate_ok(o.sampling) {
                return Err(invalid(
                    "opentelemetry.sampling".into(),
                    format!("{} is out of range; allowed 0.0 to 1.0", o.sampling),
                ));
            }
            if let Some(otlp) = &o.exporters.otlp {
                if !(otlp.endpoint.starts_with("http://") || otlp.endpoint.starts_with("https://"))
                {
                    return Err(invalid(
                        "opentelemetry.exporters.otlp.endpoint".into(),
                        format!(
                            "`{}` is not an http(s) URL; allowed: http://host:port or https://host:port",
                            otlp.endpoint
                        ),
                    ));
                }
            }
            if o.enabled && o.exporters.otlp.is_none() && o.exporters.console.is_none() {
                return Err(invalid(
                    "opentelemetry.exporters".into(),
                    "no exporter: add `[opentelemetry.exporters.otlp]` with an `endpoint`, \
                     or `[opentelemetry.exporters.console]`, or set `enabled = false`"
                        .into(),
                ));
            }
        }
        let t = &self.telemetry;
        if !rate_ok(t.sampling_rate) {
            return Err(invalid(
                "telemetry.sampling_rate".into(),
                format!("{} is out of range; allowed 0.0 to 1.0", t.sampling_rate),
            ));
        }
        for (i, pr) in t.sampling.iter().enumerate() {
            if !rate_ok(pr.rate) {
                return Err(invalid(
                    format!("telemetry.sampling[{i}].rate"),
                    format!("{} is out of range; allowed 0.0 to 1.0", pr.rate),
                ));
            }
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            match sink {
                SinkConfig::Otel(o) => {
                    if !(o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://")) {
                        return Err(invalid(
                            format!("sinks[{i}].endpoint"),
                            format!(
                                "`{}` is not an http(s) URL; allowed: http://host:port or https://host:port",
                                o.endpoint
                            ),
                        ));
                    }
                    for name in o.headers.keys() {
                        if name.is_empty()
                            || !name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                        {
                            return Err(invalid(
                                format!("sinks[{i}].headers"),
                                format!(
                                    "`{name}` is not an HTTP header name (letters, digits, `-`, `_`)"
                                ),
                            ));
                        }
                    }
                    if o.ca.is_some() && !o.endpoint.starts_with("https://") {
                        return Err(invalid(
                            format!("sinks[{i}].ca"),
                            format!(
                                "a CA is for an https:// endpoint; `{}` is not one",
                                o.endpoint
                            ),
                        ));
                    }
                    if !rate_ok(o.sample_ratio) {
                        return Err(invalid(
                            format!("sinks[{i}].sample_ratio"),
                            format!("{} is out of range; allowed 0.0 to 1.0", o.sample_ratio),
                        ));
                    }
                    for (key, value) in [
                        ("export_interval", o.export_interval),
                        ("export_timeout", o.export_timeout),
                    ] {
                        if value < Duration::from_millis(1) {
                            return Err(invalid(
                                format!("sinks[{i}].{key}"),
                                format!(
                                    "{} is out of range; must be at least 1ms",
                                    crate::duration::format(value)
                                ),
                            ));
                        }
                    }
                    let at_least_one = [
                        ("queue_capacity", o.queue_capacity),
                        ("batch_size", o.batch_size),
                        ("max_open_spans", o.max_open_spans),
                    ];
                    for (key, value) in at_least_one {
                        if value == 0 {
                            return Err(invalid(
                                format!("sinks[{i}].{key}"),
                                "must be at least 1".into(),
                            ));
                        }
                    }
                }
                SinkConfig::Plugin(p) => {
                    if !p.config.is_object() {
                        return Err(invalid(
                            format!("sinks[{i}].config"),
                            "must be a table".into(),
                        ));
                    }
                    if p.queue_capacity == 0 {
                        return Err(invalid(
                            format!("sinks[{i}].queue_capacity"),
                            "must be at least 1".into(),
                        ));
                    }
                }
                SinkConfig::Prometheus(p) if p.max_series_per_metric == 0 => {
                    return Err(invalid(
                        format!("sinks[{i}].max_series_per_metric"),
                        "must be at least 1".into(),
                    ));
                }
                SinkConfig::Prometheus(p)
                    if p.recorder == PrometheusRecorderChoice::Global
                        && p.listen != PrometheusListen::None =>
                {
                    return Err(invalid(
                        format!("sinks[{i}].listen"),
                        "a sink with recorder = \"global\" records into the app's recorder \
                         and has no exposition of its own: set listen = \"none\" and serve \
                         the app's /metrics"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies `SNAKEPIT_*` overrides from the given variables (pass
    /// `std::env::vars()` in an application; tests pass their own).
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        // The OpenTelemetry SDK's variables first: snakepit's own win.
        let mut vars: Vec<(K, V)> = vars.into_iter().collect();
        vars.sort_by_key(|(k, _)| !crate::otel_env::is_otel_var(k.as_ref()));
        let service_name_set = vars.iter().any(|(k, _)| k.as_ref() == "OTEL_SERVICE_NAME");
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            let env_err = |message: String| ConfigError::Env {
                var: k.to_string(),
                value: v.to_string(),
                message,
            };
            // A rate or ratio: a number from 0.0 to 1.0.
            let rate = || {
                v.parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| env_err("allowed: a number from 0.0 to 1.0".into()))
            };
            if crate::otel_env::is_otel_var(k) {
                for sink in &mut self.sinks {
                    if let SinkConfig::Otel(o) = sink {
                        crate::otel_env::apply(o, k, v, service_name_set).map_err(env_err)?;
                    }
                }
                continue;
            }
            match k {
                "SNAKEPIT_TELEMETRY_ENABLED" => {
                    self.telemetry.enabled = match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(env_err("allowed: true, false, 1, 0".into())),
                    }
                }
                "SNAKEPIT_LOG_LEVEL" => self.telemetry.log_level = v.parse().map_err(env_err)?,
                "SNAKEPIT_SAMPLING_RATE" => self.telemetry.sampling_rate = rate()?,
                "SNAKEPIT_PROMETHEUS_LISTEN" => {
                    let listen: PrometheusListen = v.parse().map_err(env_err)?;
                    for sink in &mut self.sinks {
                        match sink {
                            SinkConfig::Prometheus(p)
                                if p.recorder == PrometheusRecorderChoice::Own =>
                            {
                                p.listen = listen
                            }
                            _ => {}
                        }
                    }
                }
                "SNAKEPIT_OTEL_ENDPOINT" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(env_err(
                            "allowed: an http(s) URL such as http://127.0.0.1:4318".into(),
                        ));
                    }
                    for sink in &mut self.sinks {
                        if let SinkConfig::Otel(o) = sink {
                            o.endpoint = v.to_string();
                        }
                    }
                }
                "SNAKEPIT_OTEL_SERVICE_NAME" => {
                    if v.is_empty() {
                        return Err(env_err("allowed: a non-empty service name".into()));
                    }
                    for sink in &mut self.sinks {
                        if let SinkConfig::Otel(o) = sink {
                            o.service_name = v.to_string();
                        }
                    }
                }
                "SNAKEPIT_OTEL_SAMPLE_RATIO" => {
                    let ratio = rate()?;
                    for sink in &mut self.sinks {
                        if let SinkConfig::Otel(o) = sink {
                            o.sample_ratio = ratio;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// For an error reported at `sinks[i]`, deserializes that table alone as
/// its kind's struct to name the field at fault: `(sinks[i].field, message)`.
fn sink_field_error(text: &str, key: &str) -> Option<(String, String)> {
    fn field<T: serde::de::DeserializeOwned>(table: toml::Value) -> Option<(String, String)> {
        let e = serde_path_to_error::deserialize::<_, T>(table).err()?;
        let path = e.path().to_string();
        Some((path, e.into_inner().message().to_string()))
    }
    let index: usize = key
        .strip_prefix("sinks[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let root: toml::Table = text.parse().ok()?;
    let mut table = root
        .get("sinks")?
        .as_array()?
        .get(index)?
        .as_table()?
        .clone();
    let kind = table.remove("kind")?;
    let table = toml::Value::Table(table);
    let (path, message) = match kind.as_str()? {
        "log" => field::<LogSinkConfig>(table),
        "prometheus" => field::<PrometheusSinkConfig>(table),
        "otel" => field::<OtelSinkConfig>(table),
        "plugin" => field::<PluginSinkConfig>(table),
        _ => None,
    }?;
    let path = if path == "." {
        String::new()
    } else {
        format!(".{path}")
    };
    Some((format!("{key}{path}"), message))
}

/// The name used for TOML text that did not come from a file.
pub fn inline_source() -> PathBuf {
    PathBuf::from("<string>")
}
