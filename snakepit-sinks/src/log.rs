//! The log sink: events become `tracing` records.
//!
//! * Target: `snakepit::<category>` from the event's group: `pool.worker.*`
//!   is `worker`, the rest of `pool.*` is `pool`, `grpc.*` is `grpc`,
//!   `python.*` is `python`, `telemetry.*` is `telemetry`; application
//!   events use the target `snakepit`.
//! * Level, see [`level_of`]: failures (spawn failures, detached handlers)
//!   are `error`; exceptions, rejections, timeouts, saturation, drops and
//!   lost connections are `warn`; lifecycle events (initialized, spawned,
//!   terminated, connected) are `info`; high-rate events (span start/stop,
//!   stream messages, queue movements, status snapshots, resource samples)
//!   are `debug`.
//! * Fields: `event` (the dotted name), `worker_id`, `correlation_id` and
//!   `span_id` when present, and `fields`: every measurement and metadata
//!   value as `key=value` pairs (formatted only when the record is enabled).
//!
//! The sink obeys the telemetry instance's [`LogConfig`] itself (global
//! level, `log_categories`, per-worker levels): a record below the level that
//! applies to its category and `worker_id` is not produced at all. The same
//! config as a subscriber filter (`telemetry.log().filter()`) applies the
//! same rules to every other snakepit record, e.g. Python workers' log lines
//! forwarded under `snakepit::python`.

use std::fmt;
use std::sync::Arc;

use snakepit_core::{Catalog, Event, LogCategory, LogLevel, Sink, Value};
use snakepit_telemetry::{LogConfig, Telemetry};
use tracing::Level;

/// Events as `tracing` records. Cheap: when no subscriber wants a record
/// at the event's target and level, `handle` costs a table lookup and the
/// `tracing` interest check; nothing is formatted.
#[derive(Debug, Clone)]
pub struct LogSink {
    log: LogConfig,
    /// Category and level of each event id (`None`: depends on metadata).
    table: Arc<[(Option<LogCategory>, Option<Level>)]>,
}

impl LogSink {
    /// A log sink that obeys `telemetry`'s log configuration.
    pub fn new(telemetry: &Telemetry) -> LogSink {
        LogSink::with_config(telemetry.log().clone(), telemetry.catalog())
    }

    /// A log sink for the events of `catalog` that obeys this log configuration.
    pub fn with_config(log: LogConfig, catalog: &Catalog) -> LogSink {
        let table = catalog
            .iter()
            .map(|(_, spec)| (category_of(&spec.name), static_level(&spec.name)))
            .collect();
        LogSink { log, table }
    }

    /// Does the log config let a record of this category and level through
    /// for this event's worker?
    fn allowed(&self, category: Option<LogCategory>, level: Level, event: &Event<'_>) -> bool {
        let allowed = self
            .log
            .levels()
            .level_for(category, event.meta_str("worker_id"));
        level_enabled(level, allowed)
    }
}

/// The log category of an event name (`None` for application events).
pub fn category_of(name: &str) -> Option<LogCategory> {
    let rest = name.strip_prefix("snakepit.")?;
    let group = rest.split('.').next().unwrap_or(rest);
    match group {
        "pool" if rest.starts_with("pool.worker.") => Some(LogCategory::Lifecycle),
        "pool" if rest == "pool.initialized" => Some(LogCategory::Startup),
        "pool" => Some(LogCategory::Pool),
        "grpc" => Some(LogCategory::Grpc),
        "python" => Some(LogCategory::Python),
        "telemetry" => Some(LogCategory::Telemetry),
        _ => None,
    }
}

/// The level of an event's log record.
pub fn level_of(event: &Event<'_>) -> Level {
    static_level(event.name()).unwrap_or_else(|| dynamic_level(event))
}

/// The level of a record that depends on metadata: a worker's planned
/// termination is `info`, any other `warn`.
fn dynamic_level(event: &Event<'_>) -> Level {
    if event.meta_str("planned") == Some("true") {
        Level::INFO
    } else {
        Level::WARN
    }
}

/// The level of an event by name, `None` when it depends on metadata.
fn static_level(name: &str) -> Option<Level> {
    let tail = name.strip_prefix("snakepit.").unwrap_or(name);
    Some(match tail {
        "pool.worker.terminated" => return None,
        "pool.worker.spawn_failed" | "pool.worker.abandoned" | "telemetry.handler.detached" => {
            Level::ERROR
        }
        "pool.queue.timeout"
        | "pool.saturated"
        | "pool.worker.restarted"
        | "pool.template.restarted"
        | "pool.worker.unhealthy"
        | "grpc.connection.lost"
        | "telemetry.event.rejected"
        | "telemetry.events.dropped"
        | "telemetry.sink.overflow" => Level::WARN,
        "pool.initialized"
        | "pool.worker.spawned"
        | "grpc.connection.established"
        | "grpc.connection.reconnected" => Level::INFO,
        "pool.status"
        | "pool.queue.enqueued"
        | "pool.queue.dequeued"
        | "pool.worker.spawn_started"
        | "grpc.stream.opened"
        | "grpc.stream.message"
        | "grpc.stream.closed"
        | "python.memory.sampled"
        | "python.cpu.sampled"
        | "telemetry.field.dropped" => Level::DEBUG,
        _ => match name.rsplit('.').next() {
            Some("exception") => Level::WARN,
            Some("start" | "stop") => Level::DEBUG,
            _ => Level::INFO,
        },
    })
}

fn level_enabled(level: Level, allowed: LogLevel) -> bool {
    let allowed = match allowed {
        LogLevel::Debug => Level::TRACE,
        LogLevel::Info => Level::INFO,
        LogLevel::Warning => Level::WARN,
        LogLevel::Error => Level::ERROR,
        LogLevel::None => return false,
    };
    // In `tracing`, ERROR < WARN < INFO < DEBUG < TRACE.
    level <= allowed
}

/// `key=value` pairs of an event's measurements and metadata, formatted lazily.
struct Fields<'e, 'a>(&'e Event<'a>);

impl fmt::Display for Fields<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in self.0.measurements().iter().chain(self.0.metadata()) {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            match v {
                Value::Str(s) => write!(f, "{k}={s:?}")?,
                other => write!(f, "{k}={other}")?,
            }
        }
        Ok(())
    }
}

/// The human message of a record: the catalog's description of the event.
fn message<'a>(event: &Event<'a>) -> &'a str {
    &event.spec().description
}

/// One record at a static target and level: first the `tracing` interest
/// check (cheap when nobody listens), then the log config, then the record.
macro_rules! record {
    ($sink:expr, $category:expr, $target:literal, $level:expr, $e:expr) => {
        if tracing::enabled!(target: $target, $level) && $sink.allowed($category, $level, $e) {
            let worker_id = $e.meta_str("worker_id");
            let correlation_id = $e.correlation_id();
            let span_id = ($e.span_id() != 0).then(|| $e.span_id());
            tracing::event!(
                target: $target,
                $level,
                event = $e.name(),
                worker_id,
                correlation_id,
                span_id,
                fields = %Fields($e),
                "{}",
                message($e)
            );
        }
    };
}

macro_rules! emit {
    ($sink:expr, $category:expr, $target:literal, $level:expr, $e:expr) => {
        match $level {
            Level::ERROR => record!($sink, $category, $target, Level::ERROR, $e),
            Level::WARN => record!($sink, $category, $target, Level::WARN, $e),
            Level::INFO => record!($sink, $category, $target, Level::INFO, $e),
            _ => record!($sink, $category, $target, Level::DEBUG, $e),
        }
    };
}

impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn handle(&self, event: &Event<'_>) {
        let Some(&(category, level)) = self.table.get(event.id().index()) else {
            return;
        };
        let level = level.unwrap_or_else(|| dynamic_level(event));
        match category {
            Some(LogCategory::Lifecycle) => {
                emit!(self, category, "snakepit::lifecycle", level, event)
            }
            Some(LogCategory::Pool) => emit!(self, category, "snakepit::pool", level, event),
            Some(LogCategory::Grpc) => emit!(self, category, "snakepit::grpc", level, event),
            Some(LogCategory::Python) => emit!(self, category, "snakepit::python", level, event),
            Some(LogCategory::Worker) => emit!(self, category, "snakepit::worker", level, event),
            Some(LogCategory::Startup) => emit!(self, category, "snakepit::startup", level, event),
            Some(LogCategory::Shutdown) => {
                emit!(self, category, "snakepit::shutdown", level, event)
            }
            Some(LogCategory::Telemetry) => {
                emit!(self, category, "snakepit::telemetry", level, event)
            }
            Some(LogCategory::General) | None => emit!(self, category, "snakepit", level, event),
        }
    }
}
