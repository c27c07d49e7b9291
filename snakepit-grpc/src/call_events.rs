//! The worker's per-call events, carried on the call's reply
//! (`CallReply.telemetry`, see the proto) instead of the telemetry stream:
//! the host emits `python.call.start`, `python.tool.execution.start`,
//! `python.tool.execution.stop|exception` and `python.call.stop|exception`
//! from it, with the same measurements, metadata (the host's enrichment
//! included) and span context the folded events have. The worker already
//! applied its policy (the `emit` bits); `execute_with` applies the host's.
//! With the tool's stop comes `python.tool.result_size`, the size of the
//! result the reply carries: the host knows it, so the worker does not
//! buffer one more event per call for it.

use std::borrow::Cow;
use std::sync::Arc;

use snakepit_core::{builtin, EventContext, EventId, Field, Value};
use snakepit_telemetry::Telemetry;

use crate::fold::{node_name, tail, truncate, StatCounters};
use crate::fold::{MAX_CORRELATION_ID_BYTES, MAX_METADATA_VALUE_BYTES};
use crate::proto::CallTelemetry;
use crate::trace::parse_trace_id;

const CALL_START: u32 = 1;
const CALL_END: u32 = 2;
const TOOL_START: u32 = 4;
const TOOL_END: u32 = 8;

/// Who the events are about: the host's enrichment of Python events.
pub(crate) struct CallEvents<'a> {
    pub(crate) telemetry: &'a Telemetry,
    pub(crate) stats: &'a Arc<StatCounters>,
    pub(crate) worker_id: &'a str,
    pub(crate) pool_name: &'a str,
    pub(crate) python_pid: Option<u32>,
    /// The call's session (`CallOptions::session_id`), "" if none: metadata
    /// `session_id` of the python.call events.
    pub(crate) session_id: &'a str,
}

impl CallEvents<'_> {
    /// Emits the events `t` says the worker's policy kept, for a call of
    /// `tool` with `correlation_id` (a failed call has `t.error_type` set).
    /// `request_trace` is the trace of the call's traceparent, used when the
    /// worker left `t.trace_id` empty (it does when that is its trace).
    /// `result_bytes` is the size of the result the reply carried (JSON plus
    /// binary results; `None` when it carried none, or was not waited for);
    /// `traceback` is the reply's Python traceback of a tool that raised
    /// ("" if none), reported on `python.tool.execution.exception`.
    pub(crate) fn emit(
        &self,
        tool: &str,
        correlation_id: &str,
        request_trace: u128,
        t: &CallTelemetry,
        result_bytes: Option<usize>,
        traceback: &str,
    ) {
        let bits = t.emit;
        if bits == 0 {
            return;
        }
        let trace_id = if t.trace_id.is_empty() {
            request_trace
        } else {
            parse_trace_id(&t.trace_id)
        };
        let correlation_id = (!correlation_id.is_empty())
            .then(|| truncate(correlation_id, MAX_CORRELATION_ID_BYTES));
        let call_ctx = |ts: i64| EventContext {
            timestamp_ns: u64::try_from(ts).unwrap_or(0),
            correlation_id,
            span_id: t.call_span_id,
            parent_span_id: t.call_parent_span_id,
            trace_id,
        };
        let tool_ctx = |ts: i64| EventContext {
            timestamp_ns: u64::try_from(ts).unwrap_or(0),
            correlation_id,
            span_id: t.tool_span_id,
            parent_span_id: t.call_span_id,
            trace_id,
        };
        let duration = |d: u64| Value::Int(i64::try_from(d).unwrap_or(i64::MAX));
        let mut emitted = 0u64;
        if bits & CALL_START != 0 {
            emitted += 1;
            self.one(
                builtin::PYTHON_CALL_START,
                &[("system_time", Value::Int(t.call_start_ns))],
                "command",
                tool,
                None,
                call_ctx(t.call_start_ns),
            );
        }
        let tool_ran = t.tool_span_id != 0;
        if tool_ran && bits & TOOL_START != 0 {
            emitted += 1;
            self.one(
                builtin::PYTHON_TOOL_EXECUTION_START,
                &[("system_time", Value::Int(t.tool_start_ns))],
                "tool",
                tool,
                None,
                tool_ctx(t.tool_start_ns),
            );
        }
        if tool_ran && bits & TOOL_END != 0 {
            emitted += 1;
            let ts = t.tool_start_ns.saturating_add_unsigned(t.tool_duration_ns);
            let measurements = [("duration", duration(t.tool_duration_ns))];
            if t.tool_error_type.is_empty() {
                self.one(
                    builtin::PYTHON_TOOL_EXECUTION_STOP,
                    &measurements,
                    "tool",
                    tool,
                    None,
                    tool_ctx(ts),
                );
                if let Some(bytes) = result_bytes {
                    emitted += 1;
                    let size = Value::Int(i64::try_from(bytes).unwrap_or(i64::MAX));
                    self.one(
                        builtin::PYTHON_TOOL_RESULT_SIZE,
                        &[("message_size", size)],
                        "tool",
                        tool,
                        None,
                        call_ctx(ts),
                    );
                }
            } else {
                self.one(
                    builtin::PYTHON_TOOL_EXECUTION_EXCEPTION,
                    &measurements,
                    "tool",
                    tool,
                    Some((&t.tool_error_type, Some((&t.tool_error_message, traceback)))),
                    tool_ctx(ts),
                );
            }
        }
        if bits & CALL_END != 0 {
            emitted += 1;
            let ts = t.call_start_ns.saturating_add_unsigned(t.call_duration_ns);
            let measurements = [("duration", duration(t.call_duration_ns))];
            if t.error_type.is_empty() {
                self.one(
                    builtin::PYTHON_CALL_STOP,
                    &measurements,
                    "command",
                    tool,
                    None,
                    call_ctx(ts),
                );
            } else {
                self.one(
                    builtin::PYTHON_CALL_EXCEPTION,
                    &measurements,
                    "command",
                    tool,
                    Some((&t.error_type, None)),
                    call_ctx(ts),
                );
            }
        }
        self.stats.count_folded(emitted);
    }

    fn one(
        &self,
        id: EventId,
        measurements: &[Field<'_>],
        key: &'static str,
        tool: &str,
        error: Option<(&str, Option<(&str, &str)>)>,
        context: EventContext<'_>,
    ) {
        if !self.telemetry.is_enabled(id) {
            return;
        }
        // At most 9 fields: on the stack, no allocation per event.
        let mut metadata = Fields9::new();
        let mut push = |f| metadata.push(f);
        push((
            key,
            Value::Str(Cow::Borrowed(truncate(tool, MAX_METADATA_VALUE_BYTES))),
        ));
        if key == "command" {
            // The python.call events: the RPC that carries CallTelemetry.
            push(("rpc_method", Value::Str(Cow::Borrowed("CallBatchStream"))));
            if !self.session_id.is_empty() {
                push(("session_id", Value::Str(Cow::Borrowed(self.session_id))));
            }
        }
        if let Some((error_type, message)) = error {
            push((
                "error_type",
                Value::Str(Cow::Borrowed(truncate(
                    error_type,
                    MAX_METADATA_VALUE_BYTES,
                ))),
            ));
            if let Some((m, traceback)) = message {
                push((
                    "error_message",
                    Value::Str(Cow::Borrowed(truncate(m, MAX_METADATA_VALUE_BYTES))),
                ));
                if !traceback.is_empty() {
                    push((
                        "traceback",
                        Value::Str(Cow::Borrowed(tail(traceback, MAX_METADATA_VALUE_BYTES))),
                    ));
                }
            }
        }
        push(("worker_id", Value::Str(Cow::Borrowed(self.worker_id))));
        push(("pool_name", Value::Str(Cow::Borrowed(self.pool_name))));
        if let Some(pid) = self.python_pid {
            push(("python_pid", Value::Int(i64::from(pid))));
        }
        push(("node", Value::Str(Cow::Borrowed(node_name()))));
        self.telemetry.execute_from_worker(
            self.worker_id,
            id,
            measurements,
            metadata.as_slice(),
            context,
        );
    }
}

/// Up to nine metadata fields, kept on the stack.
struct Fields9<'a> {
    items: [Field<'a>; 9],
    len: usize,
}

impl<'a> Fields9<'a> {
    fn new() -> Self {
        Fields9 {
            items: std::array::from_fn(|_| ("", Value::Int(0))),
            len: 0,
        }
    }

    fn push(&mut self, field: Field<'a>) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = field;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[Field<'a>] {
        &self.items[..self.len]
    }
}
