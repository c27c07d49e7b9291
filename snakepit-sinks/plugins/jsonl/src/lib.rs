//! Sample sink plugin: events as JSON lines.
