"""The `kraiter` console script, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient

from app import db
from app.ids import new_id
from app.services import ingest
from app.timeutil import isoformat
from app.timeutil import utcnow
from tests.support import ROOT
from tests.support import process_env


def kraiter(stack_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, env=process_env(stack_env), timeout=60,
                          check=False)


def kraiter_json(stack_env: dict[str, str], *args: str) -> Any:
    result = kraiter(stack_env, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_tenant_keys_lifecycle(stack_env: dict[str, str], client: FlaskClient) -> None:
    tenant = kraiter_json(stack_env, "tenants", "create", "Acme", "--retention-days", "90",
                          "--from", "Acme <hello@acme.test>")
    assert tenant["id"].startswith("ten_")
    assert tenant["apiKey"].startswith("kr_")
    assert tenant["retentionDays"] == 90
    assert client.get("/api/events", headers=_auth(tenant["apiKey"])).status_code == 200

    second = kraiter_json(stack_env, "keys", "create", "--tenant", tenant["id"], "--name", "ci")
    assert second["apiKey"].startswith("kr_") and second["apiKey"] != tenant["apiKey"]
    listed = kraiter(stack_env, "keys", "list", "--tenant", tenant["id"])
    assert listed.returncode == 0
    assert second["id"] in listed.stdout and second["apiKey"] not in listed.stdout

    revoked = kraiter(stack_env, "keys", "revoke", second["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert client.get("/api/events", headers=_auth(second["apiKey"])).status_code == 401
    assert client.get("/api/events", headers=_auth(tenant["apiKey"])).status_code == 200


def test_unknown_tenant_is_a_clean_error(stack_env: dict[str, str]) -> None:
    result = kraiter(stack_env, "keys", "create", "--tenant", "ten_nope", "--name", "x")
    assert result.returncode != 0
    assert "not found" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_update_retention_then_archive(stack_env: dict[str, str]) -> None:
    tenant = kraiter_json(stack_env, "tenants", "create", "Acme")
    old = isoformat(utcnow() - timedelta(days=40))
    with db.transaction() as session:
        ingest.store_events(session, messages=[
            {"id": new_id("evt"), "tenantId": tenant["id"], "email": "a@acme.test",
             "contactId": None, "event": "signed.up", "properties": {}, "timestamp": old,
             "createdAt": old}])

    assert kraiter_json(stack_env, "events", "archive") == {"moved": 0}
    updated = kraiter_json(stack_env, "tenants", "update", tenant["id"], "--retention-days", "30")
    assert updated["retentionDays"] == 30
    result = kraiter(stack_env, "events", "archive")
    assert result.returncode == 0, result.stderr
    assert "archived 1 events" in result.stdout
