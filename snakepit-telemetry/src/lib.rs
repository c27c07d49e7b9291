//! # snakepit-telemetry
//!
//! One telemetry system for the host and its Python workers:
//!
//! * [`Telemetry`]: the dispatcher. `attach`, `attach_many`, `detach`,
//!   `list`, `execute`, with `:telemetry` semantics and a lock-free read path
//!   indexed by [`EventId`](snakepit_core::EventId).
//! * [spans](span): start / stop / exception with `duration` in nanoseconds.
//! * [correlation ids](correlation) that flow through threads and `.await`.
//! * [`Control`]: toggle, sampling and filters at run time, observable by
//!   subscribers, pool-wide or for one worker ([`Control::worker`]).
//! * [`LogConfig`]: levels per category and per worker, as a `tracing` filter;
//!   [`Telemetry::tracing_layer`] is the layer that obeys them (see
//!   [`subscriber`]).
//! * [metric definitions](metrics) for metric sinks.

#![warn(missing_docs)]

pub mod control;
pub mod correlation;
pub mod dispatch;
pub mod error;
pub mod log;
pub mod metrics;
mod rand;
pub mod span;
pub mod subscriber;
pub mod unsampled;
pub mod worker_control;

pub use control::{Control, PolicyWatch};
pub use correlation::{
    bind, get_correlation_id, new_correlation_id, reset_correlation_id, set_correlation_id,
    CorrelationExt, CorrelationGuard, CorrelationId, CORRELATION_HEADER,
};
pub use dispatch::{HandlerFn, HandlerInfo, Telemetry, TelemetryBuilder};
pub use error::{AttachError, ControlError, UnknownEvent};
pub use log::{LogConfig, LogFilter, LogLevels};
pub use rand::{new_span_id, new_trace_id};
pub use span::{SpanGuard, SpanOptions};
pub use unsampled::{UnsampledTraces, MAX_UNSAMPLED_TRACES};
pub use worker_control::{WorkerControl, WorkerOverrides};

pub use snakepit_core as core;

/// The README's Rust snippets, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
