"""Operations endpoints: /healthz, /readyz, and the Prometheus exposition at /metrics."""

from __future__ import annotations

import base64
import dataclasses
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from app import create_app
from app import db
from app.config import Settings
from app.models import Enrolment
from app.models import Sequence
from app.timeutil import utcnow
from tests.api.test_metrics import add_send
from tests.conftest import Tenant
from tests.support import backend


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _fresh_app(app: Flask, settings: Settings) -> Iterator[Flask]:
    try:
        yield create_app(settings)
    finally:
        # Building an app makes its Celery app the current and default one: give them back.
        app.extensions["celery"].set_current()
        app.extensions["celery"].set_default()


@pytest.fixture
def no_redis_app(app: Flask, settings: Settings) -> Iterator[Flask]:
    """The app as deployed with REDIS_URL pointing at a port nobody listens on."""
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    with _fresh_app(app, dataclasses.replace(settings, redis_url=url, broker_url=url)) as fresh:
        yield fresh


@pytest.fixture
def empty_ingest_queue(app: Flask) -> Iterator[None]:
    """No worker runs in this module: take the events the tests queued off the broker again."""
    yield
    with app.extensions["celery"].connection_for_write() as connection:
        connection.default_channel.queue_purge("ingest")


def _scrape(client: FlaskClient, **kwargs: Any) -> dict[str, float]:
    """`{"name{label=value,...}": value}` of one scrape."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_healthz_answers_without_io(client: FlaskClient) -> None:
    for path in ("/healthz", "/api/healthz"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_when_database_and_broker_answer(client: FlaskClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready",
                                   "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_is_503_when_redis_is_unreachable(no_redis_app: Flask) -> None:
    response = no_redis_app.test_client().get("/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")
    assert "127.0.0.1" not in response.get_data(as_text=True)  # a public page names no hosts


def test_readyz_is_503_when_the_embedded_broker_file_is_not_a_database(
        app: Flask, settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "broker.db"
    broken.write_bytes(b"this is not an SQLite file" * 100)
    embedded = dataclasses.replace(settings, redis_url=None,
                                   broker_url=f"kraiter-sqlite://{broken}")
    with _fresh_app(app, embedded) as fresh:
        response = fresh.test_client().get("/readyz")

        assert response.status_code == 503
        assert response.get_json()["checks"]["broker"] == "error: DatabaseError"


def test_readyz_is_503_when_the_database_is_unreachable(client: FlaskClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = create_engine(f"postgresql+psycopg2://kraiter@127.0.0.1:{_closed_port()}/x")
    monkeypatch.setattr(db, "get_engine", lambda: unreachable)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "error: OperationalError"
    assert response.get_json()["checks"]["broker"] == "ok"


def test_readyz_gives_up_on_a_broker_that_never_answers(app: Flask, settings: Settings) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with _fresh_app(app, dataclasses.replace(settings, redis_url=url,
                                                 broker_url=url)) as fresh:
            started = time.monotonic()
            response = fresh.test_client().get("/readyz")

            assert response.status_code == 503
            assert response.get_json()["checks"]["broker"] in {"timeout",
                                                               "error: TimeoutError"}
            assert time.monotonic() - started < 5


@pytest.mark.usefixtures("empty_ingest_queue")
def test_metrics_count_events_accepted_by_the_api(client: FlaskClient, tenant: Tenant) -> None:
    before = _scrape(client)
    accepted = "kraiter_events_accepted_total{}"

    for number in range(2):
        assert tenant.post("/api/events", json={"email": "a@acme.test",
                                                "event": f"e{number}"}).status_code == 202
    batch = tenant.post("/api/events/batch", json={"events": [
        {"email": "b@acme.test", "event": "x"}, {"email": "c@acme.test", "event": "y"},
        {"email": "not-an-email", "event": "z"}]})
    assert batch.status_code == 202

    after = _scrape(client)
    assert after[accepted] - before[accepted] == 4
    assert after["kraiter_queue_depth{queue=ingest}"] >= 1  # no worker here: still queued
    assert after["kraiter_queue_depth{queue=email}"] == 0
    if backend() == "postgres":  # the ledger is for Redis; the embedded broker needs none
        assert after["kraiter_ingest_unstored_messages{}"] >= 1
    track = "kraiter_http_requests_total{endpoint=track_event,method=POST,status=202}"
    assert after[track] - before.get(track, 0) == 2


def test_metrics_show_sends_by_status(client: FlaskClient,
                                                            tenant: Tenant,
                                                            other_tenant: Tenant) -> None:
    add_send(tenant.id, status="delivered", sent="2025-06-01T00:00:00Z")
    add_send(other_tenant.id, status="delivered", sent="2025-06-01T00:00:00Z")
    add_send(tenant.id, status="bounced", sent="2025-06-01T00:00:00Z")
    add_send(tenant.id, status="queued")

    samples = _scrape(client)

    assert samples["kraiter_sends{status=delivered}"] == 2  # every tenant: this is operations
    assert samples["kraiter_sends{status=bounced}"] == 1
    assert samples["kraiter_sends{status=queued}"] == 1
    assert samples["kraiter_sends{status=failed}"] == 0
    assert samples["kraiter_steps_due{}"] == 0
    assert samples["kraiter_steps_oldest_lag_seconds{}"] == 0
    assert samples["kraiter_probe_up{probe=database}"] == 1
    assert samples["kraiter_probe_up{probe=broker}"] == 1


def test_metrics_still_answer_when_the_broker_is_down(no_redis_app: Flask) -> None:
    samples = _scrape(no_redis_app.test_client())

    assert samples["kraiter_probe_up{probe=broker}"] == 0
    assert samples["kraiter_probe_up{probe=database}"] == 1
    assert "kraiter_queue_depth{queue=ingest}" not in samples
    assert "kraiter_sends{status=sent}" in samples


def test_metrics_speak_openmetrics_when_asked(client: FlaskClient) -> None:
    response = client.get("/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0"})

    assert response.status_code == 200
    assert response.mimetype == "application/openmetrics-text"
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_metrics_basic_auth_when_configured(client: FlaskClient, app: Flask, tenant: Tenant,
                                            settings: Settings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "SETTINGS", dataclasses.replace(
        settings, metrics_basic_auth="prometheus:s3cret"))

    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/metrics", headers=_basic("prometheus", "wrong")).status_code == 401
    assert "kraiter_sends{status=sent}" in _scrape(client,
                                                   headers=_basic("prometheus", "s3cret"))
    # A tenant's API key still reads the tenant's e-mail metrics at the same path.
    assert "timeseries" in tenant.get("/metrics").get_json()


def test_prometheus_is_only_at_the_root(client: FlaskClient) -> None:
    assert client.get("/api/metrics").status_code == 401


def _sequence_with_steps(tenant: Tenant, sequence_id: str, status: str,
                         due_in: list[timedelta | None]) -> None:
    now = utcnow()
    with db.transaction() as session:
        session.add(Sequence(tenant_id=tenant.id, id=sequence_id, name=sequence_id,
                             status=status, version=1, created_at=now, updated_at=now))
        for number, offset in enumerate(due_in):
            session.add(Enrolment(id=f"enr_{sequence_id}_{number}", tenant_id=tenant.id,
                                  sequence_id=sequence_id, version=1, contact_id=f"cnt_{number}",
                                  status="active" if offset is not None else "completed",
                                  next_step_at=now + offset if offset is not None else None,
                                  created_at=now, updated_at=now))


def test_metrics_count_due_steps_and_the_oldest_ones_lag(client: FlaskClient,
                                                         tenant: Tenant) -> None:
    _sequence_with_steps(tenant, "running", "active", [
        timedelta(seconds=-90), timedelta(seconds=-5), timedelta(hours=1), None])
    # A paused sequence holds its steps on purpose: not a backlog.
    _sequence_with_steps(tenant, "paused", "paused", [timedelta(hours=-5)])

    samples = _scrape(client)

    assert samples["kraiter_steps_due{}"] == 2
    assert 90 <= samples["kraiter_steps_oldest_lag_seconds{}"] < 120
