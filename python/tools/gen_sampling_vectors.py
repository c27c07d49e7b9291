#!/usr/bin/env python3
"""Write python/tests/sampling_vectors.json from the Python implementation.

Each case: {"key_kind": "correlation_id" | "span_id", "key": <str | u64>,
"rate": <float>, "keep": <bool>} plus, for debugging another implementation,
"key_u64" (crc32 of the id, or the span id), "mixed" ((key * 0x9E3779B97F4A7C15)
mod 2**64) and "threshold" (floor(rate * 2**64), null when rate >= 1 keeps all).
Span-id keys next to the threshold are built by inverting the multiplier, so
the boundary (mixed == threshold - 1 kept, mixed == threshold dropped) is tested.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snakepit_bridge.telemetry import _policy as t  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "sampling_vectors.json"
MIX = 0x9E3779B97F4A7C15
INV = pow(MIX, -1, 1 << 64)
M = (1 << 64) - 1


def case(kind: str, key, rate: float) -> dict:
    k = t.key_from_correlation_id(key) if kind == "correlation_id" else key
    return {
        "key_kind": kind,
        "key": key,
        "rate": rate,
        "keep": t.sampling_keep(k, rate),
        "key_u64": k,
        "mixed": t.mix(k),
        "threshold": t.sampling_threshold(rate),
    }


def vectors() -> list:
    out = []
    cids = ["abc-123", "", "x", "550e8400-e29b-41d4-a716-446655440000", "é-unicode-ü",
            "req-000001", "req-000002", "a" * 200]
    rates = [0.0, 1.0, 0.5, 0.1, 0.9, 0.25]
    for i, cid in enumerate(cids):
        for r in rates[(i % 3):(i % 3) + 3]:
            out.append(case("correlation_id", cid, r))
    for sid in [1, 2, 42, M, 1 << 63, MIX, 0xDEADBEEFCAFEBABE, 123456789]:
        for r in (0.5, 0.01, 0.99):
            out.append(case("span_id", sid, r))
    # Boundary: keys whose mixed value sits exactly at threshold-1 / threshold.
    for r in (0.5, 0.1, 1 / 3, 0.75, 2.0 ** -64, 5e-324, 0.9999999999999999):
        th = t.sampling_threshold(r)
        for target in (th - 1, th):
            key = (target * INV) & M
            if 0 <= target <= M and key:  # span id 0 means "no span": not a key
                out.append(case("span_id", key, r))
    # Extremes of the rate.
    for r in (0.0, 1.0, 1e-300):
        out.append(case("span_id", (M * INV) & M, r))
        out.append(case("span_id", INV, r))  # mixed == 1
    return out


def main() -> int:
    vs = vectors()
    OUT.write_text(json.dumps(vs, indent=1) + "\n")
    print(f"wrote {len(vs)} cases to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
