"""The live feed over real HTTP: order, resume, heartbeat, filters, auth and tenant isolation."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from app import create_app
from app import db
from app.config import Settings
from app.services import ingest
from app.services import tenants
from app.timeutil import isoformat
from app.timeutil import utcnow
from tests.conftest import Tenant
from tests.sse_client import SSEStream
from tests.support import wait_for

HEARTBEAT_S = 0.5


@contextmanager
def _serving(settings: Settings, **changes: Any) -> Iterator[str]:
    """The app over real HTTP on a free port; quick heartbeats and polls so tests take seconds."""
    app = create_app(dataclasses.replace(settings, stream_heartbeat_s=HEARTBEAT_S,
                                         stream_poll_ms=50, **changes))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        app.extensions["live_feed"].close()
        server.shutdown()


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    with _serving(settings) as url:
        yield url


@pytest.fixture
def streams(base_url: str) -> Iterator[Any]:
    opened: list[SSEStream] = []

    def open_stream(tenant: Tenant | None = None, **params: str) -> SSEStream:
        headers = dict(tenant.headers) if tenant else {}
        if "last_event_id" in params:
            headers["Last-Event-ID"] = params.pop("last_event_id")
        stream = SSEStream(f"{base_url}/api/events/stream", headers=headers, params=params)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def _store(tenant: Tenant, *names: str, email: str = "ann@acme.test",
           source: str = "api") -> list[str]:
    """Store events the way the worker does (one transaction), return their ids in order."""
    now = isoformat(utcnow())
    messages = [ingest.accept_event(db.session, tenant_id=tenant.id,
                                    data={"email": email, "event": name, "properties": {"n": i}})
                for i, name in enumerate(names)]
    for message in messages:
        message["source"] = source
        message["timestamp"] = now
    db.remove_session()
    with db.transaction() as session:
        ingest.store_events(session, messages=messages)
    return [message["id"] for message in messages]


def _connected(stream: SSEStream) -> None:
    """Wait until the server has registered the stream (its first comment arrived)."""
    assert stream.response.status_code == 200, stream.response.text
    assert stream.comments.get(timeout=10) == "connected"


def test_streams_stored_events_in_order_with_ids(tenant: Tenant, streams: Any) -> None:
    stream = streams(tenant)
    _connected(stream)
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    assert stream.retry == 2000

    first = _store(tenant, *[f"step.{i}" for i in range(30)])
    second = _store(tenant, "email.sent", source="system")

    messages = stream.take(31)
    assert [m.id for m in messages] == first + second
    assert [m.data["id"] for m in messages] == first + second
    item = messages[0].data
    assert set(item) >= {"id", "event", "contactId", "email", "properties", "timestamp",
                         "createdAt", "source"}
    assert (item["event"], item["email"], item["properties"], item["source"]) == \
        ("step.0", "ann@acme.test", {"n": 0}, "api")
    assert messages[-1].data["source"] == "system"
    assert stream.nothing_more(0.5)


def test_starts_from_now_without_last_event_id(tenant: Tenant, streams: Any) -> None:
    _store(tenant, "before")
    stream = streams(tenant)
    _connected(stream)
    after = _store(tenant, "after")
    assert [m.id for m in stream.take(1)] == after
    assert stream.nothing_more(0.5)


def test_resumes_after_last_event_id_without_gaps_or_repeats(tenant: Tenant,
                                                             streams: Any) -> None:
    stream = streams(tenant)
    _connected(stream)
    ids = _store(tenant, "a", "b", "c")
    seen = stream.take(3)
    stream.close()
    missed = _store(tenant, "d", "e") + _store(tenant, "f")

    resumed = streams(tenant, last_event_id=seen[1].id)  # as if "c" never arrived
    _connected(resumed)
    later = _store(tenant, "g")
    assert [m.id for m in resumed.take(5)] == [ids[2], *missed, *later]
    assert resumed.nothing_more(0.5)

    by_query = streams(tenant, lastEventId=missed[-1])
    _connected(by_query)
    assert [m.id for m in by_query.take(1)] == later
    assert by_query.nothing_more(0.5)


def test_heartbeat_comments_keep_an_idle_stream_alive(tenant: Tenant, streams: Any) -> None:
    stream = streams(tenant)
    _connected(stream)
    beats = [stream.comments.get(timeout=5 * HEARTBEAT_S) for _ in range(3)]
    assert beats == ["ping", "ping", "ping"]


def test_event_and_email_filters(tenant: Tenant, streams: Any) -> None:
    by_name = streams(tenant, event="order.paid")
    by_email = streams(tenant, email="Bob@ACME.test")
    _connected(by_name)
    _connected(by_email)

    _store(tenant, "order.paid", "Order.Paid", "order.paid.later", email="ann@acme.test")
    bob = _store(tenant, "order.paid", "signed.up", email="Bob@acme.test")

    assert [m.data["email"] for m in by_name.take(2)] == ["ann@acme.test", "Bob@acme.test"]
    assert [m.id for m in by_email.take(2)] == bob
    assert by_name.nothing_more(0.5) and by_email.nothing_more(0.1)


def test_one_tenant_never_sees_another(tenant: Tenant, other_tenant: Tenant,
                                       streams: Any) -> None:
    ours = streams(tenant)
    theirs = streams(other_tenant)
    _connected(ours)
    _connected(theirs)
    their_ids = _store(other_tenant, "secret", email="ceo@globex.test")
    our_ids = _store(tenant, "public")

    assert [m.id for m in theirs.take(1)] == their_ids
    assert [m.id for m in ours.take(1)] == our_ids
    assert ours.nothing_more(0.5)
    ours.close()
    # Their event id as our Last-Event-ID tells us nothing: we start from now.
    probing = streams(tenant, last_event_id=their_ids[0])
    _connected(probing)
    assert probing.nothing_more(0.5)


def test_a_token_opens_the_stream_where_headers_cannot_be_set(tenant: Tenant, base_url: str,
                                                               streams: Any) -> None:
    answer = requests.post(f"{base_url}/api/events/stream/token", headers=tenant.headers,
                           timeout=5)
    assert answer.status_code == 200
    token = answer.json()["token"]
    assert answer.json()["expiresAt"].endswith("Z")
    assert tenant.api_key not in token

    stream = streams(token=token)
    _connected(stream)
    ids = _store(tenant, "via.token")
    assert [m.id for m in stream.take(1)] == ids


@pytest.mark.parametrize("params,headers", [
    ({}, {}),
    ({"token": "not-a-token"}, {}),
    ({}, {"Authorization": "Bearer kr_not_a_key"}),
])
def test_refused_without_valid_credentials(base_url: str, params: dict[str, str],
                                           headers: dict[str, str]) -> None:
    answer = requests.get(f"{base_url}/api/events/stream", params=params, headers=headers,
                          timeout=5)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHORISED"


def test_bad_filters_are_a_400_envelope(tenant: Tenant, base_url: str) -> None:
    answer = requests.get(f"{base_url}/api/events/stream", params={"email": "nope", "x": "1"},
                          headers=tenant.headers, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"


def test_revoking_the_key_ends_its_streams(tenant: Tenant, streams: Any) -> None:
    stream = streams(tenant)
    _connected(stream)
    with db.transaction() as session:
        for key in tenants.list_keys(session, tenant_id=tenant.id):
            tenants.revoke_key(session, key_id=key.id)
    assert stream.finished.wait(10 * HEARTBEAT_S + 5)


def test_streams_beyond_the_process_cap_get_503(tenant: Tenant, settings: Settings) -> None:
    with _serving(settings, max_streams=2) as small_server:
        held = [SSEStream(f"{small_server}/api/events/stream", headers=tenant.headers)
                for _ in range(2)]
        for stream in held:
            _connected(stream)
        answer = requests.get(f"{small_server}/api/events/stream", headers=tenant.headers,
                              timeout=5)
        assert answer.status_code == 503
        assert answer.headers["Retry-After"]
        assert answer.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        held[0].close()
        # Its slot comes back once the server notices the client left (at the next heartbeat).
        wait_for(lambda: _try_open(small_server, tenant), timeout=10, message="a free slot")
        held[1].close()


def _try_open(base_url: str, tenant: Tenant) -> bool:
    with requests.get(f"{base_url}/api/events/stream", headers=tenant.headers, stream=True,
                      timeout=5) as answer:
        return answer.status_code == 200
