//! Test plugin: panics on demand.
//!
//! Config: `{"panic_in": "emit" | "create" | "flush", "after": N}`: panics
//! in that entry point, in `emit` after N events went through (default 0).

use std::time::Duration;

use snakepit_sink_sdk::{export_sink, Event, SinkPlugin};

/// Counts events until it is time to panic.
pub struct Panicking {
    panic_in: String,
    after: u64,
    seen: u64,
}

impl SinkPlugin for Panicking {
    fn create(config_json: &str) -> Result<Self, String> {
        let config: serde_json::Value =
            serde_json::from_str(config_json).map_err(|e| e.to_string())?;
        let panic_in = config
            .get("panic_in")
            .and_then(|v| v.as_str())
            .unwrap_or("emit")
            .to_string();
        if panic_in == "create" {
            panic!("panicking plugin: create, as configured");
        }
        let after = config.get("after").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Panicking {
            panic_in,
            after,
            seen: 0,
        })
    }

    fn emit(&mut self, event: &Event<'_>) -> Result<(), String> {
        if self.panic_in == "emit" && self.seen >= self.after {
            panic!(
                "panicking plugin: emit of {} after {} events",
                event.name(),
                self.seen
            );
        }
        self.seen += 1;
        Ok(())
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), String> {
        if self.panic_in == "flush" {
            panic!("panicking plugin: flush, as configured");
        }
        Ok(())
    }
}

export_sink!(Panicking, name = "panicking");
