//! A ready Python environment for integration tests (feature `test-util`).
//!
//! [`python_env`] makes a venv with the `snakepit_bridge` package installed
//! from a wheel (or from the `python/` directory of a checkout) and returns a
//! [`PoolConfig`] whose interpreter is that venv's. The venv is cached and
//! reused, keyed by a hash of the wheel's bytes (of the directory's source
//! files) and the base interpreter: the first test pays for
//! `python3 -m venv` and `pip install` (seconds to a minute, with progress
//! on stderr), the others find it ready.
//!
//! Tests running in parallel, in threads or in processes, share one build:
//! the venv is made under an exclusive lock on `<cache>/<key>.lock` and marked
//! complete by `<cache>/<key>/.snakepit-ready`, written last; a venv without
//! the mark (an interrupted build) is removed and made again.
//!
//! Where:
//! * the package: the `package` argument, else env `SNAKEPIT_WHEEL`;
//! * the base interpreter: env `PYTHON`, else `python3`;
//! * the cache: env `SNAKEPIT_TEST_VENV_DIR`, else
//!   `<target>/snakepit-test-venv` next to the running test binary
//!   (`<target>/debug/deps/...`), else `snakepit-test-venv` in the system
//!   temp dir.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use snakepit_pool::test_util::python_env;
//! use snakepit_pool::{Pool, PoolConfig};
//!
//! // SNAKEPIT_WHEEL=/path/to/snakepit_bridge-....whl cargo test
//! let env = python_env("greeter:Greeter", None)?;
//! let config: PoolConfig = env.config.env("PYTHONPATH", "adapters");
//! let pool = Pool::start(snakepit_telemetry::Telemetry::new(), config).await?;
//! # pool.shutdown().await;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::PoolConfig;

/// The env var naming the wheel (or package directory) when
/// [`python_env`] is given none.
pub const WHEEL_ENV: &str = "SNAKEPIT_WHEEL";
/// The env var naming the cache directory of the venvs.
pub const CACHE_ENV: &str = "SNAKEPIT_TEST_VENV_DIR";
/// The file, in a finished venv, that marks it complete.
const READY_MARK: &str = ".snakepit-ready";

/// A venv with `snakepit_bridge` installed, and a pool config using it.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// `PoolConfig::new(adapter).python(python)`: add the rest (workers,
    /// `PYTHONPATH` for the adapter, timeouts) with its builder methods.
    pub config: PoolConfig,
    /// The venv's interpreter, `<venv>/bin/python` (not resolved through
    /// its symlink: the venv's packages are found from this path).
    pub python: PathBuf,
    /// The venv's directory.
    pub venv: PathBuf,
}

/// Why [`python_env`] could not make the venv.
#[derive(Debug, thiserror::Error)]
pub enum TestEnvError {
    /// No package was given and `SNAKEPIT_WHEEL` is not set.
    #[error(
        "no snakepit_bridge package to install: pass the path of a wheel or of the \
         python/ directory of a snakepit-rs checkout, or set {WHEEL_ENV} (build a wheel \
         with `pip wheel --no-deps <checkout>/python -w <dir>`)"
    )]
    NoPackage,
    /// The package path is neither a `.whl` file nor a directory.
    #[error("{path}: not a .whl file nor a package directory (with pyproject.toml)")]
    NotAPackage {
        /// The path given.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("cannot read", "cannot create", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command (venv creation, pip install) failed or could not start.
    #[error("`{command}` failed ({status}){}", stderr_block(.stderr))]
    Command {
        /// The command line, as run.
        command: String,
        /// Its exit status, or why it could not start.
        status: String,
        /// What it wrote to stderr (and stdout), trimmed.
        stderr: String,
    },
}

fn stderr_block(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(":\n{stderr}")
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TestEnvError {
    let path = path.to_path_buf();
    move |source| TestEnvError::Io { what, path, source }
}

/// Returns a venv with `snakepit_bridge` installed from `package` (a `.whl`
/// file or a package directory; `None`: env `SNAKEPIT_WHEEL`), made on the
/// first call and reused after (see the [module docs](self) for the cache,
/// the key and the locking), and `PoolConfig::new(adapter)` with that
/// venv's interpreter.
///
/// Blocking (it runs `python3 -m venv` and `pip install`, which may fetch
/// the package's dependencies from the index): call it before starting a
/// runtime, or from `tokio::task::spawn_blocking`.
pub fn python_env(adapter: &str, package: Option<&Path>) -> Result<PythonEnv, TestEnvError> {
    let package = match package {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os(WHEEL_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or(TestEnvError::NoPackage)?,
    };
    let package = std::path::absolute(&package).map_err(io("cannot resolve", &package))?;
    let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let key = cache_key(&package, &base)?;
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(io("cannot create", &cache))?;
    let venv = cache.join(format!("{key:016x}"));
    let python = venv.join("bin/python");

    let lock_path = cache.join(format!("{key:016x}.lock"));
    let lock = File::create(&lock_path).map_err(io("cannot create", &lock_path))?;
    lock.lock().map_err(io("cannot lock", &lock_path))?;
    if !venv.join(READY_MARK).exists() {
        build(&base, &package, &venv)?;
    }
    drop(lock);
    Ok(PythonEnv {
        config: PoolConfig::new(adapter).python(&python),
        python,
        venv,
    })
}

/// Makes the venv in `venv` (removing an unfinished one) and installs
/// `package`; the mark is written last.
fn build(base: &str, package: &Path, venv: &Path) -> Result<(), TestEnvError> {
    if venv.exists() {
        std::fs::remove_dir_all(venv).map_err(io("cannot remove the unfinished venv", venv))?;
    }
    progress(&format!("creating a venv in {} ({base})", venv.display()));
    run(Command::new(base).args(["-m", "venv"]).arg(venv))?;
    progress(&format!(
        "installing {} into it (pip; its dependencies may come from the index)",
        package.display()
    ));
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(package))?;
    let mark = venv.join(READY_MARK);
    std::fs::write(&mark, package.display().to_string()).map_err(io("cannot write", &mark))?;
    progress("venv ready");
    Ok(())
}

/// A line on stderr, written directly so that the test harness's output
/// capture does not hold it back while the long step runs.
fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "snakepit test-util: {line}");
}

fn run(cmd: &mut Command) -> Result<(), TestEnvError> {
    let command = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().map_err(|e| TestEnvError::Command {
        command: command.clone(),
        status: format!("cannot start: {e}"),
        stderr: String::new(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        text = format!("{}\n{text}", stdout.trim()).trim().to_string();
    }
    Err(TestEnvError::Command {
        command,
        status: out.status.to_string(),
        stderr: text,
    })
}

/// The cache directory (see the module docs).
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    // A test binary is <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().ok();
    let target = exe.as_deref().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then_some(())?;
        deps.parent()?.parent()
    });
    match target {
        Some(target) => target.join("snakepit-test-venv"),
        None => std::env::temp_dir().join("snakepit-test-venv"),
    }
}

/// FNV-1a over the base interpreter's name and the package: a wheel's
/// bytes, or a directory's source files (paths and contents; build output,
/// caches and hidden entries skipped).
fn cache_key(package: &Path, base: &str) -> Result<u64, TestEnvError> {
    let mut hash = Fnv::default();
    hash.add(base.as_bytes());
    if package.is_file() && package.extension().is_some_and(|e| e == "whl") {
        hash.add(&std::fs::read(package).map_err(io("cannot read", package))?);
    } else if package.join("pyproject.toml").is_file() {
        hash_dir(&mut hash, package, package)?;
    } else {
        return Err(TestEnvError::NotAPackage {
            path: package.to_path_buf(),
        });
    }
    Ok(hash.0)
}

fn hash_dir(hash: &mut Fnv, root: &Path, dir: &Path) -> Result<(), TestEnvError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io("cannot list", dir))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let skipped = name.starts_with('.')
            || ["target", "__pycache__", "build", "dist"].contains(&name.as_ref())
            || name.ends_with(".so")
            || name.ends_with(".egg-info");
        if skipped {
            continue;
        }
        if path.is_dir() {
            hash_dir(hash, root, &path)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            hash.add(rel.to_string_lossy().as_bytes());
            hash.add(&std::fs::read(&path).map_err(io("cannot read", &path))?);
        }
    }
    Ok(())
}

/// 64-bit FNV-1a (a cache key, not a checksum against tampering).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(&[0xff]) {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_no_package_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = python_env("a:B", Some(dir.path())).unwrap_err();
        assert!(
            matches!(&err, TestEnvError::NotAPackage { path } if path == dir.path()),
            "{err}"
        );
    }

    #[test]
    fn the_key_follows_the_wheel_bytes_and_the_base_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("x-0.1-py3-none-any.whl");
        std::fs::write(&wheel, b"one").unwrap();
        let one = cache_key(&wheel, "python3").unwrap();
        assert_eq!(one, cache_key(&wheel, "python3").unwrap());
        assert_ne!(one, cache_key(&wheel, "python3.12").unwrap());
        std::fs::write(&wheel, b"two").unwrap();
        assert_ne!(one, cache_key(&wheel, "python3").unwrap());
    }

    #[test]
    fn a_failing_command_is_named_with_its_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo no such wheel >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sh -c echo no such wheel >&2; exit 3` failed")
                && err.contains("exit status: 3")
                && err.ends_with(":\nno such wheel"),
            "{err}"
        );
        let err = run(&mut Command::new("/nonexistent/python3"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/python3") && err.contains("cannot start"),
            "{err}"
        );
    }
}
