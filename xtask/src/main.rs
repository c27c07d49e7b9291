//! `cargo xtask`: the project's automation.
//!
//! * `setup`   create the Python venv (`.venv`) and install `python/` into it
//! * `test`    fmt check, clippy -D warnings, every Rust test, ruff, pytest,
//!   the wheel check, the getting-started crate's test, tidy
//! * `codegen` write the generated docs (docs/EVENTS.md) from the catalog
//! * `tidy`    fail when generated docs or the Python stubs are stale, the
//!   Python floor is stated twice differently, Cargo.lock holds a crate
//!   twice (outside an allowlist), or a manifest breaks the workspace's
//!   rules (see `tidy.rs`)
//! * `wheel`   build the Python wheel, install it into a new venv, start a worker
//! * `features` build snakepit-sinks with each of its features alone
//! * `soak`    a pool under load and injected faults for minutes (not a test)

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod bench;
mod codegen;
mod coverage;
mod deps;
mod example;
mod package;
mod plot;
mod tidy;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let result = match cmd {
        "setup" => setup(),
        "test" => test(rest),
        "codegen" => codegen::write(&root()),
        "tidy" => tidy(),
        "wheel" => package::wheel_check(rest.iter().any(|a| a == "--sdist")).map(drop),
        "features" => deps::check_features(),
        "getting-started" => {
            package::wheel_check(false).and_then(|wheel| example::getting_started(&wheel))
        }
        "bench" => bench::bench(rest),
        "plot" => plot::plot(),
        "demo" => demo(rest),
        "soak" => soak(rest),
        "help" | "--help" | "-h" => {
            print_help();
            Ok(())
        }
        other => Err(format!("unknown command `{other}`; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <command>\n\n\
         setup     create the Python venv (.venv) and install python/ into it\n\
         test      fmt, clippy, Rust tests, ruff, pytest, tidy (what CI runs)\n\
         codegen   regenerate docs/EVENTS.md from the event catalog\n\
         tidy      fail when generated files are stale, Cargo.lock holds a crate twice,\n\
                   or a manifest breaks the workspace's rules (dependencies, rust-version,\n\
                   license)\n\
         wheel     build the Python wheel, install it into a new venv, check a worker\n\
                   from it serves calls natively and the source tree is untouched\n\
                   (--sdist: the sdist too, installed from the archive alone)\n\
         features  build snakepit-sinks with no features, then each feature alone\n\
         getting-started  the wheel check, then lint examples/getting-started and run\n\
                   its test with a fresh venv from that wheel (steps of test)\n\
         demo      a pool, a mixed workload, live /metrics, a summary (--quick, --serve,\n\
                   --workers N, --calls N, --config FILE)\n\
         bench     run every benchmark and print one table (--quick for a short run,\n\
                   --plot: also draw the curves as SVG charts into <target dir>/bench/,\n\
                   --only NAME: that benchmark alone, e.g. --only curves)\n\
         plot      draw the last curves bench's points again (<target dir>/bench/*.svg)\n\
         soak      10 minutes of calls with every sink on, workers killed and stopped;\n\
                   prints calls, errors, host RSS, fds and threads over time (--quick: 2 min)"
    );
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn step(name: &str) {
    println!("\n==> {name}");
}

pub(crate) fn run(cmd: &mut Command) -> Result {
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        println!("    ({:.1}s)", started.elapsed().as_secs_f64());
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub(crate) fn venv_python() -> PathBuf {
    root().join(".venv/bin/python")
}

fn has_python_package() -> bool {
    root().join("python/pyproject.toml").exists()
}

/// Debian packages the tests need, with a binary each provides: promtool
/// checks the Prometheus text; `ip` makes the network namespaces of
/// snakepit-pool's `netns_multi_host` test.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[("prometheus", "promtool"), ("iproute2", "ip")];

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

fn ensure_debian_packages() -> Result {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, bin)| !on_path(bin))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    if !on_path("apt-get") {
        return Err(format!(
            "the tests need the Debian packages {missing:?} and apt-get is not available; install them by hand"
        ));
    }
    let install = |update: bool| -> Result {
        if update {
            run(Command::new("apt-get").args(["update", "-q"]))?;
        }
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    install(false).or_else(|_| install(true)).map_err(|e| {
        format!("{e}; the tests need {missing:?} (run as root, or install them by hand)")
    })
}

pub(crate) fn setup() -> Result {
    ensure_debian_packages()?;
    if !has_python_package() {
        println!("no python/ package yet: nothing to set up");
        return Ok(());
    }
    let root = root();
    let py = venv_python();
    if !py.exists() {
        step("creating the Python venv in .venv");
        let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(system).args(["-m", "venv", ".venv"]))?;
    }
    // Reinstall only when the package metadata changed. The install is
    // editable through maturin (the build backend of python/): the venv
    // imports snakepit_bridge from python/, and maturin puts the native
    // module there (python/snakepit_bridge/_native.abi3.so, gitignored).
    let pyproject = std::fs::read(root.join("python/pyproject.toml"))
        .map_err(|e| format!("cannot read python/pyproject.toml: {e}"))?;
    let stamp = root.join(".venv/.snakepit-installed");
    let digest = format!("{:x}", fnv1a(&pyproject));
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(digest.as_str()) {
        step("installing python/ (editable, maturin) and its dev tools into .venv");
        run(Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "--upgrade",
            "pip",
        ]))?;
        unlink_native();
        run(Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-e",
                "./python[dev]",
            ])
            .env("CARGO_TARGET_DIR", target_dir()))?;
        std::fs::write(&stamp, digest).map_err(|e| format!("cannot write {stamp:?}: {e}"))?;
    }
    build_native()?;
    compile_bytecode(&py)?;
    println!("Python ready: {}", py.display());
    Ok(())
}

/// Compiles python/snakepit_bridge to bytecode (`__pycache__`, gitignored),
/// as pip does when it installs a wheel. The editable install imports the
/// sources from python/, and with `PYTHONDONTWRITEBYTECODE` set no import
/// writes the cache: every worker would compile the whole package again
/// before its ready line (about as long as all its other imports). A
/// source edited later is still read as source (its cache no longer
/// matches) until the next setup.
fn compile_bytecode(py: &Path) -> Result {
    step("compiling python/snakepit_bridge to bytecode");
    run(Command::new(py).args(["-m", "compileall", "-q", "python/snakepit_bridge"]))
}

/// Removes python/snakepit_bridge/_native.abi3.so before maturin writes it:
/// maturin rewrites the file in place, and a worker running the old module
/// keeps its mapping of an unlinked file (not of one rewritten under it).
fn unlink_native() {
    let _ = std::fs::remove_file(root().join("python/snakepit_bridge/_native.abi3.so"));
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else `target/`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Rebuilds `snakepit_bridge._native` (python/native, the worker's native
/// call server) in place after a change to its crate: the same maturin
/// build as the wheel's (release, pyproject's `[tool.maturin]`), written
/// into python/snakepit_bridge/ where the editable install imports it. A
/// no-op build takes a second or two.
fn build_native() -> Result {
    step("building the worker's native call server (maturin develop, release)");
    unlink_native();
    run(Command::new(root().join(".venv/bin/maturin"))
        .args([
            "develop",
            "--quiet",
            "--skip-install",
            "-m",
            "python/native/Cargo.toml",
        ])
        .env("VIRTUAL_ENV", root().join(".venv"))
        .env("CARGO_TARGET_DIR", target_dir()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn test(args: &[String]) -> Result {
    let started = Instant::now();
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("cargo clippy --all-targets -D warnings");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    deps::check_features()?;
    let python = has_python_package();
    if python {
        step("Python setup");
        setup()?;
        step("ruff check python/");
        run(Command::new(root().join(".venv/bin/ruff")).args(["check", "python"]))?;
    }
    step("cargo test --workspace");
    let mut t = cargo();
    t.args([
        "test",
        "--workspace",
        "--features=snakepit-pool/opentelemetry,snakepit-sinks/otel-sdk",
    ])
    .args(args);
    if python {
        t.env("SNAKEPIT_PYTHON", venv_python());
    }
    run(&mut t)?;
    if python && root().join("python/tests").exists() {
        step("pytest python/tests");
        run(Command::new(venv_python()).args(["-m", "pytest", "python/tests", "-q"]))?;
        let wheel = package::wheel_check(false)?;
        example::getting_started(&wheel)?;
    }
    step("tidy");
    tidy()?;
    println!(
        "\nxtask test: everything passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn demo(args: &[String]) -> Result {
    setup()?;
    step("building and running the demo (snakepit-pool/examples/demo/main.rs)");
    run(cargo()
        .args([
            "run",
            "-q",
            "-p",
            "snakepit-pool",
            "--example",
            "demo",
            "--",
        ])
        .args(args)
        .env("SNAKEPIT_PYTHON", venv_python()))
}

/// `cargo xtask soak [--quick] [...]`: builds the jsonl sink plugin and the
/// soak example in release and runs it (see `snakepit-pool/examples/soak.rs`).
fn soak(args: &[String]) -> Result {
    setup()?;
    step("building the jsonl sink plugin and the soak (release)");
    run(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "snakepit-plugin-jsonl",
    ]))?;
    run(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "snakepit-pool",
        "--example",
        "soak",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let plugin = target.join("release/libsnakepit_plugin_jsonl.so");
    step("soak");
    run(Command::new(target.join("release/examples/soak"))
        .arg("--plugin")
        .arg(plugin)
        .args(args)
        .env("SNAKEPIT_PYTHON", venv_python())
        .env("SOAK_DIR", target.join("soak")))
}

fn tidy() -> Result {
    codegen::check(&root())?;
    println!("tidy: generated docs are fresh");
    if has_python_package() {
        let floor = package::python_floor(&root())?;
        println!("tidy: one Python floor, 3.{floor} (requires-python, ruff, abi3)");
        package::check_stubs(&root())?;
        println!("tidy: the checked-in Python gRPC stubs match proto/");
    }
    coverage::check(&root())?;
    println!("tidy: every catalog event is emitted by code and observed by a test");
    example::check_doc(&root())?;
    example::check_lock(&root())?;
    println!(
        "tidy: docs/getting-started.md shows examples/getting-started, locked as the workspace"
    );
    deps::check_duplicates(&root())?;
    println!("tidy: Cargo.lock holds one version of each crate (but the allowlist)");
    tidy::check(&root())?;
    println!(
        "tidy: every dependency, rust-version and license comes from the workspace, \
         the Python package states the same license, manifests name no owners"
    );
    Ok(())
}
