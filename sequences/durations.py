"""Durations of delay steps: a positive integer and a unit, e.g. `30m`, `3d`, `1w`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"(?P<amount>[1-9][0-9]{0,6})(?P<unit>[smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse `<integer><unit>` with unit s, m, h, d or w; raise ValueError otherwise."""
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 2h, 3d, 1w)")
    return timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})
