"""Keyset pages: newest first, stable while rows are inserted, opaque cursors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import Generic
from typing import TypeVar

from app.schemas.common import encode_cursor

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows plus the cursor of the next page (None on the last one)."""

    items: list[T]
    next_cursor: str | None


def page_from_rows(rows: list[T], *, limit: int, cursor_of: Any) -> Page[T]:
    """Cut `limit + 1` fetched rows to a page; the extra row only proves there is a next page."""
    if len(rows) <= limit:
        return Page(rows, None)
    items = rows[:limit]
    return Page(items, encode_cursor(cursor_of(items[-1])))
