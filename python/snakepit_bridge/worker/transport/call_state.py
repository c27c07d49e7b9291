"""What both transports (grpc.aio and native) share: the state of one call
stream, the batching of its serialized replies, and how a reply becomes
bytes (``serialized``)."""

from __future__ import annotations

import asyncio

from ... import _wire
from ..codec import max_message_bytes


def serialized(msg) -> bytes:
    """A reply's bytes: a message serialized, or bytes (already encoded) as
    they are."""
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


# Ends a stream's reply queue (grpc.aio handlers wait on it).
SENTINEL_END = object()
# A CallReplyBatch stops growing at this size (the rest goes in the next one).
MAX_REPLY_BATCH_BYTES = 4 * 1024 * 1024


def pop_reply_batch(out: list) -> bytes:
    """Removes the first serialized replies of ``out`` (up to
    MAX_REPLY_BATCH_BYTES, at least one) and returns them as one
    CallReplyBatch. Replies that would take a batch of several over the
    message limit wait for the next batch: one large result never makes a
    message the host refuses, which would fail every call on the stream."""
    n, size = 0, 0
    cap = max_message_bytes()
    while n < len(out) and size < MAX_REPLY_BATCH_BYTES:
        framed = len(out[n]) + 6  # tag and length of the repeated field
        if n and size + framed > cap:
            break
        size += framed
        n += 1
    replies = out[:n]
    del out[:n]
    return _wire.reply_batch(replies)


class CallStreamState:
    """One call stream: replies waiting (``out``) or queued (``queue``),
    calls running (``pending``, ``streams``), and how it ends (``finish``)."""

    __slots__ = ("queue", "pending", "reader_done", "closed", "out", "flushing", "streams",
                 "finish", "rpc")

    def __init__(self, finish=None, rpc: str = "CallBatchStream") -> None:
        # The RPC the calls come on (``rpc_method`` of their python.call events).
        self.rpc = rpc
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
        self.queue.put_nowait(SENTINEL_END)

    def abort(self) -> None:
        """The client went away: drop the unsent replies and end the stream."""
        self.out.clear()
        if not self.closed:
            self.closed = True
            self.finish()

    def maybe_finish(self) -> None:
        """Ends the stream once the client is done sending and everything is answered."""
        if (self.reader_done and self.pending == 0 and not self.closed and not self.out
                and not self.flushing):
            self.closed = True
            self.finish()

