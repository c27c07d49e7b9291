//! A worker's stderr lines reach `tracing` (target `snakepit::worker`, field
//! `worker_id`). This binary installs a global subscriber, so it holds this
//! one test only.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool};
use snakepit_telemetry::Telemetry;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

#[derive(Default)]
struct Fields {
    worker_id: Option<String>,
    message: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        match field.name() {
            "worker_id" => self.worker_id = Some(v),
            "message" => self.message = Some(v),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "worker_id" => self.worker_id = Some(value.to_string()),
            "message" => self.message = Some(value.to_string()),
            _ => {}
        }
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "snakepit::worker" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if let (Some(w), Some(m)) = (f.worker_id, f.message) {
            self.0.lock().unwrap().push((w, m));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_lines_become_tracing_events_tagged_with_the_worker() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .unwrap();
    let pool = Pool::start(Telemetry::new(), config("stderr", 1))
        .await
        .unwrap();
    pool.execute(
        "log",
        json!({"level": "error", "message": "disk on fire"}),
        CallOptions::default(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let found = capture
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, m)| m.contains("disk on fire"))
            .cloned();
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (worker_id, _) = line.expect("the stderr line never reached tracing");
    assert_eq!(worker_id, "stderr_1");
    pool.shutdown().await;
}
