"""The telemetry policy: the sampling rule, event patterns, and what a
``TelemetryControl`` message changes.

A policy is turned into one decision per event name (``Policy.decide``),
which the emit path caches: 0 keeps every event, a negative code names the
drop reason, a positive value is the sampling threshold.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from typing import Iterable, Optional, Sequence, Tuple

# --------------------------------------------------------------------------
# Sampling rule (shared with the Rust host, bit for bit)
# --------------------------------------------------------------------------

MIX = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1
_TWO64 = float(1 << 64)


def sampling_threshold(rate: float) -> Optional[int]:
    """floor(rate * 2**64) as an int; None means keep all (rate >= 1)."""
    if rate >= 1.0:
        return None
    if not rate > 0.0:  # also NaN
        return 0
    return int(rate * _TWO64)  # exact: scaling by a power of two


def key_from_correlation_id(cid: str) -> int:
    """The sampling key of a correlation id: CRC-32 of its UTF-8 bytes."""
    return zlib.crc32(cid.encode("utf-8"))


def mix(key: int) -> int:
    """The key scrambled over 64 bits (multiplication by the golden ratio)."""
    return (key * MIX) & MASK


def sampling_keep(key: int, rate: float) -> bool:
    """The shared rule: keep iff mix(key) < floor(rate * 2**64) (rate >= 1 keeps all)."""
    t = sampling_threshold(rate)
    if t is None:
        return True
    return mix(key) < t


# --------------------------------------------------------------------------
# Patterns and policy
# --------------------------------------------------------------------------


class PolicyError(ValueError):
    """A malformed control: bad rate, bad pattern or bad log level."""


_PATTERN_OK = re.compile(r"^[\x21-\x7e]+$")


def compile_pattern(p: str):
    """(is the pattern a full name, its fullmatch function); PolicyError if malformed."""
    if not isinstance(p, str) or not _PATTERN_OK.match(p):
        raise PolicyError(f"invalid pattern {p!r}: must be non-empty printable ASCII")
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p)
    full = p.startswith("snakepit.")
    return full, re.compile(rx, re.S).fullmatch


def pattern_matches(pattern: str, wire_name: str) -> bool:
    """Does ``pattern`` match the Python event whose wire name is ``wire_name``?"""
    full, m = compile_pattern(pattern)
    target = ("snakepit.python." if full else "python.") + wire_name
    return m(target) is not None


def check_rate(rate: float) -> float:
    """``rate`` as a float in [0, 1]; PolicyError otherwise."""
    try:
        r = float(rate)
    except (TypeError, ValueError) as e:
        raise PolicyError(f"invalid rate {rate!r}") from e
    if math.isnan(r) or r < 0.0 or r > 1.0:
        raise PolicyError(f"rate {rate!r} outside [0, 1]")
    return r


LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 10,
}

# drop reasons; order = DropCounts field order
DROP_REASONS = ("buffer_full", "sampled_out", "filtered", "disabled", "encode_error",
                "logs_dropped")
# The reference system's adapters name Python events from ``python.``
# (``python.call.stop``); the host folds both spellings into one event.
REFERENCE_PREFIX = "python."
# Negative decisions: the drop reason of every event of that name.
DISABLED = -4
FILTERED = -3
SAMPLED_ALL = -2  # rate 0: counted as sampled_out


class Policy:
    """An immutable-by-convention telemetry policy (see the proto's rule)."""

    __slots__ = (
        "enabled", "sampling_rate", "pattern_rates", "allow", "deny", "log_level", "version",
        "_rates_c", "_allow_c", "_deny_c",
    )

    def __init__(
        self,
        enabled: bool = True,
        sampling_rate: float = 1.0,
        pattern_rates: Sequence[Tuple[str, float]] = (),
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        log_level: str = "",
        version: int = 0,
    ) -> None:
        self.enabled = bool(enabled)
        self.sampling_rate = check_rate(sampling_rate)
        self.pattern_rates = [(str(p), check_rate(r)) for p, r in pattern_rates]
        self.allow = list(allow)
        self.deny = list(deny)
        if log_level and log_level.lower() not in LOG_LEVELS:
            raise PolicyError(
                f"invalid log_level {log_level!r}; allowed: {', '.join(LOG_LEVELS)}"
            )
        self.log_level = log_level.lower() if log_level else ""
        self.version = int(version)
        self._rates_c = [(compile_pattern(p), r) for p, r in self.pattern_rates]
        self._allow_c = [compile_pattern(p) for p in self.allow]
        self._deny_c = [compile_pattern(p) for p in self.deny]

    def copy(self, **changes) -> Policy:
        """A new policy with ``changes`` (constructor keywords) applied."""
        kw = dict(
            enabled=self.enabled, sampling_rate=self.sampling_rate,
            pattern_rates=list(self.pattern_rates), allow=list(self.allow),
            deny=list(self.deny), log_level=self.log_level, version=self.version,
        )
        kw.update(changes)
        return Policy(**kw)

    @staticmethod
    def _match(compiled, wire_name: str) -> bool:
        full, m = compiled
        return m(("snakepit.python." if full else "python.") + wire_name) is not None

    def rate_for(self, wire_name: str) -> float:
        """The sampling rate for an event (stop/exception look up the start name)."""
        if wire_name.endswith(".stop"):
            wire_name = wire_name[: -len(".stop")] + ".start"
        elif wire_name.endswith(".exception"):
            wire_name = wire_name[: -len(".exception")] + ".start"
        for c, r in self._rates_c:
            if self._match(c, wire_name):
                return r
        return self.sampling_rate

    def decide(self, wire_name: str) -> int:
        """Per-name decision: 0 keep all, <0 drop code, >0 sampling threshold.

        ``python.call.stop`` (the reference system's spelling, which the
        host folds into the same event) is decided as ``call.stop``.
        """
        if wire_name.startswith(REFERENCE_PREFIX):
            wire_name = wire_name[len(REFERENCE_PREFIX):]
        if not self.enabled:
            return DISABLED
        for c in self._deny_c:
            if self._match(c, wire_name):
                return FILTERED
        if self._allow_c and not any(self._match(c, wire_name) for c in self._allow_c):
            return FILTERED
        t = sampling_threshold(self.rate_for(wire_name))
        if t is None:
            return 0
        if t == 0:
            return SAMPLED_ALL
        return t

    def describe(self) -> dict:
        """The policy as a plain dict (logs, tests)."""
        return {
            "enabled": self.enabled, "sampling_rate": self.sampling_rate,
            "pattern_rates": list(self.pattern_rates), "allow": list(self.allow),
            "deny": list(self.deny), "log_level": self.log_level, "version": self.version,
        }


def policy_from_control(cur: Policy, msg) -> Policy:
    """The policy after one TelemetryControl message; PolicyError if malformed.

    policy: replaces everything; toggle: enabled; sampling: global rate when
    event_patterns is empty, else that rate for each pattern (an existing entry
    for the same pattern is updated in place, otherwise appended); filter:
    replaces allow and deny.
    """
    kind = msg.WhichOneof("control")
    if kind == "policy":
        p = msg.policy
        return Policy(
            enabled=p.enabled,
            sampling_rate=p.sampling_rate,
            pattern_rates=[(pr.pattern, pr.rate) for pr in p.pattern_rates],
            allow=list(p.allow),
            deny=list(p.deny),
            log_level=p.log_level or cur.log_level,
            version=p.version,
        )
    if kind == "toggle":
        return cur.copy(enabled=msg.toggle.enabled)
    if kind == "sampling":
        rate = check_rate(msg.sampling.sampling_rate)
        pats = list(msg.sampling.event_patterns)
        if not pats:
            return cur.copy(sampling_rate=rate)
        prs = list(cur.pattern_rates)
        for pat in pats:
            compile_pattern(pat)
            for i, (p0, _) in enumerate(prs):
                if p0 == pat:
                    prs[i] = (pat, rate)
                    break
            else:
                prs.append((pat, rate))
        return cur.copy(pattern_rates=prs)
    if kind == "filter":
        return cur.copy(allow=list(msg.filter.allow), deny=list(msg.filter.deny))
    raise PolicyError("empty TelemetryControl")
