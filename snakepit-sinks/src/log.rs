//! The log sink.
