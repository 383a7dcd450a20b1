"""Celery entrypoints for events."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from sqlalchemy.exc import IntegrityError

from app import db
from app.services import ingest
from tasks.celery_app import Queue


@shared_task(name="events.ingest", queue=Queue.INGEST, acks_late=True)
def ingest_events(messages: list[dict[str, Any]]) -> int:
    """Store a batch of accepted events; a redelivered batch stores nothing twice."""
    try:
        with db.transaction() as session:
            return len(ingest.store_events(session, messages=messages))
    except IntegrityError:
        # A tenant was deleted while its events were queued: look tenants up afresh, so the
        # batch's other events are stored and the deleted tenant's are dropped.
        ingest.forget_known_tenants()
        with db.transaction() as session:
            return len(ingest.store_events(session, messages=messages))
