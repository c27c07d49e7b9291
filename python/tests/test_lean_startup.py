"""A worker's start-up: what it loads before its ready line, and the steps
it times (``cli.StartupPhases``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from conftest import PYTHON_DIR

from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.telemetry import new_correlation_id

DEBUG = ("--stderr-log-level", "debug", "--log-level", "debug")
# Loaded by the worker only when needed: a token check (hmac, hashlib), a
# TCP address (ipaddress), help text width (shutil, bz2, lzma), never uuid;
# grpc only where grpc.aio serves (TCP, or no native server).
NOT_BEFORE_READY = {"hmac", "hashlib", "ipaddress", "shutil", "bz2", "lzma", "uuid",
                    "platform", "grpc"}


def startup_line(w, timeout: float = 10.0) -> str:
    """The worker's "startup:" debug line (it follows the ready line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in w.stderr().splitlines():
            if " startup: " in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no startup line: {w.stderr()}")


def imported_before_ready(w) -> list:
    """Modules ``PYTHONPROFILEIMPORTTIME`` reported before the startup line."""
    startup_line(w)
    names = []
    for line in w.stderr().splitlines():
        if " startup: " in line:
            return names
        if line.startswith("import time:") and "self [us]" not in line:
            names.append(line.split("|")[2].strip())
    raise AssertionError("the startup line went missing")


def test_a_worker_loads_neither_grpc_nor_token_nor_tcp_helpers_before_it_is_ready(
        start_worker):
    w = start_worker(*DEBUG, env={"PYTHONPROFILEIMPORTTIME": "1"})
    names = imported_before_ready(w)
    # The list is the real one: the worker's own modules and the native server are in it.
    assert {"snakepit_bridge.worker.cli", "snakepit_bridge._native", "asyncio"} <= set(names), \
        names
    assert not NOT_BEFORE_READY & set(names), sorted(NOT_BEFORE_READY & set(names))


def test_a_worker_without_the_native_server_loads_grpc_and_serves_with_grpc_aio(start_worker):
    w = start_worker(*DEBUG, env={"PYTHONPROFILEIMPORTTIME": "1", "SNAKEPIT_NATIVE_CALLS": "0"})
    assert "grpc" in imported_before_ready(w)
    assert "grpc.aio server " in startup_line(w)
    assert w.connect().Ping(pb.PingRequest(message="x"), timeout=10).message == "pong: x"


def test_a_worker_with_a_token_checks_it_at_the_first_rpc(start_worker):
    w = start_worker(*DEBUG, token="s3cret", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert "hmac" not in imported_before_ready(w)
    reply = w.connect().Ping(pb.PingRequest(message="x"), timeout=10,
                             metadata=[("x-snakepit-token", "s3cret")])
    assert reply.message == "pong: x"
    import grpc
    import pytest

    with pytest.raises(grpc.RpcError) as e:
        w.connect().Ping(pb.PingRequest(message="x"), timeout=10,
                         metadata=[("x-snakepit-token", "wrong")])
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_startup_steps_are_logged_at_debug_level_after_the_ready_line(start_worker):
    w = start_worker(*DEBUG)
    line = startup_line(w)
    assert "DEBUG" in line and w.worker_id in line, line
    steps = ["options+logs", "event loop", "stubs", "adapter", "native server", "ready line"]
    at = [line.index(f"{s} ") for s in steps]
    assert at == sorted(at), line
    assert "process cpu" in line and "before main" in line, line
    quiet = start_worker()
    time.sleep(0.3)
    assert " startup: " not in quiet.stderr()


def test_correlation_ids_are_uuid4_strings():
    ids = {new_correlation_id() for _ in range(1000)}
    assert len(ids) == 1000
    for cid in ids:
        u = uuid.UUID(cid)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == cid


def test_help_fits_the_width_in_columns_and_survives_a_bad_one():
    def help_with(columns: str) -> str:
        env = dict(os.environ, COLUMNS=columns, PYTHONPATH=str(PYTHON_DIR))
        out = subprocess.run([sys.executable, "-m", "snakepit_bridge.worker", "--help"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "--adapter" in out.stdout
        return out.stdout

    narrow, wide = help_with("50"), help_with("200")
    assert len(narrow.splitlines()) > len(wide.splitlines()), (narrow, wide)
    assert max(len(line) for line in wide.splitlines()) > 50, wide
    assert help_with("not-a-number") == help_with("0") == help_with("80")
