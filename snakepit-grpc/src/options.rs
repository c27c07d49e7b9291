//! What a client is told (connect and call options) and what it hands back
//! (tool output, worker description).

use std::collections::HashMap;
use std::time::Duration;

use snakepit_telemetry::CorrelationId;

use crate::address::WorkerAddress;
use crate::tls::TlsOptions;
use crate::trace::TraceParent;

/// Default of [`ConnectOptions::max_message_bytes`]: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Smallest [`ConnectOptions::max_message_bytes`] accepted: 1 KiB.
pub const MIN_MESSAGE_BYTES: usize = 1024;

/// How to reach one worker and how to label what comes from it.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Where the worker listens.
    pub address: WorkerAddress,
    /// The worker's id (`--worker-id`), added to every event folded from it.
    pub worker_id: String,
    /// The pool the worker belongs to, added to folded events. Default `default`.
    pub pool_name: String,
    /// The worker's process id, added to folded events as `python_pid`.
    /// `None`: taken from the worker's `Describe` answer at connect.
    pub python_pid: Option<u32>,
    /// Shared secret sent as metadata `x-snakepit-token` on every RPC, on
    /// the main and the native call socket alike: the worker's
    /// `SNAKEPIT_TOKEN`. A pool gives each local worker a fresh one.
    pub token: Option<String>,
    /// Bound on connecting and on opening the streams. Default 5 s.
    pub connect_timeout: Duration,
    /// Persistent call streams opened to the worker; calls are spread over
    /// them round robin. Default 1 (see the `worker_calls` benchmark).
    pub call_streams: usize,
    /// Largest encoded call request in bytes (arguments JSON, binary
    /// parameters and the call's ids), and largest tool result the worker
    /// sends back. A larger request fails at once with
    /// [`CallError::ArgumentTooLarge`](crate::CallError::ArgumentTooLarge)
    /// and is never sent; the worker answers a larger result with the
    /// call's tool error `ResultTooLarge` (start it with the same
    /// `--max-message-bytes`). Other calls in flight are never affected.
    /// Binary arguments and results that go by shared memory
    /// ([`shm_threshold_bytes`](Self::shm_threshold_bytes)) do not count.
    /// At least [`MIN_MESSAGE_BYTES`]. Default [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
    /// Binary arguments ([`CallOptions::binary`]) and binary results of at
    /// least this many bytes travel in shared memory (a sealed memfd the
    /// peer maps) instead of in the call message, when the worker is on a
    /// Unix socket; on TCP they always go inline. 0 turns shared memory
    /// off. Streaming calls send their arguments inline. Default
    /// [`DEFAULT_SHM_THRESHOLD_BYTES`] (64 KiB).
    pub shm_threshold_bytes: usize,
    /// The most bytes this worker's live shared-memory segments may hold,
    /// on each side: the host's argument segments (kept until the call's
    /// reply) and the worker's result segments (kept until the host has
    /// mapped them). A payload that would pass it travels inline instead,
    /// where `max_message_bytes` applies. Default
    /// [`DEFAULT_SHM_MAX_BYTES`] (1 GiB).
    pub shm_max_bytes: usize,
    /// TLS to a worker on TCP (its certificate verified against a CA, and
    /// ours sent when set: mTLS); the token still travels on every RPC,
    /// now encrypted. `None`: plain TCP. Not used on a Unix socket.
    pub tls: Option<TlsOptions>,
}

impl ConnectOptions {
    /// Options with the defaults: pool `default`, no token, 5 s connect
    /// timeout, pid from `Describe`, 64 MiB messages, shared memory from
    /// 64 KiB up to 1 GiB live, no TLS.
    pub fn new(address: WorkerAddress, worker_id: impl Into<String>) -> Self {
        ConnectOptions {
            address,
            worker_id: worker_id.into(),
            pool_name: "default".to_string(),
            python_pid: None,
            token: None,
            connect_timeout: Duration::from_secs(5),
            call_streams: 1,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            shm_threshold_bytes: crate::shm::DEFAULT_SHM_THRESHOLD_BYTES,
            shm_max_bytes: crate::shm::DEFAULT_SHM_MAX_BYTES,
            tls: None,
        }
    }
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Fail with [`CallError::Timeout`](crate::CallError::Timeout) after this
    /// long (the worker is told too and abandons the call). `None`: no limit.
    pub timeout: Option<Duration>,
    /// The call's correlation id. `None`: the id current on this thread, else
    /// a new one.
    pub correlation_id: Option<CorrelationId>,
    /// Binary arguments, passed to the tool as `bytes` keyword arguments
    /// (a binary key overrides a JSON key of the same name).
    pub binary: HashMap<String, Vec<u8>>,
    /// The explicit trace parent of the call's `grpc.call` span (set it with
    /// [`CallOptions::parent`]). The parent is chosen in this order: the
    /// caller's current OpenTelemetry context (with the `opentelemetry`
    /// feature, when it holds a valid span), else this, else none (the
    /// call starts a new trace). The worker always receives the
    /// `grpc.call` span's own context, so its spans are children of it; the
    /// parent's `sampled` flag carries through.
    pub parent: Option<TraceParent>,
    /// The call's session id, current inside the tool
    /// (`snakepit_bridge.session.get_session_id()`). Set by
    /// `Pool::execute_in_session`; `None`: no session.
    pub session_id: Option<String>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout: Some(timeout),
            ..CallOptions::default()
        }
    }

    /// These options with `parent` as the explicit trace parent (see
    /// [`CallOptions::parent`](CallOptions#structfield.parent)). Parse a
    /// header with [`TraceParent::parse`], which names what is wrong with
    /// bad input.
    pub fn parent(mut self, parent: TraceParent) -> Self {
        self.parent = Some(parent);
        self
    }
}

/// What a tool returned.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    /// The JSON result (`null` when the tool returned `None`).
    pub value: serde_json::Value,
    /// `bytes` values the tool returned at the top level of a dict, moved out
    /// of `value`.
    pub binary: HashMap<String, Vec<u8>>,
}

/// One tool a worker offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolInfo {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Does it stream chunks (use `execute_stream`)?
    pub supports_streaming: bool,
}

/// A worker's description of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The id it was started with.
    pub worker_id: String,
    /// Its OS process id.
    pub pid: u32,
    /// Wire protocol version (1).
    pub protocol_version: u32,
    /// Its tools, sorted by name.
    pub tools: Vec<ToolInfo>,
    /// The pool name it was started with ("" if none).
    pub pool_name: String,
    /// The adapter, `package.module:Class`.
    pub adapter: String,
    /// Where it serves its call streams natively (`unix:<path>`), or "" when
    /// they go to its address (see `snakepit_bridge._native`).
    pub call_address: String,
}
