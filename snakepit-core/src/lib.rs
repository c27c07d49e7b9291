//! # snakepit-core
//!
//! The vocabulary every other snakepit crate speaks: the bounded [event
//! catalog](catalog), the [`Event`] view handlers receive, [`Value`]s, the
//! [`Sink`] trait, the telemetry [`Policy`] shared with Python workers, the
//! worker's [ready line](ready), and the configuration types.
//!
//! Architecture invariant: this crate depends on no async runtime and no
//! gRPC library; it is plain data and pure functions.
//!
//! ```
//! use snakepit_core::{builtin, Catalog};
//!
//! let catalog = Catalog::builtin();
//! let id = catalog.id("snakepit.python.call.stop").unwrap();
//! assert_eq!(id, builtin::PYTHON_CALL_STOP);
//! assert_eq!(catalog.python_id("call.stop"), Some(id));
//! assert!(catalog.python_id("made.up").is_none());
//! ```

#![warn(missing_docs)]

pub mod builtin;
pub mod catalog;
pub mod config;
mod deprecated;
pub mod duration;
pub mod error;
pub mod event;
mod log_category;
pub mod otel_env;
mod otel_section;
pub mod pattern;
pub mod policy;
pub mod ready;
pub mod sink;
mod toml_lines;
pub mod value;

pub use catalog::{
    Catalog, CatalogBuilder, EventId, EventSpec, MeasurementSpec, MetadataSpec, Origin, SpanFamily,
    SpanRole, Unit,
};
pub use config::{Config, LogCategory, LogLevel, SinkConfig, TelemetryConfig};
pub use error::{CatalogError, ConfigError, PatternError, PolicyError};
pub use event::{Event, EventContext, OwnedEvent};
pub use pattern::Pattern;
pub use policy::{Gate, PatternRate, Policy, Sampling};
pub use sink::{Sink, SinkError};
pub use value::{Field, Value};
