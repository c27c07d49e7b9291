"""Worker log records -> telemetry stream (LogRecord entries in batches)."""

from __future__ import annotations

import logging
import sys
from collections import deque
from typing import List, Optional

from . import telemetry
from .telemetry import _worker_api as tel
from .telemetry._context import span_var

DEFAULT_LOG_BUFFER = 10_000

_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class TelemetryLogHandler(logging.Handler):
    """Buffers log records (bounded) for the telemetry stream; drops are counted.

    Each record keeps the correlation id and the span (trace id, span id)
    current where it was logged: inside a tool call, the tool.execution span
    or the user span open then; outside any span, none.
    """

    def __init__(self, capacity: int = DEFAULT_LOG_BUFFER) -> None:
        super().__init__(logging.NOTSET)
        self.capacity = capacity
        self.records: deque = deque()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if len(self.records) >= self.capacity:
                tel.count_log_drop()
                return
            msg = record.getMessage()
            if record.exc_info:
                msg = msg + "\n" + logging.Formatter().formatException(record.exc_info)
            level = _LEVEL_NAMES.get(record.levelno) or record.levelname.lower()
            span = span_var.get()
            self.records.append(
                (int(record.created * 1e9), level, record.name, msg,
                 telemetry.get_correlation_id() or "",
                 span[2] if span is not None else "",
                 span[0] if span is not None else 0)
            )
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)

    def drain(self, max_records: int = 1000) -> List[tuple]:
        out = []
        pop = self.records.popleft
        try:
            for _ in range(min(max_records, len(self.records))):
                out.append(pop())
        except IndexError:
            pass
        return out


_handler: Optional[TelemetryLogHandler] = None


def install(stderr_level: str = "warning", capacity: int = DEFAULT_LOG_BUFFER,
            root_level: str = "info") -> TelemetryLogHandler:
    """Route root logging to the telemetry stream (and to stderr at stderr_level)."""
    global _handler
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    _handler = TelemetryLogHandler(capacity)
    root.addHandler(_handler)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(tel.LOG_LEVELS.get(stderr_level, logging.WARNING))
    err.addFilter(telemetry.correlation_filter())
    err.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"))
    root.addHandler(err)
    root.setLevel(tel.LOG_LEVELS.get(root_level, logging.INFO))
    tel.add_policy_listener(_follow_policy)
    return _handler


def _follow_policy(policy: tel.Policy) -> None:
    if policy.log_level:
        logging.getLogger().setLevel(tel.LOG_LEVELS[policy.log_level])


def handler() -> Optional[TelemetryLogHandler]:
    return _handler
