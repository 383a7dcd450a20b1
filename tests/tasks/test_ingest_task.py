"""The ingest task as a function: idempotent, and robust to a tenant deleted mid-queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy import select

from app import db
from app.ids import new_id
from app.models import Event
from app.models import Tenant as TenantRow
from app.timeutil import isoformat
from app.timeutil import utcnow
from tasks.events import ingest_events


def _message(tenant_id: str, email: str) -> dict[str, Any]:
    now = isoformat(utcnow())
    return {"id": new_id("evt"), "tenantId": tenant_id, "email": email, "contactId": None,
            "event": "signed.up", "properties": {}, "timestamp": now, "createdAt": now}


def _stored_ids() -> set[str]:
    with db.transaction() as session:
        return set(session.scalars(select(Event.id)))


def test_a_redelivered_batch_stores_each_event_once(make_tenant: Any) -> None:
    tenant = make_tenant()
    batch = [_message(tenant.id, f"u{i}@acme.test") for i in range(5)]

    assert ingest_events(batch) == 5
    ingest_events(batch)

    assert _stored_ids() == {m["id"] for m in batch}


def test_a_deleted_tenant_does_not_sink_the_other_events_of_its_batch(make_tenant: Any) -> None:
    kept, doomed = make_tenant("Kept"), make_tenant("Doomed")
    ingest_events([_message(doomed.id, "warm@acme.test")])  # the worker now knows the tenant
    with db.transaction() as session:
        session.execute(delete(TenantRow).where(TenantRow.id == doomed.id))
    survivor = _message(kept.id, "a@acme.test")

    ingest_events([_message(doomed.id, "new@acme.test"), survivor])

    assert survivor["id"] in _stored_ids()
