//! Sample sink plugin: events as JSON lines.
//!
//! Config (the `config` table of a `kind = "plugin"` sink):
//!
//! ```toml
//! [[sinks]]
//! kind = "plugin"
//! path = "target/release/libsnakepit_plugin_jsonl.so"
//! config = { path = "/var/log/snakepit/events.jsonl", append = true }
//! ```
//!
//! Each event becomes one line:
//!
//! ```json
//! {"name":"snakepit.python.call.stop","timestamp_ns":1700000000000000000,
//!  "correlation_id":"req-1","span_id":0,"parent_span_id":0,"trace_id":null,
//!  "measurements":{"duration":1500000},"metadata":{"command":"predict"}}
//! ```
//!
//! (one line in the file). `correlation_id` and `trace_id` are `null` when
//! absent; `trace_id` is 32 lowercase hex digits. Lines are buffered and
//! written out on `flush` and when the instance is destroyed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::time::Duration;

use serde_json::{Map, Value as Json};
use snakepit_sink_sdk::{export_sink, Event, Fields, SinkPlugin, Value};

/// The sink: a buffered writer on the output file.
pub struct JsonLines {
    out: BufWriter<File>,
    line: Vec<u8>,
}

fn fields_json(fields: Fields<'_>) -> Json {
    let mut map = Map::with_capacity(fields.len());
    for (key, value) in fields {
        let v = match value {
            Value::Int(i) => Json::from(i),
            // Non-finite floats have no JSON form: written as null.
            Value::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
            Value::Str(s) => Json::from(s),
        };
        map.insert(key.to_string(), v);
    }
    Json::Object(map)
}

/// The JSON object for one event (also used by tests and benchmarks).
pub fn event_json(event: &Event<'_>) -> Json {
    let trace = event.trace_id();
    serde_json::json!({
        "name": event.name(),
        "timestamp_ns": event.timestamp_ns(),
        "correlation_id": event.correlation_id(),
        "span_id": event.span_id(),
        "parent_span_id": event.parent_span_id(),
        "trace_id": (trace != 0).then(|| format!("{trace:032x}")),
        "measurements": fields_json(event.measurements()),
        "metadata": fields_json(event.metadata()),
    })
}

/// Writes `event` as one JSON line (with the newline) into `out`, without
/// building an intermediate value; the same object as [`event_json`].
pub fn write_line(out: &mut Vec<u8>, event: &Event<'_>) -> std::io::Result<()> {
    let string = |out: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *out, s).map_err(std::io::Error::from)
    };
    let fields = |out: &mut Vec<u8>, fields: Fields<'_>| -> std::io::Result<()> {
        out.push(b'{');
        for (i, (key, value)) in fields.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, key)?;
            out.push(b':');
            match value {
                Value::Int(v) => write!(out, "{v}")?,
                Value::Float(f) => serde_json::to_writer(&mut *out, &f)?,
                Value::Str(s) => string(out, s)?,
            }
        }
        out.push(b'}');
        Ok(())
    };
    out.extend_from_slice(b"{\"name\":");
    string(out, event.name())?;
    write!(
        out,
        ",\"timestamp_ns\":{},\"correlation_id\":",
        event.timestamp_ns()
    )?;
    match event.correlation_id() {
        Some(c) => string(out, c)?,
        None => out.extend_from_slice(b"null"),
    }
    write!(
        out,
        ",\"span_id\":{},\"parent_span_id\":{},\"trace_id\":",
        event.span_id(),
        event.parent_span_id()
    )?;
    match event.trace_id() {
        0 => out.extend_from_slice(b"null"),
        t => write!(out, "\"{t:032x}\"")?,
    }
    out.extend_from_slice(b",\"measurements\":");
    fields(out, event.measurements())?;
    out.extend_from_slice(b",\"metadata\":");
    fields(out, event.metadata())?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

impl SinkPlugin for JsonLines {
    fn create(config_json: &str) -> Result<Self, String> {
        let config: Json =
            serde_json::from_str(config_json).map_err(|e| format!("config is not JSON: {e}"))?;
        let path = config
            .get("path")
            .and_then(Json::as_str)
            .ok_or("config key `path` is missing or not a string: set it to the output file")?;
        let append = match config.get("append") {
            None => true,
            Some(v) => v
                .as_bool()
                .ok_or("config key `append` must be true or false")?,
        };
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| format!("cannot open `{path}`: {e}"))?;
        Ok(JsonLines {
            out: BufWriter::with_capacity(64 * 1024, file),
            line: Vec::with_capacity(512),
        })
    }

    fn emit(&mut self, event: &Event<'_>) -> Result<(), String> {
        self.line.clear();
        write_line(&mut self.line, event).map_err(|e| e.to_string())?;
        self.out.write_all(&self.line).map_err(|e| e.to_string())
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), String> {
        self.out.flush().map_err(|e| e.to_string())
    }
}

export_sink!(JsonLines, name = "jsonl");
