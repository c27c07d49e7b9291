"""The native transport: ``snakepit_bridge._native`` (python/native), a
gRPC server in Rust inside the worker. On a Unix socket it serves the
main socket (every RPC) and ``<socket>.calls`` (CallBatchStream), so the
worker neither imports grpc nor starts a grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from ..codec import MESSAGE_HEADROOM_BYTES, max_message_bytes
from .call_state import CallStreamState, pop_reply_batch, serialized

if TYPE_CHECKING:
    from .aio import Servicer

log = logging.getLogger("snakepit_bridge.worker")

# The service every RPC path starts with.
SERVICE_PREFIX = "/snakepit.bridge.BridgeService/"
# gRPC status codes (the numbers of ``grpc.StatusCode``; grpc is not loaded).
CANCELLED, UNKNOWN, UNIMPLEMENTED, INTERNAL = 1, 2, 12, 13
# Most replies of a streaming RPC that may wait for a client that does not
# read (a telemetry batch is at most 4 MiB): past it the method's generator
# waits, as grpc.aio's write would, so what it has not sent stays in its own
# bounded buffers (the telemetry buffer counts what it drops).
MAX_BACKLOG = 8


class Aborted(Exception):
    """``NativeContext.abort``: ends the RPC with ``code`` and ``details``."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class NativeContext:
    """The part of grpc.aio's ``ServicerContext`` the servicer's methods use,
    for an RPC of the native main socket. The server checked the token
    before the RPC reached Python (``Servicer._auth`` knows this context)."""

    def __init__(self, metadata) -> None:
        self._metadata = tuple(metadata)

    def invocation_metadata(self):
        """The request's metadata: ``(name, value)`` pairs, as text."""
        return self._metadata

    async def abort(self, code, details: str = "") -> None:
        """Ends the RPC with ``code`` (a ``grpc.StatusCode`` or its number)."""
        number = code.value[0] if hasattr(code, "value") else int(code)
        raise Aborted(number, details)


class NativeRpc:
    """One RPC of the main socket other than CallBatchStream: its request
    messages as they arrive, and the servicer's method answering it."""

    def __init__(self, server, rid: int, metadata) -> None:
        self.server = server
        self.rid = rid
        self.context = NativeContext(metadata)
        self.requests: asyncio.Queue = asyncio.Queue()
        # The task running the method, and whether its client went away.
        self.task = None
        self.gone = False

    def client_gone(self) -> None:
        """The client cancelled the RPC or closed its connection: the method
        is cancelled, as grpc.aio cancels a handler whose RPC ended."""
        self.gone = True
        if self.task is not None:
            self.task.cancel()

    def feed(self, data) -> None:
        """A request message (bytes), or None when the request side ended."""
        self.requests.put_nowait(data)

    @staticmethod
    def _decode(cls, data: bytes):
        try:
            return cls.FromString(data)
        except Exception as e:  # noqa: BLE001 - the caller's bug, named
            raise Aborted(INTERNAL, f"cannot decode the {cls.__name__} request: {e}") from e

    async def _one(self, cls):
        data = await self.requests.get()
        if data is None:
            raise Aborted(INTERNAL, "the request side ended before its message")
        return self._decode(cls, data)

    async def _stream(self, cls):
        while True:
            data = await self.requests.get()
            if data is None:
                return
            yield self._decode(cls, data)

    async def _drained(self) -> bool:
        """Waits while more than MAX_BACKLOG replies wait for the client;
        False if the RPC went away meanwhile."""
        delay = 0.0002
        while True:
            backlog = self.server.backlog(self.rid)
            if backlog < 0:
                return False
            if backlog <= MAX_BACKLOG:
                return True
            # Short waits: a client that reads again is served at once.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.002)

    async def run(self, kind: str, method, cls) -> None:
        """Runs ``method`` (``kind`` ``unary``, ``server_stream`` or
        ``bidi``, as in ``aio.rpc_methods``) and ends the RPC with its
        outcome: OK, the status it aborted with, or UNKNOWN naming the
        exception it raised."""
        server, rid = self.server, self.rid
        try:
            if kind == "unary":
                reply = await method(await self._one(cls), self.context)
                if reply is not None:
                    server.send(rid, serialized(reply))
            else:
                source = self._stream(cls) if kind == "bidi" else await self._one(cls)
                async with contextlib.aclosing(method(source, self.context)) as replies:
                    async for reply in replies:
                        if not server.send(rid, serialized(reply)) or not await self._drained():
                            break  # the client went away
            server.end(rid)
        except Aborted as e:
            server.fail(rid, e.code, e.details)
        except asyncio.CancelledError:
            server.fail(rid, CANCELLED, "the client went away" if self.gone
                        else "the worker is stopping")
            raise
        except Exception as e:  # noqa: BLE001 - a servicer bug ends this RPC only
            log.exception("RPC %d failed", rid)
            server.fail(rid, UNKNOWN, f"{type(e).__name__}: {e}")


class NativeServer:
    """The worker's RPCs served by ``snakepit_bridge._native``: CallBatchStream
    on a Unix socket of its own (``<socket>.calls``, when ``calls_path`` is
    given) and, with ``main_path``, every RPC of the main socket (the other
    RPCs run the servicer's methods as in grpc.aio, through ``NativeRpc``).

    The native server hands over request messages as bytes when a byte on
    its notification socket wakes the loop; each batch is taken at once
    (``Servicer._take_batch``: inline calls answered right there) and the
    replies are sent without waiting for anything. grpc.aio needs a read and
    a write operation per call, each completing through its poller thread and
    a loop wake-up; this needs one wake-up. Same messages, same rules.
    """

    def __init__(self, servicer: Servicer, calls_path, main_path=None) -> None:
        from ... import _native
        from .aio import rpc_methods

        self.s = servicer
        self.pb = servicer.pb
        # Both sockets check the worker's token: every RPC must carry it.
        self.server = _native.CallServer(calls_path, servicer.token or None,
                                         max_message_bytes() + MESSAGE_HEADROOM_BYTES,
                                         main=main_path)
        self.address = "unix:" + calls_path if calls_path else ""
        self.serves_main = main_path is not None
        # CallBatchStream never reaches these: the server hands its batches
        # over through ``take``.
        self.methods = rpc_methods(servicer, self.pb) if self.serves_main else {}
        self.rpcs: dict = {}
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

        st = CallStreamState(finish)
        streams[sid] = st, put
        self.s.call_streams.add(st)
        return st, put

    def _flush(self, sid: int, st: CallStreamState) -> None:
        st.flushing = False
        out = st.out
        while out:
            if not self.server.send(sid, pop_reply_batch(out)):
                st.abort()  # the client went away: nobody to answer
                break
        st.maybe_finish()

    def _ready(self) -> None:
        server = self.server
        for sid, data in server.take():
            try:
                self._take(sid, data)
            except Exception:  # noqa: BLE001 - the rest must still be taken
                log.exception("native call stream %d: a message was not handled", sid)
        for rid, item in server.take_rpcs():
            try:
                self._take_rpc(rid, item)
            except Exception:  # noqa: BLE001 - the rest must still be taken
                log.exception("native RPC %d: a message was not handled", rid)

    def _take_rpc(self, rid: int, item) -> None:
        if isinstance(item, tuple):
            path, metadata = item
            name = path[len(SERVICE_PREFIX):] if path.startswith(SERVICE_PREFIX) else None
            method = self.methods.get(name)
            if method is None:
                self.server.fail(rid, UNIMPLEMENTED, f"Method not found: {path}")
                return
            rpc = NativeRpc(self.server, rid, metadata)
            self.rpcs[rid] = rpc
            rpc.task = self.s._track(rpc.run(*method))
            rpc.task.add_done_callback(lambda _t: self.rpcs.pop(rid, None))
            return
        rpc = self.rpcs.get(rid)
        if rpc is None:  # it has ended: nobody reads its requests
            return
        if item == "gone":
            rpc.client_gone()
        else:
            rpc.feed(item)

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
        """Stops serving: no more reads; the server closes its connections."""
        try:
            self.loop.remove_reader(self.server.fileno())
        finally:
            if not self.server.close():
                log.debug("native call server: a client kept its connection open")


# The longest Unix socket path: sun_path holds 108 bytes with the final NUL.
MAX_UNIX_PATH = 107


def start_native(servicer: Servicer, listen: str):
    """The NativeServer of a worker listening on ``listen``, or None.

    On ``unix:PATH`` it serves the main socket ``PATH`` (every RPC) and the
    call socket ``PATH.calls`` (CallBatchStream). It returns None, and
    grpc.aio serves every RPC, on TCP (info: by design) and when it cannot
    run (a warning, once: disabled, not built, older than this package).
    The call socket alone is left out, with a warning, when its path is too
    long or cannot be listened on: calls then go to the main socket, still
    native. Stale sockets (nobody listens on them: left by a worker that was
    killed) are removed first. Raises ``OSError`` naming ``listen`` when
    the main socket cannot be listened on."""
    if not listen.startswith("unix:"):
        log.info("the native server serves Unix sockets only: grpc.aio serves %s", listen)
        return None
    sock = listen[len("unix:"):]
    why = unavailable()
    if why is None:
        calls = call_socket_path(sock)
        remove_stale_socket(sock)
        if calls is not None:
            remove_stale_socket(calls)
        try:
            return NativeServer(servicer, calls, sock)
        except (TypeError, AttributeError) as e:
            why = (f"snakepit_bridge._native is older than this package ({e}): reinstall "
                   "snakepit-bridge (pip install ./python)")
        except OSError as e:
            if calls is None or calls not in str(e):
                raise OSError(f"cannot listen on {listen!r}: {e}") from e
            log.warning("no call socket, cannot listen on %s (%s): calls go to the main "
                        "socket", calls, e)
            return NativeServer(servicer, None, sock)
    log.warning("native server not started, %s; grpc.aio serves every RPC (slower start, "
                "slower calls)", why)
    return None


def unavailable():
    """Why the native server cannot run in this process (disabled, or the
    module not built), or None when it can. Imports the module."""
    if os.environ.get("SNAKEPIT_NATIVE_CALLS") == "0":
        return "disabled by SNAKEPIT_NATIVE_CALLS=0"
    try:
        from ... import _native  # noqa: F401
    except ImportError as e:
        return (f"snakepit_bridge._native is not built ({e}): install snakepit-bridge "
                "from its wheel or sdist (pip install ./python), which builds it")
    return None


def call_socket_path(sock: str):
    """``sock.calls``, or None (with a warning) when that path is too long
    for a Unix socket."""
    path = sock + ".calls"
    size = len(os.fsencode(path))
    if size <= MAX_UNIX_PATH:
        return path
    log.warning("no call socket: its path %s is %d bytes, over the %d of a Unix socket "
                "path (listen in a shorter directory); calls go to the main socket",
                path, size, MAX_UNIX_PATH)
    return None


def remove_stale_socket(path: str) -> None:
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
        log.info("removed the stale socket %s", path)
    except OSError:
        pass
    finally:
        probe.close()
