"""Feed positions: handed out in commit order, so a reader never skips a late committer."""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from app.db import read_only_connection
from app.models import Event
from app.services import feed
from app.services import ingest
from app.timeutil import isoformat
from app.timeutil import utcnow
from tests.conftest import Tenant


def _messages(tenant: Tenant, *names: str) -> list[dict[str, object]]:
    now = isoformat(utcnow())
    return [{"id": f"evt_{name}", "tenantId": tenant.id, "email": "ann@acme.test",
             "contactId": None, "event": name, "properties": {}, "timestamp": now,
             "createdAt": now} for name in names]


def _positions(tenant: Tenant) -> dict[str, int | None]:
    with read_only_connection() as connection:
        return {row.name: row.feed_seq for row in connection.execute(
            select(Event.name, Event.feed_seq).where(Event.tenant_id == tenant.id))}


def test_a_second_writer_waits_for_the_first_to_commit(tenant: Tenant) -> None:
    first = Session(db.get_engine())
    ingest.store_events(first, messages=_messages(tenant, "a1", "a2"))
    second_done = threading.Event()

    def second_writer() -> None:
        with db.transaction() as session:
            ingest.store_events(session, messages=_messages(tenant, "b1"))
        second_done.set()

    thread = threading.Thread(target=second_writer)
    thread.start()
    try:
        # The second transaction cannot take a position while the first holds the feed.
        assert not second_done.wait(1.0)
        with read_only_connection() as connection:
            assert feed.heads(connection, tenant_ids=[tenant.id]) == {tenant.id: 0}
    finally:
        first.commit()
        first.close()
    thread.join(10)
    assert second_done.is_set()
    assert _positions(tenant) == {"a1": 1, "a2": 2, "b1": 3}


def test_a_redelivered_batch_stores_nothing_and_leaves_only_a_hole(tenant: Tenant) -> None:
    messages = _messages(tenant, "x", "y")
    with db.transaction() as session:
        assert len(ingest.store_events(session, messages=messages)) == 2
    with db.transaction() as session:
        assert ingest.store_events(session, messages=messages) == []
        ingest.store_events(session, messages=_messages(tenant, "z"))

    assert _positions(tenant) == {"x": 1, "y": 2, "z": 5}
    with read_only_connection() as connection:
        assert [row.name for row in feed.read_after(connection, tenant_id=tenant.id,
                                                    after=1, limit=10)] == ["y", "z"]
        assert feed.position_of(connection, tenant_id=tenant.id, event_id="evt_y") == 2
        assert feed.position_of(connection, tenant_id="ten_other", event_id="evt_y") is None


def test_system_events_never_recreate_a_deleted_contact(tenant: Tenant) -> None:
    system = [{**message, "source": "system"} for message in _messages(tenant, "email.opened")]
    with db.transaction() as session:
        assert ingest.store_events(session, messages=system) == []
    assert _positions(tenant) == {}
