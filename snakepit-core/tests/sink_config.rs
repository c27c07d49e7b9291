//! Sink settings: defaults, errors naming file, key and allowed values, and
//! the `SNAKEPIT_PROMETHEUS_*` / `SNAKEPIT_OTEL_*` environment overrides.

use snakepit_core::{Config, SinkConfig};

fn err(text: &str) -> String {
    Config::from_toml(text, "conf/sinks.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn sink_defaults_are_loopback_and_base_units() {
    let c = Config::from_toml(
        "[[sinks]]\nkind = \"prometheus\"\n[[sinks]]\nkind = \"otel\"\n[[sinks]]\nkind = \"log\"\nevents = [\"pool.*\"]\n",
        "s.toml",
    )
    .unwrap();
    let SinkConfig::Prometheus(p) = &c.sinks[0] else {
        panic!("{:?}", c.sinks[0])
    };
    assert_eq!(p.listen.to_string(), "127.0.0.1:9568");
    assert!(p.base_units);
    assert_eq!(p.max_series_per_metric, 1000);
    let SinkConfig::Otel(o) = &c.sinks[1] else {
        panic!("{:?}", c.sinks[1])
    };
    assert_eq!(o.endpoint, "http://127.0.0.1:4318");
    assert_eq!(o.batch_size, 512);
    assert_eq!(o.export_interval, std::time::Duration::from_secs(1));
    assert!(o.max_open_spans > 0 && o.export_timeout > std::time::Duration::ZERO);
    let SinkConfig::Log(l) = &c.sinks[2] else {
        panic!("{:?}", c.sinks[2])
    };
    assert_eq!(l.events.len(), 1);
}

#[test]
fn zero_sizes_name_the_key() {
    for key in ["batch_size", "max_open_spans", "queue_capacity"] {
        let e = err(&format!("[[sinks]]\nkind = \"otel\"\n{key} = 0\n"));
        assert!(e.starts_with("conf/sinks.toml:"), "{e}");
        assert!(e.contains(&format!("sinks[0].{key}")), "{e}");
        assert!(e.contains("at least 1"), "{e}");
    }
    let e = err("[[sinks]]\nkind = \"prometheus\"\nmax_series_per_metric = 0\n");
    assert!(e.contains("sinks[0].max_series_per_metric"), "{e}");
}

#[test]
fn unknown_sink_keys_and_bad_types_are_rejected() {
    let e = err("[[sinks]]\nkind = \"otel\"\nbatch = 3\n");
    assert!(e.contains("sinks[0]") && e.contains("batch"), "{e}");
    assert!(e.contains("batch_size"), "lists the allowed keys: {e}");
    let e = err("[[sinks]]\nkind = \"prometheus\"\nbase_units = \"yes\"\n");
    assert!(e.contains("sinks[0].base_units"), "{e}");
    let e = err("[[sinks]]\nkind = \"log\"\nevents = [\"Bad Pattern\"]\n");
    assert!(
        e.contains("sinks[0].events") && e.contains("Bad Pattern"),
        "{e}"
    );
}

#[test]
fn env_overrides_set_every_sink_of_their_kind() {
    let mut c = Config::from_toml(
        "[[sinks]]\nkind = \"prometheus\"\n[[sinks]]\nkind = \"otel\"\n",
        "s.toml",
    )
    .unwrap();
    c.apply_env([
        ("SNAKEPIT_PROMETHEUS_LISTEN", "127.0.0.1:9999"),
        ("SNAKEPIT_OTEL_ENDPOINT", "http://127.0.0.1:4999"),
        ("SNAKEPIT_OTEL_SERVICE_NAME", "svc"),
        ("SNAKEPIT_OTEL_SAMPLE_RATIO", "0.25"),
    ])
    .unwrap();
    match (&c.sinks[0], &c.sinks[1]) {
        (SinkConfig::Prometheus(p), SinkConfig::Otel(o)) => {
            assert_eq!(p.listen.addr().map(|a| a.port()), Some(9999));
            assert_eq!(o.endpoint, "http://127.0.0.1:4999");
            assert_eq!(o.service_name, "svc");
            assert_eq!(o.sample_ratio, 0.25);
        }
        other => panic!("{other:?}"),
    }
    // A bad value is refused with the variable's name and what is allowed.
    for (var, value, allowed) in [
        ("SNAKEPIT_PROMETHEUS_LISTEN", "localhost", "127.0.0.1:9568"),
        ("SNAKEPIT_OTEL_ENDPOINT", "collector:4318", "http"),
        ("SNAKEPIT_OTEL_SAMPLE_RATIO", "half", "0.0 to 1.0"),
    ] {
        let e = c.apply_env([(var, value)]).unwrap_err().to_string();
        assert!(e.contains(var) && e.contains(allowed), "{e}");
    }
}
