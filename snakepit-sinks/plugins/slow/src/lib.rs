//! Test plugin: a slow or blocked `emit`.
//!
//! Config (all optional):
//! * `"out"`: a file; each delivered event's `seq` metadata (or its name) is
//!   appended as one line, written out on flush and destroy;
//! * `"gate"`: a file; `emit` waits until it exists (a stuck plugin until
//!   then);
//! * `"delay_us"`: microseconds to sleep in every `emit`.
//!
//! With no config it is a no-op sink (used as a benchmark baseline).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use snakepit_sink_sdk::{export_sink, Event, SinkPlugin, Value};

/// The slow sink.
pub struct Slow {
    out: Option<BufWriter<File>>,
    gate: Option<PathBuf>,
    delay: Duration,
}

impl SinkPlugin for Slow {
    fn create(config_json: &str) -> Result<Self, String> {
        let config: serde_json::Value =
            serde_json::from_str(config_json).map_err(|e| e.to_string())?;
        let out = match config.get("out").and_then(|v| v.as_str()) {
            Some(p) => Some(BufWriter::new(
                File::create(p).map_err(|e| format!("cannot create `{p}`: {e}"))?,
            )),
            None => None,
        };
        let gate = config
            .get("gate")
            .and_then(|v| v.as_str())
            .map(PathBuf::from);
        let delay =
            Duration::from_micros(config.get("delay_us").and_then(|v| v.as_u64()).unwrap_or(0));
        Ok(Slow { out, gate, delay })
    }

    fn emit(&mut self, event: &Event<'_>) -> Result<(), String> {
        if let Some(gate) = &self.gate {
            while !gate.exists() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        if let Some(out) = &mut self.out {
            let seq = event.metadata().find(|(k, _)| *k == "seq").map(|(_, v)| v);
            match seq {
                Some(Value::Str(s)) => writeln!(out, "{s}"),
                Some(Value::Int(i)) => writeln!(out, "{i}"),
                _ => writeln!(out, "{}", event.name()),
            }
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), String> {
        match &mut self.out {
            Some(out) => out.flush().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

export_sink!(Slow, name = "slow");
