//! A library that is not a usable plugin is refused with a message naming
//! the path and what is wrong; nothing is left running.

use std::path::Path;

use serde_json::json;
use snakepit_sinks::plugin::{PluginError, PluginSink};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::plugins::{config, plugin};

fn load(path: &Path, cfg: serde_json::Value) -> PluginError {
    PluginSink::load(&config(path, cfg, 8), &Telemetry::new()).expect_err("must be refused")
}

#[test]
fn a_wrong_abi_version_is_refused_naming_both_versions() {
    let path = plugin("wrong-abi");
    let err = load(&path, json!({}));
    assert!(
        matches!(
            err,
            PluginError::AbiVersion {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("version 1") && message.contains("version 2"),
        "{message}"
    );
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let path = plugin("no-symbol");
    let err = load(&path, json!({}));
    assert!(matches!(err, PluginError::MissingSymbol { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("snakepit_sink_plugin_v1"), "{message}");
}

#[test]
fn a_missing_file_is_refused_naming_the_path() {
    let err = load(Path::new("/nonexistent/libnothing.so"), json!({}));
    assert!(matches!(err, PluginError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/libnothing.so"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libfake.so");
    std::fs::write(&path, b"not an ELF file").unwrap();
    let err = load(&path, json!({}));
    assert!(matches!(err, PluginError::Open { .. }), "{err:?}");
}

#[test]
fn a_config_the_plugin_rejects_is_reported_with_its_message() {
    let path = plugin("jsonl");
    let err = load(&path, json!({ "append": true }));
    assert!(matches!(err, PluginError::Create { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("`path` is missing"), "{message}");
    assert!(message.contains("(jsonl)"), "{message}");
}

#[test]
fn a_panic_in_create_is_a_load_error_not_a_crash() {
    let err = load(&plugin("panicking"), json!({ "panic_in": "create" }));
    assert!(matches!(err, PluginError::CreatePanicked { .. }), "{err:?}");
    assert!(err.to_string().contains("create, as configured"), "{err}");
}
