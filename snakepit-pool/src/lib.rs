//! # snakepit-pool
//!
//! A supervised pool of snakepit Python workers:
//!
//! * [`Pool::start`] spawns the workers of a [`PoolConfig`] (interpreter,
//!   adapter, env, working dir), waits for each `SNAKEPIT_READY` line and
//!   connects to it over a Unix socket in a private (0700) directory.
//! * [`Pool::execute`] / [`Pool::execute_stream`] run tools on a free worker;
//!   when every worker is busy the call waits in a bounded queue
//!   ([`PoolError::QueueTimeout`], [`PoolError::Saturated`]).
//! * Crashed workers are restarted with exponential backoff; a call in flight
//!   on a worker that dies fails with [`PoolError::WorkerCrashed`]. A slot
//!   that keeps failing is given up; with none left, calls fail at once with
//!   [`PoolError::NoLiveWorker`].
//! * Hung workers (no heartbeat answer, or a call they cannot stop) are
//!   killed and replaced ([`PoolError::WorkerUnhealthy`] for their calls);
//!   workers can be recycled after a number of calls, a resident memory size
//!   or an age, without failing a call. See [`config`].
//! * [`Pool::shutdown`] drains, then SIGTERM, then SIGKILL; dropping a pool
//!   does the same synchronously. Workers also exit by themselves when the
//!   host dies (they watch their stdin).
//! * A pool can connect to external workers instead (TCP plus token, with
//!   TLS and mTLS through [`WorkerTls`]: docs/deployment.md), given
//!   by address or found through DNS (`dns:<name>:<port>`, [`discovery`]).
//! * Feature `test-util` (for tests): `test_util::python_env` makes and
//!   caches a venv with `snakepit_bridge` installed from a wheel and returns
//!   a [`PoolConfig`] on its interpreter (see docs/getting-started.md).
//!
//! The workers' interpreter is, in this order: [`PoolConfig::python`] when
//! set, env `SNAKEPIT_PYTHON`, `$VIRTUAL_ENV/bin/python` of an active venv,
//! else `python3` ([`interpreter`]). It needs the `snakepit_bridge` package:
//! `<python> -m pip install ./python` from a checkout of this repository
//! (a wheel with the native call server; Python 3.11 or later). Adapters are
//! imported from that interpreter's packages, from `PYTHONPATH` (give it in
//! [`PoolConfig::env`]) or from [`PoolConfig::working_dir`].
//!
//! Every `snakepit.pool.*` event carries `pool_name`, worker events also
//! `worker_id` (`<pool_name>_<n>`).
//!
//! Latency: a call one at a time is a few wake-ups across threads on the
//! host plus the worker's. Awaited from a task (not from `block_on` on a
//! thread outside the runtime) and, for the lowest latency, with the pool on
//! a current-thread runtime, where every task of a call runs on one thread:
//! in the pool benchmark's alternating runs, round trip p50 89-107 µs there
//! against 108-122 µs on a 2-thread runtime. Under load batching takes over
//! and the multi-thread runtime gives the throughput.
//!
//! ```no_run
//! # async fn run() -> Result<(), snakepit_pool::PoolError> {
//! use snakepit_pool::{CallOptions, Pool, PoolConfig};
//! use snakepit_telemetry::Telemetry;
//!
//! let config = PoolConfig::new("snakepit_bridge.adapters.showcase:ShowcaseAdapter")
//!     .pool_name("ml")
//!     .workers(2);
//! let pool = Pool::start(Telemetry::new(), config).await?;
//! let out = pool
//!     .execute("add", serde_json::json!({"a": 1, "b": 2}), CallOptions::default())
//!     .await?;
//! println!("{}", out.value);
//! pool.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod config;
mod config_file;
pub mod discovery;
mod dispatch;
pub mod error;
mod events;
mod fd_pass;
mod health;
pub mod interpreter;
mod lines;
mod pool;
mod process;
mod recycle;
mod session;
mod size;
mod socket_dir;
mod stream;
mod supervisor;
mod template;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use config::{ExternalWorker, PoolConfig, WorkerTls};
pub use discovery::{DnsName, Resolver, SystemResolver};
pub use error::PoolError;
pub use interpreter::{resolve_python, PythonSource, ResolvedPython};
pub use pool::{Pool, PoolStatus};
pub use session::{SessionAffinity, MAX_SESSIONS, MAX_SESSION_ID_LEN};
pub use snakepit_grpc::{
    CallError, CallOptions, ToolOutput, TraceParent, TraceParentError, WorkerAddress, WorkerInfo,
};
pub use stream::PoolStream;
pub use template::StartMethod;

/// The observability guide (`docs/observability.md`). Its Rust snippets run
/// as doc tests of this crate, against real Python workers.
#[cfg(doctest)]
#[doc = include_str!("../../docs/observability.md")]
pub struct ObservabilityGuide;
