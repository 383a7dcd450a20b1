"""Celery entrypoints for events."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app import db
from app.services import ingest
from tasks.celery_app import Queue


@shared_task(name="events.ingest", queue=Queue.INGEST, acks_late=True)
def ingest_events(messages: list[dict[str, Any]]) -> int:
    """Store a batch of accepted events; a redelivered batch stores nothing twice."""
    with db.transaction() as session:
        stored = ingest.store_events(session, messages=messages)
    return len(stored)
