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
