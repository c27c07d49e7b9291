//! Test plugin: refuses events with an error status (`STATUS_ERROR`).
//!
//! Config: `{"refuse_every": N}`: the N-th, 2N-th, ... event it is given is
//! refused (default 1: every event); the others are accepted and counted.

use snakepit_sink_sdk::{export_sink, Event, SinkPlugin};

/// Counts events and refuses every `refuse_every`-th.
pub struct Refusing {
    refuse_every: u64,
    seen: u64,
}

impl SinkPlugin for Refusing {
    fn create(config_json: &str) -> Result<Self, String> {
        let config: serde_json::Value =
            serde_json::from_str(config_json).map_err(|e| e.to_string())?;
        let refuse_every = config
            .get("refuse_every")
            .and_then(|v| v.as_u64())
            .unwrap_or(1);
        if refuse_every == 0 {
            return Err("config key `refuse_every` must be at least 1".into());
        }
        Ok(Refusing {
            refuse_every,
            seen: 0,
        })
    }

    fn emit(&mut self, event: &Event<'_>) -> Result<(), String> {
        self.seen += 1;
        if self.seen.is_multiple_of(self.refuse_every) {
            return Err(format!(
                "refusing plugin: event {} ({}) refused, as configured",
                self.seen,
                event.name()
            ));
        }
        Ok(())
    }
}

export_sink!(Refusing, name = "refusing");
