"""Server-made ids: a type prefix plus a ULID, so ids sort by creation time."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits per lookup: 13 lookups make an id's 26 digits (an id is made for every event,
# and this is about three times faster than a digit at a time).
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_SHIFTS = range(120, -10, -10)


def _ulid(ms: int, randomness: bytes) -> str:
    """The 48-bit time and 80 random bits as 26 base32 digits (130 bits, two leading zeros)."""
    value = (ms << 80) | int.from_bytes(randomness, "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(prefix: str, *, ms: int | None = None) -> str:
    """Return `<prefix>_<ULID>`; `ms` pins the time part (milliseconds since the epoch)."""
    if ms is None:
        ms = time.time_ns() // 1_000_000
    return f"{prefix}_{_ulid(ms, os.urandom(10))}"
