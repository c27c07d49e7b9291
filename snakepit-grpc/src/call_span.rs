//! The host side of one call: its correlation id, its `grpc.call` span and
//! traceparent, and the `grpc.call.*` / `grpc.stream.*` events.

use std::time::Instant;

use snakepit_core::{builtin, EventContext, EventId, Value};
use snakepit_telemetry::{
    get_correlation_id, new_correlation_id, new_span_id, new_trace_id, CorrelationId, Telemetry,
};

use crate::error::CallError;
use crate::log_parents::{LogParents, Registered};
use crate::options::CallOptions;
use crate::trace::{format_traceparent, TraceParent};

/// Trace flags of a new root: sampled.
const SAMPLED: u8 = 0x01;

/// One call as the host sees it.
pub(crate) struct CallSpan {
    pub(crate) correlation: CorrelationId,
    pub(crate) traceparent: String,
    span_id: u64,
    parent_span_id: u64,
    trace_id: u128,
    flags: u8,
    started: Instant,
    rpc_method: &'static str,
    /// Where the call goes (`unix:<path>` or `<host>:<port>`).
    address: std::sync::Arc<str>,
    pub(crate) tool: String,
    /// The caller's `tracing` span, known to the worker's log records
    /// while the call runs (and a grace after).
    _log_parent: Option<Registered>,
}

impl CallSpan {
    /// Does this call's trace export (its parent's `sampled` flag; a new
    /// root is sampled)?
    pub(crate) fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The trace this call belongs to (the one its traceparent names).
    pub(crate) fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// Opens the span and emits `grpc.call.start`.
    pub(crate) fn begin(
        telemetry: &Telemetry,
        worker_id: &str,
        rpc_method: &'static str,
        address: &std::sync::Arc<str>,
        log_parents: &std::sync::Arc<LogParents>,
        tool: &str,
        opts: &CallOptions,
    ) -> CallSpan {
        let correlation = opts
            .correlation_id
            .clone()
            .or_else(get_correlation_id)
            .unwrap_or_else(new_correlation_id);
        let span_id = new_span_id();
        let (trace_id, parent_span_id, flags) = match caller_parent(opts) {
            Some(p) => (p.trace_id, p.span_id, p.flags),
            None => (new_trace_id(), 0, SAMPLED),
        };
        // The worker's spans are children of this call's span, never of
        // the caller's: it gets grpc.call's own context, with the flags.
        let traceparent = format_traceparent(trace_id, span_id, flags);
        let span = CallSpan {
            correlation,
            traceparent,
            span_id,
            parent_span_id,
            trace_id,
            flags,
            started: Instant::now(),
            rpc_method,
            address: address.clone(),
            tool: tool.to_string(),
            _log_parent: log_parents.register(trace_id),
        };
        if !span.sampled() {
            // Before any of the call's events: sinks that export leave out
            // the whole trace, the worker's spans included.
            telemetry.unsampled_traces().mark(trace_id);
        }
        if telemetry.is_enabled(builtin::GRPC_CALL_START) {
            let now = snakepit_core::event::unix_now_ns();
            span.emit(
                telemetry,
                builtin::GRPC_CALL_START,
                &[("system_time", Value::Int(now as i64))],
                &[
                    ("rpc_method", Value::from(rpc_method)),
                    ("tool", Value::from(span.tool.as_str())),
                    ("worker_id", Value::from(worker_id)),
                    ("address", Value::from(&*span.address)),
                ],
                now,
            );
        }
        span
    }

    fn emit(
        &self,
        telemetry: &Telemetry,
        id: EventId,
        measurements: &[snakepit_core::Field<'_>],
        metadata: &[snakepit_core::Field<'_>],
        timestamp_ns: u64,
    ) {
        telemetry.execute_with(
            id,
            measurements,
            metadata,
            EventContext {
                timestamp_ns,
                correlation_id: Some(self.correlation.as_str()),
                span_id: self.span_id,
                parent_span_id: self.parent_span_id,
                trace_id: self.trace_id,
            },
        );
    }

    pub(crate) fn elapsed_ns(&self) -> i64 {
        self.started.elapsed().as_nanos() as i64
    }

    /// Emits `grpc.call.stop` (success, or `status` such as `CANCELLED`) or
    /// `grpc.call.exception`.
    pub(crate) fn finish(
        &self,
        telemetry: &Telemetry,
        worker_id: &str,
        outcome: Result<&'static str, &CallError>,
    ) {
        let duration = Value::Int(self.elapsed_ns());
        match outcome {
            Ok(status) => {
                if telemetry.is_enabled(builtin::GRPC_CALL_STOP) {
                    self.emit(
                        telemetry,
                        builtin::GRPC_CALL_STOP,
                        &[("duration", duration)],
                        &[
                            ("rpc_method", Value::from(self.rpc_method)),
                            ("tool", Value::from(self.tool.as_str())),
                            ("worker_id", Value::from(worker_id)),
                            ("address", Value::from(&*self.address)),
                            ("grpc_status", Value::from(status)),
                        ],
                        0,
                    );
                }
            }
            Err(e) => {
                if telemetry.is_enabled(builtin::GRPC_CALL_EXCEPTION) {
                    let message = e.to_string();
                    let traceback = match e {
                        CallError::Tool { traceback, .. } => {
                            crate::fold::tail(traceback, crate::fold::MAX_METADATA_VALUE_BYTES)
                        }
                        _ => "",
                    };
                    self.emit(
                        telemetry,
                        builtin::GRPC_CALL_EXCEPTION,
                        &[("duration", duration)],
                        &[
                            ("rpc_method", Value::from(self.rpc_method)),
                            ("tool", Value::from(self.tool.as_str())),
                            ("worker_id", Value::from(worker_id)),
                            ("address", Value::from(&*self.address)),
                            ("grpc_status", Value::from(e.grpc_status())),
                            ("error_type", Value::from(e.kind())),
                            ("error_message", Value::from(message.as_str())),
                            ("traceback", Value::from(traceback)),
                        ],
                        0,
                    );
                }
            }
        }
    }

    /// `grpc.stream.opened`.
    pub(crate) fn stream_opened(&self, telemetry: &Telemetry, worker_id: &str) {
        if telemetry.is_enabled(builtin::GRPC_STREAM_OPENED) {
            self.emit(
                telemetry,
                builtin::GRPC_STREAM_OPENED,
                &[],
                &[
                    ("rpc_method", Value::from(self.rpc_method)),
                    ("tool", Value::from(self.tool.as_str())),
                    ("worker_id", Value::from(worker_id)),
                ],
                0,
            );
        }
    }

    /// `grpc.stream.message` for one chunk.
    pub(crate) fn stream_message(
        &self,
        telemetry: &Telemetry,
        worker_id: &str,
        size: usize,
        sequence: u64,
    ) {
        if telemetry.is_enabled(builtin::GRPC_STREAM_MESSAGE) {
            self.emit(
                telemetry,
                builtin::GRPC_STREAM_MESSAGE,
                &[
                    ("size", Value::Int(size as i64)),
                    ("sequence", Value::Int(sequence as i64)),
                ],
                &[
                    ("tool", Value::from(self.tool.as_str())),
                    ("worker_id", Value::from(worker_id)),
                ],
                0,
            );
        }
    }

    /// `grpc.stream.closed`.
    pub(crate) fn stream_closed(
        &self,
        telemetry: &Telemetry,
        worker_id: &str,
        message_count: u64,
        reason: &'static str,
    ) {
        if telemetry.is_enabled(builtin::GRPC_STREAM_CLOSED) {
            self.emit(
                telemetry,
                builtin::GRPC_STREAM_CLOSED,
                &[
                    ("duration", Value::Int(self.elapsed_ns())),
                    ("message_count", Value::Int(message_count as i64)),
                ],
                &[
                    ("tool", Value::from(self.tool.as_str())),
                    ("worker_id", Value::from(worker_id)),
                    ("reason", Value::from(reason)),
                ],
                0,
            );
        }
    }
}

/// The parent of a call's `grpc.call` span: the caller's current
/// OpenTelemetry span (feature `opentelemetry`), else the explicit
/// [`CallOptions::parent`], else none.
fn caller_parent(opts: &CallOptions) -> Option<TraceParent> {
    #[cfg(feature = "opentelemetry")]
    if let Some(p) = otel_parent() {
        return Some(p);
    }
    opts.parent.filter(TraceParent::is_valid)
}

/// The span context of `opentelemetry::Context::current()`, when valid.
/// Under a `tracing-opentelemetry` layer, the entered `tracing` span's
/// context is the current one.
#[cfg(feature = "opentelemetry")]
fn otel_parent() -> Option<TraceParent> {
    use opentelemetry::trace::TraceContextExt;
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    })
}
