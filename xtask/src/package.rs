//! The Python package `snakepit-bridge` (python/, built by maturin): its
//! checks in `tidy` (one Python floor; checked-in gRPC stubs fresh) and the
//! wheel check of `test` (a wheel built from the source tree installs into a
//! new venv and serves calls natively, and the build leaves the tree as it
//! was).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use snakepit_core::ready::ReadyLine;

use crate::{root, run, step, target_dir, venv_python, Result};

/// The checked-in modules `python/tools/gen_proto.py` writes.
const STUBS: &[&str] = &[
    "__init__.py",
    "snakepit_bridge_pb2.py",
    "snakepit_bridge_pb2_grpc.py",
];
const STUBS_DIR: &str = "python/snakepit_bridge/generated";

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn parse_toml(path: &Path) -> Result<toml::Table> {
    read(path)?
        .parse::<toml::Table>()
        .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))
}

fn get<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

/// The minor version of Python 3 named by `prefix` followed by `3.N` or `3N`
/// in `text` (`>=3.11`, `py311`, `abi3-py311`).
fn minor_after(text: &str, prefix: &str) -> Option<u32> {
    let rest = text.strip_prefix(prefix)?.trim_start_matches('.');
    rest.strip_prefix('3')?.trim_start_matches('.').parse().ok()
}

/// The Python floor, `3.N` as N, from each place that states one; an error
/// unless all agree: pyproject's `requires-python`, ruff's `target-version`
/// and the pyo3 `abi3-py3N` feature of python/native (which sets the wheel's
/// `cp3N-abi3` tag, checked on a built wheel by [`wheel_check`]).
pub(crate) fn python_floor(root: &Path) -> Result<u32> {
    let pyproject = parse_toml(&root.join("python/pyproject.toml"))?;
    let native = parse_toml(&root.join("python/native/Cargo.toml"))?;
    let requires = get(&pyproject, "project.requires-python")
        .and_then(toml::Value::as_str)
        .ok_or("python/pyproject.toml: no [project] requires-python")?;
    let ruff = get(&pyproject, "tool.ruff.target-version")
        .and_then(toml::Value::as_str)
        .ok_or("python/pyproject.toml: no [tool.ruff] target-version")?;
    let features = get(&native, "dependencies.pyo3.features")
        .and_then(toml::Value::as_array)
        .ok_or("python/native/Cargo.toml: no pyo3 features")?;
    let abi3 = features
        .iter()
        .filter_map(toml::Value::as_str)
        .find_map(|f| minor_after(f, "abi3-py"))
        .ok_or("python/native/Cargo.toml: pyo3 has no `abi3-py3N` feature (the wheel's tag)")?;
    let stated = [
        (
            "python/pyproject.toml requires-python",
            requires,
            minor_after(requires.trim(), ">="),
        ),
        (
            "python/pyproject.toml [tool.ruff] target-version",
            ruff,
            minor_after(ruff, "py"),
        ),
    ];
    for (what, text, minor) in stated {
        match minor {
            Some(m) if m == abi3 => {}
            _ => {
                return Err(format!(
                    "{what} is {text:?}, but the native module is built abi3-py3{abi3} \
                     (python/native/Cargo.toml): state one Python floor, 3.{abi3} \
                     (`>=3.{abi3}`, `py3{abi3}`)"
                ))
            }
        }
    }
    Ok(abi3)
}

/// Fails when the checked-in stubs differ from what gen_proto.py writes
/// now from proto/ (with the venv's grpcio-tools, pinned in the dev extra).
pub(crate) fn check_stubs(root: &Path) -> Result {
    let py = venv_python();
    if !py.exists() {
        return Err(format!(
            "{} is missing: run `cargo xtask setup` (the stub check needs grpcio-tools)",
            py.display()
        ));
    }
    let tmp = TempDir::new("stubs")?;
    let out = Command::new(&py)
        .arg(root.join("python/tools/gen_proto.py"))
        .arg("--out")
        .arg(tmp.path())
        .output()
        .map_err(|e| format!("cannot run gen_proto.py: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gen_proto.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for name in STUBS {
        let fresh = std::fs::read(tmp.path().join(name)).map_err(|e| format!("{name}: {e}"))?;
        let path = root.join(STUBS_DIR).join(name);
        if std::fs::read(&path).ok().as_deref() != Some(fresh.as_slice()) {
            return Err(format!(
                "{STUBS_DIR}/{name} is stale or missing: run `.venv/bin/python \
                 python/tools/gen_proto.py` and commit the result"
            ));
        }
    }
    Ok(())
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("snakepit-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        Ok(TempDir(dir))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `git status` of python/ and proto/, ignored files included (None outside
/// a git checkout).
fn tree_state(root: &Path) -> Option<String> {
    let out = Command::new("git")
        .args([
            "status",
            "--porcelain",
            "--ignored",
            "--",
            "python",
            "proto",
        ])
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the wheel from python/ as a user would (`pip wheel ./python`),
/// checks its tag against the Python floor, installs it into a new venv and
/// starts a worker with that venv's interpreter from a directory outside the
/// repository: its ready line must name the native call socket. The source
/// tree must be as it was (no build output in it). With `sdist`, the same
/// for an sdist built by maturin and installed from the archive alone (it
/// compiles the crate again: about a minute). Returns the wheel, kept in
/// `<target>/snakepit-wheel/`.
pub(crate) fn wheel_check(sdist: bool) -> Result<PathBuf> {
    let root = root();
    let floor = python_floor(&root)?;
    let before = tree_state(&root);
    let tmp = TempDir::new("wheel")?;
    let wheels = tmp.path().join("wheels");
    // The crate is compiled in the workspace's target dir (maturin respects
    // CARGO_TARGET_DIR), reusing `cargo xtask setup`'s release build.
    let target = target_dir();
    step("building the snakepit-bridge wheel (pip wheel ./python)");
    run(Command::new(venv_python())
        .args([
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "./python",
            "-w",
        ])
        .arg(&wheels)
        .env("CARGO_TARGET_DIR", &target))?;
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|e| format!("cannot list {wheels:?}: {e}"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip wheel wrote no .whl")?;
    let name = wheel.file_name().unwrap_or_default().to_string_lossy();
    let tag = format!("-cp3{floor}-abi3-");
    if !name.contains(&tag) {
        return Err(format!(
            "the wheel {name} is not tagged {tag:?}: its tag and requires-python (>=3.{floor}) disagree"
        ));
    }
    if let Some(before) = before {
        let after = tree_state(&root).unwrap_or_default();
        if after != before {
            return Err(format!(
                "building the wheel changed the source tree:\nbefore:\n{before}\nafter:\n{after}"
            ));
        }
    }

    install_and_serve(&wheel, &tmp.path().join("from-wheel"))?;
    let kept = keep_wheel(&wheel)?;
    if sdist {
        step("building the snakepit-bridge sdist (maturin sdist)");
        let sdists = tmp.path().join("sdist");
        run(Command::new(root.join(".venv/bin/maturin"))
            .args(["sdist", "-m", "python/native/Cargo.toml", "-o"])
            .arg(&sdists))?;
        let sdist = std::fs::read_dir(&sdists)
            .map_err(|e| format!("cannot list {sdists:?}: {e}"))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
            .ok_or("maturin sdist wrote no .tar.gz")?;
        // Built from the archive alone, outside the repository.
        install_and_serve(&sdist, &tmp.path().join("from-sdist"))?;
    }
    Ok(kept)
}

/// Copies `wheel` into `<target>/snakepit-wheel/`, emptied first.
fn keep_wheel(wheel: &Path) -> Result<PathBuf> {
    let dir = target_dir().join("snakepit-wheel");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    let kept = dir.join(wheel.file_name().unwrap_or_default());
    std::fs::copy(wheel, &kept).map_err(|e| format!("cannot copy the wheel to {kept:?}: {e}"))?;
    Ok(kept)
}

/// Installs `artifact` (a wheel or an sdist) into a new venv in `dir`,
/// starts a worker from it in `dir` and checks that its ready line names
/// the native call socket.
fn install_and_serve(artifact: &Path, dir: &Path) -> Result {
    let name = artifact.file_name().unwrap_or_default().to_string_lossy();
    step(&format!("installing {name} into a new venv"));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    let venv = dir.join("venv");
    let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(system)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv))?;
    let py = venv.join("bin/python");
    run(Command::new(venv_python())
        .args(["-m", "pip", "--python"])
        .arg(&py)
        .args(["install", "--quiet"])
        .arg(artifact)
        .env("CARGO_TARGET_DIR", target_dir()))?;

    step(&format!("starting a worker installed from {name}"));
    let ready = worker_ready_line(&py, dir)?;
    let socket = dir.join("w.sock");
    let calls = format!("unix:{}.calls", socket.display());
    if ready.calls != calls {
        return Err(format!(
            "the worker installed from {name} does not serve calls natively: its ready \
             line names calls {:?}, expected {calls:?} ({ready:?})",
            ready.calls
        ));
    }
    println!("    ready: {ready:?}");
    Ok(())
}

/// Starts `python -m snakepit_bridge.worker` (showcase adapter) in `dir`
/// with a clean Python environment and returns its parsed ready line; the
/// worker exits when its stdin closes.
fn worker_ready_line(py: &Path, dir: &Path) -> Result<ReadyLine> {
    let mut child = Command::new(py)
        .args(["-m", "snakepit_bridge.worker"])
        .args([
            "--adapter",
            "snakepit_bridge.adapters.showcase:ShowcaseAdapter",
        ])
        .arg("--listen")
        .arg(format!("unix:{}", dir.join("w.sock").display()))
        .args(["--worker-id", "wheel-check", "--watch-stdin"])
        .env_remove("PYTHONPATH")
        .env_remove("VIRTUAL_ENV")
        .env_remove("SNAKEPIT_NATIVE_CALLS")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    // Closing stdin stops the worker (--watch-stdin); kill it if it lingers.
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    let line = line.map_err(|_| format!("no ready line within 60s; stderr:\n{err}"))?;
    match ReadyLine::parse(&line) {
        Ok(Some(ready)) => Ok(ready),
        Ok(None) => Err(format!(
            "the worker printed no ready line (got {line:?}); stderr:\n{err}"
        )),
        Err(e) => Err(format!("{e}; stderr:\n{err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_versions_are_read_from_each_spelling() {
        assert_eq!(minor_after(">=3.11", ">="), Some(11));
        assert_eq!(minor_after("py311", "py"), Some(11));
        assert_eq!(minor_after("abi3-py312", "abi3-py"), Some(12));
        assert_eq!(minor_after(">=3.9", ">="), Some(9));
        assert_eq!(minor_after("~=3.11", ">="), None);
        assert_eq!(minor_after("extension-module", "abi3-py"), None);
    }

    #[test]
    fn the_repository_states_one_python_floor() {
        let floor = python_floor(&root()).unwrap();
        assert!(
            floor >= 11,
            "the native module needs 3.11 at least, got 3.{floor}"
        );
    }

    fn fake_root(requires: &str, ruff: &str, abi3: &str) -> TempDir {
        let dir = TempDir::new(&format!("floor-{requires}-{ruff}-{abi3}")).unwrap();
        std::fs::create_dir_all(dir.path().join("python/native")).unwrap();
        std::fs::write(
            dir.path().join("python/pyproject.toml"),
            format!(
                "[project]\nrequires-python = \"{requires}\"\n[tool.ruff]\ntarget-version = \"{ruff}\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("python/native/Cargo.toml"),
            format!("[dependencies]\npyo3 = {{ version = \"0.27\", features = [\"extension-module\", \"{abi3}\"] }}\n"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_floor_that_disagrees_with_the_abi3_tag_is_named() {
        let ok = fake_root(">=3.12", "py312", "abi3-py312");
        assert_eq!(python_floor(ok.path()), Ok(12));
        let err = python_floor(fake_root(">=3.9", "py311", "abi3-py311").path()).unwrap_err();
        assert!(
            err.contains("requires-python is \">=3.9\"") && err.contains("abi3-py311"),
            "{err}"
        );
        let err = python_floor(fake_root(">=3.11", "py39", "abi3-py311").path()).unwrap_err();
        assert!(err.contains("target-version is \"py39\""), "{err}");
        let err = python_floor(fake_root(">=3.11", "py311", "macros").path()).unwrap_err();
        assert!(err.contains("no `abi3-py3N` feature"), "{err}");
    }
}
