"""PreloadedAdapter: an adapter with a ``preload()`` hook, for the template
workers' tests and start-up benchmark (``start_method = "template"``).

``preload()`` runs once in the pool's template process, before any worker
is forked; what it builds is shared copy-on-write by every worker. Its
behaviour is set by environment variables (the pool's ``env``):

* ``SNAKEPIT_PRELOAD_MB``: build a read-only table of that many MiB
  (default 0);
* ``SNAKEPIT_PRELOAD_THREAD``: start a thread of that name (a fork-safety
  violation the template refuses);
* ``SNAKEPIT_PRELOAD_OPEN``: open that file and keep it open (a descriptor
  no worker may inherit).

Under ``start_method = "spawn"`` each worker runs ``preload()`` itself,
when the adapter is created, so both methods serve the same table.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any, Dict

from .. import telemetry
from ..base_adapter import BaseAdapter, tool
from ..telemetry import _buffer


class PreloadedAdapter(BaseAdapter):
    #: The preloaded table (bytes), shared by the workers forked after it.
    table: bytes = b""
    #: The file kept open by preload (SNAKEPIT_PRELOAD_OPEN).
    kept_open = None
    #: Has preload run in this process (or the template it was forked from)?
    preloaded = False

    @classmethod
    def preload(cls) -> None:
        """Builds what every worker shares (see the module's variables)."""
        mb = int(os.environ.get("SNAKEPIT_PRELOAD_MB", "0"))
        # Distinct pages: a table of one repeated byte would be no test of
        # copy-on-write once the kernel merges pages.
        chunk = os.urandom(1 << 20)
        cls.table = chunk * mb
        name = os.environ.get("SNAKEPIT_PRELOAD_THREAD")
        if name:
            threading.Thread(target=threading.Event().wait, name=name, daemon=True).start()
        path = os.environ.get("SNAKEPIT_PRELOAD_OPEN")
        if path:
            cls.kept_open = open(path, "rb")  # noqa: SIM115
        cls.preloaded = True

    def __init__(self) -> None:
        if not type(self).preloaded:
            type(self).preload()

    @tool(description="Liveness check; returns {'ok': true}", inline=True)
    def ping(self) -> Dict[str, Any]:
        return {"ok": True}

    @tool(description="What makes this worker itself: pid, parent, a random draw, a "
                      "fresh correlation id and span ids, its open descriptors; "
                      "answers after hold_ms milliseconds")
    def identity(self, hold_ms: float = 0) -> Dict[str, Any]:
        time.sleep(float(hold_ms) / 1000.0)
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass
        with telemetry.span("preloaded.identity") as span:
            span_id = span.span_id
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "random": random.getrandbits(64),
            "correlation_id": telemetry.new_correlation_id(),
            "span_id": span_id,
            "trace_prefix": _buffer._TRACE_PREFIX,
            "fds": fds,
            "table_mb": len(type(self).table) >> 20,
        }

    @tool(description="Reads every page of the preloaded table; returns a checksum",
          inline=True)
    def touch_table(self) -> int:
        table = type(self).table
        return sum(table[::4096])
