"""The per-process hub: one poll serves every stream, whatever their number."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from app import db
from app.live_feed import FeedHub
from app.live_feed import StreamLimitReached
from app.live_feed import follow
from app.live_feed import signal_safe_closer
from app.services import ingest
from app.timeutil import isoformat
from app.timeutil import utcnow
from tests.conftest import Tenant


def _store(tenant: Tenant, *names: str) -> list[str]:
    now = isoformat(utcnow())
    messages = [{"id": f"evt_{tenant.id}_{name}", "tenantId": tenant.id, "email": "a@acme.test",
                 "contactId": None, "event": name, "properties": {}, "timestamp": now,
                 "createdAt": now} for name in names]
    with db.transaction() as session:
        ingest.store_events(session, messages=messages)
    return [str(message["id"]) for message in messages]


@pytest.fixture
def hub() -> Iterator[FeedHub]:
    # Polled by hand: the background thread would poll only after an hour.
    feed_hub = FeedHub(poll_interval=3600, max_streams=200)
    yield feed_hub
    feed_hub.close()


@pytest.fixture
def statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(db.get_engine(), "before_cursor_execute", record)
    yield seen
    event.remove(db.get_engine(), "before_cursor_execute", record)


def test_one_poll_serves_every_stream_with_one_query_per_busy_tenant(
        hub: FeedHub, tenant: Tenant, other_tenant: Tenant, make_tenant: Any,
        statements: list[str]) -> None:
    quiet = make_tenant("Quiet")
    ours = [hub.subscribe(tenant.id) for _ in range(150)]
    theirs = [hub.subscribe(other_tenant.id) for _ in range(40)]
    hub.subscribe(quiet.id)
    our_ids = _store(tenant, "a", "b")
    their_ids = _store(other_tenant, "c")
    statements.clear()

    hub.poll()

    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3  # the heads of all three feeds, then the news of the two busy ones
    assert all([row.id for row in s.take(0)] == our_ids for s in ours)
    assert all([row.id for row in s.take(0)] == their_ids for s in theirs)


def test_follow_catches_up_from_the_database_then_relays_the_hub(hub: FeedHub,
                                                                 tenant: Tenant) -> None:
    old = _store(tenant, "old1", "old2")
    subscription = hub.subscribe(tenant.id)
    assert subscription.start == 2
    new = _store(tenant, "new")
    hub.poll()
    stream = follow(hub, subscription, after=0, heartbeat_s=0.05, still_allowed=lambda: True)

    # The catch-up reads what is committed; the hub's copy of `new` is then not repeated.
    assert [item.id for item in next(stream)] == old + new
    assert next(stream) == []  # a heartbeat: nothing else is pending
    later = _store(tenant, "later")
    hub.poll()
    assert [item.id for item in next(stream)] == later  # relayed from the hub
    stream.close()
    assert hub.open_streams() == 0


def test_a_reader_that_falls_behind_is_ended_to_resume_later(tenant: Tenant) -> None:
    hub = FeedHub(poll_interval=3600, max_streams=2, max_backlog=3)
    subscription = hub.subscribe(tenant.id)
    _store(tenant, "a", "b", "c", "d")
    hub.poll()
    assert subscription.overflowed
    assert list(follow(hub, subscription, after=subscription.start, heartbeat_s=1,
                       still_allowed=lambda: True)) == []


def test_slots_are_limited_and_given_back(hub: FeedHub, tenant: Tenant) -> None:
    small = FeedHub(poll_interval=3600, max_streams=1)
    first = small.subscribe(tenant.id)
    with pytest.raises(StreamLimitReached):
        small.subscribe(tenant.id)
    small.unsubscribe(first)
    small.unsubscribe(first)  # twice is harmless
    small.unsubscribe(small.subscribe(tenant.id))
    small.close()
    with pytest.raises(StreamLimitReached):
        small.subscribe(tenant.id)  # a closing hub takes no new streams


def test_a_signal_handler_ends_the_streams_without_taking_their_locks(hub: FeedHub,
                                                                       tenant: Tenant) -> None:
    # A SIGTERM handler runs inside whatever the main thread was doing, possibly inside itself
    # (the master forwards the SIGTERM the whole group got): it must not wait for a lock.
    subscription = hub.subscribe(tenant.id)
    end_streams = signal_safe_closer(hub.close)
    asked = threading.Event()
    with hub._lock:  # what an interrupted close would be holding
        threading.Thread(target=lambda: (end_streams(), end_streams(), asked.set()),
                         daemon=True).start()
        assert asked.wait(5), "the signal handler's part waited for the hub's lock"
        assert not subscription.ended
    deadline = time.monotonic() + 5
    while not subscription.ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert subscription.closed
    with pytest.raises(StreamLimitReached):
        hub.subscribe(tenant.id)
