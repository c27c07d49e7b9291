"""Worker-side telemetry: emit, spans, correlation ids.

Public API (the observability guide's)::

    from snakepit_bridge import telemetry
    telemetry.emit("tool.execution.stop", {"duration": 1234}, {"tool": "predict"},
                   correlation_id="abc-123")
    with telemetry.span("inference", {"model": "gpt-4"}):
        ...
    with telemetry.span("inference", {"model": "gpt-4"}, "abc-123"):  # its events' id
        ...
    @telemetry.span("load")          # a function, coroutine or generator: a span per call
    def load(): ...
    cid = telemetry.new_correlation_id()
    token = telemetry.set_correlation_id(cid)
    telemetry.get_correlation_id()   # or get_correlation_id("-"): the default when none
    telemetry.reset_correlation_id(token)  # the previous id; without a token: none
    telemetry.outgoing_metadata([("authorization", "...")])  # + correlation id, traceparent

Names are relative to ``snakepit.python.``: ``emit("call.stop", ...)`` is the
host event ``snakepit.python.call.stop``.

Everything here is public. The parts behind it: ``_context`` (correlation id
and span context), ``_decorate`` (``span`` as a decorator), ``_policy``
(sampling rule, patterns, policy), ``_buffer`` (the emit path, the bounded
buffer and its drop counters), ``_stream`` (what the telemetry stream
drains). The worker uses them through one internal API,
``_worker_api``; tests reset the state with ``_testing``.
"""

from ..session import get_session_id
from ._buffer import emit, span
from ._context import (
    CORRELATION_HEADER,
    TRACEPARENT_HEADER,
    correlation_filter,
    current_span,
    current_traceparent,
    get_correlation_id,
    new_correlation_id,
    outgoing_metadata,
    reset_correlation_id,
    set_correlation_id,
)
from ._stream import buffered, pending, stream_attached

__all__ = [
    "CORRELATION_HEADER",
    "TRACEPARENT_HEADER",
    "emit",
    "span",
    "new_correlation_id",
    "set_correlation_id",
    "get_correlation_id",
    "get_session_id",
    "reset_correlation_id",
    "outgoing_metadata",
    "correlation_filter",
    "current_span",
    "current_traceparent",
    "stream_attached",
    "buffered",
    "pending",
]
