//! Log configuration: a global level, per-category levels and per-worker
//! levels, all changeable at run time and obeyed by any `tracing` subscriber
//! through [`LogFilter`].
//!
//! snakepit logs with `tracing` under the targets `snakepit::pool`,
//! `snakepit::worker`, `snakepit::grpc`, `snakepit::telemetry` and
//! `snakepit::python` (records forwarded from Python workers). A record's
//! level is checked against, in order of precedence:
//!
//! 1. the level set for its `worker_id` field with
//!    [`LogConfig::set_process_level`];
//! 2. the level of its category (`log_categories`);
//! 3. the global `log_level`.
//!
//! Records from other targets (the application's own) are left alone.
//!
//! ```
//! use snakepit_telemetry::LogConfig;
//! use snakepit_core::{LogCategory, LogLevel};
//! use tracing_subscriber::prelude::*;
//!
//! let log = LogConfig::default();
//! log.set_category_level(LogCategory::Pool, LogLevel::Debug);
//! log.set_process_level("worker_1", LogLevel::Debug);
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer().with_filter(log.filter()));
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::debug!(target: "snakepit::worker", worker_id = "worker_1", "shown");
//!     tracing::debug!(target: "snakepit::worker", worker_id = "worker_2", "hidden");
//! });
//! log.reset_process_level("worker_1");
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use snakepit_core::{LogCategory, LogLevel, TelemetryConfig};
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter};

/// A snapshot of the log levels.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLevels {
    /// The global level.
    pub level: LogLevel,
    /// Per-category levels.
    pub categories: BTreeMap<LogCategory, LogLevel>,
    /// Per-worker levels.
    pub workers: HashMap<String, LogLevel>,
    /// Bumped on every change.
    pub version: u64,
}

impl LogLevels {
    /// The level that applies to a record of `category` from `worker`.
    pub fn level_for(&self, category: Option<LogCategory>, worker: Option<&str>) -> LogLevel {
        if let Some(level) = worker.and_then(|w| self.workers.get(w)) {
            return *level;
        }
        category
            .and_then(|c| self.categories.get(&c))
            .copied()
            .unwrap_or(self.level)
    }

    /// The level a Python worker should log at (its own override, else the
    /// `python` category, else the global level).
    pub fn worker_level(&self, worker: &str) -> LogLevel {
        self.level_for(Some(LogCategory::Python), Some(worker))
    }

    fn most_verbose(&self, category: Option<LogCategory>) -> LevelFilter {
        let base = level_filter(self.level_for(category, None));
        self.workers
            .values()
            .map(|l| level_filter(*l))
            .fold(base, std::cmp::max)
    }
}

/// The `tracing` filter a [`LogLevel`] stands for.
pub fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::None => LevelFilter::OFF,
    }
}

struct LogInner {
    levels: ArcSwap<LogLevels>,
    write: Mutex<()>,
    tx: watch::Sender<Arc<LogLevels>>,
}

/// Runtime log configuration. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct LogConfig {
    inner: Arc<LogInner>,
}

impl fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LogConfig").field(&*self.levels()).finish()
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig::new(LogLevel::Info)
    }
}

impl LogConfig {
    /// A configuration with one global level and no overrides.
    pub fn new(level: LogLevel) -> Self {
        let levels = Arc::new(LogLevels {
            level,
            categories: BTreeMap::new(),
            workers: HashMap::new(),
            version: 0,
        });
        let (tx, _) = watch::channel(levels.clone());
        LogConfig {
            inner: Arc::new(LogInner {
                levels: ArcSwap::new(levels),
                write: Mutex::new(()),
                tx,
            }),
        }
    }

    /// The configuration a `[telemetry]` section describes.
    pub fn from_config(config: &TelemetryConfig) -> Self {
        let log = LogConfig::new(config.log_level);
        log.update(|l| {
            l.categories = config.log_categories.clone();
            l.workers = config
                .worker_log_levels
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
        });
        log
    }

    fn update(&self, f: impl FnOnce(&mut LogLevels)) {
        let _w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**self.inner.levels.load()).clone();
        f(&mut next);
        next.version += 1;
        let next = Arc::new(next);
        self.inner.levels.store(next.clone());
        self.inner.tx.send_replace(next);
    }

    /// The levels in force.
    pub fn levels(&self) -> Arc<LogLevels> {
        self.inner.levels.load_full()
    }

    /// Sets the global level.
    pub fn set_level(&self, level: LogLevel) {
        self.update(|l| l.level = level);
    }

    /// Sets one category's level.
    pub fn set_category_level(&self, category: LogCategory, level: LogLevel) {
        self.update(|l| {
            l.categories.insert(category, level);
        });
    }

    /// Removes one category's level (the global level applies again).
    pub fn reset_category_level(&self, category: LogCategory) {
        self.update(|l| {
            l.categories.remove(&category);
        });
    }

    /// Sets the level of one worker's records (host records that carry its
    /// `worker_id`, and the records the worker itself forwards).
    pub fn set_process_level(&self, worker_id: &str, level: LogLevel) {
        self.update(|l| {
            l.workers.insert(worker_id.to_string(), level);
        });
    }

    /// Removes one worker's level.
    pub fn reset_process_level(&self, worker_id: &str) {
        self.update(|l| {
            l.workers.remove(worker_id);
        });
    }

    /// A receiver of every change (used to push worker levels to workers).
    pub fn subscribe(&self) -> watch::Receiver<Arc<LogLevels>> {
        self.inner.tx.subscribe()
    }

    /// A `tracing` per-layer filter that obeys this configuration, now and
    /// after every change.
    pub fn filter(&self) -> LogFilter {
        LogFilter {
            config: self.clone(),
        }
    }
}

/// A `tracing_subscriber` filter driven by a [`LogConfig`]. Use it with
/// `layer.with_filter(log.filter())`.
#[derive(Clone, Debug)]
pub struct LogFilter {
    config: LogConfig,
}

struct WorkerIdVisitor<'a> {
    levels: &'a LogLevels,
    found: Option<LogLevel>,
}

impl Visit for WorkerIdVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "worker_id" {
            self.found = self.levels.workers.get(value).copied();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "worker_id" && !self.levels.workers.is_empty() {
            let text = format!("{value:?}");
            let text = text.trim_matches('"');
            self.found = self.levels.workers.get(text).copied();
        }
    }
}

impl LogFilter {
    fn category(meta: &Metadata<'_>) -> Option<Option<LogCategory>> {
        let target = meta.target();
        if target == "snakepit" || target.starts_with("snakepit::") {
            Some(LogCategory::from_target(target))
        } else {
            None
        }
    }

    /// Is a record with this metadata, from this worker, enabled?
    pub fn would_log(&self, meta: &Metadata<'_>, worker_id: Option<&str>) -> bool {
        match Self::category(meta) {
            None => true,
            Some(category) => {
                let levels = self.config.inner.levels.load();
                *meta.level() <= level_filter(levels.level_for(category, worker_id))
            }
        }
    }
}

impl<S: Subscriber> Filter<S> for LogFilter {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        match Self::category(meta) {
            None => true,
            Some(category) => {
                let levels = self.config.inner.levels.load();
                *meta.level() <= levels.most_verbose(category)
            }
        }
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        match Self::category(meta) {
            None => Interest::always(),
            // Levels change at run time: ask every time.
            Some(_) => Interest::sometimes(),
        }
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        let Some(category) = Self::category(meta) else {
            return true;
        };
        let levels = self.config.inner.levels.load();
        let mut visitor = WorkerIdVisitor {
            levels: &levels,
            found: None,
        };
        if !levels.workers.is_empty() {
            event.record(&mut visitor);
        }
        let level = visitor
            .found
            .unwrap_or_else(|| levels.level_for(category, None));
        *meta.level() <= level_filter(level)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        None
    }
}
