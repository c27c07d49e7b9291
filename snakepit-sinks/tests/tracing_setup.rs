//! The one `tracing` setup: a telemetry made from a config file, and its
//! layer in the application's subscriber, show a `debug` record of
//! snakepit's or not according to `log_level` and `log_categories`.

use std::io;
use std::sync::{Arc, Mutex};

use snakepit_core::{Config, LogCategory, LogLevel};
use snakepit_sinks::telemetry_from_config;
use snakepit_telemetry::Telemetry;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// Everything the layer writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Runs `f` under an application subscriber holding the telemetry's layer,
/// and returns what the layer wrote.
fn captured(telemetry: &Telemetry, f: impl FnOnce()) -> String {
    let out = Captured::default();
    let subscriber =
        tracing_subscriber::registry().with(telemetry.tracing_layer_with_writer(out.clone()));
    tracing::subscriber::with_default(subscriber, f);
    out.text()
}

fn telemetry(text: &str) -> Telemetry {
    telemetry_from_config(&Config::from_toml(text, "snakepit.toml").unwrap())
}

fn records() {
    tracing::debug!(target: "snakepit::pool", "pool-debug");
    tracing::info!(target: "snakepit::pool", "pool-info");
    tracing::debug!(target: "snakepit::grpc", "grpc-debug");
    tracing::warn!(target: "snakepit::grpc", "grpc-warn");
    tracing::debug!(target: "my_app", "app-debug");
}

/// Which of the records above were written.
fn shown(out: &str) -> Vec<&'static str> {
    [
        "pool-debug",
        "pool-info",
        "grpc-debug",
        "grpc-warn",
        "app-debug",
    ]
    .into_iter()
    .filter(|m| out.contains(m))
    .collect()
}

#[test]
fn log_level_decides_which_snakepit_records_are_written() {
    let t = telemetry("[telemetry]\nlog_level = \"info\"\n");
    let out = captured(&t, records);
    assert_eq!(
        shown(&out),
        ["pool-info", "grpc-warn", "app-debug"],
        "{out}"
    );

    let t = telemetry("[telemetry]\nlog_level = \"debug\"\n");
    let out = captured(&t, records);
    assert_eq!(
        shown(&out),
        [
            "pool-debug",
            "pool-info",
            "grpc-debug",
            "grpc-warn",
            "app-debug"
        ],
        "{out}"
    );
    // The record names its category's target.
    assert!(out.contains("snakepit::pool"), "{out}");
}

#[test]
fn log_categories_override_the_level_per_category() {
    let t =
        telemetry("[telemetry]\nlog_level = \"warning\"\nlog_categories = { pool = \"debug\" }\n");
    let out = captured(&t, records);
    assert_eq!(
        shown(&out),
        ["pool-debug", "pool-info", "grpc-warn", "app-debug"],
        "{out}"
    );

    // A level changed at run time applies at once.
    t.log()
        .set_category_level(LogCategory::Pool, LogLevel::Error);
    t.log()
        .set_category_level(LogCategory::Grpc, LogLevel::Debug);
    let out = captured(&t, records);
    assert_eq!(
        shown(&out),
        ["grpc-debug", "grpc-warn", "app-debug"],
        "{out}"
    );
}

#[test]
fn try_init_installs_one_global_subscriber() {
    let t = telemetry("[telemetry]\nlog_level = \"debug\"\n");
    t.try_init_tracing().unwrap();
    assert!(
        t.try_init_tracing().is_err(),
        "a second global subscriber is refused"
    );
}

#[test]
fn a_deprecated_key_is_logged_at_load_with_its_replacement() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(out.clone()));
    let config = tracing::subscriber::with_default(subscriber, || {
        Config::from_toml(
            "[[sinks]]\nkind = \"otel\"\nexport_timeout_ms = 2500\n",
            "conf/snakepit.toml",
        )
        .unwrap()
    });
    let text = out.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(
        text.contains("conf/snakepit.toml, line 3: `sinks[0].export_timeout_ms` is deprecated; write `export_timeout = \"2500ms\"` instead"),
        "{text}"
    );
    assert_eq!(config.warnings.len(), 1);
}
