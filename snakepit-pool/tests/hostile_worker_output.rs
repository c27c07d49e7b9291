//! A worker's stdout and stderr cannot grow the host's memory or stop its
//! start: lines are read as bytes and cut at 64 KiB (marked truncated), and
//! bytes that are not UTF-8 before the ready line are logged as noise.
//!
//! Real workers write the output: the hostile adapter floods stderr from a
//! tool, and a `sitecustomize.py` put on the worker's `PYTHONPATH` writes to
//! stdout before the worker has even parsed its arguments. The host's memory
//! is its peak resident set (`VmHWM`, reset through `/proc/self/clear_refs`).
//! This binary installs a global `tracing` subscriber to see what was logged.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig};
use snakepit_telemetry::Telemetry;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const HOSTILE: &str = "snakepit_bridge.adapters.hostile:HostileAdapter";
const MB: u64 = 1 << 20;
/// Allowed growth of the host's peak memory while a worker writes hundreds
/// of megabytes (generous: the reader keeps 64 KiB lines).
const BOUND: u64 = 50 * MB;

/// Memory measurements must not overlap.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Message(Option<String>);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        // A worker's output is `worker`; noise before its ready line is
        // `startup`.
        if !matches!(
            event.metadata().target(),
            "snakepit::worker" | "snakepit::startup"
        ) {
            return;
        }
        let mut m = Message(None);
        event.record(&mut m);
        if let Some(m) = m.0 {
            self.0.lock().unwrap().push(m);
        }
    }
}

/// The worker log records seen by this process.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(capture.clone()),
        )
        .unwrap();
        capture
    })
}

/// Waits (up to 30 s) for a worker log record matching `f`.
async fn logged(f: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = capture().0.lock().unwrap().iter().find(|m| f(m)).cloned();
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A field of /proc/self/status, in bytes.
fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Resets the peak resident set (`VmHWM`) to the current one; returns it.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("cannot reset VmHWM");
    status_bytes("VmRSS:")
}

/// Writes a `sitecustomize.py` running `code` (with `os` imported) into
/// `dir`, and returns a config whose workers import it at start.
fn with_sitecustomize(dir: &Path, pool_name: &str, code: &str) -> PoolConfig {
    std::fs::write(dir.join("sitecustomize.py"), format!("import os\n{code}\n")).unwrap();
    config(pool_name, 1)
        .env("PYTHONPATH", dir.to_str().unwrap())
        .startup_timeout(Duration::from_secs(120))
}

async fn stop(pool: Pool) {
    let pids = pool.worker_pids();
    pool.shutdown().await;
    assert!(wait_gone(&pids, Duration::from_secs(10)), "{pids:?} left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_of_200_mb_without_a_newline_keeps_the_host_bounded() {
    capture();
    let pool = Pool::start(Telemetry::new(), config("flood", 1).adapter(HOSTILE))
        .await
        .unwrap();
    let size = 200 * MB;
    let (peak, before) = {
        let _guard = MEMORY.lock().await;
        let before = reset_peak();
        let out = pool
            .execute(
                "flood_stderr",
                json!({"size": size, "after": "flood over"}),
                CallOptions::with_timeout(Duration::from_secs(300)),
            )
            .await
            .unwrap();
        assert_eq!(out.value, json!(size));
        // The line after the flood arrives: the reader went on.
        logged(|m| m == "flood over")
            .await
            .expect("the line after the flood was not logged");
        (status_bytes("VmHWM:"), before)
    };
    eprintln!(
        "stderr flood: host peak grew by {} KiB",
        peak.saturating_sub(before) / 1024
    );
    assert!(
        peak.saturating_sub(before) < BOUND,
        "host peak memory grew by {} MB while the worker wrote {} MB to stderr",
        (peak - before) / MB,
        size / MB
    );
    let cut = logged(|m| m.starts_with("xxxx"))
        .await
        .expect("the long line was not logged");
    assert!(
        cut.contains("line truncated"),
        "not marked: {}",
        &cut[cut.len() - 100..]
    );
    assert!(cut.len() < 64 * 1024 + 200, "{} bytes logged", cut.len());
    stop(pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_of_300_mb_before_the_ready_line_keeps_the_host_bounded() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let size = 300 * MB;
    let config = with_sitecustomize(
        dir.path(),
        "stdoutflood",
        &format!(
            "chunk = b'y' * (1 << 20)\n\
             for _ in range({}):\n    os.write(1, chunk)\n\
             os.write(1, b'\\n')\n",
            size / MB
        ),
    );
    let (peak, before, pool) = {
        let _guard = MEMORY.lock().await;
        let before = reset_peak();
        let pool = Pool::start(Telemetry::new(), config).await.unwrap();
        (status_bytes("VmHWM:"), before, pool)
    };
    eprintln!(
        "stdout flood: host peak grew by {} KiB",
        peak.saturating_sub(before) / 1024
    );
    assert!(
        peak.saturating_sub(before) < BOUND,
        "host peak memory grew by {} MB while the worker wrote {} MB to stdout",
        (peak - before) / MB,
        size / MB
    );
    let noise = logged(|m| m.contains("before the ready line: yyyy"))
        .await
        .expect("the long stdout line was not logged");
    assert!(noise.contains("line truncated"), "not marked truncated");
    let out = pool
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));
    stop(pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_before_the_ready_line_are_noise() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let config = with_sitecustomize(
        dir.path(),
        "notutf8",
        r"os.write(1, b'\xff\xfe\xc3 not utf-8\n\xff\n')",
    );
    let pool = Pool::start(Telemetry::new(), config)
        .await
        .expect("a worker writing invalid UTF-8 before its ready line still starts");
    let out = pool
        .execute("add", json!({"a": 2, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(4));
    let noise = logged(|m| m.contains("not utf-8"))
        .await
        .expect("the noise line was not logged");
    assert!(
        noise.ends_with("ready line: \u{fffd}\u{fffd}\u{fffd} not utf-8"),
        "{noise}"
    );
    stop(pool).await;
}
