//! Health checks and recycling limits of one serving worker: a heartbeat on
//! its connection, a watchdog for calls it could not stop, and the limits
//! that retire it (calls, resident memory, age).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use snakepit_grpc::{CallError, WorkerClient};

use crate::config::PoolConfig;
use crate::dispatch::LiveWorker;

/// How often the watchdog and the recycling limits are checked.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// A failed health check: the worker is killed and replaced.
#[derive(Debug)]
pub(crate) struct Unhealthy {
    /// `heartbeat_timeout` or `stuck_call`.
    pub reason: &'static str,
    /// What was seen.
    pub detail: String,
}

/// A recycling limit reached: the worker is replaced without failing calls.
#[derive(Debug)]
pub(crate) struct Recycle {
    /// `max_calls`, `max_rss` or `max_age`.
    pub reason: &'static str,
    /// The value seen and the limit.
    pub detail: String,
    /// Calls it started.
    pub total_commands: u64,
    /// Its resident memory, when read.
    pub rss_bytes: Option<u64>,
}

/// Why a serving worker should go.
#[derive(Debug)]
pub(crate) enum Verdict {
    Unhealthy(Unhealthy),
    Recycle(Recycle),
}

/// What the checks of one worker look at.
pub(crate) struct Watched<'a> {
    pub config: &'a PoolConfig,
    pub live: &'a LiveWorker,
    pub client: &'a WorkerClient,
    /// The local process; recycling applies to local workers only.
    pub pid: Option<u32>,
    /// When it became ready.
    pub up_at: Instant,
    /// Recycling limits are not checked before this instant (after a
    /// replacement failed to start).
    pub recycle_after: Instant,
}

/// Runs the checks until one fails; never returns while the worker is
/// healthy and within its limits.
pub(crate) async fn watch(w: Watched<'_>) -> Verdict {
    tokio::select! {
        v = heartbeat(&w) => Verdict::Unhealthy(v),
        v = checks(&w) => v,
    }
}

/// Pings every `heartbeat_interval`; a ping not answered within
/// `heartbeat_timeout` is a failure. Other errors (the connection is gone)
/// are left to the crash path, which reports them better.
async fn heartbeat(w: &Watched<'_>) -> Unhealthy {
    let timeout = w.config.heartbeat_timeout;
    loop {
        tokio::time::sleep(w.config.heartbeat_interval).await;
        let started = Instant::now();
        let answered = match tokio::time::timeout(timeout, w.client.ping()).await {
            Err(_) | Ok(Err(CallError::Timeout { .. })) => false,
            Ok(_) => true,
        };
        if !answered {
            return Unhealthy {
                reason: "heartbeat_timeout",
                detail: format!(
                    "no answer to a heartbeat within {:?} (heartbeat_timeout {timeout:?})",
                    started.elapsed()
                ),
            };
        }
    }
}

/// The stuck-call watchdog and the recycling limits.
async fn checks(w: &Watched<'_>) -> Verdict {
    let grace = w.config.stuck_call_grace;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = w.live.limit_reached.notified() => {}
        }
        if let Some((calls, longest)) = w.client.overdue_calls(grace) {
            return Verdict::Unhealthy(Unhealthy {
                reason: "stuck_call",
                detail: format!(
                    "{calls} call(s) still unanswered {longest:?} after their timeout \
                     (stuck_call_grace {grace:?}): a tool that cannot be stopped"
                ),
            });
        }
        if let Some(r) = recycle(w) {
            return Verdict::Recycle(r);
        }
    }
}

/// The first recycling limit reached, if any.
fn recycle(w: &Watched<'_>) -> Option<Recycle> {
    let pid = w.pid?;
    if Instant::now() < w.recycle_after {
        return None;
    }
    let c = w.config;
    let total_commands = w.live.total_commands.load(Ordering::Relaxed);
    let granted = w.live.granted.load(Ordering::Relaxed);
    let found = |reason, detail| Recycle {
        reason,
        detail,
        total_commands,
        rss_bytes: None,
    };
    if let Some(max) = c.max_calls_per_worker {
        if granted >= max {
            return Some(found(
                "max_calls",
                format!("{granted} calls given to it (max_calls_per_worker {max})"),
            ));
        }
    }
    if let Some(max) = c.max_worker_age {
        let age = w.up_at.elapsed();
        if age >= max {
            return Some(found(
                "max_age",
                format!("up for {age:?} (max_worker_age {max:?})"),
            ));
        }
    }
    if let Some(max) = c.max_worker_rss {
        if let Some(rss) = resident_bytes(pid) {
            if rss >= max {
                let mut r = found(
                    "max_rss",
                    format!("resident memory {rss} bytes (max_worker_rss {max})"),
                );
                r.rss_bytes = Some(rss);
                return Some(r);
            }
        }
    }
    None
}

/// VmRSS of a process, in bytes, from `/proc/<pid>/status`.
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
