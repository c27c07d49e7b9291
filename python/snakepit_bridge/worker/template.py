"""The template process of a pool (``start_method = "template"``): it imports
the adapter module once, runs the adapter class's optional ``preload()``
(a classmethod or staticmethod: load a model, build a read-only table), and
then forks one worker per host request. Each child serves exactly as a
spawned worker does (``cli.main``), sharing the preloaded memory
copy-on-write.

``python -m snakepit_bridge.worker.template --adapter mod:Class --control PATH``

Protocol with the host, over the Unix stream socket at ``--control`` (the
host listens, the template connects):

* template -> host, once after preload: ``{"ready": PID}`` or
  ``{"error": "why"}`` (then it exits 3), one JSON line.
* host -> template, one request at a time: a 4-byte big-endian length and a
  JSON object ``{"argv": [...], "env": {...}}`` (the worker's command line,
  and its own variables such as ``SNAKEPIT_TOKEN``: never on a command
  line), sent with three file descriptors (SCM_RIGHTS): the child's stdin,
  stdout and stderr.
* template -> host: ``{"pid": PID}`` (forked) or ``{"error": "why"}``; and,
  at any time, ``{"exited": PID, "status": "exit status 0"}`` when a child
  it forked ends.

Fork-safety rules (docs/reliability.md, "Template workers"):

* no thread may run in the template: it is checked after preload and before
  every fork (``/proc/self/task``), and a fork is refused naming the threads;
* no gRPC server, event loop or native server is alive in the template:
  their modules are imported (``SERVER_MODULES``, which start no thread),
  and each child creates its own server after the fork;
* each child gets fresh state: ``random`` reseeds itself at fork, and
  ``_fresh_child_state`` clears the telemetry buffer, the trace id prefix
  and the correlation context inherited from the template;
* each child keeps only the three descriptors the host sent (dup'ed onto
  0, 1, 2); every other inherited descriptor is closed.

The template exits when its stdin (held by the host) reaches EOF or the
control socket closes; the children it forked watch their own stdin.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import traceback

from .adapter import AdapterError, adapter_class

EXIT_ADAPTER_ERROR = 3
# Largest request the template accepts (bytes): a worker's command line and
# a few variables.
MAX_REQUEST = 1 << 20


def parse_args(argv=None):
    """The template's options."""
    p = argparse.ArgumentParser(prog="python -m snakepit_bridge.worker.template",
                                description="snakepit-rs pool template process")
    p.add_argument("--adapter", required=True, help="package.module:Class")
    p.add_argument("--control", required=True,
                   help="the host's Unix socket for fork requests")
    return p.parse_args(argv)


def other_threads():
    """Names of the threads running besides this one: Python threads by
    name, native ones by their /proc comm. Empty when forking is safe."""
    me = threading.get_native_id()
    names = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        tids = []
    by_tid = {t.native_id: t.name for t in threading.enumerate()}
    for tid in sorted(tids):
        if int(tid) == me:
            continue
        name = by_tid.get(int(tid))
        if name is None:
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = f"native thread {f.read().strip()!r}"
            except OSError:
                name = "native thread"
        names.append(f"{name} (tid {tid})")
    return names


def thread_refusal(names) -> str:
    """The error for a template that runs threads (named)."""
    return ("the template runs other threads, so forking it is unsafe (a forked "
            "child would inherit their locks, not the threads): "
            + ", ".join(names)
            + ". Start threads in the worker (the adapter's __init__), not in "
              "preload() or at import, or use start_method = \"spawn\"")


# Modules every worker imports when it starts serving: imported (never
# started) in the template, so each fork skips them. Importing them starts
# no thread (checked before every fork); creating their servers would, so
# that happens in the child. The template's workers listen on Unix sockets,
# where the native server serves every RPC: its module is imported when it
# can run (``transport.native.unavailable``), else grpc (GRPC_MODULES).
SERVER_MODULES = ("snakepit_bridge.generated.snakepit_bridge_pb2", "uvloop")
GRPC_MODULES = ("grpc", "grpc.aio")


def _preimport() -> None:
    import importlib

    from .transport import native

    for name in SERVER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # optional (uvloop): the child does without
    if native.unavailable() is not None:
        for name in GRPC_MODULES:
            importlib.import_module(name)
    # Tables the worker would otherwise build at its first telemetry batch.
    from .._wire import batch

    batch._ts_lo_table()


def _fresh_child_state() -> None:
    """What the child must not share with the template or its siblings."""
    from ..telemetry import _buffer, _context

    _buffer._buf.clear()
    _buffer._TRACE_PREFIX = f"{int.from_bytes(os.urandom(8), 'big') or 1:016x}"
    _context.cid_var.set(None)
    _context.span_var.set(None)


def _send(sock, obj) -> None:
    sock.sendall((json.dumps(obj, separators=(",", ":")) + "\n").encode())


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal"
        return f"killed by signal {sig} ({name})"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _reap(sock) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"exited": pid, "status": _describe(status)})


def _recv_request(sock):
    """One request: (argv, env, [stdin, stdout, stderr]) or None at EOF."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST + 4, 3)
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
        if len(data) >= 4 and struct.unpack(">I", data[:4])[0] > MAX_REQUEST:
            raise ValueError(f"fork request over {MAX_REQUEST} bytes")
        more = sock.recv(MAX_REQUEST)
        if not more:
            return None
        data += more
    req = json.loads(data[4:])
    return req["argv"], req.get("env", {}), fds


def _child(argv, env, fds) -> None:
    """In the forked child: becomes the worker; never returns."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.environ.update(env)
        _fresh_child_state()
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        from . import cli

        cli.main(argv)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        sys.stderr.flush()
    os._exit(1)


def serve(adapter: str, control: str) -> int:
    """Imports and preloads the adapter, then forks workers on request until
    stdin or the control socket closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(control)
    try:
        cls = adapter_class(adapter)
        preload = getattr(cls, "preload", None)
        if preload is not None:
            preload()
    except AdapterError as e:
        _send(sock, {"error": f"SNAKEPIT_ADAPTER_ERROR: {e}"})
        traceback.print_exc()
        return EXIT_ADAPTER_ERROR
    except Exception as e:  # noqa: BLE001
        _send(sock, {"error": f"SNAKEPIT_ADAPTER_ERROR: preload() of {adapter} raised {e!r}"})
        traceback.print_exc()
        return EXIT_ADAPTER_ERROR
    _preimport()
    threads = other_threads()
    if threads:
        _send(sock, {"error": thread_refusal(threads)})
        return 1
    # What is loaded so far is never scanned by the children's collector:
    # their collections neither copy these pages nor spend time on them.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send(sock, {"ready": os.getpid()})
    while True:
        ready, _, _ = select.select([sock, 0, wake_r], [], [])
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            _reap(sock)
        if 0 in ready and not os.read(0, 4096):
            return 0
        if sock not in ready:
            continue
        request = _recv_request(sock)
        if request is None:
            return 0
        argv, env, fds = request
        try:
            if len(fds) != 3:
                _send(sock, {"error": f"a fork request needs 3 descriptors, got {len(fds)}"})
                continue
            threads = other_threads()
            if threads:
                _send(sock, {"error": thread_refusal(threads)})
                continue
            pid = os.fork()
            if pid == 0:
                _child(argv, env, fds)
            _send(sock, {"pid": pid})
        finally:
            for fd in fds:
                os.close(fd)


def main(argv=None) -> int:
    """``python -m snakepit_bridge.worker.template``: serves, then exits."""
    opts = parse_args(argv)
    # stdout is not the host's to read: keep it off fd 1 as a worker does.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    rc = serve(opts.adapter, opts.control)
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
