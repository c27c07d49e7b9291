//! The `tracing` side of one config file: a [`Telemetry`] made from a
//! [`Config`] carries its `log_level`, `log_categories` and
//! `worker_log_levels`; [`Telemetry::tracing_layer`] is the layer that
//! obeys them, to add to the application's own subscriber, and
//! [`Telemetry::try_init_tracing`] installs a subscriber for an application
//! that has none.
//!
//! ```
//! use snakepit_core::Config;
//! use snakepit_telemetry::Telemetry;
//! use tracing_subscriber::prelude::*;
//!
//! let config = Config::from_toml(
//!     "[telemetry]\nlog_level = \"warning\"\nlog_categories = { pool = \"debug\" }\n",
//!     "snakepit.toml",
//! )
//! .unwrap();
//! let telemetry = Telemetry::from_config(&config);
//! // The application's subscriber, with snakepit's layer beside its own.
//! let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::debug!(target: "snakepit::pool", "shown: pool is at debug");
//!     tracing::info!(target: "snakepit::grpc", "hidden: the rest is at warning");
//! });
//! ```

use tracing::level_filters::LevelFilter;
use tracing::Subscriber;
use tracing_subscriber::filter::{filter_fn, Filtered};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

use snakepit_core::Config;

use crate::log::{LogConfig, LogFilter};
use crate::Telemetry;

impl Telemetry {
    /// A telemetry instance with the policy (toggle, sampling, filters) and
    /// the log levels of `config`'s `[telemetry]` section.
    pub fn from_config(config: &Config) -> Telemetry {
        Telemetry::builder()
            .policy(config.telemetry.policy())
            .log_config(LogConfig::from_config(&config.telemetry))
            .build()
    }

    /// The per-layer `tracing` filter of this instance's log levels
    /// ([`Telemetry::log`]): a record of a snakepit target
    /// (`snakepit::pool`, `snakepit::worker`, `snakepit::grpc`,
    /// `snakepit::telemetry`, `snakepit::python`) passes when its level is
    /// within its worker's, else its category's, else the global level; a
    /// record of any other target passes. Levels changed at run time apply
    /// at once. Put it on any layer: `layer.with_filter(t.log_filter())`.
    pub fn log_filter(&self) -> LogFilter {
        self.log().filter()
    }

    /// A `fmt` layer writing to standard error, filtered by
    /// [`Telemetry::log_filter`]: add it to the application's subscriber
    /// (`tracing_subscriber::registry().with(t.tracing_layer())`) so that
    /// `log_level` and `log_categories` fully apply to snakepit's records.
    /// Records of other targets pass; filter them on the application's own
    /// layers (or add one more filter on this one with `.with_filter`).
    pub fn tracing_layer<S>(&self) -> Filtered<impl Layer<S> + Send + Sync + 'static, LogFilter, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        self.tracing_layer_with_writer(std::io::stderr)
    }

    /// [`Telemetry::tracing_layer`] writing to `writer` (a file, a buffer,
    /// `std::io::stdout`) instead of standard error.
    pub fn tracing_layer_with_writer<S, W>(
        &self,
        writer: W,
    ) -> Filtered<impl Layer<S> + Send + Sync + 'static, LogFilter, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(self.log_filter())
    }

    /// For an application without a `tracing` subscriber of its own:
    /// installs, as the global default, a subscriber with
    /// [`Telemetry::tracing_layer`], snakepit's records at the config's
    /// levels and other targets' records at `warn` and above. Fails
    /// (changing nothing) when a global subscriber is already set; then add
    /// [`Telemetry::tracing_layer`] to that one instead.
    pub fn try_init_tracing(&self) -> Result<(), TryInitError> {
        let others_from_warn = filter_fn(|meta| {
            meta.target().starts_with("snakepit") || *meta.level() <= LevelFilter::WARN
        });
        tracing_subscriber::registry()
            .with(self.tracing_layer().with_filter(others_from_warn))
            .try_init()
    }
}
