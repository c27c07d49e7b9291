//! ARCHITECTURE.md names only files that exist.
//!
//! The rule, strict enough that a renamed or deleted file fails `tidy`:
//!
//! * a *path* is a code span (text in single backticks, outside fenced
//!   blocks) with no spaces, `<`, `>` or `*`, that ends in `/` (a
//!   directory) or in one of [`EXTENSIONS`]; any other code span (a type, a
//!   command, a key) is not checked;
//! * a `###` heading whose first code span names a directory (`` `snakepit-pool` ``,
//!   `` `python/` ``) opens that directory's section, until the next heading
//!   of level 1 to 3; other headings close it;
//! * a path is found when it is a file of the repository (one git tracks,
//!   or a new one it does not ignore), or a directory holding one, from the
//!   repository root; inside a section it may also be written as
//!   the trailing whole components of such a path under the section's
//!   directory (`process.rs` for `snakepit-pool/src/process.rs`,
//!   `transport/aio.py` under `python/`).
//!
//! Every path that is not found is a problem, named with its line.

use std::path::Path;
use std::process::Command;

use crate::Result;

/// The endings of code spans that name files.
pub(crate) const EXTENSIONS: &[&str] =
    &[".rs", ".py", ".md", ".proto", ".toml", ".json", ".h", ".c"];

/// The code spans of a heading line (text between pairs of backticks).
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// Whether a code span is a path the check holds to the rule above.
fn is_path(span: &str) -> bool {
    !span.is_empty()
        && !span.contains([' ', '\n', '<', '>', '*'])
        && (span.ends_with('/') || EXTENSIONS.iter().any(|e| span.ends_with(e)))
}

/// Whether `path` (a directory when it ends in `/`) is `file` or a
/// directory holding it.
fn names(path: &str, file: &str) -> bool {
    if path.ends_with('/') {
        file.starts_with(path)
    } else {
        file == path
    }
}

/// Whether `path` is found under `dir` (no trailing `/`), from the root or
/// as trailing whole components of a repository path under `dir`.
fn found(path: &str, dir: Option<&str>, files: &[String]) -> bool {
    if files.iter().any(|f| names(path, f)) {
        return true;
    }
    let Some(dir) = dir else { return false };
    let prefix = format!("{dir}/");
    files
        .iter()
        .filter_map(|f| f.strip_prefix(&prefix))
        .any(|rel| {
            // Every path under `dir`, and every directory above it,
            // read from each component boundary.
            let mut starts = vec![0];
            starts.extend(rel.match_indices('/').map(|(i, _)| i + 1));
            starts.iter().any(|&s| names(path, &rel[s..]))
        })
}

/// The paths of `text` (ARCHITECTURE.md) not found among `files` (the
/// repository's files, relative to its root), as
/// `ARCHITECTURE.md:<line>: ...` problems.
pub(crate) fn stale_paths(text: &str, files: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut section: Option<String> = None;
    let mut fenced = false;
    // A code span may run over a line break: (its line, its text so far).
    let mut open: Option<(usize, String)> = None;
    let mut spans = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if open.is_none() && line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if open.is_none() && (1..=3).contains(&level) && line[level..].starts_with(' ') {
            section = None;
            if level == 3 {
                section = code_spans(line)
                    .first()
                    .map(|s| s.trim_end_matches('/').to_string())
                    .filter(|dir| found(&format!("{dir}/"), None, files));
            }
        }
        if let Some((_, span)) = open.as_mut() {
            span.push('\n');
        }
        for (i, part) in line.split('`').enumerate() {
            if i > 0 {
                open = match open.take() {
                    Some((at, span)) => {
                        spans.push((at, span, section.clone()));
                        None
                    }
                    None => Some((n, String::new())),
                };
            }
            if let Some((_, span)) = open.as_mut() {
                span.push_str(part);
            }
        }
    }
    for (n, span, section) in spans {
        if is_path(&span) && !found(&span, section.as_deref(), files) {
            let place = match &section {
                Some(dir) => format!("from the root or under {dir}/"),
                None => "from the root".to_string(),
            };
            problems.push(format!(
                "ARCHITECTURE.md:{}: `{span}` names no file of the repository ({place}); \
                 name the file as it is now, or drop it from the map",
                n + 1
            ));
        }
    }
    problems
}

/// Checks ARCHITECTURE.md of the repository at `root` against its files:
/// those git tracks or would track (not ignored), and that exist.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let stdout = super::stdout_of(
        Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .current_dir(root),
        "git ls-files",
    )?;
    let files: Vec<String> = String::from_utf8_lossy(&stdout)
        .split('\0')
        .filter(|f| !f.is_empty() && root.join(f).exists())
        .map(str::to_string)
        .collect();
    let text = super::read(&root.join("ARCHITECTURE.md"))?;
    Ok(stale_paths(&text, &files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<String> {
        [
            "README.md",
            "docs/decisions/README.md",
            "crate-a/src/lib.rs",
            "crate-a/src/wire/encode.rs",
            "crate-a/abi/include/sink.h",
            "python/pkg/worker/cli.py",
        ]
        .map(String::from)
        .to_vec()
    }

    const MAP: &str = "\
# Architecture

See `README.md` and `docs/decisions/`; `cargo xtask tidy` is a command.

```
`gone.rs` in a fenced block is not checked
```

### `crate-a`
`lib.rs` is the root; `wire/` and `encode.rs`, `wire/encode.rs`,
`src/wire/encode.rs`, `abi/include/`; `Pool::new`, `<socket>.calls`.

### `python/`
`worker/cli.py`, `pkg/`, `cli.py`.

## Invariants
`crate-a/src/lib.rs` from the root.
";

    #[test]
    fn a_map_naming_existing_files_passes() {
        assert_eq!(stale_paths(MAP, &files()), Vec::<String>::new());
    }

    #[test]
    fn a_stale_name_is_reported_with_its_line() {
        let map = MAP.replace("`lib.rs` is the root", "`unary.rs` is the root");
        let problems = stale_paths(&map, &files());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("ARCHITECTURE.md:10: `unary.rs` names no file of the repository"),
            "{problems:?}"
        );
        assert!(problems[0].contains("under crate-a/"), "{problems:?}");
    }

    #[test]
    fn a_name_is_found_only_under_its_section() {
        // `cli.py` is under python/, not under crate-a/, and a section's
        // short names do not reach past the next heading.
        let map = MAP.replace("`lib.rs` is the root", "`cli.py` is the root");
        assert_eq!(stale_paths(&map, &files()).len(), 1);
        let map = MAP.replace("`crate-a/src/lib.rs` from", "`lib.rs` from");
        let problems = stale_paths(&map, &files());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("(from the root)"), "{problems:?}");
    }

    #[test]
    fn partial_components_and_missing_directories_are_stale() {
        for stale in [
            "`code.rs`",
            "`ire/encode.rs`",
            "`wire/decode.rs`",
            "`abi/lib/`",
            "`worker.py`",
        ] {
            let map = MAP.replace("`encode.rs`,", &format!("{stale},"));
            assert_eq!(stale_paths(&map, &files()).len(), 1, "{stale}");
        }
        // A file named as a directory, or a directory as a file, is stale too.
        let map = MAP.replace("`wire/`", "`wire/encode.rs/`");
        assert_eq!(stale_paths(&map, &files()).len(), 1);
    }

    #[test]
    fn a_code_span_may_run_over_a_line_break() {
        let map = "Run `cargo\nxtask test` and read `gone.rs`.\n";
        let problems = stale_paths(map, &files());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("ARCHITECTURE.md:2: `gone.rs`"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_heading_naming_no_directory_opens_no_section() {
        let map = MAP.replace("### `crate-a`", "### `crate-b`");
        let problems = stale_paths(&map, &files());
        assert!(
            problems.iter().any(|p| p.contains("`lib.rs`")),
            "{problems:?}"
        );
    }
}
