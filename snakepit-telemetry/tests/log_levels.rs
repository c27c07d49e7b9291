//! Log levels: global, per category (the guide's map form) and per worker,
//! changed at run time and obeyed by a real `tracing` subscriber.

use std::sync::{Arc, Mutex};

use snakepit_core::{Config, LogCategory, LogLevel};
use snakepit_telemetry::LogConfig;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        struct Msg(String);
        impl tracing::field::Visit for Msg {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Msg(String::new());
        event.record(&mut m);
        self.0.lock().unwrap().push(m.0);
    }
}

fn with_log<R>(log: &LogConfig, f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let cap = Capture::default();
    let subscriber = tracing_subscriber::registry().with(cap.clone().with_filter(log.filter()));
    let r = tracing::subscriber::with_default(subscriber, f);
    let lines = cap.0.lock().unwrap().clone();
    (r, lines)
}

fn emit_all() {
    tracing::debug!(target: "snakepit::worker", worker_id = "worker_1", "w1 debug");
    tracing::debug!(target: "snakepit::worker", worker_id = "worker_2", "w2 debug");
    tracing::info!(target: "snakepit::worker", worker_id = "worker_1", "w1 info");
    tracing::info!(target: "snakepit::worker", worker_id = "worker_2", "w2 info");
    tracing::debug!(target: "snakepit::pool", "pool debug");
    tracing::warn!(target: "snakepit::grpc", "grpc warn");
    tracing::info!(target: "snakepit::grpc", "grpc info");
    tracing::debug!(target: "my_app", "app debug");
}

#[test]
fn a_per_worker_level_changes_only_that_workers_records() {
    let log = LogConfig::new(LogLevel::Info);
    let (_, before) = with_log(&log, emit_all);
    assert!(!before.contains(&"w1 debug".to_string()));

    log.set_process_level("worker_1", LogLevel::Debug);
    let (_, during) = with_log(&log, emit_all);
    assert!(during.contains(&"w1 debug".to_string()));
    assert!(!during.contains(&"w2 debug".to_string()));
    assert!(during.contains(&"w2 info".to_string()));
    assert!(!during.contains(&"pool debug".to_string()));

    log.set_process_level("worker_2", LogLevel::Error);
    let (_, quiet) = with_log(&log, emit_all);
    assert!(
        !quiet.contains(&"w2 info".to_string()),
        "worker_2 now at error"
    );
    assert!(quiet.contains(&"w1 info".to_string()));

    log.reset_process_level("worker_1");
    log.reset_process_level("worker_2");
    let (_, after) = with_log(&log, emit_all);
    assert_eq!(after, before);
}

#[test]
fn the_guides_category_map_works_from_config() {
    let config = Config::from_toml(
        r#"
        [telemetry]
        log_level = "info"
        log_categories = { pool = "debug", worker = "info", grpc = "warning" }
        "#,
        "snakepit.toml",
    )
    .unwrap();
    let log = LogConfig::from_config(&config.telemetry);
    let (_, lines) = with_log(&log, emit_all);
    assert!(lines.contains(&"pool debug".to_string()));
    assert!(lines.contains(&"grpc warn".to_string()));
    assert!(!lines.contains(&"grpc info".to_string()));
    assert!(lines.contains(&"w1 info".to_string()));
    assert!(!lines.contains(&"w1 debug".to_string()));
    assert!(
        lines.contains(&"app debug".to_string()),
        "the application's own records are not filtered"
    );
}

#[test]
fn level_none_silences_and_changes_apply_at_run_time() {
    let log = LogConfig::new(LogLevel::Info);
    let rx = log.subscribe();
    log.set_level(LogLevel::None);
    assert!(rx.has_changed().unwrap());
    let (_, lines) = with_log(&log, emit_all);
    assert_eq!(lines, vec!["app debug".to_string()]);
    log.set_category_level(LogCategory::Grpc, LogLevel::Info);
    let (_, lines) = with_log(&log, emit_all);
    assert_eq!(lines, vec!["grpc warn", "grpc info", "app debug"]);
    assert_eq!(
        log.levels().worker_level("worker_9"),
        LogLevel::None,
        "python category falls back to the global level"
    );
}

/// Debug, info, warn and error records of one snakepit target, named
/// `"<name> <level>"`.
macro_rules! levels_for {
    ($target:literal, $name:literal) => {{
        tracing::debug!(target: $target, concat!($name, " debug"));
        tracing::info!(target: $target, concat!($name, " info"));
        tracing::warn!(target: $target, concat!($name, " warn"));
        tracing::error!(target: $target, concat!($name, " error"));
    }};
}

/// Records of every category (target `snakepit` is `general`) and one of
/// the application's.
fn emit_categories() {
    levels_for!("snakepit::lifecycle", "lifecycle");
    levels_for!("snakepit::pool", "pool");
    levels_for!("snakepit::grpc", "grpc");
    levels_for!("snakepit::python", "python");
    levels_for!("snakepit::worker", "worker");
    levels_for!("snakepit::startup", "startup");
    levels_for!("snakepit::shutdown", "shutdown");
    levels_for!("snakepit::telemetry", "telemetry");
    levels_for!("snakepit", "general");
    tracing::debug!(target: "my_app", "app debug");
}

#[test]
fn the_list_form_lets_debug_and_info_through_for_listed_categories_only() {
    let config = Config::from_toml(
        "[telemetry]\nlog_level = \"debug\"\nlog_categories = [\"lifecycle\", \"bridge\"]\n",
        "snakepit.toml",
    )
    .unwrap();
    let log = LogConfig::from_config(&config.telemetry);
    let (_, lines) = with_log(&log, emit_categories);
    for shown in [
        "lifecycle debug",
        "lifecycle info",
        "python debug",
        "python info",
        // Warnings and errors of every category pass.
        "pool warn",
        "grpc error",
        "startup warn",
        "shutdown error",
        "general warn",
        // Other targets are the application's.
        "app debug",
    ] {
        assert!(lines.contains(&shown.to_string()), "{shown}: {lines:?}");
    }
    for hidden in [
        "pool debug",
        "pool info",
        "grpc info",
        "worker info",
        "startup debug",
        "telemetry info",
        "general debug",
    ] {
        assert!(!lines.contains(&hidden.to_string()), "{hidden}: {lines:?}");
    }

    // The global level still bounds the listed categories.
    log.set_level(LogLevel::Warning);
    let (_, lines) = with_log(&log, emit_categories);
    assert!(!lines.contains(&"lifecycle info".to_string()), "{lines:?}");
    assert!(lines.contains(&"lifecycle warn".to_string()), "{lines:?}");
    // And `none` silences snakepit, not the application.
    log.set_level(LogLevel::None);
    let (_, lines) = with_log(&log, emit_categories);
    assert_eq!(lines, ["app debug"]);

    // Back to levels per category alone.
    log.set_level(LogLevel::Info);
    log.set_only_categories(None);
    let (_, lines) = with_log(&log, emit_categories);
    assert!(lines.contains(&"pool info".to_string()), "{lines:?}");
}

#[test]
fn with_level_scopes_a_level_to_a_closure() {
    let log = LogConfig::new(LogLevel::Warning);
    let (_, lines) = with_log(&log, || {
        tracing::debug!(target: "snakepit::pool", "before");
        snakepit_telemetry::log::with_level(LogLevel::Debug, || {
            tracing::debug!(target: "snakepit::pool", "inside");
            snakepit_telemetry::log::with_level(LogLevel::Error, || {
                tracing::warn!(target: "snakepit::pool", "nested warn");
            });
            tracing::info!(target: "snakepit::grpc", "inside again");
        });
        tracing::debug!(target: "snakepit::pool", "after");
    });
    assert_eq!(lines, ["inside", "inside again"]);

    // A panic inside does not leave the level behind.
    let caught = std::panic::catch_unwind(|| {
        snakepit_telemetry::log::with_level(LogLevel::Debug, || panic!("boom"))
    });
    assert!(caught.is_err());
    let (_, lines) = with_log(&log, || {
        tracing::debug!(target: "snakepit::pool", "after the panic");
    });
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn with_level_future_follows_the_future_across_threads() {
    let log = LogConfig::new(LogLevel::Warning);
    let cap = Capture::default();
    let subscriber = tracing_subscriber::registry().with(cap.clone().with_filter(log.filter()));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let scoped = tokio::spawn(snakepit_telemetry::log::with_level_future(
            LogLevel::Debug,
            async {
                for i in 0..20 {
                    tracing::debug!(target: "snakepit::pool", "scoped {i}");
                    // Yield so that the task may resume on another thread.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            },
        ));
        let plain = tokio::spawn(async {
            for i in 0..20 {
                tracing::debug!(target: "snakepit::pool", "plain {i}");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        scoped.await.unwrap();
        plain.await.unwrap();
    });
    let lines = cap.0.lock().unwrap().clone();
    let scoped = lines.iter().filter(|l| l.starts_with("scoped")).count();
    assert_eq!(scoped, 20, "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("plain")), "{lines:?}");
}

#[test]
fn clear_process_level_removes_every_workers_level() {
    let log = LogConfig::new(LogLevel::Info);
    log.set_process_level("worker_1", LogLevel::Debug);
    log.set_process_level("worker_2", LogLevel::Debug);
    let (_, during) = with_log(&log, emit_all);
    assert!(during.contains(&"w1 debug".to_string()) && during.contains(&"w2 debug".to_string()));
    log.clear_process_level();
    assert!(log.levels().workers.is_empty());
    let (_, after) = with_log(&log, emit_all);
    assert!(
        !after.contains(&"w1 debug".to_string()) && !after.contains(&"w2 debug".to_string()),
        "{after:?}"
    );
}
