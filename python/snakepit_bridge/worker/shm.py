"""Large binary payloads in shared memory (local hosts only).

A segment is a sealed memfd named ``snakepit-shm``; the kernel frees it when
the last descriptor and mapping are gone, so a crash on either side leaks
nothing. A handle (``ShmSegment``: pid, fd, inode, length) names it; the
peer opens ``/proc/<pid>/fd/<fd>`` and checks, on the descriptor it got,
the name, the inode, the size and the seals before mapping it read-only.

* Arguments: the host's segments, mapped here and given to the tool as a
  read-only ``memoryview`` (``numpy.frombuffer(arg, dtype=...)`` makes an
  array without a copy). The tool may keep it after the call: the mapping
  lives as long as any reference to it (or to an array over it), and its
  bytes never change (the host sealed them).
* Results: ``bytes``, ``bytearray`` or ``memoryview`` values of a returned
  dict (or the returned value itself) of at least the host's
  ``shm_min_bytes`` are written into a segment of this worker, kept until
  the host has mapped it and sends ``shm_release`` (or, at the latest,
  ``RELEASE_AFTER_S`` later), and counted against the host's
  ``shm_max_bytes``; beyond it they go inline.

See docs/decisions/0019-shared-memory-payloads.md.
"""

from __future__ import annotations

import contextvars
import fcntl
import mmap
import os
import threading
import time
from typing import Dict, Iterable, Optional, Tuple

MEMFD_NAME = "snakepit-shm"
_TARGET = f"/memfd:{MEMFD_NAME} (deleted)"
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
# A result segment the host never released (it stopped reading) is closed
# this long after it was made.
RELEASE_AFTER_S = 60.0

# (shm_min_bytes, shm_max_bytes) the host offered on the current call's
# request; None: results go inline (a remote host, a compatibility RPC).
offer: contextvars.ContextVar[Optional[Tuple[int, int]]] = contextvars.ContextVar(
    "snakepit_shm_offer", default=None)


class ShmRefused(Exception):
    """A handle that does not name a sealed snakepit segment of its size."""


class Handle:
    """A result segment of this worker, as sent in ``ToolResult.shm_results``."""

    __slots__ = ("pid", "fd", "inode", "length")

    def __init__(self, pid: int, fd: int, inode: int, length: int) -> None:
        self.pid, self.fd, self.inode, self.length = pid, fd, inode, length

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"Handle(pid={self.pid}, fd={self.fd}, inode={self.inode}, length={self.length})"


def open_segment(pid: int, fd: int, inode: int, length: int) -> memoryview:
    """The segment a handle names, mapped read-only. ShmRefused (naming the
    handle and what is wrong) unless it is a sealed snakepit memfd whose
    inode and size match; nothing else is ever mapped."""
    path = f"/proc/{pid}/fd/{fd}"
    if length <= 0:
        raise ShmRefused(f"shared-memory handle {path} has length {length}; it must be >= 1")
    try:
        own = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ShmRefused(f"cannot open shared-memory segment {path}: {e}") from None
    try:
        target = os.readlink(f"/proc/self/fd/{own}")
        if target != _TARGET:
            raise ShmRefused(f"{path} is {target!r}, not a {MEMFD_NAME} memfd; refused")
        st = os.fstat(own)
        if st.st_ino != inode:
            raise ShmRefused(f"{path} has inode {st.st_ino}, not the handle's {inode} "
                             "(the descriptor was reused); refused")
        if st.st_size != length:
            raise ShmRefused(f"{path} has size {st.st_size}, not the handle's length "
                             f"{length}; refused")
        if fcntl.fcntl(own, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
            raise ShmRefused(f"{path} is not sealed against writing, growing and "
                             "shrinking; refused")
        m = mmap.mmap(own, length, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(own)
    return memoryview(m)


def open_arguments(segments) -> Dict[str, memoryview]:
    """``CallRequest.shm_parameters`` (name -> ShmSegment) mapped."""
    return {k: open_segment(h.pid, h.fd, h.inode, h.length) for k, h in segments.items()}


class _Results:
    """This worker's live result segments: inode -> (fd, length, made at)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live = 0
        self.segs: Dict[int, Tuple[int, int, float]] = {}

    def put(self, data, max_bytes: int) -> Optional[Handle]:
        """``data`` written into a new sealed segment, or None when it would
        pass ``max_bytes`` live (it then goes inline)."""
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B")
        n = view.nbytes
        with self.lock:
            self._expire(time.monotonic())
            if self.live + n > max_bytes:
                return None
            self.live += n
        try:
            fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError:
            self._free(n)
            raise
        try:
            off = 0
            while off < n:
                off += os.write(fd, view[off:])
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS | fcntl.F_SEAL_SEAL)
            inode = os.fstat(fd).st_ino
        except BaseException:
            os.close(fd)
            self._free(n)
            raise
        with self.lock:
            self.segs[inode] = (fd, n, time.monotonic())
        return Handle(os.getpid(), fd, inode, n)

    def _free(self, n: int) -> None:
        with self.lock:
            self.live -= n

    def _expire(self, now: float) -> None:
        old = [i for i, (_, _, t) in self.segs.items() if now - t > RELEASE_AFTER_S]
        for inode in old:
            fd, n, _ = self.segs.pop(inode)
            os.close(fd)
            self.live -= n

    def release(self, inodes: Iterable[int]) -> None:
        """The host has mapped these segments: close them."""
        with self.lock:
            for inode in inodes:
                seg = self.segs.pop(inode, None)
                if seg is not None:
                    os.close(seg[0])
                    self.live -= seg[1]

    def count(self) -> Tuple[int, int]:
        """(live segments, their bytes)."""
        with self.lock:
            return len(self.segs), self.live


results = _Results()


def move_results(binaries: dict) -> None:
    """Replaces the values of ``binaries`` that the current call's offer
    takes by Handles of new result segments (in place); the others stay
    (as ``bytes``) for the call message."""
    cur = offer.get()
    for k, v in binaries.items():
        if cur is not None and memoryview(v).nbytes >= cur[0]:
            h = results.put(v, cur[1])
            if h is not None:
                binaries[k] = h
                continue
        if type(v) is not bytes:
            binaries[k] = bytes(v)
