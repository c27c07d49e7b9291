"""Protobuf wire-format primitives: varints, length-delimited and string
fields, and ``encode_value`` (a measurement as a Value message)."""

from __future__ import annotations

import struct

_pack_double = struct.Struct("<d").pack
_SMALL = [bytes((i,)) for i in range(128)]
_U64 = 1 << 64
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


def varint(v: int) -> bytes:
    """Encode a non-negative int (< 2**64) as a protobuf varint."""
    if v < 0x80:
        return _SMALL[v]
    # Unrolled for the common sizes (lengths, durations): no loop, one bytes().
    if v < 0x4000:
        return bytes(((v & 0x7F) | 0x80, v >> 7))
    if v < 0x200000:
        return bytes(((v & 0x7F) | 0x80, ((v >> 7) & 0x7F) | 0x80, v >> 14))
    if v < 0x10000000:
        return bytes((
            (v & 0x7F) | 0x80,
            ((v >> 7) & 0x7F) | 0x80,
            ((v >> 14) & 0x7F) | 0x80,
            v >> 21,
        ))
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (tag byte + length + payload)."""
    return _SMALL[tag] + varint(len(payload)) + payload


def string_field(tag: int, s: str) -> bytes:
    return _ld(tag, s.encode("utf-8", "replace"))


class EncodeError(Exception):
    pass


def encode_value(v) -> bytes:
    """Encode a TelemetryValue message body."""
    t = type(v)
    if t is int or t is bool:
        v = int(v)
        if v < 0:
            if v < _I64_MIN:
                raise EncodeError("measurement out of int64 range")
            return b"\x08" + varint(v + _U64)
        if v > _I64_MAX:
            raise EncodeError("measurement out of int64 range")
        return b"\x08" + varint(v)
    if t is float:
        return b"\x11" + _pack_double(v)
    if t is str:
        return string_field(0x1A, v)
    if isinstance(v, int):
        return encode_value(int(v))
    if isinstance(v, float):
        return encode_value(float(v))
    raise EncodeError(f"unsupported measurement type {t.__name__}")
