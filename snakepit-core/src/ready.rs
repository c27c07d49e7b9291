//! The worker's ready line, the handshake of the host-worker protocol: once
//! it listens, a worker writes exactly one line on stdout,
//!
//! ```text
//! SNAKEPIT_READY {"worker_id":"w1","pid":1234,"listen":"unix:/run/x/w1.sock","protocol":1,"event_loop":"uvloop","gc":"tuned","calls":"unix:/run/x/w1.sock.calls"}
//! ```
//!
//! (written by python/snakepit_bridge/worker/cli.py, described in
//! python/README.md). [`ReadyLine::parse`] is the one parser of that line:
//! the pool, the tests and the packaging check all read it here.
//!
//! ```
//! use snakepit_core::ready::ReadyLine;
//!
//! let line = r#"SNAKEPIT_READY {"worker_id":"w1","pid":7,"listen":"127.0.0.1:5000","protocol":1,"event_loop":"asyncio","gc":"default","calls":""}"#;
//! let ready = ReadyLine::parse(line).unwrap().unwrap();
//! assert_eq!((ready.pid, ready.listen.as_str()), (7, "127.0.0.1:5000"));
//! assert!(ReadyLine::parse("some other output").unwrap().is_none());
//! ```

use serde::Deserialize;

/// The prefix of the ready line, with its separating space.
pub const READY_PREFIX: &str = "SNAKEPIT_READY ";

/// What a worker announces once it listens. Fields the line carries beyond
/// these are ignored, so a newer worker may add some.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ReadyLine {
    /// The `--worker-id` it was started with.
    pub worker_id: String,
    /// Its process id.
    pub pid: u32,
    /// The address it listens on (`unix:/path` or `host:port`, with the real
    /// port when port 0 was asked for).
    pub listen: String,
    /// The host-worker protocol version.
    pub protocol: u32,
    /// The asyncio loop serving gRPC: `uvloop` or `asyncio`.
    pub event_loop: String,
    /// How the garbage collector runs: `tuned` or `default`.
    pub gc: String,
    /// The native call server's address, empty when there is none.
    pub calls: String,
}

/// A line that starts with [`READY_PREFIX`] but is not a valid ready line.
#[derive(Debug, thiserror::Error)]
#[error("malformed ready line {line:?}: {source} (a worker writes `SNAKEPIT_READY` and a JSON object with worker_id, pid, listen, protocol, event_loop, gc and calls)")]
pub struct ReadyLineError {
    /// The line, without its line ending.
    pub line: String,
    /// What is wrong with its JSON (which field, where).
    #[source]
    pub source: serde_json::Error,
}

impl ReadyLine {
    /// Parses one line of a worker's stdout (a trailing `\n` or `\r\n` is
    /// ignored): `Ok(None)` when it does not start with [`READY_PREFIX`]
    /// (other output), an error quoting the line when the JSON after the
    /// prefix is not a ready object.
    pub fn parse(line: &str) -> Result<Option<ReadyLine>, ReadyLineError> {
        let line = line.trim_end_matches(['\r', '\n']);
        let Some(json) = line.strip_prefix(READY_PREFIX) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|source| ReadyLineError {
                line: line.to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "SNAKEPIT_READY {\"worker_id\":\"w1\",\"pid\":42,\"listen\":\"unix:/tmp/w.sock\",\"protocol\":1,\"event_loop\":\"uvloop\",\"gc\":\"tuned\",\"calls\":\"unix:/tmp/w.sock.calls\"}\n";

    #[test]
    fn a_ready_line_is_read_into_its_fields() {
        let r = ReadyLine::parse(LINE).unwrap().unwrap();
        assert_eq!(
            r,
            ReadyLine {
                worker_id: "w1".into(),
                pid: 42,
                listen: "unix:/tmp/w.sock".into(),
                protocol: 1,
                event_loop: "uvloop".into(),
                gc: "tuned".into(),
                calls: "unix:/tmp/w.sock.calls".into(),
            }
        );
        let crlf = LINE.replace('\n', "\r\n");
        assert_eq!(ReadyLine::parse(&crlf).unwrap(), Some(r));
    }

    #[test]
    fn a_line_without_the_prefix_is_not_a_ready_line() {
        for line in [
            "hello\n",
            "",
            "SNAKEPIT_READY{\"pid\":1}",
            "snakepit_ready {\"pid\":1}",
            " SNAKEPIT_READY {\"pid\":1}",
            "SNAKEPIT_READ {\"pid\":1}",
        ] {
            assert!(ReadyLine::parse(line).unwrap().is_none(), "{line:?}");
        }
    }

    #[test]
    fn malformed_json_is_refused_and_the_line_quoted() {
        let e = ReadyLine::parse("SNAKEPIT_READY {\"worker_id\": \"w1\",\n").unwrap_err();
        assert_eq!(e.line, "SNAKEPIT_READY {\"worker_id\": \"w1\",");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "malformed ready line \"SNAKEPIT_READY {\\\"worker_id\\\": \\\"w1\\\",\": "
            ),
            "{text}"
        );
        assert!(ReadyLine::parse("SNAKEPIT_READY [1, 2]").is_err());
        assert!(ReadyLine::parse("SNAKEPIT_READY ").is_err());
    }

    #[test]
    fn a_missing_pid_is_named() {
        let line = LINE.replace("\"pid\":42,", "");
        let e = ReadyLine::parse(&line).unwrap_err();
        assert!(e.to_string().contains("missing field `pid`"), "{e}");
        assert!(e.to_string().contains("unix:/tmp/w.sock"), "{e}");
        let negative = LINE.replace("\"pid\":42", "\"pid\":-1");
        assert!(ReadyLine::parse(&negative).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let line = LINE.replace("{", "{\"future\":{\"nested\":[1]},\"version\":\"9\",");
        let r = ReadyLine::parse(&line).unwrap().unwrap();
        assert_eq!((r.worker_id.as_str(), r.pid), ("w1", 42));
    }
}
