//! Shared by the integration tests: the interpreter, workers and /proc
//! checks (snakepit-testkit), pool configs and a recorder of pool events.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_core::config::OtelSinkConfig;
use snakepit_core::{OwnedEvent, Value};
use snakepit_pool::PoolConfig;
use snakepit_sinks::otel::OtelSink;
use snakepit_telemetry::Telemetry;
use snakepit_testkit::otlp::OtlpReceiver;

pub use snakepit_testkit::procfs::{self, gone, kill9, processes_with, wait_gone};
pub use snakepit_testkit::{python, WorkerProcess, WorkerSpec, HOSTILE, SHOWCASE};

/// A showcase config with the test interpreter and short timings.
pub fn config(pool_name: &str, workers: usize) -> PoolConfig {
    PoolConfig::new(SHOWCASE)
        .python(python())
        .pool_name(pool_name)
        .workers(workers)
        .startup_timeout(Duration::from_secs(20))
        .grace_period(Duration::from_secs(2))
        .restart_backoff(Duration::from_millis(50), Duration::from_millis(500), 5)
}

/// Records every event matching a pattern.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<OwnedEvent>>>,
}

impl Recorder {
    pub fn attach(telemetry: &Telemetry, id: &str, pattern: &str) -> Recorder {
        let r = Recorder::default();
        let sink = r.events.clone();
        telemetry
            .attach(id, pattern, move |e| {
                sink.lock().unwrap().push(e.to_owned_event());
            })
            .unwrap();
        r
    }

    pub fn all(&self) -> Vec<OwnedEvent> {
        self.events.lock().unwrap().clone()
    }

    pub fn named(&self, name: &str) -> Vec<OwnedEvent> {
        self.all().into_iter().filter(|e| e.name == name).collect()
    }

    /// Waits (up to `limit`) for `n` events named `name`.
    pub async fn wait_for(&self, name: &str, n: usize, limit: Duration) -> Vec<OwnedEvent> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.named(name);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn meta<'a>(e: &'a OwnedEvent, key: &str) -> &'a str {
    e.meta(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{} has no string metadata {key}: {e:?}", e.name))
}

pub fn int(e: &OwnedEvent, key: &str) -> i64 {
    e.measurement(key)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{} has no integer measurement {key}: {e:?}", e.name))
}

/// An OTel sink exporting to `receiver` every 50 ms, attached to `t` for
/// every event.
pub fn otel_sink_to(receiver: &OtlpReceiver, t: &Telemetry) -> Arc<OtelSink> {
    let otel = Arc::new(
        OtelSink::new(
            &OtelSinkConfig {
                endpoint: receiver.endpoint(),
                export_interval: Duration::from_millis(50),
                ..OtelSinkConfig::default()
            },
            t,
        )
        .expect("an OTel sink to the local receiver"),
    );
    t.attach_sink("otel", &[], otel.clone())
        .expect("the OTel sink attaches");
    otel
}

/// This test binary re-run as a host process that a test can kill: only the
/// test `test` (ignored or not), with the variable `switch` set so that it
/// does its host's work instead of returning. Its stdout is piped for
/// [`pids_after`].
pub fn child_host(test: &str, switch: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(switch, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The pids a [`child_host`] printed after `tag` (e.g. `"PIDS "`) on the
/// first stdout line that has it; empty if it printed none.
pub fn pids_after(host: &mut Child, tag: &str) -> Vec<u32> {
    let stdout = host.stdout.take().expect("a child_host's stdout");
    BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let (_, rest) = line.split_once(tag)?;
            Some(
                rest.split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect(),
            )
        })
        .unwrap_or_default()
}
