//! Pool configuration: a serde struct (TOML or JSON) with builder methods for
//! Rust users, and validation whose errors name the bad key and value.
//!
//! Durations are written the human way (`"250ms"`, `"5s"`, `"1m"`).
//!
//! ```toml
//! pool_name = "ml"
//! adapter = "my_app.adapters:Model"
//! workers = 4
//! concurrency_per_worker = 32
//! max_queue = 1000
//! queue_timeout = "5s"
//! env = { OMP_NUM_THREADS = "1" }
//! ```
//!
//! ## Health checks and recycling
//!
//! A worker that stops answering is replaced, not waited on forever:
//!
//! * `heartbeat_interval` (default `5s`), `heartbeat_timeout` (`10s`): every
//!   interval the pool pings the worker on its connection; no answer within
//!   the timeout (a stopped process, an event loop blocked by an inline tool)
//!   makes it unhealthy with reason `heartbeat_timeout`.
//! * `stuck_call_grace` (`10s`): a call that timed out is answered by the
//!   worker once the tool has really stopped. A call still unanswered this
//!   long after its timeout (a sync tool that never returns holds its thread
//!   forever) makes the worker unhealthy with reason `stuck_call`.
//!
//! An unhealthy worker gets no new calls and is killed (SIGKILL) and
//! restarted; its calls in flight fail with
//! [`PoolError::WorkerUnhealthy`], which
//! names the reason. The pool emits `snakepit.pool.worker.unhealthy` before
//! the usual `terminated` and `restarted`. (An external worker is not killed:
//! the pool drops its connection and reconnects.)
//!
//! Local workers can also be recycled, like gunicorn's `max_requests` or
//! Celery's `worker_max_tasks_per_child`: `max_calls_per_worker` (calls
//! started), `max_worker_rss` (resident memory, read from
//! `/proc/<pid>/status`; bytes, or a string such as `"1.5GB"`) and
//! `max_worker_age` (time since ready), each off by default. The
//! replacement is started first; then the old worker takes no new calls,
//! finishes those in flight and stops (SIGTERM), so no call fails. Past
//! `max_calls_per_worker` it takes calls only when no other worker has room,
//! until its replacement is ready (so it may serve more than the limit, most
//! when every worker reaches it at once). The pool emits
//! `snakepit.pool.worker.recycled` with the reason (`max_calls`, `max_rss`,
//! `max_age`).
//!
//! A slot whose worker fails `max_restarts` times in a row is given up
//! (`snakepit.pool.worker.abandoned`, and counted in
//! [`PoolStatus::abandoned_workers`](crate::PoolStatus::abandoned_workers));
//! once every slot is given up, calls fail at once with
//! [`PoolError::NoLiveWorker`] and the last
//! failure.
//!
//! ```toml
//! heartbeat_interval = "5s"
//! heartbeat_timeout = "10s"
//! stuck_call_grace = "10s"
//! max_calls_per_worker = 10000
//! max_worker_rss = "1.5GB"
//! max_worker_age = "1h"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snakepit_grpc::WorkerAddress;

use crate::error::PoolError;

/// The longest pool name accepted: names end up in socket paths and worker ids.
pub const MAX_POOL_NAME_LEN: usize = 48;

/// The smallest `max_worker_rss` accepted (16 MiB): an idle worker already
/// uses more, so a lower limit would recycle workers without end.
pub const MIN_WORKER_RSS: u64 = 16 * 1024 * 1024;

/// Everything a [`Pool`](crate::Pool) needs to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Tags every event and names the workers (`<pool_name>_<n>`).
    /// Letters, digits, `_` and `-`, at most [`MAX_POOL_NAME_LEN`] bytes.
    pub pool_name: String,
    /// The Python interpreter (default: env `SNAKEPIT_PYTHON`, else `python3`).
    pub python: PathBuf,
    /// The adapter class, `package.module:Class`. Required for local workers.
    pub adapter: String,
    /// How many local worker processes to run (ignored with external workers).
    pub workers: usize,
    /// Calls one worker runs at the same time.
    pub concurrency_per_worker: usize,
    /// Persistent gRPC call streams per worker (calls are spread over them).
    pub call_streams_per_worker: usize,
    /// Calls that may wait for a worker; one more is rejected as `Saturated`.
    pub max_queue: usize,
    /// How long a call may wait in the queue.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Timeout applied to a call whose options set none.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How long a worker may take to print its ready line and accept a
    /// connection.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Period of `snakepit.pool.status` snapshots.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// Wait before the first restart of a crashed worker; doubles each time.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_base: Duration,
    /// Longest wait between restarts.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_max: Duration,
    /// Restarts in a row (without a worker staying up for
    /// [`PoolConfig::restart_stable_after`]) before a worker slot is given up.
    /// External workers are reconnected without limit.
    pub max_restarts: u32,
    /// A worker up this long has its restart count in a row reset.
    #[serde(with = "humantime_serde")]
    pub restart_stable_after: Duration,
    /// Extra environment variables for the workers.
    pub env: BTreeMap<String, String>,
    /// Working directory of the workers (default: the host's).
    pub working_dir: Option<PathBuf>,
    /// Shutdown: how long calls in flight may finish, and how long a worker
    /// has between SIGTERM and SIGKILL.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Extra command-line arguments for `snakepit_bridge.worker`.
    pub worker_args: Vec<String>,
    /// Workers already running elsewhere. When non-empty, the pool spawns no
    /// process and connects to these instead.
    pub external_workers: Vec<ExternalWorker>,
    /// How often each worker is pinged on its connection.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A ping unanswered this long makes the worker unhealthy
    /// (`heartbeat_timeout`): it is killed and replaced.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// A call the worker has not answered this long after its timeout makes
    /// the worker unhealthy (`stuck_call`): it is killed and replaced.
    #[serde(with = "humantime_serde")]
    pub stuck_call_grace: Duration,
    /// Recycle a local worker after it has started this many calls (off when
    /// unset).
    pub max_calls_per_worker: Option<u64>,
    /// Recycle a local worker whose resident memory (VmRSS) reaches this many
    /// bytes (off when unset). In TOML an integer of bytes or a string with
    /// a unit: `"1.5GB"`, `"512MiB"` (B, KB, MB, GB, KiB, MiB, GiB).
    #[serde(with = "crate::size::option")]
    pub max_worker_rss: Option<u64>,
    /// Recycle a local worker this long after it became ready (off when
    /// unset).
    #[serde(with = "humantime_serde")]
    pub max_worker_age: Option<Duration>,
}

/// A worker running elsewhere (TCP plus token, or a Unix socket).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalWorker {
    /// `host:port` or `unix:/path`.
    pub address: String,
    /// Shared secret sent with every call (`--token` of the worker).
    #[serde(default)]
    pub token: Option<String>,
}

/// The interpreter used when the config names none: env `SNAKEPIT_PYTHON`,
/// else `python3`.
pub fn default_python() -> PathBuf {
    std::env::var_os("SNAKEPIT_PYTHON")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            pool_name: "default".to_string(),
            python: default_python(),
            adapter: String::new(),
            workers: 2,
            concurrency_per_worker: 32,
            call_streams_per_worker: 1,
            max_queue: 1000,
            queue_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(15),
            status_interval: Duration::from_secs(5),
            restart_backoff_base: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(5),
            max_restarts: 10,
            restart_stable_after: Duration::from_secs(60),
            env: BTreeMap::new(),
            working_dir: None,
            grace_period: Duration::from_secs(5),
            worker_args: Vec::new(),
            external_workers: Vec::new(),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(10),
            stuck_call_grace: Duration::from_secs(10),
            max_calls_per_worker: None,
            max_worker_rss: None,
            max_worker_age: None,
        }
    }
}

fn bad(key: &str, message: impl Into<String>) -> PoolError {
    PoolError::Config {
        key: key.to_string(),
        message: message.into(),
    }
}

impl PoolConfig {
    /// A config for `adapter` with every other value at its default.
    pub fn new(adapter: impl Into<String>) -> Self {
        PoolConfig {
            adapter: adapter.into(),
            ..PoolConfig::default()
        }
    }

    /// A config connecting to external workers instead of spawning any.
    pub fn external(workers: impl IntoIterator<Item = ExternalWorker>) -> Self {
        PoolConfig {
            external_workers: workers.into_iter().collect(),
            ..PoolConfig::default()
        }
    }

    /// Parses a TOML document; errors name the key.
    pub fn from_toml_str(text: &str) -> Result<Self, PoolError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            bad(&key, e.into_inner().message().to_string())
        })
    }

    /// Sets [`PoolConfig::pool_name`].
    pub fn pool_name(mut self, name: impl Into<String>) -> Self {
        self.pool_name = name.into();
        self
    }
    /// Sets [`PoolConfig::adapter`].
    pub fn adapter(mut self, adapter: impl Into<String>) -> Self {
        self.adapter = adapter.into();
        self
    }
    /// Sets [`PoolConfig::python`].
    pub fn python(mut self, python: impl Into<PathBuf>) -> Self {
        self.python = python.into();
        self
    }
    /// Sets [`PoolConfig::workers`].
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Sets [`PoolConfig::concurrency_per_worker`].
    pub fn concurrency_per_worker(mut self, n: usize) -> Self {
        self.concurrency_per_worker = n;
        self
    }
    /// Sets [`PoolConfig::call_streams_per_worker`].
    pub fn call_streams_per_worker(mut self, n: usize) -> Self {
        self.call_streams_per_worker = n;
        self
    }
    /// Sets [`PoolConfig::max_queue`].
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }
    /// Sets [`PoolConfig::queue_timeout`].
    pub fn queue_timeout(mut self, d: Duration) -> Self {
        self.queue_timeout = d;
        self
    }
    /// Sets [`PoolConfig::call_timeout`].
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.call_timeout = d;
        self
    }
    /// Sets [`PoolConfig::startup_timeout`].
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.startup_timeout = d;
        self
    }
    /// Sets [`PoolConfig::status_interval`].
    pub fn status_interval(mut self, d: Duration) -> Self {
        self.status_interval = d;
        self
    }
    /// Sets the restart backoff: first wait `base`, doubling up to `max`, at
    /// most `max_restarts` restarts in a row.
    pub fn restart_backoff(mut self, base: Duration, max: Duration, max_restarts: u32) -> Self {
        self.restart_backoff_base = base;
        self.restart_backoff_max = max;
        self.max_restarts = max_restarts;
        self
    }
    /// Adds an environment variable for the workers.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
    /// Sets [`PoolConfig::working_dir`].
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }
    /// Sets [`PoolConfig::grace_period`].
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.grace_period = d;
        self
    }
    /// Adds a command-line argument for `snakepit_bridge.worker`.
    pub fn worker_arg(mut self, arg: impl Into<String>) -> Self {
        self.worker_args.push(arg.into());
        self
    }
    /// Adds an external worker.
    pub fn external_worker(mut self, address: impl Into<String>, token: Option<String>) -> Self {
        self.external_workers.push(ExternalWorker {
            address: address.into(),
            token,
        });
        self
    }

    /// Sets the heartbeat: a ping every `interval`, unhealthy when one is not
    /// answered within `timeout`.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }
    /// Sets [`PoolConfig::stuck_call_grace`].
    pub fn stuck_call_grace(mut self, d: Duration) -> Self {
        self.stuck_call_grace = d;
        self
    }
    /// Sets [`PoolConfig::max_calls_per_worker`].
    pub fn max_calls_per_worker(mut self, n: u64) -> Self {
        self.max_calls_per_worker = Some(n);
        self
    }
    /// Sets [`PoolConfig::max_worker_rss`], in bytes.
    pub fn max_worker_rss(mut self, bytes: u64) -> Self {
        self.max_worker_rss = Some(bytes);
        self
    }
    /// Sets [`PoolConfig::max_worker_age`].
    pub fn max_worker_age(mut self, d: Duration) -> Self {
        self.max_worker_age = Some(d);
        self
    }

    /// Is this a pool of external workers?
    pub fn is_external(&self) -> bool {
        !self.external_workers.is_empty()
    }

    /// Checks every value; the error names the first bad key and says what
    /// is allowed.
    pub fn validate(&self) -> Result<(), PoolError> {
        let name = &self.pool_name;
        if name.is_empty() || name.len() > MAX_POOL_NAME_LEN {
            return Err(bad(
                "pool_name",
                format!("{name:?} must be 1 to {MAX_POOL_NAME_LEN} bytes long"),
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "pool_name",
                format!("{name:?} may contain only letters, digits, '_' and '-'"),
            ));
        }
        if self.is_external() {
            for (i, w) in self.external_workers.iter().enumerate() {
                WorkerAddress::from_str(&w.address).map_err(|e| {
                    bad(
                        &format!("external_workers[{i}].address"),
                        format!("{:?} is not `host:port` or `unix:/path`: {e}", w.address),
                    )
                })?;
            }
        } else {
            if self.workers == 0 {
                return Err(bad("workers", "0 workers: at least 1 is needed"));
            }
            let (module, class) = self.adapter.split_once(':').unwrap_or(("", ""));
            if module.is_empty() || class.is_empty() {
                return Err(bad(
                    "adapter",
                    format!(
                        "{:?} must be `package.module:Class`, e.g. \
                         `snakepit_bridge.adapters.showcase:ShowcaseAdapter`",
                        self.adapter
                    ),
                ));
            }
            if self.python.as_os_str().is_empty() {
                return Err(bad("python", "empty path to the Python interpreter"));
            }
            if let Some(dir) = &self.working_dir {
                if !dir.is_dir() {
                    return Err(bad(
                        "working_dir",
                        format!("{} is not a directory", dir.display()),
                    ));
                }
            }
        }
        if self.concurrency_per_worker == 0 {
            return Err(bad("concurrency_per_worker", "must be at least 1"));
        }
        if !(1..=64).contains(&self.call_streams_per_worker) {
            return Err(bad("call_streams_per_worker", "must be 1 to 64"));
        }
        let positive = [
            ("queue_timeout", self.queue_timeout),
            ("call_timeout", self.call_timeout),
            ("startup_timeout", self.startup_timeout),
            ("status_interval", self.status_interval),
            ("restart_backoff_base", self.restart_backoff_base),
            ("restart_backoff_max", self.restart_backoff_max),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                return Err(bad(key, "must be longer than 0 (e.g. \"100ms\", \"5s\")"));
            }
        }
        if self.restart_backoff_base > self.restart_backoff_max {
            return Err(bad(
                "restart_backoff_base",
                format!(
                    "{:?} is longer than restart_backoff_max ({:?})",
                    self.restart_backoff_base, self.restart_backoff_max
                ),
            ));
        }
        self.validate_health()?;
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(bad(
                    &format!("env.{key}"),
                    "an environment variable name must be non-empty, without '=' or NUL",
                ));
            }
        }
        Ok(())
    }
}

impl PoolConfig {
    /// The health check and recycling keys.
    fn validate_health(&self) -> Result<(), PoolError> {
        let positive = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("stuck_call_grace", self.stuck_call_grace),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                return Err(bad(key, "must be longer than 0 (e.g. \"100ms\", \"5s\")"));
            }
        }
        if self.max_calls_per_worker == Some(0) {
            return Err(bad(
                "max_calls_per_worker",
                "0 calls: must be at least 1 (leave it unset to never recycle by calls)",
            ));
        }
        if let Some(rss) = self.max_worker_rss {
            if rss < MIN_WORKER_RSS {
                return Err(bad(
                    "max_worker_rss",
                    format!(
                        "{rss} bytes is below {MIN_WORKER_RSS} (16 MiB), less than an idle \
                         worker uses; it is a number of bytes, e.g. 1_500_000_000"
                    ),
                ));
            }
        }
        if self.max_worker_age.is_some_and(|d| d.is_zero()) {
            return Err(bad(
                "max_worker_age",
                "must be longer than 0 (e.g. \"1h\"; leave it unset to never recycle by age)",
            ));
        }
        Ok(())
    }
}
