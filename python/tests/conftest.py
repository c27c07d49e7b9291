"""Shared fixtures: telemetry state reset, real worker subprocesses, gRPC clients."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from snakepit_bridge import telemetry
from snakepit_bridge.telemetry import _testing

PYTHON_DIR = Path(__file__).resolve().parents[1]
SHOWCASE = "snakepit_bridge.adapters.showcase:ShowcaseAdapter"


def read_fields(data: bytes):
    """Yield (field number, body) for the length-delimited fields of a
    serialized message, in wire order (other wire types are skipped)."""
    i, n = 0, len(data)

    def read_varint():
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    while i < n:
        key = read_varint()
        wire = key & 7
        if wire == 0:
            read_varint()
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length = read_varint()
            yield key >> 3, data[i:i + length]
            i += length
        else:
            raise ValueError(f"unsupported wire type {wire}")


def batch_events(batch) -> list:
    """The events of a TelemetryBatch with its runs expanded (see EventRun in
    the proto). Given the serialized bytes, events and runs come in wire
    order (the emit order); given a parsed message, events come first."""
    from snakepit_bridge.generated import snakepit_bridge_pb2 as pb

    def expand(run) -> list:
        key = next(iter(run.template.measurements))
        out = []
        for ts, v in zip(run.timestamps, run.values, strict=True):
            e = pb.TelemetryEvent()
            e.CopyFrom(run.template)
            e.timestamp_ns = ts
            e.measurements[key].int_value = v
            out.append(e)
        return out

    if not isinstance(batch, (bytes, bytearray)):
        return list(batch.events) + [e for r in batch.runs for e in expand(r)]

    out = []
    for tag, body in read_fields(bytes(batch)):
        if tag == 1:
            out.append(pb.TelemetryEvent.FromString(body))
        elif tag == 7:
            out.extend(expand(pb.EventRun.FromString(body)))
    return out


@pytest.fixture(autouse=True)
def _clean_telemetry():
    _testing.reset()
    tokens = []
    yield tokens
    telemetry.reset_correlation_id()
    _testing.reset()


def _children(pid: int):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read()
            ppid = int(data[data.rindex(b")") + 2:].split()[1])
            state = data[data.rindex(b")") + 2:].split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and state != b"Z":
            out.append(int(d))
    return out


@pytest.fixture(scope="session", autouse=True)
def _no_processes_left_behind():
    yield
    deadline = time.monotonic() + 5
    while _children(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _children(os.getpid())
    assert not left, f"test run left child processes behind: {left}"


def calls_channel(address: str):
    """A channel to a worker's socket served natively (the main socket and
    the call socket of a worker on a Unix socket). grpc-core names a Unix
    socket's path as the HTTP/2 authority, which the Rust server (hyper)
    refuses as a malformed request (RST_STREAM PROTOCOL_ERROR): the tests
    name a plain authority. The host (tonic) does the same."""
    import grpc

    return grpc.insecure_channel(address, options=[("grpc.default_authority", "localhost")])


class Worker:
    """A worker started as a real subprocess on a unix socket in a private temp dir."""

    def __init__(self, *extra: str, adapter: str = SHOWCASE, token: str | None = None,
                 worker_id: str = "w-test", ready_timeout: float = 20.0,
                 expect_ready: bool = True, env: dict | None = None,
                 extra_path=None, listen: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="sp-")
        os.chmod(self.dir, 0o700)
        self.sock = os.path.join(self.dir, "w.sock")
        self.listen = listen or f"unix:{self.sock}"
        self.worker_id = worker_id
        self.token = token
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        cmd = [sys.executable, "-m", "snakepit_bridge.worker", "--adapter", adapter,
               "--listen", self.listen, "--worker-id", worker_id, *extra]
        e = dict(os.environ)
        e.pop("SNAKEPIT_TOKEN", None)
        if token:
            e["SNAKEPIT_TOKEN"] = token
        e["PYTHONPATH"] = os.pathsep.join(
            [str(p) for p in (extra_path, PYTHON_DIR) if p] + [e.get("PYTHONPATH", "")])
        if env:
            e.update(env)
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=e, start_new_session=True)
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self.ready = None
        self.channel = None
        if expect_ready:
            self.ready = self.wait_ready(ready_timeout)
            self.listen = self.ready["listen"]

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.decode("utf-8", "replace"))
        self._lines.put(None)

    def wait_ready(self, timeout: float) -> dict:
        line = self._lines.get(timeout=timeout)
        assert line is not None, f"worker exited before ready: {self.stderr()}"
        assert line.startswith("SNAKEPIT_READY "), line
        return json.loads(line[len("SNAKEPIT_READY "):])

    def stdout_rest(self, timeout: float = 5.0) -> list:
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            out.append(line)
        return out

    def stderr(self) -> str:
        self._stderr.flush()
        with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def connect(self):

        from snakepit_bridge.generated import snakepit_bridge_pb2_grpc as pbg

        if self.channel is None:
            self.channel = calls_channel(self.listen)
        return pbg.BridgeServiceStub(self.channel)

    def connect_calls(self):
        """A stub on the worker's native call socket (``calls`` in the ready
        line), which serves CallBatchStream only."""

        from snakepit_bridge.generated import snakepit_bridge_pb2_grpc as pbg

        calls = self.ready.get("calls")
        assert calls, ("the worker serves no native call socket: build "
                       "snakepit_bridge._native with `cargo xtask setup`")
        self.calls_channel = calls_channel(calls)
        return pbg.BridgeServiceStub(self.calls_channel)

    def md(self, *pairs):
        out = list(pairs)
        if self.token:
            out.append(("x-snakepit-token", self.token))
        return out

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if getattr(self, "calls_channel", None) is not None:
            self.calls_channel.close()
            self.calls_channel = None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
        self._stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def start_worker():
    workers = []

    def start(*extra, **kw) -> Worker:
        w = Worker(*extra, **kw)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.close()


@pytest.fixture
def worker(start_worker):
    return start_worker("--telemetry-interval-s", "0.2")


class StreamClient:
    """Drives a bidirectional stream from a thread: send() requests, replies collected."""

    def __init__(self, method, metadata=(), timeout: float = 60.0) -> None:
        self._req: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        self.error = None

        def gen():
            while True:
                item = self._req.get()
                if item is None:
                    return
                yield item

        self.call = method(gen(), metadata=list(metadata), timeout=timeout)
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        try:
            for r in self.call:
                self.replies.put(r)
        except Exception as e:  # noqa: BLE001
            self.error = e
        self.replies.put(None)

    def send(self, msg) -> None:
        self._req.put(msg)

    def get(self, timeout: float = 10.0):
        return self.replies.get(timeout=timeout)

    def close(self) -> None:
        self._req.put(None)

    def cancel(self) -> None:
        self._req.put(None)
        self.call.cancel()
        self._t.join(timeout=5)


@pytest.fixture
def stream_clients():
    clients = []

    def make(method, metadata=(), timeout=60.0) -> StreamClient:
        c = StreamClient(method, metadata, timeout)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.cancel()
