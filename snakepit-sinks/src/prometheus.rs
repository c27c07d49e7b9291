//! The prometheus sink.
