//! Pool configuration: a serde struct (TOML or JSON) with builder methods for
//! Rust users, and validation whose errors name the bad key and value.
//!
//! Durations are written the human way (`"250ms"`, `"5s"`, `"1m"`).
//!
//! In the one config file (`snakepit.toml`, beside `[telemetry]` and
//! `[[sinks]]`), a pool is the `[pool]` table, or several are `[[pools]]`
//! tables: load the file with `snakepit_core::Config::load` and read them
//! with [`PoolConfig::from_config`]. [`PoolConfig::load`] reads a file of
//! pool keys alone. Either way errors name the file, the key, the line and
//! what is allowed. Bounds:
//!
//! | key | allowed |
//! |---|---|
//! | `workers` | 1 to 1024 |
//! | `concurrency_per_worker` | 1 to 10000 |
//! | `call_streams_per_worker` | 1 to 64 |
//! | `max_queue` | 0 to 1000000 |
//! | `queue_timeout` | 1ms to 1h |
//! | `call_timeout` | 1ms to 1day |
//! | `startup_timeout` | 100ms to 1h |
//! | `status_interval` | 10ms to 1day |
//! | `restart_backoff_base`, `restart_backoff_max` | 1ms to 1h |
//! | `restart_stable_after` | 1ms to 1day |
//! | `grace_period` | 0s to 1h |
//! | `session_affinity` | `"hint"` (default) or `"strict"` |
//! | `session_ttl` | 1ms to 1day (default `30m`) |
//! | `session_wait` | 0s to 1h (default `100ms`) |
//! | `shm_threshold_bytes` | 0 (off) or up to `max_message_bytes` (default 64 KiB) |
//! | `shm_max_bytes` | at least `shm_threshold_bytes` (default 1 GiB) |
//! | `start_method` | `"spawn"` (default) or `"template"` (see [`StartMethod`](crate::StartMethod)) |
//! | `external_workers[i].tls.ca`, `.cert`, `.key` | readable PEM files (a certificate, a private key); `cert` and `key` together |
//! | `external_workers[i].tls.server_name` | a DNS name or an IP address |
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
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snakepit_core::config::{line_at, line_of_key};
use snakepit_grpc::WorkerAddress;

use crate::error::PoolError;
use crate::interpreter::{resolve_python, ResolvedPython};

/// The longest pool name accepted: names end up in socket paths and worker ids.
pub const MAX_POOL_NAME_LEN: usize = 48;
/// The most local workers one pool runs.
pub const MAX_WORKERS: usize = 1024;
/// The most calls one worker runs at the same time.
pub const MAX_CONCURRENCY_PER_WORKER: usize = 10_000;
/// The longest queue accepted.
pub const MAX_QUEUE: usize = 1_000_000;

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

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
    /// The Python interpreter, which must have the `snakepit_bridge`
    /// package. Unset (the default), the first of these that is set: env
    /// `SNAKEPIT_PYTHON`, `$VIRTUAL_ENV/bin/python`, else `python3` on
    /// `PATH`, read when a worker starts (see [`crate::interpreter`] and
    /// [`PoolConfig::resolve_python`]).
    pub python: Option<PathBuf>,
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
    /// What a [`Pool::execute_in_session`](crate::Pool::execute_in_session)
    /// call does when its session's worker is busy or gone (see
    /// [`SessionAffinity`](crate::SessionAffinity)).
    pub session_affinity: crate::SessionAffinity,
    /// A session unused this long is forgotten (`snakepit.pool.session.expired`).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Hint affinity: how long a session call waits for a free call slot on
    /// its session's worker before it runs on any worker.
    #[serde(with = "humantime_serde")]
    pub session_wait: Duration,
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
    /// Working directory of the workers (default: the host's). The adapter
    /// module is imported from the interpreter's packages, `PYTHONPATH`
    /// (set it in [`PoolConfig::env`]) or, as `python -m` puts the working
    /// directory first on `sys.path`, from this directory.
    pub working_dir: Option<PathBuf>,
    /// Shutdown: how long calls in flight may finish, and how long a worker
    /// has between SIGTERM and SIGKILL.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Extra command-line arguments for `snakepit_bridge.worker`.
    pub worker_args: Vec<String>,
    /// How local workers start: a fresh interpreter each (`"spawn"`, the
    /// default) or forked from the pool's preloaded template process
    /// (`"template"`).
    pub start_method: crate::StartMethod,
    /// Workers already running elsewhere. When non-empty, the pool spawns no
    /// process and connects to these instead. An address `dns:<name>:<port>`
    /// stands for every address the name resolves to, resolved again every
    /// `discovery_interval` (see [`crate::discovery`]).
    pub external_workers: Vec<ExternalWorker>,
    /// How often `dns:` addresses are resolved again (default 10 s).
    #[serde(with = "humantime_serde")]
    pub discovery_interval: Duration,
    /// Resolves `dns:` addresses: the system's resolver unless set (a test
    /// sets its own with [`PoolConfig::resolver`]). Not read from TOML.
    #[serde(skip)]
    pub resolver: crate::discovery::ResolverHandle,
    /// Largest call in bytes, both ways: a call whose encoded arguments
    /// (JSON, binary parameters, ids) are larger fails at once with
    /// `CallError::ArgumentTooLarge` and is never sent; a tool result
    /// (JSON plus binary results) that is larger is that call's tool error
    /// `ResultTooLarge`. Calls in flight beside it are not affected. Local
    /// workers get it as `--max-message-bytes`; start external workers with
    /// the same value. At least 1024. Default 64 MiB. Payloads that go by
    /// shared memory (`shm_threshold_bytes`) do not count.
    pub max_message_bytes: usize,
    /// Binary arguments and binary results of at least this many bytes
    /// travel between the host and a local worker (Unix socket) in shared
    /// memory (a sealed memfd the other side maps) instead of in the call
    /// message; to external workers on TCP they always go inline. 0 turns
    /// shared memory off. Default 64 KiB.
    pub shm_threshold_bytes: usize,
    /// The most bytes a worker's live shared-memory segments hold on each
    /// side (the host's arguments until the reply, the worker's results
    /// until the host has mapped them); a payload that would pass it goes
    /// inline, where `max_message_bytes` applies. Default 1 GiB.
    pub shm_max_bytes: usize,
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
    /// `host:port`, `unix:/path`, or `dns:<name>:<port>` for every address
    /// the name resolves to.
    pub address: String,
    /// Shared secret sent with every call as `x-snakepit-token`: the
    /// worker's `SNAKEPIT_TOKEN`.
    #[serde(default)]
    pub token: Option<String>,
    /// TLS to this worker (TCP and `dns:` addresses only): `tls = { ca =
    /// "ca.pem", cert = "host.pem", key = "host.key", server_name =
    /// "worker.internal" }`. Unset: plain TCP.
    #[serde(default)]
    pub tls: Option<WorkerTls>,
}

/// TLS settings of an external worker (TOML table `tls`): PEM files read at
/// every (re)connect. The worker runs with `--tls-cert`/`--tls-key` (and
/// `--tls-client-ca` to require `cert`/`key` from the host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerTls {
    /// The CA certificate(s) that signed the worker's certificate; the only
    /// ones trusted. Required.
    pub ca: PathBuf,
    /// The host's client certificate, for a worker that requires one
    /// (mTLS). Set with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the worker's certificate must carry (DNS name or IP
    /// address). Default: the host of `address` (for `dns:<name>:<port>`,
    /// the name, not each address it resolves to).
    #[serde(default)]
    pub server_name: Option<String>,
}

impl WorkerTls {
    /// TLS verified against the CA certificate(s) in `ca`.
    pub fn new(ca: impl Into<PathBuf>) -> Self {
        WorkerTls {
            ca: ca.into(),
            cert: None,
            key: None,
            server_name: None,
        }
    }

    /// The connection's TLS options.
    pub fn options(&self) -> snakepit_grpc::TlsOptions {
        snakepit_grpc::TlsOptions {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.server_name.clone(),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            pool_name: "default".to_string(),
            python: None,
            adapter: String::new(),
            workers: 2,
            concurrency_per_worker: 32,
            call_streams_per_worker: 1,
            max_queue: 1000,
            queue_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            session_affinity: crate::SessionAffinity::Hint,
            session_ttl: Duration::from_secs(30 * 60),
            session_wait: Duration::from_millis(100),
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
            start_method: crate::StartMethod::Spawn,
            external_workers: Vec::new(),
            discovery_interval: Duration::from_secs(10),
            resolver: crate::discovery::ResolverHandle::default(),
            max_message_bytes: snakepit_grpc::DEFAULT_MAX_MESSAGE_BYTES,
            shm_threshold_bytes: snakepit_grpc::DEFAULT_SHM_THRESHOLD_BYTES,
            shm_max_bytes: snakepit_grpc::DEFAULT_SHM_MAX_BYTES,
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
        file: None,
        line: None,
        key: key.to_string(),
        message: message.into(),
    }
}

/// The error for `value` outside `range`, e.g. "1ns is out of range;
/// allowed 100ms to 1h".
fn out_of_range(key: &str, value: Duration, range: &RangeInclusive<Duration>) -> PoolError {
    let human = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
    bad(
        key,
        format!(
            "{} is out of range; allowed {} to {}",
            human(value),
            human(*range.start()),
            human(*range.end())
        ),
    )
}

/// The largest `max_message_bytes` accepted (1 GiB): gRPC's own limits are
/// 32-bit lengths, and the worker keeps a whole message in memory.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

fn count_in_range(key: &str, value: usize, range: RangeInclusive<usize>) -> Result<(), PoolError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(bad(
        key,
        format!(
            "{value} is out of range; allowed {} to {}",
            range.start(),
            range.end()
        ),
    ))
}

/// The key a deserialization error at `path` is about: the path itself, or
/// for an error at the root, the unknown field its message names. `None`
/// when neither names a key.
pub(crate) fn name_of_error(path: &str, message: &str) -> Option<String> {
    if path != "." {
        return Some(path.to_string());
    }
    message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'))
        .map(|(name, _)| name.to_string())
}

/// Parses without validating; errors name the key and the line.
fn parse(text: &str) -> Result<PoolConfig, PoolError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut message = inner.message().trim_end().to_string();
        let line = inner.span().map(|s| line_at(text, s.start));
        let key = if let Some(key) = name_of_error(&path, &message) {
            if ["pool", "pools", "telemetry", "sinks"].contains(&key.as_str()) {
                message = format!(
                    "{message}; this is a whole snakepit.toml: read it with \
                     snakepit_core::Config::load and its pools with PoolConfig::from_config"
                );
            }
            key
        } else {
            message = format!("malformed TOML: {message}");
            // A syntax error: the key written on that line, if any.
            line.and_then(|l| text.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string())
                .filter(|k| !k.is_empty() && !k.starts_with('['))
                .unwrap_or_else(|| "<document>".to_string())
        };
        PoolError::Config {
            file: None,
            line,
            key,
            message,
        }
    })
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

    /// Parses a TOML document without validating it (see
    /// [`PoolConfig::validate`]); errors name the key and its line.
    pub fn from_toml_str(text: &str) -> Result<Self, PoolError> {
        parse(text)
    }

    /// Parses and validates a TOML document read from `file`; errors
    /// ([`PoolError::Config`]) name `file`, the key, its line and what is
    /// allowed.
    pub fn from_toml(text: &str, file: impl AsRef<Path>) -> Result<Self, PoolError> {
        let in_file = |e: PoolError, text: &str| match e {
            PoolError::Config {
                line, key, message, ..
            } => PoolError::Config {
                file: Some(file.as_ref().to_path_buf()),
                line: line.or_else(|| line_of_key(text, &key)),
                key,
                message,
            },
            other => other,
        };
        let config = parse(text).map_err(|e| in_file(e, text))?;
        config.validate().map_err(|e| in_file(e, text))?;
        Ok(config)
    }

    /// Reads, parses and validates the TOML file `path`, like
    /// [`PoolConfig::from_toml`]. A file that cannot be read is a
    /// [`PoolError::Config`] with the key `<file>`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PoolError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| PoolError::Config {
            file: Some(path.to_path_buf()),
            line: None,
            key: "<file>".to_string(),
            message: format!("cannot read the config file: {e}"),
        })?;
        PoolConfig::from_toml(&text, path)
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
        self.python = Some(python.into());
        self
    }

    /// The interpreter the workers run with now, and the rule that chose
    /// it: [`PoolConfig::python`], else env `SNAKEPIT_PYTHON`, else
    /// `$VIRTUAL_ENV/bin/python`, else `python3`.
    pub fn resolve_python(&self) -> ResolvedPython {
        resolve_python(self.python.as_deref())
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
    /// Sets the session keys: [`PoolConfig::session_affinity`],
    /// [`PoolConfig::session_ttl`] and [`PoolConfig::session_wait`].
    pub fn sessions(
        mut self,
        affinity: crate::SessionAffinity,
        ttl: Duration,
        wait: Duration,
    ) -> Self {
        self.session_affinity = affinity;
        self.session_ttl = ttl;
        self.session_wait = wait;
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
    /// Sets [`PoolConfig::start_method`].
    pub fn start_method(mut self, method: crate::StartMethod) -> Self {
        self.start_method = method;
        self
    }
    /// Sets [`PoolConfig::max_message_bytes`].
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }
    /// Sets [`PoolConfig::shm_threshold_bytes`] (0: no shared memory).
    pub fn shm_threshold_bytes(mut self, n: usize) -> Self {
        self.shm_threshold_bytes = n;
        self
    }
    /// Sets [`PoolConfig::shm_max_bytes`].
    pub fn shm_max_bytes(mut self, n: usize) -> Self {
        self.shm_max_bytes = n;
        self
    }
    /// Resolves `dns:` addresses with `resolver` instead of the system's.
    pub fn resolver(mut self, resolver: impl crate::discovery::Resolver) -> Self {
        self.resolver = crate::discovery::ResolverHandle(std::sync::Arc::new(resolver));
        self
    }

    /// How often `dns:` addresses are resolved again.
    pub fn discovery_interval(mut self, every: Duration) -> Self {
        self.discovery_interval = every;
        self
    }

    /// Adds an external worker.
    pub fn external_worker(mut self, address: impl Into<String>, token: Option<String>) -> Self {
        self.external_workers.push(ExternalWorker {
            address: address.into(),
            token,
            tls: None,
        });
        self
    }

    /// Adds an external worker reached over TLS.
    pub fn external_worker_tls(
        mut self,
        address: impl Into<String>,
        token: Option<String>,
        tls: WorkerTls,
    ) -> Self {
        self.external_workers.push(ExternalWorker {
            address: address.into(),
            token,
            tls: Some(tls),
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
                if let Some(tls) = &w.tls {
                    if w.address.starts_with("unix:") {
                        return Err(bad(
                            &format!("external_workers[{i}].tls"),
                            "TLS is for TCP addresses; a unix: socket is reached \
                             only on this machine: remove tls",
                        ));
                    }
                    tls.options().check().map_err(|e| {
                        bad(
                            &format!("external_workers[{i}].tls.{}", e.field),
                            e.to_string(),
                        )
                    })?;
                }
                let key = format!("external_workers[{i}].address");
                if let Some(name) = crate::discovery::DnsName::parse(&w.address) {
                    name.map_err(|e| bad(&key, e))?;
                    continue;
                }
                WorkerAddress::from_str(&w.address).map_err(|e| {
                    bad(
                        &key,
                        format!(
                            "{:?} is not `host:port`, `unix:/path` or `dns:<name>:<port>`: {e}",
                            w.address
                        ),
                    )
                })?;
            }
            let allowed = 10 * MS..=DAY;
            if !allowed.contains(&self.discovery_interval) {
                return Err(out_of_range(
                    "discovery_interval",
                    self.discovery_interval,
                    &allowed,
                ));
            }
        } else {
            count_in_range("workers", self.workers, 1..=MAX_WORKERS)?;
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
            if self
                .python
                .as_ref()
                .is_some_and(|p| p.as_os_str().is_empty())
            {
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
        count_in_range(
            "concurrency_per_worker",
            self.concurrency_per_worker,
            1..=MAX_CONCURRENCY_PER_WORKER,
        )?;
        count_in_range(
            "call_streams_per_worker",
            self.call_streams_per_worker,
            1..=64,
        )?;
        count_in_range("max_queue", self.max_queue, 0..=MAX_QUEUE)?;
        count_in_range(
            "max_message_bytes",
            self.max_message_bytes,
            snakepit_grpc::MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES,
        )?;
        self.validate_shm()?;
        let durations = [
            ("queue_timeout", self.queue_timeout, MS..=HOUR),
            ("call_timeout", self.call_timeout, MS..=DAY),
            ("startup_timeout", self.startup_timeout, 100 * MS..=HOUR),
            ("status_interval", self.status_interval, 10 * MS..=DAY),
            ("restart_backoff_base", self.restart_backoff_base, MS..=HOUR),
            ("restart_backoff_max", self.restart_backoff_max, MS..=HOUR),
            ("restart_stable_after", self.restart_stable_after, MS..=DAY),
            ("grace_period", self.grace_period, Duration::ZERO..=HOUR),
            ("session_ttl", self.session_ttl, MS..=DAY),
            ("session_wait", self.session_wait, Duration::ZERO..=HOUR),
        ];
        for (key, d, range) in durations {
            if !range.contains(&d) {
                return Err(out_of_range(key, d, &range));
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
        if let Some(i) = self
            .worker_args
            .iter()
            .position(|a| a == "--token" || a.starts_with("--token="))
        {
            return Err(bad(
                &format!("worker_args[{i}]"),
                "`--token` is not allowed: the pool gives each worker a fresh token \
                 through SNAKEPIT_TOKEN (a command line is readable by every local user)",
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
    /// Shared memory: a threshold above the message limit would leave the
    /// payloads between the two no way to travel, and a cap below the
    /// threshold would never let one in.
    fn validate_shm(&self) -> Result<(), PoolError> {
        let threshold = self.shm_threshold_bytes;
        if threshold == 0 {
            return Ok(());
        }
        if threshold > self.max_message_bytes {
            return Err(bad(
                "shm_threshold_bytes",
                format!(
                    "{threshold} is above max_message_bytes ({}): a payload between the two \
                     could go neither inline nor by shared memory; allowed 0 (off) or up to \
                     max_message_bytes",
                    self.max_message_bytes
                ),
            ));
        }
        if self.shm_max_bytes < threshold {
            return Err(bad(
                "shm_max_bytes",
                format!(
                    "{} is below shm_threshold_bytes ({threshold}): no payload would ever fit; \
                     allowed shm_threshold_bytes or more",
                    self.shm_max_bytes
                ),
            ));
        }
        Ok(())
    }

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
