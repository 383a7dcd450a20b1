"""Celery entrypoints for events."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

from celery import shared_task
from celery_batches import SimpleRequest
from flask import current_app
from kombu.exceptions import EncodeError
from sqlalchemy.exc import IntegrityError

from app import db
from app.ingest_ledger import Ledger
from app.ingest_ledger import Messages
from app.observability import queue_depths
from app.services import ingest
from tasks import serialization
from tasks.celery_app import FlaskBatches
from tasks.celery_app import Queue

log = logging.getLogger(__name__)

REQUEUE_BATCH = 100
REQUEUE_ROUNDS = 50
# Per-message costs (Celery's trace, a transaction, a handful of statements) are most of what
# storing a message costs, so the worker stores the messages it has gathered together: after
# every INGEST_FLUSH_EVERY messages, and whatever waits every INGEST_FLUSH_INTERVAL_S (the most a
# quiet moment adds to an event's time to listable). The worker's prefetch (see
# app.config.celery_config) lets two such batches be in flight, one per pool process. A
# transaction takes messages up to INGEST_MAX_EVENTS (a full batch-endpoint message alone), which
# bounds the pool process's memory and the time a tenant's feed stays locked.
INGEST_FLUSH_EVERY = 8
INGEST_FLUSH_INTERVAL_S = 0.02
INGEST_MAX_EVENTS = 500


def publish_ingest(ledger: Ledger, messages: Messages, task_id: str | None = None) -> None:
    """Put a batch of accepted events in the broker, noted in the ledger first (see there)."""
    task_id = task_id or str(uuid.uuid4())
    ledger.record(task_id, messages)
    try:
        _send_ingest(messages, task_id)
    except BaseException:
        ledger.strike([task_id])  # the request gets a 503 and the client retries
        raise


def _send_ingest(messages: Messages, task_id: str) -> None:
    # A fixed argsrepr: Celery would otherwise build a safe repr of every event for the
    # message headers (the largest publishing cost), and put e-mail addresses in Flower.
    options = {"args": (messages,), "task_id": task_id, "kwargsrepr": "{}",
               "argsrepr": f"[{len(messages)} events]"}
    try:
        ingest_events.apply_async(**options)
    except EncodeError:  # an integer beyond 64 bits, which orjson (the task's) cannot carry
        ingest_events.apply_async(**options, serializer="json")


def _ledger() -> Ledger:
    ledger: Ledger = current_app.extensions["ingest_ledger"]
    return ledger


@shared_task(name="events.ingest", queue=Queue.INGEST, acks_late=True, base=FlaskBatches,
             serializer=serialization.NAME,
             flush_every=INGEST_FLUSH_EVERY, flush_interval=INGEST_FLUSH_INTERVAL_S)
def ingest_events(requests: list[SimpleRequest]) -> int:
    """Store the events of the ingest messages the worker gathered, a few transactions at most.

    celery-batches hands over what the worker received since the last call (up to
    `INGEST_FLUSH_EVERY` messages, or what came within `INGEST_FLUSH_INTERVAL_S`) and acks the
    messages once this returns; a worker that dies first leaves them unacked, to be delivered
    again. A redelivered message stores nothing twice.
    """
    stored = 0
    for group in _up_to_events(requests, INGEST_MAX_EVENTS):
        stored += store_messages([request.args[0] for request in group])
        try:  # after the commit: a crash before it only stores them again, harmlessly
            _ledger().strike(request.id for request in group)
        except Exception:  # the events are stored; the sweep will find them stored, harmlessly
            log.warning("ingest_ledger_strike_failed", exc_info=True)
    return stored


def _up_to_events(requests: list[SimpleRequest], limit: int) -> Iterator[list[SimpleRequest]]:
    """Consecutive groups of requests with at most `limit` events, or a single larger one."""
    group: list[SimpleRequest] = []
    events = 0
    for request in requests:
        size = len(request.args[0])
        if group and events + size > limit:
            yield group
            group, events = [], 0
        group.append(request)
        events += size
    if group:
        yield group


def store_messages(batches: list[Messages]) -> int:
    """Store several ingest messages' events in one transaction; return how many were new."""
    messages = [message for batch in batches for message in batch]
    try:
        with db.transaction() as session:
            return len(ingest.store_events(session, messages=messages))
    except IntegrityError:
        # A tenant was deleted while its events were queued: look tenants up afresh, so the
        # batch's other events are stored and the deleted tenant's are dropped.
        ingest.forget_known_tenants()
        with db.transaction() as session:
            return len(ingest.store_events(session, messages=messages))


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
