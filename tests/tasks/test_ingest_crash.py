"""Crash safety of ingestion: a worker SIGKILLed while it holds ingest messages loses nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func
from sqlalchemy import select

from app import db
from app.models import Event
from tasks.events import requeue_lost_events
from tests.conftest import Tenant
from tests.support import WorkerProcess
from tests.support import wait_for

BATCHES = 40
BATCH_SIZE = 500


def _stored_count() -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def _accept_events(tenant: Tenant) -> set[str]:
    accepted: set[str] = set()
    for batch in range(BATCHES):
        events = [{"email": f"user{i % 300}@crash.test", "event": "page.viewed",
                   "properties": {"batch": batch, "i": i}} for i in range(BATCH_SIZE)]
        response = tenant.post("/api/events/batch", json={"events": events})
        assert response.status_code == 202
        accepted |= {item["id"] for item in response.get_json()["results"]}
    return accepted


def _stored_ids() -> set[str]:
    with db.transaction() as session:
        return set(session.scalars(select(Event.id)))


def _interrupt_first_worker(stack_env: dict[str, str], tmp_path: Path, accepted: int,
                            interrupt: Callable[[WorkerProcess], None]) -> tuple[int, int]:
    """Start a worker on the backlog and `interrupt` it once it has stored something; the
    events stored (before, right after) the interruption."""
    first = WorkerProcess(stack_env, tmp_path / "first.log", concurrency=1)
    first.start()
    stored_before = wait_for(_stored_count, interval=0.01, message="the first batch")
    interrupt(first)
    stored_after = _stored_count()
    assert stored_after < accepted, "the worker finished before it could be interrupted"
    return stored_before, stored_after


def _second_worker_until(stack_env: dict[str, str], tmp_path: Path, done: Callable[[], bool],
                         *, timeout: float, interval: float, message: str) -> None:
    second = WorkerProcess(stack_env, tmp_path / "second.log", concurrency=1)
    second.start()
    try:
        wait_for(done, timeout=timeout, interval=interval, message=message)
    finally:
        second.stop()


def test_sigkilled_worker_loses_no_accepted_event(tenant: Tenant, stack_env: dict[str, str],
                                                  tmp_path: Path, app: Flask,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The ingest ledger's sweeper publishes again what stays unstored 8 s (the visibility
    # timeout is 5 s here): on Redis it brings back the message a worker killed mid-fetch took
    # off the queue (see app.ingest_ledger); the embedded broker never loses it in the first place.
    monkeypatch.setitem(app.config, "SETTINGS",
                        dataclasses.replace(app.config["SETTINGS"], ingest_requeue_after_s=8))

    def all_stored_while_sweeping() -> bool:
        with app.app_context():
            requeue_lost_events.run()
        return _stored_count() >= len(accepted)

    accepted = _accept_events(tenant)
    stored_before_kill, stored_at_kill = _interrupt_first_worker(
        stack_env, tmp_path, len(accepted), WorkerProcess.kill)
    # Redelivery waits for the visibility timeout (5 s here) and kombu's restore scan, which a
    # lock held by the killed worker can hold back for up to a minute; lost messages for the
    # ledger's sweeper.
    _second_worker_until(stack_env, tmp_path, all_stored_while_sweeping, timeout=150,
                         interval=1.0,
                         message=f"{len(accepted)} events (had {stored_at_kill} at the kill)")
    assert stored_before_kill > 0
    assert _stored_ids() == accepted


def test_a_worker_stopped_by_a_deploy_hands_back_what_it_gathered(
        tenant: Tenant, stack_env: dict[str, str], tmp_path: Path) -> None:
    # SIGTERM (a deploy) while the worker holds ingest messages it has gathered but not stored:
    # they are unacknowledged, so the broker gives them to the next worker — no ledger sweep here.
    accepted = _accept_events(tenant)
    _, stored_at_stop = _interrupt_first_worker(stack_env, tmp_path, len(accepted),
                                                WorkerProcess.stop)
    _second_worker_until(stack_env, tmp_path, lambda: _stored_count() >= len(accepted),
                         timeout=90, interval=0.5,
                         message=f"{len(accepted)} events (had {stored_at_stop} at the stop)")
    assert _stored_ids() == accepted
