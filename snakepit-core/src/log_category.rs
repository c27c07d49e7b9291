//! Log levels and log categories: what `log_level` and `log_categories`
//! in `[telemetry]` say about snakepit's own `tracing` records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A log level, as the guide writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    #[serde(alias = "warn")]
    Warning,
    /// Something failed.
    Error,
    /// Nothing.
    None,
}

impl LogLevel {
    /// The allowed spellings, for error messages.
    pub const ALLOWED: &'static str = "debug, info, warning, error, none";

    /// The level's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::None => "none",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warning" | "warn" => Ok(LogLevel::Warning),
            "error" => Ok(LogLevel::Error),
            "none" => Ok(LogLevel::None),
            _ => Err(format!(
                "unknown log level `{s}`, allowed: {}",
                LogLevel::ALLOWED
            )),
        }
    }
}

/// A log category: which part of snakepit a record comes from. Records are
/// `tracing` events whose target is `snakepit::<category>`. The nine names
/// of the reference system are accepted; its `bridge` (the Python bridge)
/// is [`LogCategory::Python`] here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogCategory {
    /// Worker lifecycle: spawned, restarted, recycled, unhealthy, lost,
    /// terminated.
    Lifecycle,
    /// The pool: queueing, scheduling, status.
    Pool,
    /// The gRPC client and its connections.
    Grpc,
    /// The Python bridge: records forwarded from Python workers and their
    /// events (`bridge` is accepted as its name too).
    #[serde(alias = "bridge")]
    Python,
    /// Worker processes' own output (stderr, stray stdout lines).
    Worker,
    /// Starting up: the pool ready, worker ready lines, stale sockets.
    Startup,
    /// Shutting down: draining calls, stopping workers.
    Shutdown,
    /// The telemetry system itself: handlers, sinks, drops.
    Telemetry,
    /// Everything else snakepit logs (target `snakepit`).
    General,
}

impl LogCategory {
    /// Every category.
    pub const ALL: [LogCategory; 9] = [
        LogCategory::Lifecycle,
        LogCategory::Pool,
        LogCategory::Grpc,
        LogCategory::Python,
        LogCategory::Worker,
        LogCategory::Startup,
        LogCategory::Shutdown,
        LogCategory::Telemetry,
        LogCategory::General,
    ];

    /// The category's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogCategory::Lifecycle => "lifecycle",
            LogCategory::Pool => "pool",
            LogCategory::Grpc => "grpc",
            LogCategory::Python => "python",
            LogCategory::Worker => "worker",
            LogCategory::Startup => "startup",
            LogCategory::Shutdown => "shutdown",
            LogCategory::Telemetry => "telemetry",
            LogCategory::General => "general",
        }
    }

    /// The `tracing` target snakepit uses for this category (`snakepit`
    /// for [`LogCategory::General`]).
    pub fn target(self) -> &'static str {
        match self {
            LogCategory::Lifecycle => "snakepit::lifecycle",
            LogCategory::Pool => "snakepit::pool",
            LogCategory::Grpc => "snakepit::grpc",
            LogCategory::Python => "snakepit::python",
            LogCategory::Worker => "snakepit::worker",
            LogCategory::Startup => "snakepit::startup",
            LogCategory::Shutdown => "snakepit::shutdown",
            LogCategory::Telemetry => "snakepit::telemetry",
            LogCategory::General => "snakepit",
        }
    }

    /// The category of a `tracing` target, if it is one of snakepit's:
    /// `snakepit::<category>[::…]`, else [`LogCategory::General`] for any
    /// other `snakepit` or `snakepit::…` target.
    pub fn from_target(target: &str) -> Option<LogCategory> {
        if target == "snakepit" {
            return Some(LogCategory::General);
        }
        let rest = target.strip_prefix("snakepit::")?;
        let head = rest.split("::").next().unwrap_or(rest);
        Some(
            LogCategory::ALL
                .into_iter()
                .find(|c| c.as_str() == head)
                .unwrap_or(LogCategory::General),
        )
    }
}

/// `log_categories`: either levels per category, or the list form.
///
/// * `{ pool = "debug", grpc = "warning" }`: each listed category logs at
///   its level; the others at `log_level`.
/// * `["lifecycle", "grpc"]` (the reference system's form): debug and info
///   records pass for the listed categories only (down to `log_level`);
///   warnings and errors of every category pass (unless `log_level` is
///   `error` or `none`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogCategories {
    /// Levels per category.
    Levels(BTreeMap<LogCategory, LogLevel>),
    /// Only these categories log below warning.
    Only(BTreeSet<LogCategory>),
}

impl Default for LogCategories {
    fn default() -> Self {
        LogCategories::Levels(BTreeMap::new())
    }
}

impl LogCategories {
    /// The level set for `category` in the table form, if any.
    pub fn level(&self, category: LogCategory) -> Option<LogLevel> {
        match self {
            LogCategories::Levels(levels) => levels.get(&category).copied(),
            LogCategories::Only(_) => None,
        }
    }

    /// The categories of the list form (`None` for the table form).
    pub fn only(&self) -> Option<&BTreeSet<LogCategory>> {
        match self {
            LogCategories::Levels(_) => None,
            LogCategories::Only(only) => Some(only),
        }
    }
}

impl<'de> Deserialize<'de> for LogCategories {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = LogCategories;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table of category = level (`{ pool = \"debug\" }`) or a list of \
                     categories (`[\"lifecycle\", \"grpc\"]`)",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                BTreeMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(LogCategories::Levels)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<LogCategory>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(|v| LogCategories::Only(v.into_iter().collect()))
            }
        }
        d.deserialize_any(Either)
    }
}
