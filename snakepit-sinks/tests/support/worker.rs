//! A real Python worker process for the end-to-end sink tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The showcase adapter (tools that call, stream, emit and log).
pub const SHOWCASE: &str = "snakepit_bridge.adapters.showcase:ShowcaseAdapter";
/// The hostile adapter (tools that send what the host must refuse).
pub const HOSTILE: &str = "snakepit_bridge.adapters.hostile:HostileAdapter";

/// The worker's Python: `$SNAKEPIT_PYTHON`, else the workspace's `.venv`.
pub fn python() -> PathBuf {
    match std::env::var_os("SNAKEPIT_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    }
}

/// A worker on a Unix socket in a private temp dir; killed and reaped on
/// drop.
pub struct Worker {
    pub child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts `adapter` as `worker_id` and waits for its ready line.
    pub fn start(adapter: &str, worker_id: &str) -> Worker {
        let dir = tempfile::Builder::new().prefix("sps-").tempdir().unwrap();
        let socket = dir.path().join("w.sock");
        let mut child = Command::new(python())
            .args(["-m", "snakepit_bridge.worker", "--adapter", adapter])
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .args(["--worker-id", worker_id, "--watch-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run cargo xtask setup",
                    python().display()
                )
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let mut w = Worker {
            child,
            socket,
            _dir: dir,
        };
        if !line.starts_with("SNAKEPIT_READY ") {
            let _ = w.child.kill();
            panic!("worker not ready: {line:?}");
        }
        w
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
