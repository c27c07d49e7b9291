//! Config errors name the file, the key and what is allowed.

use snakepit_core::config::ConfigSource;
use snakepit_core::{Config, ConfigError, LogCategory, LogLevel, SinkConfig};

fn err(text: &str) -> String {
    Config::from_toml(text, "conf/snakepit.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn the_design_example_parses() {
    let c = Config::from_toml(
        r#"
        [telemetry]
        log_level = "info"
        log_categories = { pool = "debug", worker = "info", grpc = "warning" }

        [[sinks]]
        kind = "prometheus"
        listen = "127.0.0.1:9568"

        [[sinks]]
        kind = "otel"
        endpoint = "http://collector:4318"

        [[sinks]]
        kind = "plugin"
        path = "target/release/libmy_sink.so"
        config = { file = "events.jsonl" }
        "#,
        "snakepit.toml",
    )
    .unwrap();
    assert_eq!(c.telemetry.log_level, LogLevel::Info);
    assert_eq!(
        c.telemetry.log_categories.level(LogCategory::Grpc),
        Some(LogLevel::Warning)
    );
    assert_eq!(c.sinks.len(), 3);
    match &c.sinks[2] {
        SinkConfig::Plugin(p) => assert_eq!(p.config["file"], "events.jsonl"),
        other => panic!("{other:?}"),
    }
    let source = c.source.as_ref().unwrap();
    assert_eq!(source.file, std::path::Path::new("snakepit.toml"));
    assert_eq!(source.sink_lines.len(), 3);
    assert!(source.sink_lines.iter().all(|&l| l > 1), "{source:?}");
    assert_eq!(
        Config::from_toml("", "empty.toml").unwrap(),
        Config {
            source: Some(ConfigSource {
                file: "empty.toml".into(),
                sink_lines: vec![],
                text: String::new(),
            }),
            ..Config::default()
        }
    );
}

#[test]
fn bad_level_names_file_key_and_allowed_values() {
    let e = err("[telemetry]\nlog_level = \"loud\"\n");
    assert!(e.starts_with("conf/snakepit.toml:"), "{e}");
    assert!(e.contains("telemetry.log_level"), "{e}");
    assert!(e.contains("loud"), "{e}");
    for allowed in ["debug", "info", "warning", "error", "none"] {
        assert!(e.contains(allowed), "{e}");
    }
}

#[test]
fn bad_category_names_the_allowed_categories() {
    let e = err("[telemetry]\nlog_categories = { pools = \"debug\" }\n");
    assert!(e.contains("telemetry.log_categories"), "{e}");
    assert!(e.contains("pools"), "{e}");
    assert!(
        e.contains("pool") && e.contains("grpc") && e.contains("python"),
        "{e}"
    );
}

#[test]
fn log_categories_take_the_list_form_and_the_nine_names() {
    let names = [
        "lifecycle",
        "pool",
        "grpc",
        "bridge",
        "worker",
        "startup",
        "shutdown",
        "telemetry",
        "general",
    ];
    let list = names.map(|n| format!("\"{n}\"")).join(", ");
    let c = Config::from_toml(
        &format!("[telemetry]\nlog_categories = [{list}]\n"),
        "s.toml",
    )
    .unwrap();
    let only = c.telemetry.log_categories.only().expect("the list form");
    // `bridge` is the Python bridge: the `python` category.
    assert!(only.contains(&LogCategory::Python));
    assert_eq!(only.len(), 9, "{only:?}");
    assert_eq!(c.telemetry.log_categories.level(LogCategory::Pool), None);
    for name in names {
        let c = Config::from_toml(
            &format!("[telemetry]\nlog_categories = {{ {name} = \"debug\" }}\n"),
            "s.toml",
        )
        .unwrap();
        assert!(c.telemetry.log_categories.only().is_none());
    }

    let e = err("[telemetry]\nlog_categories = [\"lifecycle\", \"pools\"]\n");
    assert!(e.contains("telemetry.log_categories"), "{e}");
    assert!(e.contains("pools") && e.contains("lifecycle"), "{e}");
    let e = err("[telemetry]\nlog_categories = \"pool\"\n");
    assert!(e.contains("telemetry.log_categories"), "{e}");
    assert!(e.contains("a list of categories"), "{e}");
}

#[test]
fn unknown_keys_are_rejected() {
    let e = err("[telemetry]\nlog_lvl = \"info\"\n");
    assert!(e.contains("log_lvl"), "{e}");
    let e = err("[[sinks]]\nkind = \"prometheus\"\nlisten = \"127.0.0.1:1\"\nport = 3\n");
    assert!(e.contains("sinks[0]") && e.contains("port"), "{e}");
}

#[test]
fn bad_sink_kind_lists_the_kinds() {
    let e = err("[[sinks]]\nkind = \"prom\"\n");
    assert!(e.contains("sinks[0]"), "{e}");
    assert!(e.contains("prom"), "{e}");
    for k in ["log", "prometheus", "otel", "plugin"] {
        assert!(e.contains(k), "{e}");
    }
    let e = err("[[sinks]]\nlisten = \"127.0.0.1:1\"\n");
    assert!(e.contains("kind"), "{e}");
}

#[test]
fn out_of_range_values_name_the_key_and_range() {
    let e = err("[telemetry]\nsampling_rate = 1.5\n");
    assert!(
        e.contains("telemetry.sampling_rate") && e.contains("0.0 to 1.0"),
        "{e}"
    );
    let e = err("[telemetry]\n\nsampling = [{ pattern = \"python.*\", rate = 2.0 }]\n");
    assert!(e.contains("telemetry.sampling[0].rate"), "{e}");
    assert!(e.ends_with("(line 3)"), "{e}");
    let e = err("[telemetry]\ndeny = [\"Not A Pattern\"]\n");
    assert!(
        e.contains("telemetry.deny") && e.contains("Not A Pattern"),
        "{e}"
    );
    let e = err("[[sinks]]\nkind = \"otel\"\nendpoint = \"collector:4318\"\n");
    assert!(e.contains("sinks[0].endpoint") && e.contains("http"), "{e}");
    assert!(e.ends_with("(line 3)"), "{e}");
    let e = err("[[sinks]]\nkind = \"log\"\n[[sinks]]\nkind = \"otel\"\nsample_ratio = 1.5\n");
    assert!(
        e.contains("sinks[1].sample_ratio") && e.contains("0.0 to 1.0") && e.ends_with("(line 5)"),
        "{e}"
    );
    let e = err("[[sinks]]\nkind = \"prometheus\"\nlisten = \"not-an-address\"\n");
    assert!(
        e.contains("sinks[0].listen") || e.contains("sinks[0]"),
        "{e}"
    );
}

#[test]
fn malformed_toml_and_missing_files_are_clear() {
    let e = err("[telemetry]\nlog_level = \"info\"\n[telemetry\n");
    assert!(e.starts_with("conf/snakepit.toml:"), "{e}");
    assert!(e.contains("(line 3)"), "{e}");
    let e = Config::load("/nonexistent/snakepit.toml").unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/snakepit.toml"));
}

#[test]
fn env_overrides_apply_and_name_the_variable() {
    let mut c = Config::default();
    c.apply_env([
        ("SNAKEPIT_LOG_LEVEL", "debug"),
        ("SNAKEPIT_SAMPLING_RATE", "0.25"),
        ("SNAKEPIT_TELEMETRY_ENABLED", "false"),
        ("UNRELATED", "x"),
    ])
    .unwrap();
    assert_eq!(c.telemetry.log_level, LogLevel::Debug);
    assert_eq!(c.telemetry.sampling_rate, 0.25);
    assert!(!c.telemetry.enabled);
    let e = c
        .apply_env([("SNAKEPIT_SAMPLING_RATE", "2")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SNAKEPIT_SAMPLING_RATE") && e.contains("0.0 to 1.0"),
        "{e}"
    );
}
