"""Enrolment services: ingestion enrols once, steps run once, sweeps claim disjoint rows."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from app import db
from app.ids import new_id
from app.models import Enrolment
from app.models import Send
from app.services import enrolments
from app.services import ingest
from app.timeutil import isoformat
from app.timeutil import utcnow
from tests.api.test_sequences import active_sequence
from tests.conftest import Tenant
from tests.support import backend

SEQUENCE = """
trigger:
  event: signed.up
steps:
  - send: welcome
  - delay: 1h
  - send: tips
exitConditions:
  - event: account.closed
"""


def message(tenant: Tenant, email: str, name: str = "signed.up") -> dict[str, Any]:
    now = isoformat(utcnow())
    return {"id": new_id("evt"), "tenantId": tenant.id, "email": email, "contactId": None,
            "event": name, "properties": {}, "timestamp": now, "createdAt": now}


def store(messages: list[dict[str, Any]]) -> None:
    with db.transaction() as session:
        ingest.store_events(session, messages=messages)


def all_enrolments() -> list[Enrolment]:
    with db.transaction() as session:
        return session.query(Enrolment).order_by(Enrolment.id).all()


def test_a_redelivered_batch_enrols_nobody_twice(app: Flask, tenant: Tenant) -> None:
    active_sequence(tenant, "welcome", SEQUENCE, ("welcome", "tips"))
    batch = [message(tenant, "a@example.com"), message(tenant, "b@example.com")]
    store(batch)
    store(batch)
    assert len(all_enrolments()) == 2
    # A second, distinct event is refused by the default policy while the first is active.
    store([message(tenant, "a@example.com")])
    assert len(all_enrolments()) == 2


def test_an_exit_event_in_the_same_batch_ends_the_new_enrolment(app: Flask,
                                                                tenant: Tenant) -> None:
    active_sequence(tenant, "welcome", SEQUENCE, ("welcome", "tips"))
    store([message(tenant, "a@example.com"), message(tenant, "a@example.com", "account.closed")])
    [enrolment] = all_enrolments()
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "exitCondition")
    assert enrolment.next_step_at is None
    store([message(tenant, "b@example.com")])
    store([message(tenant, "b@example.com", "account.closed")])
    assert [(e.status, e.exit_reason) for e in all_enrolments()][1] == ("exited", "exitCondition")


def test_matching_costs_no_query_per_event(app: Flask, tenant: Tenant) -> None:
    active_sequence(tenant, "welcome", SEQUENCE, ("welcome", "tips"))
    store([message(tenant, "warm@example.com", "other")])  # warm the caches
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2])[:40])

    engine = db.get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        store([message(tenant, f"u{n}@example.com") for n in range(100)]
              + [message(tenant, f"u{n}@example.com", "page.viewed") for n in range(100)])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(all_enrolments()) == 100
    assert len(statements) < 20, statements


def test_running_a_step_twice_sends_once(app: Flask, tenant: Tenant) -> None:
    active_sequence(tenant, "welcome", SEQUENCE, ("welcome", "tips"))
    store([message(tenant, "a@example.com")])
    [enrolment] = all_enrolments()
    for _ in range(2):
        with db.transaction() as session:
            enrolments.run_steps(session, enrolment_ids=[enrolment.id])
    later = utcnow() + timedelta(hours=2)
    for _ in range(2):
        with db.transaction() as session:
            enrolments.run_steps(session, enrolment_ids=[enrolment.id], now=later)
    with db.transaction() as session:
        sent = sorted((s.template_id, s.step_index) for s in session.query(Send))
    assert sent == [("tips", 2), ("welcome", 0)]
    assert all_enrolments()[0].status == "completed"


def _claim(now: Any) -> list[str]:
    with db.transaction() as session:
        return [row[0] for row in enrolments.claim_due(
            session, now=now, lookahead=timedelta(seconds=10),
            requeue_after=timedelta(seconds=60), limit=1000)]


def test_sweeps_claim_each_due_step_once(app: Flask, tenant: Tenant) -> None:
    active_sequence(tenant, "welcome", SEQUENCE, ("welcome", "tips"))
    store([message(tenant, f"u{n}@example.com") for n in range(50)])
    with db.transaction() as session:  # as if the fast-path tasks had been lost
        session.query(Enrolment).update({"enqueued_at": None})
    now = utcnow()
    claims: list[list[str]] = []
    threads = [threading.Thread(target=lambda: claims.append(_claim(now))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [enrolment_id for claim in claims for enrolment_id in claim]
    assert len(claimed) == 50 and len(set(claimed)) == 50
    assert _claim(now) == []  # marked: the next sweep leaves them to their tasks
    # ...until they have been overdue for longer than requeue_after.
    assert len(_claim(now + timedelta(seconds=120))) == 50


def test_paused_sequences_are_not_swept(app: Flask, tenant: Tenant) -> None:
    active_sequence(tenant, "welcome", SEQUENCE, ("welcome", "tips"))
    store([message(tenant, "a@example.com")])
    with db.transaction() as session:
        session.query(Enrolment).update({"enqueued_at": None})
    tenant.post("/api/sequences/welcome/pause")
    assert _claim(utcnow()) == []
    tenant.post("/api/sequences/welcome/resume")
    assert len(_claim(utcnow())) == 1


@pytest.mark.skipif(backend() != "postgres", reason="row locks need PostgreSQL")
def test_a_locked_row_is_skipped_by_the_sweeper(app: Flask, tenant: Tenant) -> None:
    active_sequence(tenant, "welcome", SEQUENCE, ("welcome", "tips"))
    store([message(tenant, "a@example.com"), message(tenant, "b@example.com")])
    with db.transaction() as session:
        session.query(Enrolment).update({"enqueued_at": None})
    first = all_enrolments()[0].id
    holder = db.get_engine().connect()
    transaction = holder.begin()
    holder.exec_driver_sql("SELECT 1 FROM enrolments WHERE id = %s FOR UPDATE", (first,))
    try:
        claimed = _claim(utcnow())
    finally:
        transaction.rollback()
        holder.close()
    assert first not in claimed and len(claimed) == 1
