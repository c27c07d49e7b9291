//! A real Python worker process (`python -m snakepit_bridge.worker`),
//! started and waited for until its ready line, killed and reaped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use snakepit_core::ready::ReadyLine;

/// How to start a worker. Every worker watches its stdin (it exits when the
/// test process does).
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    adapter: String,
    worker_id: String,
    listen: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    quiet: bool,
    ready_timeout: Duration,
    wrap: Vec<String>,
}

impl WorkerSpec {
    /// A worker of `adapter` (`module:Class`) named `worker_id`, listening
    /// on a Unix socket in a private temporary directory.
    pub fn new(adapter: &str, worker_id: &str) -> WorkerSpec {
        WorkerSpec {
            adapter: adapter.to_string(),
            worker_id: worker_id.to_string(),
            listen: None,
            args: Vec::new(),
            env: Vec::new(),
            quiet: false,
            ready_timeout: Duration::from_secs(30),
            wrap: Vec::new(),
        }
    }

    /// Listens on `address` (`--listen`, e.g. `127.0.0.1:0`) instead of a
    /// private Unix socket.
    pub fn listen(mut self, address: &str) -> WorkerSpec {
        self.listen = Some(address.to_string());
        self
    }

    /// Adds command-line arguments after the standard ones.
    pub fn args<I, S>(mut self, args: I) -> WorkerSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the worker.
    pub fn env(mut self, key: &str, value: &str) -> WorkerSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the interpreter through `prefix`, e.g. `ip netns exec <ns>`.
    /// The prefix must exec the interpreter (not fork it), so the process
    /// started is the worker.
    pub fn wrap<I, S>(mut self, prefix: I) -> WorkerSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.wrap = prefix.into_iter().map(Into::into).collect();
        self
    }

    /// Discards the worker's stderr (by default it goes to the test's).
    pub fn quiet(mut self) -> WorkerSpec {
        self.quiet = true;
        self
    }

    /// Starts the worker and waits (up to 30 s) for its ready line; panics,
    /// naming the interpreter, when it does not start or is not ready.
    pub fn start(self) -> WorkerProcess {
        let dir = tempfile::Builder::new()
            .prefix("snakepit-test-")
            .tempdir()
            .expect("create a temporary directory for the worker's socket");
        let socket = self.listen.is_none().then(|| dir.path().join("w.sock"));
        let (child, ready) = self.spawn(socket.as_deref());
        WorkerProcess {
            child,
            ready,
            spec: self,
            socket,
            _dir: dir,
        }
    }

    fn spawn(&self, socket: Option<&Path>) -> (Child, ReadyLine) {
        let listen = match (&self.listen, socket) {
            (Some(address), _) => address.clone(),
            (None, Some(socket)) => format!("unix:{}", socket.display()),
            (None, None) => unreachable!("a worker without --listen has a socket"),
        };
        let python = crate::python();
        let mut command = match self.wrap.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&python);
                c
            }
            None => Command::new(&python),
        };
        let mut child = command
            .args(["-m", "snakepit_bridge.worker", "--adapter", &self.adapter])
            .args(["--listen", &listen, "--worker-id", &self.worker_id])
            .arg("--watch-stdin")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if self.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run `cargo xtask setup` or set SNAKEPIT_PYTHON",
                    python.display()
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(self.ready_timeout) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "worker {} ({}) was not ready in {:?}",
                    self.worker_id, self.adapter, self.ready_timeout
                );
            }
        };
        let failure = match ReadyLine::parse(&line) {
            Ok(Some(ready)) => return (child, ready),
            Ok(None) => format!("it printed {line:?} instead of its ready line"),
            Err(e) => e.to_string(),
        };
        let _ = child.kill();
        let status = child.wait();
        panic!(
            "worker {} did not start ({status:?}): {failure}",
            self.worker_id
        );
    }
}

/// A running worker; killed and reaped on drop.
pub struct WorkerProcess {
    /// The process (its stdin is the pipe the worker watches).
    pub child: Child,
    /// What it announced in its ready line.
    pub ready: ReadyLine,
    spec: WorkerSpec,
    socket: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts `adapter` as `worker_id` on a private Unix socket (shorthand
    /// for [`WorkerSpec::new`]`(..).start()`).
    pub fn start(adapter: &str, worker_id: &str) -> WorkerProcess {
        WorkerSpec::new(adapter, worker_id).start()
    }

    /// The process id of the current process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The private Unix socket it listens on (`None` with
    /// [`WorkerSpec::listen`]).
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// The `--worker-id` it runs as.
    pub fn worker_id(&self) -> &str {
        &self.spec.worker_id
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process and starts a new one from the same spec at the same
    /// address, as a restarted external worker would be (`adapter` replaces
    /// the adapter).
    pub fn restart(&mut self, adapter: &str) {
        self.kill();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
            let _ = std::fs::remove_file(format!("{}.calls", socket.display()));
        }
        self.spec.adapter = adapter.to_string();
        let (child, ready) = self.spec.spawn(self.socket.as_deref());
        self.child = child;
        self.ready = ready;
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
