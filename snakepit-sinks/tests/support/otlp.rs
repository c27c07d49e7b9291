//! The tests' OTLP/HTTP trace receiver (snakepit-testkit).

pub use snakepit_testkit::otlp::*;
