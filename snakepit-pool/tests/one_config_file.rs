//! One snakepit.toml holds `[telemetry]`, `[[sinks]]` and the pools
//! (`[pool]`, or several `[[pools]]`): `Config::load` reads it once, the
//! sinks and the pools are built from it, and a bad pool value is named by
//! file, line and full key.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_core::{Config, LogLevel};
use snakepit_pool::{CallOptions, Pool, PoolConfig, PoolError};
use snakepit_sinks::{telemetry_from_config, SinkSet};

/// Writes `text` as `snakepit.toml` in `dir`.
fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("snakepit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The settings every test pool shares: the test interpreter, generous
/// startup, short shutdown.
fn pool_keys(name: &str, workers: usize) -> String {
    format!(
        "pool_name = \"{name}\"\nadapter = \"{SHOWCASE}\"\npython = '{}'\nworkers = {workers}\n\
         startup_timeout = \"20s\"\ngrace_period = \"2s\"\n",
        python().display()
    )
}

/// Starts a pool, serves one call, shuts it down and checks its workers
/// are gone.
async fn serve_one_call(pool: Pool) {
    let out = pool
        .execute("ping", json!({}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!({"ok": true}));
    let pids = pool.worker_pids();
    assert!(!pids.is_empty());
    pool.shutdown().await;
    assert!(wait_gone(&pids, Duration::from_secs(10)), "{pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_sinks_and_one_pool_load_from_one_file_and_serve_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &format!(
            "[telemetry]\nlog_level = \"warning\"\n\n\
             [[sinks]]\nkind = \"log\"\nevents = [\"pool.*\"]\n\n\
             [pool]\n{}queue_timeout = \"750ms\"\nmax_queue = 7\n",
            pool_keys("onefile", 1)
        ),
    );
    let config = Config::load(&path).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let telemetry = telemetry_from_config(&config);
    assert_eq!(telemetry.log().levels().level, LogLevel::Warning);
    let sinks = SinkSet::from_config(&config, &telemetry).unwrap();
    assert_eq!(sinks.ids(), ["sinks[0].log"]);

    let pools = PoolConfig::from_config(&config).unwrap();
    assert_eq!(pools.len(), 1);
    let pool_config = &pools[0];
    assert_eq!(pool_config.pool_name, "onefile");
    assert_eq!(pool_config.queue_timeout, Duration::from_millis(750));
    assert_eq!(pool_config.max_queue, 7);

    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.initialized");
    let pool = Pool::start(telemetry.clone(), pool_config.clone())
        .await
        .unwrap();
    assert_eq!(pool.name(), "onefile");
    assert_eq!(pool.config(), pool_config);
    let init = rec.named("snakepit.pool.initialized");
    assert_eq!(init.len(), 1);
    assert_eq!(meta(&init[0], "pool_name"), "onefile");
    serve_one_call(pool).await;
    sinks.shutdown(Duration::from_secs(2)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_in_one_file_each_serve_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &format!(
            "[telemetry]\nlog_level = \"info\"\n\n\
             [[pools]]\n{}\n[[pools]]\n{}call_timeout = \"9s\"\n",
            pool_keys("first", 1),
            pool_keys("second", 2)
        ),
    );
    let config = Config::load(&path).unwrap();
    let pools = PoolConfig::from_config(&config).unwrap();
    let names: Vec<(&str, usize)> = pools
        .iter()
        .map(|p| (p.pool_name.as_str(), p.workers))
        .collect();
    assert_eq!(names, [("first", 1), ("second", 2)]);
    assert_eq!(pools[1].call_timeout, Duration::from_secs(9));

    let telemetry = telemetry_from_config(&config);
    let (a, b) = tokio::join!(
        Pool::start(telemetry.clone(), pools[0].clone()),
        Pool::start(telemetry.clone(), pools[1].clone()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(b.worker_ids(), ["second_1", "second_2"]);
    serve_one_call(a).await;
    serve_one_call(b).await;
}

/// The error of `PoolConfig::from_config` for the file `text`, with its
/// file, line and key.
fn pool_error(text: &str) -> (PathBuf, PathBuf, Option<usize>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), text);
    let config = Config::load(&path).unwrap();
    let err = PoolConfig::from_config(&config).unwrap_err();
    let shown = err.to_string();
    match err {
        PoolError::Config {
            file, line, key, ..
        } => (path, file.unwrap(), line, key, shown),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn a_bad_pool_value_in_the_combined_file_names_file_line_and_full_key() {
    let head = "[telemetry]\nlog_level = \"info\"\n\n[[sinks]]\nkind = \"log\"\n\n";
    // Out of range, in the second [[pools]] (line 13).
    let text = format!(
        "{head}[[pools]]\npool_name = \"a\"\nadapter = \"m:C\"\n\n[[pools]]\npool_name = \"b\"\nadapter = \"m:C\"\nworkers = 0\n"
    );
    let (path, file, line, key, shown) = pool_error(&text);
    assert_eq!(file, path);
    assert_eq!(
        (line, key.as_str()),
        (Some(14), "pools[1].workers"),
        "{shown}"
    );
    assert!(
        shown.starts_with(&format!("{}, line 14: ", path.display())),
        "{shown}"
    );
    assert!(shown.contains("allowed 1 to 1024"), "{shown}");

    // A duration that is not one, in [pool].
    let (_, _, line, key, shown) = pool_error(&format!(
        "{head}[pool]\nadapter = \"m:C\"\nqueue_timeout = 5\n"
    ));
    assert_eq!(
        (line, key.as_str()),
        (Some(9), "pool.queue_timeout"),
        "{shown}"
    );

    // An unknown key.
    let (_, _, line, key, shown) =
        pool_error(&format!("{head}[pool]\nadapter = \"m:C\"\nwrokers = 2\n"));
    assert_eq!((line, key.as_str()), (Some(9), "pool.wrokers"), "{shown}");
    assert!(shown.contains("unknown field"), "{shown}");

    // Two pools of one name (unset is "default").
    let (_, _, line, key, shown) =
        pool_error(&format!("{head}[[pools]]\nadapter = \"m:C\"\n\n[[pools]]\nadapter = \"m:C\"\npool_name = \"default\"\n"));
    assert_eq!(
        (line, key.as_str()),
        (Some(12), "pools[1].pool_name"),
        "{shown}"
    );
    assert!(shown.contains("already the name of pools[0]"), "{shown}");
}

#[test]
fn pool_and_pools_together_fail_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "[pool]\nadapter = \"m:C\"\n\n[[pools]]\nadapter = \"m:C\"\n",
    );
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    assert!(e.contains("key `pools`") && e.contains("(line 4)"), "{e}");
}

#[test]
fn a_file_without_pools_has_none() {
    let config =
        Config::from_toml("[telemetry]\nlog_level = \"debug\"\n", "snakepit.toml").unwrap();
    assert!(PoolConfig::from_config(&config).unwrap().is_empty());
}

#[test]
fn the_readme_config_tour_reads_its_pool() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let text = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(toml, _)| toml))
        .find(|toml| toml.contains("[[sinks]]") && toml.contains("[pool]"))
        .expect("README.md has a ```toml block with [[sinks]] and [pool]");
    let config = Config::from_toml(text, "README.md").unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let pools = PoolConfig::from_config(&config).unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].workers, 4);
    assert_eq!(pools[0].queue_timeout, Duration::from_secs(5));
}

#[test]
fn the_pool_only_loader_points_a_whole_file_to_the_one_loader() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "[pool]\nadapter = \"m:C\"\n");
    let e = PoolConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("`pool`") && e.contains("Config::load"), "{e}");
    assert!(e.contains("PoolConfig::from_config"), "{e}");
}

/// The guide's config shapes: `log_categories` as a list and an
/// `[opentelemetry]` section whose exporters (OTLP to a real receiver, and
/// the console exporter writing lines to a file) become OTel sinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_opentelemetry_section_and_category_list_load_and_export() {
    let receiver = snakepit_testkit::otlp::OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("spans.log");
    let path = write(
        dir.path(),
        &format!(
            "[telemetry]\nlog_level = \"debug\"\nlog_categories = [\"lifecycle\", \"grpc\"]\n\n\
             [opentelemetry]\nenabled = true\nservice_name = \"guide-app\"\nsampling = 1.0\n\
             exporters = {{ otlp = {{ endpoint = \"{}\" }}, console = {{ path = '{}' }} }}\n\n\
             [pool]\n{}",
            receiver.endpoint(),
            console.display(),
            pool_keys("guide", 1)
        ),
    );
    let config = Config::load(&path).unwrap();
    let only = config
        .telemetry
        .log_categories
        .only()
        .expect("the list form");
    assert_eq!(only.len(), 2);
    let telemetry = telemetry_from_config(&config);
    let sinks = SinkSet::from_config(&config, &telemetry).unwrap();
    assert_eq!(sinks.ids().len(), 2, "{:?}", sinks.ids());

    let pool = Pool::start(
        telemetry.clone(),
        PoolConfig::from_config(&config).unwrap().remove(0),
    )
    .await
    .unwrap();
    let out = pool
        .execute("nested_spans", json!({}), CallOptions::default())
        .await
        .unwrap();
    assert!(out.value.is_object(), "{:?}", out.value);
    let spans = receiver.wait_spans(3, Duration::from_secs(15));
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    for name in ["grpc.call", "python.call", "tool.execution"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(spans.iter().all(|(service, _)| service == "guide-app"));
    serve_one_call(pool).await;
    sinks.shutdown(Duration::from_secs(5)).unwrap();

    // The console exporter wrote the same spans, one line each.
    let text = std::fs::read_to_string(&console).unwrap();
    let grpc = spans
        .iter()
        .find(|(_, s)| s.name == "grpc.call")
        .map(|(_, s)| snakepit_testkit::otlp::hex(&s.span_id))
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&format!(" span_id={grpc} ")))
        .unwrap_or_else(|| panic!("no console line for span {grpc}:\n{text}"));
    assert!(
        line.starts_with("span name=grpc.call kind=client trace_id="),
        "{line}"
    );
    assert!(line.contains(" status=ok"), "{line}");
    for name in ["python.call", "tool.execution"] {
        assert!(text.contains(&format!("span name={name} ")), "{text}");
    }
}

#[test]
fn a_bad_opentelemetry_section_is_named() {
    let bad = [
        (
            "[opentelemetry]\nsampling = 2.0\nexporters.console = {}\n",
            "opentelemetry.sampling",
        ),
        (
            "[opentelemetry]\nexporters.otlp = { endpoint = \"collector:4318\" }\n",
            "opentelemetry.exporters.otlp.endpoint",
        ),
        (
            "[opentelemetry]\nenabled = true\n",
            "opentelemetry.exporters",
        ),
        ("[opentelemetry]\nexporters.zipkin = {}\n", "zipkin"),
    ];
    for (text, key) in bad {
        let e = Config::from_toml(text, "s.toml").unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
    let off = Config::from_toml(
        "[opentelemetry]\nenabled = false\nexporters.console = {}\n",
        "s.toml",
    )
    .unwrap();
    assert!(off.sinks.is_empty());
}
