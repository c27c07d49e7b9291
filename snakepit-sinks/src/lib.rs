//! Sinks for snakepit telemetry: log, Prometheus, OpenTelemetry and plugins
//! loaded from dynamic libraries, chosen by config.

#![warn(missing_docs)]

pub mod log;
pub mod otel;
pub mod plugin;
pub mod prometheus;
pub mod set;

pub use set::{telemetry_from_config, SinkSet, SinkSetError};
