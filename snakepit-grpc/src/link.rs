//! Connection state of one client and the `grpc.connection.*` events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use snakepit_core::{builtin, EventContext, Value};
use snakepit_telemetry::Telemetry;

/// Whether the client is connected, closed, and since when it is not.
pub(crate) struct Link {
    telemetry: Telemetry,
    pub(crate) worker_id: Arc<str>,
    address: String,
    connected: AtomicBool,
    closed: AtomicBool,
    /// The worker is being stopped on purpose: its streams ending is expected.
    stopping: AtomicBool,
    lost_at: Mutex<Option<Instant>>,
}

impl Link {
    pub(crate) fn new(telemetry: Telemetry, worker_id: Arc<str>, address: String) -> Self {
        Link {
            telemetry,
            worker_id,
            address,
            connected: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            lost_at: Mutex::new(None),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        !self.is_closed() && self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the worker as being stopped on purpose.
    pub(crate) fn expect_stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Marks the client closed; returns false if it already was.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Emits `grpc.connection.established`.
    pub(crate) fn established(&self, took_ns: u64) {
        self.telemetry.execute_with(
            builtin::GRPC_CONNECTION_ESTABLISHED,
            &[("duration", Value::Int(took_ns as i64))],
            &[
                ("worker_id", Value::from(&*self.worker_id)),
                ("address", Value::from(self.address.as_str())),
            ],
            EventContext::default(),
        );
    }

    /// Something broke (call stream or telemetry stream). Emits
    /// `grpc.connection.lost` once per loss, never after `close`.
    pub(crate) fn lost(&self, reason: &str) {
        if self.is_closed()
            || self.stopping.load(Ordering::Acquire)
            || !self.connected.swap(false, Ordering::AcqRel)
        {
            return;
        }
        *self.lost_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        tracing::warn!(
            target: "snakepit::grpc",
            worker_id = &*self.worker_id,
            address = %self.address,
            reason,
            "connection to worker lost"
        );
        self.telemetry.execute_with(
            builtin::GRPC_CONNECTION_LOST,
            &[],
            &[
                ("worker_id", Value::from(&*self.worker_id)),
                ("address", Value::from(self.address.as_str())),
                ("reason", Value::from(reason)),
            ],
            EventContext::default(),
        );
    }

    /// A stream reopened after a loss: emits `grpc.connection.reconnected`.
    pub(crate) fn restored(&self, attempts: u64) {
        if self.is_closed() || self.connected.swap(true, Ordering::AcqRel) {
            return;
        }
        let downtime = self
            .lost_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map_or(0, |t| t.elapsed().as_nanos() as i64);
        tracing::info!(
            target: "snakepit::grpc",
            worker_id = &*self.worker_id,
            address = %self.address,
            attempts,
            "connection to worker restored"
        );
        self.telemetry.execute_with(
            builtin::GRPC_CONNECTION_RECONNECTED,
            &[
                ("downtime", Value::Int(downtime)),
                ("attempts", Value::Int(attempts as i64)),
            ],
            &[
                ("worker_id", Value::from(&*self.worker_id)),
                ("address", Value::from(self.address.as_str())),
            ],
            EventContext::default(),
        );
    }
}
