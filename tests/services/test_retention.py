"""Retention: events past a tenant's retentionDays move to the archive, once, in batches."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func
from sqlalchemy import select

from app import db
from app.ids import new_id
from app.models import ArchivedEvent
from app.models import Event
from app.services import ingest
from app.timeutil import isoformat
from app.timeutil import utcnow
from tasks.retention import run_archive_pass
from tests.conftest import Tenant


def _store(tenant: Tenant, *, days_ago: float, count: int, email: str = "old@acme.test"
           ) -> list[str]:
    now = utcnow()
    messages = [{"id": new_id("evt"), "tenantId": tenant.id, "email": email, "contactId": None,
                 "event": "page.viewed", "properties": {"n": i},
                 "timestamp": isoformat(now - timedelta(days=days_ago)),
                 "createdAt": isoformat(now)} for i in range(count)]
    with db.transaction() as session:
        ingest.store_events(session, messages=messages)
    return [m["id"] for m in messages]


def _count(model: type[Event] | type[ArchivedEvent]) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_only_events_past_retention_move_and_stay_readable(make_tenant: Any) -> None:
    tenant = make_tenant("Short memory", retention_days=30)
    old = _store(tenant, days_ago=31, count=5)
    recent = _store(tenant, days_ago=29, count=3)

    assert run_archive_pass(batch_size=2) == 5

    live = tenant.get("/api/events?limit=100").get_json()["data"]
    archived = tenant.get("/api/events?archived=true&limit=100").get_json()["data"]
    assert sorted(e["id"] for e in live) == sorted(recent)
    assert sorted(e["id"] for e in archived) == sorted(old)
    assert tenant.get(f"/api/events/{old[0]}").get_json()["id"] == old[0]
    assert run_archive_pass(batch_size=2) == 0


def test_each_tenant_keeps_its_own_retention(make_tenant: Any) -> None:
    brief = make_tenant("Brief", retention_days=7)
    patient = make_tenant("Patient", retention_days=365)
    _store(brief, days_ago=10, count=4)
    kept = _store(patient, days_ago=10, count=4)

    assert run_archive_pass(batch_size=100) == 4

    assert sorted(e["id"] for e in patient.get("/api/events").get_json()["data"]) == sorted(kept)
    assert brief.get("/api/events").get_json()["data"] == []
    assert patient.get("/api/events?archived=true").get_json()["data"] == []


def test_two_concurrent_passes_move_every_row_exactly_once(make_tenant: Any) -> None:
    tenant = make_tenant("Busy", retention_days=1)
    expired = set(_store(tenant, days_ago=2, count=3000))
    totals: list[int] = []

    def archive() -> None:
        totals.append(run_archive_pass(batch_size=100))
        db.remove_session()

    threads = [threading.Thread(target=archive) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(totals) == 3000
    assert _count(Event) == 0
    with db.transaction() as session:
        assert set(session.scalars(select(ArchivedEvent.id))) == expired


@pytest.mark.usefixtures("worker")
def test_the_beat_task_archives_through_a_real_worker(make_tenant: Any, app: Flask) -> None:
    from tests.support import wait_for

    tenant = make_tenant("Beat", retention_days=3)
    _store(tenant, days_ago=4, count=10)

    app.extensions["celery"].send_task("events.archive")

    wait_for(lambda: _count(ArchivedEvent) == 10, message="the archive task")
    assert _count(Event) == 0
