"""The ingest task as a function: many messages at once, idempotent, robust to a tenant deleted
mid-queue, and every message it stored struck from the ledger."""

from __future__ import annotations

from typing import Any

import pytest
from celery_batches import SimpleRequest
from flask import Flask
from sqlalchemy import delete
from sqlalchemy import select

from app import db
from app.ids import new_id
from app.ingest_ledger import RedisLedger
from app.models import Event
from app.models import Tenant as TenantRow
from app.timeutil import isoformat
from app.timeutil import utcnow
from tasks import events as events_task
from tasks.events import ingest_events


def _message(tenant_id: str, email: str) -> dict[str, Any]:
    now = isoformat(utcnow())
    return {"id": new_id("evt"), "tenantId": tenant_id, "email": email, "contactId": None,
            "event": "signed.up", "properties": {}, "timestamp": now, "createdAt": now}


def _gathered(*messages: list[dict[str, Any]]) -> list[SimpleRequest]:
    """What celery-batches hands the task: one request per ingest message the worker got."""
    return [SimpleRequest(id=new_id("task"), name="events.ingest", args=(batch,), kwargs={},
                          delivery_info={}, hostname="test", ignore_result=True, reply_to=None,
                          correlation_id=None, request_dict={}) for batch in messages]


def _stored_ids() -> set[str]:
    with db.transaction() as session:
        return set(session.scalars(select(Event.id)))


def test_the_messages_gathered_are_stored_together_and_struck_from_the_ledger(
        app: Flask, make_tenant: Any) -> None:
    ours, theirs = make_tenant("Ours"), make_tenant("Theirs")
    first = [_message(ours.id, f"u{i}@acme.test") for i in range(3)]
    second = [_message(theirs.id, "u0@acme.test"), _message(ours.id, "u0@acme.test")]
    requests = _gathered(first, second)
    ledger = app.extensions["ingest_ledger"]
    for request in requests:
        ledger.record(request.id, request.args[0])
    pending_before = ledger.pending()

    assert ingest_events(requests) == 5

    assert _stored_ids() == {m["id"] for m in first + second}
    struck = pending_before - ledger.pending()
    assert struck == (len(requests) if isinstance(ledger, RedisLedger) else 0)  # embedded: none


def test_a_redelivered_message_stores_each_event_once(make_tenant: Any) -> None:
    tenant = make_tenant()
    batch = [_message(tenant.id, f"u{i}@acme.test") for i in range(5)]

    assert ingest_events(_gathered(batch)) == 5
    # Delivered again, and twice within one gathering.
    assert ingest_events(_gathered(batch[:2], batch)) == 0

    assert _stored_ids() == {m["id"] for m in batch}


def test_a_deleted_tenant_does_not_sink_the_other_events_gathered(make_tenant: Any) -> None:
    kept, doomed = make_tenant("Kept"), make_tenant("Doomed")
    ingest_events(_gathered([_message(doomed.id, "warm@acme.test")]))  # the worker knows it now
    with db.transaction() as session:
        session.execute(delete(TenantRow).where(TenantRow.id == doomed.id))
    survivor = _message(kept.id, "a@acme.test")

    assert ingest_events(_gathered([_message(doomed.id, "new@acme.test")], [survivor])) == 1

    assert survivor["id"] in _stored_ids()


def test_a_transaction_takes_at_most_500_events_unless_one_message_is_larger(
        make_tenant: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = make_tenant()
    sizes = [300, 150, 50, 400, 600, 1]  # events per gathered message
    messages = [[_message(tenant.id, f"m{n}u{i}@acme.test") for i in range(size)]
                for n, size in enumerate(sizes)]
    transactions: list[int] = []
    store = events_task.store_messages

    def store_and_count(batches: list[list[dict[str, Any]]]) -> int:
        transactions.append(sum(len(batch) for batch in batches))
        return store(batches)

    monkeypatch.setattr(events_task, "store_messages", store_and_count)

    assert ingest_events(_gathered(*messages)) == sum(sizes)

    assert transactions == [500, 400, 600, 1]
    assert len(_stored_ids()) == sum(sizes)
