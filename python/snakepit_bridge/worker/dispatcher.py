"""The Dispatcher: runs a call's tool with the call's telemetry (call and
tool spans), its correlation and trace context, its timeout, and error
capture: every outcome is a reply (ok, payload), never an escaped exception.
The transports (``transport/``) decode requests and encode replies around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional

from .. import _wire, telemetry
from .. import session as _session
from .._wire import CALL_END, CALL_START, TOOL_END, TOOL_START
from ..base_adapter import BoundTool
from ..telemetry import _worker_api as tel
from .codec import ToolFailure, decode_args, encode_result, raised
from .own_events import error_occurred, result_size

# The RPC that carries calls unless the caller says otherwise.
RPC_DEFAULT = "CallBatchStream"


def _tool_md(name: str) -> dict:
    """The metadata of a tool.execution span."""
    return {"tool": name}


def _failed(tool: str, e: BaseException) -> ToolFailure:
    """The call's error for an exception ``tool`` raised, reported as
    ``error.occurred``."""
    error_occurred(tool, e)
    return raised(e)


def _encoded(tool: str, value):
    """A tool's result encoded (``encode_result``), its size reported as
    ``tool.result_size``."""
    encoded = encode_result(value)
    result_size(tool, encoded[0], encoded[1])
    return encoded


def _run_sync_tool(fn, kwargs, md):
    try:
        with telemetry.span("tool.execution", md):
            return fn(**kwargs)
    except Exception:
        raise
    except BaseException as e:  # noqa: BLE001 - a tool's SystemExit is its error
        raise _failed(md["tool"], e) from e


async def _run_async_tool(fn, kwargs, md):
    try:
        with telemetry.span("tool.execution", md):
            return await fn(**kwargs)
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as e:  # noqa: BLE001 - raised in a task it would stop the loop
        raise _failed(md["tool"], e) from e


@contextlib.contextmanager
def _tool_outcome(tool: str, cancellable: bool = False):
    """Every way ``tool``'s code ends becomes a ToolFailure (a reply), never
    the worker's exit: a BaseException of any kind is the call's error. With
    ``cancellable``, a CancelledError the worker itself caused (a cancel or a
    deadline) goes on as a cancellation."""
    try:
        yield
    except ToolFailure:
        raise
    except asyncio.CancelledError as e:
        if cancellable and _own_cancel():
            raise
        raise _failed(tool, e) from e
    except BaseException as e:  # noqa: BLE001 - every outcome is a reply
        raise _failed(tool, e) from e


async def _thread_done(fut) -> None:
    """Waits until a tool's thread has returned, whatever it returned, even
    if the waiting task is cancelled meanwhile (a cancel request arriving
    after a timeout): the thread's end is what the call's final reply
    confirms."""
    while not fut.done():
        try:
            await asyncio.wait((fut,))
        except asyncio.CancelledError:
            continue
    if not fut.cancelled():
        fut.exception()  # retrieved: never logged as unhandled


def _own_cancel() -> bool:
    """Is the current task being cancelled (rather than a tool having raised
    CancelledError by itself)?"""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return task is None or cancelling is None or cancelling() > 0


_time_ns = time.time_ns
_monotonic_ns = time.monotonic_ns
_getrandbits = random.getrandbits
_span_set = tel.span_var.set
_span_reset = tel.span_var.reset
# CallTelemetry.emit when the policy keeps every call event: with the tool's
# events, or (the tool did not run) the call's only.
_EMIT_ALL = CALL_START | CALL_END | TOOL_START | TOOL_END
_EMIT_CALL = CALL_START | CALL_END


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

    def _call_start(self, name, cid, traceparent, rpc):
        tokens = tel.enter_call_context(cid, traceparent)
        md = {"command": name, "rpc_method": rpc, "worker_id": self.worker_id}
        sid = _session.get_session_id()
        if sid is not None:
            md["session_id"] = sid
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

    def call_inline(self, name, args_json, binary, cid, traceparent, rpc=RPC_DEFAULT):
        """Run an inline (trivial, sync) tool right here. Returns (ok, payload)."""
        self._begin()
        tokens, md, t0 = self._call_start(name, cid, traceparent, rpc)
        failure = None
        try:
            t = self.lookup(name)
            kwargs = decode_args(args_json, binary)
            with _tool_outcome(name):
                value = _run_sync_tool(t.fn, kwargs, _tool_md(name))
            return True, _encoded(name, value)
        except ToolFailure as f:
            failure = f
            return False, f
        finally:
            self._call_end(tokens, md, t0, failure)
            self._end()

    def call_inline_wire(self, t: BoundTool, req, binary=None) -> bytes:
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
            kwargs = decode_args(req.args_json,
                                 req.binary_parameters if binary is None else binary)
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
                raise _failed(t.spec.name, e) from e
            finally:
                _span_reset(token)
            # The result's size: the host emits tool.result_size from the reply.
            rj, bins = encode_result(value)
        except ToolFailure as f:
            failure = f
        call_dur = _monotonic_ns() - m0
        tel.exit_call_context(tokens)
        if tel.call_events_all_kept():
            emit = _EMIT_ALL if tool_start else _EMIT_CALL
        else:
            kept = tel.span_event_kept
            emit = CALL_START if kept("call.start", cid, call_sid) else 0
            if tool_start:
                if kept("tool.execution.start", cid, tool_sid):
                    emit |= TOOL_START
                if kept("tool.execution.exception" if tool_err_type else "tool.execution.stop",
                        cid, tool_sid):
                    emit |= TOOL_END
            if kept("call.stop" if failure is None else "call.exception", cid, call_sid):
                emit |= CALL_END
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

    async def call(self, name, args_json, binary, cid, traceparent, timeout_ms,
                   rpc=RPC_DEFAULT):
        """Run a non-streaming tool. Returns (True, (json, binaries)) or (False, ToolFailure).

        ``rpc`` names the RPC the call came on (``rpc_method`` of its events)."""
        self._begin()
        tokens, md, t0 = self._call_start(name, cid, traceparent, rpc)
        failure = None
        try:
            self.check_accepting()
            t = self.lookup(name)
            kwargs = decode_args(args_json, binary)
            tmd = _tool_md(name)
            with _tool_outcome(name, cancellable=True):
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
            return True, _encoded(name, value)
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

    async def stream(self, name, args_json, binary, cid, traceparent, timeout_ms, sink,
                     rpc=RPC_DEFAULT):
        """Run a streaming tool; ``await sink(seq, json_bytes)`` per chunk.

        Returns (True, chunk_count) or (False, ToolFailure).
        """
        self._begin()
        tokens, md, t0 = self._call_start(name, cid, traceparent, rpc)
        failure = None
        seq = 0
        deadline = time.monotonic() + timeout_ms / 1000.0 if timeout_ms else None
        try:
            self.check_accepting()
            t = self.lookup(name)
            kwargs = decode_args(args_json, binary)
            tmd = _tool_md(name)
            with _tool_outcome(name, cancellable=True):
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
                f = _failed(name, e)
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
                # The generator has stopped only when its thread returns (it
                # sees ``stop`` after its current item, then closes the
                # generator). The call's final reply (Timeout, or the
                # Cancelled confirmation of a cancel request) waits for that:
                # the host counts a call unconfirmed well after its deadline
                # as a tool the worker could not stop (a stuck worker).
                await _thread_done(fut)
