//! `tidy`: the workspace's manifests and its code map keep their rules.
//!
//! * every dependency of every member comes from `[workspace.dependencies]`
//!   (`name.workspace = true`, optionally with `features` or `optional`);
//! * every member takes `rust-version` (and `license`) from the workspace,
//!   and the workspace's `rust-version` is at least the highest one of the
//!   crates in the lockfile (`cargo metadata`);
//! * the Python package states the workspace's license;
//! * the test kit (`snakepit-testkit`) is only ever a dev-dependency;
//! * manifests carry no comments about who owns what;
//! * ARCHITECTURE.md's code map names only tracked files ([`code_map`]).
//!
//! Each check is a function of a manifest's text, tested on small fixtures
//! below; [`check`] runs them over the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

mod code_map;

/// The dependency tables of a manifest, as dotted names.
const DEP_TABLES: &[&str] = &["dependencies", "dev-dependencies", "build-dependencies"];
/// Keys a member may add to a `workspace = true` dependency.
const MEMBER_KEYS: &[&str] = &["workspace", "features", "optional"];
/// The test and bench helpers' crate, a dev-dependency only.
const TESTKIT: &str = "snakepit-testkit";
/// Words that make a manifest comment a note about who owns what (as do
/// `# --- section ---` banners, which marked whose lines were whose).
const PROCESS_WORDS: &[&str] = &["engineer", "owner"];

fn parse(name: &str, text: &str) -> Result<toml::Table> {
    text.parse::<toml::Table>()
        .map_err(|e| format!("{name} is not valid TOML: {e}"))
}

/// Every dependency table of a manifest (plain and per target), with its
/// dotted name.
fn dependency_tables(manifest: &toml::Table) -> Vec<(String, &toml::Table)> {
    let mut out = Vec::new();
    for t in DEP_TABLES {
        if let Some(table) = manifest.get(*t).and_then(toml::Value::as_table) {
            out.push((t.to_string(), table));
        }
    }
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for (cfg, target) in targets {
            for t in DEP_TABLES {
                if let Some(table) = target.get(*t).and_then(toml::Value::as_table) {
                    out.push((format!("target.{cfg}.{t}"), table));
                }
            }
        }
    }
    out
}

/// Dependencies of the member manifest `name` that are not taken from
/// `[workspace.dependencies]`, or add keys other than `features` and
/// `optional` to it.
pub(crate) fn workspace_dependencies(name: &str, text: &str) -> Result<Vec<String>> {
    let manifest = parse(name, text)?;
    let mut problems = Vec::new();
    for (table_name, table) in dependency_tables(&manifest) {
        for (dep, spec) in table {
            let inherited = spec
                .get("workspace")
                .and_then(toml::Value::as_bool)
                .unwrap_or(false);
            if !inherited {
                problems.push(format!(
                    "{name}: [{table_name}] `{dep}` is not taken from the workspace: write \
                     `{dep}.workspace = true` (adding `features` if needed), declaring it in \
                     the root Cargo.toml's [workspace.dependencies] if it is not there yet"
                ));
                continue;
            }
            if let Some(keys) = spec.as_table() {
                for key in keys.keys().filter(|k| !MEMBER_KEYS.contains(&k.as_str())) {
                    problems.push(format!(
                        "{name}: [{table_name}] `{dep}` sets `{key}` beside `workspace = true`: \
                         only `features` and `optional` belong in a member; set `{key}` in \
                         [workspace.dependencies]"
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// Dependencies on the test kit (`snakepit-testkit`) of the member
/// manifest `name` outside `[dev-dependencies]`: no product code may use it.
pub(crate) fn testkit_only_in_dev(name: &str, text: &str) -> Result<Vec<String>> {
    let manifest = parse(name, text)?;
    Ok(dependency_tables(&manifest)
        .into_iter()
        .filter(|(table, deps)| !table.ends_with("dev-dependencies") && deps.contains_key(TESTKIT))
        .map(|(table, _)| {
            format!("{name}: [{table}] names `{TESTKIT}`, a dev-dependency only: move it to [dev-dependencies]")
        })
        .collect())
}

/// `package.<key>` of the member manifest `name` unless it is
/// `<key>.workspace = true`.
pub(crate) fn inherits_package_key(name: &str, text: &str, key: &str) -> Result<Vec<String>> {
    let manifest = parse(name, text)?;
    let Some(package) = manifest.get("package").and_then(toml::Value::as_table) else {
        return Ok(Vec::new());
    };
    let inherited = package
        .get(key)
        .and_then(|v| v.get("workspace"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    Ok(if inherited {
        Vec::new()
    } else {
        vec![format!(
            "{name}: write `{key}.workspace = true` in [package] (one {key} for the workspace, \
             set in the root Cargo.toml's [workspace.package])"
        )]
    })
}

/// A `major.minor[.patch]` version as comparable numbers.
fn version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.trim().split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The crates whose `rust-version` is above the workspace's `ours`, each as
/// `name version (rust-version N)`.
pub(crate) fn rust_version_too_low(ours: &str, crates: &[(String, String)]) -> Result<Vec<String>> {
    let floor = version(ours).ok_or_else(|| format!("rust-version `{ours}` is not a version"))?;
    Ok(crates
        .iter()
        .filter(|(_, needs)| version(needs).is_some_and(|n| n > floor))
        .map(|(krate, needs)| {
            format!(
                "the workspace's rust-version {ours} is below what {krate} needs ({needs}): \
                 raise [workspace.package] rust-version in the root Cargo.toml"
            )
        })
        .collect())
}

/// The license of the Python package (`pyproject`, the text of
/// python/pyproject.toml) unless it is the workspace's `license`.
pub(crate) fn python_license(license: &str, pyproject: &str) -> Result<Vec<String>> {
    let doc = parse("python/pyproject.toml", pyproject)?;
    let project = doc.get("project");
    let stated = project.and_then(|p| p.get("license")).and_then(|l| {
        l.as_str()
            .or_else(|| l.get("text").and_then(toml::Value::as_str))
    });
    Ok(match stated {
        Some(l) if l == license => Vec::new(),
        Some(l) => vec![format!(
            "python/pyproject.toml: license `{l}` differs from the workspace's `{license}`: \
             one license for the Rust and Python packages"
        )],
        None => vec![format!(
            "python/pyproject.toml: [project] states no license; write `license = \"{license}\"`"
        )],
    })
}

/// Comments of manifest `name` that say who owns or works on what (a
/// manifest describes the build, not the team).
pub(crate) fn process_comments(name: &str, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let comment = line.split_once('#')?.1.to_ascii_lowercase();
            let banner = comment.trim_start().starts_with("---");
            let owner = PROCESS_WORDS.iter().any(|w| comment.contains(w));
            (banner || owner).then(|| {
                format!(
                    "{name}:{}: a comment about ownership, not the build: `{}`",
                    i + 1,
                    line.trim()
                )
            })
        })
        .collect()
}

/// Every Cargo.toml of the repository (root first), skipping build output,
/// the venv, hidden directories and examples/getting-started (a user's
/// project, outside the workspace and its rules).
fn manifests(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&p, out);
                }
            } else if name == "Cargo.toml" {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.retain(|p| !p.starts_with(root.join(crate::example::CRATE)));
    out
}

/// `(name version, rust-version)` of every package `cargo metadata` resolves
/// that states a rust-version.
fn locked_rust_versions(root: &Path) -> Result<Vec<(String, String)>> {
    let stdout = stdout_of(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(root),
        "cargo metadata",
    )?;
    let doc: serde_json::Value = serde_json::from_slice(&stdout)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    let packages = doc["packages"].as_array().cloned().unwrap_or_default();
    Ok(packages
        .iter()
        .filter(|p| p["source"].is_string())
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            let krate = format!("{} {}", p["name"].as_str()?, p["version"].as_str()?);
            Some((krate, needs.to_string()))
        })
        .collect())
}

/// The stdout of `cmd` (called `what` in errors), which must succeed.
fn stdout_of(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Runs every manifest check over the repository at `root`; the error lists
/// every problem, one a line.
pub(crate) fn check(root: &Path) -> Result {
    let mut problems = Vec::new();
    let root_text = read(&root.join("Cargo.toml"))?;
    let workspace = parse("Cargo.toml", &root_text)?;
    let package = |key: &str| {
        workspace
            .get("workspace")
            .and_then(|w| w.get("package"))
            .and_then(|p| p.get(key))
            .and_then(toml::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("Cargo.toml: [workspace.package] has no {key}"))
    };
    let (rust_version, license) = (package("rust-version")?, package("license")?);
    for path in manifests(root) {
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = read(&path)?;
        problems.extend(process_comments(&name, &text));
        if path == root.join("Cargo.toml") {
            continue;
        }
        problems.extend(workspace_dependencies(&name, &text)?);
        problems.extend(testkit_only_in_dev(&name, &text)?);
        problems.extend(inherits_package_key(&name, &text, "rust-version")?);
        problems.extend(inherits_package_key(&name, &text, "license")?);
    }
    problems.extend(rust_version_too_low(
        &rust_version,
        &locked_rust_versions(root)?,
    )?);
    let pyproject = root.join("python/pyproject.toml");
    if pyproject.exists() {
        problems.extend(python_license(&license, &read(&pyproject)?)?);
    }
    problems.extend(code_map::check(root)?);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} problem(s) with the workspace's rules:\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[package]
name = "a"
rust-version.workspace = true
license.workspace = true

[dependencies]
serde.workspace = true
tokio = { workspace = true, features = ["rt"] }
extra = { workspace = true, optional = true }

[target.'cfg(unix)'.dev-dependencies]
libc.workspace = true
"#;

    #[test]
    fn a_manifest_taking_everything_from_the_workspace_passes() {
        assert!(workspace_dependencies("a/Cargo.toml", GOOD)
            .unwrap()
            .is_empty());
        assert!(inherits_package_key("a/Cargo.toml", GOOD, "rust-version")
            .unwrap()
            .is_empty());
        assert!(process_comments("a/Cargo.toml", GOOD).is_empty());
    }

    #[test]
    fn a_dependency_with_its_own_version_is_named_with_its_manifest() {
        let text = "[dependencies]\nserde.workspace = true\nlibc = \"0.2\"\n";
        let problems = workspace_dependencies("b/Cargo.toml", text).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("b/Cargo.toml: [dependencies] `libc`"));
    }

    #[test]
    fn a_path_or_target_dependency_outside_the_workspace_is_named() {
        let text = "[target.'cfg(unix)'.build-dependencies]\n\
                    cc = { version = \"1\" }\n\
                    [dev-dependencies]\n\
                    local = { path = \"../local\" }\n";
        let problems = workspace_dependencies("c/Cargo.toml", text).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("`cc`")));
        assert!(problems.iter().any(|p| p.contains("`local`")));
    }

    #[test]
    fn a_member_overriding_a_workspace_dependency_key_is_named() {
        let text = "[dependencies]\nhyper = { workspace = true, version = \"1\" }\n";
        let problems = workspace_dependencies("d/Cargo.toml", text).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`hyper` sets `version`"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_testkit_outside_dev_dependencies_is_named() {
        let dev = "[dev-dependencies]\nsnakepit-testkit.workspace = true\n";
        assert!(testkit_only_in_dev("g/Cargo.toml", dev).unwrap().is_empty());
        let product = "[dependencies]\nsnakepit-testkit.workspace = true\n";
        let problems = testkit_only_in_dev("g/Cargo.toml", product).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("g/Cargo.toml: [dependencies]"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_member_with_its_own_rust_version_is_named() {
        let text = "[package]\nname = \"e\"\nrust-version = \"1.88\"\n";
        let problems = inherits_package_key("e/Cargo.toml", text, "rust-version").unwrap();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("e/Cargo.toml"));
        let missing = "[package]\nname = \"e\"\n";
        assert_eq!(
            inherits_package_key("e/Cargo.toml", missing, "license")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_rust_version_below_a_locked_crate_is_named() {
        let crates = vec![
            ("tonic 0.14.2".to_string(), "1.88".to_string()),
            ("serde 1.0.200".to_string(), "1.61".to_string()),
        ];
        let problems = rust_version_too_low("1.80", &crates).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("tonic 0.14.2"), "{problems:?}");
        assert!(rust_version_too_low("1.88", &crates).unwrap().is_empty());
        assert!(rust_version_too_low("1.88.0", &crates).unwrap().is_empty());
    }

    #[test]
    fn a_python_license_other_than_the_workspaces_is_named() {
        let mit = "[project]\nname = \"p\"\nlicense = \"MIT\"\n";
        let problems = python_license("Apache-2.0", mit).unwrap();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("`MIT`"), "{problems:?}");
        let same = "[project]\nlicense = { text = \"Apache-2.0\" }\n";
        assert!(python_license("Apache-2.0", same).unwrap().is_empty());
        let none = "[project]\nname = \"p\"\n";
        assert_eq!(python_license("Apache-2.0", none).unwrap().len(), 1);
    }

    #[test]
    fn comments_about_owners_fail_and_comments_about_the_build_pass() {
        let text = "[dependencies]\n\
                    # --- sinks engineer ---\n\
                    a.workspace = true\n\
                    b.workspace = true # owned by the plugins engineer\n\
                    # --- end sinks ---\n\
                    # The /metrics server: a small runtime owned by the listener thread.\n\
                    c.workspace = true\n";
        let problems = process_comments("f/Cargo.toml", text);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("f/Cargo.toml:2:"), "{problems:?}");
        assert!(problems[1].starts_with("f/Cargo.toml:4:"), "{problems:?}");
        assert!(problems[2].starts_with("f/Cargo.toml:5:"), "{problems:?}");
    }

    #[test]
    fn the_repository_has_one_license() {
        let root = crate::root();
        let pyproject = read(&root.join("python/pyproject.toml")).unwrap();
        assert!(python_license("Apache-2.0", &pyproject).unwrap().is_empty());
    }
}
