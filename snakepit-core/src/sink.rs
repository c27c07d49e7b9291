//! The [`Sink`] trait: where events go after dispatch.

use std::time::Duration;

use crate::event::Event;

/// A destination for events: a log, a metrics registry, a trace exporter, a
/// plugin. Sinks are attached to a telemetry instance like any handler.
///
/// # Contract
///
/// * [`Sink::handle`] runs synchronously on the thread that emitted the
///   event, possibly on many threads at once. It must be cheap and must never
///   block: a sink that does I/O copies what it needs into a bounded queue
///   drained by its own thread or task, and when that queue is full it drops
///   the event and counts the drop. A slow sink must never slow a tool call.
/// * The event is a borrowed view valid only during the call; use
///   [`Event::to_owned_event`] to keep it.
/// * A panic in `handle` is caught by the dispatcher, which detaches the sink
///   and reports it; do not rely on that, it loses events.
/// * [`Sink::flush`] and [`Sink::shutdown`] are called from a normal thread
///   (never from inside `handle`), must return by the deadline they are given,
///   and must not need an async runtime to make progress (a current-thread
///   runtime may be the caller).
/// * Every method except `name` and `handle` has a no-op default.
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and drop reports, e.g. `prometheus`.
    fn name(&self) -> &str;

    /// Receives one event. See the contract above.
    fn handle(&self, event: &Event<'_>);

    /// Delivers everything queued so far, waiting at most `timeout`.
    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let _ = timeout;
        Ok(())
    }

    /// Flushes and releases resources, waiting at most `timeout`. Events that
    /// arrive afterwards are dropped.
    fn shutdown(&self, timeout: Duration) -> Result<(), SinkError> {
        self.flush(timeout)
    }
}

/// A sink failed to flush or shut down.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The deadline passed first; `pending` events were not delivered.
    #[error("sink `{sink}` did not finish within {timeout:?}; {pending} events not delivered")]
    Timeout {
        /// The sink's name.
        sink: String,
        /// The deadline that passed.
        timeout: Duration,
        /// Events left undelivered.
        pending: u64,
    },
    /// The sink's destination failed.
    #[error("sink `{sink}` failed: {message}")]
    Failed {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        message: String,
    },
}
