//! One config file: every duration written as `"5s"`, the deprecated
//! integer-millisecond keys read with a warning, and the `[pool]` /
//! `[[pools]]` tables kept for snakepit-pool.

use std::time::Duration;

use snakepit_core::config::{OtelSinkConfig, SinkConfig};
use snakepit_core::{Config, ConfigError};

fn otel(config: &Config, index: usize) -> &OtelSinkConfig {
    match &config.sinks[index] {
        SinkConfig::Otel(o) => o,
        other => panic!("{other:?}"),
    }
}

fn err(text: &str) -> String {
    match Config::from_toml(text, "conf/snakepit.toml").unwrap_err() {
        e @ ConfigError::Invalid { .. } => e.to_string(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn otel_durations_are_written_with_a_unit() {
    let c = Config::from_toml(
        "[[sinks]]\nkind = \"otel\"\nexport_interval = \"250ms\"\nexport_timeout = \"1m 30s\"\n",
        "snakepit.toml",
    )
    .unwrap();
    let o = otel(&c, 0);
    assert_eq!(o.export_interval, Duration::from_millis(250));
    assert_eq!(o.export_timeout, Duration::from_secs(90));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn the_old_millisecond_keys_are_read_with_a_warning_naming_the_replacement() {
    let text = "[[sinks]]\nkind = \"log\"\n\n[[sinks]]\nkind = \"otel\"\nexport_interval_ms = 40\nexport_timeout_ms = 3000\n";
    let c = Config::from_toml(text, "conf/snakepit.toml").unwrap();
    let o = otel(&c, 1);
    assert_eq!(o.export_interval, Duration::from_millis(40));
    assert_eq!(o.export_timeout, Duration::from_secs(3));
    let keys: Vec<(&str, Option<usize>, &str)> = c
        .warnings
        .iter()
        .map(|w| (w.key.as_str(), w.line, w.replacement.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (
                "sinks[1].export_interval_ms",
                Some(6),
                "export_interval = \"40ms\""
            ),
            (
                "sinks[1].export_timeout_ms",
                Some(7),
                "export_timeout = \"3000ms\""
            ),
        ]
    );
    let shown = c.warnings[0].to_string();
    assert_eq!(
        shown,
        "conf/snakepit.toml, line 6: `sinks[1].export_interval_ms` is deprecated; \
         write `export_interval = \"40ms\"` instead"
    );
}

#[test]
fn bad_durations_name_the_key_the_line_and_the_dialect() {
    // An integer under a new key: the unit would be a guess.
    let e = err("[[sinks]]\nkind = \"otel\"\nexport_interval = 1000\n");
    assert!(e.contains("sinks[0].export_interval"), "{e}");
    assert!(e.contains("(line 3)") && e.contains("\"1s\""), "{e}");
    // A string that is no duration.
    let e = err("[[sinks]]\nkind = \"otel\"\nexport_timeout = \"soon\"\n");
    assert!(e.contains("sinks[0].export_timeout"), "{e}");
    assert!(e.contains("`soon` is not a duration"), "{e}");
    // Zero.
    let e = err("[[sinks]]\nkind = \"otel\"\nexport_interval = \"0s\"\n");
    assert!(
        e.contains("sinks[0].export_interval") && e.contains("at least 1ms"),
        "{e}"
    );
    // Zero under a deprecated key: named by the key written.
    let e = err("[[sinks]]\nkind = \"otel\"\nexport_interval_ms = 0\n");
    assert!(
        e.contains("sinks[0].export_interval_ms") && e.contains("at least 1ms"),
        "{e}"
    );
    assert!(e.contains("(line 3)"), "{e}");
    // A deprecated key with a string.
    let e = err("[[sinks]]\nkind = \"otel\"\nexport_timeout_ms = \"5s\"\n");
    assert!(e.contains("sinks[0].export_timeout_ms"), "{e}");
    assert!(
        e.contains("export_timeout = \\\"1s\\\"") || e.contains("export_timeout = \"1s\""),
        "{e}"
    );
    // Old and new key together.
    let e = err("[[sinks]]\nkind = \"otel\"\nexport_interval = \"1s\"\nexport_interval_ms = 5\n");
    assert!(
        e.contains("duplicate field") && e.contains("export_interval"),
        "{e}"
    );
}

#[test]
fn pool_tables_are_kept_as_written_with_their_text() {
    let text = "[telemetry]\nlog_level = \"debug\"\n\n[pool]\nadapter = \"a.b:C\"\nworkers = 3\nqueue_timeout = \"2s\"\n";
    let c = Config::from_toml(text, "snakepit.toml").unwrap();
    let pool = c.pool.as_ref().unwrap();
    assert_eq!(pool["workers"].as_integer(), Some(3));
    assert_eq!(pool["queue_timeout"].as_str(), Some("2s"));
    assert!(c.pools.is_empty());
    assert_eq!(c.source.as_ref().unwrap().text, text);

    let c = Config::from_toml(
        "[[pools]]\npool_name = \"a\"\n\n[[pools]]\npool_name = \"b\"\n",
        "snakepit.toml",
    )
    .unwrap();
    assert_eq!(c.pools.len(), 2);
    assert!(c.pool.is_none());
}

#[test]
fn pool_and_pools_together_is_an_error() {
    let e = err("[pool]\nworkers = 1\n\n[[pools]]\npool_name = \"a\"\n");
    assert!(e.starts_with("conf/snakepit.toml"), "{e}");
    assert!(e.contains("key `pools`"), "{e}");
    assert!(e.contains("[pool]") && e.contains("[[pools]]"), "{e}");
    assert!(e.contains("(line 4)"), "{e}");
}
