"""The session of the current call, and state kept per session in this worker.

A host call made with ``Pool::execute_in_session(session_id, ...)`` carries
its session id; while the tool runs it is current here::

    from snakepit_bridge import session
    session.get_session_id()        # "user-42", or None outside a session call
    session.state()                 # this session's dict (kept between calls)

The host sends every call of a session to the same worker while that worker
lives, so a tool finds in ``state()`` what earlier calls of the session put
there. State is forgotten when the session has not been used for
``IDLE_LIMIT_S`` seconds, and the least recently used sessions go first when
more than ``MAX_SESSIONS`` have state (the host's ``session_ttl`` bounds the
binding; this bounds the worker's memory).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

#: The most sessions whose state a worker keeps.
MAX_SESSIONS = 10_000
#: Seconds after its last use when a session's state is forgotten.
IDLE_LIMIT_S = 3600.0

_session_var: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "snakepit_session_id", default=None
)
_lock = threading.Lock()
_states: OrderedDict[str, Tuple[float, Dict[str, Any]]] = OrderedDict()


def get_session_id() -> Optional[str]:
    """The session id of the current call, or None when it has none."""
    return _session_var.get()


def enter(session_id: Optional[str]) -> contextvars.Token:
    """Make ``session_id`` ("" or None: no session) current; returns the token
    for ``leave``. The worker calls this around each call."""
    return _session_var.set(session_id or None)


def leave(token: contextvars.Token) -> None:
    """Restore the session that ``enter`` replaced."""
    try:
        _session_var.reset(token)
    except ValueError:
        pass


def state(session_id: Optional[str] = None) -> Dict[str, Any]:
    """The state dict of ``session_id`` (default: the current call's session).

    The same dict is returned to every call of the session on this worker;
    mutate it in place. Raises ``RuntimeError`` outside a session call.
    """
    sid = session_id or get_session_id()
    if sid is None:
        raise RuntimeError(
            "no session: this call was not made with Pool::execute_in_session "
            "(pass a session id to keep state between calls)"
        )
    now = time.monotonic()
    with _lock:
        entry = _states.pop(sid, None)
        data: Dict[str, Any] = entry[1] if entry is not None else {}
        _states[sid] = (now, data)
        while _states:
            oldest, (used, _) = next(iter(_states.items()))
            if len(_states) > MAX_SESSIONS or now - used > IDLE_LIMIT_S:
                del _states[oldest]
            else:
                break
    return data


def forget(session_id: str) -> None:
    """Drop the state of ``session_id`` (nothing when it has none)."""
    with _lock:
        _states.pop(session_id, None)


def count() -> int:
    """Sessions whose state this worker keeps."""
    with _lock:
        return len(_states)
