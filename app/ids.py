"""Server-made ids: a type prefix plus a ULID, so ids sort by creation time."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid(ms: int, randomness: bytes) -> str:
    value = (ms << 80) | int.from_bytes(randomness, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, *, ms: int | None = None) -> str:
    """Return `<prefix>_<ULID>`; `ms` pins the time part (milliseconds since the epoch)."""
    if ms is None:
        ms = time.time_ns() // 1_000_000
    return f"{prefix}_{_ulid(ms, os.urandom(10))}"
