//! Errors of the core crate. Each message names the input that was wrong.

use std::path::PathBuf;

/// An event could not be added to the catalog.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// The name is not a valid dotted event name.
    #[error("invalid event name `{name}`: it {why}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An event with this name exists already.
    #[error("event `{name}` is already in the catalog")]
    Duplicate {
        /// The name given.
        name: String,
    },
    /// A Python-origin event must live under `snakepit.python.`.
    #[error("python event `{name}` must be named snakepit.python.<...> so workers can emit it")]
    PythonOutsidePrefix {
        /// The name given.
        name: String,
    },
    /// A measurement key appears twice in one event.
    #[error("event `{name}` lists measurement `{key}` twice")]
    DuplicateMeasurement {
        /// The event.
        name: String,
        /// The repeated key.
        key: String,
    },
    /// More than `u32::MAX` events.
    #[error("the catalog cannot hold more than 2^32 - 1 events")]
    TooManyEvents,
}

/// A glob pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event pattern `{pattern}`: it {why}")]
pub struct PatternError {
    /// The pattern (first 80 characters).
    pub pattern: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A policy value was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// A sampling rate outside `[0, 1]`.
    #[error("sampling rate {rate} for `{what}` is out of range: allowed 0.0 to 1.0")]
    RateOutOfRange {
        /// `sampling_rate` or the pattern the rate belongs to.
        what: String,
        /// The rate given.
        rate: f64,
    },
}

/// A configuration file or environment variable was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key has a bad value, is unknown, or the TOML is malformed.
    #[error("{}: key `{key}`: {message}", file.display())]
    Invalid {
        /// The file (or `<string>` for text that did not come from a file).
        file: PathBuf,
        /// The dotted path of the key, e.g. `sinks[1].kind`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// An environment override has a bad value.
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}
