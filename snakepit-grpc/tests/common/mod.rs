//! Real Python worker processes for the integration tests.
#![allow(dead_code, unused_imports)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_core::Event;
use snakepit_grpc::{ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_telemetry::Telemetry;
pub use snakepit_testkit::{python, HOSTILE, REFERENCE_STYLE, SHOWCASE};
use snakepit_testkit::{WorkerProcess, WorkerSpec};

/// A worker process on a Unix socket in a private temp dir; killed (and
/// reaped) on drop.
pub struct Worker {
    pub process: WorkerProcess,
    pub pid: u32,
    pub address: WorkerAddress,
    pub worker_id: String,
}

impl Worker {
    pub fn start(adapter: &str, worker_id: &str) -> Worker {
        Worker::start_with(adapter, worker_id, &[])
    }

    pub fn start_with(adapter: &str, worker_id: &str, extra: &[&str]) -> Worker {
        Worker::start_env(adapter, worker_id, extra, &[])
    }

    pub fn start_env(
        adapter: &str,
        worker_id: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        let mut spec = WorkerSpec::new(adapter, worker_id)
            .args(["--telemetry-interval-s", "0"])
            .args(extra.iter().copied());
        for (k, v) in env {
            spec = spec.env(k, v);
        }
        let process = spec.start();
        let socket = process.socket().expect("a private socket").to_path_buf();
        Worker {
            pid: process.pid(),
            process,
            address: WorkerAddress::Unix(socket),
            worker_id: worker_id.to_string(),
        }
    }

    /// Starts a new process of `adapter` at this worker's address (after
    /// the old one exited), as a restarted external worker would be.
    pub fn respawn(&mut self, adapter: &str) {
        self.process.restart(adapter);
        self.pid = self.process.pid();
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(self.address.clone(), self.worker_id.clone())
    }

    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// Resident set size of this (host) process, in kB.
    pub fn host_rss_kb() -> u64 {
        snakepit_testkit::procfs::rss_kb(None)
    }
}

/// A recorded event (owned copy of what a handler saw).
#[derive(Clone, Debug)]
pub struct Seen {
    pub name: String,
    pub measurements: Vec<(String, String)>,
    pub metadata: Vec<(String, String)>,
    pub timestamp_ns: u64,
    pub correlation_id: Option<String>,
    pub span_id: u64,
    pub parent_span_id: u64,
    pub trace_id: u128,
}

impl Seen {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn measurement(&self, key: &str) -> Option<&str> {
        self.measurements
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A fresh telemetry instance with a [`Recorder`] of `patterns`, and a
/// client connected with `opts` that reports into it.
pub async fn connect_recorded(
    opts: ConnectOptions,
    patterns: &[&str],
) -> (Telemetry, Recorder, WorkerClient) {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", patterns);
    let client = WorkerClient::connect(telemetry.clone(), opts)
        .await
        .expect("the worker accepts the connection");
    (telemetry, rec, client)
}

/// Records every event matching `patterns`.
#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn attach(telemetry: &Telemetry, id: &str, patterns: &[&str]) -> Recorder {
        let r = Recorder::default();
        let seen = r.seen.clone();
        telemetry
            .attach_many(id, patterns, move |e: &Event<'_>| {
                let ctx = e.context();
                seen.lock().unwrap().push(Seen {
                    name: e.name().to_string(),
                    measurements: e
                        .measurements()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    metadata: e
                        .metadata()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    timestamp_ns: ctx.timestamp_ns,
                    correlation_id: ctx.correlation_id.map(str::to_string),
                    span_id: ctx.span_id,
                    parent_span_id: ctx.parent_span_id,
                    trace_id: ctx.trace_id,
                });
            })
            .unwrap();
        r
    }

    pub fn named(&self, name: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    pub fn count(&self, name: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .count()
    }

    /// Waits until `pred` holds (polling), or panics after `timeout`.
    pub async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Seen]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.seen.lock().unwrap()) {
                return;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = self
                    .seen
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| s.name.clone())
                    .collect();
                panic!("timed out waiting for {what}; saw {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Waits until `f` returns true, or panics.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
