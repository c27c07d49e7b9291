//! Deprecated config keys: still read, each reported as a [`ConfigWarning`]
//! naming its replacement; and the duration keys written as anything but a
//! duration string.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::toml_lines::line_of_key;

/// The `[[sinks]]` keys renamed to the duration dialect: old integer
/// milliseconds key, new duration key, and the sink kind that has them.
const RENAMED: [(&str, &str); 2] = [
    ("export_interval_ms", "export_interval"),
    ("export_timeout_ms", "export_timeout"),
];

/// A deprecated key the config was read with: what it said still applies,
/// but the key should be replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The config file.
    pub file: PathBuf,
    /// The line (from 1) of the key, when known.
    pub line: Option<usize>,
    /// The deprecated key, e.g. `sinks[1].export_interval_ms`.
    pub key: String,
    /// What to write instead, e.g. `export_interval = "1000ms"`.
    pub replacement: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        write!(
            f,
            ": `{}` is deprecated; write `{}` instead",
            self.key, self.replacement
        )
    }
}

/// The warnings for the deprecated keys of `text` (already deserialized
/// without error), or the error for a duration key whose value is not a
/// duration string, or a deprecated key whose value is not an integer.
pub(crate) fn check(text: &str, file: &Path) -> Result<Vec<ConfigWarning>, ConfigError> {
    let Ok(root) = text.parse::<toml::Table>() else {
        return Ok(Vec::new());
    };
    let sinks = root.get("sinks").and_then(toml::Value::as_array);
    let mut warnings = Vec::new();
    for (i, sink) in sinks.into_iter().flatten().enumerate() {
        let Some(table) = sink.as_table() else {
            continue;
        };
        for (old, new) in RENAMED {
            let invalid = |key: &str, message: String| {
                let key = format!("sinks[{i}].{key}");
                let message = match line_of_key(text, &key) {
                    Some(line) => format!("{message} (line {line})"),
                    None => message,
                };
                ConfigError::Invalid {
                    file: file.to_path_buf(),
                    key,
                    message,
                }
            };
            if let Some(value) = table.get(new) {
                if !value.is_str() {
                    return Err(invalid(
                        new,
                        format!(
                            "got {} {}, not a duration string; write e.g. `{new} = \"1s\"` or \"250ms\"",
                            article(value.type_str()),
                            value.type_str()
                        ),
                    ));
                }
            }
            if let Some(value) = table.get(old) {
                let Some(ms) = value.as_integer() else {
                    return Err(invalid(
                        old,
                        format!(
                            "got {} {}, not an integer of milliseconds; this key is deprecated, \
                             write `{new} = \"1s\"` instead",
                            article(value.type_str()),
                            value.type_str()
                        ),
                    ));
                };
                let key = format!("sinks[{i}].{old}");
                warnings.push(ConfigWarning {
                    file: file.to_path_buf(),
                    line: line_of_key(text, &key),
                    key,
                    replacement: format!("{new} = \"{ms}ms\""),
                });
            }
        }
    }
    Ok(warnings)
}

/// `a` or `an` before a TOML type name.
fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}
