"""The shared accepted-events count a host reads after a worker died
(``<socket>.counters``): the pid, then the events accepted, rewritten every
PUBLISH_EVERY events and at every batch written."""

from __future__ import annotations

import os
import stat

from snakepit_bridge import telemetry
from snakepit_bridge.telemetry import _buffer, _stream
from snakepit_bridge.telemetry import _worker_api as tw


def read(path):
    with open(path, "rb") as f:
        return _stream.COUNTERS_LAYOUT.unpack(f.read())


def test_the_count_follows_emits_in_steps_and_batches_exactly(tmp_path):
    path = str(tmp_path / "w.sock.counters")
    tw.drain(10**9)
    tw.open_counters(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        pid, start = read(path)
        assert pid == os.getpid() and start == tw.accepted()
        every = _buffer.PUBLISH_EVERY
        for i in range(every - 1):
            telemetry.emit("tool.execution.stop", {"duration": i}, {"tool": "count"})
        # Not yet a multiple of PUBLISH_EVERY: not rewritten.
        assert read(path)[1] == start
        telemetry.emit("tool.execution.stop", {"duration": 0}, {"tool": "count"})
        assert read(path)[1] == start + every
        with telemetry.span("count"):
            pass
        # Drained events still count as accepted; a batch written rewrites it.
        tw.drain(10**9)
        tw.note_batch_written(0)
        assert read(path)[1] == start + every + 2 == tw.accepted()
        # Drained, then put back (a batch never sent): not counted twice.
        for i in range(3):
            telemetry.emit("tool.execution.stop", {"duration": i}, {"tool": "count"})
        evs = tw.drain(10**9)
        assert len(evs) == 3
        tw.requeue(evs)
        assert tw.accepted() == start + every + 5
        tw.drain(10**9)
        assert tw.accepted() == start + every + 5
    finally:
        tw.close_counters(path)
    assert not os.path.exists(path)
    telemetry.emit("tool.execution.stop", {"duration": 0}, {"tool": "count"})
    tw.drain(10**9)
