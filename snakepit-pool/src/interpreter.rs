//! Which Python interpreter runs a pool's workers, and the rule that chose it.
//!
//! The first of these that is set wins:
//!
//! 1. [`PoolConfig::python`](crate::PoolConfig::python) (`python` in a TOML
//!    config), when set explicitly;
//! 2. the environment variable `SNAKEPIT_PYTHON`;
//! 3. an active virtual environment: `$VIRTUAL_ENV/bin/python`;
//! 4. `python3`, looked up on `PATH`.
//!
//! Empty values count as unset. The environment is read when a worker
//! starts (not when the config is built). The interpreter needs the
//! `snakepit_bridge` package (python/ of this repository, or its wheel):
//! when it lacks it, the startup error says so, names the rule that chose
//! the interpreter and gives the `pip install` command.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The rule that chose a pool's interpreter (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PythonSource {
    /// [`PoolConfig::python`](crate::PoolConfig::python), set explicitly.
    Config,
    /// The environment variable `SNAKEPIT_PYTHON`.
    SnakepitPython,
    /// `$VIRTUAL_ENV/bin/python`, the active virtual environment's.
    VirtualEnv,
    /// Nothing set: `python3` from `PATH`.
    Default,
}

impl fmt::Display for PythonSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PythonSource::Config => "set by the pool config's `python`",
            PythonSource::SnakepitPython => "from SNAKEPIT_PYTHON",
            PythonSource::VirtualEnv => "from VIRTUAL_ENV, the active venv",
            PythonSource::Default => {
                "the default: no `python` in the pool config, SNAKEPIT_PYTHON and \
                 VIRTUAL_ENV unset"
            }
        })
    }
}

/// The interpreter a pool runs its workers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPython {
    /// The program run as `<path> -m snakepit_bridge.worker ...`: a path, or
    /// a bare name looked up on `PATH` (`python3`).
    pub path: PathBuf,
    /// The rule that chose it.
    pub source: PythonSource,
}

impl fmt::Display for ResolvedPython {
    /// `/x/bin/python (from VIRTUAL_ENV, the active venv)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.source)
    }
}

/// Resolves the interpreter from `configured` (the pool config's `python`)
/// and this process's environment, in the order of the [module docs](self).
pub fn resolve_python(configured: Option<&Path>) -> ResolvedPython {
    resolve_python_with(configured, |key| std::env::var_os(key))
}

/// [`resolve_python`] with the environment read through `env` (a variable
/// name to its value).
pub fn resolve_python_with(
    configured: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> ResolvedPython {
    let set = |key: &str| env(key).filter(|v| !v.is_empty());
    if let Some(path) = configured.filter(|p| !p.as_os_str().is_empty()) {
        return ResolvedPython {
            path: path.to_path_buf(),
            source: PythonSource::Config,
        };
    }
    if let Some(path) = set("SNAKEPIT_PYTHON") {
        return ResolvedPython {
            path: path.into(),
            source: PythonSource::SnakepitPython,
        };
    }
    if let Some(venv) = set("VIRTUAL_ENV") {
        return ResolvedPython {
            path: PathBuf::from(venv).join("bin/python"),
            source: PythonSource::VirtualEnv,
        };
    }
    ResolvedPython {
        path: PathBuf::from("python3"),
        source: PythonSource::Default,
    }
}

/// What Python prints when `-m snakepit_bridge.worker` finds no package.
const NO_PACKAGE: &str = "No module named 'snakepit_bridge'";

/// When a worker's stderr says its interpreter has no `snakepit_bridge`:
/// which interpreter, which rule chose it, and how to install the package.
pub(crate) fn missing_package_hint(python: &ResolvedPython, stderr: &str) -> Option<String> {
    if !stderr.contains(NO_PACKAGE) {
        return None;
    }
    // In a checkout of this repository the package is its python/ directory.
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
    let package = match checkout.join("pyproject.toml").exists() {
        true => checkout
            .canonicalize()
            .unwrap_or(checkout)
            .display()
            .to_string(),
        false => "<snakepit-rs checkout>/python".to_string(),
    };
    Some(format!(
        "the interpreter {python} has no snakepit_bridge: install it with \
         `{} -m pip install {package}` (or a snakepit_bridge wheel), or point the \
         pool at an interpreter that has it",
        python.path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(configured: Option<&str>, vars: &[(&str, &str)]) -> ResolvedPython {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        resolve_python_with(configured.map(Path::new), |key| {
            vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        })
    }

    fn rp(path: &str, source: PythonSource) -> ResolvedPython {
        ResolvedPython {
            path: path.into(),
            source,
        }
    }

    #[test]
    fn the_first_rule_that_is_set_wins() {
        let all = [("SNAKEPIT_PYTHON", "/sp/python"), ("VIRTUAL_ENV", "/venv")];
        assert_eq!(
            resolve(Some("/cfg/python"), &all),
            rp("/cfg/python", PythonSource::Config)
        );
        assert_eq!(
            resolve(None, &all),
            rp("/sp/python", PythonSource::SnakepitPython)
        );
        assert_eq!(
            resolve(None, &all[1..]),
            rp("/venv/bin/python", PythonSource::VirtualEnv)
        );
        assert_eq!(resolve(None, &[]), rp("python3", PythonSource::Default));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let empty = [("SNAKEPIT_PYTHON", ""), ("VIRTUAL_ENV", "")];
        assert_eq!(
            resolve(Some(""), &empty),
            rp("python3", PythonSource::Default)
        );
        assert_eq!(
            resolve(Some(""), &[("SNAKEPIT_PYTHON", ""), ("VIRTUAL_ENV", "/v")]),
            rp("/v/bin/python", PythonSource::VirtualEnv)
        );
    }

    #[test]
    fn the_hint_names_the_interpreter_the_rule_and_the_install_command() {
        let python = rp("/v/bin/python", PythonSource::VirtualEnv);
        let stderr = "/v/bin/python: Error while finding module specification for \
                      'snakepit_bridge.worker' (ModuleNotFoundError: No module named 'snakepit_bridge')";
        let hint = missing_package_hint(&python, stderr).unwrap();
        assert!(
            hint.starts_with("the interpreter /v/bin/python (from VIRTUAL_ENV"),
            "{hint}"
        );
        assert!(hint.contains("`/v/bin/python -m pip install /"), "{hint}");
        // A missing submodule is another problem (a broken install).
        let other = "ModuleNotFoundError: No module named 'snakepit_bridge.generated'";
        assert_eq!(missing_package_hint(&python, other), None);
    }
}
