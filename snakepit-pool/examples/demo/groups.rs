//! Repeated warnings and errors, grouped: the first record of each kind is
//! printed as it happens, the repeats are only counted, and the demo prints
//! one line per kind at the end ("slow call ×15, worst 262 ms").

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// One kind of record: same level, target and message.
struct Group {
    level: Level,
    target: String,
    message: String,
    count: u64,
    /// The largest value of each numeric field, in field order.
    worst: Vec<(&'static str, f64)>,
}

/// A per-layer `tracing` filter that lets through the first warning or error
/// of each (level, target, message) and holds back, but counts, the repeats.
/// Records below WARN always pass. Clones share the counts.
#[derive(Clone, Default)]
pub struct RepeatGroups {
    groups: Arc<Mutex<Vec<Group>>>,
}

impl RepeatGroups {
    /// One line per kind of warning or error seen, in order of first
    /// appearance: level, target, message, `×count` and the worst value of
    /// each numeric field that measures (`worst 262 ms` for a field named `ms`
    /// or `*_ms`, `max depth 73` for others).
    pub fn report(&self) -> Vec<String> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .map(|g| {
                let mut line = format!(
                    "{:>5} {}: {} ×{}",
                    g.level,
                    g.target,
                    shorten(&g.message),
                    g.count
                );
                for (name, v) in &g.worst {
                    if *name == "ms" || name.ends_with("_ms") {
                        let _ = write!(line, ", worst {v:.0} ms");
                    } else if !is_label(name) {
                        let _ = write!(line, ", max {name} {v}");
                    }
                }
                line
            })
            .collect()
    }

    /// Counts `event`; true when it is the first of its kind.
    fn count(&self, event: &Event<'_>) -> bool {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let found = groups.iter_mut().find(|g| {
            g.level == *meta.level() && g.target == meta.target() && g.message == fields.message
        });
        match found {
            Some(g) => {
                g.count += 1;
                for (name, v) in fields.numbers {
                    match g.worst.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, w)) => *w = w.max(v),
                        None => g.worst.push((name, v)),
                    }
                }
                false
            }
            None => {
                groups.push(Group {
                    level: *meta.level(),
                    target: meta.target().to_string(),
                    message: fields.message,
                    count: 1,
                    worst: fields.numbers,
                });
                true
            }
        }
    }
}

/// Longest message in a report line, in characters; the whole message was
/// printed with the first record of its kind.
const MESSAGE_CHARS: usize = 100;

fn shorten(message: &str) -> String {
    match message.char_indices().nth(MESSAGE_CHARS) {
        Some((at, _)) => format!("{}...", &message[..at]),
        None => message.to_string(),
    }
}

/// Numeric fields that identify rather than measure (an id, a pid, a
/// timestamp): their largest value means nothing.
fn is_label(name: &str) -> bool {
    name.contains("timestamp") || name.ends_with("_id") || name.ends_with("pid")
}

impl<S> Filter<S> for RepeatGroups {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        *event.metadata().level() > Level::WARN || self.count(event)
    }
}

/// The message and the numeric fields of one record.
#[derive(Default)]
struct Fields {
    message: String,
    numbers: Vec<(&'static str, f64)>,
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.numbers.push((field.name(), value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.numbers.push((field.name(), value as f64));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.numbers.push((field.name(), value as f64));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}
