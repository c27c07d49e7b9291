"""Compatibility RPCs, fenced off from the host's call path.

The host's pool calls tools over ``CallBatchStream``, takes telemetry from
the batched ``TelemetryStream`` and checks health with ``Ping``
(``transport.aio``). The RPCs here (the "Compatibility" section of the
proto's service) serve other clients:

* ``ExecuteTool`` / ``ExecuteStreamingTool``: one RPC per call, as the
  reference system's clients make them (its ``parameters`` map of ``Any``
  included). snakepit-grpc reaches them only through its compatibility calls
  (``WorkerClient::execute_unary`` / ``execute_stream_unary``, module
  ``compat``), the baseline of its benchmark; the pool never does.
* ``CallStream``: CallBatchStream without batching (one CallRequest or
  CallReply per message); the call's python.* events go through the
  telemetry stream.
* ``StreamTelemetry``: the reference's per-event telemetry stream (one
  TelemetryEvent per message); it shares the buffer, the policy and the
  attach rules of TelemetryStream, without logs or drop counts.
* ``Heartbeat``: the reference's liveness check with a session id.

Same dispatcher, tools, errors, correlation and tracing as the host's path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from ... import session as _session
from ... import telemetry
from ...telemetry import _worker_api as tel
from .call_state import SENTINEL_END, CallStreamState

log = logging.getLogger("snakepit_bridge.worker")


class CompatRpcs:
    """The compatibility RPCs, mixed into ``transport.aio.Servicer`` (they use
    its dispatcher ``d``, ``pb``, ``_auth``, ``_run_call`` and telemetry
    stream state)."""

    # --- health (reference) -----------------------------------------------

    async def Heartbeat(self, request, context):
        """The reference's liveness check (sessions are not used: always valid)."""
        if not await self._auth(context):
            return None
        r = self.pb.HeartbeatResponse(session_valid=True)
        r.server_time.GetCurrentTime()
        return r

    # --- unary tool calls --------------------------------------------------

    def _legacy_args(self, request) -> bytes:
        """``args_json``, or the reference's ``parameters`` map (Any values
        holding JSON, else text) turned into it."""
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
        """(correlation id, traceparent): request fields, else metadata."""
        cid = request.correlation_id or self._md_value(context, telemetry.CORRELATION_HEADER)
        tp = request.traceparent or self._md_value(context, telemetry.TRACEPARENT_HEADER)
        return cid, tp

    async def ExecuteTool(self, request, context):
        """One call, one RPC: ExecuteToolResponse with the result or the error."""
        if not await self._auth(context):
            return None
        cid, tp = self._unary_ctx(request, context)
        t0 = time.monotonic()
        _session.enter(request.session_id)  # this RPC's own task
        ok, payload = await self.d.call(
            request.tool_name, self._legacy_args(request), request.binary_parameters, cid, tp,
            request.timeout_ms, rpc="ExecuteTool")
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
        """One streaming call, one RPC: a ToolChunk per chunk, then a final one."""
        if not await self._auth(context):
            return
        cid, tp = self._unary_ctx(request, context)
        q: asyncio.Queue = asyncio.Queue()

        async def sink(seq, data):
            await q.put(self.pb.ToolChunk(chunk_id=str(seq), data=data, seq=seq))

        async def run():
            ok, payload = await self.d.stream(
                request.tool_name, self._legacy_args(request), request.binary_parameters, cid,
                tp, request.timeout_ms, sink, rpc="ExecuteStreamingTool")
            if ok:
                await q.put(self.pb.ToolChunk(chunk_id=str(payload), is_final=True,
                                              seq=payload))
            else:
                await q.put(self.pb.ToolChunk(is_final=True, error=self._error_pb(payload),
                                              metadata={"error": payload.message}))
            await q.put(SENTINEL_END)

        task = asyncio.ensure_future(run())
        try:
            while True:
                item = await q.get()
                if item is SENTINEL_END:
                    break
                yield item
        finally:
            if not task.done():
                task.cancel()

    async def CallStream(self, request_iterator, context):
        """The unbatched call stream: one CallRequest / CallReply per message."""
        if not await self._auth(context):
            return
        st = CallStreamState(rpc="CallStream")
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
                if item is SENTINEL_END:
                    break
                yield item
        finally:
            self.call_streams.discard(st)
            if not rt.done():
                rt.cancel()
        del pb

    def _dispatch(self, req, st: CallStreamState) -> None:
        """Answers an inline call at once; runs any other call as a task
        (with the call's session current in both)."""
        tok = _session.enter(req.session_id)
        try:
            self._dispatch_in_session(req, st)
        finally:
            _session.leave(tok)

    def _dispatch_in_session(self, req, st: CallStreamState) -> None:
        pb = self.pb
        rid = req.request_id
        if self.d.draining:
            st.queue.put_nowait(pb.CallReply(request_id=rid, error=pb.ToolError(
                type="Unavailable", message="worker is shutting down")))
            return
        if not req.stream and self.d.is_inline(req.tool_name):
            ok, payload = self.d.call_inline(req.tool_name, req.args_json,
                                             req.binary_parameters, req.correlation_id,
                                             req.traceparent, rpc=st.rpc)
            st.queue.put_nowait(self._reply(rid, ok, payload))
            return
        st.pending += 1
        self._track(self._run_call(req, st, st.queue.put_nowait, req.binary_parameters))

    async def StreamTelemetry(self, request_iterator, context):
        """The per-event telemetry stream: one TelemetryEvent per message, no
        drop counts or logs (TelemetryStream carries those)."""
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


def compat_handlers(s, pb, uu, us, ss) -> dict:
    """The compatibility RPCs' method handlers (``uu``/``us``/``ss``: unary-unary,
    unary-stream and stream-stream handler makers)."""
    return {
        "Heartbeat": uu(s.Heartbeat, pb.HeartbeatRequest),
        "ExecuteTool": uu(s.ExecuteTool, pb.ExecuteToolRequest),
        "ExecuteStreamingTool": us(s.ExecuteStreamingTool, pb.ExecuteToolRequest),
        "CallStream": ss(s.CallStream, pb.CallRequest),
        "StreamTelemetry": ss(s.StreamTelemetry, pb.TelemetryControl),
    }
