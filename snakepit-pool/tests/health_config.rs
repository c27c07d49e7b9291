//! The health check and recycling keys: defaults, TOML with human
//! durations, and errors that name the bad key.

use std::time::Duration;

use snakepit_pool::{PoolConfig, PoolError};

#[test]
fn defaults_check_health_and_never_recycle() {
    let c = PoolConfig::default();
    assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(c.heartbeat_timeout, Duration::from_secs(10));
    assert_eq!(c.stuck_call_grace, Duration::from_secs(10));
    assert_eq!(c.max_calls_per_worker, None);
    assert_eq!(c.max_worker_rss, None);
    assert_eq!(c.max_worker_age, None);
}

#[test]
fn toml_sets_every_key() {
    let c = PoolConfig::from_toml_str(
        r#"
        adapter = "a.b:C"
        heartbeat_interval = "250ms"
        heartbeat_timeout = "2s"
        stuck_call_grace = "3s"
        max_calls_per_worker = 1000
        max_worker_rss = 1_500_000_000
        max_worker_age = "1h"
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(c.heartbeat_timeout, Duration::from_secs(2));
    assert_eq!(c.stuck_call_grace, Duration::from_secs(3));
    assert_eq!(c.max_calls_per_worker, Some(1000));
    assert_eq!(c.max_worker_rss, Some(1_500_000_000));
    assert_eq!(c.max_worker_age, Some(Duration::from_secs(3600)));

    let err = PoolConfig::from_toml_str("max_worker_age = \"someday\"").unwrap_err();
    assert!(
        matches!(&err, PoolError::Config { key, .. } if key == "max_worker_age"),
        "{err}"
    );
    let c = PoolConfig::from_toml_str("max_worker_rss = \"512MiB\"").unwrap();
    assert_eq!(c.max_worker_rss, Some(512 * 1024 * 1024));
    let c = PoolConfig::from_toml_str("max_worker_rss = \"1.5GB\"").unwrap();
    assert_eq!(c.max_worker_rss, Some(1_500_000_000));
    let err = PoolConfig::from_toml_str("max_worker_rss = \"1.5TB\"").unwrap_err();
    assert!(
        matches!(&err, PoolError::Config { key, .. } if key == "max_worker_rss"),
        "{err}"
    );
    assert!(err.to_string().contains("unknown unit"), "{err}");
}

#[test]
fn bad_health_values_name_their_key_and_the_limit() {
    let good = PoolConfig::new("snakepit_bridge.adapters.showcase:ShowcaseAdapter");
    let cases: Vec<(PoolConfig, &str, &str)> = vec![
        (
            good.clone()
                .heartbeat(Duration::ZERO, Duration::from_secs(1)),
            "heartbeat_interval",
            "longer than 0",
        ),
        (
            good.clone()
                .heartbeat(Duration::from_secs(1), Duration::ZERO),
            "heartbeat_timeout",
            "longer than 0",
        ),
        (
            good.clone().stuck_call_grace(Duration::ZERO),
            "stuck_call_grace",
            "longer than 0",
        ),
        (
            good.clone().max_calls_per_worker(0),
            "max_calls_per_worker",
            "at least 1",
        ),
        (
            good.clone().max_worker_rss(1_000_000),
            "max_worker_rss",
            "16777216",
        ),
        (
            good.clone().max_worker_age(Duration::ZERO),
            "max_worker_age",
            "longer than 0",
        ),
    ];
    for (cfg, key, limit) in cases {
        let err = cfg.validate().unwrap_err();
        let message = err.to_string();
        assert!(message.contains(key), "{message}");
        assert!(message.contains(limit), "{message}");
        assert!(matches!(err, PoolError::Config { key: k, .. } if k == key));
    }
}
