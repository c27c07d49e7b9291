//! Sinks selected by a config file: built, attached with their event
//! patterns, shut down together; errors name the file and the sink's key.
//! README's sink example is loaded as written.

mod support;

use std::time::Duration;

use snakepit_core::config::SinkConfig;
use snakepit_core::{builtin, Config, Value};
use snakepit_sinks::otel::OtelSink;
use snakepit_sinks::prometheus::PrometheusSink;
use snakepit_sinks::{telemetry_from_config, SinkKind, SinkSet};
use support::otlp::OtlpReceiver;

fn load(text: &str) -> Config {
    Config::from_toml(text, "snakepit.toml").unwrap()
}

#[test]
fn every_configured_sink_is_attached_with_its_patterns() {
    let receiver = OtlpReceiver::start();
    let config = load(&format!(
        r#"
        [telemetry]
        log_level = "warning"

        [[sinks]]
        kind = "log"
        events = ["pool.*"]

        [[sinks]]
        kind = "prometheus"
        listen = "127.0.0.1:0"
        events = ["pool.*", "python.call.*"]

        [[sinks]]
        kind = "otel"
        endpoint = "{}"
        service_name = "from-config"
        export_interval = "20ms"
        "#,
        receiver.endpoint()
    ));
    // The duration dialect: the OTel sink exports every 20ms, no warning.
    assert!(
        matches!(&config.sinks[2], SinkConfig::Otel(o) if o.export_interval == Duration::from_millis(20)),
        "{:?}",
        config.sinks[2]
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let t = telemetry_from_config(&config);
    assert_eq!(
        t.log().levels().level,
        snakepit_core::LogLevel::Warning,
        "log levels come from [telemetry]"
    );
    let sinks = SinkSet::from_config(&config, &t).unwrap();
    assert_eq!(
        sinks.ids(),
        ["sinks[0].log", "sinks[1].prometheus", "sinks[2].otel"]
    );
    // Each built sink with its id and kind, looked up by id as its type or
    // by kind.
    let kinds: Vec<(&str, SinkKind)> = sinks.iter().map(|b| (b.id(), b.kind())).collect();
    assert_eq!(
        kinds,
        [
            ("sinks[0].log", SinkKind::Log),
            ("sinks[1].prometheus", SinkKind::Prometheus),
            ("sinks[2].otel", SinkKind::Otel)
        ]
    );
    let prometheus = sinks.get::<PrometheusSink>("sinks[1].prometheus").unwrap();
    assert!(prometheus.local_addr().is_some());
    assert_eq!(prometheus.local_addr(), sinks.prometheus_addr());
    assert!(
        sinks.get::<OtelSink>("sinks[1].prometheus").is_none(),
        "a sink of another type"
    );
    assert!(sinks.get::<PrometheusSink>("sinks[3].prometheus").is_none());
    let otel: Vec<&str> = sinks
        .sinks_of_kind(SinkKind::Otel)
        .map(|b| b.id())
        .collect();
    assert_eq!(otel, ["sinks[2].otel"]);
    assert!(sinks
        .sinks_of_kind(SinkKind::Otel)
        .all(|b| b.downcast::<OtelSink>().is_some()));
    assert_eq!(sinks.sinks_of_kind(SinkKind::Plugin).count(), 0);
    let log_events = &t
        .list()
        .into_iter()
        .find(|h| h.id == "sinks[0].log")
        .unwrap()
        .events;
    assert!(
        log_events.iter().all(|e| e.starts_with("snakepit.pool.")),
        "{log_events:?}"
    );

    t.execute(
        builtin::POOL_STATUS,
        &[("queue_depth", Value::Int(9))],
        &[("pool_name", "p".into())],
    );
    // Not in the Prometheus sink's patterns: no series.
    t.execute(
        builtin::GRPC_CALL_EXCEPTION,
        &[("duration", Value::Int(1))],
        &[("tool", "x".into()), ("error_type", "timeout".into())],
    );
    let family = t.catalog().span_family("snakepit.python.call").unwrap();
    t.span(family, &[("command", "predict".into())], || ());

    let addr = sinks.prometheus_addr().unwrap();
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        text.contains(r#"snakepit_pool_status_queue_depth{pool_name="p"} 9"#),
        "{text}"
    );
    assert!(
        !text.contains("snakepit_grpc_call_exception_total{"),
        "{text}"
    );
    assert!(
        text.contains("snakepit_python_call_stop_duration_seconds_count{command=\"predict\"} 1"),
        "{text}"
    );

    sinks.shutdown(Duration::from_secs(5)).unwrap();
    let spans = receiver.wait_spans(1, Duration::from_secs(2));
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].0, "from-config");
    assert_eq!(spans[0].1.name, "python.call");
    assert!(t.list().is_empty(), "shutdown detaches every sink");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener stopped"
    );
}

#[test]
fn build_errors_name_the_sink_and_undo_what_was_attached() {
    let t = snakepit_telemetry::Telemetry::new();
    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = load(&format!(
        "[[sinks]]\nkind = \"log\"\n\n[[sinks]]\nkind = \"prometheus\"\nlisten = \"{}\"\n",
        busy.local_addr().unwrap()
    ));
    let e = SinkSet::from_config(&config, &t).unwrap_err().to_string();
    assert!(
        e.starts_with("snakepit.toml, line 4: sinks[1] (prometheus)"),
        "{e}"
    );
    assert!(e.contains(&busy.local_addr().unwrap().to_string()), "{e}");
    assert!(t.list().is_empty(), "the log sink was detached again");

    // Patterns that match no event.
    let config = load("[[sinks]]\nkind = \"log\"\nevents = [\"nothing.here\"]\n");
    let e = SinkSet::from_config(&config, &t).unwrap_err().to_string();
    assert!(
        e.starts_with("snakepit.toml, line 1: sinks[0].events"),
        "{e}"
    );

    // A plugin that does not exist.
    let config = load("[[sinks]]\nkind = \"plugin\"\npath = \"/nonexistent/libnope.so\"\n");
    let e = SinkSet::from_config(&config, &t).unwrap_err().to_string();
    assert!(
        e.starts_with("snakepit.toml, line 1: sinks[0] (plugin)")
            && e.contains("/nonexistent/libnope.so"),
        "{e}"
    );

    // A config made in code names no file.
    let mut config = config;
    config.source = None;
    let e = SinkSet::from_config(&config, &t).unwrap_err().to_string();
    assert!(e.starts_with("sinks[0] (plugin)"), "{e}");
}

#[test]
fn config_file_errors_name_file_key_and_allowed_values() {
    let err = |text: &str| {
        Config::from_toml(text, "conf/sinks.toml")
            .unwrap_err()
            .to_string()
    };
    let e = err("[[sinks]]\nkind = \"prometheus\"\nlisten = \"nowhere\"\n");
    assert!(
        e.starts_with("conf/sinks.toml:") && e.contains("sinks[0].listen"),
        "{e}"
    );
    let e = err("[[sinks]]\nkind = \"otel\"\nendpoint = \"collector\"\n");
    assert!(
        e.contains("sinks[0].endpoint") && e.contains("http://host:port"),
        "{e}"
    );
    let e = err("[[sinks]]\nkind = \"statsd\"\n");
    for kind in ["log", "prometheus", "otel", "plugin"] {
        assert!(e.contains(kind) && e.contains("sinks[0].kind"), "{e}");
    }
    let e = err("[[sinks]]\nkind = \"log\"\nlevel = \"debug\"\n");
    assert!(e.contains("sinks[0].level") || e.contains("`level`"), "{e}");
}

/// The ```toml block of README.md that configures sinks.
fn readme_sinks_toml() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(toml, _)| toml))
        .find(|toml| toml.contains("[[sinks]]") && toml.contains("kind = \"plugin\""))
        .expect("README.md has a ```toml block with a plugin sink")
        .to_string()
}

#[test]
fn the_readme_sink_example_loads_and_its_plugin_writes_events() {
    let text = readme_sinks_toml();
    let mut config = Config::from_toml(&text, "README.md").unwrap();
    // Only what depends on this machine changes: where the library is,
    // where relative files go, which ports are free.
    let out = tempfile::tempdir().unwrap();
    let receiver = support::otlp::OtlpReceiver::start();
    let mut plugins = 0;
    for sink in &mut config.sinks {
        match sink {
            SinkConfig::Plugin(p) => {
                plugins += 1;
                let built = snakepit_testkit::plugins::plugin("jsonl");
                assert_eq!(
                    p.path.file_name(),
                    built.file_name(),
                    "README names a library that the jsonl plugin crate does not build"
                );
                p.path = built;
                for value in p.config.as_object_mut().unwrap().values_mut() {
                    if let Some(file) = value.as_str() {
                        *value = out.path().join(file).to_str().unwrap().into();
                    }
                }
            }
            SinkConfig::Prometheus(p) => p.listen = "127.0.0.1:0".parse().unwrap(),
            SinkConfig::Otel(o) => o.endpoint = receiver.endpoint(),
            SinkConfig::Log(_) => {}
        }
    }
    assert_eq!(plugins, 1);
    let t = telemetry_from_config(&config);
    let sinks = SinkSet::from_config(&config, &t)
        .unwrap_or_else(|e| panic!("README's sink example does not build: {e}"));
    t.execute(
        builtin::POOL_STATUS,
        &[("queue_depth", Value::Int(4))],
        &[("pool_name", "readme".into())],
    );
    sinks.shutdown(Duration::from_secs(5)).unwrap();
    let written: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let lines = std::fs::read_to_string(&written[0]).unwrap();
    assert!(
        lines.contains("\"name\":\"snakepit.pool.status\"") && lines.contains("\"queue_depth\":4"),
        "{lines}"
    );
}
