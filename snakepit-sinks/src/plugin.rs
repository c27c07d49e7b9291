//! The plugin sink.
