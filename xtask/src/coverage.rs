//! `tidy`: every catalog event is emitted by some code path and observed by
//! some test. The reference system's docs listed events its code never
//! emitted; this check keeps the catalog honest.
//!
//! The rule is textual, deliberately simple:
//! * emitted: the event's constant (`POOL_INITIALIZED`) is used in a crate's
//!   `src/` other than the catalog itself, or, for a Python event, its wire
//!   name stem (`call`, `tool.execution`, `memory.sampled`) appears as a
//!   string in `python/snakepit_bridge/`;
//! * observed: its full name or its constant appears in a test (`tests/`,
//!   `benches/` excluded, or `python/tests/`).

use std::path::{Path, PathBuf};

use snakepit_core::{Catalog, Origin};

use crate::Result;

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if !matches!(name, "target" | "generated" | ".venv" | "node_modules")
                && !name.starts_with('.')
            {
                files(&p, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(p);
        }
    }
}

fn read_all(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

fn const_name(full: &str) -> String {
    full.trim_start_matches("snakepit.")
        .replace('.', "_")
        .to_ascii_uppercase()
}

/// Checks the catalog against the code and the tests.
pub fn check(root: &Path) -> Result {
    let mut rs = Vec::new();
    files(root, ".rs", &mut rs);
    let is_test = |p: &Path| p.components().any(|c| c.as_os_str() == "tests");
    let is_src = |p: &Path| {
        p.components().any(|c| c.as_os_str() == "src")
            && !p.ends_with("snakepit-core/src/builtin.rs")
            && !p.starts_with(root.join("xtask"))
    };
    let src: Vec<PathBuf> = rs
        .iter()
        .filter(|p| is_src(p) && !is_test(p))
        .cloned()
        .collect();
    let tests: Vec<PathBuf> = rs.iter().filter(|p| is_test(p)).cloned().collect();
    let mut py_src = Vec::new();
    files(&root.join("python/snakepit_bridge"), ".py", &mut py_src);
    let mut py_tests = Vec::new();
    files(&root.join("python/tests"), ".py", &mut py_tests);
    let (src, tests, py_src, py_tests) = (
        read_all(&src),
        read_all(&tests),
        read_all(&py_src),
        read_all(&py_tests),
    );

    let mut problems = Vec::new();
    for (_, spec) in Catalog::builtin().iter() {
        let konst = const_name(&spec.name);
        let used_in_src = src.contains(&konst);
        let emitted = used_in_src
            || (spec.origin == Origin::Python && {
                let wire = spec.name.trim_start_matches("snakepit.python.");
                let stem = ["start", "stop", "exception"]
                    .iter()
                    .find_map(|s| wire.strip_suffix(&format!(".{s}")))
                    .unwrap_or(wire);
                py_src.contains(&format!("\"{stem}")) || py_src.contains(&format!("'{stem}"))
            });
        if !emitted {
            problems.push(format!(
                "{}: no code emits it ({konst} unused in src/)",
                spec.name
            ));
        }
        let observed = tests.contains(spec.name.as_ref())
            || tests.contains(&konst)
            || (spec.origin == Origin::Python
                && py_tests.contains(spec.name.trim_start_matches("snakepit.python.")));
        if !observed {
            problems.push(format!("{}: no test observes it", spec.name));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the catalog and the code disagree:\n  {}",
            problems.join("\n  ")
        ))
    }
}
