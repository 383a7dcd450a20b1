"""Durations of delay and wait steps: a positive integer and a unit, e.g. `30m`, `3d`, `1w`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"(?P<amount>[1-9][0-9]{0,6})(?P<unit>[smhdw])")
# Largest unit first, so formatting picks the shortest spelling (`7d` reads back as `1w`).
_UNIT_SECONDS = (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))

# Ten years: longer delays are typos, and unbounded sums of them would overflow `datetime`.
MAX_DURATION = timedelta(weeks=520)


def parse_duration(text: str) -> timedelta:
    """Parse `<integer><unit>` with unit s, m, h, d or w; raise ValueError otherwise."""
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 2h, 3d, 1w)")
    return timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})


def format_duration(duration: timedelta) -> str:
    """Spell a positive whole-second duration in its largest exact unit, e.g. 7 days -> `1w`."""
    if duration <= timedelta(0) or duration.microseconds:
        raise ValueError(f"not a positive whole number of seconds: {duration!r}")
    seconds = duration.days * 86_400 + duration.seconds
    for unit, size in _UNIT_SECONDS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds divides by 1")
