"""The worker process: ``python -m snakepit_bridge.worker --adapter mod:Class ...``.

Protocol with the host (see python/README.md):
* After the gRPC server has bound and started, exactly one line is written to
  stdout: ``SNAKEPIT_READY {"worker_id": ..., "pid": ..., "listen": ...,
  "protocol": 1, "event_loop": "uvloop"|"asyncio", "gc": "tuned"|"default",
  "calls": "unix:<socket>.calls"|""}`` (``gc``: see ``_tune_gc``;
  ``SNAKEPIT_GC=default`` keeps CPython's settings; ``calls``: the native
  call server, see ``NativeCalls``). Nothing else is ever
  written to stdout (Python-level and fd-level stdout are redirected to
  stderr before the adapter is imported).
* SIGTERM/SIGINT: graceful stop; calls in flight finish (up to --grace-s),
  the telemetry stream is flushed, exit code 0.
* --watch-stdin: exit when stdin reaches EOF; --parent-pid: exit when that
  process is gone.
* Adapter load failure: ``SNAKEPIT_ADAPTER_ERROR: <message>`` and the traceback
  on stderr, exit code 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import hmac
import importlib
import ipaddress
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional

from . import PROTOCOL_VERSION, _wire, telemetry
from . import logs as worker_logs
from .base_adapter import BaseAdapter, BoundTool
from .telemetry import _worker_api as tel

EXIT_ADAPTER_ERROR = 3
EXIT_USAGE = 2
TOKEN_HEADER = "x-snakepit-token"

log = logging.getLogger("snakepit_bridge.worker")


# --------------------------------------------------------------------------
# Adapter loading
# --------------------------------------------------------------------------


class AdapterError(Exception):
    pass


def load_adapter(path: str):
    """Import ``package.module:Class`` and instantiate it (one instance per worker)."""
    if ":" not in path:
        raise AdapterError(f"adapter path {path!r} must look like 'package.module:Class'")
    mod_name, _, cls_name = path.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:
        raise AdapterError(f"cannot import adapter module {mod_name!r}: {e!r}") from e
    cls = module
    for part in cls_name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise AdapterError(f"module {mod_name!r} has no attribute {cls_name!r}")
    if not isinstance(cls, type):
        raise AdapterError(f"{path!r} is not a class")
    try:
        instance = cls()
    except Exception as e:
        raise AdapterError(f"creating adapter {path!r} raised {e!r}") from e
    tools = BaseAdapter.tools(instance)
    if not tools:
        raise AdapterError(f"adapter {path!r} defines no @tool methods")
    return instance, tools


# --------------------------------------------------------------------------
# Call execution
# --------------------------------------------------------------------------


# Longest error message and traceback a reply carries (characters); longer
# ones are cut, saying how much was cut, so an error reply stays far below
# the message limit.
MAX_ERROR_MESSAGE_CHARS = 16_384
MAX_ERROR_TRACEBACK_CHARS = 65_536


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters cut)"


class ToolFailure(Exception):
    def __init__(self, type_: str, message: str, tb: str = "") -> None:
        message = _clip(message, MAX_ERROR_MESSAGE_CHARS)
        super().__init__(message)
        self.type = type_
        self.message = message
        self.tb = _clip(tb, MAX_ERROR_TRACEBACK_CHARS)


def _raised(e: BaseException) -> ToolFailure:
    """The tool error for an exception a tool raised, of any kind: a
    BaseException (SystemExit, KeyboardInterrupt, a custom subclass) is the
    call's error like any other, never the worker's exit."""
    return ToolFailure(type(e).__name__, str(e), traceback.format_exc())


# Default of --max-message-bytes: the largest tool result (JSON plus binary
# results, bytes) one reply carries, as the host's max_message_bytes.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Room above the limit for what a message carries besides the payload (call
# ids, telemetry, error text): the transports accept limit + this.
MESSAGE_HEADROOM_BYTES = 1024 * 1024
_max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES


def set_max_message_bytes(n: int) -> None:
    """Sets the result size limit (see DEFAULT_MAX_MESSAGE_BYTES)."""
    global _max_message_bytes
    _max_message_bytes = int(n)


def max_message_bytes() -> int:
    """The result size limit in bytes."""
    return _max_message_bytes


def _json_default(o: Any):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset)):
        return list(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)
_dumps = _encoder.encode
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _make_fast_dumps():
    """JSONEncoder.encode builds its C encoder on every call; build it once.

    Same output as ``_dumps`` (compact separators, ensure_ascii, no NaN).
    The shared encoder has no circular-reference markers: a value that
    recurses too deep is encoded again by ``_dumps``, which names the cycle.
    """
    if _c_make_encoder is None:
        return _dumps
    basestring = json.encoder.encode_basestring_ascii
    enc = _c_make_encoder(None, _json_default, basestring, None, ":", ",", False, False, False)

    def dumps(o) -> str:
        if type(o) is str:
            return basestring(o)
        try:
            return "".join(enc(o, 0))
        except RecursionError:
            return _dumps(o)

    return dumps


_fast_dumps = _make_fast_dumps()
_BINARY = (bytes, bytearray, memoryview)


def encode_result(value: Any):
    """Return (result_json bytes, binary_results dict)."""
    binaries: Dict[str, bytes] = {}
    t = type(value)
    if t is dict or isinstance(value, dict):
        for v in value.values():
            if isinstance(v, _BINARY):
                value = dict(value)
                for k in [k for k, v in value.items() if isinstance(v, _BINARY)]:
                    binaries[str(k)] = bytes(value.pop(k))
                break
    elif isinstance(value, _BINARY):
        binaries = {"result": bytes(value)}
        _check_size(4, binaries)
        return b"null", binaries
    try:
        text = _fast_dumps(value)
    except (TypeError, ValueError) as e:
        raise _encode_error(value, str(e)) from e
    # ensure_ascii writes every surrogate as a \udXXX escape: only then can
    # the value hold a lone one, which the host's JSON parser refuses.
    if "\\ud" in text:
        bad = _find_unencodable(value)
        if bad is not None:
            raise _encode_error(value, "")
    data = text.encode("utf-8")
    if binaries or len(data) > _max_message_bytes:
        _check_size(len(data), binaries)
    return data, binaries


def _check_size(size: int, binaries: Dict[str, bytes]) -> None:
    """ResultTooLarge when a result (``size`` JSON bytes plus ``binaries``)
    is over the message limit."""
    if binaries:
        size += sum(len(k) + len(v) for k, v in binaries.items())
    if size > _max_message_bytes:
        raise ToolFailure(
            "ResultTooLarge",
            f"the tool result is {size} bytes encoded (JSON and binary results), over the "
            f"message limit of {_max_message_bytes} bytes; return less per call (a streaming "
            "tool sends chunks), or raise max_message_bytes on the host and "
            "--max-message-bytes on the worker")


def _encode_error(value: Any, detail: str) -> ToolFailure:
    """EncodeError naming where in the result the value JSON cannot carry is."""
    bad = _find_unencodable(value)
    if bad is None:
        return ToolFailure("EncodeError", f"tool result is not JSON-encodable: {detail}")
    path, what = bad
    if len(path) > 300:
        path = path[:300] + "..."
    return ToolFailure("EncodeError", f"tool result cannot be encoded as JSON: {path} is {what}")


_NON_FINITE = "has no JSON form (NaN and infinities are not JSON numbers; return None or a string)"


def _bad_float(x: float) -> Optional[str]:
    if x != x or x in (float("inf"), float("-inf")):
        return f"{x!r}, which {_NON_FINITE}"
    return None


def _bad_str(s: str) -> Optional[str]:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"a string with a lone surrogate {s[e.start]!r} at index {e.start} "
                "(not valid Unicode text, so not valid JSON)")
    return None


def _find_unencodable(value: Any, path: str = "result", depth: int = 0, seen=None):
    """(path, description) of the first value in ``value`` that the JSON
    sent to the host cannot carry (NaN, an infinity, a lone surrogate, an
    object of an unknown type), or None. Each container is looked at once
    (a cycle ends the search there)."""
    if depth > 200:
        return None
    if isinstance(value, str):
        what = _bad_str(value)
        return (path, what) if what else None
    if isinstance(value, float):
        what = _bad_float(value)
        return (path, what) if what else None
    if value is None or isinstance(value, (bool, int)):
        return None
    if seen is None:
        seen = set()
    if id(value) in seen:
        return None
    seen.add(id(value))
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                what = _bad_str(k)
            elif isinstance(k, float):
                what = _bad_float(k)
            elif k is None or isinstance(k, int):
                what = None
            else:
                what = f"{k!r} of type {type(k).__name__} (JSON object keys are strings)"
            if what:
                return f"a key of {path}", what
            found = _find_unencodable(v, f"{path}[{k!r}]", depth + 1, seen)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _find_unencodable(v, f"{path}[{i}]", depth + 1, seen)
            if found:
                return found
        return None
    try:
        converted = _json_default(value)
    except Exception:  # noqa: BLE001 - any failure: the value is the culprit
        return path, f"an object of type {type(value).__name__}, which is not JSON serializable"
    return _find_unencodable(converted, path, depth + 1, seen)


_loads = json.loads


def decode_args(args_json: bytes, binary: Optional[Dict[str, bytes]]) -> Dict[str, Any]:
    if args_json == b"{}":
        args = {}
    elif args_json:
        try:
            args = _loads(args_json)
        except ValueError as e:
            raise ToolFailure("InvalidArguments", f"args_json is not valid JSON: {e}") from e
        if not isinstance(args, dict):
            raise ToolFailure("InvalidArguments", "args_json must be a JSON object")
    else:
        args = {}
    if binary:
        for k, v in binary.items():
            args[k] = bytes(v)
    return args


def _tool_md(name: str) -> dict:
    return {"tool": name}


def _run_sync_tool(fn, kwargs, md):
    try:
        with telemetry.span("tool.execution", md):
            return fn(**kwargs)
    except Exception:
        raise
    except BaseException as e:  # noqa: BLE001 - a tool's SystemExit is its error
        raise _raised(e) from e


async def _run_async_tool(fn, kwargs, md):
    try:
        with telemetry.span("tool.execution", md):
            return await fn(**kwargs)
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as e:  # noqa: BLE001 - raised in a task it would stop the loop
        raise _raised(e) from e


def _own_cancel() -> bool:
    """Is the current task being cancelled (rather than a tool having raised
    CancelledError by itself)?"""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return task is None or cancelling is None or cancelling() > 0


_SENTINEL_END = object()
_time_ns = time.time_ns
_monotonic_ns = time.monotonic_ns
_getrandbits = random.getrandbits
_span_set = tel.span_var.set
_span_reset = tel.span_var.reset
# A CallReplyBatch stops growing at this size (the rest goes in the next one).
MAX_REPLY_BATCH_BYTES = 4 * 1024 * 1024


class Dispatcher:
    """Runs tools with call telemetry, context, timeouts and error capture."""

    def __init__(self, tools: Dict[str, BoundTool], worker_id: str, threads: int) -> None:
        self.tools = tools
        self.worker_id = worker_id
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="snakepit-tool")
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.draining = False
        self._names = ", ".join(sorted(tools))

    def lookup(self, name: str) -> BoundTool:
        t = self.tools.get(name)
        if t is None:
            raise ToolFailure(
                "UnknownTool", f"unknown tool {name!r}; available tools: {self._names}"
            )
        return t

    def _begin(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def _end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()

    def _call_start(self, name, cid, traceparent):
        tokens = tel.enter_call_context(cid, traceparent)
        md = {"command": name, "worker_id": self.worker_id}
        tel.emit_span_event(
            "call.start", {"system_time": time.time_ns()}, md, cid or None, tokens[2]
        )
        return tokens, md, time.monotonic_ns()

    def _call_end(self, tokens, md, t0, failure: Optional[ToolFailure]) -> None:
        dur = time.monotonic_ns() - t0
        ctx = tokens[2]
        cid = telemetry.get_correlation_id()
        if failure is None:
            tel.emit_span_event("call.stop", {"duration": dur}, md, cid, ctx)
        else:
            md2 = dict(md)
            md2["error_type"] = failure.type
            tel.emit_span_event("call.exception", {"duration": dur}, md2, cid, ctx)
        tel.exit_call_context(tokens)

    def check_accepting(self) -> None:
        if self.draining:
            raise ToolFailure("Unavailable", "worker is shutting down")

    def is_inline(self, name: str) -> bool:
        t = self.tools.get(name)
        return t is not None and t.spec.inline and not t.spec.supports_streaming

    def call_inline(self, name, args_json, binary, cid, traceparent):
        """Run an inline (trivial, sync) tool right here. Returns (ok, payload)."""
        self._begin()
        tokens, md, t0 = self._call_start(name, cid, traceparent)
        failure = None
        try:
            t = self.lookup(name)
            kwargs = decode_args(args_json, binary)
            try:
                value = _run_sync_tool(t.fn, kwargs, _tool_md(name))
            except ToolFailure:
                raise
            except BaseException as e:  # noqa: BLE001 - every outcome is a reply
                raise _raised(e) from e
            return True, encode_result(value)
        except ToolFailure as f:
            failure = f
            return False, f
        finally:
            self._call_end(tokens, md, t0, failure)
            self._end()

    def call_inline_wire(self, t: BoundTool, req) -> bytes:
        """Run an inline tool for CallBatchStream; returns the serialized CallReply.

        The call's own telemetry (python.call.* and python.tool.execution.*)
        travels in CallReply.telemetry instead of the event buffer; the policy
        is applied here as on the emit path (drops counted) and the host emits
        the events the policy kept. The tool runs with the same context as
        before: the correlation id and a tool.execution span are current.
        """
        self.inflight += 1
        self.idle.clear()
        cid = req.correlation_id or None
        call_start = _time_ns()
        m0 = _monotonic_ns()
        tokens = tel.enter_call_context(cid, req.traceparent)
        ctx = tokens[2]
        call_sid = ctx[0]
        tool_sid = _getrandbits(64) or 1
        tool_start = tool_dur = 0
        tool_err_type = tool_err_msg = ""
        failure = None
        rid = req.request_id
        try:
            kwargs = decode_args(req.args_json, req.binary_parameters)
            token = _span_set((tool_sid, call_sid, ctx[2], "tool.execution", ctx[4]))
            tool_start = _time_ns()
            t0 = _monotonic_ns()
            try:
                value = t.fn(**kwargs)
                tool_dur = _monotonic_ns() - t0
            except BaseException as e:  # noqa: BLE001 - every outcome is a reply
                tool_dur = _monotonic_ns() - t0
                tool_err_type = type(e).__name__
                tool_err_msg = str(e)[:1024]
                raise _raised(e) from e
            finally:
                _span_reset(token)
            rj, bins = encode_result(value)
        except ToolFailure as f:
            failure = f
        call_dur = _monotonic_ns() - m0
        tel.exit_call_context(tokens)
        if tel.call_events_all_kept():
            emit = 15 if tool_start else 3
        else:
            kept = tel.span_event_kept
            emit = 1 if kept("call.start", cid, call_sid) else 0
            if tool_start:
                if kept("tool.execution.start", cid, tool_sid):
                    emit |= 4
                if kept("tool.execution.exception" if tool_err_type else "tool.execution.stop",
                        cid, tool_sid):
                    emit |= 8
            if kept("call.stop" if failure is None else "call.exception", cid, call_sid):
                emit |= 2
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()
        parent = ctx[1]
        if emit and failure is None and parent and tool_start:
            # The usual call (and the host's traceparent): telemetry in one pack.
            return _wire.reply_result(rid, rj, b"", bins) + _wire.call_telemetry_field(
                emit, call_start, call_dur, tool_start, tool_dur, call_sid, parent, tool_sid)
        packed = _wire.call_telemetry(
            # A valid traceparent (ctx[1] != 0) gave the trace: the host knows it.
            emit, call_start, call_dur, tool_start, tool_dur, call_sid, parent,
            "" if parent else ctx[2],
            tool_sid if tool_start else 0, failure.type if failure is not None else "",
            tool_err_type, tool_err_msg) if emit else b""
        if failure is None:
            return _wire.reply_result(rid, rj, packed, bins)
        return _wire.reply_error(rid, failure.type, failure.message, failure.tb, packed)

    async def call(self, name, args_json, binary, cid, traceparent, timeout_ms):
        """Run a non-streaming tool. Returns (True, (json, binaries)) or (False, ToolFailure)."""
        self._begin()
        tokens, md, t0 = self._call_start(name, cid, traceparent)
        failure = None
        try:
            self.check_accepting()
            t = self.lookup(name)
            kwargs = decode_args(args_json, binary)
            tmd = _tool_md(name)
            try:
                if t.is_async:
                    coro = _run_async_tool(t.fn, kwargs, tmd)
                elif t.is_gen or t.is_async_gen:
                    raise ToolFailure(
                        "InvalidArguments", f"tool {name!r} is a streaming tool; call it "
                        "with stream=true")
                else:
                    ctx = contextvars.copy_context()
                    if timeout_ms:
                        coro = self._sync_with_deadline(ctx, t.fn, kwargs, tmd, name,
                                                        timeout_ms)
                    else:
                        loop = asyncio.get_running_loop()
                        coro = loop.run_in_executor(self.pool, ctx.run, _run_sync_tool, t.fn,
                                                    kwargs, tmd)
                if timeout_ms and t.is_async:
                    try:
                        value = await asyncio.wait_for(coro, timeout_ms / 1000.0)
                    except TimeoutError:
                        raise ToolFailure(
                            "Timeout", f"tool {name!r} exceeded {timeout_ms} ms") from None
                else:
                    value = await coro
            except ToolFailure:
                raise
            except asyncio.CancelledError as e:
                if _own_cancel():
                    raise
                raise _raised(e) from e
            except BaseException as e:  # noqa: BLE001 - every outcome is a reply
                raise _raised(e) from e
            return True, encode_result(value)
        except ToolFailure as f:
            failure = f
            return False, f
        finally:
            self._call_end(tokens, md, t0, failure)
            self._end()

    async def _sync_with_deadline(self, ctx, fn, kwargs, tmd, name, timeout_ms):
        """A sync tool in the thread pool, with a deadline. Past it, a tool
        still queued is cancelled; a tool already running cannot be stopped,
        so the Timeout is answered only once its thread is free again. The
        host counts a call unanswered well after its timeout as a tool the
        worker could not stop (a stuck worker)."""
        cf = self.pool.submit(ctx.run, _run_sync_tool, fn, kwargs, tmd)
        fut = asyncio.wrap_future(cf)
        done, _ = await asyncio.wait((fut,), timeout=timeout_ms / 1000.0)
        if done:
            return fut.result()
        if not cf.cancel():
            try:
                await fut
            except Exception:  # noqa: BLE001 - the call has timed out anyway
                pass
        raise ToolFailure("Timeout", f"tool {name!r} exceeded {timeout_ms} ms")

    async def stream(self, name, args_json, binary, cid, traceparent, timeout_ms, sink):
        """Run a streaming tool; ``await sink(seq, json_bytes)`` per chunk.

        Returns (True, chunk_count) or (False, ToolFailure).
        """
        self._begin()
        tokens, md, t0 = self._call_start(name, cid, traceparent)
        failure = None
        seq = 0
        deadline = time.monotonic() + timeout_ms / 1000.0 if timeout_ms else None
        try:
            self.check_accepting()
            t = self.lookup(name)
            kwargs = decode_args(args_json, binary)
            tmd = _tool_md(name)
            try:
                if t.is_async_gen:
                    with telemetry.span("tool.execution", tmd):
                        agen = t.fn(**kwargs)
                        try:
                            async for item in agen:
                                await sink(seq, encode_result(item)[0])
                                seq += 1
                                if deadline and time.monotonic() > deadline:
                                    raise ToolFailure(
                                        "Timeout", f"tool {name!r} exceeded {timeout_ms} ms")
                        finally:
                            await agen.aclose()
                elif t.is_gen:
                    seq = await self._pump_sync_gen(t, kwargs, tmd, sink, deadline, name,
                                                    timeout_ms)
                else:
                    # A non-generator tool called as a stream: one chunk.
                    ok, payload = await self.call_plain(t, kwargs, tmd)
                    await sink(0, encode_result(payload)[0])
                    seq = 1
            except ToolFailure:
                raise
            except asyncio.CancelledError as e:
                if _own_cancel():
                    raise
                raise _raised(e) from e
            except BaseException as e:  # noqa: BLE001 - every outcome is a reply
                raise _raised(e) from e
            return True, seq
        except ToolFailure as f:
            failure = f
            return False, f
        except asyncio.CancelledError:
            failure = ToolFailure("Cancelled", f"the caller cancelled {name!r} after {seq} chunks")
            raise
        finally:
            self._call_end(tokens, md, t0, failure)
            self._end()

    async def call_plain(self, t: BoundTool, kwargs, tmd):
        if t.is_async:
            return True, await _run_async_tool(t.fn, kwargs, tmd)
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return True, await loop.run_in_executor(self.pool, ctx.run, _run_sync_tool, t.fn,
                                                kwargs, tmd)

    async def _pump_sync_gen(self, t, kwargs, tmd, sink, deadline, name, timeout_ms):
        """Iterate a sync generator in the thread pool; chunks reach the loop in order."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def produce():
            try:
                with telemetry.span("tool.execution", tmd):
                    gen = t.fn(**kwargs)
                    try:
                        for item in gen:
                            if stop.is_set():
                                break
                            loop.call_soon_threadsafe(q.put_nowait, ("item", item))
                    finally:
                        gen.close()
                loop.call_soon_threadsafe(q.put_nowait, ("end", None))
            except BaseException as e:  # noqa: BLE001
                f = ToolFailure(type(e).__name__, str(e), traceback.format_exc())
                loop.call_soon_threadsafe(q.put_nowait, ("error", f))

        ctx = contextvars.copy_context()
        fut = loop.run_in_executor(self.pool, ctx.run, produce)
        seq = 0
        try:
            while True:
                if deadline:
                    remaining = deadline - time.monotonic()
                    try:
                        kind, val = await asyncio.wait_for(q.get(), max(remaining, 0.0))
                    except TimeoutError:
                        raise ToolFailure(
                            "Timeout", f"tool {name!r} exceeded {timeout_ms} ms") from None
                else:
                    kind, val = await q.get()
                if kind == "item":
                    await sink(seq, encode_result(val)[0])
                    seq += 1
                elif kind == "end":
                    return seq
                else:
                    raise val
        finally:
            stop.set()
            if not fut.done():
                fut.add_done_callback(lambda f: f.exception())


# --------------------------------------------------------------------------
# gRPC servicer
# --------------------------------------------------------------------------


def _pop_reply_batch(out: list) -> bytes:
    """Removes the first serialized replies of ``out`` (up to
    MAX_REPLY_BATCH_BYTES, at least one) and returns them as one
    CallReplyBatch. Replies that would take a batch of several over the
    message limit wait for the next batch: one large result never makes a
    message the host refuses, which would fail every call on the stream."""
    n, size = 0, 0
    cap = _max_message_bytes
    while n < len(out) and size < MAX_REPLY_BATCH_BYTES:
        framed = len(out[n]) + 6  # tag and length of the repeated field
        if n and size + framed > cap:
            break
        size += framed
        n += 1
    replies = out[:n]
    del out[:n]
    return _wire.reply_batch(replies)


class _CallStreamState:
    __slots__ = ("queue", "pending", "reader_done", "closed", "out", "flushing", "streams",
                 "finish")

    def __init__(self, finish=None) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        # Ends the stream once everything is answered (grpc.aio: the
        # handler's wait on `queue` returns; native: the server ends it).
        self.finish = finish or self._end_handler
        self.pending = 0
        self.reader_done = False
        self.closed = False
        # CallBatchStream: serialized replies not yet written; a write running.
        self.out: list = []
        self.flushing = False
        # Streaming calls running, by request id (a cancel request stops one).
        self.streams: dict = {}

    def _end_handler(self) -> None:
        self.queue.put_nowait(_SENTINEL_END)

    def abort(self) -> None:
        """The client went away: drop the unsent replies and end the stream."""
        self.out.clear()
        if not self.closed:
            self.closed = True
            self.finish()

    def maybe_finish(self) -> None:
        if (self.reader_done and self.pending == 0 and not self.closed and not self.out
                and not self.flushing):
            self.closed = True
            self.finish()


class NativeCalls:
    """CallBatchStream served by ``snakepit_bridge._native`` on a Unix socket
    of its own (``<socket>.calls``), instead of by grpc.aio.

    The native server hands over request messages as bytes when a byte on
    its notification socket wakes the loop; each batch is taken at once
    (``Servicer._take_batch``: inline calls answered right there) and the
    replies are sent without waiting for anything. grpc.aio needs a read and
    a write operation per call, each completing through its poller thread and
    a loop wake-up; this needs one wake-up. Same messages, same rules.
    """

    def __init__(self, servicer: Servicer, path: str) -> None:
        from . import _native

        self.s = servicer
        self.pb = servicer.pb
        # The call socket checks the worker's token exactly as the main socket
        # does: every RPC must carry it.
        self.server = _native.CallServer(path, servicer.token or None,
                                         max_message_bytes() + MESSAGE_HEADROOM_BYTES)
        self.address = "unix:" + path
        self.streams: dict = {}
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.server.fileno(), self._ready)

    def _open(self, sid: int):
        """A new stream's state and the ``put`` its tasks answer through."""
        server, streams = self.server, self.streams

        def finish() -> None:
            streams.pop(sid, None)
            self.s.call_streams.discard(st)
            server.end(sid)

        def put(msg) -> None:
            st.out.append(msg.SerializeToString())
            if not st.flushing:
                # Replies of tasks finishing in the same loop pass go together.
                st.flushing = True
                self.loop.call_soon(self._flush, sid, st)

        st = _CallStreamState(finish)
        streams[sid] = st, put
        self.s.call_streams.add(st)
        return st, put

    def _flush(self, sid: int, st: _CallStreamState) -> None:
        st.flushing = False
        out = st.out
        while out:
            if not self.server.send(sid, _pop_reply_batch(out)):
                st.abort()  # the client went away: nobody to answer
                break
        st.maybe_finish()

    def _ready(self) -> None:
        for sid, data in self.server.take():
            try:
                self._take(sid, data)
            except Exception:  # noqa: BLE001 - the rest must still be taken
                log.exception("native call stream %d: a message was not handled", sid)

    def _take(self, sid: int, data) -> None:
        st, put = self.streams.get(sid) or self._open(sid)
        if data is None:
            st.reader_done = True
            st.maybe_finish()
            return
        if st.closed:
            return
        try:
            batch = self.pb.CallBatch.FromString(data)
        except Exception as e:  # noqa: BLE001 - a client bug must not stop the worker
            log.warning("call stream %d: undecodable CallBatch dropped: %r", sid, e)
            return
        self.s._take_batch(batch, st, put)
        if st.out and not st.flushing:
            self._flush(sid, st)

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.server.fileno())
        finally:
            if not self.server.close():
                log.debug("native call server: a client kept its connection open")


# The longest Unix socket path: sun_path holds 108 bytes with the final NUL.
MAX_UNIX_PATH = 107


def start_native_calls(servicer: Servicer, listen: str):
    """NativeCalls on ``<socket>.calls`` when the worker listens on a Unix
    socket, else None: grpc.aio then serves every call, and the worker says
    why, once: a warning (not built, disabled, path too long, cannot listen),
    or at info on TCP, where it is by design. A stale ``<socket>.calls`` (a
    socket nobody listens on, left by a worker that was killed) is removed
    first."""
    if not listen.startswith("unix:"):
        log.info("native calls serve Unix sockets only: grpc.aio serves calls on %s", listen)
        return None
    path = listen[len("unix:"):] + ".calls"
    if os.environ.get("SNAKEPIT_NATIVE_CALLS") == "0":
        why = "disabled by SNAKEPIT_NATIVE_CALLS=0"
    elif len(os.fsencode(path)) > MAX_UNIX_PATH:
        why = (f"the call socket path {path} is {len(os.fsencode(path))} bytes, over the "
               f"{MAX_UNIX_PATH} of a Unix socket path: listen in a shorter directory")
    else:
        try:
            _remove_stale_socket(path)
            return NativeCalls(servicer, path)
        except ImportError as e:
            why = (f"snakepit_bridge._native is not built ({e}): install snakepit-bridge "
                   "from its wheel or sdist (pip install ./python), which builds it")
        except TypeError as e:
            why = (f"snakepit_bridge._native is older than this package ({e}): reinstall "
                   "snakepit-bridge (pip install ./python)")
        except OSError as e:
            why = f"cannot listen on {path}: {e}"
    log.warning("native call server not started, %s; grpc.aio serves calls (slower)", why)
    return None


def _remove_stale_socket(path: str) -> None:
    """Removes ``path`` when it is a Unix socket that refuses connections
    (its server is gone). Anything else is left for the bind to report."""
    import socket
    import stat

    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        log.info("removed the stale call socket %s", path)
    except OSError:
        pass
    finally:
        probe.close()


class Servicer:
    def __init__(self, pb, dispatcher: Dispatcher, opts, adapter_path: str) -> None:
        from ._wire import BatchEncoder

        self.pb = pb
        self.d = dispatcher
        self.opts = opts
        self.adapter_path = adapter_path
        self.token = opts.token or ""
        self.worker_id = opts.worker_id
        self.call_streams: set = set()
        self.tasks: set = set()
        self.telemetry_gen = 0
        self._unsent = 0
        self.telemetry_stop = asyncio.Event()
        self.telemetry_done = asyncio.Event()
        self.telemetry_done.set()
        self.encoder = BatchEncoder()
        self.batch_seq = 0
        # The native CallBatchStream server, if one runs (see NativeCalls).
        self.native = None

    @property
    def call_address(self) -> str:
        """Where CallBatchStream is served natively, or "" (Describe's
        ``call_address``, the ready line's ``calls``)."""
        return self.native.address if self.native is not None else ""

    # --- helpers ---------------------------------------------------------

    async def _auth(self, context) -> bool:
        if not self.token:
            return True
        got = ""
        for k, v in context.invocation_metadata() or ():
            if k == TOKEN_HEADER:
                got = v if isinstance(v, str) else v.decode("utf-8", "replace")
                break
        if got and hmac.compare_digest(got.encode(), self.token.encode()):
            return True
        import grpc

        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            f"missing or invalid {TOKEN_HEADER} metadata")
        return False

    @staticmethod
    def _md_value(context, key: str) -> str:
        for k, v in context.invocation_metadata() or ():
            if k == key:
                return v if isinstance(v, str) else v.decode("utf-8", "replace")
        return ""

    def _error_pb(self, f: ToolFailure):
        return self.pb.ToolError(type=f.type, message=f.message, traceback=f.tb)

    def _track(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- health ------------------------------------------------------------

    async def Ping(self, request, context):
        if not await self._auth(context):
            return None
        r = self.pb.PingResponse(message="pong: " + request.message)
        r.server_time.GetCurrentTime()
        return r

    async def Heartbeat(self, request, context):
        if not await self._auth(context):
            return None
        r = self.pb.HeartbeatResponse(session_valid=True)
        r.server_time.GetCurrentTime()
        return r

    async def Describe(self, request, context):
        if not await self._auth(context):
            return None
        tools = [
            self.pb.ToolInfo(name=t.spec.name, description=t.spec.description,
                             supports_streaming=t.spec.supports_streaming)
            for t in sorted(self.d.tools.values(), key=lambda t: t.spec.name)
        ]
        return self.pb.DescribeReply(
            worker_id=self.worker_id, pid=os.getpid(), protocol_version=PROTOCOL_VERSION,
            tools=tools, pool_name=self.opts.pool_name or "", adapter=self.adapter_path,
            call_address=self.call_address)

    # --- unary tool calls --------------------------------------------------

    def _legacy_args(self, request) -> bytes:
        if request.args_json or not request.parameters:
            return request.args_json
        args = {}
        for k, anyv in request.parameters.items():
            raw = anyv.value
            try:
                args[k] = json.loads(raw)
            except ValueError:
                args[k] = raw.decode("utf-8", "replace")
        return json.dumps(args).encode()

    def _unary_ctx(self, request, context):
        cid = request.correlation_id or self._md_value(context, telemetry.CORRELATION_HEADER)
        tp = request.traceparent or self._md_value(context, telemetry.TRACEPARENT_HEADER)
        return cid, tp

    async def ExecuteTool(self, request, context):
        if not await self._auth(context):
            return None
        cid, tp = self._unary_ctx(request, context)
        t0 = time.monotonic()
        ok, payload = await self.d.call(
            request.tool_name, self._legacy_args(request), request.binary_parameters, cid, tp,
            request.timeout_ms)
        ms = int((time.monotonic() - t0) * 1000)
        md = {"worker_id": self.worker_id}
        if ok:
            rj, bins = payload
            return self.pb.ExecuteToolResponse(
                success=True, result_json=rj, binary_results=bins, execution_time_ms=ms,
                metadata=md)
        return self.pb.ExecuteToolResponse(
            success=False, error_message=payload.message, error=self._error_pb(payload),
            execution_time_ms=ms, metadata=md)

    async def ExecuteStreamingTool(self, request, context):
        if not await self._auth(context):
            return
        cid, tp = self._unary_ctx(request, context)
        q: asyncio.Queue = asyncio.Queue()

        async def sink(seq, data):
            await q.put(self.pb.ToolChunk(chunk_id=str(seq), data=data, seq=seq))

        async def run():
            ok, payload = await self.d.stream(
                request.tool_name, self._legacy_args(request), request.binary_parameters, cid,
                tp, request.timeout_ms, sink)
            if ok:
                await q.put(self.pb.ToolChunk(chunk_id=str(payload), is_final=True,
                                              seq=payload))
            else:
                await q.put(self.pb.ToolChunk(is_final=True, error=self._error_pb(payload),
                                              metadata={"error": payload.message}))
            await q.put(_SENTINEL_END)

        task = asyncio.ensure_future(run())
        try:
            while True:
                item = await q.get()
                if item is _SENTINEL_END:
                    break
                yield item
        finally:
            if not task.done():
                task.cancel()

    # --- CallStream ----------------------------------------------------------

    async def CallStream(self, request_iterator, context):
        if not await self._auth(context):
            return
        st = _CallStreamState()
        self.call_streams.add(st)
        pb = self.pb

        async def reader():
            try:
                async for req in request_iterator:
                    self._dispatch(req, st)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the client went away
                log.debug("call stream reader ended: %r", e)
            finally:
                st.reader_done = True
                st.maybe_finish()

        rt = asyncio.ensure_future(reader())
        try:
            q = st.queue
            while True:
                item = await q.get()
                if item is _SENTINEL_END:
                    break
                yield item
        finally:
            self.call_streams.discard(st)
            if not rt.done():
                rt.cancel()
        del pb

    async def CallBatchStream(self, request_iterator, context):
        """CallStream with batched messages.

        Inline calls are answered while reading (no task per call); other
        calls run as tasks. Serialized replies collect in ``st.out``; one
        writer task at a time sends everything waiting as one CallReplyBatch,
        so replies that arrive during a write go together in the next one.
        """
        if not await self._auth(context):
            return
        st = _CallStreamState()
        self.call_streams.add(st)
        out = st.out
        write = context.write

        async def flush():
            try:
                while out:
                    await write(_pop_reply_batch(out))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the client went away
                log.debug("call batch stream write failed: %r", e)
                st.abort()
            finally:
                st.flushing = False
                st.maybe_finish()

        def put(msg) -> None:
            out.append(msg.SerializeToString())
            if not st.flushing:
                st.flushing = True
                self._track(flush())

        async def reader():
            try:
                async for batch in request_iterator:
                    self._take_batch(batch, st, put)
                    if out and not st.flushing:
                        st.flushing = True
                        if len(out) == 1 and not st.pending:
                            # A lone reply (one call at a time) is written
                            # here, not by a new task: one loop pass fewer.
                            await flush()
                        else:
                            # Under load, writing overlaps reading the next batch.
                            self._track(flush())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the client went away
                log.debug("call batch stream reader ended: %r", e)
            finally:
                st.reader_done = True
                st.maybe_finish()

        rt = asyncio.ensure_future(reader())
        try:
            await st.queue.get()  # _SENTINEL_END: all answered, or closing
            # Closing: replies already computed still go out (bounded wait).
            deadline = time.monotonic() + 1.0
            while (out or st.flushing) and time.monotonic() < deadline:
                if st.flushing:
                    await asyncio.sleep(0.001)
                else:
                    st.flushing = True
                    await flush()
        finally:
            self.call_streams.discard(st)
            if not rt.done():
                rt.cancel()

    def _take_batch(self, batch, st: _CallStreamState, put) -> None:
        """Takes one CallBatch: inline calls are answered into ``st.out`` now,
        the others start as tasks that answer through ``put``; a cancel
        request stops a streaming call."""
        d = self.d
        tools = d.tools
        out = st.out
        for req in batch.calls:
            if req.cancel:
                running = st.streams.pop(req.request_id, None)
                if running is not None:
                    running.cancel()
                continue
            if d.draining:
                out.append(_wire.reply_error(
                    req.request_id, "Unavailable", "worker is shutting down", ""))
                continue
            t = tools.get(req.tool_name)
            if t is not None and t.spec.inline and not req.stream \
                    and not t.spec.supports_streaming:
                try:
                    out.append(d.call_inline_wire(t, req))
                except BaseException as e:  # noqa: BLE001 - must always answer
                    log.exception("internal error running %s", req.tool_name)
                    out.append(_wire.reply_error(
                        req.request_id, "InternalError", _clip(repr(e), MAX_ERROR_MESSAGE_CHARS),
                        _clip(traceback.format_exc(), MAX_ERROR_TRACEBACK_CHARS)))
                continue
            st.pending += 1
            task = self._track(self._run_call(req, st, put))
            if req.stream:
                st.streams[req.request_id] = task

    def _dispatch(self, req, st: _CallStreamState) -> None:
        pb = self.pb
        rid = req.request_id
        if self.d.draining:
            st.queue.put_nowait(pb.CallReply(request_id=rid, error=pb.ToolError(
                type="Unavailable", message="worker is shutting down")))
            return
        if not req.stream and self.d.is_inline(req.tool_name):
            ok, payload = self.d.call_inline(req.tool_name, req.args_json,
                                             req.binary_parameters, req.correlation_id,
                                             req.traceparent)
            st.queue.put_nowait(self._reply(rid, ok, payload))
            return
        st.pending += 1
        self._track(self._run_call(req, st))

    def _reply(self, rid, ok, payload):
        pb = self.pb
        if ok:
            rj, bins = payload
            return pb.CallReply(request_id=rid, result=pb.ToolResult(
                result_json=rj, binary_results=bins))
        return pb.CallReply(request_id=rid, error=self._error_pb(payload))

    async def _run_call(self, req, st: _CallStreamState, put=None) -> None:
        pb = self.pb
        rid = req.request_id
        if put is None:
            put = st.queue.put_nowait
        try:
            if req.stream:

                async def sink(seq, data):
                    put(pb.CallReply(request_id=rid, chunk=pb.CallChunk(data_json=data,
                                                                         seq=seq)))

                ok, payload = await self.d.stream(
                    req.tool_name, req.args_json, req.binary_parameters, req.correlation_id,
                    req.traceparent, req.timeout_ms, sink)
                if ok:
                    put(pb.CallReply(request_id=rid, end=pb.StreamEnd(chunks=payload)))
                else:
                    put(pb.CallReply(request_id=rid, error=self._error_pb(payload)))
            else:
                ok, payload = await self.d.call(
                    req.tool_name, req.args_json, req.binary_parameters, req.correlation_id,
                    req.traceparent, req.timeout_ms)
                put(self._reply(rid, ok, payload))
        except asyncio.CancelledError:
            if st.streams.get(rid) is not None or not req.stream:
                raise  # not a cancel request: the stream is closing
            # The caller cancelled this streaming call: no more replies.
        except BaseException as e:  # noqa: BLE001 - must always answer
            log.exception("internal error running %s", req.tool_name)
            put(pb.CallReply(request_id=rid, error=pb.ToolError(
                type="InternalError", message=_clip(repr(e), MAX_ERROR_MESSAGE_CHARS),
                traceback=_clip(traceback.format_exc(), MAX_ERROR_TRACEBACK_CHARS))))
        finally:
            st.streams.pop(rid, None)
            st.pending -= 1
            st.maybe_finish()

    def close_call_streams(self) -> None:
        for st in list(self.call_streams):
            if not st.closed:
                st.closed = True
                st.finish()

    # --- telemetry -----------------------------------------------------------

    def _drops(self, encode_errors: int):
        if encode_errors:
            tel.add_encode_errors(encode_errors)
        return tel.drop_counts()

    def _pending(self, leftover: int) -> int:
        # TelemetryBatch.pending, kept for note_batch_written once sent.
        self._unsent = tel.pending(leftover)
        return self._unsent

    async def _telemetry_common(self, request_iterator, context):
        """Attach as the one telemetry stream; returns (generation, reader task).

        The host sends its current policy first, and counts the stream open
        when the first batch (with the response headers) arrives; calls can
        follow at once, on another connection (the native call socket). So
        the first control is applied here, before the first batch: no call
        made after the host connected runs under the worker's own defaults.
        """
        self.telemetry_gen += 1
        gen = self.telemetry_gen
        controls = request_iterator.__aiter__()
        try:
            tel.apply_control(await controls.__anext__())
        except StopAsyncIteration:
            pass
        except Exception as e:  # noqa: BLE001 - the reader below sees it too
            log.debug("telemetry stream ended before its first control: %r", e)

        async def reader():
            try:
                async for ctl in controls:
                    tel.apply_control(ctl)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                log.debug("telemetry control reader ended: %r", e)

        return gen, asyncio.ensure_future(reader())

    async def TelemetryStream(self, request_iterator, context):
        if not await self._auth(context):
            return
        gen, rt = await self._telemetry_common(request_iterator, context)
        self.telemetry_done.clear()
        tel.attach_stream()
        handler = worker_logs.handler()
        enc = self.encoder
        sleep = 0.0
        last_sent = 0.0
        last_version = -1
        leftover: list = []
        try:
            while gen == self.telemetry_gen:
                stopping = self.telemetry_stop.is_set()
                if leftover:
                    events = leftover + tel.drain(BATCH_EVENTS - len(leftover))
                else:
                    events = tel.drain(BATCH_EVENTS)
                logs = handler.drain(1000) if handler else []
                version = tel.policy().version
                now = time.monotonic()
                if events or logs or now - last_sent >= 1.0 or version != last_version:
                    self.batch_seq += 1
                    data, _ = enc.batch(events, self._drops, logs, version,
                                        self.worker_id, self.batch_seq,
                                        max_bytes=enc.MAX_BATCH_BYTES,
                                        pending=self._pending)
                    leftover = enc.leftover
                    last_sent = now
                    last_version = version
                    unsent = self._unsent
                    yield data
                    tel.note_batch_written(unsent)
                if stopping and not events and not logs and not leftover:
                    break
                if len(events) >= BATCH_EVENTS or leftover:
                    sleep = 0.0
                elif events or logs:
                    sleep = 0.001
                else:
                    sleep = min(max(sleep * 2, 0.001), 0.02)
                if stopping:
                    sleep = 0.0
                await asyncio.sleep(sleep)
        finally:
            # Events drained for a batch that was never sent wait for the next stream.
            tel.requeue(leftover)
            tel.detach_stream()
            rt.cancel()
            if gen == self.telemetry_gen:
                self.telemetry_done.set()

    async def StreamTelemetry(self, request_iterator, context):
        if not await self._auth(context):
            return
        gen, rt = await self._telemetry_common(request_iterator, context)
        self.telemetry_done.clear()
        enc = self.encoder
        sleep = 0.0
        tel.attach_stream()
        try:
            while gen == self.telemetry_gen:
                stopping = self.telemetry_stop.is_set()
                events = tel.drain(1000)
                bodies, errors = enc.event_bodies(events)
                for body in bodies:
                    yield body
                if errors:
                    tel.add_encode_errors(errors)
                if stopping and not events:
                    break
                sleep = 0.0 if len(events) >= 1000 else (
                    0.001 if events else min(max(sleep * 2, 0.001), 0.02))
                await asyncio.sleep(0.0 if stopping else sleep)
        finally:
            tel.detach_stream()
            rt.cancel()
            if gen == self.telemetry_gen:
                self.telemetry_done.set()


def _ser(msg) -> bytes:
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


def build_handler(servicer: Servicer, pb):
    import grpc

    def uu(fn, req):
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=req.FromString, response_serializer=_ser)

    def us(fn, req):
        return grpc.unary_stream_rpc_method_handler(
            fn, request_deserializer=req.FromString, response_serializer=_ser)

    def ss(fn, req):
        return grpc.stream_stream_rpc_method_handler(
            fn, request_deserializer=req.FromString, response_serializer=_ser)

    s = servicer
    handlers = {
        "Ping": uu(s.Ping, pb.PingRequest),
        "Heartbeat": uu(s.Heartbeat, pb.HeartbeatRequest),
        "Describe": uu(s.Describe, pb.DescribeRequest),
        "ExecuteTool": uu(s.ExecuteTool, pb.ExecuteToolRequest),
        "ExecuteStreamingTool": us(s.ExecuteStreamingTool, pb.ExecuteToolRequest),
        "CallStream": ss(s.CallStream, pb.CallRequest),
        "CallBatchStream": ss(s.CallBatchStream, pb.CallBatch),
        "TelemetryStream": ss(s.TelemetryStream, pb.TelemetryControl),
        "StreamTelemetry": ss(s.StreamTelemetry, pb.TelemetryControl),
    }
    return grpc.method_handlers_generic_handler("snakepit.bridge.BridgeService", handlers)


# --------------------------------------------------------------------------
# Resource sampling
# --------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_memory() -> Optional[Dict[str, int]]:
    try:
        with open("/proc/self/statm", "rb") as f:
            size, resident = f.read().split()[:2]
        return {"rss_bytes": int(resident) * _PAGE, "vms_bytes": int(size) * _PAGE}
    except (OSError, ValueError):
        return None


def read_cpu_ticks() -> Optional[int]:
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None


async def resource_sampler(interval: float, worker_id: str) -> None:
    md = {"worker_id": worker_id}
    last_ticks = read_cpu_ticks()
    last_t = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        mem = read_memory()
        if mem is not None:
            telemetry.emit("memory.sampled", mem, md)
        ticks = read_cpu_ticks()
        now = time.monotonic()
        if ticks is not None and last_ticks is not None and now > last_t:
            pct = (ticks - last_ticks) / _TICKS / (now - last_t) * 100.0
            telemetry.emit("cpu.sampled", {"cpu_percent": round(pct, 3)}, md)
        last_ticks, last_t = ticks, now


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m snakepit_bridge.worker",
                                description="snakepit-rs Python worker")
    p.add_argument("--adapter", required=True, help="package.module:Class")
    p.add_argument("--listen", required=True, help="unix:PATH or HOST:PORT (port 0: any)")
    p.add_argument("--worker-id", required=True)
    p.add_argument("--token", default=os.environ.get("SNAKEPIT_TOKEN") or None,
                   help="require metadata x-snakepit-token on every RPC, on every "
                        "socket. Prefer $SNAKEPIT_TOKEN: a command line is readable "
                        "by every local user (/proc/PID/cmdline)")
    p.add_argument(INSECURE_FLAG, action="store_true",
                   default=os.environ.get(INSECURE_ENV) == "1",
                   help="serve a non-loopback TCP address without a token: anyone "
                        f"who reaches the port can run every tool (or ${INSECURE_ENV}=1)")
    p.add_argument("--pool-name", default="")
    p.add_argument("--telemetry-interval-s", type=float, default=5.0,
                   help="resource sampling interval (0 disables)")
    p.add_argument("--telemetry-buffer", type=int,
                   default=int(os.environ.get("SNAKEPIT_TELEMETRY_BUFFER", "10000")),
                   help="max buffered events before drops (default 10000 or "
                        "$SNAKEPIT_TELEMETRY_BUFFER)")
    p.add_argument("--log-buffer", type=int, default=10_000)
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "none"],
                   help="initial root log level (the host's policy may change it)")
    p.add_argument("--stderr-log-level", default="warning",
                   choices=["debug", "info", "warning", "error", "none"])
    p.add_argument("--grace-s", type=float, default=5.0,
                   help="on SIGTERM, time calls in flight get to finish")
    p.add_argument("--threads", type=int, default=min(32, (os.cpu_count() or 1) + 4),
                   help="thread pool size for sync tools")
    p.add_argument("--max-message-bytes", type=_message_limit,
                   default=os.environ.get("SNAKEPIT_MAX_MESSAGE_BYTES",
                                          str(DEFAULT_MAX_MESSAGE_BYTES)),
                   help="largest tool result in bytes (JSON plus binary results); a larger "
                        "one is that call's ResultTooLarge error. Set it as the host's "
                        "max_message_bytes (default 64 MiB or $SNAKEPIT_MAX_MESSAGE_BYTES)")
    p.add_argument("--watch-stdin", action="store_true", help="exit when stdin hits EOF")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this pid is gone")
    return p.parse_args(argv)


# The opt-out that lets a worker serve a non-loopback address without a token.
INSECURE_FLAG = "--insecure-no-token-on-network"
INSECURE_ENV = "SNAKEPIT_INSECURE_NO_TOKEN"


def is_loopback_listen(listen: str) -> bool:
    """Is ``listen`` (``unix:PATH`` or ``HOST:PORT``) reachable only from this
    machine? Unix sockets and loopback addresses (``127.0.0.0/8``, ``::1``,
    ``localhost``) are; any other host, and the wildcards ``0.0.0.0`` and
    ``[::]``, are not."""
    if listen.startswith("unix:"):
        return True
    host = listen.rsplit(":", 1)[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(listen: str, token, insecure: bool):
    """The reason a worker must not start, or None. A worker reachable from
    the network without a token would run tools for anyone."""
    if token or is_loopback_listen(listen):
        return None
    if insecure:
        log.warning("worker listens on %s WITHOUT A TOKEN (%s): anyone who reaches "
                    "this port can run every tool", listen, INSECURE_FLAG)
        return None
    return (f"refusing to listen on {listen!r} without a token: it is reachable from "
            f"the network and anyone could run every tool. Set SNAKEPIT_TOKEN (the "
            f"host sends it as x-snakepit-token), listen on a loopback address or a "
            f"unix: socket, or pass {INSECURE_FLAG} to accept the risk")


def _message_limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes >= 1024")
    return n


def _redirect_stdout():
    """Keep the real stdout for the readiness line; send everything else to stderr."""
    sys.stdout.flush()
    ready_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(ready_fd, "w", buffering=1, encoding="utf-8")


def _parent_alive(pid: int) -> bool:
    if os.getppid() != pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def serve(opts, ready_out) -> int:
    import grpc

    from .generated import snakepit_bridge_pb2 as pb

    refused = check_exposure(opts.listen, opts.token, opts.insecure_no_token_on_network)
    if refused:
        sys.stderr.write(f"SNAKEPIT_LISTEN_ERROR: {refused}\n")
        sys.stderr.flush()
        return 1

    try:
        adapter, tools = load_adapter(opts.adapter)
    except AdapterError as e:
        sys.stderr.write(f"SNAKEPIT_ADAPTER_ERROR: {e}\n")
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        return EXIT_ADAPTER_ERROR

    dispatcher = Dispatcher(tools, opts.worker_id, opts.threads)
    servicer = Servicer(pb, dispatcher, opts, opts.adapter)
    set_max_message_bytes(opts.max_message_bytes)
    wire_limit = opts.max_message_bytes + MESSAGE_HEADROOM_BYTES
    options = [
        ("grpc.max_receive_message_length", wire_limit),
        ("grpc.max_send_message_length", wire_limit),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((build_handler(servicer, pb),))
    listen = opts.listen
    try:
        port = server.add_insecure_port(listen)
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"SNAKEPIT_LISTEN_ERROR: cannot listen on {listen!r}: {e}\n")
        return 1
    if not listen.startswith("unix:") and listen.rsplit(":", 1)[-1] == "0":
        listen = f"{listen.rsplit(':', 1)[0]}:{port}"
    await server.start()
    servicer.native = start_native_calls(servicer, listen)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason = {"why": ""}

    def request_stop(why: str) -> None:
        if not stop.is_set():
            reason["why"] = why
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, request_stop, signal.Signals(sig).name)
        except (NotImplementedError, RuntimeError):
            pass

    if opts.watch_stdin:
        def watch_stdin():
            try:
                while True:
                    data = os.read(0, 65536)
                    if not data:
                        break
            except OSError:
                pass
            loop.call_soon_threadsafe(request_stop, "stdin EOF")

        threading.Thread(target=watch_stdin, name="snakepit-stdin", daemon=True).start()

    bg = []
    if opts.parent_pid:
        async def watch_parent():
            while _parent_alive(opts.parent_pid):
                await asyncio.sleep(0.25)
            request_stop(f"parent {opts.parent_pid} gone")

        bg.append(asyncio.ensure_future(watch_parent()))
    if opts.telemetry_interval_s and opts.telemetry_interval_s > 0:
        bg.append(asyncio.ensure_future(
            resource_sampler(opts.telemetry_interval_s, opts.worker_id)))

    loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
    gc_mode = _tune_gc()
    ready = {"worker_id": opts.worker_id, "pid": os.getpid(), "listen": listen,
             "protocol": PROTOCOL_VERSION, "event_loop": loop_kind, "gc": gc_mode,
             "calls": servicer.call_address}
    ready_out.write("SNAKEPIT_READY " + json.dumps(ready, separators=(",", ":")) + "\n")
    ready_out.flush()
    log.info("worker %s ready on %s (adapter %s, %d tools)", opts.worker_id, listen,
             opts.adapter, len(tools))

    await stop.wait()
    log.info("worker %s stopping: %s", opts.worker_id, reason["why"])
    # Graceful stop: refuse new calls, let calls in flight finish within the grace
    # period, flush telemetry, then close the streams and the server.
    dispatcher.draining = True
    try:
        await asyncio.wait_for(dispatcher.idle.wait(), opts.grace_s)
    except TimeoutError:
        log.warning("%d calls still running after %.1fs grace", dispatcher.inflight,
                    opts.grace_s)
    servicer.close_call_streams()
    servicer.telemetry_stop.set()
    try:
        await asyncio.wait_for(servicer.telemetry_done.wait(), 1.0)
    except TimeoutError:
        pass
    for t in bg:
        t.cancel()
    if servicer.native is not None:
        servicer.native.close()
    await server.stop(0.5)
    dispatcher.pool.shutdown(wait=False, cancel_futures=True)
    del adapter
    return 0


# Most events in one TelemetryBatch (TelemetryStream); a full batch is
# followed by the next at once.
BATCH_EVENTS = 1000

# Cyclic-GC thresholds of a worker (generation 0, 1, 2); see _tune_gc.
GC_THRESHOLDS = (50_000, 20, 100)


def _tune_gc() -> str:
    """Unless SNAKEPIT_GC=default: freeze the heap loaded so far and raise the
    cyclic GC thresholds to GC_THRESHOLDS. Returns "tuned" or "default".

    Every buffered telemetry event is a GC-tracked tuple (it holds the
    measurement and metadata dicts), so during a burst the default
    thresholds (700, 10, 10) run full collections over a growing buffer
    again and again: about half of the cost of ``emit``. Frozen objects
    (the adapter, its libraries, grpc) are never scanned again; cyclic
    garbage is still collected, every 50,000 allocations net instead of
    every 700.
    """
    if os.environ.get("SNAKEPIT_GC", "").lower() == "default":
        return "default"
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return "tuned"


def _use_uvloop() -> bool:
    """uvloop runs the event loop when installed, unless SNAKEPIT_EVENT_LOOP=asyncio."""
    if os.environ.get("SNAKEPIT_EVENT_LOOP", "").lower() == "asyncio":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    opts = parse_args(argv)
    ready_out = _redirect_stdout()
    tel.set_buffer_capacity(opts.telemetry_buffer)
    worker_logs.install(stderr_level=opts.stderr_log_level, capacity=opts.log_buffer,
                        root_level=opts.log_level)
    try:
        if _use_uvloop():
            import uvloop

            rc = uvloop.run(serve(opts, ready_out))
        else:
            rc = asyncio.run(serve(opts, ready_out))
    except KeyboardInterrupt:
        rc = 0
    sys.stderr.flush()
    # Tool threads may still be running after the grace period: do not wait for them.
    os._exit(rc)


if __name__ == "__main__":
    main()
