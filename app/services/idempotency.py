"""`Idempotency-Key`: the first answer to a keyed request is kept 24 h and replayed to retries.

A key is reserved (committed) before the work starts, so two concurrent requests with one key
cannot both do the work: the second sees the reservation and gets 409 until the first finishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import insert_if_absent
from app.errors import Conflict
from app.errors import Unprocessable
from app.models import IdempotencyRecord
from app.timeutil import utcnow

IN_FLIGHT = 0  # status_code of a reservation whose request has not answered yet
# A reservation older than this belongs to a request that died before answering: a retry may
# take it over rather than be refused for the rest of the day.
STALE_RESERVATION = timedelta(seconds=60)


@dataclass(frozen=True)
class Replay:
    """The stored first answer."""

    status_code: int
    body: Any


def _key_filter(tenant_id: str, key: str) -> Any:
    return (IdempotencyRecord.tenant_id == tenant_id) & (IdempotencyRecord.key == key)


def reserve(db: Session, *, tenant_id: str, key: str, fingerprint: str, ttl: timedelta
            ) -> Replay | None:
    """Reserve `key` for this request (None), or return the answer to replay.

    Raises Conflict while another request with the key is in flight, and Unprocessable when the
    key was used for a different request.
    """
    now = utcnow()
    db.execute(delete(IdempotencyRecord).where(_key_filter(tenant_id, key),
                                               IdempotencyRecord.created_at < now - ttl))
    row = {"tenant_id": tenant_id, "key": key, "fingerprint": fingerprint,
           "status_code": IN_FLIGHT, "response": {}, "created_at": now}
    if insert_if_absent(db, IdempotencyRecord.__table__, row, ["tenant_id", "key"]):
        return None
    record = db.scalar(select(IdempotencyRecord).where(_key_filter(tenant_id, key))
                       .with_for_update())
    if record is None:  # expired and purged between the two statements: try once more
        return reserve(db, tenant_id=tenant_id, key=key, fingerprint=fingerprint, ttl=ttl)
    if record.fingerprint != fingerprint:
        raise Unprocessable("This Idempotency-Key was already used for a different request.")
    if record.status_code != IN_FLIGHT:
        return Replay(record.status_code, record.response)
    if record.created_at > now - STALE_RESERVATION:
        raise Conflict("A request with this Idempotency-Key is still being processed.",
                       headers={"Retry-After": "1"})
    record.created_at = now
    return None


def complete(db: Session, *, tenant_id: str, key: str, status_code: int, body: Any) -> None:
    """Store the answer to replay."""
    db.execute(update(IdempotencyRecord).where(_key_filter(tenant_id, key))
               .values(status_code=status_code, response=body))


def release(db: Session, *, tenant_id: str, key: str) -> None:
    """Drop a reservation whose request failed, so a retry does the work."""
    db.execute(delete(IdempotencyRecord).where(_key_filter(tenant_id, key),
                                               IdempotencyRecord.status_code == IN_FLIGHT))
