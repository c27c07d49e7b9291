//! examples/getting-started: the crate of docs/getting-started.md, outside
//! the workspace. `tidy` checks that the doc's blocks are its files and that
//! its Cargo.lock pins only versions of the workspace's; `test` lints it and
//! runs its test against a wheel of python/ installed into a fresh venv
//! outside the repository.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{cargo, root, run, step, target_dir, Result};

/// The crate, relative to the workspace root.
pub(crate) const CRATE: &str = "examples/getting-started";
/// The walk-through, relative to the workspace root.
const DOC: &str = "docs/getting-started.md";
/// The crate's files the doc shows, each after a line holding "`<file>`:".
/// The doc shows the whole file, but for Cargo.toml, of which it shows a
/// part (its dependencies).
const SHOWN: &[&str] = &[
    "Cargo.toml",
    "adapters/greeter.py",
    "src/main.rs",
    "tests/greet.rs",
];
/// The doc's path of the checkout, the crate's one.
const CHECKOUT: (&str, &str) = ("../snakepit-rs/", "../../");

/// The first fenced code block after the line holding "`file`:".
fn block_after<'a>(doc: &'a str, file: &str) -> Option<&'a str> {
    let intro = doc.find(&format!("`{file}`:"))?;
    let rest = &doc[intro..];
    let open = rest.find("\n```")? + 1;
    let body = rest[open..].split_once('\n')?.1;
    let close = body.find("\n```")? + 1;
    Some(&body[..close])
}

/// Fails unless each of [`SHOWN`] is shown in the doc as it is in the crate.
pub(crate) fn check_doc(root: &Path) -> Result {
    let doc =
        std::fs::read_to_string(root.join(DOC)).map_err(|e| format!("cannot read {DOC}: {e}"))?;
    for file in SHOWN {
        let path = root.join(CRATE).join(file);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
        let block = block_after(&doc, file)
            .ok_or_else(|| format!("{DOC} shows no `{file}`: (a line naming it, then a block)"))?
            .replace(CHECKOUT.0, CHECKOUT.1);
        let same = if *file == "Cargo.toml" {
            text.contains(&block)
        } else {
            text == block
        };
        if !same {
            return Err(format!(
                "the block of `{file}` in {DOC} differs from {CRATE}/{file}: the doc shows \
                 the crate's code (with {:?} for {:?}); change both",
                CHECKOUT.0, CHECKOUT.1
            ));
        }
    }
    Ok(())
}

/// The `(name, version)` of each package of a Cargo.lock.
fn locked(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{path:?} is not valid TOML: {e}"))?;
    let packages = table
        .get("package")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| format!("{path:?} has no [[package]]"))?;
    Ok(packages
        .iter()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let version = p.get("version")?.as_str()?;
            Some((name.to_string(), version.to_string()))
        })
        .collect())
}

/// Fails when the crate's Cargo.lock pins a version the workspace's does
/// not (a second copy of a crate to compile, and one not built offline).
pub(crate) fn check_lock(root: &Path) -> Result {
    let workspace = locked(&root.join("Cargo.lock"))?;
    let own = locked(&root.join(CRATE).join("Cargo.lock"))?;
    let name = locked_name(root)?;
    let extra: Vec<String> = own
        .iter()
        .filter(|p| p.0 != name && !workspace.contains(p))
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{CRATE}/Cargo.lock pins versions the workspace's Cargo.lock does not: {}; \
             copy Cargo.lock over it and run `cargo metadata --offline --manifest-path \
             {CRATE}/Cargo.toml` (keeps the workspace's versions)",
            extra.join(", ")
        ))
    }
}

fn locked_name(root: &Path) -> Result<String> {
    let path = root.join(CRATE).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{path:?} is not valid TOML: {e}"))?;
    table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{path:?} has no package name"))
}

/// A directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The step of `test`: fmt and clippy of the crate, then its test with
/// `SNAKEPIT_WHEEL` set to `wheel` (the wheel check's) and the test venv
/// made in a new temp dir, then the unit tests of `snakepit_pool::test_util`. The crate builds in the workspace's target dir,
/// reusing its compiled dependencies.
pub(crate) fn getting_started(wheel: &Path) -> Result {
    let started = Instant::now();
    let root = root();
    let manifest = root.join(CRATE).join("Cargo.toml");
    let target = target_dir();
    step(&format!("{CRATE}: cargo fmt --check, clippy -D warnings"));
    run(cargo()
        .args(["fmt", "--manifest-path"])
        .arg(&manifest)
        .args(["--", "--check"]))?;
    run(cargo()
        .args([
            "clippy",
            "--quiet",
            "--locked",
            "--all-targets",
            "--manifest-path",
        ])
        .arg(&manifest)
        .args(["--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", &target))?;

    let scratch = Scratch(
        std::env::temp_dir().join(format!("snakepit-getting-started-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&scratch.0);

    step(&format!(
        "{CRATE}: cargo test (a venv from {}, in {})",
        wheel.display(),
        scratch.0.display()
    ));
    run(cargo()
        .args(["test", "--quiet", "--locked", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .env("SNAKEPIT_WHEEL", wheel)
        .env("SNAKEPIT_TEST_VENV_DIR", scratch.0.join("venvs"))
        .env_remove("SNAKEPIT_PYTHON")
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYTHONPATH"))?;
    // The helper's own unit tests (error paths, cache key): `cargo test
    // --workspace` builds snakepit-pool without the feature.
    step("snakepit-pool test_util unit tests (--features test-util)");
    run(cargo()
        .args(["test", "--quiet", "-p", "snakepit-pool", "--features"])
        .args(["test-util", "--lib", "test_util::"])
        .env("CARGO_TARGET_DIR", &target))?;
    println!(
        "    {CRATE}: passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_found_after_the_line_naming_its_file() {
        let doc =
            "x\n`a.rs`: the code\n\n```rust\nfn a() {}\n```\n\n`b.py`:\n```python\nb = 1\n```\n";
        assert_eq!(block_after(doc, "a.rs"), Some("fn a() {}\n"));
        assert_eq!(block_after(doc, "b.py"), Some("b = 1\n"));
        assert_eq!(block_after(doc, "c.py"), None);
    }

    #[test]
    fn the_walk_through_shows_the_crate_and_its_lock_is_the_workspaces() {
        check_doc(&root()).unwrap();
        check_lock(&root()).unwrap();
    }
}
