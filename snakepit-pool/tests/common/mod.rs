//! Shared by the integration tests: the interpreter, a recorder of pool
//! events, /proc checks.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_core::{OwnedEvent, Value};
use snakepit_pool::PoolConfig;
use snakepit_telemetry::Telemetry;

pub const SHOWCASE: &str = "snakepit_bridge.adapters.showcase:ShowcaseAdapter";

/// `$SNAKEPIT_PYTHON`, else the workspace venv.
pub fn python() -> PathBuf {
    match std::env::var_os("SNAKEPIT_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    }
}

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

/// Is the process gone (or a zombie)?
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .map(|s| s == 'Z' || s == 'X')
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// Waits until every pid is gone; false after `limit`.
pub fn wait_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pids.iter().all(|&p| gone(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.iter().all(|&p| gone(p))
}

/// The pids of live processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && !gone(pid) {
                out.push(pid);
            }
        }
    }
    out
}

pub fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid} failed");
}
