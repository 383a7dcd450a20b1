"""Retention: move events past their tenant's `retentionDays` into the archive, batch by batch."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import is_postgres
from app.models import ArchivedEvent
from app.models import Event
from app.models import IdempotencyRecord
from app.models import Tenant
from app.timeutil import utcnow

EVENT_COLUMNS = ("id", "tenant_id", "contact_id", "email", "name", "properties", "source",
                 "timestamp", "created_at", "feed_seq")

# One statement moves a batch: rows locked by a concurrent pass are skipped (SKIP LOCKED), so two
# passes never move a row twice, and ingestion (plain inserts) never waits on the archiver.
_PG_MOVE = text(f"""
WITH moved AS (
    DELETE FROM events WHERE id IN (
        SELECT id FROM events
        WHERE tenant_id = :tenant_id AND timestamp < :cutoff
        ORDER BY timestamp
        LIMIT :batch_size
        FOR UPDATE SKIP LOCKED)
    RETURNING {", ".join(EVENT_COLUMNS)}
), archived AS (
    INSERT INTO events_archive ({", ".join(EVENT_COLUMNS)})
    SELECT {", ".join(EVENT_COLUMNS)} FROM moved
    ON CONFLICT (id) DO NOTHING
)
SELECT count(*) FROM moved
""")


def retention_cutoffs(db: Session, *, now: datetime | None = None) -> dict[str, datetime]:
    """Each tenant's cutoff: events with a timestamp before it are past retention."""
    now = now or utcnow()
    rows = db.execute(select(Tenant.id, Tenant.retention_days))
    return {tenant_id: now - timedelta(days=days) for tenant_id, days in rows}


def archive_batch(db: Session, *, tenant_id: str, cutoff: datetime, batch_size: int) -> int:
    """Move up to `batch_size` of the tenant's oldest expired events; return how many moved."""
    if is_postgres(db):
        moved = db.scalar(_PG_MOVE, {"tenant_id": tenant_id, "cutoff": cutoff,
                                     "batch_size": batch_size})
        return int(moved or 0)
    # SQLite: the transaction began IMMEDIATE, so it holds the write lock and nobody interleaves.
    ids = list(db.scalars(select(Event.id)
                          .where(Event.tenant_id == tenant_id, Event.timestamp < cutoff)
                          .order_by(Event.timestamp).limit(batch_size)))
    if not ids:
        return 0
    columns = [getattr(Event, name) for name in EVENT_COLUMNS]
    db.execute(insert(ArchivedEvent).from_select(list(EVENT_COLUMNS),
                                                 select(*columns).where(Event.id.in_(ids)))
               .prefix_with("OR IGNORE"))
    db.execute(delete(Event).where(Event.id.in_(ids)))
    return len(ids)


def purge_idempotency_keys(db: Session, *, older_than: timedelta, now: datetime | None = None
                           ) -> int:
    """Forget idempotency records past their window."""
    cutoff = (now or utcnow()) - older_than
    result = db.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
