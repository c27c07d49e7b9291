"""The worker process: ``python -m snakepit_bridge.worker --adapter mod:Class ...``.

Protocol with the host (see python/README.md):
* After the gRPC server has bound and started, exactly one line is written to
  stdout: ``SNAKEPIT_READY {"worker_id": ..., "pid": ..., "listen": ...,
  "protocol": 1, "event_loop": "uvloop"|"asyncio", "gc": "tuned"|"default",
  "calls": "unix:<socket>.calls"|""}`` (``gc``: see ``cli._tune_gc``;
  ``SNAKEPIT_GC=default`` keeps CPython's settings; ``calls``: the native
  call server, see ``transport.native``). Nothing else is ever
  written to stdout (Python-level and fd-level stdout are redirected to
  stderr before the adapter is imported).
* SIGTERM/SIGINT: graceful stop; calls in flight finish (up to --grace-s),
  the telemetry stream is flushed, exit code 0.
* --watch-stdin: exit when stdin reaches EOF; --parent-pid: exit when that
  process is gone.
* Adapter load failure: ``SNAKEPIT_ADAPTER_ERROR: <message>`` and the traceback
  on stderr, exit code 3.

The package, one job per module:

* ``adapter``: loading ``package.module:Class`` and its tools;
* ``codec``: arguments in, results out (JSON and binary), with the result
  checks (NaN, lone surrogates, the message size limit) and ToolFailure;
* ``dispatcher``: running a call's tool with its telemetry, context,
  timeout and error capture;
* ``transport.aio``: the grpc.aio servicer the host uses (CallBatchStream,
  TelemetryStream, health, Describe); ``transport.compat``: the
  compatibility RPCs (ExecuteTool, ExecuteStreamingTool, CallStream,
  StreamTelemetry) for other clients; ``transport.native``: CallBatchStream
  on the native call socket; ``transport.call_state``: what both call
  transports share;
* ``resources``: /proc memory and CPU sampling;
* ``cli``: options, the exposure check, serve(), GC and event-loop tuning,
  ``main`` (run by ``__main__``).
"""

from .adapter import AdapterError, load_adapter
from .cli import (
    EXIT_ADAPTER_ERROR,
    EXIT_USAGE,
    INSECURE_ENV,
    INSECURE_FLAG,
    check_exposure,
    is_loopback_listen,
    main,
    parse_args,
    serve,
)
from .codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MESSAGE_HEADROOM_BYTES,
    ToolFailure,
    decode_args,
    encode_result,
    max_message_bytes,
    set_max_message_bytes,
)
from .dispatcher import Dispatcher
from .transport.aio import TOKEN_HEADER, Servicer, build_handler

__all__ = [
    "AdapterError", "DEFAULT_MAX_MESSAGE_BYTES", "Dispatcher", "EXIT_ADAPTER_ERROR",
    "EXIT_USAGE", "INSECURE_ENV", "INSECURE_FLAG", "MESSAGE_HEADROOM_BYTES", "Servicer",
    "TOKEN_HEADER", "ToolFailure", "build_handler", "check_exposure", "decode_args",
    "encode_result", "is_loopback_listen", "load_adapter", "main", "max_message_bytes",
    "parse_args", "serve", "set_max_message_bytes",
]
