"""CallBatchStream replies (hot path of every call): CallReply, CallTelemetry
and CallReplyBatch encoded directly, no protobuf objects."""

from __future__ import annotations

import struct

from .fields import _SMALL, _U64, _ld, string_field, varint


def _u64_field(tag: int, v: int) -> bytes:
    """A varint field; zero is omitted (proto3 default). Negative ints wrap to u64."""
    if not v:
        return b""
    if v < 0:
        v += _U64
    return _SMALL[tag] + varint(v)


# CallTelemetry.emit bits: which of a call's events the worker's policy kept
# (the proto's bits, under the host's names in snakepit-grpc's call events).
CALL_START = 1  # python.call.start
CALL_END = 2  # python.call.stop or python.call.exception
TOOL_START = 4  # python.tool.execution.start
TOOL_END = 8  # python.tool.execution.stop or python.tool.execution.exception

# CallTelemetry fields 1-7 (fixed32 / sfixed64 / fixed64) in one pack.
_pack_call_tel = struct.Struct("<BIBqBQBqBQBQBQ").pack
_pack_tool_span = struct.Struct("<BQ").pack


def call_telemetry(emit: int, call_start_ns: int, call_duration_ns: int, tool_start_ns: int,
                   tool_duration_ns: int, call_span_id: int, call_parent_span_id: int,
                   trace_id: str, tool_span_id: int, error_type: str = "",
                   tool_error_type: str = "", tool_error_message: str = "") -> bytes:
    """One serialized CallTelemetry message body."""
    out = _pack_call_tel(
        0x0D, emit, 0x11, call_start_ns, 0x19, call_duration_ns, 0x21, tool_start_ns,
        0x29, tool_duration_ns, 0x31, call_span_id, 0x39, call_parent_span_id,
    )
    if trace_id:
        out += string_field(0x42, trace_id)
    if tool_span_id:
        out += _pack_tool_span(0x49, tool_span_id)
    if error_type:
        out += string_field(0x52, error_type)
    if tool_error_type:
        out += string_field(0x5A, tool_error_type)
    if tool_error_message:
        out += string_field(0x62, tool_error_message)
    return out


def shm_segment(h) -> bytes:
    """A serialized ShmSegment of a result segment (``worker.shm.Handle``)."""
    return (_u64_field(0x08, h.pid) + _u64_field(0x10, h.fd) + _u64_field(0x18, h.inode)
            + _u64_field(0x20, h.length))


def reply_result(request_id: int, result_json: bytes, telemetry: bytes = b"",
                 binaries=None) -> bytes:
    """A serialized CallReply carrying a ToolResult (binaries: key -> bytes,
    or a result segment's ``Handle``, which goes in ``shm_results``)."""
    n = len(result_json)
    if not binaries and 0 < n < 126:
        # The usual small result: both lengths fit one byte.
        out = _u64_field(0x08, request_id) + bytes((0x12, n + 2, 0x0A, n)) + result_json
    else:
        body = _ld(0x0A, result_json) if result_json else b""
        if binaries:
            body += b"".join(
                _ld(0x12, string_field(0x0A, k) + _ld(0x12, bytes(v))) if type(v) is bytes
                else _ld(0x1A, string_field(0x0A, k) + _ld(0x12, shm_segment(v)))
                for k, v in binaries.items()
            )
        out = _u64_field(0x08, request_id) + b"\x12" + varint(len(body)) + body
    if telemetry:
        out += _ld(0x32, telemetry)
    return out


# CallReply.telemetry (field 6, 68 bytes) holding CallTelemetry fields 1-7 and
# tool_span_id (9): what _ld(0x32, _pack_call_tel(...) + _pack_tool_span(...))
# gives, in one pack.
_pack_call_tel_field = struct.Struct("<BBBIBqBQBqBQBQBQBQ").pack


def call_telemetry_field(emit: int, call_start_ns: int, call_duration_ns: int,
                         tool_start_ns: int, tool_duration_ns: int, call_span_id: int,
                         call_parent_span_id: int, tool_span_id: int) -> bytes:
    """The ``CallReply.telemetry`` field for the usual call (a tool span, no
    trace id, no errors), to append to a ``reply_result`` without telemetry:
    the same bytes as passing ``call_telemetry(...)`` to it, in one pack
    instead of two encoders (about 1 µs less per call)."""
    return _pack_call_tel_field(0x32, 68, 0x0D, emit, 0x11, call_start_ns,
                                0x19, call_duration_ns, 0x21, tool_start_ns,
                                0x29, tool_duration_ns, 0x31, call_span_id,
                                0x39, call_parent_span_id, 0x49, tool_span_id)


def reply_error(request_id: int, type_: str, message: str, tb: str,
                telemetry: bytes = b"") -> bytes:
    """A serialized CallReply carrying a ToolError."""
    body = b"".join((
        string_field(0x0A, type_) if type_ else b"",
        string_field(0x12, message) if message else b"",
        string_field(0x1A, tb) if tb else b"",
    ))
    out = _u64_field(0x08, request_id) + _ld(0x1A, body)
    if telemetry:
        out += _ld(0x32, telemetry)
    return out


def reply_batch(replies) -> bytes:
    """A serialized CallReplyBatch from serialized CallReply messages."""
    return b"".join([b"\x0a" + varint(len(r)) + r for r in replies])

