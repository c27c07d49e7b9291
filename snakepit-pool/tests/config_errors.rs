//! Bad config values give errors naming the key.

use std::time::Duration;

use snakepit_pool::{Pool, PoolConfig, PoolError};
use snakepit_telemetry::Telemetry;

fn key_of(err: PoolError) -> String {
    match err {
        PoolError::Config { key, .. } => key,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn each_bad_value_names_its_key() {
    let good = PoolConfig::new("snakepit_bridge.adapters.showcase:ShowcaseAdapter");
    good.validate().unwrap();
    let cases: Vec<(PoolConfig, &str)> = vec![
        (good.clone().pool_name(""), "pool_name"),
        (good.clone().pool_name("has space"), "pool_name"),
        (good.clone().pool_name("x".repeat(49)), "pool_name"),
        (good.clone().workers(0), "workers"),
        (good.clone().adapter("no_colon"), "adapter"),
        (
            good.clone().concurrency_per_worker(0),
            "concurrency_per_worker",
        ),
        (good.clone().queue_timeout(Duration::ZERO), "queue_timeout"),
        (
            good.clone().startup_timeout(Duration::ZERO),
            "startup_timeout",
        ),
        (
            good.clone()
                .restart_backoff(Duration::from_secs(10), Duration::from_secs(1), 3),
            "restart_backoff_base",
        ),
        (good.clone().env("A=B", "x"), "env.A=B"),
        (good.clone().working_dir("/nonexistent/dir"), "working_dir"),
        (
            PoolConfig::external([]).external_worker("not an address", None),
            "external_workers[0].address",
        ),
    ];
    for (cfg, key) in cases {
        let err = cfg.validate().unwrap_err();
        let message = err.to_string();
        assert!(message.contains(key), "{message}");
        assert_eq!(key_of(err), key);
    }
}

#[test]
fn toml_is_parsed_with_human_durations_and_errors_name_the_key() {
    let cfg = PoolConfig::from_toml_str(
        r#"
        pool_name = "ml"
        adapter = "a.b:C"
        workers = 4
        queue_timeout = "250ms"
        env = { OMP_NUM_THREADS = "1" }
        [[external_workers]]
        address = "127.0.0.1:50051"
        token = "t"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.workers, 4);
    assert_eq!(cfg.queue_timeout, Duration::from_millis(250));
    assert_eq!(cfg.env["OMP_NUM_THREADS"], "1");
    assert_eq!(cfg.external_workers[0].token.as_deref(), Some("t"));

    let err = PoolConfig::from_toml_str("workers = \"many\"").unwrap_err();
    assert_eq!(key_of(err), "workers");
    let err = PoolConfig::from_toml_str("queue_timeout = \"soon\"").unwrap_err();
    assert_eq!(key_of(err), "queue_timeout");
    let err = PoolConfig::from_toml_str("wokers = 2").unwrap_err();
    assert!(err.to_string().contains("wokers"), "{err}");
}

#[tokio::test]
async fn start_refuses_a_bad_config_before_spawning() {
    let err = Pool::start(Telemetry::new(), PoolConfig::default())
        .await
        .unwrap_err();
    assert_eq!(key_of(err), "adapter");
}
