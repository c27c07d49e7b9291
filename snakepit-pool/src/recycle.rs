//! The end of a recycled worker: its replacement already serves in its
//! place, so it takes no new calls; it finishes those in flight, then stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::dispatch::Exit;
use crate::supervisor::{Serving, Shared};

/// Retires a recycled worker whose replacement already took its place:
/// it takes no new calls, finishes those in flight (within the longest a
/// call may run, plus the stuck-call grace), then stops with SIGTERM.
pub(crate) async fn retire(
    shared: Arc<Shared>,
    old: Serving,
    reason: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let Serving {
        mut process,
        client,
        live,
        exit_tx,
    } = old;
    let up_at = process.as_ref().map_or_else(Instant::now, |p| p.ready_at);
    let c = &shared.config;
    let limit = c.call_timeout.max(c.grace_period) + c.stuck_call_grace;
    tokio::select! {
        _ = live.drain(limit) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    let lifetime = up_at.elapsed();
    client.expect_stop();
    let _ = exit_tx.send(Some(Exit::Gone(format!("recycled ({reason})"))));
    if !shared.dispatch.is_closed() {
        shared.sessions.worker_lost(&live);
    }
    let how = match process.as_mut() {
        Some(p) => p.terminate(c.grace_period).await,
        None => "disconnected".to_string(),
    };
    client.close().await;
    drop(process);
    tracing::debug!(target: "snakepit::lifecycle", worker_id = %live.worker_id, "recycled ({reason}): {how}");
    let total = live.total_commands.load(Ordering::Relaxed);
    shared.events.terminated(
        &live.worker_id,
        &format!("recycled: {reason}"),
        true,
        lifetime,
        total,
    );
}
