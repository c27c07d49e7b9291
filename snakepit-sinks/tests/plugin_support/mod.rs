//! Shared by the plugin tests and benchmarks: builds the workspace's plugin
//! crates once per run (into the target directory this test binary lives
//! in) and compiles the C plugin with the system `cc`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use snakepit_core::config::PluginSinkConfig;
use snakepit_core::{Event, EventId, OwnedEvent, Pattern};
use snakepit_telemetry::Telemetry;

/// The plugin crates under snakepit-sinks/plugins/, by directory name.
pub const PLUGINS: &[&str] = &[
    "jsonl",
    "wrong-abi",
    "no-symbol",
    "panicking",
    "slow",
    "refusing",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("snakepit-sinks has a parent directory")
        .to_path_buf()
}

/// `<target>/<profile>` of this test binary (`.../debug/deps/test-hash`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let deps = exe.parent().expect("the test binary is in a directory");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Builds every plugin crate once per process (cargo's own lock serializes
/// concurrent test binaries) and returns the directory holding the `.so`s.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile = profile_dir();
        let target = profile.parent().expect("profile dir has a parent");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.arg("build")
            .arg("--quiet")
            .arg("--manifest-path")
            .arg(workspace().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target);
        match profile.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
            None => {}
        }
        for p in PLUGINS {
            cmd.args(["-p", &format!("snakepit-plugin-{p}")]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the plugin crates failed: {cmd:?}"
        );
        profile
    })
}

/// Path of a built plugin crate's library, by directory name (`jsonl`).
pub fn plugin(name: &str) -> PathBuf {
    let file = format!("libsnakepit_plugin_{}.so", name.replace('-', "_"));
    let path = plugin_dir().join(file);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Compiles snakepit-sinks/plugins-c/<name>.c with `cc -shared -fPIC` into
/// a temp dir (once per process) and returns the library path.
pub fn c_plugin(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let out = dir.path().join(format!("lib{name}.so"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let output = Command::new("cc")
            .args([
                "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-std=c11",
            ])
            .arg("-I")
            .arg(root.join("abi/include"))
            .arg("-o")
            .arg(&out)
            .arg(root.join(format!("plugins-c/{name}.c")))
            .output()
            .expect("the system C compiler `cc` runs");
        assert!(
            output.status.success(),
            "cc failed on {name}.c:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        built.push(name.to_string());
    }
    out
}

/// A plugin sink config for `path` with `config` (a JSON object).
pub fn config(path: &Path, config: serde_json::Value, queue_capacity: usize) -> PluginSinkConfig {
    PluginSinkConfig {
        path: path.to_path_buf(),
        config,
        events: vec![Pattern::new("snakepit.pool.*").expect("valid pattern")],
        queue_capacity,
    }
}

/// Records every event of one id that a telemetry instance dispatches.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<OwnedEvent>>>);

impl Recorder {
    /// Attaches a recorder for `event` to `telemetry`.
    pub fn attach(telemetry: &Telemetry, event: EventId) -> Recorder {
        let r = Recorder::default();
        let seen = r.0.clone();
        telemetry
            .attach_ids(
                format!("recorder-{event:?}"),
                &[event],
                move |e: &Event<'_>| seen.lock().unwrap().push(e.to_owned_event()),
            )
            .expect("attach recorder");
        r
    }

    /// What was recorded so far.
    pub fn events(&self) -> Vec<OwnedEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// Polls `f` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}
