"""Fixtures: the same suite runs on PostgreSQL + Redis or on the embedded SQLite setup.

`KRAITER_TEST_BACKEND=postgres` (default when PostgreSQL answers) uses a fresh database
`kraiter_test` and Redis db 15; `KRAITER_TEST_BACKEND=embedded` uses SQLite and the embedded
broker in a temporary folder. Tests commit for real (a real worker must see their rows), so each
test starts from empty tables instead of a rolled-back savepoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text

from app import create_app
from app import db
from app.config import Settings
from app.migrate import upgrade
from tests.support import WorkerProcess
from tests.support import backend
from tests.support import drop_pg_database
from tests.support import prepare_backend
from tests.support import release_redis_db

# CI shares two cores with PostgreSQL, Redis and worker processes: judge properties, not speed.
hypothesis_settings.register_profile("shared-machine", deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("shared-machine")

# In the order a worker's transaction touches them, so TRUNCATE queues behind a worker still
# storing the previous test's events instead of deadlocking with it.
TABLES = ("tenants", "api_keys", "contacts", "event_feeds", "events", "events_archive",
          "idempotency_keys", "templates", "sends", "webhook_deliveries", "sequences",
          "sequence_versions", "enrolments")


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment variables that point a process at this test run's database and broker."""
    data_dir: Path = tmp_path_factory.mktemp("kraiter-data")
    env = prepare_backend(backend(), data_dir)
    upgrade(Settings.from_env(env).database_url)
    yield env
    if backend() == "postgres":
        db.get_engine().dispose()
        drop_pg_database()
        release_redis_db(env["REDIS_URL"])


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    return Settings.from_env(stack_env)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Flask:
    flask_app = create_app(settings)
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture(autouse=True)
def empty_tables(app: Flask) -> Iterator[None]:
    with db.transaction() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
        else:
            for table in TABLES:
                session.execute(text(f"DELETE FROM {table}"))
    yield
    db.remove_session()


@pytest.fixture(scope="module")
def worker(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    """A real Celery worker process for the tests of one module that need events stored.

    Module-scoped so that modules testing crashes can run their own workers undisturbed.
    """
    log_dir = tmp_path_factory.mktemp("worker-logs")
    process = WorkerProcess(stack_env, log_dir / "worker.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Tenant:
    """A tenant of the test run and a client that speaks with its key."""

    def __init__(self, client: FlaskClient, tenant_id: str, api_key: str) -> None:
        self.client = client
        self.id = tenant_id
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers={**self.headers, **kwargs.pop("headers", {})},
                               **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, headers={**self.headers, **kwargs.pop("headers", {})},
                                **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.client.put(path, headers={**self.headers, **kwargs.pop("headers", {})},
                               **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.client.patch(path, headers={**self.headers, **kwargs.pop("headers", {})},
                                 **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.client.delete(path, headers={**self.headers, **kwargs.pop("headers", {})},
                                  **kwargs)


def _make_tenant(client: FlaskClient, name: str, retention_days: int = 365) -> Tenant:
    from app.services import tenants

    with db.transaction() as session:
        tenant, issued = tenants.create_tenant(session, name=name, retention_days=retention_days)
    return Tenant(client, tenant.id, issued.raw_key)


@pytest.fixture
def tenant(client: FlaskClient) -> Tenant:
    return _make_tenant(client, "Acme")


@pytest.fixture
def other_tenant(client: FlaskClient) -> Tenant:
    return _make_tenant(client, "Globex")


@pytest.fixture
def make_tenant(client: FlaskClient) -> Any:
    return lambda name="Tenant", retention_days=365: _make_tenant(client, name, retention_days)


def pytest_report_header() -> str:
    return f"kraiter backend: {backend()} (set KRAITER_TEST_BACKEND=postgres|embedded)"
