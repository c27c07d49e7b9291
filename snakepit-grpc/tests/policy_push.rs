//! The host's policy reaches live workers: the full policy on connect, then
//! every change; a sampling change cuts the worker's event rate at the
//! source, and the worker's drop counts come back as host events. Log
//! levels are pushed too, and Python log records arrive in `tracing`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect_recorded, eventually, Recorder, Seen, Worker, SHOWCASE};
use serde_json::json;
use snakepit_core::LogLevel;
use snakepit_grpc::{CallOptions, WorkerClient};
use snakepit_telemetry::Telemetry;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const WAIT: Duration = Duration::from_secs(10);

fn emitted_in(seen: &[Seen]) -> usize {
    seen.iter()
        .filter(|e| {
            e.name == "snakepit.python.tool.execution.stop"
                && e.measurement("duration") == Some("1")
        })
        .count()
}

fn emitted(rec: &Recorder) -> usize {
    emitted_in(&rec.seen.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_change_reaches_a_live_worker_and_cuts_its_rate() {
    let worker = Worker::start(SHOWCASE, "w-policy");
    let (telemetry, rec, client) = connect_recorded(
        worker.options(),
        &[
            "snakepit.python.tool.*",
            "snakepit.telemetry.events.dropped",
        ],
    )
    .await;
    client
        .execute(
            "emit_events",
            json!({"count": 1000}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    rec.wait_for("1000 events", WAIT, |s| emitted_in(s) == 1000)
        .await;

    let policy = telemetry
        .control()
        .set_pattern_rate("python.tool.execution.*", 0.0)
        .unwrap();
    let c = client.clone();
    eventually("the worker to apply the policy", WAIT, move || {
        c.telemetry_stats().policy_version >= policy.version
    })
    .await;
    let sampled_before = client.telemetry_stats().worker_drops[1];
    client
        .execute(
            "emit_events",
            json!({"count": 1000}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let c = client.clone();
    eventually("the worker to report sampled_out drops", WAIT, move || {
        c.telemetry_stats().worker_drops[1] >= sampled_before + 1000
    })
    .await;
    rec.wait_for("a sampled_out drop event", WAIT, |s| {
        s.iter().any(|e| {
            e.name == "snakepit.telemetry.events.dropped"
                && e.meta("reason") == Some("sampled_out")
                && e.meta("where") == Some("worker")
                && e.meta("worker_id") == Some("w-policy")
        })
    })
    .await;
    // Dropped at the source: nothing more arrived.
    assert_eq!(emitted(&rec), 1000);
    let reported: i64 = rec
        .named("snakepit.telemetry.events.dropped")
        .iter()
        .filter(|e| e.meta("reason") == Some("sampled_out"))
        .map(|e| e.measurement("count").unwrap().parse::<i64>().unwrap())
        .sum();
    assert!(reported >= 1000, "{reported}");

    // A worker connected later gets the current policy at once.
    let late = Worker::start(SHOWCASE, "w-policy-late");
    let late_client = WorkerClient::connect(telemetry.clone(), late.options())
        .await
        .unwrap();
    late_client
        .execute("emit_events", json!({"count": 500}), CallOptions::default())
        .await
        .unwrap();
    let c = late_client.clone();
    eventually("the late worker to sample out", WAIT, move || {
        c.telemetry_stats().worker_drops[1] >= 500
    })
    .await;
    assert_eq!(emitted(&rec), 1000);

    // Back to full rate.
    telemetry.control().clear_pattern_rates();
    let c = client.clone();
    let v = telemetry.control().policy().version;
    eventually("the reset policy", WAIT, move || {
        c.telemetry_stats().policy_version >= v
    })
    .await;
    client
        .execute("emit_events", json!({"count": 10}), CallOptions::default())
        .await
        .unwrap();
    rec.wait_for("events again", WAIT, |s| emitted_in(s) == 1010)
        .await;
    late_client.close().await;
    client.close().await;
}

#[derive(Clone, Default)]
struct PythonLogs(Arc<Mutex<Vec<(String, String, String)>>>);

struct Fields<'a>(&'a mut String, &'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "worker_id" {
            *self.0 = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.1 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for PythonLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "snakepit::python" {
            return;
        }
        let (mut worker, mut message) = (String::new(), String::new());
        event.record(&mut Fields(&mut worker, &mut message));
        self.0
            .lock()
            .unwrap()
            .push((event.metadata().level().to_string(), worker, message));
    }
}

#[test]
fn worker_log_level_is_pushed_and_records_reach_tracing() {
    let logs = PythonLogs::default();
    let subscriber = tracing_subscriber::registry().with(logs.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread: the telemetry task runs where the subscriber is set.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let worker = Worker::start(SHOWCASE, "w-logs");
        let telemetry = Telemetry::new();
        let client = WorkerClient::connect(telemetry.clone(), worker.options())
            .await
            .unwrap();
        let log = |level: &'static str, message: &'static str| {
            let c = client.clone();
            async move {
                c.execute(
                    "log",
                    json!({"level": level, "message": message}),
                    CallOptions::default(),
                )
                .await
                .unwrap();
            }
        };
        let has = |m: &str| {
            logs.0
                .lock()
                .unwrap()
                .iter()
                .any(|(_, _, msg)| msg.contains(m))
        };
        log("warning", "warned-1").await;
        log("debug", "hidden-debug").await;
        let deadline = std::time::Instant::now() + WAIT;
        while !has("warned-1") {
            assert!(
                std::time::Instant::now() < deadline,
                "no python log arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!has("hidden-debug"));
        {
            let all = logs.0.lock().unwrap();
            let (level, worker_id, _) =
                all.iter().find(|(_, _, m)| m.contains("warned-1")).unwrap();
            assert_eq!(level, "WARN");
            assert_eq!(worker_id, "w-logs");
        }
        // Debug for this worker only: pushed to it at run time.
        telemetry.log().set_process_level("w-logs", LogLevel::Debug);
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            log("debug", "shown-debug").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if has("shown-debug") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "debug level never reached the worker"
            );
        }
        client.close().await;
    });
}
