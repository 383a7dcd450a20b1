"""At most once: a worker SIGKILLed while the SMTP server holds its message never sends it twice.

The server takes the message and stalls before answering, so the worker is inside the transport
call when it dies: the server may deliver that message, and nobody can know. The broker hands the
task to the next worker, which must find the send already claimed and leave it; beat's sweep
then marks it failed. However long we wait, the server has that one message and no other.
A worker delivering a batch claims a group of sends at a time: the group it dies in is failed
the same way, and every send after it goes out once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import db
from app.models import Send
from app.services import sending
from tasks.sends import enqueue_delivery
from tests.conftest import Tenant
from tests.smtp_server import SMTPServer
from tests.support import WorkerProcess
from tests.support import wait_for

HTML = "<p>Your code is {{ code }}. <a href=\"https://acme.test/verify\">Verify</a></p>"


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


def _status(send_id: str) -> tuple[str, str | None]:
    with db.transaction() as session:
        send = session.get(Send, send_id)
        assert send is not None
        return send.status, send.error


def _restarted_worker(env: dict[str, str], tmp_path: Path) -> WorkerProcess:
    """The worker after the crash. It runs beat too, with a sweep every second that gives up
    on sends claimed more than 2 s ago."""
    second_env: dict[str, Any] = {**env, "KRAITER_SEND_STALE_AFTER": "2",
                                  "KRAITER_SEND_SWEEP_INTERVAL": "1"}
    second = WorkerProcess(second_env, tmp_path / "second.log", concurrency=1,
                           extra_args=("--beat", "--schedule", str(tmp_path / "beat")))
    second.start()
    return second


def test_a_worker_killed_mid_send_never_sends_twice(tenant: Tenant, smtp: SMTPServer,
                                                    stack_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    env = {**stack_env, "EMAIL_TRANSPORT": "smtp", "SMTP_URL": smtp.url, "SMTP_TIMEOUT": "120"}
    response = tenant.put("/api/templates/code", json={"name": "Code", "subject": "Your code",
                                                        "html": HTML})
    assert response.status_code == 201
    smtp.stall()
    first = WorkerProcess(env, tmp_path / "first.log", concurrency=1)
    first.start()
    try:
        send_id = tenant.post("/api/send", json={"to": "ann@example.com", "templateId": "code",
                                                 "variables": {"code": "123456"}}
                              ).get_json()["id"]
        assert smtp.held.wait(timeout=30), "the message never reached the server"
        assert _status(send_id) == ("sending", None)
    finally:
        first.kill()
    smtp.release()  # the answer goes nowhere: the client is dead

    second = _restarted_worker(env, tmp_path)
    try:
        # The broker redelivers the unacknowledged task; it finds the send claimed and stops.
        wait_for(lambda: f"send_not_claimed {send_id}" in second.log(), timeout=60,
                 message="the redelivered task to run")
        wait_for(lambda: _status(send_id)[0] == "failed", timeout=30,
                 message="the sweep to fail the interrupted send")
        time.sleep(2)  # a few more sweeps and redeliveries, had there been any
    finally:
        second.stop()

    assert _status(send_id) == ("failed", sending.INTERRUPTED)
    # One message reached the server (it may well deliver it), and never a second one.
    assert len(smtp.received_for(send_id)) == 1
    assert len(smtp.messages) == 1
    item = tenant.get(f"/api/sends/{send_id}").get_json()
    assert (item["status"], item["error"]) == ("failed", sending.INTERRUPTED)
    assert tenant.get("/api/events?event=email.sent").get_json()["data"] == []


def test_a_worker_killed_mid_group_fails_that_group_and_sends_the_rest_once(
        app: Flask, tenant: Tenant, smtp: SMTPServer, stack_env: dict[str, str],
        tmp_path: Path) -> None:
    env = {**stack_env, "EMAIL_TRANSPORT": "smtp", "SMTP_URL": smtp.url, "SMTP_TIMEOUT": "120",
           "KRAITER_SEND_CLAIM_GROUP": "3"}
    response = tenant.put("/api/templates/code", json={"name": "Code", "subject": "Your code",
                                                        "html": HTML})
    assert response.status_code == 201
    with db.transaction() as session:
        send_ids = [sending.send_transactional(
            session, tenant_id=tenant.id, to=f"c{n}@example.com", template_id="code",
            variables={"code": str(n)}, ignore_unsubscribe=False).id for n in range(7)]
    smtp.stall_after(1)  # the first message is answered, the second one hangs
    first = WorkerProcess(env, tmp_path / "first.log", concurrency=1)
    first.start()
    try:
        with app.app_context():
            enqueue_delivery(send_ids)  # one `sends.deliver_many` message
        assert smtp.held.wait(timeout=30), "the second message never reached the server"
        assert [_status(send_id)[0] for send_id in send_ids] == ["sending"] * 3 + ["queued"] * 4
    finally:
        first.kill()
    smtp.release()

    second = _restarted_worker(env, tmp_path)
    try:
        # The redelivered batch skips the claimed group and sends the other four.
        wait_for(lambda: [_status(send_id)[0] for send_id in send_ids] == (
            ["failed"] * 3 + ["sent"] * 4), timeout=60, message="the rest to go out")
        time.sleep(2)  # a few more sweeps and redeliveries, had there been any
    finally:
        second.stop()

    # The group the worker died in: two messages reached the server (the first was even
    # accepted), the third was never tried; none is sent again, all three end failed.
    assert [len(smtp.received_for(send_id)) for send_id in send_ids] == [1, 1, 0, 1, 1, 1, 1]
    assert [_status(send_id) for send_id in send_ids[:3]] == [("failed", sending.INTERRUPTED)] * 3
    sent = {event["properties"]["sendId"]
            for event in tenant.get("/api/events?event=email.sent").get_json()["data"]}
    assert sent == set(send_ids[3:])
