//! Sinks for snakepit telemetry: log, Prometheus, OpenTelemetry and plugins
//! loaded from dynamic libraries, chosen by config.
//!
//! [`SinkSet::from_config`] builds and attaches every `[[sinks]]` entry of a
//! config file (`log`, `prometheus`, `otel`, `plugin`), each for the
//! events its `events` patterns match, and shuts them all down within one
//! deadline. [`telemetry_from_config`] builds the `Telemetry` of the same
//! file, whose `tracing_layer()` makes its `log_level` and
//! `log_categories` apply in the application's `tracing` subscriber.
//! Environment overrides (see `snakepit_core::config`):
//! `SNAKEPIT_LOG_LEVEL`, `SNAKEPIT_TELEMETRY_ENABLED`,
//! `SNAKEPIT_SAMPLING_RATE`, `SNAKEPIT_PROMETHEUS_LISTEN`,
//! `SNAKEPIT_OTEL_ENDPOINT`, `SNAKEPIT_OTEL_SERVICE_NAME`,
//! `SNAKEPIT_OTEL_SAMPLE_RATIO`.
//!
//! # Cargo features
//!
//! Each sink kind is a feature, all on by default; each pulls in only its
//! own dependencies, so e.g. `default-features = false, features =
//! ["prometheus"]` builds the Prometheus sink alone.
//!
//! | Feature      | Module         | Dependencies it adds                          |
//! |--------------|----------------|-----------------------------------------------|
//! | `log`        | `log`          | none (`tracing` records)                      |
//! | `prometheus` | `prometheus`   | metrics, metrics-exporter-prometheus, hyper, tokio |
//! | `otel`       | `otel`         | prost, ureq, crossbeam-channel                |
//! | `plugin`     | `plugin`       | libloading, crossbeam-channel, snakepit-sink-abi |
//!
//! A `[[sinks]]` entry whose kind's feature is off makes
//! [`SinkSet::from_config`] fail with [`SinkSetError::Disabled`], which
//! names the kind and the feature to enable.

#![warn(missing_docs)]

mod built;
#[cfg(feature = "log")]
pub mod log;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "plugin")]
pub mod plugin;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod set;
#[cfg(any(feature = "otel", feature = "prometheus"))]
mod shard;

pub use built::{BuiltSink, SinkKind};
pub use set::{telemetry_from_config, SinkLocation, SinkSet, SinkSetError, SinkStats};
