#!/usr/bin/env python3
"""Benchmark a worker's start-up: time to its ready line, RSS, where the time goes.

Each round starts, interleaved, one process of each kind and times it from
``Popen`` to its first line on stdout (all use this interpreter):

* ``floor``: ``python -c`` printing a line: the interpreter alone;
* ``mp_spawn``: a ``multiprocessing`` spawn child, ready when it answers on
  its pipe (the Python pool's start method that starts a fresh interpreter);
* ``before_imports``: a process importing BEFORE_MODULES, the modules a
  worker imported before its ready line before the start-up was trimmed
  (recorded with ``python -X importtime``; kept here as the baseline);
* ``after_imports``: a process importing the modules today's worker imports
  before its ready line (taken from a worker run with ``-X importtime`` at
  the start of this run): the same measure as ``before_imports``;
* ``worker``: a real worker (showcase adapter, on a Unix socket) to its
  ready line, then the host's handshake (``Worker.handshake``); its RSS is
  read after it has served one call (CallBatchStream on its native call
  socket);
* ``worker_phases``: the same worker with debug logs, its start-up steps
  (``cli.StartupPhases``) read from stderr;
* ``aio_worker``: the same worker served by grpc.aio (``SNAKEPIT_NATIVE_CALLS=0``:
  it imports grpc and starts a grpc.aio server, as every worker did before
  the native server served the main socket), timed and measured as
  ``worker``.

    .venv/bin/python python/bench/bench_startup.py [--rounds 5] [--json]

The package is compiled to bytecode first, as ``cargo xtask setup`` and a
wheel's install leave it. Figures are medians over the rounds, with the range; RSS is VmRSS in kB.
``*_cpu_ms``: the CPU time (user + system) a process had used by its ready
line, as it reports it (``time.process_time()``): steadier than wall time on
a busy machine.
"""

from __future__ import annotations

import argparse
import compileall
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[1]
ADAPTER = "snakepit_bridge.adapters.showcase:ShowcaseAdapter"

# The modules a worker (showcase adapter, Unix socket, uvloop) had imported by
# its ready line before the start-up was trimmed, in import order, from
# ``python -X importtime -m snakepit_bridge.worker``. Names that do not import
# here (another platform's, optional ones) are skipped.
BEFORE_MODULES = (
    "_io", "marshal", "posix", "_frozen_importlib_external", "time", "zipimport",
    "_codecs", "codecs", "encodings.aliases", "encodings", "encodings.utf_8", "_signal",
    "_abc", "abc", "io", "_stat", "stat", "_collections_abc", "genericpath", "posixpath",
    "os", "_sitebuiltins", "_distutils_hack", "sitecustomize", "site", "warnings",
    "importlib", "importlib.machinery", "importlib._abc", "itertools", "keyword",
    "_operator", "operator", "reprlib", "_collections", "collections", "types",
    "_functools", "functools", "contextlib", "importlib.util", "runpy", "__future__",
    "_contextvars", "contextvars", "_weakrefset", "threading", "collections.abc", "enum",
    "_sre", "re._constants", "re._parser", "re._casefix", "re._compiler", "copyreg", "re",
    "_typing", "typing", "snakepit_bridge.session", "token", "tokenize", "linecache",
    "textwrap", "traceback", "weakref", "_string", "string", "atexit", "logging", "math",
    "_bisect", "bisect", "_random", "_sha512", "random", "zlib", "platform", "_uuid",
    "uuid", "snakepit_bridge.telemetry._context", "_ast", "ast", "_opcode", "opcode",
    "dis", "inspect", "snakepit_bridge.telemetry._decorate",
    "snakepit_bridge.telemetry._policy", "snakepit_bridge.telemetry._buffer", "mmap",
    "_struct", "struct", "snakepit_bridge.telemetry._stream", "snakepit_bridge.telemetry",
    "org", "org.python", "org.python.core", "copy", "dataclasses",
    "snakepit_bridge.base_adapter", "snakepit_bridge", "snakepit_bridge.worker.adapter",
    "gettext", "argparse", "concurrent", "concurrent.futures._base", "concurrent.futures",
    "_heapq", "heapq", "_socket", "select", "selectors", "errno", "array", "socket",
    "_locale", "locale", "signal", "fcntl", "msvcrt", "_posixsubprocess", "subprocess",
    "_ssl", "binascii", "base64", "ssl", "asyncio.constants", "asyncio.coroutines",
    "asyncio.format_helpers", "asyncio.base_futures", "asyncio.exceptions",
    "asyncio.base_tasks", "_asyncio", "asyncio.events", "asyncio.futures",
    "asyncio.protocols", "asyncio.transports", "asyncio.log", "asyncio.sslproto",
    "asyncio.mixins", "asyncio.tasks", "asyncio.locks", "asyncio.staggered",
    "asyncio.trsock", "asyncio.base_events", "asyncio.runners", "asyncio.queues",
    "asyncio.streams", "asyncio.subprocess", "asyncio.taskgroups", "asyncio.timeouts",
    "asyncio.threads", "asyncio.base_subprocess", "asyncio.selector_events",
    "asyncio.unix_events", "asyncio", "gc", "ipaddress", "_json", "json.scanner",
    "json.decoder", "json.encoder", "json", "snakepit_bridge.telemetry._worker_api",
    "snakepit_bridge.logs", "snakepit_bridge.worker.codec", "_queue", "queue",
    "concurrent.futures.thread", "snakepit_bridge._wire.fields",
    "snakepit_bridge._wire.batch", "snakepit_bridge._wire.calls", "snakepit_bridge._wire",
    "snakepit_bridge.worker.own_events", "snakepit_bridge.worker.dispatcher",
    "snakepit_bridge.worker.resources", "snakepit_bridge.worker.tls",
    "snakepit_bridge.worker.transport", "_hashlib", "_blake2", "hashlib", "hmac",
    "snakepit_bridge.worker.transport.call_state",
    "snakepit_bridge.worker.transport.compat", "snakepit_bridge.worker.transport.aio",
    "snakepit_bridge.worker.transport.native", "snakepit_bridge.worker.cli",
    "snakepit_bridge.worker", "fnmatch", "_compression", "_bz2", "bz2", "_lzma", "lzma",
    "shutil", "uvloop.includes", "uvloop._noop", "uvloop.loop", "uvloop._version",
    "uvloop", "grpc._cython", "grpc._typing", "grpc._observability", "pkgutil",
    "grpc._cython.cygrpc", "grpc._compression", "grpc._runtime_protos",
    "grpc._grpcio_metadata", "grpc_tools", "grpc_health", "grpc_reflection",
    "typing_extensions", "grpc.aio._metadata", "grpc.aio._typing", "grpc.aio._base_call",
    "grpc.aio._base_channel", "grpc.aio._base_server", "grpc._common", "grpc.aio._call",
    "grpc.aio._utils", "grpc.aio._interceptor", "grpc.aio._channel", "grpc.aio._server",
    "grpc.aio", "grpc", "snakepit_bridge.generated", "google", "google.protobuf",
    "google.protobuf.internal", "google.protobuf.internal._api_implementation",
    "google.protobuf.message", "google.protobuf.internal.enum_type_wrapper",
    "google.protobuf.enable_deterministic_proto_serialization",
    "google.protobuf.internal.api_implementation", "google.protobuf.descriptor",
    "google.protobuf.descriptor_database", "google.protobuf.text_encoding",
    "google.protobuf.internal.python_edition_defaults", "_datetime", "datetime",
    "encodings.raw_unicode_escape", "encodings.unicode_escape", "numbers",
    "_compat_pickle", "_pickle", "pickle", "google.protobuf.internal.containers",
    "google.protobuf.internal.wire_format", "google.protobuf.internal.encoder",
    "google.protobuf.internal.decoder", "google.protobuf.internal.type_checkers",
    "google.protobuf.unknown_fields", "google.protobuf.text_format",
    "google.protobuf.internal.extension_dict", "google.protobuf.internal.message_listener",
    "calendar", "google.protobuf.internal.field_mask",
    "google.protobuf.internal.well_known_types", "google.protobuf.internal.python_message",
    "google.protobuf.descriptor_pool", "google.protobuf.runtime_version",
    "google.protobuf.pyext", "google.protobuf.pyext.cpp_message",
    "google.protobuf.message_factory", "google.protobuf.symbol_database",
    "google.protobuf.reflection", "google.protobuf.internal.builder",
    "google.protobuf.any_pb2", "google.protobuf.timestamp_pb2",
    "snakepit_bridge.generated.snakepit_bridge_pb2", "grpc._utilities",
    "snakepit_bridge._native",
)

IMPORTER = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
import time
print("ready", time.process_time() * 1e3, flush=True)
sys.stdin.read()
"""
FLOOR = "import sys, time; print('ready', time.process_time() * 1e3, flush=True); sys.stdin.read()"


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in kB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def time_to_line(cmd, env=None):
    """Starts ``cmd``, waits for its first stdout line: (ms, RSS kB, process)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True)
    line = p.stdout.readline()
    ms = (time.monotonic() - t0) * 1e3
    if not line:
        err = p.stderr.read()
        p.wait()
        raise RuntimeError(f"{cmd[:4]} exited before its first line: {err[-2000:]}")
    return ms, rss_kb(p.pid), p, t0, line


def stop(p) -> str:
    """Ends ``p`` (SIGTERM, then SIGKILL); its stderr."""
    p.terminate()
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    return err or ""


def _mp_child(conn) -> None:
    conn.send(time.process_time() * 1e3)
    conn.recv()


def mp_spawn_once():
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    t0 = time.monotonic()
    p = ctx.Process(target=_mp_child, args=(child,))
    p.start()
    cpu = parent.recv()
    ms = (time.monotonic() - t0) * 1e3
    rss = rss_kb(p.pid)
    parent.send("stop")
    p.join(10)
    if p.is_alive():
        p.kill()
        p.join()
    return ms, rss, cpu


class Worker:
    """A real worker on a Unix socket in ``tmp``."""

    def __init__(self, tmp: str, n: int, extra=()) -> None:
        self.sock = os.path.join(tmp, f"w{n}.sock")
        self.cmd = [sys.executable, *extra, "-m", "snakepit_bridge.worker", "--adapter",
                    ADAPTER, "--listen", f"unix:{self.sock}", "--worker-id", f"w{n}",
                    "--watch-stdin", "--telemetry-interval-s", "0"]

    def start(self, args=(), env=None):
        env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR), **(env or {}))
        self.ms, self.ready_rss, self.p, self.t0, line = time_to_line(
            self.cmd + list(args), env)
        self.ready = json.loads(line.split(" ", 1)[1])
        return self

    def serve_one_call(self):
        """The host's handshake and one call (``handshake``), then the
        worker's RSS (kB), then the worker stopped: ``(steps, rss)``."""
        try:
            steps = self.handshake()
            return steps, rss_kb(self.p.pid)
        finally:
            stop(self.p)

    def handshake(self) -> dict:
        """What the host does after the ready line, timed step by step (ms):
        connect and ``Describe`` on the main socket, open ``TelemetryStream``
        (its response headers), then one ``ping`` through ``CallBatchStream``
        on the native call socket. A Python client does it: the figures are
        the worker's answers plus this client's own cost."""
        import queue

        import grpc

        from snakepit_bridge.generated import snakepit_bridge_pb2 as pb

        # A plain authority: the native server refuses a socket path as one.
        opts = [("grpc.default_authority", "localhost")]
        steps, t = {}, time.monotonic()

        def step(name):
            nonlocal t
            now = time.monotonic()
            steps[name] = (now - t) * 1e3
            t = now

        controls: queue.Queue = queue.Queue()
        with grpc.insecure_channel(self.ready["listen"], options=opts) as main:
            main.unary_unary("/snakepit.bridge.BridgeService/Describe",
                             request_serializer=pb.DescribeRequest.SerializeToString,
                             response_deserializer=pb.DescribeReply.FromString)(
                pb.DescribeRequest(), timeout=30)
            step("connect+Describe")
            telemetry = main.stream_stream(
                "/snakepit.bridge.BridgeService/TelemetryStream",
                request_serializer=pb.TelemetryControl.SerializeToString,
                response_deserializer=lambda b: b)(iter(controls.get, None), timeout=30)
            controls.put(pb.TelemetryControl())
            telemetry.initial_metadata()
            step("TelemetryStream open")
            target = self.ready["calls"] or self.ready["listen"]
            with grpc.insecure_channel(target, options=opts) as ch:
                rpc = ch.stream_stream("/snakepit.bridge.BridgeService/CallBatchStream",
                                       request_serializer=pb.CallBatch.SerializeToString,
                                       response_deserializer=pb.CallReplyBatch.FromString)
                batch = pb.CallBatch(calls=[pb.CallRequest(request_id=1, tool_name="ping",
                                                           args_json=b"{}")])
                for reply in rpc(iter([batch]), timeout=30):
                    if reply.replies:
                        break
            step("connect+first call")
            controls.put(None)
            telemetry.cancel()
        return steps


def worker_imports(tmp: str):
    """The modules today's worker imports before its ready line (those
    reported before the start-up step line, which follows the ready line)."""
    w = Worker(tmp, 0, extra=("-X", "importtime")).start(DEBUG)
    time.sleep(0.2)
    err = stop(w.p)
    names = []
    for line in err.splitlines():
        if "startup:" in line:
            break
        if line.startswith("import time:") and "self [us]" not in line:
            name = line.split("|")[2].strip()
            if name not in names:
                names.append(name)
    return names


DEBUG = ("--stderr-log-level", "debug", "--log-level", "debug")
PHASE = re.compile(r"startup: (.*) \(ready at monotonic ([0-9.]+) s, process cpu ([0-9.]+) ms, "
                   r"before main ([0-9.]+) ms\)")
STEP = re.compile(r"([^,]+?) ([0-9.]+) ms cpu ([0-9.]+) ms")


def phases_of(stderr: str, t0: float):
    """The worker's start-up steps, ``{step: (wall ms, CPU ms)}``, the first
    "process+imports": from the spawn to ``main``; and its CPU time (ms) by
    the ready line."""
    m = PHASE.search(stderr)
    if not m:
        return {}, None
    steps = {k.strip(): (float(w), float(c)) for k, w, c in STEP.findall(m.group(1))}
    ready_at, cpu, before_main = float(m.group(2)), float(m.group(3)), float(m.group(4))
    wall = (ready_at - t0) * 1e3 - sum(w for w, _ in steps.values())
    return {"process+imports": (wall, before_main), **steps}, cpu


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    # As an installed package is (pip compiles a wheel's modules): else, with
    # PYTHONDONTWRITEBYTECODE, every process here compiles the sources again.
    compileall.compile_dir(str(PYTHON_DIR / "snakepit_bridge"), quiet=1)
    out: dict = {"rounds": args.rounds}
    series: dict = {}

    def add(key, ms, rss, cpu=None):
        series.setdefault(key + "_ready_ms", []).append(ms)
        series.setdefault(key + "_rss_kb", []).append(rss)
        if cpu is not None:
            series.setdefault(key + "_ready_cpu_ms", []).append(cpu)

    def first_line(cmd, env):
        """(ms, RSS kB, CPU ms the process reports on its first line)."""
        ms, rss, p, _, line = time_to_line(cmd, env)
        stop(p)
        return ms, rss, float(line.split()[1])

    with tempfile.TemporaryDirectory(prefix="snakepit-startup-") as tmp:
        after = worker_imports(tmp)
        out["before_imports_modules"] = len(BEFORE_MODULES)
        out["after_imports_modules"] = len(after)
        out["dropped_modules"] = sorted(set(BEFORE_MODULES) - set(after))
        out["added_modules"] = sorted(set(after) - set(BEFORE_MODULES))
        env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
        phases: dict = {}
        for r in range(args.rounds):
            add("floor", *first_line([sys.executable, "-c", FLOOR], env))
            add("mp_spawn", *mp_spawn_once())
            for key, names in (("before_imports", BEFORE_MODULES),
                               ("after_imports", after)):
                add(key, *first_line([sys.executable, "-c", IMPORTER, *names], env))
            w = Worker(tmp, 2 * r + 1).start()
            steps, rss = w.serve_one_call()
            for k, v in steps.items():
                phases.setdefault("host: " + k, []).append((v, None))
            add("worker", w.ms, rss)
            series.setdefault("worker_ready_rss_kb", []).append(w.ready_rss)
            w = Worker(tmp, 2 * args.rounds + r + 1).start(env={"SNAKEPIT_NATIVE_CALLS": "0"})
            add("aio_worker", w.ms, w.serve_one_call()[1])
            w = Worker(tmp, 2 * r + 2).start(DEBUG)
            time.sleep(0.2)  # the step line follows the ready line
            steps, cpu = phases_of(stop(w.p), w.t0)
            for k, v in steps.items():
                phases.setdefault(k, []).append(v)
            if cpu is not None:
                series.setdefault("worker_ready_cpu_ms", []).append(cpu)
    for key, values in series.items():
        out[key] = summary(values)

    def median_cpu(values):
        cpu = [c for _, c in values if c is not None]
        return statistics.median(cpu) if cpu else None

    # In order: the worker's steps to its ready line, then the host's:
    # [step, wall ms, CPU ms or None].
    order = sorted(phases, key=lambda k: k.startswith("host: "))
    out["worker_phases_ms"] = [[k, statistics.median(w for w, _ in phases[k]),
                                median_cpu(phases[k])] for k in order]

    if args.json:
        print(json.dumps(out))
        return
    for key, v in out.items():
        print(f"{key}: {v}")


if __name__ == "__main__":
    main()
