//! Glob patterns over event names.
//!
//! The rule, shared with the Python worker (which applies the same policy):
//! a pattern is matched against the event's dotted name without its leading
//! `snakepit.` (so `python.*` matches `snakepit.python.call.stop`); a pattern
//! that itself starts with `snakepit.` is matched against the full name.
//! `*` matches any run of characters, dots included; `?` matches one character.

use std::fmt;

use crate::error::PatternError;

/// A compiled glob pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    full: bool,
}

impl Pattern {
    /// Compiles a pattern. Fails on an empty pattern, one over 256 bytes, or
    /// one with characters that cannot appear in event names.
    pub fn new(text: &str) -> Result<Pattern, PatternError> {
        let bad = |why: &'static str| PatternError {
            pattern: text.chars().take(80).collect(),
            why,
        };
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        if text.len() > 256 {
            return Err(bad("is longer than 256 bytes"));
        }
        if !text.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'*' | b'?')
        }) {
            return Err(bad("may hold only a-z, 0-9, _, ., * and ?"));
        }
        Ok(Pattern {
            text: text.to_string(),
            full: text.starts_with("snakepit."),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the pattern match this full event name (`snakepit.…`)?
    pub fn matches_event(&self, full_name: &str) -> bool {
        let subject = if self.full {
            full_name
        } else {
            full_name.strip_prefix("snakepit.").unwrap_or(full_name)
        };
        glob_match(self.text.as_bytes(), subject.as_bytes())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Iterative glob matcher with single-star backtracking: linear in practice,
/// never exponential.
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, name: &str) -> bool {
        Pattern::new(p).unwrap().matches_event(name)
    }

    #[test]
    fn globs() {
        assert!(m("python.*", "snakepit.python.call.stop"));
        assert!(m("*", "snakepit.pool.status"));
        assert!(m("pool.queue.*", "snakepit.pool.queue.timeout"));
        assert!(!m("pool.queue.*", "snakepit.pool.status"));
        assert!(m("*.stop", "snakepit.grpc.call.stop"));
        assert!(m("snakepit.grpc.*", "snakepit.grpc.call.stop"));
        assert!(!m("grpc", "snakepit.grpc.call.stop"));
        assert!(m("pool.worker.spawne?", "snakepit.pool.worker.spawned"));
        assert!(m("*call*", "snakepit.python.call.start"));
        assert!(!m("python.*", "snakepit.pool.status"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("Python.*").is_err());
        assert!(Pattern::new(&"a".repeat(300)).is_err());
    }
}
