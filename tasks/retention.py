"""Celery entrypoints for retention, and the archival pass they share with the CLI."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from flask import current_app

from app import db
from app.services import feedback
from app.services import retention
from tasks.celery_app import Queue

log = logging.getLogger(__name__)


def run_archive_pass(*, batch_size: int) -> int:
    """Archive every tenant's expired events, one short transaction per batch."""
    with db.transaction() as session:
        cutoffs = retention.retention_cutoffs(session)
    total = 0
    for tenant_id, cutoff in cutoffs.items():
        while True:
            with db.transaction() as session:
                moved = retention.archive_batch(session, tenant_id=tenant_id, cutoff=cutoff,
                                                batch_size=batch_size)
            total += moved
            if moved < batch_size:
                break
    log.info("events_archived", extra={"moved": total})
    return total


@shared_task(name="events.archive", queue=Queue.MAINTENANCE, acks_late=True)
def archive_events() -> int:
    """One archival pass over every tenant (safe to run concurrently with itself)."""
    return run_archive_pass(batch_size=current_app.config["SETTINGS"].archive_batch_size)


@shared_task(name="idempotency.purge", queue=Queue.MAINTENANCE, acks_late=True)
def purge_idempotency_keys() -> int:
    """Forget idempotency keys older than their 24 h window."""
    ttl = timedelta(seconds=current_app.config["SETTINGS"].idempotency_ttl_s)
    with db.transaction() as session:
        return retention.purge_idempotency_keys(session, older_than=ttl)


def run_webhook_purge(*, batch_size: int = feedback.PURGE_BATCH) -> int:
    """Forget processed webhook notifications past the dedupe window, one short transaction per
    batch; return how many. Safe to run twice at once (PostgreSQL: SKIP LOCKED)."""
    total = 0
    while True:
        with db.transaction() as session:
            purged = feedback.purge_deliveries(session, batch_size=batch_size)
        total += purged
        if purged < batch_size:
            break
    log.info("webhook_deliveries_purged", extra={"purged": total})
    return total


@shared_task(name="webhooks.purge_deliveries", queue=Queue.MAINTENANCE, acks_late=True)
def purge_webhook_deliveries() -> int:
    """Forget SNS MessageIds older than the dedupe window (SNS never retries that late)."""
    return run_webhook_purge()
