//! The life of one worker slot: start, serve, notice a crash (or a lost
//! connection), restart with exponential backoff, stop on shutdown.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_telemetry::Telemetry;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::{ExternalWorker, PoolConfig, WorkerTls};
use crate::dispatch::{Dispatch, Exit, LiveWorker};
use crate::events::PoolEvents;
use crate::health::{self, Recycle, Unhealthy, Verdict, Watched};
use crate::process::{SpawnSpec, WorkerProcess};
use crate::recycle;
use crate::template::Template;
use snakepit_grpc::{ConnectOptions, WorkerAddress, WorkerClient};

/// How often an external worker's connection is checked.
const CONNECTION_CHECK: Duration = Duration::from_millis(200);

/// Numbers the worker sockets: a replacement starts while the worker it
/// replaces still listens, so each process gets a path of its own.
static NEXT_SOCKET: AtomicU64 = AtomicU64::new(1);

/// What every slot task of one pool shares.
pub(crate) struct Shared {
    pub config: PoolConfig,
    pub telemetry: Telemetry,
    pub events: PoolEvents,
    pub dispatch: Arc<Dispatch>,
    /// The session table (`Pool::execute_in_session`).
    pub sessions: Arc<crate::session::Sessions>,
    pub socket_dir: PathBuf,
    /// The live process id of each local slot.
    pub pids: Mutex<Vec<Option<u32>>>,
    /// The address of each external slot (`config.external_workers`, then
    /// discovered ones).
    pub external: Mutex<Vec<Option<ExternalWorker>>>,
    /// Slots stopped because their address went away (`terminated` says
    /// `removed`).
    pub removed: Mutex<Vec<usize>>,
    /// The template process local workers are forked from
    /// (`start_method = "template"`).
    pub template: Option<Arc<Template>>,
}

/// A started slot: a process (local) and a connected client.
pub(crate) struct Started {
    pub process: Option<WorkerProcess>,
    pub client: WorkerClient,
}

impl Shared {
    /// `<pool_name>_<n>`, n from 1.
    pub fn worker_id(&self, slot: usize) -> String {
        format!("{}_{}", self.config.pool_name, slot + 1)
    }

    fn set_pid(&self, slot: usize, pid: Option<u32>) {
        if let Ok(mut pids) = self.pids.lock() {
            if pids.len() <= slot {
                pids.resize(slot + 1, None);
            }
            pids[slot] = pid;
        }
    }

    /// Sets the address of external slot `slot`.
    pub fn set_external(&self, slot: usize, worker: ExternalWorker) {
        let mut external = self.external.lock().unwrap_or_else(|p| p.into_inner());
        if external.len() <= slot {
            external.resize(slot + 1, None);
        }
        external[slot] = Some(worker);
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&s| s != slot);
    }

    /// Marks `slot` as stopping because its address went away.
    pub fn mark_removed(&self, slot: usize) {
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
    }

    fn was_removed(&self, slot: usize) -> bool {
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&slot)
    }

    /// Starts the worker of `slot`: emits `spawn_started`, then `spawned` or
    /// `spawn_failed`. The error is the reason.
    pub async fn start(&self, slot: usize) -> Result<Started, String> {
        let worker_id = self.worker_id(slot);
        self.events.spawn_started(&worker_id);
        let t0 = Instant::now();
        let result = if self.config.is_external() {
            self.start_external(slot, &worker_id).await
        } else {
            self.start_local(slot, &worker_id).await
        };
        match &result {
            Ok(started) => {
                let pid = started.process.as_ref().map(|p| p.pid);
                self.set_pid(slot, pid);
                let method = match (&started.process, &self.template) {
                    (None, _) => "external",
                    (Some(_), Some(_)) => "template",
                    (Some(_), None) => "spawn",
                };
                self.events.spawned(&worker_id, t0.elapsed(), pid, method);
            }
            Err(reason) => self.events.spawn_failed(&worker_id, t0.elapsed(), reason),
        }
        result
    }

    async fn start_local(&self, slot: usize, worker_id: &str) -> Result<Started, String> {
        let c = &self.config;
        let token = crate::process::new_token()?;
        let spec = SpawnSpec {
            python: c.resolve_python(),
            adapter: c.adapter.clone(),
            socket: self.socket_dir.join(format!(
                "w{}-{}.sock",
                slot + 1,
                NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
            )),
            worker_id: worker_id.to_string(),
            pool_name: c.pool_name.clone(),
            env: c.env.clone(),
            working_dir: c.working_dir.clone(),
            grace: c.grace_period,
            extra_args: c.worker_args.clone(),
            startup_timeout: c.startup_timeout,
            token: token.clone(),
            max_message_bytes: c.max_message_bytes,
        };
        let mut process = match &self.template {
            Some(template) => WorkerProcess::fork(&spec, template).await,
            None => WorkerProcess::spawn(&spec).await,
        }
        .map_err(|f| f.reason)?;
        let mut options = ConnectOptions::new(
            WorkerAddress::Unix(process.socket().to_path_buf()),
            worker_id,
        );
        options.pool_name = c.pool_name.clone();
        options.python_pid = Some(process.pid);
        options.token = Some(token);
        options.connect_timeout = c.startup_timeout;
        options.call_streams = c.call_streams_per_worker;
        options.max_message_bytes = c.max_message_bytes;
        options.shm_threshold_bytes = c.shm_threshold_bytes;
        options.shm_max_bytes = c.shm_max_bytes;
        match WorkerClient::connect(self.telemetry.clone(), options).await {
            Ok(client) => Ok(Started {
                process: Some(process),
                client,
            }),
            Err(e) => {
                process.kill_now().await;
                Err(process.with_stderr(format!("cannot connect to the worker: {e}")))
            }
        }
    }

    async fn start_external(&self, slot: usize, worker_id: &str) -> Result<Started, String> {
        let external = self
            .external
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(slot)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("slot {} has no worker address", slot + 1))?;
        let address = WorkerAddress::from_str(&external.address)
            .map_err(|e| format!("bad address {:?}: {e}", external.address))?;
        let mut options = ConnectOptions::new(address, worker_id);
        options.pool_name = self.config.pool_name.clone();
        options.token = external.token.clone();
        options.tls = external.tls.as_ref().map(WorkerTls::options);
        options.connect_timeout = self.config.startup_timeout;
        options.call_streams = self.config.call_streams_per_worker;
        options.max_message_bytes = self.config.max_message_bytes;
        WorkerClient::connect(self.telemetry.clone(), options)
            .await
            .map(|client| Started {
                process: None,
                client,
            })
            .map_err(|e| format!("cannot connect to {}: {e}", external.address))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.restart_backoff_base;
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        base.checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.config.restart_backoff_max)
    }
}

/// How a serving worker stopped.
enum Ended {
    /// Process exit or connection loss: a short reason, and the reason with
    /// the worker's last stderr lines.
    Crashed(String, String),
    /// A health check failed: it is killed and replaced.
    Unhealthy(Unhealthy),
    /// A recycling limit was reached: it is replaced without failing calls.
    Recycle(Recycle),
    /// The pool is shutting down.
    Stop,
}

/// A started worker registered with the dispatch table: calls may go to it.
pub(crate) struct Serving {
    pub process: Option<WorkerProcess>,
    pub client: WorkerClient,
    pub live: Arc<LiveWorker>,
    /// Tells its calls in flight how it went away.
    pub exit_tx: watch::Sender<Option<Exit>>,
}

/// Makes a started worker available for calls (in place of the slot's
/// previous worker, if any).
pub(crate) fn register(shared: &Shared, slot: usize, started: Started) -> Serving {
    let (exit_tx, exit_rx) = watch::channel(None);
    let live = Arc::new(LiveWorker {
        client: started.client.clone(),
        worker_id: shared.worker_id(slot).into(),
        slot,
        exit: exit_rx,
        total_commands: AtomicU64::new(0),
        external: started.process.is_none(),
        in_flight: AtomicUsize::new(0),
        released: Notify::new(),
        freed: Notify::new(),
        max_calls: shared
            .config
            .max_calls_per_worker
            .filter(|_| started.process.is_some()),
        granted: AtomicU64::new(0),
        over_limit: AtomicBool::new(false),
        limit_reached: Notify::new(),
    });
    shared.dispatch.worker_up(live.clone());
    Serving {
        process: started.process,
        client: started.client,
        live,
        exit_tx,
    }
}

/// Runs slot `slot` from its first start until shutdown or until restarts
/// are exhausted; returns once every worker it started is gone.
pub(crate) async fn run_slot(
    shared: Arc<Shared>,
    slot: usize,
    first: Serving,
    mut stop: watch::Receiver<bool>,
) {
    let mut retiring = Vec::new();
    slot_loop(&shared, slot, first, &mut stop, &mut retiring).await;
    for task in retiring {
        let _ = task.await;
    }
}

/// Restart bookkeeping of one slot.
struct Restarts {
    /// Restarts so far.
    count: u64,
    /// Failures in a row (reset by a worker that stays up long enough).
    in_a_row: u32,
}

async fn slot_loop(
    shared: &Arc<Shared>,
    slot: usize,
    first: Serving,
    stop: &mut watch::Receiver<bool>,
    retiring: &mut Vec<JoinHandle<()>>,
) {
    let worker_id: Arc<str> = shared.worker_id(slot).into();
    let mut current = first;
    let mut restarts = Restarts {
        count: 0,
        in_a_row: 0,
    };
    let mut recycle_after = Instant::now();
    loop {
        let Serving {
            mut process,
            client,
            live,
            exit_tx,
        } = current;
        let up_at = process.as_ref().map_or_else(Instant::now, |p| p.ready_at);
        let watched = Watched {
            config: &shared.config,
            live: &live,
            client: &client,
            pid: process.as_ref().map(|p| p.pid),
            up_at,
            recycle_after,
        };
        let ended = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => Ended::Stop,
            (reason, detail) = serve(&mut process, &client) => Ended::Crashed(reason, detail),
            verdict = health::watch(watched) => match verdict {
                Verdict::Unhealthy(u) => Ended::Unhealthy(u),
                Verdict::Recycle(r) => Ended::Recycle(r),
            },
        };
        let lifetime = up_at.elapsed();
        let ended = match ended {
            Ended::Recycle(why) => {
                // The replacement starts while this worker still serves.
                shared.events.recycled(&worker_id, &why, lifetime);
                let attempt = tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => None,
                    r = shared.start(slot) => Some(r),
                };
                match attempt {
                    Some(Ok(started)) if !*stop.borrow() => {
                        let old = Serving {
                            process,
                            client,
                            live,
                            exit_tx,
                        };
                        current = register(shared, slot, started);
                        retiring.retain(|task| !task.is_finished());
                        retiring.push(tokio::spawn(recycle::retire(
                            shared.clone(),
                            old,
                            why.reason,
                            stop.clone(),
                        )));
                        restarts.in_a_row = 0;
                        continue;
                    }
                    Some(Ok(started)) => {
                        stop_started(shared, slot, started).await;
                        Ended::Stop
                    }
                    Some(Err(reason)) => {
                        tracing::warn!(
                            target: "snakepit::lifecycle",
                            worker_id = %worker_id,
                            "cannot start a replacement to recycle the worker; it keeps \
                             serving: {reason}"
                        );
                        recycle_after = Instant::now() + shared.config.restart_backoff_max;
                        current = Serving {
                            process,
                            client,
                            live,
                            exit_tx,
                        };
                        continue;
                    }
                    None => Ended::Stop,
                }
            }
            other => other,
        };
        let total = live.total_commands.load(Ordering::Relaxed);
        shared.dispatch.worker_down(&live);
        if !shared.dispatch.is_closed() {
            // On shutdown sessions end with the pool, not as lost.
            shared.sessions.worker_lost(&live);
        }
        let failure = match ended {
            Ended::Stop => {
                if process.is_none() {
                    // An external worker removed from the pool: its calls in
                    // flight finish first (on shutdown the pool drained them).
                    let _ = tokio::time::timeout(shared.config.grace_period, async {
                        while live.in_flight.load(Ordering::Acquire) > 0 {
                            let released = live.released.notified();
                            if live.in_flight.load(Ordering::Acquire) == 0 {
                                break;
                            }
                            released.await;
                        }
                    })
                    .await;
                }
                client.expect_stop();
                let how = match process.as_mut() {
                    Some(p) => p.terminate(shared.config.grace_period).await,
                    None => "disconnected".to_string(),
                };
                client.close().await;
                shared.set_pid(slot, None);
                let _ = exit_tx.send(Some(Exit::Gone(format!("shutdown ({how})"))));
                tracing::debug!(target: "snakepit::lifecycle", worker_id = %worker_id, "stopped: {how}");
                let reason = if shared.was_removed(slot) {
                    "removed"
                } else {
                    "shutdown"
                };
                shared
                    .events
                    .terminated(&worker_id, reason, true, lifetime, total);
                return;
            }
            Ended::Crashed(reason, detail) => {
                let _ = exit_tx.send(Some(Exit::Gone(detail.clone())));
                shared.set_pid(slot, None);
                client.close().await;
                drop(process);
                tracing::warn!(target: "snakepit::lifecycle", worker_id = %worker_id, "worker lost: {detail}");
                shared
                    .events
                    .terminated(&worker_id, &reason, false, lifetime, total);
                detail
            }
            Ended::Unhealthy(u) => {
                let in_flight = live.in_flight.load(Ordering::Relaxed);
                shared
                    .events
                    .unhealthy(&worker_id, u.reason, &u.detail, lifetime, in_flight);
                let why = format!("{}: {}", u.reason, u.detail);
                // Calls in flight learn the reason before the kill fails them.
                let _ = exit_tx.send(Some(Exit::Unhealthy(why.clone())));
                client.expect_stop();
                let how = match process.as_mut() {
                    // SIGKILL: a stopped or hung process ignores SIGTERM.
                    Some(p) => {
                        p.kill_now().await;
                        "killed (SIGKILL)"
                    }
                    None => "disconnected",
                };
                shared.set_pid(slot, None);
                client.close().await;
                drop(process);
                tracing::warn!(target: "snakepit::lifecycle", worker_id = %worker_id, "worker unhealthy, {how}: {why}");
                shared.events.terminated(
                    &worker_id,
                    &format!("unhealthy: {}", u.reason),
                    false,
                    lifetime,
                    total,
                );
                format!("killed as unhealthy: {why}")
            }
            Ended::Recycle(_) => unreachable!("handled above"),
        };
        if lifetime >= shared.config.restart_stable_after {
            restarts.in_a_row = 0;
        }
        match restart(shared, slot, stop, &mut restarts, failure).await {
            Some(serving) => current = serving,
            None => return,
        }
    }
}

/// Restarts slot `slot` after `failure`, with backoff, until it works, the
/// limit is hit (the slot is given up) or the pool stops (`None` for both).
async fn restart(
    shared: &Arc<Shared>,
    slot: usize,
    stop: &mut watch::Receiver<bool>,
    restarts: &mut Restarts,
    mut failure: String,
) -> Option<Serving> {
    let worker_id = shared.worker_id(slot);
    let failed_at = Instant::now();
    loop {
        restarts.in_a_row = restarts.in_a_row.saturating_add(1);
        // External workers are someone else's to restart: keep reconnecting
        // at the longest backoff, never give up.
        if !shared.config.is_external() && restarts.in_a_row > shared.config.max_restarts {
            let tried = shared.config.max_restarts;
            tracing::error!(
                target: "snakepit::lifecycle",
                worker_id = %worker_id,
                "giving up after {tried} restarts in a row; last failure: {failure}"
            );
            shared
                .dispatch
                .abandon(slot, &format!("{worker_id}: {failure}"));
            shared.events.abandoned(&worker_id, tried, &failure);
            return None;
        }
        let wait = shared.backoff(restarts.in_a_row);
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        let attempt = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return None,
            r = shared.start(slot) => r,
        };
        match attempt {
            Ok(started) => {
                if *stop.borrow() {
                    stop_started(shared, slot, started).await;
                    return None;
                }
                restarts.count += 1;
                shared
                    .events
                    .restarted(&worker_id, restarts.count, failed_at.elapsed());
                return Some(register(shared, slot, started));
            }
            Err(reason) => failure = format!("restart failed: {reason}"),
        }
    }
}

/// A worker started while the pool was stopping: stop it again.
async fn stop_started(shared: &Shared, slot: usize, started: Started) {
    started.client.expect_stop();
    if let Some(mut p) = started.process {
        p.terminate(shared.config.grace_period).await;
    }
    started.client.close().await;
    shared.set_pid(slot, None);
}

/// Serves until the process exits or the connection is lost; the reason,
/// short and with stderr.
async fn serve(process: &mut Option<WorkerProcess>, client: &WorkerClient) -> (String, String) {
    match process {
        Some(p) => {
            let status = p.proc.wait().await;
            let how = match status {
                Ok(how) => how,
                Err(e) => format!("lost track of the process: {e}"),
            };
            let reason = format!("crashed: {how}");
            let tail = p.stderr_after_exit(5).await;
            if tail.is_empty() {
                (reason.clone(), reason)
            } else {
                (reason.clone(), format!("{reason}; stderr:\n{tail}"))
            }
        }
        None => loop {
            tokio::time::sleep(CONNECTION_CHECK).await;
            if !client.is_connected() {
                let reason = "connection_lost".to_string();
                return (reason.clone(), reason);
            }
        },
    }
}
