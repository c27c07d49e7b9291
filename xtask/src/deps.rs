//! Dependency checks: one version of each crate in Cargo.lock (but for an
//! allowlist), and every Cargo feature of snakepit-sinks building alone.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{cargo, run, step, Result};

/// Crates Cargo.lock may hold in more than one version, and why. Any other
/// crate in two versions fails `tidy`: align the versions instead (find
/// who pulls each with `cargo tree -i <crate>@<version> -e all --target
/// all`), or add it here with the reason.
const ALLOWED_DUPLICATES: &[(&str, &str)] = &[
    // ureq 2's `tls` feature pulls webpki-roots 0.26, a shim that re-exports
    // 1.0: one set of roots, compiled once (and unused: the OTel sink gives
    // ureq its own rustls config, system roots or the configured CA).
    ("webpki-roots", "ureq 2 pulls the 0.26 shim over 1.0"),
    // 0.15 through petgraph (prost-build: snakepit-grpc's build script
    // only), 0.16 through metrics-util (the Prometheus sink), 0.17 through
    // indexmap.
    (
        "hashbrown",
        "petgraph, metrics-util and indexmap each pin their own",
    ),
    (
        "foldhash",
        "the hasher of hashbrown 0.15 and 0.16 (see hashbrown)",
    ),
    // 0.2 through ring (TLS), 0.3 through rand 0.9 (metrics-util) and
    // snakepit-pool's own; 0.4 through tempfile (prost-build and tests).
    (
        "getrandom",
        "ring uses 0.2, rand 0.9 and snakepit-pool 0.3, tempfile 0.4",
    ),
    ("r-efi", "UEFI targets only: one per getrandom version"),
    // ring (rustls' provider under tonic's TLS) pins windows-sys 0.52;
    // the rest of the tree is on a newer one.
    ("windows-sys", "Windows targets only: ring pins 0.52"),
    // 0.22 through tonic, ureq and the Prometheus exporter; 0.23 through
    // pem (rcgen: test certificates, snakepit-testkit only).
    (
        "base64",
        "pem (rcgen, test certificates) is on 0.23, the rest on 0.22",
    ),
    // Build time only: tonic-build formats with prettyplease 0.2 (syn 2),
    // prost-build with 0.3 (syn 3).
    (
        "prettyplease",
        "tonic-build and prost-build (build scripts only)",
    ),
    ("syn", "proc macros and build scripts on syn 2 and syn 3"),
    // 0.13 through asn1-rs (x509-parser), which Cargo.lock lists only
    // because rcgen's `ring` feature names `x509-parser?/verify`: it is
    // never built (`cargo tree -i synstructure@0.13.2` prints nothing).
    (
        "synstructure",
        "0.13 only in Cargo.lock through rcgen's weak x509-parser feature; never built",
    ),
];

/// Each crate's versions in a Cargo.lock text, by name.
fn lock_versions(lock: &str) -> BTreeMap<String, Vec<String>> {
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut name: Option<String> = None;
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            name = None;
        } else if let Some(v) = line.strip_prefix("name = ") {
            name = Some(v.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("version = ") {
            if let Some(n) = name.take() {
                versions
                    .entry(n)
                    .or_default()
                    .push(v.trim_matches('"').to_string());
            }
        }
    }
    versions
}

/// The problems with a Cargo.lock text: crates in several versions that
/// are not allowed to be, and allowlist entries that are no longer needed.
fn duplicate_problems(lock: &str, allowed: &[(&str, &str)]) -> Vec<String> {
    let versions = lock_versions(lock);
    let mut problems = Vec::new();
    for (name, v) in &versions {
        if v.len() > 1 && !allowed.iter().any(|(a, _)| a == name) {
            problems.push(format!(
                "Cargo.lock holds {name} in {} versions ({}): align them (see who pulls each \
                 with `cargo tree -i {name}@{} -e all --target all`), or add {name} with the \
                 reason to ALLOWED_DUPLICATES in xtask/src/deps.rs",
                v.len(),
                v.join(", "),
                v[0],
            ));
        }
    }
    for (name, _) in allowed {
        if versions.get(*name).map_or(0, Vec::len) < 2 {
            problems.push(format!(
                "{name} is in ALLOWED_DUPLICATES (xtask/src/deps.rs) but Cargo.lock holds one \
                 version of it at most: remove the entry"
            ));
        }
    }
    problems
}

/// Fails when Cargo.lock holds a crate in several versions outside
/// [`ALLOWED_DUPLICATES`].
pub(crate) fn check_duplicates(root: &Path) -> Result {
    let path = root.join("Cargo.lock");
    let lock = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let problems = duplicate_problems(&lock, ALLOWED_DUPLICATES);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The Cargo features of snakepit-sinks: one per sink kind, and `otel-sdk`
/// (the OTel sink into the application's SDK pipeline).
pub(crate) const SINK_FEATURES: &[&str] = &["log", "prometheus", "otel", "otel-sdk", "plugin"];

/// `cargo clippy -p snakepit-sinks --no-default-features` alone and with
/// each feature alone, warnings denied: each feature must build, cleanly,
/// with only its own dependencies; then the crate's unit tests with the
/// `log` feature alone. (Clippy rather than `cargo check`
/// because `-D warnings` passed to it does not rebuild the dependencies,
/// as `RUSTFLAGS` would.)
pub(crate) fn check_features() -> Result {
    let mut sets: Vec<Option<&str>> = vec![None];
    sets.extend(SINK_FEATURES.iter().copied().map(Some));
    for feature in sets {
        let mut cmd = cargo();
        cmd.args([
            "clippy",
            "-p",
            "snakepit-sinks",
            "--quiet",
            "--no-default-features",
        ]);
        match feature {
            Some(f) => {
                step(&format!("snakepit-sinks with feature `{f}` alone"));
                cmd.args(["--features", f]);
            }
            None => step("snakepit-sinks without features"),
        }
        run(cmd.args(["--", "-D", "warnings"]))?;
    }
    // The crate's unit tests with most kinds off: entries of those kinds
    // are refused with an error naming the feature.
    step("snakepit-sinks unit tests with feature `log` alone");
    run(cargo().args([
        "test",
        "-p",
        "snakepit-sinks",
        "--quiet",
        "--lib",
        "--no-default-features",
        "--features",
        "log",
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
version = 4

[[package]]
name = "a"
version = "1.0.0"

[[package]]
name = "a"
version = "2.0.0"
dependencies = [
 "b",
]

[[package]]
name = "b"
version = "0.1.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

    #[test]
    fn a_crate_in_two_versions_fails_unless_allowed() {
        let problems = duplicate_problems(LOCK, &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("a in 2 versions (1.0.0, 2.0.0)"),
            "{problems:?}"
        );
        assert!(duplicate_problems(LOCK, &[("a", "why")]).is_empty());
    }

    #[test]
    fn an_allowlist_entry_no_longer_needed_fails() {
        let problems = duplicate_problems(LOCK, &[("a", "why"), ("b", "why")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("b is in ALLOWED_DUPLICATES"),
            "{problems:?}"
        );
    }
}
