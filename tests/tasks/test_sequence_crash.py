"""Sequences survive crashes: killed workers, a flushed broker, two sweepers at once.

Each test runs its own workers with beat embedded (`-B`) and a fast sweeper, and ends with
every e-mail step done exactly once (one send per enrolment and step, one `email.sent` each)
and every enrolment in the right state.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import db
from app.models import Enrolment
from app.models import Event
from app.models import Send
from tests.api.test_sequences import active_sequence
from tests.conftest import Tenant
from tests.support import WorkerProcess
from tests.support import backend
from tests.support import flush_redis_db
from tests.support import wait_for

SEQUENCE = """
trigger:
  event: purchase.completed
steps:
  - send: order-confirmation
  - delay: {delay}
  - send: review-request
"""
TEMPLATES = ("order-confirmation", "review-request")


@pytest.fixture
def workers(stack_env: dict[str, str], tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Workers made by `spawn`, all stopped at the end."""
    made: list[WorkerProcess] = []
    yield made
    for process in made:
        process.stop()


def spawn(workers: list[WorkerProcess], stack_env: dict[str, str], tmp_path: Path, *,
          beat: bool = True, **settings: str) -> WorkerProcess:
    """Start a worker with beat and the given sequence settings."""
    env = {**stack_env, "KRAITER_SEQUENCE_SWEEP_INTERVAL": "0.5",
           "KRAITER_SEQUENCE_REQUEUE_AFTER": "2", **settings}
    name = f"worker{len(workers)}"
    extra = ("-B", "--schedule", str(tmp_path / f"{name}-beat")) if beat else ()
    process = WorkerProcess(env, tmp_path / f"{name}.log", extra_args=extra)
    workers.append(process)
    process.start()
    return process


def enrol(tenant: Tenant, count: int) -> None:
    emails = [f"buyer{n}@example.com" for n in range(count)]
    response = tenant.post("/api/events/batch", json={"events": [
        {"email": email, "event": "purchase.completed"} for email in emails]})
    assert response.status_code == 202, response.get_json()


def snapshot() -> tuple[list[Enrolment], list[Send], Counter[tuple[str, int]]]:
    with db.transaction() as session:
        rows = session.query(Enrolment).all()
        sends = session.query(Send).all()
        events = session.query(Event).filter(Event.name == "email.sent").all()
        return rows, sends, Counter(e.properties["sendId"] for e in events)


def all_done(count: int) -> bool:
    rows, sends, _ = snapshot()
    return (len(rows) == count and all(row.status == "completed" for row in rows)
            and len(sends) == 2 * count and all(s.status != "queued" for s in sends))


def assert_exactly_once(count: int, *, interrupted: bool = False) -> None:
    rows, sends, sent = snapshot()
    assert len(rows) == count and {row.status for row in rows} == {"completed"}
    steps = Counter((s.enrolment_id, s.step_index) for s in sends)
    assert len(steps) == 2 * count and set(steps.values()) == {1}
    assert all(n == 1 for n in sent.values())  # no send went out twice
    # A send whose worker died while the transport ran is never retried (it may have gone out):
    # it stays `sending` until the stale sweep fails it.
    allowed = {"sent", "sending", "failed"} if interrupted else {"sent"}
    assert {s.status for s in sends} <= allowed


def test_a_worker_killed_while_steps_are_pending(tenant: Tenant, workers: list[WorkerProcess],
                                                 stack_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    active_sequence(tenant, "post-purchase", SEQUENCE.format(delay="3s"), TEMPLATES)
    first = spawn(workers, stack_env, tmp_path)
    enrol(tenant, 20)
    wait_for(lambda: len([s for s in snapshot()[1] if s.status == "sent"]) == 20,
             message="the confirmations")
    first.kill()  # the delayed steps' ETA tasks die with it
    time.sleep(4)  # past the due time, nobody running
    spawn(workers, stack_env, tmp_path)
    wait_for(lambda: all_done(20), timeout=30, message="every review request")
    time.sleep(2)
    assert_exactly_once(20)


def test_a_worker_killed_while_steps_are_being_sent(tenant: Tenant,
                                                    workers: list[WorkerProcess],
                                                    stack_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    active_sequence(tenant, "post-purchase", SEQUENCE.format(delay="1s"), TEMPLATES)
    process = spawn(workers, stack_env, tmp_path)
    enrol(tenant, 60)
    for pause in (0.3, 0.7, 1.1):  # kill it mid-flight, a few times
        time.sleep(pause)
        process.kill()
        process = spawn(workers, stack_env, tmp_path)
    wait_for(lambda: all_done(60), timeout=60, message="every enrolment to finish")
    time.sleep(2)
    assert_exactly_once(60, interrupted=True)


@pytest.mark.skipif(backend() != "postgres", reason="flushes Redis")
def test_redis_flushed_in_the_middle_of_a_delay(tenant: Tenant, workers: list[WorkerProcess],
                                                stack_env: dict[str, str],
                                                tmp_path: Path) -> None:
    active_sequence(tenant, "post-purchase", SEQUENCE.format(delay="3s"), TEMPLATES)
    first = spawn(workers, stack_env, tmp_path)
    enrol(tenant, 20)
    wait_for(lambda: len([s for s in snapshot()[1] if s.status == "sent"]) == 20,
             message="the confirmations")
    first.kill()
    flush_redis_db(stack_env["REDIS_URL"])  # every queued and ETA task is gone
    spawn(workers, stack_env, tmp_path)
    wait_for(lambda: all_done(20), timeout=30, message="every review request")
    time.sleep(2)
    assert_exactly_once(20)


def test_two_sweepers_at_once(tenant: Tenant, workers: list[WorkerProcess],
                              stack_env: dict[str, str], tmp_path: Path) -> None:
    active_sequence(tenant, "post-purchase", SEQUENCE.format(delay="2s"), TEMPLATES)
    # No fast path: every delayed step is found by the two beat sweepers racing each other.
    spawn(workers, stack_env, tmp_path, KRAITER_SEQUENCE_FAST_PATH="0")
    spawn(workers, stack_env, tmp_path, KRAITER_SEQUENCE_FAST_PATH="0")
    enrol(tenant, 40)
    wait_for(lambda: all_done(40), timeout=40, message="every enrolment to finish")
    time.sleep(2)
    assert_exactly_once(40)
