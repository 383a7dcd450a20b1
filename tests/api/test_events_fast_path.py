"""The single-event fast path answers exactly as the Flask view would, or lets the view answer.

Each request is sent twice: through the app as deployed (fast path in front) and through
Flask's own `wsgi_app` (the view alone). The answers must be the same, byte for byte, apart from
the id and the two times each 202 stamps.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from prometheus_client import CollectorRegistry
from werkzeug.test import EnvironBuilder

from app import create_app
from app import db
from app.api.events_fast_path import EventFastPath
from app.config import Settings
from app.observability import HTTP_REQUESTS
from app.services import tenants
from tests.conftest import Tenant
from tests.test_ingest_plain_check import EVENT_BODIES

STAMPED = re.compile(rb'"(id|timestamp|createdAt)":"[^"]*"')
Answer = tuple[str, list[tuple[str, str]], bytes]


@pytest.fixture(autouse=True)
def _empty_ingest_queue(app: Flask) -> Iterator[None]:
    """No worker runs in this module: take the events the tests queued off the broker again."""
    yield
    with app.extensions["celery"].connection_for_write() as connection:
        connection.default_channel.queue_purge("ingest")


def _environ(tenant: Tenant, body: bytes, path: str = "/api/events",
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    return EnvironBuilder(path=path, method="POST", data=body,
                          headers={**tenant.headers, "Content-Type": "application/json",
                                   **(headers or {})}).get_environ()


def _call(wsgi: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Answer:
    started: list[Any] = []
    chunks = wsgi(environ, lambda status, headers, exc_info=None: started.extend(
        [status, list(headers)]))
    body = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    return started[0], started[1], body


def _unstamped(answer: Answer, stamped: re.Pattern[bytes] = STAMPED) -> Answer:
    status, headers, body = answer
    return status, headers, stamped.sub(rb'"\1":"-"', body)


def _both(app: Flask, tenant: Tenant, body: bytes, **kwargs: Any) -> tuple[Answer, Answer]:
    """(the deployed app's answer, the Flask view's answer) to the same request."""
    deployed = _call(app.wsgi_app, _environ(tenant, body, **kwargs))
    view = _call(lambda environ, start: Flask.wsgi_app(app, environ, start),
                 _environ(tenant, body, **kwargs))
    return deployed, view


class _Recording:
    """A fast path whose fallback notes the requests it was handed."""

    def __init__(self, app: Flask) -> None:
        self.handed_on = 0
        self.fast_path = EventFastPath(app, self._view)
        self._app = app

    def _view(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.handed_on += 1
        return Flask.wsgi_app(self._app, environ, start_response)


@pytest.mark.parametrize("path", ["/api/events", "/events"])
def test_the_fast_202_is_the_views_202(app: Flask, tenant: Tenant, path: str) -> None:
    body = json.dumps({"email": "Ann.Lee@Acme.TEST", "event": "signed.up", "properties": {
        "plan": "pro", "seats": 3, "trial": True, "score": 1.5, "note": "Ünïcode ✓"}}).encode()
    recording = _Recording(app)

    fast = _call(recording.fast_path, _environ(tenant, body, path))
    view = _call(lambda environ, start: Flask.wsgi_app(app, environ, start),
                 _environ(tenant, body, path))

    assert recording.handed_on == 0
    assert fast[0] == "202 ACCEPTED"
    assert _unstamped(fast) == _unstamped(view)
    accepted = json.loads(fast[2])
    assert accepted["email"] == "Ann.Lee@acme.test"
    assert accepted["timestamp"] == accepted["createdAt"]


def test_a_given_timestamp_is_answered_alike(app: Flask, tenant: Tenant) -> None:
    body = json.dumps({"email": "a@acme.test", "name": "x",
                       "timestamp": "2025-06-01T12:30:00.123456+02:00"}).encode()

    deployed, view = _both(app, tenant, body)

    made_here = re.compile(rb'"(id|createdAt)":"[^"]*"')
    assert _unstamped(deployed, made_here) == _unstamped(view, made_here)
    assert json.loads(deployed[2])["timestamp"] == "2025-06-01T10:30:00.123Z"


@pytest.mark.parametrize(("body", "headers"), [
    (b'{"email": "nope", "event": "x"}', {}),
    (b'{"email": "a@acme.test", "event": "email.sent"}', {}),
    (b'{"email": "a@acme.test", "event": "x", "extra": 1}', {}),
    (b'{"email": "a@acme.test", "event": "x", "properties": {"n": NaN}}', {}),
    (b'{"email": "a@acme.test", "event": "x", "properties": {"n": 1e400}}', {}),
    (b'[1]', {}), (b'', {}), (b'{"email": "a@acme.test", "event": "x"', {}),
    (b'{"email": "a@acme.test", "event": "x"}', {"Authorization": "Bearer kr_unknown"}),
    (b'{"email": "a@acme.test", "event": "x"}', {"Authorization": ""}),
    (b'{"email": "a@acme.test", "event": "x"}', {"Idempotency-Key": "k1"}),
    (b'{"email": "a@acme.test", "event": "x", "contactId": "cnt_nobody"}', {}),
])
def test_everything_else_is_answered_by_the_view(app: Flask, tenant: Tenant, body: bytes,
                                                 headers: dict[str, str]) -> None:
    recording = _Recording(app)

    answer = _call(recording.fast_path, _environ(tenant, body, headers=headers))

    assert recording.handed_on == 1
    assert answer[0] != "202 ACCEPTED" or "Idempotency-Key" in headers


def test_a_body_over_the_limit_is_the_views_413(app: Flask, settings: Settings,
                                                tenant: Tenant) -> None:
    small = create_app(dataclasses.replace(settings, max_body_bytes=100))
    try:
        body = json.dumps({"email": "a@acme.test", "event": "x", "properties": {
            "pad": "p" * 100}}).encode()
        deployed, view = _both(small, tenant, body)
    finally:
        app.extensions["celery"].set_current()
        app.extensions["celery"].set_default()

    assert deployed == view
    assert deployed[0].startswith("413")


@hypothesis_settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                             HealthCheck.too_slow])
@given(body=EVENT_BODIES)
def test_any_body_gets_the_answer_the_view_gives(app: Flask, tenant: Tenant,
                                                 body: dict[str, Any]) -> None:
    deployed, view = _both(app, tenant, json.dumps(body).encode())

    assert _unstamped(deployed) == _unstamped(view)


def test_a_revoked_key_is_refused_by_the_very_next_request_every_time(app: Flask,
                                                                      tenant: Tenant) -> None:
    # Many times over: a key cache that only read the notifications already delivered let about
    # one request in a hundred through right after the revoking commit.
    body = b'{"email": "a@acme.test", "event": "x"}'
    let_in = 0
    for _ in range(100):
        with db.transaction() as session:
            issued = tenants.create_key(session, tenant_id=tenant.id, name="short-lived")
        holder = Tenant(tenant.client, tenant.id, issued.raw_key)
        assert _call(app.wsgi_app, _environ(holder, body))[0] == "202 ACCEPTED"
        with db.transaction() as session:
            tenants.revoke_key(session, key_id=issued.key.id)

        status, _, answer = _call(app.wsgi_app, _environ(holder, body))

        let_in += not status.startswith("401")
        assert json.loads(answer).get("error", {}).get("code") in ("UNAUTHORISED", None)
    assert let_in == 0


def _counted(status: str) -> float:
    registry = CollectorRegistry()
    registry.register(HTTP_REQUESTS)
    value = registry.get_sample_value("kraiter_http_requests_total", {
        "method": "POST", "endpoint": "track_event", "status": status})
    return value or 0.0


def test_fast_answers_are_counted_like_the_views(app: Flask, tenant: Tenant) -> None:
    before = _counted("202")

    deployed, view = _both(app, tenant, b'{"email": "a@acme.test", "event": "x"}')

    assert deployed[0] == view[0] == "202 ACCEPTED"
    assert _counted("202") == before + 2


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_queue_refusal_is_the_views_503(app: Flask, settings: Settings,
                                          tenant: Tenant) -> None:
    if settings.redis_url is None:
        pytest.skip("the embedded broker is a local file: it does not go away")
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    broken = create_app(dataclasses.replace(settings, redis_url=url, broker_url=url))
    try:
        recording = _Recording(broken)
        body = b'{"email": "a@acme.test", "event": "x"}'
        fast = _call(recording.fast_path, _environ(tenant, body))
        view = _call(lambda environ, start: Flask.wsgi_app(broken, environ, start),
                     _environ(tenant, body))
    finally:
        app.extensions["celery"].set_current()
        app.extensions["celery"].set_default()

    assert recording.handed_on == 0  # refused after the hand-over, not handed to the view
    assert fast == view
    assert fast[0] == "503 SERVICE UNAVAILABLE"
    assert json.loads(fast[2])["error"]["code"] == "SERVICE_UNAVAILABLE"
