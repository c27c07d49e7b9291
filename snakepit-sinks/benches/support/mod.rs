//! Shared by the sinks benchmarks.

/// A local OTLP/HTTP receiver that reads each request and answers 200 with
/// an empty body; returns its `http://` endpoint.
pub use snakepit_testkit::otlp::discard_receiver as otlp_sink_receiver;
