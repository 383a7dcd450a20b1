"""UTC time helpers: the API speaks ISO 8601 with milliseconds and `Z`."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from typing import overload


def utcnow() -> datetime:
    """Now, in UTC, truncated to milliseconds (the API's resolution)."""
    return truncate_ms(datetime.now(UTC))


def truncate_ms(value: datetime) -> datetime:
    """Drop sub-millisecond digits so stored values round-trip exactly through the API."""
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def as_utc(value: datetime) -> datetime:
    """Treat naive datetimes as UTC and convert aware ones to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@overload
def isoformat(value: datetime) -> str: ...


@overload
def isoformat(value: None) -> None: ...


def isoformat(value: datetime | None) -> str | None:
    """Format as `2025-09-15T10:30:00.000Z`."""
    if value is None:
        return None
    # isoformat (C) ends UTC times with "+00:00"; a third of strftime's cost, on every event.
    return as_utc(value).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_iso(text: str) -> datetime:
    """Parse ISO 8601 (a trailing `Z` included) into an aware UTC datetime; naive means UTC."""
    return as_utc(datetime.fromisoformat(text.strip()))
