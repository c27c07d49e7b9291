//! The pool's errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use snakepit_grpc::CallError;

/// What can go wrong starting a pool or making a call through it.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The worker answered with an error, or the call failed on the wire
    /// (tool error, call timeout, unavailable external worker, protocol).
    #[error("call failed: {0}")]
    Call(CallError),
    /// The call waited in the queue longer than the queue timeout.
    #[error("no worker became free within {waited:?} (queue_timeout); add workers or raise concurrency_per_worker")]
    QueueTimeout {
        /// Time spent in the queue.
        waited: Duration,
    },
    /// Every worker was busy and the queue was full.
    #[error("pool saturated: every worker is busy and the queue is full ({queue_depth} of {max_queue}); retry later or raise max_queue")]
    Saturated {
        /// Calls waiting when this one was rejected.
        queue_depth: usize,
        /// The queue's capacity.
        max_queue: usize,
    },
    /// The worker process running the call died.
    #[error("worker {worker_id} crashed during the call: {reason}")]
    WorkerCrashed {
        /// The worker that died.
        worker_id: String,
        /// Exit status or signal, and the last lines of its stderr.
        reason: String,
    },
    /// The worker running the call failed a health check (no heartbeat
    /// answer, or a call it could not stop) and the pool killed it; the
    /// call may be retried, it goes to the replacement.
    #[error("worker {worker_id} was killed as unhealthy during the call: {reason}")]
    WorkerUnhealthy {
        /// The worker that was killed.
        worker_id: String,
        /// `heartbeat_timeout` or `stuck_call`, with what was seen.
        reason: String,
    },
    /// Every worker slot of the pool was given up after `max_restarts`
    /// failed restarts in a row: nothing can run the call.
    #[error("the pool has no live worker: every worker failed max_restarts times in a row; last failure: {reason}. Fix the cause and start the pool again")]
    NoLiveWorker {
        /// The last failure of the last slot given up.
        reason: String,
    },
    /// A worker could not be started (bad adapter, bad interpreter, timeout).
    #[error("worker {worker_id} failed to start: {reason}")]
    Startup {
        /// The worker that failed.
        worker_id: String,
        /// Why, with the Python traceback when there is one.
        reason: String,
    },
    /// A session id is empty or longer than the limit
    /// ([`MAX_SESSION_ID_LEN`](crate::MAX_SESSION_ID_LEN) bytes).
    #[error("invalid session id: {len} bytes; a session id must be 1 to {max} bytes")]
    InvalidSessionId {
        /// Its length in bytes.
        len: usize,
        /// The longest allowed.
        max: usize,
    },
    /// Strict session affinity: the worker the session is bound to died or
    /// was replaced, and the state it held for the session is gone. The
    /// session is forgotten: call again to start it anew on another worker.
    #[error(
        "session {session_id:?} is lost: its worker {worker_id} went away; start the session again"
    )]
    SessionLost {
        /// The session.
        session_id: String,
        /// The worker it was bound to.
        worker_id: String,
    },
    /// Strict session affinity: the session's worker had no free call slot
    /// within `queue_timeout`.
    #[error("session {session_id:?}: its worker {worker_id} had no free call slot within {waited:?} (queue_timeout); raise concurrency_per_worker or use session_affinity = \"hint\"")]
    SessionBusy {
        /// The session.
        session_id: String,
        /// The worker it is bound to.
        worker_id: String,
        /// Time spent waiting.
        waited: Duration,
    },
    /// The pool is shutting down and takes no more calls.
    #[error("the pool is shutting down")]
    ShuttingDown,
    /// A config value is wrong, a key is unknown, or the TOML is malformed.
    /// Shown as ``<file>, line <n>: invalid pool config `<key>`: <message>``
    /// when the file and line are known.
    #[error("{}invalid pool config `{key}`: {message}", location(file.as_deref(), *line))]
    Config {
        /// The file the config was read from (`snakepit_core::Config::load`
        /// then [`PoolConfig::from_config`](crate::PoolConfig::from_config),
        /// [`PoolConfig::load`](crate::PoolConfig::load),
        /// [`PoolConfig::from_toml`](crate::PoolConfig::from_toml)); `None` for a config
        /// built in code.
        file: Option<PathBuf>,
        /// The line (from 1) of the key or of the syntax error in that
        /// text, when known.
        line: Option<usize>,
        /// The offending key, e.g. `workers`, `external_workers[1].address`
        /// or, in a whole config file, `pools[1].workers`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// `<file>, line <n>: ` (or the part of it that is known).
fn location(file: Option<&Path>, line: Option<usize>) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{}, line {l}: ", f.display()),
        (Some(f), None) => format!("{}: ", f.display()),
        (None, Some(l)) => format!("line {l}: "),
        (None, None) => String::new(),
    }
}

impl From<CallError> for PoolError {
    fn from(e: CallError) -> Self {
        PoolError::Call(e)
    }
}
