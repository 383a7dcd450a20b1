"""The ingest ledger brings back a message a worker took off Redis and died with."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from app import db
from app.ingest_ledger import NoLedger
from app.ingest_ledger import RedisLedger
from app.models import Event
from tasks.events import requeue_lost_events
from tests.conftest import Tenant
from tests.support import WorkerProcess
from tests.support import backend
from tests.support import wait_for

pytestmark = pytest.mark.skipif(backend() != "postgres",
                                reason="the embedded broker keeps messages until acked")


def _broker(app: Flask) -> redis.Redis:
    return redis.Redis.from_url(app.config["SETTINGS"].redis_url)


@pytest.fixture(autouse=True)
def empty_ledger(app: Flask) -> None:
    _broker(app).delete(RedisLedger.PAYLOADS, RedisLedger.SINCE, "ingest")


def _sweep(app: Flask, monkeypatch: pytest.MonkeyPatch, older_than_s: int) -> int:
    monkeypatch.setitem(app.config, "SETTINGS", dataclasses.replace(
        app.config["SETTINGS"], ingest_requeue_after_s=older_than_s))
    with app.app_context():
        return int(requeue_lost_events.run())


def test_a_message_lost_in_flight_is_published_again(app: Flask, tenant: Tenant,
                                                     stack_env: dict[str, str], tmp_path: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _broker(app)
    answer = tenant.post("/api/events", json={"email": "a@acme.test", "event": "lost.once"})
    assert answer.status_code == 202
    assert broker.llen("ingest") == 1
    # What a worker SIGKILLed right after its BRPOP leaves behind: nothing in the queue, nothing
    # in kombu's unacked hash.
    broker.rpop("ingest")
    assert app.extensions["ingest_ledger"].pending() == 1

    assert _sweep(app, monkeypatch, older_than_s=60) == 0  # not overdue yet
    time.sleep(1.1)
    assert _sweep(app, monkeypatch, older_than_s=1) == 1
    assert broker.llen("ingest") == 1

    worker = WorkerProcess(stack_env, tmp_path / "worker.log", concurrency=1)
    worker.start()
    try:
        stored = wait_for(lambda: list(db.session.scalars(select(Event.id))) or db.remove_session(),
                          message="the requeued event")
        wait_for(lambda: app.extensions["ingest_ledger"].pending() == 0, message="struck out")
    finally:
        worker.stop()
    assert stored == [answer.get_json()["id"]]


def test_nothing_is_published_again_while_the_queue_has_a_backlog(
        app: Flask, tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _broker(app)
    tenant.post("/api/events", json={"email": "a@acme.test", "event": "waiting"})
    time.sleep(1.1)
    assert _sweep(app, monkeypatch, older_than_s=1) == 0  # still waiting in the queue
    assert broker.llen("ingest") == 1
    broker.delete("ingest")


def test_record_strike_and_requeue(app: Flask) -> None:
    ledger = RedisLedger.from_url(app.config["SETTINGS"].redis_url)
    for task_id in ("t1", "t2", "t3", "t4"):
        ledger.record(task_id, [{"id": f"evt_{task_id}"}])
    ledger.strike(["t1", "t3"])  # one batch of the worker's
    ledger.strike([])
    published: list[tuple[str, Any]] = []
    assert ledger.requeue_overdue(older_than_s=0, publish=lambda *a: published.append(a)) == 2
    assert sorted(published) == [("t2", [{"id": "evt_t2"}]), ("t4", [{"id": "evt_t4"}])]
    assert ledger.pending() == 2  # still there until a worker stores them
    ledger.strike(["t2", "t4", "t9"])
    assert ledger.pending() == 0
    assert NoLedger().requeue_overdue(older_than_s=0, publish=lambda *a: None) == 0
