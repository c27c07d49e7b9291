//! State shared between a plugin sink's handle and its thread: counters,
//! the disabled flag, and drop reporting.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use snakepit_core::{builtin, Value};
use snakepit_telemetry::Telemetry;

/// Counters of one plugin sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Events the plugin accepted (`emit` returned OK).
    pub delivered: u64,
    /// Events the plugin refused or panicked on (`emit` returned an error
    /// status); reported as dropped, reason `sink_refused`.
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Events dropped because the sink was disabled (after a panic) or shut
    /// down.
    pub dropped_disabled: u64,
    /// Events waiting in the queue now.
    pub queued: u64,
}

impl PluginStats {
    /// Every event that did not reach the plugin, or that it refused.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_disabled + self.failed
    }
}

pub(crate) struct Shared {
    pub name: String,
    pub path: PathBuf,
    pub capacity: usize,
    pub closed: AtomicBool,
    disabled: AtomicBool,
    failure: Mutex<Option<String>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped_full: AtomicU64,
    dropped_disabled: AtomicU64,
    reported_full: AtomicU64,
    reported_disabled: AtomicU64,
    reported_failed: AtomicU64,
    telemetry: Telemetry,
}

impl Shared {
    pub fn new(name: String, path: PathBuf, capacity: usize, telemetry: Telemetry) -> Self {
        Shared {
            name,
            path,
            capacity,
            closed: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            failure: Mutex::new(None),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_disabled: AtomicU64::new(0),
            reported_full: AtomicU64::new(0),
            reported_disabled: AtomicU64::new(0),
            reported_failed: AtomicU64::new(0),
            telemetry,
        }
    }

    pub fn stats(&self, queued: usize) -> PluginStats {
        PluginStats {
            delivered: self.delivered.load(Ordering::Acquire),
            failed: self.failed.load(Ordering::Acquire),
            dropped_queue_full: self.dropped_full.load(Ordering::Acquire),
            dropped_disabled: self.dropped_disabled.load(Ordering::Acquire),
            queued: queued as u64,
        }
    }

    #[inline]
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }
    #[inline]
    pub fn count_full_drop(&self) {
        self.dropped_full.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn count_disabled_drop(&self) {
        self.dropped_disabled.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn count_delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Release);
    }
    #[inline]
    pub fn count_failed(&self) {
        self.failed.fetch_add(1, Ordering::Release);
    }

    /// Why the sink was disabled, if it was.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Disables the sink after a panic: logs an error and emits
    /// `snakepit.telemetry.sink.failed`. Later events are dropped.
    pub fn disable(&self, reason: &str) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        if self.disabled.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(
            target: "snakepit::telemetry",
            sink = %self.name,
            path = %self.path.display(),
            reason,
            "plugin sink disabled: the plugin panicked; its events are dropped from now on"
        );
        self.telemetry.execute(
            builtin::TELEMETRY_SINK_FAILED,
            &[],
            &[
                ("sink", Value::from(self.name.as_str())),
                ("reason", Value::from(reason)),
            ],
        );
    }

    /// Emits drop reports for drops not reported yet. Safe from any thread:
    /// each drop is reported once.
    pub fn report_drops(&self) {
        let full = self.dropped_full.load(Ordering::Acquire);
        let prev = self.reported_full.fetch_max(full, Ordering::AcqRel);
        if full > prev {
            let n = full - prev;
            self.telemetry.execute(
                builtin::TELEMETRY_SINK_OVERFLOW,
                &[
                    ("dropped", Value::from(n)),
                    ("capacity", Value::from(self.capacity)),
                ],
                &[("sink", Value::from(self.name.as_str()))],
            );
            self.report_dropped(n, "queue_full");
        }
        let disabled = self.dropped_disabled.load(Ordering::Acquire);
        let prev = self.reported_disabled.fetch_max(disabled, Ordering::AcqRel);
        if disabled > prev {
            self.report_dropped(disabled - prev, "disabled");
        }
        let failed = self.failed.load(Ordering::Acquire);
        let prev = self.reported_failed.fetch_max(failed, Ordering::AcqRel);
        if failed > prev {
            self.report_dropped(failed - prev, "sink_refused");
        }
    }

    fn report_dropped(&self, count: u64, reason: &'static str) {
        self.telemetry.execute(
            builtin::TELEMETRY_EVENTS_DROPPED,
            &[("count", Value::from(count))],
            &[
                ("where", Value::from("sink")),
                ("reason", Value::from(reason)),
                ("sink", Value::from(self.name.as_str())),
            ],
        );
    }
}
