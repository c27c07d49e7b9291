//! The worker's ready line: `SNAKEPIT_READY {"worker_id": ..., "pid": ...,
//! "listen": ..., "protocol": 1, "event_loop": ..., "gc": ..., "calls": ...}`,
//! written once on stdout when the worker listens (python/README.md).
//!
//! This is the one parser the tests and benchmarks use; the pool's own
//! (snakepit-pool/src/process.rs) is product code and is tested through the
//! pool.

use serde::Deserialize;

/// The prefix of the ready line (with its separating space).
pub const READY_PREFIX: &str = "SNAKEPIT_READY ";

/// What a worker announces once it listens.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Ready {
    /// The `--worker-id` it was started with.
    pub worker_id: String,
    /// Its process id.
    pub pid: u32,
    /// The address it listens on (`unix:/path` or `host:port`).
    pub listen: String,
    /// The host-worker protocol version.
    pub protocol: u32,
    /// `uvloop` or `asyncio`.
    pub event_loop: String,
    /// `tuned` or `default` (the garbage collector's settings).
    pub gc: String,
    /// The native call server's address, empty without one.
    pub calls: String,
}

/// A line that is not a ready line.
#[derive(Debug)]
pub enum ReadyError {
    /// The line does not start with [`READY_PREFIX`] (the whole line).
    NoPrefix(String),
    /// The JSON after the prefix is not a ready object.
    BadJson {
        /// The line, without its line ending.
        line: String,
        /// What serde_json said.
        error: serde_json::Error,
    },
}

impl std::fmt::Display for ReadyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadyError::NoPrefix(line) => {
                write!(
                    f,
                    "not a ready line (no `{}` prefix): {line:?}",
                    READY_PREFIX.trim_end()
                )
            }
            ReadyError::BadJson { line, error } => write!(f, "bad ready line {line:?}: {error}"),
        }
    }
}

impl std::error::Error for ReadyError {}

/// Parses one ready line (its line ending may be present).
pub fn parse_ready(line: &str) -> Result<Ready, ReadyError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let json = line
        .strip_prefix(READY_PREFIX)
        .ok_or_else(|| ReadyError::NoPrefix(line.to_string()))?;
    serde_json::from_str(json).map_err(|error| ReadyError::BadJson {
        line: line.to_string(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "SNAKEPIT_READY {\"worker_id\":\"w1\",\"pid\":42,\"listen\":\"unix:/tmp/w.sock\",\"protocol\":1,\"event_loop\":\"uvloop\",\"gc\":\"tuned\",\"calls\":\"unix:/tmp/w.sock.calls\"}\n";

    #[test]
    fn a_ready_line_is_read_into_its_fields() {
        let r = parse_ready(LINE).unwrap();
        assert_eq!(r.worker_id, "w1");
        assert_eq!(r.pid, 42);
        assert_eq!(r.listen, "unix:/tmp/w.sock");
        assert_eq!(r.protocol, 1);
        assert_eq!(r.event_loop, "uvloop");
        assert_eq!(r.gc, "tuned");
        assert_eq!(r.calls, "unix:/tmp/w.sock.calls");
    }

    #[test]
    fn a_line_without_the_prefix_is_refused_and_quoted() {
        let e = parse_ready("hello\n").unwrap_err();
        assert!(
            matches!(e, ReadyError::NoPrefix(ref l) if l == "hello"),
            "{e}"
        );
        assert!(e.to_string().contains("SNAKEPIT_READY"), "{e}");
    }

    #[test]
    fn a_ready_line_missing_a_field_names_it() {
        let e = parse_ready("SNAKEPIT_READY {\"worker_id\":\"w1\",\"pid\":1}").unwrap_err();
        assert!(matches!(e, ReadyError::BadJson { .. }), "{e}");
        assert!(e.to_string().contains("listen"), "{e}");
    }
}
