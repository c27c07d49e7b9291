//! One local worker process: spawned, or forked by the pool's template
//! (`template.rs`) with pipes the host made; then the same `SNAKEPIT_READY`
//! handshake, stderr into `tracing` plus a bounded tail, SIGTERM then
//! SIGKILL. Both output streams are read as bytes in lines of at most
//! [`MAX_LINE`] bytes.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_core::ready::{ReadyLine, ReadyLineError};
use tokio::io::{AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::interpreter::{missing_package_hint, ResolvedPython};
use crate::lines::{Line, LineReader, MAX_LINE};
use crate::template::{Forked, Template};

/// The stderr marker of an adapter that failed to load.
const ADAPTER_ERROR: &str = "SNAKEPIT_ADAPTER_ERROR:";
/// stderr lines kept for failure reasons.
const TAIL_LINES: usize = 60;
/// Lines kept after an adapter error marker (the traceback).
const MARKER_LINES: usize = 200;
/// Longest stderr line kept in the tail (bytes).
const MAX_TAIL_LINE: usize = 4096;
/// Read buffer of each output stream (bytes).
const READ_BUFFER: usize = 64 * 1024;

/// How to start one worker.
#[derive(Clone, Debug)]
pub(crate) struct SpawnSpec {
    pub python: ResolvedPython,
    pub adapter: String,
    pub socket: PathBuf,
    pub worker_id: String,
    pub pool_name: String,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    pub grace: Duration,
    pub extra_args: Vec<String>,
    pub startup_timeout: Duration,
    /// `--max-message-bytes`: the largest tool result, bytes.
    pub max_message_bytes: usize,
    /// The worker's token, given through `SNAKEPIT_TOKEN` (never on the
    /// command line, where every local user could read it).
    pub token: String,
}

/// A fresh token for one worker: 32 bytes from the OS's random source, as
/// hex.
pub(crate) fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot draw a worker token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The last lines a worker wrote on stderr, and an adapter error block.
#[derive(Debug, Default)]
pub(crate) struct StderrTail {
    lines: VecDeque<String>,
    marker: Option<Vec<String>>,
}

impl StderrTail {
    fn push(&mut self, mut line: String) {
        if line.len() > MAX_TAIL_LINE {
            let mut cut = MAX_TAIL_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        match &mut self.marker {
            Some(block) if block.len() < MARKER_LINES => block.push(line.clone()),
            Some(_) => {}
            None if line.contains(ADAPTER_ERROR) => self.marker = Some(vec![line.clone()]),
            None => {}
        }
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The adapter error block (marker line and traceback) when there is
    /// one, else the last `n` lines.
    pub(crate) fn summary(&self, n: usize) -> String {
        if let Some(block) = &self.marker {
            return block.join("\n");
        }
        let skip = self.lines.len().saturating_sub(n);
        self.lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The process behind a [`WorkerProcess`].
#[derive(Debug)]
pub(crate) enum Proc {
    /// Spawned by the host (`start_method = "spawn"`): the host's child.
    Spawned(Child),
    /// Forked by the pool's template (`start_method = "template"`).
    Forked(Forked),
}

impl Proc {
    /// Waits until the process exits; how it ended (`exit status 0`,
    /// `killed by signal 9 (SIGKILL)`).
    pub(crate) async fn wait(&mut self) -> std::io::Result<String> {
        match self {
            Proc::Spawned(child) => child.wait().await.map(|s| describe_exit(&s)),
            Proc::Forked(forked) => Ok(forked.wait().await),
        }
    }

    fn start_kill(&mut self) {
        match self {
            Proc::Spawned(child) => {
                let _ = child.start_kill();
            }
            Proc::Forked(forked) => forked.kill(),
        }
    }
}

/// A running worker process that printed its ready line.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    pub proc: Proc,
    /// Held open (dropped to close): the worker runs with `--watch-stdin`
    /// and exits on EOF.
    stdin: Option<Box<dyn std::fmt::Debug + Send + Sync>>,
    pub pid: u32,
    pub socket: PathBuf,
    pub tail: Arc<Mutex<StderrTail>>,
    stderr_task: JoinHandle<()>,
    pub ready_at: Instant,
}

/// Describes an exit status: `exit status 3` or `killed by signal 9 (SIGKILL)`.
pub(crate) fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => format!("killed by signal {sig} ({})", signal_name(sig)),
        None => "exited".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

/// Sends `sig` to `pid`. Returns false when the process does not exist.
pub(crate) fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Has `pid` exited (gone, or a zombie not yet reaped)?
pub(crate) fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the last ')' (the command name may contain one).
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .map(|state| state == 'Z' || state == 'X')
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// `<socket><suffix>`: the worker's native call socket (`.calls`) and its
/// shared accepted-events count (`.counters`).
fn beside_socket(socket: &Path, suffix: &str) -> PathBuf {
    let mut path = OsString::from(socket.as_os_str());
    path.push(suffix);
    PathBuf::from(path)
}

/// Removes the worker's socket, its native call socket and its counters
/// file, if they exist (the client has read the counters by then: it is
/// closed before the process is dropped).
fn remove_sockets(socket: &Path) {
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(beside_socket(socket, ".calls"));
    let _ = std::fs::remove_file(beside_socket(socket, ".counters"));
}

/// A capped line reader over one of the worker's output pipes.
fn line_reader<R: AsyncRead + Unpin>(reader: R) -> LineReader<BufReader<R>> {
    LineReader::new(BufReader::with_capacity(READ_BUFFER, reader), MAX_LINE)
}

/// Copies a worker's (or the template's) stderr into `tracing` and `tail`.
pub(crate) fn spawn_stderr_reader<R>(
    reader: R,
    worker_id: String,
    tail: Arc<Mutex<StderrTail>>,
) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = line_reader(reader);
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    let line = line.text();
                    tracing::warn!(target: "snakepit::worker", worker_id = %worker_id, "{line}");
                    if let Ok(mut t) = tail.lock() {
                        t.push(line);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(target: "snakepit::worker", worker_id = %worker_id, "stderr unreadable: {e}");
                    break;
                }
            }
        }
    })
}

/// The parsed ready line, or `None` for any other line (noise: also a
/// truncated line or one that is not UTF-8).
fn ready_line(line: &Line) -> Option<Result<ReadyLine, ReadyLineError>> {
    if line.truncated {
        return None;
    }
    let text = std::str::from_utf8(&line.bytes).ok()?;
    ReadyLine::parse(text).transpose()
}

/// Why a worker did not become ready.
#[derive(Debug)]
pub(crate) struct SpawnFailure {
    pub reason: String,
}

impl WorkerProcess {
    /// The worker's command line after `python -m snakepit_bridge.worker`;
    /// `--parent-pid` only for a spawned worker (a forked one's parent is
    /// the template, which may be restarted while the worker serves).
    fn argv(spec: &SpawnSpec, parent_pid: Option<u32>) -> Vec<String> {
        let mut argv: Vec<String> = vec![
            "--adapter".into(),
            spec.adapter.clone(),
            "--listen".into(),
            format!("unix:{}", spec.socket.display()),
            "--worker-id".into(),
            spec.worker_id.clone(),
            "--pool-name".into(),
            spec.pool_name.clone(),
            "--grace-s".into(),
            format!("{}", spec.grace.as_secs_f64()),
            "--watch-stdin".into(),
            "--max-message-bytes".into(),
            spec.max_message_bytes.to_string(),
        ];
        if let Some(pid) = parent_pid {
            argv.extend(["--parent-pid".into(), pid.to_string()]);
        }
        argv.extend(spec.extra_args.iter().cloned());
        argv
    }

    /// Starts the worker and waits for its ready line, at most
    /// `spec.startup_timeout`.
    pub(crate) async fn spawn(spec: &SpawnSpec) -> Result<WorkerProcess, SpawnFailure> {
        // A worker killed earlier leaves both sockets behind; the new one
        // could bind neither.
        remove_sockets(&spec.socket);
        let mut cmd = Command::new(&spec.python.path);
        cmd.arg("-m")
            .arg("snakepit_bridge.worker")
            .args(Self::argv(spec, Some(std::process::id())))
            .envs(&spec.env)
            .env("SNAKEPIT_TOKEN", &spec.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C meant for the host does not
            // reach the workers behind the pool's back.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| SpawnFailure {
            reason: format!("cannot run the interpreter {}: {e}", spec.python),
        })?;
        let pid = child.id().unwrap_or(0);
        let stdin = child
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn std::fmt::Debug + Send + Sync>);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SpawnFailure {
                reason: "stdout or stderr of the worker was not captured".to_string(),
            });
        };
        Self::handshake(spec, Proc::Spawned(child), pid, stdin, stdout, stderr).await
    }

    /// Forks the worker from the pool's template process and waits for its
    /// ready line, at most `spec.startup_timeout`. `spec.env` is the
    /// template's already; the token goes in the request.
    pub(crate) async fn fork(
        spec: &SpawnSpec,
        template: &Arc<Template>,
    ) -> Result<WorkerProcess, SpawnFailure> {
        remove_sockets(&spec.socket);
        let env = BTreeMap::from([("SNAKEPIT_TOKEN".to_string(), spec.token.clone())]);
        let io = template
            .fork(&Self::argv(spec, None), &env)
            .await
            .map_err(|reason| SpawnFailure { reason })?;
        let pipe_err = |e: std::io::Error| SpawnFailure {
            reason: format!("cannot watch the forked worker's output: {e}"),
        };
        let stdout =
            tokio::net::unix::pipe::Receiver::from_owned_fd(io.stdout).map_err(pipe_err)?;
        let stderr =
            tokio::net::unix::pipe::Receiver::from_owned_fd(io.stderr).map_err(pipe_err)?;
        let pid = io.forked.pid;
        let stdin = Some(Box::new(io.stdin) as Box<dyn std::fmt::Debug + Send + Sync>);
        Self::handshake(spec, Proc::Forked(io.forked), pid, stdin, stdout, stderr).await
    }

    /// Reads stderr into the tail and waits for the ready line on stdout.
    async fn handshake<O, E>(
        spec: &SpawnSpec,
        proc: Proc,
        pid: u32,
        stdin: Option<Box<dyn std::fmt::Debug + Send + Sync>>,
        stdout: O,
        stderr: E,
    ) -> Result<WorkerProcess, SpawnFailure>
    where
        O: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let tail = Arc::new(Mutex::new(StderrTail::default()));
        let stderr_task = spawn_stderr_reader(stderr, spec.worker_id.clone(), tail.clone());
        let mut process = WorkerProcess {
            proc,
            stdin,
            pid,
            socket: spec.socket.clone(),
            tail,
            stderr_task,
            ready_at: Instant::now(),
        };
        let mut lines = line_reader(stdout);
        let handshake = async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match ready_line(&line) {
                        Some(ready) => return Ok(ready),
                        None => tracing::warn!(
                            target: "snakepit::startup",
                            worker_id = %spec.worker_id,
                            "unexpected line on stdout before the ready line: {}",
                            line.text()
                        ),
                    },
                    Ok(None) => return Err(None),
                    Err(e) => return Err(Some(format!("stdout unreadable: {e}"))),
                }
            }
        };
        let outcome = tokio::time::timeout(spec.startup_timeout, handshake).await;
        match outcome {
            Ok(Ok(ready)) => {
                if let Err(reason) = check_ready(ready, pid) {
                    process.kill_now().await;
                    return Err(SpawnFailure { reason });
                }
                let worker_id = spec.worker_id.clone();
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::warn!(target: "snakepit::worker", worker_id = %worker_id, "unexpected line on stdout: {}", line.text());
                    }
                });
                process.ready_at = Instant::now();
                Ok(process)
            }
            Ok(Err(err)) => {
                // stdout closed: the worker is exiting. Collect its status
                // and the rest of stderr.
                let status =
                    tokio::time::timeout(Duration::from_secs(5), process.proc.wait()).await;
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), &mut process.stderr_task).await;
                let how = match status {
                    Ok(Ok(how)) => how,
                    _ => {
                        process.kill_now().await;
                        "closed its stdout".to_string()
                    }
                };
                let mut reason = format!("the worker exited before it was ready ({how})");
                if let Some(e) = err {
                    reason.push_str(&format!("; {e}"));
                }
                let mut reason = process.with_stderr(reason);
                if let Some(hint) = missing_package_hint(&spec.python, &reason) {
                    reason = format!("{hint}; {reason}");
                }
                Err(SpawnFailure { reason })
            }
            Err(_) => {
                process.kill_now().await;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), &mut process.stderr_task).await;
                let reason = format!(
                    "no ready line within the startup timeout ({:?})",
                    spec.startup_timeout
                );
                Err(SpawnFailure {
                    reason: process.with_stderr(reason),
                })
            }
        }
    }

    /// `reason` followed by the adapter error block or the stderr tail.
    pub(crate) fn with_stderr(&self, reason: String) -> String {
        let tail = self.tail.lock().map(|t| t.summary(20)).unwrap_or_default();
        if tail.is_empty() {
            reason
        } else {
            format!("{reason}; stderr:\n{tail}")
        }
    }

    /// Waits (briefly) for stderr to reach EOF, then the tail summary.
    pub(crate) async fn stderr_after_exit(&mut self, lines: usize) -> String {
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.stderr_task).await;
        self.tail
            .lock()
            .map(|t| t.summary(lines))
            .unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub(crate) async fn kill_now(&mut self) {
        self.proc.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.proc.wait()).await;
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns how it ended.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> String {
        // Closing stdin alone would also stop it; SIGTERM is immediate.
        signal(self.pid, libc::SIGTERM);
        match tokio::time::timeout(grace, self.proc.wait()).await {
            Ok(Ok(how)) => how,
            _ => {
                self.stdin.take();
                self.proc.start_kill();
                match tokio::time::timeout(Duration::from_secs(5), self.proc.wait()).await {
                    Ok(Ok(how)) => format!("{how} after the grace period"),
                    _ => "did not exit after SIGKILL".to_string(),
                }
            }
        }
    }

    /// The socket path it listens on.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

/// A ready line that parsed and names the spawned process's pid, or why not.
fn check_ready(ready: Result<ReadyLine, ReadyLineError>, pid: u32) -> Result<(), String> {
    let ready = ready.map_err(|e| e.to_string())?;
    if ready.pid != pid {
        return Err(format!(
            "ready line names pid {}, but the process is {pid}: {ready:?}",
            ready.pid
        ));
    }
    Ok(())
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.stdin.take();
        self.stderr_task.abort();
        remove_sockets(&self.socket);
    }
}
