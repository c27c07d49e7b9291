"""The floor of one call at a time: the Python end of a hand-framed
ping-pong over a Unix socket, for the pool benchmark (`floor.rs`).

``floor_peer.py PATH``: listens on the Unix socket PATH, prints ``ready``,
accepts one connection, then answers every request message with the same
reply message until the client closes. A message is framed as gRPC frames
it (a zero byte, then the length as 4 bytes big-endian); nothing else goes
on the socket (no HTTP/2). The request is the client's encoded one-call
``CallBatch``, read whole and not decoded; the reply is the
``CallReplyBatch`` a worker sends for the showcase's ``ping`` with its call
telemetry, encoded once by ``snakepit_bridge._wire.calls``. Blocking reads
and writes on the main thread: no event loop, no other thread.
"""
import os
import socket
import struct
import sys
import time

from snakepit_bridge._wire.calls import (
    CALL_END,
    CALL_START,
    TOOL_END,
    TOOL_START,
    call_telemetry_field,
    reply_batch,
    reply_result,
)

HEADER = struct.Struct(">BI")


def reply_message() -> bytes:
    """The framed CallReplyBatch answering request 1 with ``{"ok":true}``."""
    now = time.time_ns()
    telemetry = call_telemetry_field(CALL_START | CALL_END | TOOL_START | TOOL_END,
                                     now, 20_000, now + 5_000, 8_000, 0x1234_5678_9ABC_DEF0,
                                     0x0FED_CBA9_8765_4321, 0x1111_2222_3333_4444)
    body = reply_batch([reply_result(1, b'{"ok":true}') + telemetry])
    return HEADER.pack(0, len(body)) + body


def read_exact(conn: socket.socket, buf: bytearray) -> bool:
    """Fills ``buf`` from ``conn``; False at end of input."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def serve(path: str) -> None:
    reply = reply_message()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    print("ready", flush=True)
    conn, _ = listener.accept()
    listener.close()
    os.unlink(path)
    header = bytearray(HEADER.size)
    with conn:
        while read_exact(conn, header):
            _, n = HEADER.unpack(header)
            if not read_exact(conn, bytearray(n)):
                break
            conn.sendall(reply)


if __name__ == "__main__":
    serve(sys.argv[1])
