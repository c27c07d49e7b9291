//! Emitting the `snakepit.pool.*` events. Every event carries `pool_name`,
//! worker events also `worker_id`. Durations are nanoseconds.

use std::time::Duration;

use snakepit_core::{builtin, event::unix_now_ns, Value};
use snakepit_telemetry::Telemetry;

/// Nanoseconds as an event measurement (saturating).
pub(crate) fn ns(d: Duration) -> Value<'static> {
    Value::Int(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Emits pool events for one pool.
#[derive(Clone)]
pub(crate) struct PoolEvents {
    pub telemetry: Telemetry,
    pub pool_name: std::sync::Arc<str>,
}

impl PoolEvents {
    pub fn initialized(&self, duration: Duration, worker_count: usize) {
        self.telemetry.execute(
            builtin::POOL_INITIALIZED,
            &[
                ("duration", ns(duration)),
                ("worker_count", worker_count.into()),
            ],
            &[("pool_name", (&*self.pool_name).into())],
        );
    }

    /// `discovered` or `removed`: a worker address of a `dns:` source.
    pub fn discovery(
        &self,
        removed: bool,
        worker_id: &str,
        address: &str,
        source: &str,
        addresses: usize,
    ) {
        let id = if removed {
            builtin::POOL_WORKER_REMOVED
        } else {
            builtin::POOL_WORKER_DISCOVERED
        };
        self.telemetry.execute(
            id,
            &[("addresses", addresses.into())],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("worker_id", worker_id.into()),
                ("address", address.into()),
                ("source", source.into()),
            ],
        );
    }

    pub fn status(&self, s: &crate::PoolStatus) {
        if !self.telemetry.is_enabled(builtin::POOL_STATUS) {
            return;
        }
        self.telemetry.execute(
            builtin::POOL_STATUS,
            &[
                ("queue_depth", s.queue_depth.into()),
                ("available_workers", s.available_workers.into()),
                ("busy_workers", s.busy_workers.into()),
                ("total_workers", s.total_workers.into()),
                ("abandoned_workers", s.abandoned_workers.into()),
            ],
            &[("pool_name", (&*self.pool_name).into())],
        );
    }

    pub fn enqueued(&self, command: &str, queue_depth: usize) {
        self.telemetry.execute(
            builtin::POOL_QUEUE_ENQUEUED,
            &[("queue_depth", queue_depth.into())],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("command", command.into()),
            ],
        );
    }

    pub fn dequeued(&self, command: &str, queue_time: Duration, queue_depth: usize) {
        self.telemetry.execute(
            builtin::POOL_QUEUE_DEQUEUED,
            &[
                ("queue_time", ns(queue_time)),
                ("queue_depth", queue_depth.into()),
            ],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("command", command.into()),
            ],
        );
    }

    pub fn queue_timeout(&self, command: &str, queue_time: Duration) {
        self.telemetry.execute(
            builtin::POOL_QUEUE_TIMEOUT,
            &[("queue_time", ns(queue_time))],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("command", command.into()),
            ],
        );
    }

    pub fn saturated(&self, command: &str, queue_depth: usize, max_queue: usize) {
        self.telemetry.execute(
            builtin::POOL_SATURATED,
            &[
                ("queue_depth", queue_depth.into()),
                ("max_queue", max_queue.into()),
            ],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("command", command.into()),
            ],
        );
    }

    pub fn spawn_started(&self, worker_id: &str) {
        self.telemetry.execute(
            builtin::POOL_WORKER_SPAWN_STARTED,
            &[("system_time", unix_now_ns().into())],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("worker_id", worker_id.into()),
            ],
        );
    }

    /// `python_pid` is `None` for external workers (their pid is unknown).
    pub fn spawned(
        &self,
        worker_id: &str,
        duration: Duration,
        python_pid: Option<u32>,
        start_method: &str,
    ) {
        let d = ("duration", ns(duration));
        let meta = [
            ("pool_name", (&*self.pool_name).into()),
            ("worker_id", worker_id.into()),
            ("start_method", start_method.into()),
        ];
        match python_pid {
            Some(pid) => self.telemetry.execute(
                builtin::POOL_WORKER_SPAWNED,
                &[d, ("python_pid", pid.into())],
                &meta,
            ),
            None => self
                .telemetry
                .execute(builtin::POOL_WORKER_SPAWNED, &[d], &meta),
        }
    }

    /// The template process ended (`reason`) and a new one (`python_pid`)
    /// is ready after `duration`.
    pub fn template_restarted(&self, duration: Duration, python_pid: u32, reason: &str) {
        self.telemetry.execute(
            builtin::POOL_TEMPLATE_RESTARTED,
            &[
                ("duration", ns(duration)),
                ("python_pid", python_pid.into()),
            ],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("reason", reason.into()),
            ],
        );
    }

    pub fn spawn_failed(&self, worker_id: &str, duration: Duration, reason: &str) {
        self.telemetry.execute(
            builtin::POOL_WORKER_SPAWN_FAILED,
            &[("duration", ns(duration))],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("worker_id", worker_id.into()),
                ("reason", reason.into()),
            ],
        );
    }

    pub fn terminated(
        &self,
        worker_id: &str,
        reason: &str,
        planned: bool,
        lifetime: Duration,
        total_commands: u64,
    ) {
        self.telemetry.execute(
            builtin::POOL_WORKER_TERMINATED,
            &[
                ("lifetime", ns(lifetime)),
                ("total_commands", total_commands.into()),
            ],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("worker_id", worker_id.into()),
                ("reason", reason.into()),
                ("planned", planned.into()),
            ],
        );
    }

    pub fn restarted(&self, worker_id: &str, restart_count: u64, downtime: Duration) {
        self.telemetry.execute(
            builtin::POOL_WORKER_RESTARTED,
            &[
                ("restart_count", restart_count.into()),
                ("downtime", ns(downtime)),
            ],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("worker_id", worker_id.into()),
            ],
        );
    }

    pub fn unhealthy(
        &self,
        worker_id: &str,
        reason: &str,
        detail: &str,
        lifetime: Duration,
        in_flight: usize,
    ) {
        self.telemetry.execute(
            builtin::POOL_WORKER_UNHEALTHY,
            &[("lifetime", ns(lifetime)), ("in_flight", in_flight.into())],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("worker_id", worker_id.into()),
                ("reason", reason.into()),
                ("detail", detail.into()),
            ],
        );
    }

    pub fn recycled(&self, worker_id: &str, why: &crate::health::Recycle, lifetime: Duration) {
        let mut m = vec![
            ("lifetime", ns(lifetime)),
            ("total_commands", why.total_commands.into()),
        ];
        if let Some(rss) = why.rss_bytes {
            m.push(("rss_bytes", rss.into()));
        }
        self.telemetry.execute(
            builtin::POOL_WORKER_RECYCLED,
            &m,
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("worker_id", worker_id.into()),
                ("reason", why.reason.into()),
                ("detail", why.detail.as_str().into()),
            ],
        );
    }

    pub fn abandoned(&self, worker_id: &str, restarts: u32, reason: &str) {
        self.telemetry.execute(
            builtin::POOL_WORKER_ABANDONED,
            &[("restarts", u64::from(restarts).into())],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("worker_id", worker_id.into()),
                ("reason", reason.into()),
            ],
        );
    }
    pub fn session_created(&self, session_id: &str, worker_id: &str, sessions: usize) {
        self.telemetry.execute(
            builtin::POOL_SESSION_CREATED,
            &[("sessions", sessions.into())],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("session_id", session_id.into()),
                ("worker_id", worker_id.into()),
            ],
        );
    }

    pub fn session_lost(&self, session_id: &str, worker_id: &str, calls: u64) {
        self.telemetry.execute(
            builtin::POOL_SESSION_LOST,
            &[("calls", calls.into())],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("session_id", session_id.into()),
                ("worker_id", worker_id.into()),
            ],
        );
    }

    pub fn session_expired(&self, session_id: &str, worker_id: &str, calls: u64, idle: Duration) {
        self.telemetry.execute(
            builtin::POOL_SESSION_EXPIRED,
            &[("calls", calls.into()), ("idle", ns(idle))],
            &[
                ("pool_name", (&*self.pool_name).into()),
                ("session_id", session_id.into()),
                ("worker_id", worker_id.into()),
            ],
        );
    }
}
