"""The worker's command line and lifetime: options, the exposure check, TLS,
serving (the native server on a Unix socket, else a grpc.aio server;
resource sampler, stop signals, graceful stop), and the process tuning
(GC, uvloop).

Protocol with the host: see ``snakepit_bridge.worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback

from .. import PROTOCOL_VERSION
from .. import logs as worker_logs
from ..telemetry import _worker_api as tel
from .adapter import AdapterError, load_adapter
from .codec import DEFAULT_MAX_MESSAGE_BYTES, MESSAGE_HEADROOM_BYTES, set_max_message_bytes
from .dispatcher import Dispatcher
from .own_events import install_gc_events
from .resources import resource_sampler
from .tls import CERT_FLAG, CLIENT_CA_FLAG, KEY_FLAG, TlsConfigError, server_credentials
from .transport.aio import Servicer, build_handler
from .transport.native import start_native

EXIT_ADAPTER_ERROR = 3
EXIT_USAGE = 2

log = logging.getLogger("snakepit_bridge.worker")


def parse_args(argv=None):
    """The worker's options (see ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m snakepit_bridge.worker",
                                description="snakepit-rs Python worker",
                                formatter_class=_HelpFormatter)
    p.add_argument("--adapter", required=True, help="package.module:Class")
    p.add_argument("--check", action="store_true",
                   help="load the adapter, print its tools and exit (0), or print why "
                        "it does not load and exit (3); serves nothing")
    p.add_argument("--listen", help="unix:PATH or HOST:PORT (port 0: any); required "
                                    "unless --check")
    p.add_argument("--worker-id", help="required unless --check")
    p.add_argument("--token", default=os.environ.get("SNAKEPIT_TOKEN") or None,
                   help="require metadata x-snakepit-token on every RPC, on every "
                        "socket. Prefer $SNAKEPIT_TOKEN: a command line is readable "
                        "by every local user (/proc/PID/cmdline)")
    p.add_argument(INSECURE_FLAG, action="store_true",
                   default=os.environ.get(INSECURE_ENV) == "1",
                   help="serve a non-loopback TCP address without a token: anyone "
                        f"who reaches the port can run every tool (or ${INSECURE_ENV}=1)")
    p.add_argument(CERT_FLAG, default=os.environ.get("SNAKEPIT_TLS_CERT") or None,
                   help="serve TLS on a TCP address with this PEM certificate (chain) "
                        "(or $SNAKEPIT_TLS_CERT); needs --tls-key")
    p.add_argument(KEY_FLAG, default=os.environ.get("SNAKEPIT_TLS_KEY") or None,
                   help="the PEM private key of --tls-cert (or $SNAKEPIT_TLS_KEY)")
    p.add_argument(CLIENT_CA_FLAG, default=os.environ.get("SNAKEPIT_TLS_CLIENT_CA") or None,
                   help="require a client certificate signed by this PEM CA (mTLS) "
                        "(or $SNAKEPIT_TLS_CLIENT_CA)")
    p.add_argument("--pool-name", default="")
    p.add_argument("--telemetry-interval-s", type=float, default=5.0,
                   help="resource sampling interval (0 disables)")
    p.add_argument("--telemetry-buffer", type=int,
                   default=int(os.environ.get("SNAKEPIT_TELEMETRY_BUFFER", "10000")),
                   help="max buffered events before drops (default 10000 or "
                        "$SNAKEPIT_TELEMETRY_BUFFER)")
    p.add_argument("--log-buffer", type=int, default=10_000)
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "none"],
                   help="initial root log level (the host's policy may change it)")
    p.add_argument("--stderr-log-level", default="warning",
                   choices=["debug", "info", "warning", "error", "none"])
    p.add_argument("--grace-s", type=float, default=5.0,
                   help="on SIGTERM, time calls in flight get to finish")
    p.add_argument("--threads", type=int, default=min(32, (os.cpu_count() or 1) + 4),
                   help="thread pool size for sync tools")
    p.add_argument("--max-message-bytes", type=_message_limit,
                   default=os.environ.get("SNAKEPIT_MAX_MESSAGE_BYTES",
                                          str(DEFAULT_MAX_MESSAGE_BYTES)),
                   help="largest tool result in bytes (JSON plus binary results); a larger "
                        "one is that call's ResultTooLarge error. Set it as the host's "
                        "max_message_bytes (default 64 MiB or $SNAKEPIT_MAX_MESSAGE_BYTES)")
    p.add_argument("--watch-stdin", action="store_true", help="exit when stdin hits EOF")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this pid is gone")
    opts = p.parse_args(argv)
    if not opts.check:
        missing = [f for f, v in (("--listen", opts.listen), ("--worker-id", opts.worker_id))
                   if not v]
        if missing:
            p.error(f"the following arguments are required: {', '.join(missing)}")
    return opts


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, told the terminal width: argparse builds one per
    ``add_argument`` and, left to find the width itself, imports ``shutil``
    (and ``bz2``, ``lzma`` behind it) at every worker start."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    """The terminal width as ``shutil.get_terminal_size`` finds it: a
    positive ``$COLUMNS``, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


def check(adapter_path: str) -> int:
    """``--check``: loads the adapter and prints its tools (exit 0), or the
    reason and traceback it does not load (exit EXIT_ADAPTER_ERROR)."""
    try:
        _, tools = load_adapter(adapter_path)
    except AdapterError as e:
        sys.stderr.write(f"SNAKEPIT_ADAPTER_ERROR: {e}\n")
        traceback.print_exc(file=sys.stderr)
        return EXIT_ADAPTER_ERROR
    print(f"{adapter_path} loads: {len(tools)} tools: {', '.join(sorted(tools))}")
    return 0


# The opt-out that lets a worker serve a non-loopback address without a token.
INSECURE_FLAG = "--insecure-no-token-on-network"
INSECURE_ENV = "SNAKEPIT_INSECURE_NO_TOKEN"


def counters_path(listen: str):
    """Where a worker listening on ``unix:PATH`` keeps its accepted-events
    count for the host (``PATH.counters``, in the host's private socket
    directory); None on TCP."""
    if listen.startswith("unix:"):
        return listen[len("unix:"):] + ".counters"
    return None


def is_loopback_listen(listen: str) -> bool:
    """Is ``listen`` (``unix:PATH`` or ``HOST:PORT``) reachable only from this
    machine? Unix sockets and loopback addresses (``127.0.0.0/8``, ``::1``,
    ``localhost``) are; any other host, and the wildcards ``0.0.0.0`` and
    ``[::]``, are not."""
    if listen.startswith("unix:"):
        return True
    host = listen.rsplit(":", 1)[0].strip("[]").lower()
    if host == "localhost":
        return True
    import ipaddress  # only for TCP addresses: a worker on a Unix socket never loads it

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(listen: str, token, insecure: bool):
    """The reason a worker must not start, or None. A worker reachable from
    the network without a token would run tools for anyone."""
    if token or is_loopback_listen(listen):
        return None
    if insecure:
        log.warning("worker listens on %s WITHOUT A TOKEN (%s): anyone who reaches "
                    "this port can run every tool", listen, INSECURE_FLAG)
        return None
    return (f"refusing to listen on {listen!r} without a token: it is reachable from "
            f"the network and anyone could run every tool. Set SNAKEPIT_TOKEN (the "
            f"host sends it as x-snakepit-token), listen on a loopback address or a "
            f"unix: socket, or pass {INSECURE_FLAG} to accept the risk")


def _message_limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes >= 1024")
    return n


def _redirect_stdout():
    """Keep the real stdout for the readiness line; send everything else to stderr."""
    sys.stdout.flush()
    ready_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(ready_fd, "w", buffering=1, encoding="utf-8")


def _parent_alive(pid: int) -> bool:
    if os.getppid() != pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StartupPhases:
    """When each start-up step of the worker ended, by ``time.monotonic()``
    (the clock every process of the machine shares) and by the process's
    CPU time, logged at debug level after the ready line: ``startup:
    options+logs 3.1 ms cpu 2.9 ms, stubs 20.0 ms cpu 19.2 ms, ...``.
    ``mark`` is cheap: the worker marks every step."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()
        self.marks: list = []

    def mark(self, name: str) -> None:
        """``name`` ended now."""
        self.marks.append((name, time.monotonic(), time.process_time()))

    def summary(self) -> str:
        """Each step's wall and CPU time in ms; then the monotonic time of
        the last mark and the CPU time the process had used by then
        (interpreter start and imports included)."""
        parts, prev, prev_cpu = [], self.t0, self.cpu0
        for name, t, cpu in self.marks:
            parts.append(f"{name} {(t - prev) * 1e3:.1f} ms cpu {(cpu - prev_cpu) * 1e3:.1f} ms")
            prev, prev_cpu = t, cpu
        return (", ".join(parts) + f" (ready at monotonic {prev:.6f} s, "
                f"process cpu {prev_cpu * 1e3:.1f} ms, before main {self.cpu0 * 1e3:.1f} ms)")


def start_servers(opts, servicer, pb, credentials):
    """Builds the grpc.aio server of the main socket (``servicer``'s RPCs),
    where the native server does not serve it (TCP; native server off or
    not built), and binds it: returns ``(server, listen)``, ``listen`` with
    the port chosen when it was 0, or raises ``OSError`` naming the
    address. The caller starts it (``await server.start()``)."""
    import grpc

    wire_limit = opts.max_message_bytes + MESSAGE_HEADROOM_BYTES
    options = [
        ("grpc.max_receive_message_length", wire_limit),
        ("grpc.max_send_message_length", wire_limit),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((build_handler(servicer, pb),))
    listen = opts.listen
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except Exception as e:  # noqa: BLE001
        raise OSError(f"cannot listen on {listen!r}: {e}") from e
    if not listen.startswith("unix:") and listen.rsplit(":", 1)[-1] == "0":
        listen = f"{listen.rsplit(':', 1)[0]}:{port}"
    return server, listen


async def serve(opts, ready_out, phases: StartupPhases | None = None) -> int:
    """Runs the worker until it is told to stop; returns the exit code.

    Writes the ready line to ``ready_out`` once the servers listen.
    ``phases`` (made here when None) times the steps up to it.
    """
    phases = phases or StartupPhases()
    phases.mark("event loop")
    refused = check_exposure(opts.listen, opts.token, opts.insecure_no_token_on_network)
    if refused:
        sys.stderr.write(f"SNAKEPIT_LISTEN_ERROR: {refused}\n")
        sys.stderr.flush()
        return 1

    try:
        credentials = server_credentials(opts.listen, opts.tls_cert, opts.tls_key,
                                         opts.tls_client_ca)
    except TlsConfigError as e:
        sys.stderr.write(f"SNAKEPIT_LISTEN_ERROR: {e}\n")
        sys.stderr.flush()
        return 1

    from ..generated import snakepit_bridge_pb2 as pb

    phases.mark("stubs")
    try:
        adapter, tools = load_adapter(opts.adapter)
    except AdapterError as e:
        sys.stderr.write(f"SNAKEPIT_ADAPTER_ERROR: {e}\n")
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        return EXIT_ADAPTER_ERROR
    phases.mark("adapter")

    dispatcher = Dispatcher(tools, opts.worker_id, opts.threads)
    servicer = Servicer(pb, dispatcher, opts, opts.adapter)
    set_max_message_bytes(opts.max_message_bytes)
    listen = opts.listen
    counters = counters_path(listen)
    if counters is not None:
        try:
            tel.open_counters(counters)
        except OSError as e:
            log.warning("cannot keep the accepted-events count in %s (%s): events "
                        "accepted after the last telemetry batch are not counted if "
                        "the worker dies", counters, e)
            counters = None
    server = None
    try:
        servicer.native = start_native(servicer, listen)
        if servicer.native is None:
            # grpc is imported here only: a worker on a Unix socket never loads it.
            server, listen = start_servers(opts, servicer, pb, credentials)
    except OSError as e:
        sys.stderr.write(f"SNAKEPIT_LISTEN_ERROR: {e}\n")
        return 1
    if server is None:
        phases.mark("native server")
    else:
        await server.start()
        phases.mark("grpc.aio server")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason = {"why": ""}

    def request_stop(why: str) -> None:
        if not stop.is_set():
            reason["why"] = why
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, request_stop, signal.Signals(sig).name)
        except (NotImplementedError, RuntimeError):
            pass

    if opts.watch_stdin:
        def watch_stdin():
            try:
                while True:
                    data = os.read(0, 65536)
                    if not data:
                        break
            except OSError:
                pass
            loop.call_soon_threadsafe(request_stop, "stdin EOF")

        threading.Thread(target=watch_stdin, name="snakepit-stdin", daemon=True).start()

    bg = []
    if opts.parent_pid:
        async def watch_parent():
            while _parent_alive(opts.parent_pid):
                await asyncio.sleep(0.25)
            request_stop(f"parent {opts.parent_pid} gone")

        bg.append(asyncio.ensure_future(watch_parent()))
    if opts.telemetry_interval_s and opts.telemetry_interval_s > 0:
        bg.append(asyncio.ensure_future(
            resource_sampler(opts.telemetry_interval_s, opts.worker_id)))

    loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
    gc_mode = _tune_gc()
    install_gc_events()
    phases.mark("ready line")
    ready = {"worker_id": opts.worker_id, "pid": os.getpid(), "listen": listen,
             "protocol": PROTOCOL_VERSION, "event_loop": loop_kind, "gc": gc_mode,
             "calls": servicer.call_address}
    ready_out.write("SNAKEPIT_READY " + json.dumps(ready, separators=(",", ":")) + "\n")
    ready_out.flush()
    log.info("worker %s ready on %s (adapter %s, %d tools)", opts.worker_id, listen,
             opts.adapter, len(tools))
    log.debug("worker %s startup: %s", opts.worker_id, phases.summary())

    await stop.wait()
    log.info("worker %s stopping: %s", opts.worker_id, reason["why"])
    # Graceful stop: refuse new calls, let calls in flight finish within the grace
    # period, flush telemetry, then close the streams and the server.
    dispatcher.draining = True
    try:
        await asyncio.wait_for(dispatcher.idle.wait(), opts.grace_s)
    except TimeoutError:
        log.warning("%d calls still running after %.1fs grace", dispatcher.inflight,
                    opts.grace_s)
    servicer.close_call_streams()
    servicer.telemetry_stop.set()
    try:
        await asyncio.wait_for(servicer.telemetry_done.wait(), 1.0)
    except TimeoutError:
        pass
    for t in bg:
        t.cancel()
    if servicer.native is not None:
        servicer.native.close()
    if server is not None:
        await server.stop(0.5)
    if counters is not None:
        tel.close_counters(counters)
    dispatcher.pool.shutdown(wait=False, cancel_futures=True)
    del adapter
    return 0


# Cyclic-GC thresholds of a worker (generation 0, 1, 2); see _tune_gc.
GC_THRESHOLDS = (50_000, 20, 100)


def _tune_gc() -> str:
    """Unless SNAKEPIT_GC=default: freeze the heap loaded so far and raise the
    cyclic GC thresholds to GC_THRESHOLDS. Returns "tuned" or "default".

    Only the young generations are collected first: a full collection of
    the start-up heap (grpc, protobuf, asyncio, the adapter) took about
    10 ms of CPU before the ready line and found nothing to free (the
    imports leave no cyclic garbage in the old generation).

    Every buffered telemetry event is a GC-tracked tuple (it holds the
    measurement and metadata dicts), so during a burst the default
    thresholds (700, 10, 10) run full collections over a growing buffer
    again and again: about half of the cost of ``emit``. Frozen objects
    (the adapter, its libraries, grpc) are never scanned again; cyclic
    garbage is still collected, every 50,000 allocations net instead of
    every 700.
    """
    if os.environ.get("SNAKEPIT_GC", "").lower() == "default":
        return "default"
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return "tuned"


def _use_uvloop() -> bool:
    """uvloop runs the event loop when installed, unless SNAKEPIT_EVENT_LOOP=asyncio."""
    if os.environ.get("SNAKEPIT_EVENT_LOOP", "").lower() == "asyncio":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    """``python -m snakepit_bridge.worker``: parses ``argv``, serves, and ends
    the process (``os._exit``) with the exit code."""
    phases = StartupPhases()
    opts = parse_args(argv)
    if opts.check:
        sys.stdout.flush()
        rc = check(opts.adapter)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    ready_out = _redirect_stdout()
    tel.set_buffer_capacity(opts.telemetry_buffer)
    worker_logs.install(stderr_level=opts.stderr_log_level, capacity=opts.log_buffer,
                        root_level=opts.log_level)
    phases.mark("options+logs")
    try:
        if _use_uvloop():
            import uvloop

            rc = uvloop.run(serve(opts, ready_out, phases))
        else:
            rc = asyncio.run(serve(opts, ready_out, phases))
    except KeyboardInterrupt:
        rc = 0
    sys.stderr.flush()
    # Tool threads may still be running after the grace period: do not wait for them.
    os._exit(rc)


