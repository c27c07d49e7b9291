//! Sink plugins as the plugin tests and benchmarks load them: the
//! workspace's plugin crates (snakepit-sinks/plugins/), built once per run
//! into the target directory of the calling test binary, and the C plugins
//! (snakepit-sinks/plugins-c/) compiled with the system `cc`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use snakepit_core::config::PluginSinkConfig;
use snakepit_core::Pattern;

/// The plugin crates under snakepit-sinks/plugins/, by directory name.
pub const PLUGINS: &[&str] = &[
    "jsonl",
    "wrong-abi",
    "no-symbol",
    "panicking",
    "slow",
    "refusing",
];

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
            .arg(crate::workspace_root().join("Cargo.toml"))
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
        let root = crate::workspace_root().join("snakepit-sinks");
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
