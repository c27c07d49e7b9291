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

use snakepit_core::{Event, LogCategory, LogLevel, Sink, Value};
use snakepit_telemetry::{LogConfig, Telemetry};
use tracing::Level;

/// Events as `tracing` records. Cheap: nothing is formatted unless a
/// subscriber wants the record.
#[derive(Debug, Clone)]
pub struct LogSink {
    log: LogConfig,
}

impl LogSink {
    /// A log sink that obeys `telemetry`'s log configuration.
    pub fn new(telemetry: &Telemetry) -> LogSink {
        LogSink {
            log: telemetry.log().clone(),
        }
    }

    /// A log sink that obeys this log configuration.
    pub fn with_config(log: LogConfig) -> LogSink {
        LogSink { log }
    }
}

/// The log category of an event name (`None` for application events).
pub fn category_of(name: &str) -> Option<LogCategory> {
    let rest = name.strip_prefix("snakepit.")?;
    let group = rest.split('.').next().unwrap_or(rest);
    match group {
        "pool" if rest.starts_with("pool.worker.") => Some(LogCategory::Worker),
        "pool" => Some(LogCategory::Pool),
        "grpc" => Some(LogCategory::Grpc),
        "python" => Some(LogCategory::Python),
        "telemetry" => Some(LogCategory::Telemetry),
        _ => None,
    }
}

/// The level of an event's log record.
pub fn level_of(event: &Event<'_>) -> Level {
    let name = event.name();
    let tail = name.strip_prefix("snakepit.").unwrap_or(name);
    match tail {
        "pool.worker.spawn_failed" | "telemetry.handler.detached" => return Level::ERROR,
        "pool.worker.terminated" => {
            return if event.meta_str("planned") == Some("true") {
                Level::INFO
            } else {
                Level::WARN
            }
        }
        "pool.queue.timeout"
        | "pool.saturated"
        | "pool.worker.restarted"
        | "grpc.connection.lost"
        | "telemetry.event.rejected"
        | "telemetry.events.dropped"
        | "telemetry.sink.overflow" => return Level::WARN,
        "pool.initialized"
        | "pool.worker.spawned"
        | "grpc.connection.established"
        | "grpc.connection.reconnected" => return Level::INFO,
        "pool.status"
        | "pool.queue.enqueued"
        | "pool.queue.dequeued"
        | "pool.worker.spawn_started"
        | "grpc.stream.opened"
        | "grpc.stream.message"
        | "grpc.stream.closed"
        | "python.memory.sampled"
        | "python.cpu.sampled"
        | "telemetry.field.dropped" => return Level::DEBUG,
        _ => {}
    }
    match event.spec().name.rsplit('.').next() {
        Some("exception") => Level::WARN,
        Some("start" | "stop") => Level::DEBUG,
        _ => Level::INFO,
    }
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

macro_rules! emit {
    ($target:literal, $level:expr, $event:expr) => {{
        let e = $event;
        let worker_id = e.meta_str("worker_id");
        let correlation_id = e.correlation_id();
        let span_id = (e.span_id() != 0).then(|| e.span_id());
        match $level {
            Level::ERROR => tracing::event!(target: $target, Level::ERROR, event = e.name(), worker_id, correlation_id, span_id, fields = %Fields(e), "{}", message(e)),
            Level::WARN => tracing::event!(target: $target, Level::WARN, event = e.name(), worker_id, correlation_id, span_id, fields = %Fields(e), "{}", message(e)),
            Level::INFO => tracing::event!(target: $target, Level::INFO, event = e.name(), worker_id, correlation_id, span_id, fields = %Fields(e), "{}", message(e)),
            _ => tracing::event!(target: $target, Level::DEBUG, event = e.name(), worker_id, correlation_id, span_id, fields = %Fields(e), "{}", message(e)),
        }
    }};
}

impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn handle(&self, event: &Event<'_>) {
        let category = category_of(event.name());
        let level = level_of(event);
        let allowed = self
            .log
            .levels()
            .level_for(category, event.meta_str("worker_id"));
        if !level_enabled(level, allowed) {
            return;
        }
        match category {
            Some(LogCategory::Pool) => emit!("snakepit::pool", level, event),
            Some(LogCategory::Worker) => emit!("snakepit::worker", level, event),
            Some(LogCategory::Grpc) => emit!("snakepit::grpc", level, event),
            Some(LogCategory::Python) => emit!("snakepit::python", level, event),
            Some(LogCategory::Telemetry) => emit!("snakepit::telemetry", level, event),
            None => emit!("snakepit", level, event),
        }
    }
}
