"""Server-made ids: a type prefix plus a ULID, so ids sort by creation time."""

from __future__ import annotations

import os
import threading
import time
from functools import lru_cache

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits per lookup: an id is made for every event, and this is about three times
# faster than a digit at a time.
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]


@lru_cache(maxsize=8)
def _time_digits(ms: int) -> str:
    """The 48-bit time as the ULID's first 10 digits (two leading zero bits).

    A batch's events share their millisecond: worked out once, not for each of up to 500.
    """
    return "".join(_PAIRS[(ms >> shift) & 1023] for shift in (40, 30, 20, 10, 0))


def _ulid(ms: int, randomness: bytes) -> str:
    """The time and 80 random bits as 26 base32 digits (130 bits, two leading zeros)."""
    bits = int.from_bytes(randomness, "big")
    p = _PAIRS  # unrolled: the 16 random digits are on every event's path
    return (f"{_time_digits(ms)}{p[bits >> 70]}{p[bits >> 60 & 1023]}{p[bits >> 50 & 1023]}"
            f"{p[bits >> 40 & 1023]}{p[bits >> 30 & 1023]}{p[bits >> 20 & 1023]}"
            f"{p[bits >> 10 & 1023]}{p[bits & 1023]}")


class _Randomness(threading.local):
    """The operating system's random bytes, fetched for 256 ids at a time, per thread.

    `os.urandom` lets go of the GIL for its system call, and getting it back under load means
    waiting for another request's thread: once per event, that made a 500-event batch hand the
    GIL around 500 times (about half of the web process's time for it, measured). Per thread,
    so threads never share bytes; dropped in a forked child, which must not repeat its parent's.
    """

    def __init__(self) -> None:
        self.pool = b""
        self.used = 0

    def take(self, size: int) -> bytes:
        if self.used + size > len(self.pool):
            self.pool, self.used = os.urandom(size * 256), 0
        start, self.used = self.used, self.used + size
        return self.pool[start:self.used]


_randomness = _Randomness()


def _forget_randomness() -> None:
    global _randomness
    _randomness = _Randomness()


os.register_at_fork(after_in_child=_forget_randomness)


def new_id(prefix: str, *, ms: int | None = None) -> str:
    """Return `<prefix>_<ULID>`; `ms` pins the time part (milliseconds since the epoch)."""
    if ms is None:
        ms = time.time_ns() // 1_000_000
    return f"{prefix}_{_ulid(ms, _randomness.take(10))}"
