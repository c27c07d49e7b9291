//! Bad config values give errors naming the key; read from a file, also the
//! file and the line, and out-of-range values the allowed range.

use std::path::{Path, PathBuf};
use std::time::Duration;

use snakepit_pool::{Pool, PoolConfig, PoolError};
use snakepit_telemetry::Telemetry;

fn key_of(err: PoolError) -> String {
    match err {
        PoolError::Config { key, .. } => key,
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// File, line and key of a config error, and its message.
fn parts(err: PoolError) -> (Option<PathBuf>, Option<usize>, String, String) {
    let text = err.to_string();
    match err {
        PoolError::Config {
            file, line, key, ..
        } => (file, line, key, text),
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

/// Writes `text` to `pool.toml` in a temp dir and loads it.
fn load(text: &str) -> (tempfile::TempDir, PathBuf, Result<PoolConfig, PoolError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    std::fs::write(&path, text).unwrap();
    let result = PoolConfig::load(&path);
    (dir, path, result)
}

fn assert_located(text: &str, key: &str, line: usize, says: &[&str]) {
    let (_dir, path, result) = load(text);
    let (file, got_line, got_key, message) = parts(result.unwrap_err());
    assert_eq!(file.as_deref(), Some(path.as_path()), "{message}");
    assert_eq!(got_key, key, "{message}");
    assert_eq!(got_line, Some(line), "{message}");
    let prefix = format!("{}, line {line}: ", path.display());
    assert!(message.starts_with(&prefix), "{message}");
    assert!(message.contains(&format!("`{key}`")), "{message}");
    for s in says {
        assert!(message.contains(s), "{message} should say {s:?}");
    }
}

const HEAD: &str = "pool_name = \"ml\"\nadapter = \"a.b:C\"\n";

#[test]
fn a_file_is_loaded_and_validated() {
    let (_dir, _path, result) = load(&format!("{HEAD}workers = 3\nstartup_timeout = \"2s\"\n"));
    let cfg = result.unwrap();
    assert_eq!(cfg.workers, 3);
    assert_eq!(cfg.startup_timeout, Duration::from_secs(2));
}

#[test]
fn errors_from_a_file_name_the_file_the_line_the_key_and_the_range() {
    assert_located(
        &format!("{HEAD}\nworkers = 100000\n"),
        "workers",
        4,
        &["100000 is out of range", "allowed 1 to 1024"],
    );
    assert_located(
        &format!("{HEAD}startup_timeout = \"1ns\"\n"),
        "startup_timeout",
        3,
        &["1ns is out of range", "allowed 100ms to 1h"],
    );
    assert_located(
        &format!("{HEAD}grace_period = \"2h\"\n"),
        "grace_period",
        3,
        &["allowed 0s to 1h"],
    );
    assert_located(
        &format!("{HEAD}concurrency_per_worker = 0\n"),
        "concurrency_per_worker",
        3,
        &["allowed 1 to 10000"],
    );
    // Malformed TOML: the line, and the key written on it.
    assert_located(
        &format!("{HEAD}workers = = 2\n"),
        "workers",
        3,
        &["malformed TOML"],
    );
    // A type error and an unknown key.
    assert_located(&format!("{HEAD}workers = \"many\"\n"), "workers", 3, &[]);
    assert_located(
        &format!("{HEAD}\nwokers = 2\n"),
        "wokers",
        4,
        &["unknown field"],
    );
    // Nested keys.
    assert_located(
        &format!("{HEAD}[env]\nOK = \"1\"\n\"A=B\" = \"x\"\n"),
        "env.A=B",
        5,
        &["environment variable name"],
    );
    assert_located(
        "pool_name = \"ext\"\n[[external_workers]]\naddress = \"127.0.0.1:1\"\n\n\
         [[external_workers]]\naddress = \"nowhere\"\n",
        "external_workers[1].address",
        6,
        &["host:port"],
    );
}

#[test]
fn an_unreadable_file_is_named() {
    let path = Path::new("/nonexistent/pool.toml");
    let (file, line, key, message) = parts(PoolConfig::load(path).unwrap_err());
    assert_eq!(file.as_deref(), Some(path));
    assert_eq!((line, key.as_str()), (None, "<file>"));
    assert!(
        message.starts_with("/nonexistent/pool.toml: ") && message.contains("cannot read"),
        "{message}"
    );
}

#[test]
fn text_without_a_file_still_gives_key_and_line() {
    let (file, line, key, message) =
        parts(PoolConfig::from_toml_str("pool_name = \"x\"\nworkers = [\n").unwrap_err());
    assert_eq!(file, None);
    assert!(line.is_some(), "{message}");
    assert_ne!(key, ".", "{message}");
    let (_, line, key, _) = parts(PoolConfig::from_toml_str("\n\nwokers = 2").unwrap_err());
    assert_eq!((line, key.as_str()), (Some(3), "wokers"));
}

#[test]
fn built_in_code_the_bounds_hold_too() {
    let good = PoolConfig::new("a.b:C");
    for (cfg, key, range) in [
        (good.clone().workers(1025), "workers", "allowed 1 to 1024"),
        (
            good.clone().startup_timeout(Duration::from_nanos(1)),
            "startup_timeout",
            "allowed 100ms to 1h",
        ),
        (
            good.clone().call_timeout(Duration::from_secs(2 * 86_400)),
            "call_timeout",
            "allowed 1ms to 1day",
        ),
        (
            good.clone().max_queue(2_000_000),
            "max_queue",
            "allowed 0 to 1000000",
        ),
        (
            good.clone().max_message_bytes(100),
            "max_message_bytes",
            "allowed 1024 to 1073741824",
        ),
        (
            good.clone()
                .max_message_bytes(1 << 20)
                .shm_threshold_bytes(2 << 20),
            "shm_threshold_bytes",
            "above max_message_bytes (1048576)",
        ),
        (
            good.clone().shm_max_bytes(1000),
            "shm_max_bytes",
            "below shm_threshold_bytes (65536)",
        ),
    ] {
        let (file, line, got, message) = parts(cfg.validate().unwrap_err());
        assert_eq!((file, line, got.as_str()), (None, None, key), "{message}");
        assert!(message.contains(range), "{message}");
    }
    good.clone().workers(1024).validate().unwrap();
    // Shared memory off: the cap and the message limit do not matter.
    good.clone()
        .shm_threshold_bytes(0)
        .shm_max_bytes(0)
        .validate()
        .unwrap();
    good.startup_timeout(Duration::from_millis(100))
        .validate()
        .unwrap();
}
