"""The native call transport: CallBatchStream served by
``snakepit_bridge._native`` (python/native) on a Unix socket of its own,
``<socket>.calls``, next to the grpc.aio server."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from ..codec import MESSAGE_HEADROOM_BYTES, max_message_bytes
from .call_state import CallStreamState, pop_reply_batch

if TYPE_CHECKING:
    from .aio import Servicer

log = logging.getLogger("snakepit_bridge.worker")


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
        from ... import _native

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
        """Stops serving: no more reads; the server closes its connections."""
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
            remove_stale_socket(path)
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
        log.info("removed the stale call socket %s", path)
    except OSError:
        pass
    finally:
        probe.close()
