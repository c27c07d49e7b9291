//! # snakepit-grpc
//!
//! The gRPC client for one snakepit Python worker
//! (`proto/snakepit_bridge.proto`, package `snakepit.bridge`):
//!
//! * [`WorkerClient::execute`] / [`WorkerClient::execute_stream`]: tool
//!   calls on one persistent, multiplexed `CallBatchStream` (the fast
//!   path: requests queued at the same moment share one message, and so do
//!   replies; an inline tool's `python.call.*` / `python.tool.execution.*`
//!   events ride on its reply and are emitted by the host, see
//!   `call_events.rs`);
//!   [`WorkerClient::execute_unary`] / [`WorkerClient::execute_stream_unary`]
//!   are the compatibility path: one RPC per call (`ExecuteTool`,
//!   `ExecuteStreamingTool`), for peers of the reference system that speak
//!   only those (see `compat.rs`; the pool never uses them). Arguments and results are JSON values plus
//!   optional binary payloads (see the proto for the encoding).
//! * Typed errors ([`CallError`]): tool error, timeout, unavailable, protocol,
//!   argument too large. One call's size never fails another call: a
//!   request over [`ConnectOptions::max_message_bytes`] is refused before it
//!   is queued, the worker refuses an oversized result as that call's
//!   error, and neither side puts more than the limit into one batch.
//! * Every call carries `x-snakepit-correlation-id` and a W3C `traceparent`,
//!   and emits `snakepit.grpc.call.*` (streams also `snakepit.grpc.stream.*`)
//!   whose `rpc_method` names the RPC that carried it.
//! * A background task consumes the worker's batched telemetry stream,
//!   validates every event against the catalog, enriches it with
//!   `worker_id`, `pool_name`, `python_pid` and `node`, and re-emits it
//!   through [`Telemetry`](snakepit_telemetry::Telemetry) keeping the
//!   Python timestamp, correlation id and span ids (see [`fold`] for the
//!   rules and bounds). It pushes the host's policy (and the worker's log
//!   level) first and on every change, and reopens the stream with backoff
//!   (`snakepit.grpc.connection.lost` / `.reconnected`).
//!
//! * Binary arguments and results of at least `shm_threshold_bytes` travel
//!   to and from a worker on a Unix socket in shared memory (sealed
//!   memfds, see `shm.rs`), bounded by `shm_max_bytes` per worker and not
//!   by `max_message_bytes`.
//!
//! Only this crate sees protobuf types; its public API has none.

#![warn(missing_docs)]

mod address;
mod batch;
mod call_events;
mod call_span;
mod calls;
mod channel;
mod chunks;
mod client;
mod compat;
mod counters_file;
mod error;
pub mod fold;
mod link;
mod log_parents;
mod options;
pub mod plausible;
mod shm;
mod telemetry_stream;
mod tls;
mod trace;

#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
mod proto {
    tonic::include_proto!("snakepit.bridge");
}

pub use address::{AddressError, WorkerAddress};
pub use chunks::ChunkStream;
pub use client::{one_call_batch, WorkerClient};
pub use error::CallError;
pub use fold::TelemetryStats;
pub use options::{
    CallOptions, ConnectOptions, ToolInfo, ToolOutput, WorkerInfo, DEFAULT_MAX_MESSAGE_BYTES,
    MIN_MESSAGE_BYTES,
};
pub use shm::{DEFAULT_SHM_MAX_BYTES, DEFAULT_SHM_THRESHOLD_BYTES, MEMFD_NAME};
pub use tls::{TlsFileError, TlsOptions};
pub use trace::{TraceParent, TraceParentError};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn chunk_stream<T>()
    where
        T: futures_core::Stream<Item = Result<serde_json::Value, super::CallError>>
            + Send
            + Unpin
            + 'static,
    {
    }

    #[test]
    fn public_types_have_the_promised_bounds() {
        send_sync::<super::WorkerClient>();
        send_sync::<super::ConnectOptions>();
        send_sync::<super::CallError>();
        chunk_stream::<super::ChunkStream>();
    }
}
