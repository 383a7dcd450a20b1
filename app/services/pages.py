"""Keyset pages: newest first, stable while rows are inserted, opaque cursors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import Generic
from typing import TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm import Session

from app.schemas.common import decode_cursor
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


def page_by_id(db: Session, query: Select[Any], id_column: InstrumentedAttribute[str], *,
               limit: int, cursor: str | None, newest_first: bool) -> Page[Any]:
    """A page of `query`'s rows keyed by their id: newest first for prefixed ids (they sort by
    creation time), or in id order for client-chosen ids (templates, sequences)."""
    if cursor:
        after = decode_cursor(cursor, required_keys=("i",))["i"]
        query = query.where(id_column < after if newest_first else id_column > after)
    order = id_column.desc() if newest_first else id_column.asc()
    rows = list(db.scalars(query.order_by(order).limit(limit + 1)))
    return page_from_rows(rows, limit=limit, cursor_of=lambda row: {"i": row.id})
