"""Celery entrypoints for sequences: run due steps, and the beat sweeper that finds them.

The database holds every pending step (`enrolments.next_step_at`). Tasks are only wake-up calls:
steps due soon get one with an ETA right after the commit that scheduled them; the sweeper
claims anything due shortly that no task holds (far-future steps, tasks lost with a killed
worker or a flushed broker) and enqueues it. Running a step twice is harmless, so losing or
duplicating a task costs latency at worst.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime
from datetime import timedelta

from celery import shared_task
from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from app import db
from app.config import Settings
from app.services import enrolments
from app.timeutil import utcnow
from tasks.celery_app import Queue
from tasks.sends import enqueue_delivery

log = logging.getLogger(__name__)

BATCH = 200  # enrolments per run_steps task
BUCKET = timedelta(milliseconds=100)  # steps due this close together share one task
SWEEP_BUDGET_S = 3.0  # one sweep stops claiming after this long; the next one continues


def _settings() -> Settings:
    """This app's settings."""
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def publish_steps(steps: Iterable[tuple[str, datetime]]) -> None:
    """Enqueue `run_steps` for (enrolment id, due time) pairs, batched by due time.

    Failures are logged, not raised: the rows are committed, and the sweeper re-enqueues a step
    whose task never ran.
    """
    ordered = sorted(steps, key=lambda step: step[1])
    chunk: list[str] = []
    first: datetime | None = None
    last: datetime | None = None
    for enrolment_id, due in ordered:
        if chunk and (len(chunk) >= BATCH or (first is not None and due - first > BUCKET)):
            _send(chunk, last)
            chunk = []
        if not chunk:
            first = due
        chunk.append(enrolment_id)
        last = due
    if chunk:
        _send(chunk, last)


def _send(ids: list[str], due: datetime | None) -> None:
    """Publish one `run_steps` message, with an ETA unless the steps are already due."""
    now = utcnow()
    eta = due if due is not None and due > now else None
    try:
        run_steps.apply_async(args=(ids,), eta=eta, argsrepr=f"[{len(ids)} enrolments]")
    except Exception:
        log.exception("sequence_enqueue_failed", extra={"count": len(ids)})


def publish_wakeups(wakeups: enrolments.Wakeups) -> None:
    """Deliver the committed sends and wake the enrolments due soon."""
    if wakeups.sends:
        enqueue_delivery(wakeups.sends)
    if wakeups.steps:
        publish_steps(wakeups.steps)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    """Publish what the committed transaction scheduled (never before: workers must see it)."""
    # Released SAVEPOINTs dispatch after_commit too; only the real commit publishes.
    if session.in_nested_transaction():
        return
    found = enrolments.take_wakeups(session)
    if found.sends or found.steps:
        publish_wakeups(found)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    """Drop what a rolled-back transaction scheduled."""
    if not session.in_nested_transaction():
        enrolments.take_wakeups(session)


@shared_task(name="sequences.run_steps", queue=Queue.DEFAULT, acks_late=True)
def run_steps(enrolment_ids: list[str]) -> int:
    """Run the due steps of these enrolments; not-yet-due or finished ones are skipped."""
    with db.transaction() as session:
        return enrolments.run_steps(session, enrolment_ids=enrolment_ids)


@shared_task(name="sequences.run_step", queue=Queue.DEFAULT, acks_late=True)
def run_step(enrolment_id: str) -> int:
    """Run one enrolment's due step (idempotent)."""
    with db.transaction() as session:
        return enrolments.run_steps(session, enrolment_ids=[enrolment_id])


def sweep_once(settings: Settings, *, now: datetime | None = None) -> int:
    """Claim and enqueue one batch of due steps; return how many."""
    now = now or utcnow()
    with db.transaction() as session:
        claimed = enrolments.claim_due(
            session, now=now, lookahead=timedelta(seconds=settings.sequence_sweep_interval_s * 2),
            requeue_after=timedelta(seconds=settings.sequence_requeue_after_s),
            limit=settings.sequence_sweep_batch)
    if claimed:
        publish_steps(claimed)
    return len(claimed)


@shared_task(name="sequences.sweep", queue=Queue.MAINTENANCE, acks_late=True)
def sweep() -> int:
    """Enqueue steps due soon that no task holds, batch by batch, for a few seconds at most."""
    settings = _settings()
    started = time.monotonic()
    total = 0
    while time.monotonic() - started < SWEEP_BUDGET_S:
        claimed = sweep_once(settings)
        total += claimed
        if claimed < settings.sequence_sweep_batch:
            break
    if total:
        log.info("sequence_steps_swept", extra={"count": total})
    return total
