//! Sinks from dynamic libraries (plugins), over the stable C ABI of
//! [`snakepit_sink_abi`].
//!
//! ```toml
//! [[sinks]]
//! kind = "plugin"
//! path = "/opt/snakepit/libsnakepit_plugin_jsonl.so"
//! config = { path = "/var/log/snakepit/events.jsonl" }   # handed to create as JSON
//! events = ["snakepit.python.*"]
//! queue_capacity = 8192
//! ```
//!
//! [`PluginSink::load`] opens the library with `RTLD_NOW | RTLD_LOCAL` and
//! never unloads it, validates its descriptor (symbol, ABI version, struct
//! size, function pointers, name), and starts one thread per instance that
//! creates the plugin instance and drains a bounded queue into it.
//! [`Sink::handle`] copies the event into that queue and never blocks: when
//! the queue is full the event is dropped and counted, and drops are reported
//! as `snakepit.telemetry.sink.overflow` and
//! `snakepit.telemetry.events.dropped` (`where = sink`). An event the plugin
//! refuses (an error status) is counted as failed and reported as dropped
//! too, reason `sink_refused` (only the first refusal is logged with its
//! message). A plugin that panics
//! is disabled (an error log and `snakepit.telemetry.sink.failed`); the host
//! keeps running. Flush and shutdown wait at most their deadline: a stuck
//! plugin's thread is abandoned, not waited for.
//!
//! Writing a plugin: see `docs/plugins.md`, the SDK crate
//! `snakepit-sink-sdk` and the C header `snakepit-sinks/abi/include/snakepit_sink.h`.

mod error;
mod library;
mod queued;
mod shared;
mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use snakepit_core::config::PluginSinkConfig;
use snakepit_core::{Event, Sink, SinkError};
use snakepit_sink_abi as abi;
use snakepit_telemetry::Telemetry;

pub use error::PluginError;
pub use shared::PluginStats;

use queued::QueuedEvent;
use shared::Shared;
use worker::{Created, Msg};

/// How long [`PluginSink::load`] waits for the plugin's `create`.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A sink backed by a plugin instance on its own thread. See the module
/// docs.
pub struct PluginSink {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    plugin_name: &'static str,
    flags: u64,
}

impl std::fmt::Debug for PluginSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSink")
            .field("name", &self.shared.name)
            .field("path", &self.shared.path)
            .field("stats", &self.stats())
            .finish()
    }
}

/// `plugin:<name>`, then `plugin:<name>#2`, ... for further instances, so
/// drop reports tell instances apart.
fn sink_name(plugin: &str) -> String {
    static SEEN: OnceLock<Mutex<BTreeMap<String, u32>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let n = seen.entry(plugin.to_string()).or_insert(0);
    *n += 1;
    if *n == 1 {
        format!("plugin:{plugin}")
    } else {
        format!("plugin:{plugin}#{n}")
    }
}

impl PluginSink {
    /// Loads the library at `config.path`, validates it, and creates one
    /// instance with `config.config` as JSON, on a new thread behind a queue
    /// of `config.queue_capacity` events. Drops and failures are reported
    /// through `telemetry`.
    ///
    /// `config.events` is not applied here: attach the sink with those
    /// patterns (`Telemetry::attach_sink`).
    pub fn load(
        config: &PluginSinkConfig,
        telemetry: &Telemetry,
    ) -> Result<PluginSink, PluginError> {
        let path = config.path.as_path();
        let entry = library::open(path)?;
        let name = sink_name(entry.name);
        let capacity = config.queue_capacity.max(1);
        let shared = Arc::new(Shared::new(
            name,
            path.to_path_buf(),
            capacity,
            telemetry.clone(),
        ));
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let (created_tx, created_rx) = crossbeam_channel::bounded(1);
        let config_json = config.config.to_string();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("snakepit-{}", shared.name))
                .spawn(move || worker::run(entry, config_json, shared, rx, created_tx))
                .map_err(|source| PluginError::Thread {
                    path: path.to_path_buf(),
                    source,
                })?
        };
        let fail = |message: String, panicked: bool| {
            let (path, name) = (path.to_path_buf(), entry.name.to_string());
            if panicked {
                PluginError::CreatePanicked {
                    path,
                    name,
                    message,
                }
            } else {
                PluginError::Create {
                    path,
                    name,
                    message,
                }
            }
        };
        match created_rx.recv_timeout(CREATE_TIMEOUT) {
            Ok(Created::Ok) => {}
            Ok(Created::Failed(message)) => return Err(fail(message, false)),
            Ok(Created::Panicked(message)) => return Err(fail(message, true)),
            Err(_) => {
                return Err(PluginError::CreateTimeout {
                    path: path.to_path_buf(),
                    name: entry.name.to_string(),
                    timeout: CREATE_TIMEOUT,
                })
            }
        }
        tracing::info!(
            target: "snakepit::telemetry",
            sink = %shared.name,
            path = %path.display(),
            catches_panics = entry.flags & abi::FLAG_CATCHES_PANICS != 0,
            queue_capacity = capacity,
            "plugin sink loaded"
        );
        Ok(PluginSink {
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
            plugin_name: entry.name,
            flags: entry.flags,
        })
    }

    /// The name the plugin gives itself, e.g. `jsonl`.
    pub fn plugin_name(&self) -> &str {
        self.plugin_name
    }

    /// The library this sink was loaded from.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The descriptor's flags (`snakepit_sink_abi::FLAG_*`).
    pub fn flags(&self) -> u64 {
        self.flags
    }

    /// Whether the plugin catches its panics at the boundary
    /// ([`abi::FLAG_CATCHES_PANICS`]).
    pub fn catches_panics(&self) -> bool {
        self.flags & abi::FLAG_CATCHES_PANICS != 0
    }

    /// Why the sink was disabled (the plugin panicked), if it was.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// The counters so far.
    pub fn stats(&self) -> PluginStats {
        self.shared.stats(self.tx.len())
    }

    fn timeout(&self, timeout: Duration) -> SinkError {
        self.shared.report_drops();
        SinkError::Timeout {
            sink: self.shared.name.clone(),
            timeout,
            pending: self.tx.len() as u64,
        }
    }

    /// Sends a control message and waits for its answer, both by `deadline`.
    fn request(
        &self,
        timeout: Duration,
        make: impl FnOnce(Instant, Sender<Result<(), String>>) -> Msg,
    ) -> Result<(), SinkError> {
        let deadline = Instant::now() + timeout;
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if self
            .tx
            .send_deadline(make(deadline, ack_tx), deadline)
            .is_err()
        {
            return Err(self.timeout(timeout));
        }
        match ack_rx.recv_deadline(deadline) {
            Ok(result) => result.map_err(|message| SinkError::Failed {
                sink: self.shared.name.clone(),
                message,
            }),
            Err(_) => Err(self.timeout(timeout)),
        }
    }
}

impl Sink for PluginSink {
    fn name(&self) -> &str {
        &self.shared.name
    }

    /// Copies the event into the queue, or drops and counts it when the
    /// queue is full or the sink is disabled or shut down. Never blocks.
    fn handle(&self, event: &Event<'_>) {
        let shared = &*self.shared;
        if shared.is_disabled() || shared.closed.load(std::sync::atomic::Ordering::Relaxed) {
            shared.count_disabled_drop();
            return;
        }
        if self.tx.is_full() {
            shared.count_full_drop();
            return;
        }
        match self.tx.try_send(Msg::Event(QueuedEvent::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => shared.count_full_drop(),
            Err(TrySendError::Disconnected(_)) => shared.count_disabled_drop(),
        }
    }

    /// Waits until every event queued before the call reached the plugin,
    /// then calls its `flush`; all within `timeout`.
    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let result = self.request(timeout, |deadline, ack| Msg::Flush { deadline, ack });
        self.shared.report_drops();
        result
    }

    /// Stops accepting events, delivers what is queued, flushes and destroys
    /// the instance, all within `timeout`. A plugin that does not finish in
    /// time is abandoned: its thread is left running and never joined.
    fn shutdown(&self, timeout: Duration) -> Result<(), SinkError> {
        use std::sync::atomic::Ordering;
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = self.request(timeout, |deadline, ack| Msg::Shutdown { deadline, ack });
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match &result {
            Err(SinkError::Timeout { .. }) => tracing::warn!(
                target: "snakepit::telemetry",
                sink = %self.shared.name,
                ?timeout,
                "plugin sink did not shut down in time; its thread is abandoned"
            ),
            // The thread answered and is ending: joining is quick.
            _ => {
                if let Some(thread) = thread {
                    let _ = thread.join();
                }
            }
        }
        self.shared.report_drops();
        result
    }
}
