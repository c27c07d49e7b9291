//! The [`Pool`]: start, calls, status, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_telemetry::Telemetry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ExternalWorker, PoolConfig};
use crate::discovery;
use crate::dispatch::{Dispatch, Exit, Lease, LiveWorker};
use crate::error::PoolError;
use crate::events::PoolEvents;
use crate::process;
use crate::session::{self, Sessions};
use crate::socket_dir;
use crate::stream::PoolStream;
use crate::supervisor::{register, run_slot, Shared, Started};
use crate::template::{StartMethod, Template, TemplateSpec};
use crate::MAX_SESSIONS;
use snakepit_grpc::{CallError, CallOptions, ToolOutput, WorkerInfo};

/// How long a failed call waits to learn whether its worker process died.
const CRASH_CONFIRM: Duration = Duration::from_secs(2);

/// A snapshot of a pool, as in the `snakepit.pool.status` event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// The pool.
    pub pool_name: String,
    /// Calls waiting for a worker.
    pub queue_depth: usize,
    /// Workers with a free call slot.
    pub available_workers: usize,
    /// Workers with every call slot taken.
    pub busy_workers: usize,
    /// Workers alive and connected.
    pub total_workers: usize,
    /// Calls running on workers.
    pub in_flight: usize,
    /// Worker slots given up after `max_restarts` failed restarts in a row
    /// (`snakepit.pool.worker.abandoned`); they take no calls any more.
    pub abandoned_workers: usize,
    /// Why the last slot given up failed (exit, health check or start
    /// error); `None` while no slot is.
    pub last_failure: Option<String>,
}

/// A supervised pool of Python workers (local processes or external
/// workers).
///
/// Cheap to clone; clones share the workers. [`Pool::shutdown`] on any clone
/// stops the pool for all of them. Dropping the last clone without a
/// shutdown stops the workers anyway: a best-effort, blocking SIGTERM, then
/// SIGKILL after the grace period.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Removed (with the sockets in it) when the pool goes.
    _socket_dir: Option<tempfile::TempDir>,
    finished: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("pool_name", &self.inner.shared.config.pool_name)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts every worker and waits until each is ready (within the
    /// startup timeout), then emits `snakepit.pool.initialized`.
    ///
    /// Fails with [`PoolError::Config`] on a bad config and with
    /// [`PoolError::Startup`] when a worker does not start (the reason has
    /// the Python traceback of a bad adapter); the workers that did start
    /// are stopped again. Must run inside a Tokio runtime.
    pub async fn start(telemetry: Telemetry, config: PoolConfig) -> Result<Pool, PoolError> {
        config.validate()?;
        let t0 = Instant::now();
        let socket_dir = if config.is_external() {
            None
        } else {
            let dir = socket_dir::create(&config.pool_name).map_err(|e| PoolError::Startup {
                worker_id: format!("{}_*", config.pool_name),
                reason: format!("cannot create a private socket directory: {e}"),
            })?;
            Some(dir)
        };
        // `dns:` names are resolved first: a name that does not resolve
        // fails the start before any worker does.
        let mut sources = discovery::Source::all(&config.external_workers);
        let static_external: Vec<Option<ExternalWorker>> = config
            .external_workers
            .iter()
            .filter(|w| discovery::DnsName::parse(&w.address).is_none())
            .cloned()
            .map(Some)
            .collect();
        let slots = if config.is_external() {
            static_external.len()
        } else {
            config.workers
        };
        let events = PoolEvents {
            telemetry: telemetry.clone(),
            pool_name: config.pool_name.as_str().into(),
        };
        let dispatch = Arc::new(Dispatch::new(
            slots,
            config.concurrency_per_worker,
            config.max_queue,
            config.queue_timeout,
            events.clone(),
        ));
        let socket_path = socket_dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let template = (config.start_method == StartMethod::Template && !config.is_external())
            .then(|| Template::new(TemplateSpec::of(&config, &socket_path), events.clone()));
        let shared = Arc::new(Shared {
            socket_dir: socket_path,
            template,
            config,
            telemetry,
            sessions: Arc::new(Sessions::new(MAX_SESSIONS, events.clone())),
            events,
            dispatch,
            pids: Mutex::new(vec![None; slots]),
            external: Mutex::new(static_external),
            removed: Mutex::new(Vec::new()),
        });
        let mut resolved = Vec::with_capacity(sources.len());
        for source in &sources {
            let addresses = source
                .resolve(&shared)
                .await
                .map_err(|reason| PoolError::Startup {
                    worker_id: format!("{}_*", shared.config.pool_name),
                    reason,
                })?;
            resolved.push(addresses);
        }

        let starts: Vec<_> = (0..slots)
            .map(|slot| {
                let shared = shared.clone();
                tokio::spawn(async move { shared.start(slot).await })
            })
            .collect();
        let mut started = Vec::with_capacity(slots);
        let mut failure = None;
        for (slot, handle) in starts.into_iter().enumerate() {
            match handle.await {
                Ok(Ok(s)) => started.push((slot, s)),
                Ok(Err(reason)) => {
                    failure.get_or_insert((slot, reason));
                }
                Err(e) => {
                    failure.get_or_insert((slot, format!("start task failed: {e}")));
                }
            }
        }
        if let Some((slot, reason)) = failure {
            for (other, s) in started {
                stop_now(&shared, other, s).await;
            }
            if let Some(template) = &shared.template {
                template.shutdown().await;
            }
            return Err(PoolError::Startup {
                worker_id: shared.worker_id(slot),
                reason,
            });
        }

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks: Vec<JoinHandle<()>> = started
            .into_iter()
            .map(|(slot, s)| {
                let serving = register(&shared, slot, s);
                tokio::spawn(run_slot(shared.clone(), slot, serving, stop_rx.clone()))
            })
            .collect();
        for (source, addresses) in sources.iter_mut().zip(&resolved) {
            source.apply(&shared, addresses).await;
        }
        if !sources.is_empty() {
            tasks.push(tokio::spawn(discovery::run(
                shared.clone(),
                sources,
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(session::sweep(
            shared.sessions.clone(),
            shared.config.session_ttl,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(status_ticker(shared.clone(), stop_rx)));
        let live = shared.dispatch.status().total_workers;
        shared.events.initialized(t0.elapsed(), live);
        Ok(Pool {
            inner: Arc::new(PoolInner {
                shared,
                stop,
                tasks: tokio::sync::Mutex::new(tasks),
                _socket_dir: socket_dir,
                finished: AtomicBool::new(false),
            }),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.config.pool_name
    }

    /// The config the pool runs with.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.shared.config
    }

    /// Runs `tool` on a free worker, waiting in the queue when all are busy.
    ///
    /// Without a timeout in `opts`, the config's `call_timeout` applies.
    /// Errors: [`PoolError::Saturated`] when the queue is full,
    /// [`PoolError::QueueTimeout`], [`PoolError::WorkerCrashed`] when the
    /// worker process dies during the call, [`PoolError::WorkerUnhealthy`]
    /// when the pool kills it after a failed health check,
    /// [`PoolError::NoLiveWorker`] at once when every worker slot was given
    /// up, [`PoolError::Call`] for tool and transport errors,
    /// [`PoolError::ShuttingDown`].
    pub async fn execute(
        &self,
        tool: &str,
        args: serde_json::Value,
        opts: CallOptions,
    ) -> Result<ToolOutput, PoolError> {
        let lease = self.inner.shared.dispatch.acquire(tool).await?;
        self.run(lease, tool, args, opts).await
    }

    /// Runs `tool` as a call of session `session_id`: on the worker the
    /// session is bound to, so that the tool finds the state that worker
    /// keeps for the session. The session's first call (or the first after
    /// its worker went away or it expired) goes to any free worker and
    /// binds the session to it (`snakepit.pool.session.created`).
    ///
    /// When the bound worker has no free call slot: with
    /// `session_affinity = "hint"` the call waits at most `session_wait`,
    /// then runs on any worker (the binding stays); with `"strict"` it
    /// waits up to `queue_timeout`, then fails with
    /// [`PoolError::SessionBusy`]. When the bound worker died or was
    /// replaced (`snakepit.pool.session.lost`): hint binds the session
    /// anew; strict fails this call with [`PoolError::SessionLost`] and
    /// forgets the session. A session unused for `session_ttl` is forgotten
    /// (`snakepit.pool.session.expired`).
    ///
    /// Errors: [`PoolError::InvalidSessionId`] for an empty id or one longer
    /// than [`MAX_SESSION_ID_LEN`](crate::MAX_SESSION_ID_LEN) bytes, and
    /// those of [`Pool::execute`].
    pub async fn execute_in_session(
        &self,
        session_id: &str,
        tool: &str,
        args: serde_json::Value,
        mut opts: CallOptions,
    ) -> Result<ToolOutput, PoolError> {
        let lease = session::lease(&self.inner.shared, session_id, tool).await?;
        opts.session_id = Some(session_id.to_string());
        self.run(lease, tool, args, opts).await
    }

    async fn run(
        &self,
        lease: Lease,
        tool: &str,
        args: serde_json::Value,
        mut opts: CallOptions,
    ) -> Result<ToolOutput, PoolError> {
        opts.timeout
            .get_or_insert(self.inner.shared.config.call_timeout);
        let worker = &lease.worker;
        worker.total_commands.fetch_add(1, Ordering::Relaxed);
        let result = worker.client.execute(tool, args, opts).await;
        match result {
            Ok(out) => Ok(out),
            Err(e) => Err(classify(worker, e).await),
        }
    }

    /// Runs a streaming tool on a free worker. The worker's call slot stays
    /// taken until the stream ends or is dropped. Errors as for
    /// [`Pool::execute`], before and during the stream.
    pub async fn execute_stream(
        &self,
        tool: &str,
        args: serde_json::Value,
        opts: CallOptions,
    ) -> Result<PoolStream, PoolError> {
        let lease = self.inner.shared.dispatch.acquire(tool).await?;
        self.run_stream(lease, tool, args, opts).await
    }

    /// Runs a streaming tool as a call of session `session_id`, routed as
    /// [`Pool::execute_in_session`] routes; the stream as
    /// [`Pool::execute_stream`] gives it.
    pub async fn execute_stream_in_session(
        &self,
        session_id: &str,
        tool: &str,
        args: serde_json::Value,
        mut opts: CallOptions,
    ) -> Result<PoolStream, PoolError> {
        let lease = session::lease(&self.inner.shared, session_id, tool).await?;
        opts.session_id = Some(session_id.to_string());
        self.run_stream(lease, tool, args, opts).await
    }

    async fn run_stream(
        &self,
        lease: Lease,
        tool: &str,
        args: serde_json::Value,
        mut opts: CallOptions,
    ) -> Result<PoolStream, PoolError> {
        opts.timeout
            .get_or_insert(self.inner.shared.config.call_timeout);
        let worker = lease.worker.clone();
        worker.total_commands.fetch_add(1, Ordering::Relaxed);
        match worker.client.execute_stream(tool, args, opts).await {
            Ok(chunks) => Ok(PoolStream::new(chunks, lease)),
            Err(e) => Err(classify(&worker, e).await),
        }
    }

    /// A snapshot: queue depth and workers available, busy and alive.
    pub fn status(&self) -> PoolStatus {
        self.inner.shared.dispatch.status()
    }

    /// The process ids of the live local workers (empty for external ones).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner
            .shared
            .pids
            .lock()
            .map(|p| p.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// The process id of the pool's template process
    /// (`start_method = "template"`) while one runs; `None` for other
    /// pools, and between a template's exit and its restart.
    pub async fn template_pid(&self) -> Option<u32> {
        match &self.inner.shared.template {
            Some(template) => template.pid().await,
            None => None,
        }
    }

    /// What each live worker reports about itself (`Describe`: id, pid,
    /// tools, and `call_address`, its native call socket or `""` when its
    /// calls go over grpc.aio), in slot order. A worker that does not answer
    /// gives its error.
    pub async fn describe(&self) -> Vec<Result<WorkerInfo, PoolError>> {
        let mut out = Vec::new();
        for worker in self.inner.shared.dispatch.workers() {
            out.push(worker.client.describe().await.map_err(PoolError::from));
        }
        out
    }

    /// The ids of the live workers.
    pub fn worker_ids(&self) -> Vec<String> {
        self.inner
            .shared
            .dispatch
            .workers()
            .iter()
            .map(|w| w.worker_id.to_string())
            .collect()
    }

    /// Stops gracefully: new and queued calls fail with
    /// [`PoolError::ShuttingDown`], calls in flight may finish within the
    /// grace period, then each worker gets SIGTERM and, after the grace
    /// period, SIGKILL. Emits `terminated` (planned) for each worker.
    /// Affects every clone; returns once every worker is gone.
    pub async fn shutdown(self) {
        self.inner.shared.dispatch.close();
        let shared = &self.inner.shared;
        if !shared.dispatch.drain(shared.config.grace_period).await {
            tracing::warn!(
                target: "snakepit::shutdown",
                pool_name = %self.inner.shared.config.pool_name,
                "calls still running after the grace period; stopping the workers anyway"
            );
        }
        let _ = self.inner.stop.send(true);
        let mut tasks = self.inner.tasks.lock().await;
        for task in tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(template) = &shared.template {
            template.shutdown().await;
        }
        self.inner.finished.store(true, Ordering::Release);
    }
}

/// Turns a failed call into `WorkerCrashed` when the worker process died,
/// and into `WorkerUnhealthy` when the pool killed it after a failed health
/// check.
pub(crate) async fn classify(worker: &LiveWorker, error: CallError) -> PoolError {
    if !matches!(error, CallError::Unavailable { .. }) {
        return PoolError::Call(error);
    }
    let mut exit = worker.exit.clone();
    let how = if worker.external {
        // No process to wait for: only a disconnect the pool made is known.
        Ok(exit.borrow().clone())
    } else {
        tokio::time::timeout(CRASH_CONFIRM, async {
            exit.wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|r| r.clone())
        })
        .await
    };
    let worker_id = worker.worker_id.to_string();
    match how {
        Ok(Some(Exit::Unhealthy(reason))) => PoolError::WorkerUnhealthy { worker_id, reason },
        Ok(Some(Exit::Gone(reason))) if !worker.external => {
            PoolError::WorkerCrashed { worker_id, reason }
        }
        _ => PoolError::Call(error),
    }
}

/// Stops a worker that started while another failed to.
async fn stop_now(shared: &Shared, slot: usize, started: Started) {
    let up_at = started.process.as_ref().map(|p| p.ready_at);
    if let Some(mut p) = started.process {
        p.terminate(shared.config.grace_period).await;
    }
    started.client.close().await;
    shared.events.terminated(
        &shared.worker_id(slot),
        "startup_failed",
        true,
        up_at.map(|t| t.elapsed()).unwrap_or_default(),
        0,
    );
}

async fn status_ticker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = shared.config.status_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => shared.events.status(&shared.dispatch.status()),
        }
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        if *self.finished.get_mut() {
            return;
        }
        self.shared.dispatch.close();
        let _ = self.stop.send(true);
        let pids: Vec<u32> = self
            .shared
            .pids
            .lock()
            .map(|p| p.iter().flatten().copied().collect())
            .unwrap_or_default();
        for &pid in &pids {
            process::signal(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + self.shared.config.grace_period;
        while Instant::now() < deadline && !pids.iter().all(|&p| process::has_exited(p)) {
            std::thread::sleep(Duration::from_millis(5));
        }
        for &pid in &pids {
            if !process::has_exited(pid) {
                process::signal(pid, libc::SIGKILL);
            }
        }
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}
