"""Celery entrypoints for sending e-mail: deliver sends, and the two sweeps beat runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

from celery import shared_task
from flask import current_app
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.config import Settings
from app.services import sending
from app.transports import Transport
from app.transports import get_transport
from app.transports.message import OutgoingMessage
from tasks.celery_app import Queue

log = logging.getLogger(__name__)

# Sends per `sends.deliver_many` message: enough to make the per-message cost negligible, few
# enough that one message never keeps a worker busy for long.
BATCH_SIZE = 100


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def enqueue_delivery(send_ids: str | list[str], *, countdown: float | None = None) -> None:
    """Ask a worker to deliver committed sends (call only after the commit).

    A broker failure is logged, not raised: the rows are committed as `queued`, so the lost-send
    sweep enqueues them again; failing the request instead would invite the client to send twice.
    """
    ids = [send_ids] if isinstance(send_ids, str) else list(send_ids)
    try:
        if len(ids) == 1:
            deliver.apply_async(args=(ids[0],), countdown=countdown)
        else:
            for start in range(0, len(ids), BATCH_SIZE):
                deliver_many.apply_async(args=(ids[start:start + BATCH_SIZE],),
                                         countdown=countdown)
    except Exception:
        log.exception("send_enqueue_failed", extra={"send_ids": ids})


def deliver_sends(send_ids: list[str], *, settings: Settings,
                  transport: Transport) -> dict[str, float]:
    """Deliver each queued send among `send_ids`; return the retry delay of those to retry.

    The reading and rendering of the whole batch comes first, in one query, and no transaction
    stays open while a template renders or a server talks. Then, group by group
    (`send_claim_group` sends): claim (committed before any message goes out: that is what stops
    a second worker), transmit, record. A group's outcomes are recorded in the transaction that
    claims the next group, so a group costs one commit; that commit comes right after the
    group's last transmission, before anything else goes out.
    """
    retries: dict[str, float] = {}
    claimed: set[str] = set()
    # One connection for the whole batch, each step its own short transaction on it: taking a
    # connection from the pool for every step would also ping the server every time.
    with db.get_engine().connect() as connection:
        with _transaction(connection) as session:
            drafts = sending.prepare_sends(session, send_ids=send_ids, settings=settings)
        unrecorded: dict[str, sending.Outcome] = {}
        size = settings.send_claim_group
        for start in range(0, len(drafts), size):
            messages = _record_and_claim(connection, unrecorded, drafts[start:start + size],
                                         settings, retries)
            claimed.update(messages)
            unrecorded = {send_id: sending.transmit(message, transport)
                          for send_id, message in messages.items()}
        _record(connection, unrecorded, settings, retries)
    for send_id in set(send_ids) - claimed:
        log.info("send_not_claimed %s", send_id, extra={"send_id": send_id})
    return retries


def _record_and_claim(connection: Connection, unrecorded: dict[str, sending.Outcome],
                      drafts: list[sending.Draft], settings: Settings,
                      retries: dict[str, float]) -> dict[str, OutgoingMessage]:
    """Record the previous group's outcomes and claim the next group, in one transaction."""
    try:
        with _transaction(connection) as session:
            # The claims first: recording stores events, which takes the tenant's feed lock
            # until the commit, so it goes last to hold that lock as briefly as possible.
            messages = sending.claim_sends(session, drafts=drafts)
            found = sending.record_outcomes(session, outcomes=unrecorded, settings=settings)
    except IntegrityError:
        if not unrecorded:
            raise
    else:
        retries.update(found)
        return messages
    # The outcomes could not be recorded as they were (see `_record`): both steps on their own.
    _record(connection, unrecorded, settings, retries)
    with _transaction(connection) as session:
        return sending.claim_sends(session, drafts=drafts)


@contextmanager
def _transaction(connection: Connection) -> Iterator[Session]:
    """A session for one transaction on `connection`: committed on success, else rolled back."""
    session = Session(bind=connection, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _record(connection: Connection, outcomes: dict[str, sending.Outcome], settings: Settings,
            retries: dict[str, float]) -> None:
    """Record outcomes together, or, when that breaks a constraint, each on its own."""
    if len(outcomes) > 1:
        try:
            with _transaction(connection) as session:
                retries.update(sending.record_outcomes(session, outcomes=outcomes,
                                                       settings=settings))
                return
        except IntegrityError:
            pass  # one of them clashes (see `_record_alone`): the others must still be recorded
    for send_id, outcome in outcomes.items():
        _record_alone(connection, send_id, outcome, settings, retries)


def _record_alone(connection: Connection, send_id: str, outcome: sending.Outcome,
                  settings: Settings, retries: dict[str, float]) -> None:
    try:
        with _transaction(connection) as session:
            retries.update(sending.record_outcomes(session, outcomes={send_id: outcome},
                                                   settings=settings))
            return
    except IntegrityError:
        if outcome.provider_message_id is None:
            raise
    # Provider ids are unique (feedback is matched on them); a relay that answers every
    # message alike must not stop us from recording that this one went out.
    log.warning("provider_id_taken %s", send_id, extra={"send_id": send_id})
    with _transaction(connection) as session:
        retries.update(sending.record_outcomes(
            session, outcomes={send_id: replace(outcome, provider_message_id=None)},
            settings=settings))


def _deliver(send_ids: list[str]) -> None:
    settings = _settings()
    retries = deliver_sends(send_ids, settings=settings, transport=get_transport(settings))
    for send_id, delay in retries.items():
        enqueue_delivery(send_id, countdown=delay)


@shared_task(name="sends.deliver", queue=Queue.EMAIL, acks_late=True)
def deliver(send_id: str) -> None:
    """Deliver one send; a send already claimed (a task delivered twice) is a no-op."""
    _deliver([send_id])


@shared_task(name="sends.deliver_many", queue=Queue.EMAIL, acks_late=True)
def deliver_many(send_ids: list[str]) -> None:
    """Deliver a batch of sends (sweeps, sequence steps, bulk), claimed group by group."""
    _deliver(send_ids)


@shared_task(name="sends.sweep_stale", queue=Queue.MAINTENANCE, acks_late=True)
def sweep_stale() -> int:
    """Fail sends stuck in `sending` (their worker died mid-send); they are never resent."""
    older_than = timedelta(seconds=_settings().send_stale_after_s)
    with db.transaction() as session:
        failed = sending.fail_interrupted_sends(session, older_than=older_than)
    if failed:
        log.warning("sends_interrupted %d", failed, extra={"count": failed})
    return failed


@shared_task(name="sends.requeue_lost", queue=Queue.MAINTENANCE, acks_late=True)
def requeue_lost() -> int:
    """Enqueue again the `queued` sends whose task the broker lost (the database decides)."""
    settings = _settings()
    with db.transaction() as session:
        send_ids = sending.take_lost_sends(
            session, older_than=timedelta(seconds=settings.send_requeue_after_s),
            settings=settings)
    if send_ids:
        enqueue_delivery(send_ids)
        log.warning("sends_requeued %d", len(send_ids), extra={"count": len(send_ids)})
    return len(send_ids)
