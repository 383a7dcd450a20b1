"""The live feed's positions: every stored event gets the next number of its tenant's feed.

Writers call `allocate` in the transaction that stores the events, right before inserting them.
It bumps the tenant's counter row, which stays locked until that transaction ends, so positions
become visible strictly in order: whoever has read position N has seen every event up to N that
will ever exist. Readers therefore resume from a position without gaps or repeats. Positions are
never reused; a redelivered batch leaves holes (its duplicates are not inserted), never gaps.

Readers use plain Core connections (see `read_only_connection`): they run outside any request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import Row
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.orm import Session

from app import postgres
from app.db import is_postgres
from app.models import ArchivedEvent
from app.models import Event
from app.models import EventFeed

# One statement on both databases; ON CONFLICT DO UPDATE waits for (and then holds) the row lock.
_ALLOCATE = text("""
INSERT INTO event_feeds (tenant_id, last_seq) VALUES (:tenant_id, :count)
ON CONFLICT (tenant_id) DO UPDATE SET last_seq = event_feeds.last_seq + excluded.last_seq
RETURNING last_seq
""")

_ALLOCATE_PG = postgres.pyformat(_ALLOCATE)

_EVENT_COLUMNS = tuple(Event.__table__.c)


def allocate(db: Session, *, tenant_id: str, count: int) -> int:
    """Reserve `count` positions in the tenant's feed; return the first. Holds the feed's lock."""
    params = {"tenant_id": tenant_id, "count": count}
    if is_postgres(db):  # once per ingest message: the lean form (see app.postgres)
        last = int(postgres.fetch_all(db, _ALLOCATE_PG, params)[0][0])
    else:
        last = int(db.execute(_ALLOCATE, params).scalar_one())
    return last - count + 1


def heads(connection: Connection, *, tenant_ids: Iterable[str]) -> dict[str, int]:
    """The last committed position of each tenant's feed (tenants with no events: 0)."""
    wanted = sorted(set(tenant_ids))
    found = dict(connection.execute(select(EventFeed.tenant_id, EventFeed.last_seq)
                                    .where(EventFeed.tenant_id.in_(wanted))).all())
    return {tenant_id: int(found.get(tenant_id, 0)) for tenant_id in wanted}


def read_after(connection: Connection, *, tenant_id: str, after: int, limit: int
               ) -> list[Row[Any]]:
    """Up to `limit` of the tenant's live events after position `after`, in feed order."""
    return list(connection.execute(
        select(*_EVENT_COLUMNS)
        .where(Event.tenant_id == tenant_id, Event.feed_seq > after)
        .order_by(Event.feed_seq).limit(limit)))


def position_of(connection: Connection, *, tenant_id: str, event_id: str) -> int | None:
    """The feed position of one of the tenant's events (live or archived), if it has one."""
    for model in (Event, ArchivedEvent):
        position = connection.execute(
            select(model.feed_seq).where(model.tenant_id == tenant_id, model.id == event_id)
        ).scalar()
        if position is not None:
            return int(position)
    return None


def latest_stored_event_id(db: Session, *, tenant_id: str) -> str | None:
    """The id of the tenant's most recently stored event: where the live feed picks up.

    The page lists events by their own timestamps; the stream goes in the order they were stored.
    Starting the stream after this event means nothing stored after the page was read is missed.
    """
    return db.scalar(select(Event.id).where(Event.tenant_id == tenant_id,
                                            Event.feed_seq.is_not(None))
                     .order_by(Event.feed_seq.desc()).limit(1))
