//! Which interpreter a pool runs: the config's `python`, then
//! `SNAKEPIT_PYTHON`, then `$VIRTUAL_ENV/bin/python`, then `python3`; and
//! the startup error of an interpreter without `snakepit_bridge`. Real
//! worker processes and a real empty venv (`python3 -m venv`).
//!
//! These tests change this process's environment: each holds [`ENV`] while
//! it does.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{procfs, wait_gone, SHOWCASE};
use snakepit_pool::{CallOptions, Pool, PoolConfig, PoolError, PythonSource};
use snakepit_telemetry::Telemetry;

static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The workspace venv, which has snakepit_bridge (`cargo xtask setup`).
fn good_venv() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv");
    assert!(
        venv.join("bin/python").exists(),
        "{} is missing: run `cargo xtask setup`",
        venv.display()
    );
    venv.canonicalize().unwrap()
}

/// A new venv without any package (not even pip), in `dir`.
fn empty_venv(dir: &Path) -> PathBuf {
    let venv = dir.join("empty-venv");
    let status = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(status.success(), "python3 -m venv failed");
    venv
}

/// Sets the interpreter variables for the rest of the test (None: unset).
fn set_env(snakepit_python: Option<&Path>, virtual_env: Option<&Path>) {
    for (key, value) in [
        ("SNAKEPIT_PYTHON", snakepit_python),
        ("VIRTUAL_ENV", virtual_env),
    ] {
        match value {
            Some(v) => std::env::set_var(key, v),
            None => std::env::remove_var(key),
        }
    }
}

fn config(name: &str) -> PoolConfig {
    PoolConfig::new(SHOWCASE)
        .pool_name(name)
        .workers(1)
        .startup_timeout(Duration::from_secs(20))
        .grace_period(Duration::from_secs(2))
}

async fn start_error(config: PoolConfig) -> String {
    match Pool::start(Telemetry::new(), config).await {
        Err(e @ PoolError::Startup { .. }) => e.to_string(),
        Err(other) => panic!("expected a startup error, got {other:?}"),
        Ok(pool) => {
            pool.shutdown().await;
            panic!("the pool started with an interpreter that lacks snakepit_bridge")
        }
    }
}

/// The program each worker of `pool` runs (argv[0]).
fn worker_program(pool: &Pool) -> String {
    let pid = pool.worker_pids()[0];
    procfs::cmdline(pid).remove(0)
}

#[tokio::test]
async fn a_venv_without_the_package_says_how_to_install_it_naming_the_rule() {
    let _env = ENV.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let empty = empty_venv(dir.path());
    let empty_python = empty.join("bin/python");

    // Chosen by VIRTUAL_ENV.
    set_env(None, Some(&empty));
    assert_eq!(
        config("venv").resolve_python().source,
        PythonSource::VirtualEnv
    );
    let err = start_error(config("venv")).await;
    let expected = format!(
        "the interpreter {} (from VIRTUAL_ENV, the active venv) has no snakepit_bridge: \
         install it with `{} -m pip install ",
        empty_python.display(),
        empty_python.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(
        err.contains("No module named 'snakepit_bridge'"),
        "the worker's stderr is kept: {err}"
    );

    // Chosen by the config, whatever the environment says.
    set_env(Some(&good_venv().join("bin/python")), Some(&good_venv()));
    let err = start_error(config("cfg").python(&empty_python)).await;
    assert!(
        err.contains(&format!(
            "the interpreter {} (set by the pool config's `python`) has no snakepit_bridge",
            empty_python.display()
        )),
        "{err}"
    );

    // Chosen by SNAKEPIT_PYTHON, before VIRTUAL_ENV.
    set_env(Some(&empty_python), Some(&good_venv()));
    let err = start_error(config("sp")).await;
    assert!(
        err.contains(&format!(
            "the interpreter {} (from SNAKEPIT_PYTHON) has no snakepit_bridge",
            empty_python.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn an_active_venv_is_honoured_after_snakepit_python_and_before_python3() {
    let _env = ENV.lock().await;
    let venv = good_venv();
    set_env(None, Some(&venv));
    let pool = Pool::start(Telemetry::new(), config("active-venv"))
        .await
        .unwrap();
    let expected = venv.join("bin/python").display().to_string();
    assert_eq!(worker_program(&pool), expected);
    let out = pool
        .execute(
            "add",
            serde_json::json!({"a": 2, "b": 3}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.value, serde_json::json!(5));
    let pids = pool.worker_pids();
    pool.shutdown().await;
    assert!(wait_gone(&pids, Duration::from_secs(10)), "workers left");

    // Nothing set: python3 from PATH (the rule only; which python3 that is
    // depends on the machine).
    set_env(None, None);
    let default = config("none").resolve_python();
    assert_eq!(
        (default.path, default.source),
        (PathBuf::from("python3"), PythonSource::Default)
    );
}

#[test]
fn python_in_toml_is_the_config_rule_and_unset_is_none() {
    let set =
        PoolConfig::from_toml_str("adapter = \"a:B\"\npython = \"/opt/py/bin/python\"\n").unwrap();
    let resolved = set.resolve_python();
    assert_eq!(
        (resolved.path, resolved.source),
        (PathBuf::from("/opt/py/bin/python"), PythonSource::Config)
    );
    let unset = PoolConfig::from_toml_str("adapter = \"a:B\"\n").unwrap();
    assert_eq!(unset.python, None);
    assert_eq!(PoolConfig::default().python, None);
}
