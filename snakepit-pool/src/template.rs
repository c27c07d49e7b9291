//! The pool's template process (`start_method = "template"`): one Python
//! process that imports the adapter and runs its `preload()` once, then
//! forks a worker whenever the pool starts or restarts one. The host makes
//! each worker's stdin, stdout and stderr pipes and sends their child ends
//! with the request (`fd_pass`), so a forked worker is watched exactly like
//! a spawned one (`process.rs`). The template reports each child's pid and,
//! later, how it exited. When the template itself ends, it is started again
//! and `snakepit.pool.template.restarted` is emitted; the workers it forked
//! keep serving. The protocol is written down in
//! `python/snakepit_bridge/worker/template.py`.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::events::PoolEvents;
use crate::fd_pass;
use crate::interpreter::ResolvedPython;
use crate::lines::{LineReader, MAX_LINE};
use crate::process::{describe_exit, has_exited, signal, spawn_stderr_reader, StderrTail};

/// How a pool starts its local workers (`start_method` in `[pool]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartMethod {
    /// A fresh interpreter per worker: imports everything itself. Keep it
    /// for adapters whose state cannot be forked (a CUDA context, threads
    /// started at import).
    #[default]
    Spawn,
    /// Forked from the pool's template process, which imported the adapter
    /// and ran its `preload()` once: fast starts and restarts, preloaded
    /// memory shared copy-on-write. See docs/reliability.md, "Template
    /// workers", for the fork-safety rules.
    Template,
}

impl StartMethod {
    /// `"spawn"` or `"template"`, as in the config and in
    /// `snakepit.pool.worker.spawned`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Template => "template",
        }
    }
}

/// Numbers the template control sockets of this host process.
static NEXT_CONTROL: AtomicU64 = AtomicU64::new(1);

/// How often a forked worker whose template is gone is checked for exit.
const ORPHAN_POLL: Duration = Duration::from_millis(200);

/// How to start the template process of one pool.
#[derive(Clone, Debug)]
pub(crate) struct TemplateSpec {
    pub python: ResolvedPython,
    pub adapter: String,
    pub pool_name: String,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    /// Longest wait for the template to be ready, and for one fork.
    pub startup_timeout: Duration,
    /// The pool's private socket directory (the control socket lives there).
    pub socket_dir: PathBuf,
}

impl TemplateSpec {
    /// The template of the local pool `config`, its control sockets in
    /// `socket_dir`.
    pub(crate) fn of(config: &crate::PoolConfig, socket_dir: &std::path::Path) -> TemplateSpec {
        TemplateSpec {
            python: config.resolve_python(),
            adapter: config.adapter.clone(),
            pool_name: config.pool_name.clone(),
            env: config.env.clone(),
            working_dir: config.working_dir.clone(),
            startup_timeout: config.startup_timeout,
            socket_dir: socket_dir.to_path_buf(),
        }
    }
}

/// A line from the template.
#[derive(Deserialize)]
#[serde(untagged)]
enum Message {
    Ready { ready: u32 },
    Forked { pid: u32 },
    Exited { exited: u32, status: String },
    Error { error: String },
}

/// Exit statuses the template reported, by child pid.
#[derive(Default)]
struct ExitNotes {
    statuses: Mutex<HashMap<u32, String>>,
    /// Set once the template's control socket closed: no more notes.
    gone: AtomicBool,
    notify: Notify,
}

impl ExitNotes {
    fn put(&self, pid: u32, status: String) {
        if let Ok(mut s) = self.statuses.lock() {
            s.insert(pid, status);
        }
        self.notify.notify_waiters();
    }

    fn take(&self, pid: u32) -> Option<String> {
        self.statuses.lock().ok()?.remove(&pid)
    }
}

/// A worker process forked by the template: not the host's child, so its
/// exit comes from the template's report (or, with the template gone, from
/// `/proc`). Killed when dropped before it exited, as a spawned worker is.
#[derive(Debug)]
pub(crate) struct Forked {
    pub pid: u32,
    notes: Arc<ExitNotes>,
    exited: bool,
}

impl std::fmt::Debug for ExitNotes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExitNotes")
    }
}

impl Forked {
    /// Waits until the worker exits; how it ended.
    pub(crate) async fn wait(&mut self) -> String {
        let mut unreported = 0;
        loop {
            let notified = self.notes.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(status) = self.notes.take(self.pid) {
                self.exited = true;
                return status;
            }
            if self.notes.gone.load(Ordering::Acquire) && has_exited(self.pid) {
                // Its template is gone: init reaps it and the status is lost.
                // Two looks apart, in case the last note is on its way.
                unreported += 1;
                if unreported > 1 {
                    self.exited = true;
                    return "exited (status unknown: its template process was gone)".to_string();
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(ORPHAN_POLL) => {}
            }
        }
    }

    /// SIGKILL, unless it is known to have exited (its pid may be reused).
    pub(crate) fn kill(&self) {
        if !self.exited {
            signal(self.pid, libc::SIGKILL);
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        self.kill();
        self.notes.take(self.pid);
    }
}

/// A forked worker and the host's ends of its pipes.
pub(crate) struct ForkedIo {
    pub forked: Forked,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The live template process.
struct Running {
    pid: u32,
    /// Held open: the template exits at EOF.
    _stdin: ChildStdin,
    control: OwnedWriteHalf,
    replies: mpsc::UnboundedReceiver<Result<u32, String>>,
    notes: Arc<ExitNotes>,
    /// How the template ended, once it has.
    exited: watch::Receiver<Option<String>>,
    /// Dropping it kills the template.
    _kill: oneshot::Sender<()>,
    tail: Arc<Mutex<StderrTail>>,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    /// How the last template ended, and when that was noticed: the next
    /// start is a restart.
    died: Option<(String, Instant)>,
}

/// One pool's template process, started at the first fork and restarted
/// when it ends.
pub(crate) struct Template {
    spec: TemplateSpec,
    events: PoolEvents,
    state: tokio::sync::Mutex<State>,
    closed: AtomicBool,
    /// The pid of a template that ended on its own goes here, to be
    /// restarted at once.
    died: mpsc::UnboundedSender<u32>,
}

impl Template {
    /// A template for `spec`; its process starts with the first fork.
    pub(crate) fn new(spec: TemplateSpec, events: PoolEvents) -> Arc<Template> {
        let (died, mut died_rx) = mpsc::unbounded_channel();
        let template = Arc::new(Template {
            spec,
            events,
            state: tokio::sync::Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            died,
        });
        let weak = Arc::downgrade(&template);
        tokio::spawn(async move {
            while let Some(pid) = died_rx.recv().await {
                match weak.upgrade() {
                    Some(template) => template.revive(pid).await,
                    None => break,
                }
            }
        });
        template
    }

    /// The pid of the live template process, if any.
    pub(crate) async fn pid(&self) -> Option<u32> {
        let state = self.state.lock().await;
        state
            .running
            .as_ref()
            .filter(|r| r.exited.borrow().is_none())
            .map(|r| r.pid)
    }

    /// Forks a worker that runs `snakepit_bridge.worker` with `argv`, its
    /// environment the template's plus `env`. The error says why not.
    pub(crate) async fn fork(
        self: &Arc<Self>,
        argv: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<ForkedIo, String> {
        let mut state = self.state.lock().await;
        let running = self.ensure(&mut state).await?;
        let io_err = |e: std::io::Error| format!("cannot make the worker's pipes: {e}");
        let (stdin_r, stdin_w) = fd_pass::pipe().map_err(io_err)?;
        let (stdout_r, stdout_w) = fd_pass::pipe().map_err(io_err)?;
        let (stderr_r, stderr_w) = fd_pass::pipe().map_err(io_err)?;
        let body = serde_json::json!({ "argv": argv, "env": env }).to_string();
        let len = u32::try_from(body.len()).map_err(|_| "fork request too large".to_string())?;
        let mut message = len.to_be_bytes().to_vec();
        message.extend_from_slice(body.as_bytes());
        fd_pass::send_with_fds(
            &mut running.control,
            &message,
            &[&stdin_r, &stdout_w, &stderr_w],
        )
        .await
        .map_err(|e| format!("cannot send the fork request to the template: {e}"))?;
        drop((stdin_r, stdout_w, stderr_w));
        let reply = tokio::time::timeout(self.spec.startup_timeout, running.replies.recv()).await;
        let pid = match reply {
            Ok(Some(Ok(pid))) => pid,
            Ok(Some(Err(e))) => return Err(format!("the template did not fork: {e}")),
            Ok(None) => return Err(with_tail(&running.tail, "the template exited".into())),
            Err(_) => {
                return Err(format!(
                    "the template did not answer a fork request within {:?}",
                    self.spec.startup_timeout
                ))
            }
        };
        Ok(ForkedIo {
            forked: Forked {
                pid,
                notes: running.notes.clone(),
                exited: false,
            },
            stdin: stdin_w,
            stdout: stdout_r,
            stderr: stderr_r,
        })
    }

    /// The live template, started (or restarted, with the event) if needed.
    async fn ensure<'a>(self: &Arc<Self>, state: &'a mut State) -> Result<&'a mut Running, String> {
        if let Some(how) = state
            .running
            .as_ref()
            .and_then(|r| r.exited.borrow().clone())
        {
            state.running = None;
            state.died.get_or_insert((how, Instant::now()));
        }
        if state.running.is_none() {
            if self.closed.load(Ordering::Acquire) {
                return Err("the pool is shutting down".to_string());
            }
            let running = self.start().await?;
            if let Some((reason, since)) = state.died.take() {
                tracing::warn!(
                    target: "snakepit::lifecycle",
                    pool_name = %self.spec.pool_name,
                    "template process restarted (pid {}); the previous one {reason}",
                    running.pid
                );
                self.events
                    .template_restarted(since.elapsed(), running.pid, &reason);
            }
            state.running = Some(running);
        }
        state
            .running
            .as_mut()
            .ok_or_else(|| "no template process".to_string())
    }

    /// Starts the template process and waits for its ready message.
    async fn start(self: &Arc<Self>) -> Result<Running, String> {
        let s = &self.spec;
        let path = s.socket_dir.join(format!(
            "template-{}.sock",
            NEXT_CONTROL.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on {} for the template: {e}", path.display()))?;
        let mut cmd = Command::new(&s.python.path);
        cmd.arg("-m")
            .arg("snakepit_bridge.worker.template")
            .arg("--adapter")
            .arg(&s.adapter)
            .arg("--control")
            .arg(&path)
            .envs(&s.env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &s.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run the interpreter {}: {e}", s.python))?;
        let pid = child.id().unwrap_or(0);
        let tail = Arc::new(Mutex::new(StderrTail::default()));
        if let Some(err) = child.stderr.take() {
            spawn_stderr_reader(err, format!("{}_template", s.pool_name), tail.clone());
        }
        let stdin = child
            .stdin
            .take()
            .ok_or("the template's stdin was not captured")?;
        let ready = tokio::time::timeout(s.startup_timeout, async {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted.map_err(|e| format!("accept: {e}"))?;
                    let (read, write) = stream.into_split();
                    let mut lines = LineReader::new(tokio::io::BufReader::new(read), MAX_LINE);
                    let first = lines.next_line().await.map_err(|e| e.to_string())?;
                    match first.map(|l| serde_json::from_slice::<Message>(&l.bytes)) {
                        Some(Ok(Message::Ready { ready })) if ready == pid => Ok((lines, write)),
                        Some(Ok(Message::Error { error })) => Err(error),
                        other => Err(format!("unexpected first message {:?}", other.map(|m| m.is_ok()))),
                    }
                }
                status = child.wait() => Err(match status {
                    Ok(s) => format!("the template exited before it was ready ({})", describe_exit(&s)),
                    Err(e) => format!("lost track of the template: {e}"),
                }),
            }
        })
        .await;
        let _ = std::fs::remove_file(&path);
        let (lines, control) = match ready {
            Ok(Ok(pair)) => pair,
            Ok(Err(reason)) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                return Err(with_tail(&tail, format!("template process: {reason}")));
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(with_tail(
                    &tail,
                    format!("the template was not ready within {:?}", s.startup_timeout),
                ));
            }
        };
        let notes = Arc::new(ExitNotes::default());
        let (reply_tx, replies) = mpsc::unbounded_channel();
        tokio::spawn(read_messages(lines, reply_tx, notes.clone()));
        let (exited_tx, exited) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel();
        tokio::spawn(watch_template(child, kill_rx, exited_tx, self.died.clone()));
        Ok(Running {
            pid,
            _stdin: stdin,
            control,
            replies,
            notes,
            exited,
            _kill: kill,
            tail,
        })
    }

    /// After the template `pid` ended on its own: starts a new one now, so
    /// the next fork does not wait for it.
    async fn revive(self: &Arc<Self>, pid: u32) {
        let mut state = self.state.lock().await;
        if state.running.as_ref().map(|r| r.pid) != Some(pid) || self.closed.load(Ordering::Acquire)
        {
            return;
        }
        if let Err(reason) = self.ensure(&mut state).await {
            tracing::warn!(
                target: "snakepit::lifecycle",
                pool_name = %self.spec.pool_name,
                "cannot restart the template process (the next worker start tries again): {reason}"
            );
        }
    }

    /// Stops the template process (its workers are stopped by their slots).
    pub(crate) async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let running = self.state.lock().await.running.take();
        if let Some(running) = running {
            let mut exited = running.exited.clone();
            drop(running);
            let _ = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(Option::is_some))
                .await;
        }
    }
}

fn with_tail(tail: &Mutex<StderrTail>, reason: String) -> String {
    let tail = tail.lock().map(|t| t.summary(20)).unwrap_or_default();
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}; stderr:\n{tail}")
    }
}

/// Reads the template's messages: replies to fork requests, and exit notes.
async fn read_messages(
    mut lines: LineReader<tokio::io::BufReader<OwnedReadHalf>>,
    replies: mpsc::UnboundedSender<Result<u32, String>>,
    notes: Arc<ExitNotes>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_slice::<Message>(&line.bytes) {
            Ok(Message::Forked { pid }) => {
                let _ = replies.send(Ok(pid));
            }
            Ok(Message::Error { error }) => {
                let _ = replies.send(Err(error));
            }
            Ok(Message::Exited { exited, status }) => notes.put(exited, status),
            Ok(Message::Ready { .. }) | Err(_) => tracing::warn!(
                target: "snakepit::worker",
                "unexpected message from the template: {}",
                line.text()
            ),
        }
    }
    notes.gone.store(true, Ordering::Release);
    notes.notify.notify_waiters();
}

/// Owns the template's child: reports how it ended, kills it when its
/// `Running` is dropped, and asks for a restart when it ended on its own.
async fn watch_template(
    mut child: Child,
    kill: oneshot::Receiver<()>,
    exited: watch::Sender<Option<String>>,
    died: mpsc::UnboundedSender<u32>,
) {
    let pid = child.id().unwrap_or(0);
    let (status, killed) = tokio::select! {
        status = child.wait() => (status, false),
        _ = kill => {
            let _ = child.start_kill();
            (child.wait().await, true)
        }
    };
    let how = match status {
        Ok(s) => describe_exit(&s),
        Err(e) => format!("lost track of the process: {e}"),
    };
    let _ = exited.send(Some(how));
    if killed {
        return;
    }
    let _ = died.send(pid);
}
