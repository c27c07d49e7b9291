"""The BridgeService servicer of the RPCs the host uses (Ping, Describe,
CallBatchStream, TelemetryStream), with the compatibility RPCs of
``compat``; its method table (``rpc_methods``), which the native server
serves on a Unix socket, and the grpc.aio handler that serves it on TCP.
Every RPC checks the worker's token first (the native server checks it
before the RPC reaches Python)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback

from ... import PROTOCOL_VERSION, _wire
from ... import logs as worker_logs
from ... import session as _session
from ...telemetry import _worker_api as tel
from .. import shm
from ..codec import MAX_ERROR_MESSAGE_CHARS, MAX_ERROR_TRACEBACK_CHARS, ToolFailure, clip
from ..dispatcher import Dispatcher
from .call_state import CallStreamState, pop_reply_batch, serialized
from .compat import CompatRpcs, compat_handlers
from .native import NativeContext

log = logging.getLogger("snakepit_bridge.worker")

TOKEN_HEADER = "x-snakepit-token"
# Most events in one TelemetryBatch (TelemetryStream); a full batch is
# followed by the next at once.
BATCH_EVENTS = 1000


class Servicer(CompatRpcs):
    """BridgeService, for grpc.aio and the native server (``native``, when it
    runs: see ``transport.native``); the methods take grpc.aio's arguments
    (a request, or an iterator of them, and a context)."""

    def __init__(self, pb, dispatcher: Dispatcher, opts, adapter_path: str) -> None:
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
        self.encoder = _wire.BatchEncoder()
        self.batch_seq = 0
        # The native server, if one runs (see transport.native.NativeServer).
        self.native = None

    @property
    def call_address(self) -> str:
        """Where CallBatchStream is served natively, or "" (Describe's
        ``call_address``, the ready line's ``calls``)."""
        return self.native.address if self.native is not None else ""

    # --- helpers ---------------------------------------------------------

    async def _auth(self, context) -> bool:
        # The native server checked the token before the RPC reached Python.
        if not self.token or isinstance(context, NativeContext):
            return True
        got = ""
        for k, v in context.invocation_metadata() or ():
            if k == TOKEN_HEADER:
                got = v if isinstance(v, str) else v.decode("utf-8", "replace")
                break
        # hmac (and hashlib behind it) is loaded at the first RPC, not at start.
        import hmac

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

    # --- CallBatchStream -----------------------------------------------------

    async def CallBatchStream(self, request_iterator, context):
        """The host's call stream: CallBatch in, CallReplyBatch out.

        Inline calls are answered while reading (no task per call); other
        calls run as tasks. Serialized replies collect in ``st.out``; one
        writer task at a time sends everything waiting as one CallReplyBatch,
        so replies that arrive during a write go together in the next one.
        """
        if not await self._auth(context):
            return
        st = CallStreamState()
        self.call_streams.add(st)
        out = st.out
        write = context.write

        async def flush():
            try:
                while out:
                    await write(pop_reply_batch(out))
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
            await st.queue.get()  # SENTINEL_END: all answered, or closing
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

    def _take_batch(self, batch, st: CallStreamState, put) -> None:
        """Takes one CallBatch: inline calls are answered into ``st.out`` now,
        the others start as tasks that answer through ``put``; a cancel
        request stops a streaming call."""
        d = self.d
        tools = d.tools
        out = st.out
        # Each call's session is current while it runs (a task copies it),
        # and so is its host's shared-memory offer.
        sess_tok = offer_tok = None
        for req in batch.calls:
            sess = req.session_id or None
            if sess != _session.get_session_id():
                tok = _session.enter(sess)
                sess_tok = sess_tok or tok
            if req.cancel:
                running = st.streams.pop(req.request_id, None)
                if running is not None:
                    # After the task's first step (its request may be in this
                    # same batch): a task cancelled before it starts would
                    # end without running its handler, so without its reply.
                    asyncio.get_running_loop().call_soon(running.cancel)
                continue
            if req.shm_release:
                shm.results.release(req.shm_release)
                continue
            binary = req.binary_parameters
            if req.shm_min_bytes:
                # The host is local: large results may go in shared memory,
                # and arguments may come in it.
                o = (req.shm_min_bytes, req.shm_max_bytes)
                if shm.offer.get() != o:
                    tok = shm.offer.set(o)
                    offer_tok = offer_tok or tok
                if req.shm_parameters:
                    try:
                        binary = dict(binary)
                        binary.update(shm.open_arguments(req.shm_parameters))
                    except shm.ShmRefused as e:
                        out.append(_wire.reply_error(
                            req.request_id, "SharedMemoryError", str(e), ""))
                        continue
            if d.draining:
                out.append(_wire.reply_error(
                    req.request_id, "Unavailable", "worker is shutting down", ""))
                continue
            t = tools.get(req.tool_name)
            if t is not None and t.spec.inline and not req.stream \
                    and not t.spec.supports_streaming:
                try:
                    out.append(d.call_inline_wire(t, req, binary))
                except BaseException as e:  # noqa: BLE001 - must always answer
                    log.exception("internal error running %s", req.tool_name)
                    out.append(_wire.reply_error(
                        req.request_id, "InternalError", clip(repr(e), MAX_ERROR_MESSAGE_CHARS),
                        clip(traceback.format_exc(), MAX_ERROR_TRACEBACK_CHARS)))
                continue
            st.pending += 1
            task = self._track(self._run_call(req, st, put, binary))
            if req.stream:
                st.streams[req.request_id] = task
        if sess_tok is not None:
            _session.leave(sess_tok)
        if offer_tok is not None:
            shm.offer.reset(offer_tok)

    def _reply(self, rid, ok, payload):
        """The CallReply of a call the dispatcher answered ``(ok, payload)``."""
        pb = self.pb
        if ok:
            rj, bins = payload
            if bins and any(type(v) is shm.Handle for v in bins.values()):
                return pb.CallReply(request_id=rid, result=pb.ToolResult(
                    result_json=rj,
                    binary_results={k: v for k, v in bins.items() if type(v) is bytes},
                    shm_results={k: pb.ShmSegment(pid=v.pid, fd=v.fd, inode=v.inode,
                                                  length=v.length)
                                 for k, v in bins.items() if type(v) is shm.Handle}))
            return pb.CallReply(request_id=rid, result=pb.ToolResult(
                result_json=rj, binary_results=bins))
        return pb.CallReply(request_id=rid, error=self._error_pb(payload))

    async def _run_call(self, req, st: CallStreamState, put, binary) -> None:
        """Runs one call (``binary``: its binary arguments) as a task and
        answers it through ``put``."""
        pb = self.pb
        rid = req.request_id
        try:
            if req.stream:

                async def sink(seq, data):
                    put(pb.CallReply(request_id=rid, chunk=pb.CallChunk(data_json=data,
                                                                         seq=seq)))

                ok, payload = await self.d.stream(
                    req.tool_name, req.args_json, binary, req.correlation_id,
                    req.traceparent, req.timeout_ms, sink, rpc=st.rpc)
                if ok:
                    put(pb.CallReply(request_id=rid, end=pb.StreamEnd(chunks=payload)))
                else:
                    put(pb.CallReply(request_id=rid, error=self._error_pb(payload)))
            else:
                ok, payload = await self.d.call(
                    req.tool_name, req.args_json, binary, req.correlation_id,
                    req.traceparent, req.timeout_ms, rpc=st.rpc)
                put(self._reply(rid, ok, payload))
        except asyncio.CancelledError:
            if st.streams.get(rid) is not None or not req.stream:
                raise  # not a cancel request: the stream is closing
            # The caller cancelled this streaming call. The tool has stopped
            # (an async generator closed, a sync generator's thread returned):
            # one final reply confirms it, and no other reply follows.
            put(pb.CallReply(request_id=rid, error=pb.ToolError(
                type="Cancelled",
                message=f"streaming call {rid} to {req.tool_name!r} was cancelled by "
                        "the caller; the tool has stopped")))
        except BaseException as e:  # noqa: BLE001 - must always answer
            log.exception("internal error running %s", req.tool_name)
            put(pb.CallReply(request_id=rid, error=pb.ToolError(
                type="InternalError", message=clip(repr(e), MAX_ERROR_MESSAGE_CHARS),
                traceback=clip(traceback.format_exc(), MAX_ERROR_TRACEBACK_CHARS))))
        finally:
            st.streams.pop(rid, None)
            st.pending -= 1
            st.maybe_finish()

    def close_call_streams(self) -> None:
        """Ends every call stream (graceful stop, after calls in flight finished)."""
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
        # The first batch carries no events or logs: the host counts the
        # stream open when it arrives, so it goes out at once, whatever
        # waits in the buffer (encoding is for the batches after it).
        first = True
        try:
            while gen == self.telemetry_gen:
                stopping = self.telemetry_stop.is_set()
                if first:
                    events, logs, first = [], [], False
                elif leftover:
                    events = leftover + tel.drain(BATCH_EVENTS - len(leftover))
                    logs = handler.drain(1000) if handler else []
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


def rpc_methods(s: Servicer, pb) -> dict:
    """Every BridgeService RPC of ``s``: name -> ``(kind, method, request
    class)``, ``kind`` one of ``unary``, ``server_stream`` and ``bidi``."""

    def uu(fn, req):
        return "unary", fn, req

    def us(fn, req):
        return "server_stream", fn, req

    def ss(fn, req):
        return "bidi", fn, req

    methods = {
        "Ping": uu(s.Ping, pb.PingRequest),
        "Describe": uu(s.Describe, pb.DescribeRequest),
        "CallBatchStream": ss(s.CallBatchStream, pb.CallBatch),
        "TelemetryStream": ss(s.TelemetryStream, pb.TelemetryControl),
    }
    methods.update(compat_handlers(s, pb, uu, us, ss))
    return methods


def build_handler(servicer: Servicer, pb):
    """The grpc.aio generic handler serving every RPC of ``servicer``."""
    import grpc

    makers = {
        "unary": grpc.unary_unary_rpc_method_handler,
        "server_stream": grpc.unary_stream_rpc_method_handler,
        "bidi": grpc.stream_stream_rpc_method_handler,
    }
    handlers = {
        name: makers[kind](fn, request_deserializer=req.FromString, response_serializer=serialized)
        for name, (kind, fn, req) in rpc_methods(servicer, pb).items()
    }
    return grpc.method_handlers_generic_handler("snakepit.bridge.BridgeService", handlers)
