//! Log configuration: a global level, per-category levels (or the list
//! form of `log_categories`) and per-worker levels, all changeable at run
//! time and obeyed by any `tracing` subscriber through [`LogFilter`].
//!
//! snakepit logs with `tracing` under the targets `snakepit::<category>` of
//! the nine [`LogCategory`]s (`lifecycle`, `pool`, `grpc`, `python`,
//! `worker`, `startup`, `shutdown`, `telemetry`) and `snakepit` (the
//! `general` category). A record's level is checked against, in order of
//! precedence:
//!
//! 1. a level scoped to the running code with [`with_level`] or
//!    [`with_level_future`];
//! 2. the level set for its `worker_id` field with
//!    [`LogConfig::set_process_level`];
//! 3. the level of its category (`log_categories = { pool = "debug" }`);
//! 4. the global `log_level`, raised to `warning` for a category left out
//!    of the list form (`log_categories = ["lifecycle", "grpc"]`).
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

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use arc_swap::ArcSwap;
use snakepit_core::config::LogCategories;
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
    /// The list form of `log_categories`: when set, categories outside it
    /// log warnings and errors only (see [`LogCategories`]).
    pub only: Option<BTreeSet<LogCategory>>,
    /// Bumped on every change.
    pub version: u64,
}

impl LogLevels {
    /// The level that applies to a record of `category` from `worker`.
    ///
    /// In order: a level scoped with [`with_level`] on this thread, the
    /// worker's own level, the category's level, then `log_level` (raised
    /// to `warning` for a category outside the list form's categories).
    pub fn level_for(&self, category: Option<LogCategory>, worker: Option<&str>) -> LogLevel {
        if let Some(level) = scoped_level() {
            return level;
        }
        if let Some(level) = worker.and_then(|w| self.workers.get(w)) {
            return *level;
        }
        self.category_level(category)
    }

    /// The level of `category` without scoped or per-worker levels.
    fn category_level(&self, category: Option<LogCategory>) -> LogLevel {
        let Some(category) = category else {
            return self.level;
        };
        if let Some(level) = self.categories.get(&category) {
            return *level;
        }
        match &self.only {
            Some(only) if !only.contains(&category) => self.level.max(LogLevel::Warning),
            _ => self.level,
        }
    }

    /// The level a Python worker should log at (its own override, else the
    /// `python` category, else the global level).
    pub fn worker_level(&self, worker: &str) -> LogLevel {
        self.level_for(Some(LogCategory::Python), Some(worker))
    }

    fn most_verbose(&self, category: Option<LogCategory>) -> LevelFilter {
        if let Some(level) = scoped_level() {
            return level_filter(level);
        }
        let base = level_filter(self.category_level(category));
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
            only: None,
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
            match &config.log_categories {
                LogCategories::Levels(levels) => l.categories = levels.clone(),
                LogCategories::Only(only) => l.only = Some(only.clone()),
            }
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

    /// Removes every worker's level (the reference system's
    /// `clear_process_level`, for all worker processes at once).
    pub fn clear_process_level(&self) {
        self.update(|l| l.workers.clear());
    }

    /// Makes `log_categories` the list form: debug and info records pass
    /// for `categories` only; warnings and errors of every category pass
    /// (`None`: back to levels per category alone).
    pub fn set_only_categories(&self, categories: Option<BTreeSet<LogCategory>>) {
        self.update(|l| l.only = categories);
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

thread_local! {
    /// The level [`with_level`] set on this thread.
    static SCOPED: Cell<Option<LogLevel>> = const { Cell::new(None) };
}

fn scoped_level() -> Option<LogLevel> {
    SCOPED.with(Cell::get)
}

/// Runs `f` with snakepit's records on this thread at `level`, whatever
/// the configured levels say (the reference system's `with_level`); the
/// previous scoped level is back afterwards, even if `f` panics.
///
/// ```
/// use snakepit_core::LogLevel;
/// let n = snakepit_telemetry::log::with_level(LogLevel::Debug, || {
///     // snakepit::* debug records emitted here pass any LogFilter
///     2 + 2
/// });
/// assert_eq!(n, 4);
/// ```
pub fn with_level<R>(level: LogLevel, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<LogLevel>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SCOPED.with(|s| s.replace(Some(level))));
    f()
}

/// `fut` with snakepit's records at `level` while it runs: every poll runs
/// under [`with_level`], so the level follows the future across threads.
///
/// ```
/// # async fn call() {}
/// # async fn example() {
/// use snakepit_core::LogLevel;
/// snakepit_telemetry::log::with_level_future(LogLevel::Debug, call()).await;
/// # }
/// ```
pub fn with_level_future<F: Future>(level: LogLevel, fut: F) -> WithLevel<F> {
    WithLevel {
        level,
        fut: Box::pin(fut),
    }
}

/// The future [`with_level_future`] returns.
pub struct WithLevel<F> {
    level: LogLevel,
    fut: Pin<Box<F>>,
}

impl<F> fmt::Debug for WithLevel<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithLevel")
            .field("level", &self.level)
            .finish()
    }
}

impl<F: Future> Future for WithLevel<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let level = self.level;
        with_level(level, || self.fut.as_mut().poll(cx))
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
    /// `Some` for snakepit's records (their category), `None` for others.
    fn category(meta: &Metadata<'_>) -> Option<Option<LogCategory>> {
        LogCategory::from_target(meta.target()).map(Some)
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
        let level = match scoped_level() {
            Some(level) => level,
            None => visitor
                .found
                .unwrap_or_else(|| levels.level_for(category, None)),
        };
        *meta.level() <= level_filter(level)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        None
    }
}
