//! Sinks for snakepit telemetry: log, Prometheus, OpenTelemetry and plugins
//! loaded from dynamic libraries, chosen by config.
//!
//! [`SinkSet::from_config`] builds and attaches every `[[sinks]]` entry of a
//! config file ([`log`], [`prometheus`], [`otel`], [`plugin`]), each for the
//! events its `events` patterns match, and shuts them all down within one
//! deadline. Environment overrides (see `snakepit_core::config`):
//! `SNAKEPIT_LOG_LEVEL`, `SNAKEPIT_TELEMETRY_ENABLED`,
//! `SNAKEPIT_SAMPLING_RATE`, `SNAKEPIT_PROMETHEUS_LISTEN`,
//! `SNAKEPIT_OTEL_ENDPOINT`, `SNAKEPIT_OTEL_SERVICE_NAME`,
//! `SNAKEPIT_OTEL_SAMPLE_RATIO`.

#![warn(missing_docs)]

pub mod log;
pub mod otel;
pub mod plugin;
pub mod prometheus;
pub mod set;
mod shard;

pub use set::{telemetry_from_config, SinkSet, SinkSetError};
