//! The otel sink.
