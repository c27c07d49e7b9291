"""Tool arguments and results on the wire: decoding ``args_json``, encoding
results as JSON plus binary results, and the checks a result must pass
(JSON numbers only, valid Unicode, the message size limit), each failing
with a ToolFailure that names what is wrong and where."""

from __future__ import annotations

import json
import traceback
from typing import Any, Dict, Optional

from .shm import Handle, move_results

# Longest error message and traceback a reply carries (characters); longer
# ones are cut, saying how much was cut, so an error reply stays far below
# the message limit.
MAX_ERROR_MESSAGE_CHARS = 16_384
MAX_ERROR_TRACEBACK_CHARS = 65_536


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters cut)"


class ToolFailure(Exception):
    """A call's error: ``type`` (an exception class name or one of the
    worker's own: UnknownTool, InvalidArguments, Timeout, EncodeError,
    ResultTooLarge, ...), ``message`` and traceback ``tb``, clipped to
    MAX_ERROR_MESSAGE_CHARS and MAX_ERROR_TRACEBACK_CHARS."""

    def __init__(self, type_: str, message: str, tb: str = "") -> None:
        message = clip(message, MAX_ERROR_MESSAGE_CHARS)
        super().__init__(message)
        self.type = type_
        self.message = message
        self.tb = clip(tb, MAX_ERROR_TRACEBACK_CHARS)


def raised(e: BaseException) -> ToolFailure:
    """The tool error for an exception a tool raised, of any kind: a
    BaseException (SystemExit, KeyboardInterrupt, a custom subclass) is the
    call's error like any other, never the worker's exit."""
    return ToolFailure(type(e).__name__, str(e), traceback.format_exc())


# Default of --max-message-bytes: the largest tool result (JSON plus binary
# results, bytes) one reply carries, as the host's max_message_bytes.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Room above the limit for what a message carries besides the payload (call
# ids, telemetry, error text): the transports accept limit + this.
MESSAGE_HEADROOM_BYTES = 1024 * 1024
_max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES


def set_max_message_bytes(n: int) -> None:
    """Sets the result size limit (see DEFAULT_MAX_MESSAGE_BYTES)."""
    global _max_message_bytes
    _max_message_bytes = int(n)


def max_message_bytes() -> int:
    """The result size limit in bytes."""
    return _max_message_bytes


def _json_default(o: Any):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset)):
        return list(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)
_dumps = _encoder.encode
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _make_fast_dumps():
    """JSONEncoder.encode builds its C encoder on every call; build it once.

    Same output as ``_dumps`` (compact separators, ensure_ascii, no NaN).
    The shared encoder has no circular-reference markers: a value that
    recurses too deep is encoded again by ``_dumps``, which names the cycle.
    """
    if _c_make_encoder is None:
        return _dumps
    basestring = json.encoder.encode_basestring_ascii
    enc = _c_make_encoder(None, _json_default, basestring, None, ":", ",", False, False, False)

    def dumps(o) -> str:
        if type(o) is str:
            return basestring(o)
        try:
            return "".join(enc(o, 0))
        except RecursionError:
            return _dumps(o)

    return dumps


_fast_dumps = _make_fast_dumps()
_BINARY = (bytes, bytearray, memoryview)


def encode_result(value: Any):
    """Return (result_json bytes, binary_results dict): ``bytes`` values of a
    dict result (or a ``bytes`` result) travel as binary results, as
    ``shm.Handle``s of result segments when the call's host offered shared
    memory and they are large enough (``shm.move_results``). ToolFailure
    EncodeError (naming the bad value's path) or ResultTooLarge."""
    binaries: Dict[str, bytes] = {}
    t = type(value)
    if t is dict or isinstance(value, dict):
        for v in value.values():
            if isinstance(v, _BINARY):
                value = dict(value)
                for k in [k for k, v in value.items() if isinstance(v, _BINARY)]:
                    binaries[str(k)] = value.pop(k)
                move_results(binaries)
                break
    elif isinstance(value, _BINARY):
        binaries = {"result": value}
        move_results(binaries)
        _check_size(4, binaries)
        return b"null", binaries
    try:
        text = _fast_dumps(value)
    except (TypeError, ValueError) as e:
        raise _encode_error(value, str(e)) from e
    # ensure_ascii writes every surrogate as a \udXXX escape: only then can
    # the value hold a lone one, which the host's JSON parser refuses.
    if "\\ud" in text:
        bad = _find_unencodable(value)
        if bad is not None:
            raise _encode_error(value, "")
    data = text.encode("utf-8")
    if binaries or len(data) > _max_message_bytes:
        _check_size(len(data), binaries)
    return data, binaries


def _check_size(size: int, binaries: Dict[str, bytes]) -> None:
    """ResultTooLarge when a result (``size`` JSON bytes plus ``binaries``)
    is over the message limit."""
    if binaries:
        # Values in shared memory (Handles) do not travel in the message.
        size += sum(len(k) + len(v) for k, v in binaries.items() if type(v) is not Handle)
    if size > _max_message_bytes:
        raise ToolFailure(
            "ResultTooLarge",
            f"the tool result is {size} bytes encoded (JSON and binary results), over the "
            f"message limit of {_max_message_bytes} bytes; return less per call (a streaming "
            "tool sends chunks), or raise max_message_bytes on the host and "
            "--max-message-bytes on the worker")


def _encode_error(value: Any, detail: str) -> ToolFailure:
    """EncodeError naming where in the result the value JSON cannot carry is."""
    bad = _find_unencodable(value)
    if bad is None:
        return ToolFailure("EncodeError", f"tool result is not JSON-encodable: {detail}")
    path, what = bad
    if len(path) > 300:
        path = path[:300] + "..."
    return ToolFailure("EncodeError", f"tool result cannot be encoded as JSON: {path} is {what}")


_NON_FINITE = "has no JSON form (NaN and infinities are not JSON numbers; return None or a string)"


def _bad_float(x: float) -> Optional[str]:
    if x != x or x in (float("inf"), float("-inf")):
        return f"{x!r}, which {_NON_FINITE}"
    return None


def _bad_str(s: str) -> Optional[str]:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"a string with a lone surrogate {s[e.start]!r} at index {e.start} "
                "(not valid Unicode text, so not valid JSON)")
    return None


def _find_unencodable(value: Any, path: str = "result", depth: int = 0, seen=None):
    """(path, description) of the first value in ``value`` that the JSON
    sent to the host cannot carry (NaN, an infinity, a lone surrogate, an
    object of an unknown type), or None. Each container is looked at once
    (a cycle ends the search there)."""
    if depth > 200:
        return None
    if isinstance(value, str):
        what = _bad_str(value)
        return (path, what) if what else None
    if isinstance(value, float):
        what = _bad_float(value)
        return (path, what) if what else None
    if value is None or isinstance(value, (bool, int)):
        return None
    if seen is None:
        seen = set()
    if id(value) in seen:
        return None
    seen.add(id(value))
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                what = _bad_str(k)
            elif isinstance(k, float):
                what = _bad_float(k)
            elif k is None or isinstance(k, int):
                what = None
            else:
                what = f"{k!r} of type {type(k).__name__} (JSON object keys are strings)"
            if what:
                return f"a key of {path}", what
            found = _find_unencodable(v, f"{path}[{k!r}]", depth + 1, seen)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _find_unencodable(v, f"{path}[{i}]", depth + 1, seen)
            if found:
                return found
        return None
    try:
        converted = _json_default(value)
    except Exception:  # noqa: BLE001 - any failure: the value is the culprit
        return path, f"an object of type {type(value).__name__}, which is not JSON serializable"
    return _find_unencodable(converted, path, depth + 1, seen)


_loads = json.loads


def decode_args(args_json: bytes, binary: Optional[Dict[str, bytes]]) -> Dict[str, Any]:
    """The keyword arguments of a call: the ``args_json`` object plus the
    binary parameters as bytes. ToolFailure InvalidArguments if it is not a
    JSON object."""
    if args_json == b"{}":
        args = {}
    elif args_json:
        try:
            args = _loads(args_json)
        except ValueError as e:
            raise ToolFailure("InvalidArguments", f"args_json is not valid JSON: {e}") from e
        if not isinstance(args, dict):
            raise ToolFailure("InvalidArguments", "args_json must be a JSON object")
    else:
        args = {}
    if binary:
        for k, v in binary.items():
            # Shared-memory arguments stay read-only views of their segment.
            args[k] = v if type(v) is memoryview else bytes(v)
    return args

