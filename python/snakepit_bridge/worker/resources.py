"""Resource sampling from /proc: the worker's memory and CPU use, emitted as
``memory.sampled`` and ``cpu.sampled`` every --telemetry-interval-s seconds."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Dict, Optional

from .. import telemetry

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_memory() -> Optional[Dict[str, int]]:
    """Resident and virtual size in bytes (``rss_bytes``, ``vms_bytes``), or None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            size, resident = f.read().split()[:2]
        return {"rss_bytes": int(resident) * _PAGE, "vms_bytes": int(size) * _PAGE}
    except (OSError, ValueError):
        return None


def read_cpu_ticks() -> Optional[int]:
    """CPU time used so far (user plus system) in clock ticks, or None."""
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None


async def resource_sampler(interval: float, worker_id: str) -> None:
    """Emits memory.sampled and cpu.sampled (``cpu_percent`` since the last
    sample) every ``interval`` seconds, until cancelled."""
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
