"""Celery entrypoints for events."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task
from celery import shared_task
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app import db
from app.ingest_ledger import Ledger
from app.ingest_ledger import Messages
from app.observability import queue_depths
from app.services import ingest
from tasks.celery_app import Queue

log = logging.getLogger(__name__)

REQUEUE_BATCH = 100
REQUEUE_ROUNDS = 50


def publish_ingest(ledger: Ledger, messages: Messages, task_id: str | None = None) -> None:
    """Put a batch of accepted events in the broker, noted in the ledger first (see there)."""
    task_id = task_id or str(uuid.uuid4())
    ledger.record(task_id, messages)
    try:
        # A fixed argsrepr: Celery would otherwise build a safe repr of every event for the
        # message headers (the largest publishing cost), and put e-mail addresses in Flower.
        ingest_events.apply_async(args=(messages,), task_id=task_id, kwargsrepr="{}",
                                  argsrepr=f"[{len(messages)} events]")
    except BaseException:
        ledger.strike(task_id)  # the request gets a 503 and the client retries
        raise


def _ledger() -> Ledger:
    ledger: Ledger = current_app.extensions["ingest_ledger"]
    return ledger


@shared_task(name="events.ingest", queue=Queue.INGEST, acks_late=True, bind=True)
def ingest_events(self: Task, messages: list[dict[str, Any]]) -> int:
    """Store a batch of accepted events; a redelivered batch stores nothing twice."""
    try:
        with db.transaction() as session:
            stored = len(ingest.store_events(session, messages=messages))
    except IntegrityError:
        # A tenant was deleted while its events were queued: look tenants up afresh, so the
        # batch's other events are stored and the deleted tenant's are dropped.
        ingest.forget_known_tenants()
        with db.transaction() as session:
            stored = len(ingest.store_events(session, messages=messages))
    try:
        _ledger().strike(self.request.id)  # after the commit: a crash before it only re-stores
    except Exception:  # the events are stored; the sweep will find them stored, harmlessly
        log.warning("ingest_ledger_strike_failed", exc_info=True)
    return stored


@shared_task(name="events.requeue_lost", queue=Queue.MAINTENANCE)
def requeue_lost_events() -> int:
    """Publish again ingest messages that no worker stored in time (lost in flight).

    Only once the ingest queue is drained: while a backlog waits, an old message is most likely
    still in it, and publishing it again would only add to the backlog.
    """
    settings = current_app.config["SETTINGS"]
    waiting, _ = queue_depths(settings)
    if waiting.get(Queue.INGEST.value, 0):
        return 0
    ledger = _ledger()
    requeued = 0
    for _ in range(REQUEUE_ROUNDS):  # a bounded pass; the next beat run takes the rest
        found = ledger.requeue_overdue(
            older_than_s=settings.ingest_requeue_after_s, limit=REQUEUE_BATCH,
            publish=lambda task_id, messages: publish_ingest(ledger, messages, task_id))
        requeued += found
        if found < REQUEUE_BATCH:
            break
    return requeued
