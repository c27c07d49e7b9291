//! Test and benchmark helpers shared by every crate of the workspace (a
//! dev-dependency only, never published):
//!
//! * [`ReadyLine`]: a worker's `SNAKEPIT_READY` line, re-exported from
//!   [`snakepit_core::ready`] (its one parser);
//! * [`worker`]: a real Python worker process, started and waited for;
//! * [`python()`]: the interpreter the tests run workers with;
//! * [`procfs`]: /proc checks (gone, by command line, kill -9, RSS, CPU time);
//! * [`stats`]: median and quartiles of per-round figures;
//! * [`tls`]: a throwaway CA and the worker and host certificates it signs;
//! * [`netns`]: a network namespace behind a veth pair (workers on
//!   "another machine");
//! * [`otlp`]: local OTLP/HTTP receivers (decoding, or discarding);
//! * [`otlp_exporter`]: an OTel SDK span exporter posting OTLP/HTTP, for an
//!   application's own pipeline;
//! * [`plugins`]: the workspace's sink plugins, built, and C plugins compiled.
//!
//! Of the workspace it depends on snakepit-core only, so every other crate
//! may use it.

pub mod netns;
pub mod otlp;
pub mod otlp_exporter;
pub mod plugins;
pub mod procfs;
pub mod stats;
pub mod tls;
pub mod worker;

use std::path::PathBuf;

pub use snakepit_core::ready::{ReadyLine, ReadyLineError, READY_PREFIX};
pub use worker::{WorkerProcess, WorkerSpec};

/// The showcase adapter (tools that call, stream, emit and log).
pub const SHOWCASE: &str = "snakepit_bridge.adapters.showcase:ShowcaseAdapter";
/// The hostile adapter (tools that send what the host must refuse).
pub const HOSTILE: &str = "snakepit_bridge.adapters.hostile:HostileAdapter";
/// An adapter written as the reference system's are (`@tool("...")`,
/// events named `python.call.stop`; tools that raise, collect garbage and
/// keep a CPU busy).
pub const REFERENCE_STYLE: &str = "snakepit_bridge.adapters.reference_style:ReferenceStyleAdapter";

/// The Python interpreter tests start workers with: `$SNAKEPIT_PYTHON` when
/// set and not empty, else the workspace's `.venv/bin/python` (created by
/// `cargo xtask setup`).
pub fn python() -> PathBuf {
    match std::env::var_os("SNAKEPIT_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(".venv/bin/python"),
    }
}

/// The workspace root (the directory holding this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// An integer from the environment variable `key`, else `default` (bench
/// knobs such as `CALLS` and `ROUNDS`).
pub fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
