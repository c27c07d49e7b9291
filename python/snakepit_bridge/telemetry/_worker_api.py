"""The one internal telemetry API of the worker (``snakepit_bridge.worker``
and ``snakepit_bridge.logs``): not for adapters, which use the public
``snakepit_bridge.telemetry``.

Call context (per host call):
    enter_call_context(cid, traceparent) -> tokens; exit_call_context(tokens);
    span_var (the current span context: set/reset around a tool span);
    emit_span_event(name, measurements, metadata, cid, ctx): a call event
    through the policy into the buffer; span_event_kept(name, cid, span_id):
    the policy's verdict for an event the host emits from CallReply.telemetry
    (a drop is counted); call_events_all_kept(): does the policy keep every
    call and tool event?
Policy:
    policy(), set_policy(p), apply_control(TelemetryControl) -> bool,
    add_policy_listener(cb) / remove_policy_listener(cb), Policy, PolicyError,
    LOG_LEVELS.
Stream (one telemetry stream to a host at a time):
    attach_stream() / detach_stream(); drain(n) -> event tuples;
    requeue(events): put unsent ones back; pending(leftover): the count a
    batch reports; note_batch_written(pending), batches_written(),
    pending_written(); set_buffer_capacity(n), buffer_capacity();
    accepted(), open_counters(path) / close_counters(path): the shared
    accepted-events count a host reads after the worker died.
Drop counters:
    drop_counts() (in DropCounts order, see DROP_REASONS), drop_counts_dict(),
    add_encode_errors(n), count_log_drop().
"""

from ._buffer import (
    add_encode_errors,
    add_policy_listener,
    apply_control,
    buffer_capacity,
    call_events_all_kept,
    count_log_drop,
    drop_counts,
    drop_counts_dict,
    emit_span_event,
    policy,
    remove_policy_listener,
    set_buffer_capacity,
    set_policy,
    span_event_kept,
)
from ._context import (
    enter_call_context,
    exit_call_context,
    parse_traceparent,
    span_var,
)
from ._policy import DROP_REASONS, LOG_LEVELS, Policy, PolicyError
from ._stream import (
    accepted,
    attach_stream,
    batches_written,
    close_counters,
    detach_stream,
    drain,
    event_to_dict,
    note_batch_written,
    open_counters,
    pending,
    pending_written,
    requeue,
)

__all__ = [
    "DROP_REASONS", "LOG_LEVELS", "Policy", "PolicyError", "accepted",
    "add_encode_errors", "add_policy_listener", "apply_control", "attach_stream",
    "batches_written", "buffer_capacity", "call_events_all_kept", "close_counters",
    "count_log_drop",
    "detach_stream", "drain", "drop_counts", "drop_counts_dict", "emit_span_event",
    "enter_call_context", "event_to_dict", "exit_call_context", "note_batch_written",
    "open_counters", "parse_traceparent", "pending", "pending_written", "policy",
    "remove_policy_listener", "requeue", "set_buffer_capacity", "set_policy", "span_event_kept",
    "span_var",
]
