//! Real Python worker processes for the integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_core::Event;
use snakepit_grpc::{ConnectOptions, WorkerAddress};
use snakepit_telemetry::Telemetry;

pub const SHOWCASE: &str = "snakepit_bridge.adapters.showcase:ShowcaseAdapter";
pub const HOSTILE: &str = "snakepit_bridge.adapters.hostile:HostileAdapter";

pub fn python() -> PathBuf {
    match std::env::var_os("SNAKEPIT_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    }
}

/// A worker process on a Unix socket in a private temp dir; killed (and
/// reaped) on drop.
pub struct Worker {
    pub child: Child,
    pub pid: u32,
    pub address: WorkerAddress,
    pub worker_id: String,
    _dir: tempfile::TempDir,
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
        let dir = tempfile::Builder::new().prefix("spg-").tempdir().unwrap();
        let sock = dir.path().join("w.sock");
        let child = spawn_ready(adapter, worker_id, &sock, extra, env);
        let pid = child.id();
        Worker {
            child,
            pid,
            address: WorkerAddress::Unix(sock),
            worker_id: worker_id.to_string(),
            _dir: dir,
        }
    }

    /// Starts a new process of `adapter` at this worker's address (after
    /// the old one exited), as a restarted external worker would be.
    pub fn respawn(&mut self, adapter: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let WorkerAddress::Unix(sock) = &self.address else {
            unreachable!("test workers listen on Unix sockets")
        };
        let _ = std::fs::remove_file(sock);
        self.child = spawn_ready(adapter, &self.worker_id, sock, &[], &[]);
        self.pid = self.child.id();
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(self.address.clone(), self.worker_id.clone())
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident set size of the worker? No: of this (host) process, in kB.
    pub fn host_rss_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// Spawns a worker process listening on `sock` and waits for its ready line.
fn spawn_ready(
    adapter: &str,
    worker_id: &str,
    sock: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let mut child = Command::new(python())
        .args(["-m", "snakepit_bridge.worker", "--adapter", adapter])
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .args([
            "--worker-id",
            worker_id,
            "--watch-stdin",
            "--telemetry-interval-s",
            "0",
        ])
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python worker");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("worker did not become ready in 30 s");
        }
    };
    assert!(
        line.starts_with("SNAKEPIT_READY "),
        "bad ready line {line:?}"
    );
    child
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
