//! Prometheus sinks without a listener (`listen = "none"`): several coexist
//! in one process, an empty `listen` is refused with a hint, and a sink can
//! record into a recorder the app hands it.

use std::sync::Arc;
use std::time::Duration;

use snakepit_core::config::{PrometheusListen, PrometheusRecorderChoice, SinkConfig};
use snakepit_core::{builtin, Config, Value};
use snakepit_sinks::prometheus::metrics_exporter_prometheus::PrometheusBuilder;
use snakepit_sinks::prometheus::{PrometheusError, PrometheusSink};
use snakepit_sinks::{telemetry_from_config, SinkSet};
use snakepit_telemetry::Telemetry;

const TWO_SINKS: &str = r#"
[[sinks]]
kind = "prometheus"
listen = "none"

[[sinks]]
kind = "prometheus"
listen = "none"
"#;

#[test]
fn two_sinks_without_listeners_coexist_and_each_records() {
    let config = Config::from_toml(TWO_SINKS, "two.toml").unwrap();
    for sink in &config.sinks {
        match sink {
            SinkConfig::Prometheus(p) => {
                assert_eq!(p.listen, PrometheusListen::None);
                assert_eq!(p.recorder, PrometheusRecorderChoice::Own);
            }
            other => panic!("{other:?}"),
        }
    }
    let t = telemetry_from_config(&config);
    // A second sink no longer fails with "address in use".
    let sinks = SinkSet::from_config(&config, &t).unwrap();
    assert_eq!(sinks.prometheus_addr(), None);
    t.execute(
        builtin::POOL_STATUS,
        &[("queue_depth", Value::Int(6))],
        &[("pool_name", "default".into())],
    );
    for id in ["sinks[0].prometheus", "sinks[1].prometheus"] {
        let sink = sinks.get::<PrometheusSink>(id).unwrap();
        assert_eq!(sink.local_addr(), None);
        let text = sink.render();
        assert!(
            text.contains(r#"snakepit_pool_status_queue_depth{pool_name="default"} 6"#),
            "{id}: {text}"
        );
    }
    sinks.shutdown(Duration::from_secs(2)).unwrap();
}

#[test]
fn an_empty_listen_is_refused_with_a_hint_to_none() {
    let e = Config::from_toml(
        "[[sinks]]\nkind = \"prometheus\"\nlisten = \"\"\n",
        "conf/app.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("conf/app.toml") && e.contains("sinks[0].listen") && e.contains("\"none\""),
        "{e}"
    );
    // A global recorder has no exposition for a listener to serve.
    let e = Config::from_toml(
        "[[sinks]]\nkind = \"prometheus\"\nrecorder = \"global\"\n",
        "conf/app.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("sinks[0].listen") && e.contains("listen = \"none\""),
        "{e}"
    );
    let e = Config::from_toml(
        "[[sinks]]\nkind = \"prometheus\"\nrecorder = \"app\"\nlisten = \"none\"\n",
        "conf/app.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("sinks[0].recorder") && e.contains("own") && e.contains("global"),
        "{e}"
    );
    // The environment override takes "none" too, and names a bad value.
    let mut config = Config::from_toml("[[sinks]]\nkind = \"prometheus\"\n", "x.toml").unwrap();
    config
        .apply_env([("SNAKEPIT_PROMETHEUS_LISTEN", "none")])
        .unwrap();
    match &config.sinks[0] {
        SinkConfig::Prometheus(p) => assert_eq!(p.listen, PrometheusListen::None),
        other => panic!("{other:?}"),
    }
    let e = config
        .apply_env([("SNAKEPIT_PROMETHEUS_LISTEN", "")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SNAKEPIT_PROMETHEUS_LISTEN") && e.contains("\"none\""),
        "{e}"
    );
}

#[test]
fn a_sink_records_into_a_recorder_the_app_hands_it() {
    let t = Telemetry::new();
    let builder = PrometheusSink::builder();
    let recorder = Arc::new(
        builder
            .configure_exporter(t.catalog(), PrometheusBuilder::new())
            .unwrap()
            .build_recorder(),
    );
    let handle = recorder.handle();
    let sink = Arc::new(
        builder
            .into_recorder(recorder.clone())
            .build(t.catalog())
            .unwrap(),
    );
    t.attach_sink("prometheus", &[], sink.clone()).unwrap();
    for ms in [10, 20] {
        t.execute(
            builtin::PYTHON_CALL_STOP,
            &[("duration", Value::Int(ms * 1_000_000))],
            &[("command", "predict".into())],
        );
    }
    assert_eq!(sink.render(), "");
    let text = sink.render_with(&handle);
    assert!(
        text.contains(r#"snakepit_python_call_stop_duration_seconds_count{command="predict"} 2"#),
        "{text}"
    );
    // Such a sink has no exposition for a listener to serve.
    let e = PrometheusSink::builder()
        .into_recorder(recorder)
        .listen("127.0.0.1:0".parse().unwrap())
        .build(t.catalog())
        .unwrap_err();
    assert!(
        matches!(e, PrometheusError::ListenerWithoutRegistry { .. })
            && e.to_string().contains("listen = \"none\""),
        "{e}"
    );
    snakepit_core::Sink::shutdown(&*sink, Duration::from_secs(2)).unwrap();
}
