"""One error envelope everywhere: unknown routes, wrong methods, crashes, oversized bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.config import Settings
from tests.conftest import Tenant


def _envelope(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("path", ["/api/nope", "/nope", "/api/events/x/y", "/api/"])
def test_unknown_route_is_404_envelope(tenant: Tenant, path: str) -> None:
    _envelope(tenant.get(path), 404, "NOT_FOUND")


def test_unknown_route_without_key_is_404_envelope(client: Any) -> None:
    _envelope(client.post("/api/does-not-exist", json={}), 404, "NOT_FOUND")


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("delete", "/api/events", {"GET", "POST"}),
    ("put", "/events", {"GET", "POST"}),
    ("patch", "/api/events/batch", {"POST"}),
    ("delete", "/api/events/evt_1", {"GET"}),
])
def test_wrong_method_is_405_envelope_with_allow(tenant: Tenant, method: str, path: str,
                                                 allowed: set[str]) -> None:
    response = getattr(tenant.client, method)(path, headers=tenant.headers)

    _envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_malformed_json_is_400_envelope(tenant: Tenant) -> None:
    response = tenant.post("/api/events", data=b"{not json", content_type="application/json")

    _envelope(response, 400, "VALIDATION_ERROR")


def test_validation_error_has_details(tenant: Tenant) -> None:
    error = _envelope(tenant.post("/api/events", json={"email": "a@acme.test"}), 400,
                      "VALIDATION_ERROR")

    assert error["details"] == {"event": ["Missing data for required field."]}
    assert error["message"].startswith("event:")


def test_oversized_body_is_413_envelope(tenant: Tenant) -> None:
    body = {"email": "a@acme.test", "event": "x", "properties": {"p": "x" * 1000},
            "pad": "y" * (300 * 1024)}

    _envelope(tenant.post("/api/events", json=body), 413, "PAYLOAD_TOO_LARGE")


def test_not_found_resource_is_404_envelope(tenant: Tenant) -> None:
    _envelope(tenant.get("/api/events/evt_missing"), 404, "NOT_FOUND")


@pytest.fixture
def crashing_app(settings: Settings, app: Flask) -> Iterator[Flask]:
    """A fresh app, as production runs it (not in testing mode), with a route that crashes."""
    fresh = create_app(settings)

    def explode() -> Any:
        raise RuntimeError("database password is hunter2")

    fresh.add_url_rule("/api/explode", "explode", explode, methods=["GET", "POST"])
    yield fresh
    app.extensions["celery"].set_default()  # the fresh app made its Celery app the default


@pytest.mark.parametrize("method", ["get", "post"])
def test_internal_error_is_500_envelope_without_traceback(crashing_app: Flask,
                                                          method: str) -> None:
    response = getattr(crashing_app.test_client(), method)("/api/explode")

    error = _envelope(response, 500, "INTERNAL_ERROR")
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert "hunter2" not in text
    assert "RuntimeError" not in text
    assert "details" not in error


def test_fresh_app_answers_normally(crashing_app: Flask, tenant: Tenant) -> None:
    response = crashing_app.test_client().get("/api/events", headers=tenant.headers)

    assert response.status_code == 200
