"""A sync tool past its timeout: a tool still queued for a thread is
cancelled and answered ``Timeout`` at its deadline; a tool already running
cannot be stopped, so its ``Timeout`` comes only once its thread is free
(the host counts a call unanswered long after its timeout as stuck)."""

import json
import time

from snakepit_bridge.generated import snakepit_bridge_pb2 as pb


def call_req(rid, tool, args=None, **kw):
    return pb.CallRequest(request_id=rid, tool_name=tool,
                          args_json=json.dumps(args or {}).encode(), **kw)


def test_timeout_is_answered_when_the_thread_is_free(start_worker, stream_clients):
    w = start_worker("--threads", "1", "--telemetry-interval-s", "0")
    sc = stream_clients(w.connect().CallStream)
    t0 = time.monotonic()
    # Runs 1.5 s on the only thread, timeout 200 ms.
    sc.send(call_req(1, "sleep", {"ms": 1500}, timeout_ms=200))
    # Waits for that thread, timeout 300 ms: never starts.
    sc.send(call_req(2, "sleep", {"ms": 1}, timeout_ms=300))
    got = {}
    while len(got) < 2:
        r = sc.get(timeout=20)
        assert r is not None, sc.error
        got[r.request_id] = (r, time.monotonic() - t0)
    queued, queued_at = got[2]
    running, running_at = got[1]
    assert queued.error.type == "Timeout"
    assert running.error.type == "Timeout"
    # The queued call is answered at its deadline, the running one only when
    # its thread is done (well after its own 200 ms deadline).
    assert queued_at < running_at
    assert running_at >= 1.4
    # The cancelled call never ran: the thread is free for the next one.
    sc.send(call_req(3, "sleep", {"ms": 1}, timeout_ms=5000))
    r = sc.get(timeout=20)
    assert r.request_id == 3 and json.loads(r.result.result_json) == {"slept_ms": 1}
